//! The task queue live: the `/ws/tasks` event feed (filters, resuming without gaps) and the
//! `ContainerTaskQueueOps` NATS micro service (discovery, a task's life over plain requests,
//! refusals that name their field).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::{CancellationToken, DropGuard};
use vibehq_queue::{Actor, NewTask};

use crate::common::{Harness, Live, call, get_json, post, queue_state, serve};

/// Longest any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

pub(crate) type Feed =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn feed_url(base: &str, query: &str) -> String {
    format!("{}/ws/tasks{query}", base.replacen("http://", "ws://", 1))
}

/// Opens `/ws/tasks` with `query` (e.g. `?status=completed`).
pub(crate) async fn open(base: &str, query: &str) -> Feed {
    let (feed, response) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(feed_url(base, query)),
    )
    .await
    .expect("handshake in time")
    .expect("the feed opens");
    assert_eq!(response.status().as_u16(), 101);
    feed
}

/// The next event on the feed.
async fn next_event(feed: &mut Feed) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, feed.next())
            .await
            .expect("an event in time")
            .expect("the feed is open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Events up to and including the one at stream sequence `last`.
pub(crate) async fn events_through(feed: &mut Feed, last: u64) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = next_event(feed).await;
        let sequence = event["sequence"].as_u64().expect("sequence");
        assert!(sequence <= last, "went past #{last}: {event}");
        events.push(event);
        if sequence == last {
            return events;
        }
    }
}

/// Closes the feed from the client's side, and checks the server answers with a close frame.
async fn hang_up(mut feed: Feed) {
    feed.close(None).await.expect("send close");
    let answer = tokio::time::timeout(WAIT, feed.next())
        .await
        .expect("the server answers the close in time");
    assert!(
        matches!(answer, Some(Ok(Message::Close(_)))),
        "a clean close: {answer:?}"
    );
}

fn sequences(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect()
}

fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["task_id"].as_str().expect("task_id").to_owned(),
                e["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect()
}

fn task(task_type: &str, worker: Option<&str>) -> NewTask {
    NewTask {
        task_type: task_type.into(),
        command: "run".into(),
        worker_name: worker.map(str::to_owned),
        max_attempts: 3,
        ..Default::default()
    }
}

fn container(worker: &str) -> Actor {
    Actor::new(worker, Some("c1".into()))
}

/// Claims task `id` as `worker`, runs it and completes it; the completion's sequence.
async fn complete(h: &Harness, id: &str, worker: &str) -> u64 {
    let me = container(worker);
    let claim = h.queue.claim_task(id, &me).await.expect("claim");
    h.queue
        .start(id, Some(claim.attempt), &me)
        .await
        .expect("start");
    h.queue
        .complete(id, Some(claim.attempt), &me, Some("ok".into()))
        .await
        .expect("complete")
}

/// Submits a task, then claims, starts and completes it as `worker`: four events. The last
/// one's sequence.
async fn run_one(h: &Harness, worker: &str) -> u64 {
    let id = h.submit_all(vec![task("audit", None)]).await.remove(0);
    complete(h, &id, worker).await
}

#[tokio::test]
async fn a_feed_filtered_by_status_sees_only_that_status() {
    let (_live, h, base) = serve().await;
    let mut feed = open(&base, "?status=completed").await;

    let ids = h
        .submit_all(vec![
            task("audit", None),
            task("audit", None),
            task("audit", None),
        ])
        .await;
    complete(&h, &ids[0], "w").await;
    let me = container("w");
    let claim = h.queue.claim_task(&ids[1], &me).await.expect("claim");
    h.queue
        .fail(&ids[1], Some(claim.attempt), &me, "exit 1".into(), false)
        .await
        .expect("fail");
    // Events arrive in stream order, so once the last completion is here, every earlier event
    // has been through the filter.
    let last = complete(&h, &ids[2], "w").await;

    let events = events_through(&mut feed, last).await;
    assert_eq!(
        kinds(&events),
        [
            (ids[0].clone(), "task.completed".to_owned()),
            (ids[2].clone(), "task.completed".to_owned()),
        ]
    );
    for event in &events {
        assert_eq!(event["status"], "completed", "{event}");
        assert_eq!(event["worker_name"], "w", "{event}");
        assert_eq!(event["container_name"], "c1", "{event}");
        assert_eq!(event["payload"]["output"], "ok", "{event}");
        let at = event["occurred_at"].as_str().expect("occurred_at");
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{at} is not RFC 3339: {e}"));
    }
}

