//! Honest answers while the broker is away: a submission answered 503 `not_stored` is never
//! stored later, one answered `outcome_unknown` names the task id that makes sending it again
//! safe, and `/health` says what is degraded within a second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use vibehq_events::{Payload, StreamKind};

use crate::common::{Live, serve_on};

/// What the API answered one submission.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Stored,
    NotStored,
    Unknown,
}

#[tokio::test]
async fn a_cut_broker_never_hides_a_stored_task_behind_a_503() {
    let live = Live::on(vibehq_test_support::NatsServer::start().await).await;
    let (mut live, _harness, base) = serve_on(live, Default::default()).await;
    let answers: Arc<Mutex<BTreeMap<String, Answer>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let submitters: Vec<_> = (0..8)
        .map(|client| {
            let (answers, stop, base) = (answers.clone(), stop.clone(), base.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0;
                while !stop.is_cancelled() {
                    n += 1;
                    let task_id = format!("c{client}-{n}");
                    let response = http
                        .post(format!("{base}/api/tasks"))
                        .json(&json!({"task_type": "t", "command": "c", "task_id": task_id}))
                        .send()
                        .await
                        .expect("the API answers");
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.expect("JSON");
                    let answer = match (status, body["error"]["code"].as_str()) {
                        (201, _) => Answer::Stored,
                        (503, Some("not_stored")) => Answer::NotStored,
                        (503, Some("outcome_unknown")) => {
                            assert_eq!(body["error"]["task_id"], task_id.as_str(), "{body}");
                            Answer::Unknown
                        }
                        other => panic!("unexpected answer {other:?}: {body}"),
                    };
                    answers.lock().expect("answers").insert(task_id, answer);
                    if status == 503 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let port = live.nats.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let health = reqwest::get(format!("{base}/health"))
        .await
        .expect("health");
    let took = asked.elapsed();
    assert_eq!(health.status().as_u16(), 503);
    assert!(took < Duration::from_secs(1), "/health took {took:?}");
    let report: Value = health.json().await.expect("JSON");
    assert_eq!(report["status"], "degraded");
    assert!(
        report["degraded"][0]
            .as_str()
            .is_some_and(|d| d.contains("nats")),
        "{report}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    live.nats.start_again(port).await;
    // Let the clients reconnect (and flush anything they held), and submit a little more.
    let back = Instant::now();
    loop {
        let status = reqwest::get(format!("{base}/health"))
            .await
            .expect("health")
            .status();
        if status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for submitter in submitters {
        submitter.await.expect("submitter");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Sending an unknown outcome's submission again with its task id is safe.
    let unknown: Vec<String> = answers
        .lock()
        .expect("answers")
        .iter()
        .filter(|(_, a)| **a == Answer::Unknown)
        .map(|(id, _)| id.clone())
        .collect();
    for task_id in &unknown {
        let (status, body) = crate::common::post(
            &format!("{base}/api/tasks"),
            json!({"task_type": "t", "command": "c", "task_id": task_id}),
        )
        .await;
        assert!(status == 200 || status == 201, "{task_id}: {status} {body}");
    }

    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    let last = live
        .log
        .stream_info(StreamKind::Tasks)
        .await
        .expect("info")
        .state
        .last_sequence;
    let mut read = Box::pin(
        live.log
            .read(StreamKind::Tasks, None, 1, last)
            .await
            .expect("read"),
    );
    while let Some(record) = read.next().await {
        if let Payload::TaskSubmitted(s) = record.expect("record").decode().expect("event").payload
        {
            *stored.entry(s.task_id).or_default() += 1;
        }
    }
    let answers = answers.lock().expect("answers").clone();
    let count = |wanted: Answer| answers.values().filter(|a| **a == wanted).count();
    let (ok, refused) = (count(Answer::Stored), count(Answer::NotStored));
    assert!(
        ok > 0 && refused > 0,
        "the cut came mid-stream: {ok} stored, {refused} refused"
    );
    for (task_id, answer) in &answers {
        match answer {
            Answer::Stored | Answer::Unknown => {
                assert_eq!(
                    stored.get(task_id),
                    Some(&1),
                    "{task_id} ({answer:?}) is stored once"
                )
            }
            Answer::NotStored => assert!(
                !stored.contains_key(task_id),
                "{task_id} was answered not_stored but is stored"
            ),
        }
    }
    assert!(
        stored.keys().all(|id| answers.contains_key(id)),
        "nothing else was stored"
    );
}
