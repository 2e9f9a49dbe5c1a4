//! Concurrency keys and rate limits: a key's limit caps how many of its tasks run at once
//! across every claimer while other work flows; a rate limit caps starts per period across
//! every `vibehq up` process; the API refuses limits that cannot be, naming the field.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use vibehq_events::limit::Limits;
use vibehq_events::{Payload, StreamKind, Subject};
use vibehq_queue::{Actor, NewTask, Options, Queue};

use crate::common::{Harness, UpProcess, get_json, post, serve};

fn keyed(key: Option<&str>, priority: i64) -> NewTask {
    NewTask {
        task_type: "deploy".into(),
        command: "deploy".into(),
        priority,
        max_attempts: 3,
        concurrency_key: key.map(str::to_owned),
        ..Default::default()
    }
}

fn operator() -> Actor {
    Actor::worker("operator")
}

/// When the queue handed `task_id` out (its `task.assigned` event, as recorded).
async fn assigned_at(log: &vibehq_events::EventLog, task_id: &str) -> OffsetDateTime {
    let history = log
        .history_of(StreamKind::Tasks, &Subject::task(task_id), u64::MAX)
        .await
        .expect("history");
    history
        .iter()
        .filter_map(|r| r.decode().ok())
        .find(|e| matches!(e.payload, Payload::TaskAssigned(_)))
        .map(|e| e.occurred_at)
        .unwrap_or_else(|| panic!("{task_id} was never assigned"))
}

