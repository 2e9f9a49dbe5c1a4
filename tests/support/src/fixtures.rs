//! Events for tests and benchmarks: one of every kind, and realistic workloads.

use serde_json::json;
use vibehq_events::{Envelope, EventKind, ai, container, fleet, limit, pause, recurring, task};

/// At least one event of every [`EventKind`], in an order that projects cleanly (creations
/// before updates, and task histories the task lifecycle accepts), all recorded by
/// `worker`/`container`. Ids are suffixed with `tag` so several sets can share a stream. The
/// first event is the submission of `task-<tag>`; that task is assigned, has a result refused,
/// starts, is requeued, assigned again and completed; `task-<tag>-failed` fails and
/// `task-<tag>-cancelled` is cancelled.
pub fn every_kind(worker: &str, container: &str, tag: &str) -> Vec<Envelope> {
    let task_id = format!("task-{tag}");
    let instance = format!("inst-{tag}");
    let ai_task = format!("ai-task-{tag}");
    let approval = format!("approval-{tag}");
    let schedule = format!("sched-{tag}");
    let e =
        |payload: vibehq_events::Payload| Envelope::new(worker, payload).in_container(container);
    let submitted = |task_id: &str| task::Submitted {
        task_id: task_id.to_owned(),
        task_type: "health_audit".into(),
        command: "audit".into(),
        parameters: json!({"target": "api-worker"}).as_object().cloned(),
        priority: 5,
        worker_name: Some(worker.into()),
        container_name: Some(container.into()),
        max_attempts: 3,
        idempotency_key: Some(format!("key-{task_id}")),
        ..Default::default()
    };
    let assigned = |task_id: &str, attempt| task::Assigned {
        task_id: task_id.to_owned(),
        attempt,
        lease_ms: 30_000,
        lease: None,
    };
    let failed = format!("{task_id}-failed");
    let cancelled = format!("{task_id}-cancelled");
    let events = vec![
        e(submitted(&task_id).into()),
        e(assigned(&task_id, 1).into()),
        e(task::ResultRefused {
            task_id: task_id.clone(),
            attempt: 0,
            outcome: "completed".into(),
            reason: "stale attempt".into(),
        }
        .into()),
        e(task::Started {
            task_id: task_id.clone(),
            attempt: 1,
        }
        .into()),
        e(task::Progress {
            task_id: task_id.clone(),
            attempt: 1,
            percent: Some(40.0),
            message: Some("halfway there".into()),
        }
        .into()),
        e(task::Requeued {
            task_id: task_id.clone(),
            attempt: 1,
            reason: "lease expired".into(),
            backoff_ms: 100,
        }
        .into()),
        e(assigned(&task_id, 2).into()),
        e(task::Completed {
            task_id: task_id.clone(),
            attempt: 2,
            output: Some("ok".into()),
        }
        .into()),
        e(submitted(&failed).into()),
        e(assigned(&failed, 1).into()),
        e(task::Failed {
            task_id: failed,
            attempt: 1,
            error: "late failure".into(),
        }
        .into()),
        e(submitted(&cancelled).into()),
        e(task::Cancelled {
            task_id: cancelled,
            reason: Some("superseded".into()),
        }
        .into()),
        e(pause::Paused {
            scope: format!("worker:{worker}"),
            reason: Some("maintenance".into()),
        }
        .into()),
        e(pause::Resumed {
            scope: format!("worker:{worker}"),
        }
        .into()),
        e(fleet::Registered {
            name: worker.to_owned(),
            language: Some("rust".into()),
            commands: vec!["audit".into()],
        }
        .into()),
        e(limit::Limited {
            key: format!("key-{tag}"),
            limits: limit::Limits {
                concurrency: Some(2),
                rate: Some(limit::Rate {
                    max: 10,
                    per_ms: 60_000,
                }),
            },
        }
        .into()),
        e(limit::Queued {
            key: format!("key-{tag}"),
            tasks: vec![limit::Entry {
                task_id: format!("keyed-{tag}"),
                priority: 0,
            }],
        }
        .into()),
        e(limit::Started {
            key: format!("key-{tag}"),
            task_id: format!("keyed-{tag}"),
        }
        .into()),
        e(limit::Released {
            key: format!("key-{tag}"),
            task_id: format!("keyed-{tag}"),
        }
        .into()),
        e(recurring::Created {
            schedule_id: schedule.clone(),
            timing: recurring::Timing::cron("0 9 * * *", Some("Europe/Berlin".into())),
            task: recurring::Template {
                task_type: "health_audit".into(),
                command: "audit".into(),
                parameters: None,
                priority: 0,
                worker_name: Some(worker.into()),
                container_name: Some(container.into()),
                max_attempts: 3,
            },
            overlap: recurring::Overlap::Skip,
            misfire: recurring::Misfire::RunOnce,
            misfire_grace_seconds: recurring::MISFIRE_GRACE_SECONDS,
        }
        .into()),
        e(recurring::Fired {
            schedule_id: schedule.clone(),
            firing_id: format!("{schedule}-20261203T080000Z"),
            fired_at: time::macros::datetime!(2026-12-03 08:00 UTC),
            trigger: recurring::Trigger::Timer,
            task_id: Some(format!("{schedule}-20261203T080000Z")),
            skipped: None,
            next_at: Some(time::macros::datetime!(2026-12-04 08:00 UTC)),
        }
        .into()),
        e(recurring::Paused {
            schedule_id: schedule.clone(),
        }
        .into()),
        e(recurring::Resumed {
            schedule_id: schedule.clone(),
        }
        .into()),
        e(recurring::Deleted {
            schedule_id: schedule.clone(),
        }
        .into()),
        e(container::Starting {
            instance_id: instance.clone(),
            port: 9001,
        }
        .into()),
        e(container::Running {
            instance_id: instance.clone(),
        }
        .into()),
        e(container::HealthChecked {
            instance_id: instance.clone(),
            healthy: true,
            status_code: Some(200),
            latency_ms: 1.5,
            error: None,
        }
        .into()),
        e(container::Unhealthy {
            instance_id: instance.clone(),
            reason: "3 failed probes".into(),
        }
        .into()),
        e(container::Restarted {
            instance_id: instance.clone(),
            restart_count: 1,
            reason: "unhealthy".into(),
        }
        .into()),
        e(container::Failed {
            instance_id: instance.clone(),
            reason: "crash loop".into(),
        }
        .into()),
        e(container::Stopped {
            instance_id: instance,
            reason: Some("scaled down".into()),
        }
        .into()),
        e(container::Scaled {
            pool: format!("pool-{tag}"),
            from: 1,
            to: 0,
            reason: "requested".into(),
        }
        .into()),
        e(ai::TaskCreated {
            task_id: ai_task.clone(),
            plan_id: format!("plan-{tag}"),
            title: "Fix the failing deploy".into(),
            description: Some("Roll back the last release".into()),
            requires_approval: true,
            command: Some("rollback".into()),
        }
        .into()),
        e(ai::ApprovalRequested {
            approval_id: approval.clone(),
            task_id: ai_task.clone(),
            action: "run rollback on api-worker".into(),
            details: Some(json!({"release": "v42"})),
        }
        .into()),
        e(ai::ApprovalDecided {
            approval_id: approval,
            task_id: ai_task.clone(),
            approved: true,
            decided_by: "alice".into(),
            comment: Some("go".into()),
        }
        .into()),
        e(ai::TaskUpdated {
            task_id: ai_task,
            status: "completed".into(),
            result: Some("rolled back".into()),
            queue_task_id: Some(format!("task-{tag}")),
        }
        .into()),
        e(ai::EvaluationRound {
            evaluation_id: format!("eval-{tag}"),
            round: 1,
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            prompt: "Summarise".into(),
            criteria: Some("concise".into()),
            output: "A summary".into(),
            score: 0.9,
            feedback: Some("good".into()),
            passed: true,
        }
        .into()),
        e(ai::RoutingDecided {
            decision_id: format!("route-{tag}"),
            prompt: "hi".into(),
            complexity: 0.1,
            tier: "small".into(),
            provider: Some("ollama".into()),
            model: Some("llama3".into()),
            reasons: vec!["short prompt".into()],
            features: Some(json!({"tokens": 1})),
        }
        .into()),
        e(ai::StructuredOutput {
            output_id: format!("out-{tag}"),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            prompt: "Extract".into(),
            schema: json!({"type": "object"}),
            output: Some(json!({"name": "x"})),
            valid: true,
            attempts: 2,
            errors: vec!["missing name".into()],
        }
        .into()),
        e(ai::ToolCalled {
            call_id: format!("call-{tag}"),
            run_id: Some(format!("run-{tag}")),
            step: Some(1),
            tool_name: "get_task_status".into(),
            arguments: json!({"task_id": "t"}),
            result: Some(json!({"status": "pending"})),
            error: None,
            duration_ms: 2.0,
        }
        .into()),
        e(ai::ToolCallStreamed {
            stream_id: format!("stream-{tag}"),
            run_id: Some(format!("run-{tag}")),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            prompt: "go".into(),
            text: "done".into(),
            tool_calls: vec![json!({"name": "get_task_status", "arguments": {"task_id": "t"}})],
            chunks: vec![json!({"text": "do"}), json!({"text": "ne"})],
            first_token_ms: Some(12.0),
            duration_ms: 40.0,
        }
        .into()),
        e(ai::ModelCalled {
            attempt_id: format!("attempt-{tag}"),
            request_id: format!("request-{tag}"),
            attempt: 1,
            operation: "ask".into(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            streamed: false,
            outcome: "ok".into(),
            status_code: Some(200),
            error: None,
            retry_after_ms: None,
            latency_ms: 80.0,
            first_token_ms: None,
            input_tokens: Some(12),
            output_tokens: Some(5),
            cached_tokens: Some(4),
            cost_usd: Some(0.0001),
        }
        .into()),
    ];
    debug_assert!(
        EventKind::ALL
            .iter()
            .all(|k| events.iter().any(|e| e.kind() == *k))
    );
    events
}

/// A queue workload of `n` events: tasks submitted, assigned, started and completed (or
/// failed), interleaved as a busy queue would see them, spread over five workers.
pub fn task_workload(n: usize, tag: &str) -> Vec<Envelope> {
    let mut events = Vec::with_capacity(n);
    let mut i = 0;
    while events.len() < n {
        let task_id = format!("{tag}-{i}");
        let worker = format!("worker-{}", i % 5);
        let container = format!("c-{}", i % 3);
        let steps: Vec<vibehq_events::Payload> = vec![
            task::Submitted {
                task_id: task_id.clone(),
                task_type: "code_fix".into(),
                command: "fix".into(),
                parameters: json!({"n": i}).as_object().cloned(),
                priority: (i % 10) as i64,
                worker_name: (i % 2 == 0).then(|| worker.clone()),
                container_name: None,
                max_attempts: 3,
                idempotency_key: None,
                ..Default::default()
            }
            .into(),
            task::Assigned {
                task_id: task_id.clone(),
                attempt: 1,
                lease_ms: 30_000,
                lease: None,
            }
            .into(),
            task::Started {
                task_id: task_id.clone(),
                attempt: 1,
            }
            .into(),
            if i % 7 == 0 {
                task::Failed {
                    task_id,
                    attempt: 1,
                    error: "exit 1".into(),
                }
                .into()
            } else {
                task::Completed {
                    task_id,
                    attempt: 1,
                    output: Some(format!("done {i}")),
                }
                .into()
            },
        ];
        for payload in steps {
            if events.len() < n {
                events.push(Envelope::new(&worker, payload).in_container(&container));
            }
        }
        i += 1;
    }
    events
}