#[tokio::test]
async fn a_feed_filtered_by_worker_and_type_knows_tasks_submitted_before_it_opened() {
    let (_live, h, base) = serve().await;
    // Submitted before the feed opens: the feed learns their type and target by loading them.
    let ids = h
        .submit_all(vec![
            task("deploy", Some("w1")),
            task("audit", Some("w1")),
            task("deploy", Some("w2")),
            task("deploy", None),
        ])
        .await;
    let (w1_deploy, w1_audit, w2_deploy, any_deploy) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let mut feed = open(&base, "?worker_name=w1&task_type=deploy").await;

    h.queue
        .claim_task(w1_deploy, &container("w1"))
        .await
        .expect("claim");
    h.queue
        .cancel(w1_deploy, &Actor::worker("ops"), None)
        .await
        .expect("cancel");
    complete(&h, w1_audit, "w1").await; // w1's, but not a deploy
    complete(&h, w2_deploy, "w2").await; // a deploy, but w2's
    complete(&h, any_deploy, "w1").await; // for anyone; w1 took it
    // Submitted while the feed is open: learnt from its submission.
    let new_deploy = h
        .submit_all(vec![task("deploy", Some("w1"))])
        .await
        .remove(0);
    let last = complete(&h, &new_deploy, "w1").await;

    let events = events_through(&mut feed, last).await;
    let expected: Vec<(String, String)> = [
        (w1_deploy, "task.assigned"),
        (w1_deploy, "task.cancelled"),
        (any_deploy, "task.assigned"),
        (any_deploy, "task.started"),
        (any_deploy, "task.completed"),
        (&new_deploy, "task.submitted"),
        (&new_deploy, "task.assigned"),
        (&new_deploy, "task.started"),
        (&new_deploy, "task.completed"),
    ]
    .into_iter()
    .map(|(id, kind)| (id.clone(), kind.to_owned()))
    .collect();
    assert_eq!(kinds(&events), expected);
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        [
            "assigned",
            "cancelled",
            "assigned",
            "running",
            "completed",
            "pending",
            "assigned",
            "running",
            "completed"
        ]
    );
}

#[tokio::test]
async fn a_client_that_reconnects_after_its_last_sequence_gets_every_later_event_exactly_once() {
    let (_live, h, base) = serve().await;
    let mut feed = open(&base, "").await;
    let last_seen = run_one(&h, "w").await;
    let before = events_through(&mut feed, last_seen).await;
    assert_eq!(before.len(), 4, "submitted, assigned, started, completed");
    hang_up(feed).await;

    // Disconnected: two more tasks run.
    run_one(&h, "w").await;
    run_one(&h, "w").await;

    let mut feed = open(&base, &format!("?after_seq={last_seen}")).await;
    // Connected again: one more, live.
    let last = run_one(&h, "w").await;
    let after = events_through(&mut feed, last).await;

    // The tasks stream holds only task events and the feed is unfiltered, so "every later event
    // exactly once" is every sequence after the last seen, each once, in order.
    assert_eq!(
        sequences(&after),
        (last_seen + 1..=last).collect::<Vec<_>>()
    );
    assert_eq!(after.len(), 12, "three tasks of four events");
    let ids: BTreeSet<&str> = after
        .iter()
        .map(|e| e["task_id"].as_str().expect("task_id"))
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(before[0]["task_id"].as_str().expect("id")));
    hang_up(feed).await;
}