/// Which tasks ran, in the order they finished, with their keys.
type Finished = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Claims and completes tasks until `done` reach `total`, counting how many of each key run at
/// once (from the claim returning to the completion being sent) and the most ever seen.
async fn work(
    queue: Queue,
    me: Actor,
    running: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    done: Arc<AtomicUsize>,
    total: usize,
    finished: Finished,
) {
    while done.load(Ordering::SeqCst) < total {
        let Some(claim) = queue
            .claim(&me, Duration::from_millis(200))
            .await
            .expect("claim")
        else {
            continue;
        };
        let task = queue
            .load(&claim.task_id)
            .await
            .expect("load")
            .expect("task");
        let key = task.submitted.concurrency_key.clone();
        if let Some(key) = &key {
            let mut running = running.lock().expect("lock");
            let (now, most) = running.entry(key.clone()).or_default();
            *now += 1;
            *most = (*most).max(*now);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        if let Some(key) = &key {
            running
                .lock()
                .expect("lock")
                .entry(key.clone())
                .or_default()
                .0 -= 1;
        }
        finished
            .lock()
            .expect("lock")
            .push((claim.task_id.clone(), key));
        queue
            .complete(&claim.task_id, None, &me, None)
            .await
            .expect("complete");
        done.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_key_limit_of_two_runs_at_most_two_of_its_tasks_while_other_keys_flow() {
    let h = Harness::start(Options::default()).await;
    let limits = Limits {
        concurrency: Some(2),
        rate: None,
    };
    h.queue
        .set_key_limits("repo:acme/api", limits, &operator())
        .await
        .expect("limits");
    let mut tasks: Vec<NewTask> = (0..10).map(|_| keyed(Some("repo:acme/api"), 0)).collect();
    tasks.extend((0..3).map(|_| keyed(Some("repo:acme/web"), 0)));
    tasks.extend((0..3).map(|_| keyed(None, 0)));
    let total = tasks.len();
    h.submit_all(tasks).await;

    let running = Arc::new(Mutex::new(HashMap::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(work(
                h.queue.clone(),
                Actor::new("factory-1", Some(format!("c{i}"))),
                running.clone(),
                done.clone(),
                total,
                finished.clone(),
            ))
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(workers))
        .await
        .expect("every task ran in time");

    let running = running.lock().expect("lock").clone();
    assert_eq!(
        running["repo:acme/api"],
        (0, 2),
        "never more than 2 at once, and 2 did run together"
    );
    assert_eq!(
        running["repo:acme/web"].1, 1,
        "an undeclared key runs one at a time"
    );
    let finished = finished.lock().expect("lock").clone();
    let last_api = finished
        .iter()
        .rposition(|(_, key)| key.as_deref() == Some("repo:acme/api"))
        .expect("api tasks ran");
    let others_before = finished[..last_api]
        .iter()
        .filter(|(_, key)| key.as_deref() != Some("repo:acme/api"))
        .count();
    assert_eq!(
        others_before, 6,
        "the other keys' and unkeyed work ran while the key was busy: {finished:?}"
    );
    let key = h.queue.key("repo:acme/api").await.expect("key");
    assert!(key.holders.is_empty() && key.waiting.is_empty(), "{key:?}");
}

#[tokio::test]
async fn a_key_admits_its_waiting_tasks_by_priority() {
    let h = Harness::start(Options::default()).await;
    let ids = h
        .submit_all(vec![
            keyed(Some("tenant:a"), 0),
            keyed(Some("tenant:a"), 1),
            keyed(Some("tenant:a"), 7),
            keyed(Some("tenant:a"), 3),
        ])
        .await;
    let me = Actor::new("factory-1", Some("c1".into()));
    let mut order = Vec::new();
    for _ in 0..4 {
        let claim = h
            .queue
            .claim(&me, Duration::from_secs(3))
            .await
            .expect("claim")
            .expect("the key's next task");
        assert!(
            h.queue
                .claim(&me, Duration::from_millis(100))
                .await
                .expect("claim")
                .is_none(),
            "only one task of an undeclared key at a time"
        );
        order.push(claim.task_id.clone());
        h.queue
            .complete(&claim.task_id, None, &me, None)
            .await
            .expect("complete");
    }
    assert_eq!(
        order,
        [&ids[0], &ids[2], &ids[3], &ids[1]].map(String::clone),
        "first come, then by priority"
    );
}

#[tokio::test]
async fn a_rate_limit_is_never_exceeded_across_two_vibehq_processes() {
    let nats = vibehq_test_support::NatsServer::start().await;
    let nats_url = nats.url();
    let args = ["--nats-url", nats_url.as_str()];
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let ups = [
        UpProcess::start(dir_a.path(), &args).await,
        UpProcess::start(dir_b.path(), &args).await,
    ];
    let (per_ms, max) = (1000, 3);
    let response = reqwest::Client::new()
        .put(format!("{}/api/keys/api:github", ups[0].http))
        .json(&json!({"rate": {"max": max, "per_seconds": per_ms as f64 / 1000.0}}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), 200);
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, submitted) = post(
            &format!("{}/api/tasks", ups[i % 2].http),
            json!({"task_type": "sync", "command": "sync", "concurrency_key": "api:github"}),
        )
        .await;
        assert_eq!(status, 201, "{submitted}");
        ids.push(submitted["task_id"].as_str().expect("id").to_owned());
    }
    // Two claimers on each process, each completing what it claims at once.
    let done = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let claimers: Vec<_> = (0..4)
        .map(|i| {
            let (base, done, total) = (ups[i % 2].http.clone(), done.clone(), ids.len());
            tokio::spawn(async move {
                let me = json!({"worker_name": "factory-1", "container_name": format!("c{i}")});
                while done.load(Ordering::SeqCst) < total {
                    let mut claim = me.clone();
                    claim["wait_ms"] = json!(500);
                    let (status, claimed) = post(&format!("{base}/api/tasks/claim"), claim).await;
                    if status != 200 {
                        continue;
                    }
                    let id = claimed["task_id"].as_str().expect("id");
                    let (status, body) =
                        post(&format!("{base}/api/tasks/{id}/complete"), me.clone()).await;
                    assert_eq!(status, 200, "{body}");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(claimers))
        .await
        .expect("every task ran in time");
    let took = started.elapsed();

    let log = vibehq_events::EventLog::new(nats.connect().await);
    let mut starts = Vec::new();
    for id in &ids {
        starts.push(assigned_at(&log, id).await);
    }
    starts.sort();
    for window in starts.windows(max + 1) {
        let spanned = window[max] - window[0];
        assert!(
            spanned >= time::Duration::milliseconds(per_ms),
            "{} starts within {spanned}: {starts:?}",
            max + 1
        );
    }
    // 10 starts at 3 per second need 3 windows: the limit paces the work, it does not stall it.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test]
async fn keys_are_declared_read_and_refused_over_rest() {
    let (live, _h, base) = serve().await;
    let url = format!("{base}/api/keys/repo:acme%2Fapi");
    let put = |body: Value| {
        let url = url.clone();
        async move {
            let response = reqwest::Client::new()
                .put(&url)
                .json(&body)
                .send()
                .await
                .expect("PUT");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for (body, field) in [
        (json!({}), "concurrency"),
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"concurrency": "two"}), "concurrency"),
        (json!({"rate": 5}), "rate"),
        (json!({"rate": {"max": 0, "per_seconds": 1}}), "rate.max"),
        (json!({"rate": {"per_seconds": 1}}), "rate.max"),
        (json!({"rate": {"max": 2}}), "rate.per_seconds"),
        (
            json!({"rate": {"max": 2, "per_seconds": -1}}),
            "rate.per_seconds",
        ),
        (
            json!({"rate": {"max": 2, "per_seconds": 1, "burst": 3}}),
            "rate.burst",
        ),
        (json!({"concurrency": 2, "limit": 3}), "limit"),
    ] {
        let (status, error) = put(body.clone()).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let (status, key) =
        put(json!({"concurrency": 2, "rate": {"max": 5, "per_seconds": 1.5}})).await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["key"], "repo:acme/api");
    assert_eq!(key["concurrency"], 2);
    assert_eq!(key["rate"], json!({"max": 5, "per_seconds": 1.5}));
    let (status, read) = get_json(&format!("{base}/api/keys/repo:acme/api")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["declared"], true);
    assert_eq!(read["version"], key["version"]);
    let (_, undeclared) = get_json(&format!("{base}/api/keys/tenant:b")).await;
    assert_eq!(undeclared["declared"], false);
    assert_eq!(
        undeclared["concurrency"], 1,
        "an undeclared key runs one task at a time"
    );

    live.caught_up(StreamKind::Tasks, key["version"].as_u64().expect("version"))
        .await;
    let (_, rows) = get_json(&format!("{base}/api/keys")).await;
    let row = &rows["items"][0];
    assert_eq!(row["key"], "repo:acme/api", "{rows}");
    assert_eq!(
        (
            row["concurrency"].clone(),
            row["rate_max"].clone(),
            row["rate_per_ms"].clone()
        ),
        (json!(2), json!(5), json!(1500))
    );
    assert_eq!(row["worker_name"], "api");

    let task = |extra: Value| {
        let mut body = json!({"task_type": "deploy", "command": "deploy"});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        body
    };
    for (extra, field) in [
        (json!({"concurrency_key": "a.b"}), "concurrency_key"),
        (json!({"concurrency_key": ""}), "concurrency_key"),
        (
            json!({"concurrency_key": "k", "delay_ms": 1000}),
            "concurrency_key",
        ),
    ] {
        let (status, error) = post(&format!("{base}/api/tasks"), task(extra.clone())).await;
        assert_eq!(status, 422, "{extra}: {error}");
        assert_eq!(error["error"]["field"], field, "{extra}: {error}");
    }
    let keyed = task(json!({"concurrency_key": "repo:acme/api", "task_id": "deploy-1"}));
    let (status, submitted) = post(&format!("{base}/api/tasks"), keyed.clone()).await;
    assert_eq!(status, 201, "{submitted}");
    let (status, again) = post(&format!("{base}/api/tasks"), keyed).await;
    assert_eq!(
        (status, &again["task_id"]),
        (200, &submitted["task_id"]),
        "sending an admitted task again answers it: {again}"
    );
    let (_, key) = get_json(&format!("{base}/api/keys/repo:acme%2Fapi")).await;
    assert_eq!(key["holders"][0]["task_id"], submitted["task_id"], "{key}");
}
