//! `vibehq up`: the whole control plane in one process.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use vibehq_api::{Api, AppState};
use vibehq_events::{EventLog, StreamKind};
use vibehq_nats::EmbeddedNats;
use vibehq_projector::{Projector, Reader};
use vibehq_queue::Queue;
use vibehq_queue::QueueState;

use crate::config::Settings;

/// Runs NATS (embedded unless configured), the streams, the projector, the HTTP API, the
/// task queue's RPC service (`ContainerTaskQueueOps`), and the load balancer
/// (its RPC service `ContainerLoadBalancerOps`; its pool and proxy when configured), and the AI
/// operations (REST, `/ws/ai`, the RPC service `AIOps`) until
/// SIGINT/SIGTERM, then shuts down in order: stop taking requests, finish the projector's
/// batch, stop the embedded server.
pub async fn run(settings: Settings) -> Result<()> {
    let lease = Duration::from_secs(settings.lease_secs.unwrap_or(30).max(1));
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {}",
            settings.data_dir.display()
        )
    })?;
    let _lock = lock_data_dir(&settings.data_dir)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::signals::shutdown_on_signal(shutdown.clone()));

    let (embedded, url) = match &settings.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let mut options = vibehq_nats::Options::new(settings.data_dir.join("nats"));
            options.binary = settings.nats_server_bin.clone();
            options.port = settings.embedded_nats_port;
            let server = EmbeddedNats::start(options).await?;
            let url = server.url();
            std::fs::write(settings.embedded_url_file(), &url)
                .context("cannot record the embedded NATS URL in the data folder")?;
            (Some(server), url)
        }
    };
    let result = serve(&settings, lease, &url, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(server) = embedded {
        let _ = std::fs::remove_file(settings.embedded_url_file());
        server.shutdown(Duration::from_secs(10)).await;
        tracing::info!("embedded nats-server stopped");
    }
    result
}

