//! Delayed tasks: `run_at` or `delay_ms` on submit. The task is pending with its due time from
//! the start, never handed out before it, and handed out within a second of it, also across a
//! restart of `vibehq up`; the server's message schedules keep the time.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::common::{UpProcess, get_json, post, serve};

fn run_at_of(task: &Value) -> OffsetDateTime {
    let at = task["run_at"].as_i64().expect("run_at in the row");
    OffsetDateTime::from_unix_timestamp(at).expect("a time")
}

/// Claims with `wait_ms` until a task comes (at most `within`), answering it and when.
async fn claim_when_due(base: &str, within: Duration) -> (Value, OffsetDateTime) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, claim) = post(
            &format!("{base}/api/tasks/claim"),
            json!({"worker_name": "factory-1", "container_name": "c1", "wait_ms": 1000}),
        )
        .await;
        if status == 200 {
            return (claim, OffsetDateTime::now_utc());
        }
        assert_eq!(status, 204, "{claim}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was handed out in time"
        );
    }
}

#[tokio::test]
async fn a_delayed_task_waits_for_its_time_and_then_runs_within_a_second() {
    let (_live, _h, base) = serve().await;
    let asked = OffsetDateTime::now_utc();
    let run_at = asked + time::Duration::milliseconds(1500);
    let (status, submitted) = post(
        &format!("{base}/api/tasks"),
        json!({"task_type": "audit", "command": "audit",
               "run_at": run_at.format(&Rfc3339).expect("format")}),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["task_id"].as_str().expect("id").to_owned();
    let (_, row) = get_json(&format!(
        "{base}/api/tasks/{id}?min_seq={}",
        submitted["sequence"]
    ))
    .await;
    assert_eq!(row["status"], "pending");
    assert_eq!(run_at_of(&row).unix_timestamp(), run_at.unix_timestamp());
    let (_, why) = get_json(&format!("{base}/api/tasks/{id}/why")).await;
    assert_eq!(why["reasons"][0]["reason"], "not_due", "{why}");

    let (claim, claimed_at) = claim_when_due(&base, Duration::from_secs(10)).await;
    assert_eq!(claim["task_id"], id.as_str());
    assert!(
        claimed_at >= run_at,
        "handed out {} early",
        run_at - claimed_at
    );
    let late = claimed_at - run_at;
    assert!(
        late < time::Duration::seconds(1),
        "handed out {late} after its time"
    );
    eprintln!("handed out {late} after its time");
}

#[tokio::test]
async fn a_delayed_task_runs_on_time_though_vibehq_restarted_meanwhile() {
    let dir = tempfile::tempdir().expect("dir");
    let up = UpProcess::start(dir.path(), &["--embedded-nats-port", "0"]).await;
    let (status, submitted) = post(
        &format!("{}/api/tasks", up.http),
        json!({"task_type": "audit", "command": "audit", "delay_ms": 4000}),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["task_id"].as_str().expect("id").to_owned();
    let (_, row) = get_json(&format!(
        "{}/api/tasks/{id}?min_seq={}",
        up.http, submitted["sequence"]
    ))
    .await;
    let run_at = run_at_of(&row);
    let mut up = up;
    up.signal(Signal::SIGTERM);
    up.child.wait().await.expect("vibehq up stops");

    let up = UpProcess::start(dir.path(), &["--embedded-nats-port", "0"]).await;
    let (claim, claimed_at) = claim_when_due(&up.http, Duration::from_secs(15)).await;
    assert_eq!(claim["task_id"], id.as_str());
    // run_at is whole seconds in the row: the event's own time is up to a second later.
    assert!(claimed_at >= run_at, "handed out early");
    let late = claimed_at - run_at;
    assert!(
        late < time::Duration::seconds(2),
        "handed out {late} after its time"
    );
}

#[tokio::test]
async fn a_delayed_task_cancelled_before_its_time_never_runs() {
    let (live, _h, base) = serve().await;
    let (_, submitted) = post(
        &format!("{base}/api/tasks"),
        json!({"task_type": "audit", "command": "audit", "delay_ms": 800}),
    )
    .await;
    let id = submitted["task_id"].as_str().expect("id").to_owned();
    let (status, _) = post(&format!("{base}/api/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    let schedules = live
        .log
        .jetstream()
        .get_stream(vibehq_events::schedule::STREAM)
        .await
        .expect("schedules stream")
        .info()
        .await
        .expect("info")
        .state
        .messages;
    assert_eq!(schedules, 0, "the cancel removed the schedule");
    // Past its time, nothing is handed out.
    let (status, _) = post(
        &format!("{base}/api/tasks/claim"),
        json!({"worker_name": "factory-1", "wait_ms": 1500}),
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn a_bad_delay_is_refused_naming_the_field() {
    let (_live, _h, base) = serve().await;
    let url = format!("{base}/api/tasks");
    for (body, field) in [
        (
            json!({"task_type": "t", "command": "c", "run_at": "tomorrow"}),
            "run_at",
        ),
        (
            json!({"task_type": "t", "command": "c", "run_at": "2026-12-02T10:00:00"}),
            "run_at",
        ),
        (
            json!({"task_type": "t", "command": "c", "delay_ms": -1}),
            "delay_ms",
        ),
        (
            json!({"task_type": "t", "command": "c", "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"}),
            "delay_ms",
        ),
        (
            json!([{"task_type": "t", "command": "c", "delay_ms": 5}]),
            "[0].run_at",
        ),
    ] {
        let (status, refused) = post(&url, body.clone()).await;
        assert_eq!(
            (status, refused["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {refused}"
        );
    }
    // A time already past runs now.
    let (status, now) = post(
        &url,
        json!({"task_type": "t", "command": "c", "run_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 201);
    let (claim, _) = claim_when_due(&base, Duration::from_secs(3)).await;
    assert_eq!(claim["task_id"], now["task_id"]);
}