#[tokio::test]
async fn a_bad_feed_parameter_is_refused_with_a_400_naming_it_before_the_upgrade() {
    let (_live, _h, base) = serve().await;
    for (query, field) in [
        ("?status=bogus", "status"),
        ("?after_seq=-1", "after_seq"),
        ("?colour=red", "colour"),
    ] {
        let refused = tokio_tungstenite::connect_async(feed_url(&base, query)).await;
        let Err(tungstenite::Error::Http(response)) = refused else {
            panic!("{query}: expected an HTTP refusal, got {refused:?}");
        };
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: Value =
            serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("JSON");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    // The feed is in the OpenAPI document.
    let (_, doc) = get_json(&format!("{base}/openapi.json")).await;
    assert!(doc["paths"]["/ws/tasks"]["get"].is_object(), "{doc}");
}

/// `ContainerTaskQueueOps` over `live` and `h`'s queue, and a separate client to call it with.
async fn serve_rpc(live: &Live, h: &Harness) -> (async_nats::Client, DropGuard) {
    let rpc = vibehq_queue::rpc::Rpc::start(queue_state(live, h), live.nats.connect().await)
        .await
        .expect("the service starts");
    let stop = CancellationToken::new();
    tokio::spawn(rpc.serve(stop.clone()));
    (live.nats.connect().await, stop.drop_guard())
}

async fn rpc(
    client: &async_nats::Client,
    operation: &str,
    body: Value,
) -> Result<Value, (u16, Value)> {
    call(
        client,
        &format!("vibehq.rpc.tasks.{operation}"),
        body.to_string().into(),
    )
    .await
}

#[tokio::test]
async fn the_rpc_service_answers_ping_and_lists_its_endpoints() {
    let live = Live::start().await;
    let h = Harness::on(None, live.log.clone(), vibehq_queue::Options::default()).await;
    let (client, _stop) = serve_rpc(&live, &h).await;

    let pong = call(&client, "$SRV.PING.ContainerTaskQueueOps", Bytes::new())
        .await
        .expect("pong");
    assert_eq!(pong["type"], "io.nats.micro.v1.ping_response");
    assert_eq!(pong["name"], "ContainerTaskQueueOps");
    assert_eq!(pong["version"], env!("CARGO_PKG_VERSION"));

    let info = call(&client, "$SRV.INFO.ContainerTaskQueueOps", Bytes::new())
        .await
        .expect("info");
    assert_eq!(info["name"], "ContainerTaskQueueOps");
    let endpoints: BTreeSet<(String, String)> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e["subject"].as_str().expect("subject").to_owned(),
            )
        })
        .collect();
    // Each operation answers operators on its own subject, and a worker on one ending in the
    // worker's name.
    let expected: BTreeSet<(String, String)> = vibehq_queue::ops::Op::ALL
        .iter()
        .map(|op| op.name())
        .flat_map(|name| {
            [
                (name.to_owned(), format!("vibehq.rpc.tasks.{name}")),
                (
                    format!("{name}-as-worker"),
                    format!("vibehq.rpc.tasks.{name}.*"),
                ),
            ]
        })
        .collect();
    assert_eq!(endpoints, expected);
}

#[tokio::test]
async fn a_task_runs_from_submission_to_completion_over_plain_nats_requests() {
    let (live, h, base) = serve().await;
    let (client, _stop) = serve_rpc(&live, &h).await;

    let submitted = rpc(
        &client,
        "submitTask",
        json!({"task_type": "health_audit", "command": "audit", "parameters": {"target": "api"},
               "worker_name": "factory-1", "submitted_by": "orchestrator"}),
    )
    .await
    .expect("submitted");
    assert_eq!(submitted["created"], true);
    let id = submitted["task_id"].as_str().expect("task_id").to_owned();

    let claim = rpc(
        &client,
        "claimTask",
        json!({"worker_name": "factory-1", "container_name": "c1", "wait_ms": 5000}),
    )
    .await
    .expect("claimed");
    assert_eq!(claim["task_id"], id.as_str());
    assert_eq!(claim["parameters"], json!({"target": "api"}));

    let written = rpc(
        &client,
        "completeTask",
        json!({"task_id": id, "worker_name": "factory-1", "container_name": "c1",
               "attempt": claim["attempt"], "output": "all healthy"}),
    )
    .await
    .expect("completed");
    assert_eq!(written["task_id"], id.as_str());

    let (status, row) = get_json(&format!(
        "{base}/api/tasks/{id}?min_seq={}",
        written["sequence"]
    ))
    .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(
        (&row["status"], &row["output"], &row["assigned_to"]),
        (
            &json!("completed"),
            &json!("all healthy"),
            &json!("factory-1:c1")
        )
    );

    let page = rpc(
        &client,
        "getTasks",
        json!({"status": "completed", "task_type": "health_audit", "limit": 10}),
    )
    .await
    .expect("listed");
    let listed: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|row| row["task_id"].as_str().expect("task_id"))
        .collect();
    assert_eq!(listed, [id.as_str()]);

    let nothing = rpc(&client, "claimTask", json!({"worker_name": "factory-1"}))
        .await
        .expect("answered");
    assert_eq!(nothing, Value::Null, "no more work");
}