async fn serve(
    settings: &Settings,
    lease: Duration,
    url: &str,
    shutdown: CancellationToken,
) -> Result<()> {
    let client = settings.connection(url, None).connect().await?;
    let log = EventLog::new(client);
    let streams = log
        .ensure_streams(settings.stream_replicas)
        .await
        .context("cannot create the event streams")?;
    for info in &streams {
        tracing::info!(
            stream = %info.config.name, messages = info.state.messages,
            replicas = info.config.num_replicas, "stream ready"
        );
    }
    let database = settings.projection_path();
    let (projector, handle) =
        Projector::new(vibehq_projector::Options::new(&database), log.clone())?;
    let queue = Queue::new(
        log.clone(),
        vibehq_queue::Options {
            lease,
            ..Default::default()
        },
    )
    .await?;
    queue
        .apply_lease()
        .await
        .context("cannot set the lanes' lease")?;
    // A pause interrupted between its event and its lanes is finished here.
    queue
        .apply_pauses()
        .await
        .context("cannot apply the paused scopes to the lanes")?;
    // One pool of read connections to the projection, shared by every service.
    let reader = Reader::new(&database);
    let queue_state = QueueState {
        queue,
        reader: reader.clone(),
        projector: handle.clone(),
    };
    tokio::spawn(restore_held_work(
        queue_state.clone(),
        streams
            .iter()
            .find(|info| info.config.name == StreamKind::Tasks.name())
            .map_or(0, |info| info.state.last_sequence),
    ));
    let queue_routes = vibehq_queue::http::router(queue_state.clone());
    let api = Api::new(
        vibehq_api::Options {
            addr: settings.http_addr,
            tokens: settings.tokens.clone(),
        },
        AppState {
            reader: reader.clone(),
            projector: handle.clone(),
            log: log.clone(),
            nats_url: url.to_owned(),
        },
    )
    .extend(queue_routes, vibehq_queue::http::QueueDoc::openapi())
    .serve_public(vibehq_dashboard::router())
    .measure(vibehq_queue::stats::QueueFigures)
    .measure(vibehq_balancer::figures::BalancerFigures)
    .measure(vibehq_ai::figures::AiFigures);
    let gateway = vibehq_ai::Gateway::new(settings.ai.clone(), log.clone())
        .context("cannot set up the AI gateway ([ai] in the config file)")?;
    let ai = vibehq_ai::ops::Ai::new(gateway, queue_state.queue.clone(), reader.clone(), handle);
    let api = api
        .extend(
            vibehq_ai::http::router(ai.clone()),
            vibehq_ai::http::AiDoc::openapi(),
        )
        .extend(
            vibehq_ai::openai::router(ai.gateway.clone()),
            vibehq_ai::openai::OpenAiDoc::openapi(),
        );
    let (pool, proxy) = match &settings.balancer {
        Some(config) => {
            let (mut spec, policy, strategy) = config.parts()?;
            spec.nats_url = Some(url.to_owned());
            let runtime = config.runtime()?;
            let pool = vibehq_balancer::Pool::new(spec, policy, runtime, log.clone());
            let listener = tokio::net::TcpListener::bind(config.proxy_addr)
                .await
                .with_context(|| format!("cannot listen on {} for the proxy", config.proxy_addr))?;
            pool.scale(config.instances).await?;
            tracing::info!(proxy = %config.proxy_addr, instances = config.instances, "load balancer up");
            (
                Some(pool.clone()),
                Some((listener, vibehq_balancer::Proxy::new(pool, strategy))),
            )
        }
        None => (None, None),
    };
    let autoscaler = match (
        &pool,
        settings
            .balancer
            .as_ref()
            .and_then(|b| b.autoscale.as_ref()),
    ) {
        (Some(pool), Some(autoscale)) => {
            let backlog = std::sync::Arc::new(vibehq_balancer::autoscale::PendingTasks {
                reader: reader.clone(),
                worker_name: settings
                    .balancer
                    .as_ref()
                    .map(|b| b.worker_name.clone())
                    .unwrap_or_default(),
            });
            Some(tokio::spawn(vibehq_balancer::autoscale::run(
                pool.clone(),
                autoscale.policy(),
                backlog,
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    let balancer_state = vibehq_balancer::http::BalancerState {
        pool: pool.clone(),
        reader: Some(reader.clone()),
    };
    let api = api.extend(
        vibehq_balancer::http::router(balancer_state.clone()),
        balancer_state.doc(),
    );
    tracing::info!(nats = %vibehq_nats::redact(url), http = %settings.http_addr, data = %settings.data_dir.display(), "vibehq up");

    // Whichever stops first (shutdown, or a failure) stops the other.
    let scheduler_queue = queue_state.queue.clone();
    let watcher_state = queue_state.clone();
    let (projected, served, answered, scheduled, watched, balanced, advised, proxied) = tokio::join!(
        async {
            let result = projector.run(shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let result = api.run(shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let client = log.jetstream().client();
            let result = vibehq_queue::rpc::run(queue_state, client, shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let result =
                vibehq_queue::schedules::run_scheduler(scheduler_queue, shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let result =
                vibehq_queue::dependencies::run_watcher(watcher_state, shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let client = log.jetstream().client();
            let result = vibehq_balancer::rpc::run(balancer_state, client, shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let client = log.jetstream().client();
            let result = vibehq_ai::rpc::run(ai, client, shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let Some((listener, proxy)) = proxy else {
                return Ok(());
            };
            let result = axum::serve(listener, proxy.router())
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await;
            shutdown.cancel();
            // The autoscaler stops first, so it cannot start instances after the stop below.
            if let Some(autoscaler) = autoscaler {
                let _ = autoscaler.await;
            }
            if let Some(pool) = &pool {
                pool.stop_all().await;
                tracing::info!("load balancer instances stopped");
            }
            result.context("the load balancer's proxy failed")
        },
    );
    proxied?;
    balanced?;
    advised?;
    served?;
    answered?;
    scheduled.context("the scheduler failed")?;
    watched.context("the dependency watcher failed")?;
    projected?;
    Ok(())
}

/// Holds the data folder for this process: a second `vibehq up` on the same folder would start
/// a second nats-server on the same store and share the projection file. The lock is the
/// operating system's (released however the process ends); the file says who holds it.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("vibehq.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "another vibehq up (pid {}) is running on the data folder {}: stop it first, or \
                 give this one its own --data-dir",
                holder.trim(),
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Once the projection has caught up with the tasks stream as it was at start, puts back the
/// server's timers a crash may have left behind their events: every delayed task still
/// waiting for its schedule to fire is scheduled again (one whose schedule was never stored
/// fires then, one whose schedule is stored is merely replaced; claimers are told when each
/// is due), every task waiting on others is settled (for an end handled while vibehq was
/// down), and every recurring schedule's timer is armed or disarmed as its state says.
async fn restore_held_work(state: QueueState, tasks_sequence: u64) {
    if !state
        .projector
        .wait_for(StreamKind::Tasks, tasks_sequence, Duration::from_secs(300))
        .await
    {
        tracing::warn!(
            "the projection did not catch up in 5 minutes; delayed tasks and schedules are not checked"
        );
        return;
    }
    let delayed = ids(
        &state,
        "find the delayed tasks",
        "SELECT task_id FROM container_tasks
         WHERE status = 'pending' AND run_at IS NOT NULL AND due_at IS NULL",
    )
    .await;
    match delayed {
        Ok(ids) if ids.is_empty() => {}
        Ok(ids) => match state.queue.reschedule_pending(&ids).await {
            Ok(count) => tracing::info!(
                waiting = ids.len(),
                rescheduled = count,
                "delayed tasks scheduled again"
            ),
            Err(error) => tracing::warn!(%error, "cannot schedule the delayed tasks again"),
        },
        Err(error) => tracing::warn!(%error, "cannot read the delayed tasks"),
    }
    match vibehq_queue::dependencies::waiting_tasks(&state, None).await {
        Ok(waiting) => {
            for task_id in &waiting {
                if let Err(error) = state.queue.settle_waiting(task_id).await {
                    tracing::warn!(%error, task_id, "cannot settle a task waiting on others");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the tasks waiting on others"),
    }
    let keyed = ids(
        &state,
        "find the keyed tasks",
        "SELECT task_id FROM container_tasks
         WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'assigned', 'running')",
    )
    .await;
    match keyed {
        Ok(ids) if ids.is_empty() => {}
        Ok(ids) => match state.queue.restore_keys(&ids).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(changed = count, "concurrency keys put right"),
            Err(error) => tracing::warn!(%error, "cannot check the concurrency keys"),
        },
        Err(error) => tracing::warn!(%error, "cannot read the keyed tasks"),
    }
    let schedules = ids(
        &state,
        "find the schedules",
        "SELECT schedule_id FROM container_task_schedules",
    )
    .await;
    match schedules {
        Ok(ids) => match state.queue.rearm_schedules(&ids).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(changed = count, "schedules' timers put right"),
            Err(error) => tracing::warn!(%error, "cannot check the schedules' timers"),
        },
        Err(error) => tracing::warn!(%error, "cannot read the schedules"),
    }
}

/// The first column of a query's rows.
async fn ids(
    state: &QueueState,
    op: &'static str,
    sql: &'static str,
) -> Result<Vec<String>, vibehq_projector::Error> {
    state
        .reader
        .read(move |conn| {
            let fail = |source| vibehq_projector::Error::Sqlite { op, source };
            let mut statement = conn.prepare(sql).map_err(fail)?;
            statement
                .query_map([], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(fail)
        })
        .await
}
