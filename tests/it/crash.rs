//! Crash safety: `kill -9` of the whole `vibehq` process while it projects loses nothing and
//! applies nothing twice.

use nix::sys::signal::Signal;
use vibehq_events::{EventLog, StreamKind};
use vibehq_projector::{ReplayOptions, Until};
use vibehq_test_support::{NatsServer, fixtures};

use crate::common::{UpProcess, checkpoints, dump, get_json};

const EVENTS: usize = 10_000;

#[tokio::test]
async fn killing_the_projector_mid_stream_yields_the_uninterrupted_projection() {
    let nats = NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1).await.expect("streams");
    let data = nats.scratch().join("data");
    let database = data.join("projection.sqlite3");
    let url = nats.url();
    let events = fixtures::task_workload(EVENTS, "crash");

    // Three runs killed with SIGKILL while events arrive, then one that finishes.
    let mut published = 0;
    let mut killed_at = Vec::new();
    for chunk in [2_500, 2_500, 2_500] {
        let up = UpProcess::start(&data, &["--nats-url", &url]).await;
        log.append_all(&events[published..published + chunk])
            .await
            .expect("append");
        published += chunk;
        up.signal(Signal::SIGKILL);
        let mut child = up.child;
        child.wait().await.expect("reap");
        killed_at.push(checkpoints(&database).get(StreamKind::Tasks));
    }
    log.append_all(&events[published..])
        .await
        .expect("append the rest");
    let mut up = UpProcess::start(&data, &["--nats-url", &url]).await;
    let caught_up = format!(
        "{}/api/tables/container_tasks?limit=1&min_seq={EVENTS}",
        up.http
    );
    let mut status = 0;
    for _ in 0..6 {
        status = get_json(&caught_up).await.0;
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "projection never reached {EVENTS}");
    up.signal(Signal::SIGTERM);
    assert!(up.child.wait().await.expect("exit").success());
    eprintln!("checkpoints when killed: {killed_at:?}");
    assert!(killed_at.iter().all(|&at| at < EVENTS as u64));

    let uninterrupted = nats.scratch().join("uninterrupted.sqlite3");
    let (totals, _, _) = vibehq_projector::replay(
        &log,
        ReplayOptions {
            into: uninterrupted.clone(),
            streams: StreamKind::ALL.to_vec(),
            until: Until::End,
        },
        |_| {},
    )
    .await
    .expect("replay");
    assert_eq!(totals.applied, EVENTS as u64);
    assert_eq!(checkpoints(&database).get(StreamKind::Tasks), EVENTS as u64);
    let (killed, clean) = (dump(&database), dump(&uninterrupted));
    for (table, rows) in &clean {
        assert_eq!(&killed[table], rows, "{table} differs after crashes");
    }
    assert_eq!(killed["container_tasks"].len(), EVENTS / 4);
}