#[tokio::test]
async fn an_rpc_refusal_carries_the_http_status_and_names_the_field() {
    let (live, h, _base) = serve().await;
    let (client, _stop) = serve_rpc(&live, &h).await;

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("submitTask", json!({"task_type": "t"}), 422, "command"),
        (
            "submitTask",
            json!({"task_type": "t", "command": "rm -rf /"}),
            422,
            "command",
        ),
        ("submitTask", json!(["not", "an", "object"]), 400, "body"),
        (
            "claimTask",
            json!({"worker_name": "w", "wait_ms": 600000}),
            422,
            "wait_ms",
        ),
        (
            "completeTask",
            json!({"worker_name": "w", "attempt": 1}),
            422,
            "task_id",
        ),
        (
            "completeTask",
            json!({"task_id": "no-such-task", "worker_name": "w", "attempt": 1}),
            404,
            "task_id",
        ),
        (
            "failTask",
            json!({"task_id": "t", "worker_name": "w", "attempt": 1}),
            422,
            "error",
        ),
        ("getTasks", json!({"status": "bogus"}), 400, "status"),
    ];
    for (operation, body, status, field) in cases {
        let refused = rpc(&client, operation, body.clone()).await;
        let Err((code, error)) = refused else {
            panic!("{operation} {body}: accepted: {refused:?}");
        };
        assert_eq!(code, status, "{operation} {body}: {error}");
        assert_eq!(
            error["error"]["field"], field,
            "{operation} {body}: {error}"
        );
    }
}

#[tokio::test]
async fn progress_from_the_running_claim_reaches_the_feed_and_the_row_and_nothing_else_does() {
    let (_live, h, base) = serve().await;
    let id = h.submit_all(vec![task("audit", None)]).await.remove(0);
    let mut feed = open(&base, "").await;
    let me = container("w");
    let claim = h.queue.claim_task(&id, &me).await.expect("claim");
    let url = format!("{base}/api/tasks/{id}/progress");
    let report = |body: Value| post(&url, body);

    let (status, body) =
        report(json!({"worker_name": "w", "container_name": "c1", "percent": 5})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_allowed")),
        "an assigned task that has not started has no progress: {body}"
    );
    h.queue
        .start(&id, Some(claim.attempt), &me)
        .await
        .expect("start");
    for (body, field) in [
        (
            json!({"worker_name": "w", "container_name": "c1", "percent": 101}),
            "percent",
        ),
        (
            json!({"worker_name": "w", "container_name": "c1"}),
            "percent",
        ),
        (
            json!({"worker_name": "w", "container_name": "c1", "message": "x".repeat(1025)}),
            "message",
        ),
    ] {
        let (status, refused) = report(body).await;
        assert_eq!(
            (status, refused["error"]["field"].as_str()),
            (422, Some(field)),
            "{refused}"
        );
    }
    let (status, _) =
        report(json!({"worker_name": "other", "container_name": "c1", "percent": 9})).await;
    assert_eq!(status, 409, "only the holder reports progress");

    let (status, written) = report(json!({
        "worker_name": "w", "container_name": "c1", "percent": 40, "message": "cloning"
    }))
    .await;
    assert_eq!(status, 200, "{written}");
    let last = written["sequence"].as_u64().expect("sequence");
    let events = events_through(&mut feed, last).await;
    let progress = events.last().expect("the report");
    assert_eq!(progress["type"], "task.progress", "{progress}");
    assert_eq!(progress["status"], "running");
    assert_eq!(progress["payload"]["percent"], 40.0);
    assert_eq!(progress["payload"]["message"], "cloning");

    let (_, row) = get_json(&format!("{base}/api/tasks/{id}?min_seq={last}")).await;
    assert_eq!(row["progress_percent"], 40.0, "{row}");
    assert_eq!(row["progress_message"], "cloning");
    assert_eq!(row["status"], "running");
}
