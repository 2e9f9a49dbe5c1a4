//! "Why is my task still pending?": `GET /api/tasks/{id}/why` names each reason with its
//! evidence, read from the task's events, its lane on the server and the projection.

use std::time::{Duration, Instant};
use vibehq_events::pause::Scope;

use serde_json::Value;
use vibehq_events::StreamKind;
use vibehq_queue::{Actor, NewTask};

use crate::common::{get_json, serve};

fn task(task_type: &str, priority: i64, worker: Option<&str>) -> NewTask {
    NewTask {
        task_type: task_type.into(),
        command: "run".into(),
        priority,
        worker_name: worker.map(str::to_owned),
        max_attempts: 3,
        ..Default::default()
    }
}

/// The reasons `why` gives for `task_id`, once the projection has everything up to `seq`.
async fn why(base: &str, task_id: &str, seq: u64) -> Value {
    let (status, _) = get_json(&format!("{base}/api/tasks/{task_id}?min_seq={seq}")).await;
    assert_eq!(status, 200);
    let (status, why) = get_json(&format!("{base}/api/tasks/{task_id}/why")).await;
    assert_eq!(status, 200, "{why}");
    why
}

fn reasons(why: &Value) -> Vec<String> {
    why["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["reason"].as_str().expect("reason").to_owned())
        .collect()
}

#[tokio::test]
async fn why_names_each_reason_a_task_waits_with_its_evidence() {
    let (live, h, base) = serve().await;
    let ops = Actor::worker("orchestrator");
    let me = Actor::new("w", Some("c1".into()));
    let submit = |t: NewTask| {
        let (queue, ops) = (h.queue.clone(), ops.clone());
        async move { queue.submit(&ops, t).await.expect("submit") }
    };

    // Tasks ahead: one of a higher priority, one earlier in the same lane.
    let urgent = submit(task("a", 5, None)).await;
    let first = submit(task("a", 0, None)).await;
    let second = submit(task("a", 0, None)).await;
    // A task whose attempt failed and waits out its backoff.
    let retried = submit(task("b", 1, Some("w"))).await;
    let claim = h
        .queue
        .claim_task(&retried.task_id, &me)
        .await
        .expect("claim");
    let failed = h
        .queue
        .fail(
            &retried.task_id,
            Some(claim.attempt),
            &me,
            "exit 1".into(),
            true,
        )
        .await
        .expect("fail");
    assert!(failed.retried);
    // Asked at once: the backoff lasts only so long.
    let backoff = why(&base, &retried.task_id, failed.sequence).await;
    assert_eq!(
        reasons(&backoff),
        ["backoff", "ahead"],
        "a retry in its backoff (and behind p5): {backoff}"
    );
    assert_eq!(backoff["reasons"][0]["attempt"], 2, "{backoff}");
    assert!(backoff["reasons"][0]["retry_at"].is_string());
    // A task whose lane the operator pruned.
    let orphan = submit(task("c", 3, Some("gone"))).await;
    live.log
        .jetstream()
        .delete_consumer_from_stream("vibehq-lane-p3-w-gone", StreamKind::Tasks.name())
        .await
        .expect("delete the lane's consumer");
    // A delayed task; one waiting on another; one in a paused worker's lane.
    let delayed = submit(NewTask {
        run_at: Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
        ..task("e", 0, None)
    })
    .await;
    let dependent = submit(NewTask {
        depends_on: vec![first.task_id.clone()],
        ..task("f", 0, None)
    })
    .await;
    h.queue
        .pause(&Scope::Worker("held".into()), &ops, None)
        .await
        .expect("pause");
    let held = submit(task("g", 0, Some("held"))).await;
    // A key held by one task (an undeclared key runs one at a time), and a key whose rate
    // limit (one start an hour) its first task used up.
    let keyed = |key: &str| NewTask {
        concurrency_key: Some(key.into()),
        ..task("h", 0, Some("k"))
    };
    let holder = submit(keyed("repo:acme/api")).await;
    let blocked = submit(keyed("repo:acme/api")).await;
    let hourly = vibehq_events::limit::Limits {
        concurrency: None,
        rate: Some(vibehq_events::limit::Rate {
            max: 1,
            per_ms: 3_600_000,
        }),
    };
    h.queue
        .set_key_limits("api:hourly", hourly, &ops)
        .await
        .expect("limits");
    let used = submit(keyed("api:hourly")).await;
    h.queue
        .claim_task(&used.task_id, &Actor::new("k", None))
        .await
        .expect("the first start of the hour");
    let limited = submit(keyed("api:hourly")).await;
    // A task that ran.
    let done = submit(task("d", 0, Some("x"))).await;
    let x = Actor::new("x", None);
    let claim = h.queue.claim_task(&done.task_id, &x).await.expect("claim");
    let last = h
        .queue
        .complete(&done.task_id, Some(claim.attempt), &x, None)
        .await
        .expect("complete");

    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "the first of the lane, behind a higher priority",
            &first.task_id,
            vec!["ahead"],
        ),
        ("the second of the lane", &second.task_id, vec!["ahead"]),
        ("nothing ahead of the most urgent", &urgent.task_id, vec![]),
        (
            "a task whose lane was pruned (and behind p5)",
            &orphan.task_id,
            vec!["no_lane", "ahead"],
        ),
        ("a delayed task", &delayed.task_id, vec!["not_due"]),
        (
            "a task waiting on another",
            &dependent.task_id,
            vec!["waiting_on"],
        ),
        (
            "a task in a paused lane (and behind p5)",
            &held.task_id,
            vec!["paused", "ahead"],
        ),
        (
            "a task whose key is at its limit",
            &blocked.task_id,
            vec!["key_at_limit"],
        ),
        (
            "a task its key's rate limit holds",
            &limited.task_id,
            vec!["rate_limited"],
        ),
        ("a task that is not pending", &done.task_id, vec![]),
    ];
    for (what, id, expected) in cases {
        let answer = why(&base, id, last).await;
        assert_eq!(reasons(&answer), expected, "{what}: {answer}");
    }

    let first_why = why(&base, &first.task_id, last).await;
    assert_eq!(first_why["status"], "pending");
    assert_eq!(first_why["lane"], "p0.any");
    assert_eq!(
        first_why["reasons"][0]["higher_priority"], 3,
        "the p5, p3 and p1 tasks: {first_why}"
    );
    assert_eq!(first_why["reasons"][0]["earlier_in_lane"], 0);
    let second_why = why(&base, &second.task_id, last).await;
    assert_eq!(
        second_why["reasons"][0]["earlier_in_lane"], 1,
        "{second_why}"
    );
    let at_limit = why(&base, &blocked.task_id, last).await;
    assert_eq!(at_limit["reasons"][0]["key"], "repo:acme/api");
    assert_eq!(at_limit["reasons"][0]["concurrency"], 1);
    assert_eq!(
        at_limit["reasons"][0]["held_by"],
        serde_json::json!([holder.task_id]),
        "{at_limit}"
    );
    let rate = why(&base, &limited.task_id, last).await;
    let until = time::OffsetDateTime::parse(
        rate["reasons"][0]["until"].as_str().expect("until"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("a time");
    assert!(
        until > time::OffsetDateTime::now_utc() + time::Duration::minutes(59),
        "{rate}"
    );
    let done_why = why(&base, &done.task_id, last).await;
    assert_eq!(done_why["status"], "completed");

    // Nobody pulls the lane of worker `w`'s urgent work: after a few idle seconds, `why`
    // says no claimer has looked, with the lane's last activity.
    let idle = submit(task("e", 7, Some("nobody"))).await;
    let started = Instant::now();
    let answer = loop {
        let answer = why(&base, &idle.task_id, idle.sequence).await;
        if reasons(&answer).contains(&"no_claimer".to_owned()) {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let reason = &answer["reasons"][0];
    assert_eq!(reason["consumer"], "vibehq-lane-p7-w-nobody");
    assert!(reason["idle_secs"].as_i64().expect("idle") >= 3, "{answer}");
    assert_eq!(reason["undelivered"], 1);

    let (status, missing) = get_json(&format!("{base}/api/tasks/never-submitted/why")).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}
