//! A three-node cluster losing a node: vibehq on R3 streams keeps taking and finishing work
//! while the leader of the tasks stream is killed and later restarted, every acknowledged
//! task completes exactly once, and the projection equals a replay of the streams.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::Child;
use vibehq_events::{EventLog, Payload, StreamKind};
use vibehq_test_support::NatsCluster;

use crate::common::{UpProcess, get_json, vibehq};

const TASKS: usize = 300;

/// A worker process, logging into `dir`.
fn worker(url: &str, container: &str, dir: &std::path::Path) -> Child {
    vibehq()
        .args(["worker", "--nats-url", url, "--worker-name", "w"])
        .args(["--container-name", container, "--concurrency", "4"])
        .args(["--allow", "job=/bin/true"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{container}.log"))).expect("log"))
        .spawn()
        .expect("spawn a worker")
}

/// Submits `task_id` until the API says it is stored, as an honest client does: a 503 is
/// either `not_stored` or `outcome_unknown`, and sending the same task id again is safe.
async fn submit(http: &reqwest::Client, base: &str, task_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = http
            .post(format!("{base}/api/tasks"))
            .json(&json!({"task_type": "job", "command": "job", "task_id": task_id}))
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status().as_u16();
            if status == 200 || status == 201 {
                return;
            }
            assert_eq!(
                status,
                503,
                "{task_id}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{task_id} was never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn losing_a_node_mid_stream_loses_no_task_and_completes_each_once() {
    let mut cluster = NatsCluster::start().await;
    let url = cluster.url();
    let data = tempfile::tempdir().expect("data dir");
    let up = UpProcess::start(
        data.path(),
        &[
            "--nats-url",
            &url,
            "--stream-replicas",
            "3",
            "--lease-secs",
            "5",
        ],
    )
    .await;
    let _workers = [
        worker(&url, "c1", data.path()),
        worker(&url, "c2", data.path()),
    ];

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let submitters: Vec<_> = (0..4)
        .map(|client| {
            let (base, acknowledged) = (up.http.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in (client..TASKS).step_by(4) {
                    submit(&http, &base, &format!("t-{n}")).await;
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    let until = |count: usize| {
        let acknowledged = acknowledged.clone();
        async move {
            while acknowledged.load(Ordering::Relaxed) < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), until(TASKS / 4))
        .await
        .expect("a quarter submitted");
    let log = EventLog::new(cluster.connect().await);
    let info = log
        .stream_info(StreamKind::Tasks)
        .await
        .expect("stream info");
    assert_eq!(info.config.num_replicas, 3, "vibehq made the streams R3");
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the tasks stream has a leader");
    let victim = cluster.index_of(&leader);
    cluster.kill(victim).await;
    tokio::time::timeout(Duration::from_secs(60), until(TASKS * 3 / 4))
        .await
        .expect("submissions go on without the node");
    cluster.start_again(victim).await;
    for submitter in submitters {
        tokio::time::timeout(Duration::from_secs(60), submitter)
            .await
            .expect("every task submitted")
            .expect("submitter");
    }

    // Every acknowledged task completes, in the projection.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, page) = get_json(&format!(
            "{}/api/tasks?status=completed&limit=1000",
            up.http
        ))
        .await;
        let done = page["items"].as_array().map_or(0, Vec::len);
        if done == TASKS {
            break;
        }
        if Instant::now() > deadline {
            let (_, health) = get_json(&format!("{}/health", up.http)).await;
            let tail = |name: &str| {
                let log = std::fs::read_to_string(data.path().join(name)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            };
            panic!(
                "only {done} of {TASKS} completed; health: {health}\nc1:\n{}\nc2:\n{}",
                tail("c1.log"),
                tail("c2.log")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // …exactly once, by the stream.
    let last = log
        .stream_info(StreamKind::Tasks)
        .await
        .expect("info")
        .state
        .last_sequence;
    let mut completions: BTreeMap<String, usize> = BTreeMap::new();
    let mut read = Box::pin(
        log.read(StreamKind::Tasks, None, 1, last)
            .await
            .expect("read"),
    );
    while let Some(record) = read.next().await {
        let record = record.expect("record");
        if let Ok(event) = record.decode()
            && let Payload::TaskCompleted(done) = event.payload
        {
            *completions.entry(done.task_id).or_default() += 1;
        }
    }
    assert_eq!(completions.len(), TASKS, "every task completed");
    let twice: Vec<_> = completions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");

    // The projection equals a replay of the streams at its sequences.
    let verify = vibehq()
        .args(["replay", "--verify", "--nats-url", &url, "--data-dir"])
        .arg(data.path())
        .output()
        .await
        .expect("run replay --verify");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let (status, health): (u16, Value) = get_json(&format!("{}/health", up.http)).await;
    assert_eq!(status, 200, "healthy again with the node back: {health}");
}
