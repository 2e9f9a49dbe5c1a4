//! The event log and its projection: every kind lands in its row, duplicates change nothing,
//! garbage is kept aside, and replay rebuilds the same tables.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use serde_json::json;
use vibehq_events::{Envelope, EventKind, EventLog, Expect, StreamKind, task};
use vibehq_projector::{ReplayOptions, Totals, Until, query};
use vibehq_test_support::fixtures;

use crate::common::{Live, append_one, dump};

/// The table each event kind writes to, and the key column/value of the row it touches.
fn row_of(kind: EventKind, tag: &str) -> (&'static str, &'static str, String) {
    use EventKind::*;
    match kind {
        TaskSubmitted | TaskAssigned | TaskStarted | TaskProgress | TaskCompleted
        | TaskRequeued => ("container_tasks", "task_id", format!("task-{tag}")),
        TaskFailed => ("container_tasks", "task_id", format!("task-{tag}-failed")),
        TaskCancelled => (
            "container_tasks",
            "task_id",
            format!("task-{tag}-cancelled"),
        ),
        // A refused result changes no task; it is kept with its reason.
        TaskResultRefused => ("container_task_refusals", "task_id", format!("task-{tag}")),
        QueuePaused | QueueResumed => (
            "container_task_pauses",
            "scope",
            "worker:factory-1".to_owned(),
        ),
        ScheduleCreated | SchedulePaused | ScheduleResumed | ScheduleDeleted => (
            "container_task_schedules",
            "schedule_id",
            format!("sched-{tag}"),
        ),
        WorkerRegistered => ("container_workers", "worker_name", "factory-1".to_owned()),
        // A key's line and holders are the queue's; its declared limits are a row.
        KeyLimited | KeyQueued | KeyStarted | KeyReleased => {
            ("container_task_keys", "key", format!("key-{tag}"))
        }
        ScheduleFired => (
            "container_task_schedule_firings",
            "schedule_id",
            format!("sched-{tag}"),
        ),
        ContainerStarting | ContainerRunning | ContainerUnhealthy | ContainerStopped
        | ContainerFailed | ContainerRestarted => {
            ("container_instances", "instance_id", format!("inst-{tag}"))
        }
        // Audit only: no row of its own; the pool's instance row is there from its events.
        ContainerScaled => ("container_instances", "instance_id", format!("inst-{tag}")),
        ContainerHealthChecked => (
            "container_health_checks",
            "instance_id",
            format!("inst-{tag}"),
        ),
        AiTaskCreated | AiTaskUpdated => ("ai_tasks", "task_id", format!("ai-task-{tag}")),
        AiApprovalRequested | AiApprovalDecided => {
            ("ai_tasks_hitl", "approval_id", format!("approval-{tag}"))
        }
        AiEvaluationRound => ("ai_evaluations", "evaluation_id", format!("eval-{tag}")),
        AiRoutingDecided => (
            "ai_routing_decisions",
            "decision_id",
            format!("route-{tag}"),
        ),
        AiStructuredOutput => ("ai_structured_outputs", "output_id", format!("out-{tag}")),
        AiToolCalled => ("ai_tool_calls", "call_id", format!("call-{tag}")),
        AiToolCallStreamed => ("ai_tool_call_streams", "stream_id", format!("stream-{tag}")),
        AiModelCalled => ("ai_model_calls", "attempt_id", format!("attempt-{tag}")),
    }
}

#[tokio::test]
async fn every_event_kind_round_trips_into_its_row_with_worker_and_container() {
    let live = Live::start().await;
    let events = fixtures::every_kind("factory-1", "container-a", "rt");
    for kind in EventKind::ALL {
        assert!(
            events.iter().any(|e| e.kind() == *kind),
            "fixture lacks {kind}"
        );
    }
    live.append_and_project(&events).await;

    let conn = vibehq_projector::db::open_reader(&live.database).expect("open");
    use EventKind::TaskCancelled;
    for kind in EventKind::ALL {
        let (table, key, value) = row_of(*kind, "rt");
        let table = vibehq_projector::Table::named(table).expect("table");
        let filter = query::Filter {
            columns: vec![],
            limit: 1000,
            ..Default::default()
        };
        let rows = query::list(&conn, table, &filter).expect("list");
        let row = rows
            .items
            .iter()
            .find(|r| r[key] == value)
            .unwrap_or_else(|| panic!("{kind}: no {} row with {key} = {value}", table.name));
        if table.name == "container_tasks" {
            // A task's worker/container are its target; who acted is in assigned_to.
            assert_eq!(row["worker_name"], "factory-1", "{kind}");
            assert_eq!(row["container_name"], "container-a", "{kind}");
            if *kind != TaskCancelled {
                assert_eq!(row["assigned_to"], "factory-1:container-a", "{kind}");
            }
        } else if table.name == "container_task_pauses" {
            // A pause covers a worker, every container of it.
            assert_eq!(row["worker_name"], "factory-1", "{kind}");
            assert_eq!(row["container_name"], serde_json::Value::Null, "{kind}");
        } else {
            assert_eq!(row["worker_name"], "factory-1", "{kind} in {}", table.name);
            assert_eq!(
                row["container_name"], "container-a",
                "{kind} in {}",
                table.name
            );
        }
    }

    // The last event of each aggregate decides its row.
    let task = query::get(
        &conn,
        vibehq_projector::Table::named("container_tasks").expect("t"),
        "task-rt",
    )
    .expect("get")
    .expect("row");
    assert_eq!(
        (&task["status"], &task["attempts"]),
        (&json!("completed"), &json!(2))
    );
    assert_eq!(task["parameters"], json!({"target": "api-worker"}));
    let tasks = vibehq_projector::Table::named("container_tasks").expect("t");
    for (id, status) in [
        ("task-rt-failed", "failed"),
        ("task-rt-cancelled", "cancelled"),
    ] {
        let row = query::get(&conn, tasks, id).expect("get").expect("row");
        assert_eq!(row["status"], status, "{id}");
    }
    let instance = query::get(
        &conn,
        vibehq_projector::Table::named("container_instances").expect("t"),
        "inst-rt",
    )
    .expect("get")
    .expect("row");
    assert_eq!(instance["state"], "stopped");
    assert_eq!(instance["restart_count"], 1);
    assert!(instance["last_health_check"].is_i64());
    let approval = query::get(
        &conn,
        vibehq_projector::Table::named("ai_tasks_hitl").expect("t"),
        "approval-rt",
    )
    .expect("get")
    .expect("row");
    assert_eq!(approval["status"], "approved");
    assert_eq!(approval["decided_by"], "alice");
}

#[tokio::test]
async fn publishing_the_same_event_twice_stores_it_once() {
    let live = Live::start().await;
    let event = fixtures::every_kind("w", "c", "dup").remove(0);
    let first = live.log.append(&event, Expect::Any).await.expect("first");
    let second = live.log.append(&event, Expect::Any).await.expect("retry");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.sequence, second.sequence);
    let info = live.log.stream_info(StreamKind::Tasks).await.expect("info");
    assert_eq!(info.state.messages, 1);
}

#[tokio::test]
async fn delivering_events_twice_to_the_projector_changes_the_projection_once() {
    let live = Live::start().await;
    let events = fixtures::every_kind("w", "c", "twice");
    live.append_and_project(&events).await;
    let (_, live) = live.stop().await;
    let before = dump(&live.database);

    // Hand the writer every stored record again, as a redelivery would.
    let mut conn = vibehq_projector::db::open_writer(&live.database).expect("open");
    let mut checkpoints = vibehq_projector::db::load_checkpoints(&conn).expect("checkpoints");
    let mut totals = Totals::default();
    for stream in StreamKind::ALL {
        let last = live
            .log
            .stream_info(stream)
            .await
            .expect("info")
            .state
            .last_sequence;
        let records: Vec<_> = futures::TryStreamExt::try_collect(
            live.log.read(stream, None, 1, last).await.expect("read"),
        )
        .await
        .expect("records");
        let mut tx = conn.transaction().expect("tx");
        vibehq_projector::apply::apply_batch(
            &mut tx,
            &mut checkpoints,
            &records,
            &mut totals,
            false,
            &mut vibehq_projector::apply::Statuses::default(),
        )
        .expect("apply");
        tx.commit().expect("commit");
    }
    assert_eq!(totals.applied, 0);
    assert_eq!(totals.skipped, events.len() as u64);
    assert_eq!(dump(&live.database), before);
}

#[tokio::test]
async fn garbage_on_an_event_subject_is_recorded_and_later_events_still_project() {
    let live = Live::start().await;
    let js = live.log.jetstream();
    let garbage: &[(&str, &[u8])] = &[
        ("vibehq.tasks.junk", b"\x00\xffnot json at all"),
        ("vibehq.tasks.unknown", br#"{"id":"01936f6e-4b4a-7000-8000-000000000001","type":"task.exploded","schema_version":1,"occurred_at":"2026-11-26T00:00:00Z","worker_name":"w","payload":{}}"#),
        ("vibehq.tasks.future", br#"{"id":"01936f6e-4b4a-7000-8000-000000000002","type":"task.submitted","schema_version":99,"occurred_at":"2026-11-26T00:00:00Z","worker_name":"w","payload":{}}"#),
        ("vibehq.tasks.shape", br#"{"id":"01936f6e-4b4a-7000-8000-000000000003","type":"task.submitted","schema_version":1,"occurred_at":"2026-11-26T00:00:00Z","worker_name":"w","payload":{"task_id":7}}"#),
    ];
    for (subject, bytes) in garbage {
        js.send_publish(
            *subject,
            PublishMessage::build().payload(bytes.to_vec().into()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    }
    let good = Envelope::new(
        "w",
        task::Submitted {
            task_id: "after-garbage".into(),
            task_type: "t".into(),
            command: "c".into(),
            parameters: None,
            priority: 0,
            worker_name: None,
            container_name: None,
            max_attempts: 1,
            idempotency_key: None,
            ..Default::default()
        },
    );
    let seq = append_one(&live.log, &good).await;
    live.caught_up(StreamKind::Tasks, seq).await;

    let rows = live
        .reader()
        .read(|conn| {
            query::dump(
                conn,
                vibehq_projector::Table::named("projector_rejected").expect("t"),
            )
        })
        .await
        .expect("rejected");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["subject"], "vibehq.tasks.junk");
    assert_eq!(rows[0]["stream_sequence"], 1);
    assert!(
        rows[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("not an event envelope")
    );
    assert!(
        rows[1]["reason"]
            .as_str()
            .expect("reason")
            .contains("unknown event type")
    );
    assert!(
        rows[2]["reason"]
            .as_str()
            .expect("reason")
            .contains("newer")
    );
    assert!(
        rows[3]["reason"]
            .as_str()
            .expect("reason")
            .contains("invalid payload")
    );
    let task = live
        .reader()
        .read(|conn| {
            query::get(
                conn,
                vibehq_projector::Table::named("container_tasks").expect("t"),
                "after-garbage",
            )
        })
        .await
        .expect("get");
    assert!(task.is_some(), "the event after the garbage was projected");
}

#[tokio::test]
async fn replay_into_a_fresh_file_equals_the_live_projection_table_by_table() {
    let live = Live::start().await;
    let mut events = fixtures::every_kind("w1", "c1", "a");
    events.extend(fixtures::task_workload(500, "load"));
    events.extend(fixtures::every_kind("w2", "c2", "b"));
    live.append_and_project(&events).await;
    let garbage = PublishMessage::build().payload(b"garbage".to_vec().into());
    live.log
        .jetstream()
        .send_publish("vibehq.ai.x", garbage)
        .await
        .expect("pub")
        .await
        .expect("ack");
    let ai_last = live
        .log
        .stream_info(StreamKind::Ai)
        .await
        .expect("info")
        .state
        .last_sequence;
    live.caught_up(StreamKind::Ai, ai_last).await;

    let copy = live.nats.scratch().join("replayed.sqlite3");
    let (totals, checkpoints, _) = vibehq_projector::replay(
        &live.log,
        ReplayOptions {
            into: copy.clone(),
            streams: StreamKind::ALL.to_vec(),
            until: Until::End,
        },
        |_| {},
    )
    .await
    .expect("replay");
    assert_eq!(totals.applied, events.len() as u64);
    assert_eq!(totals.rejected, 1);
    assert_eq!(checkpoints, live.handle.checkpoints());
    let live_dump = dump(&live.database);
    let replayed = dump(&copy);
    for (table, rows) in &live_dump {
        assert_eq!(rows, &replayed[table], "{table} differs");
    }
}

#[tokio::test]
async fn replay_until_a_sequence_shows_the_past() {
    let live = Live::start().await;
    let submitted = fixtures::every_kind("w", "c", "past").remove(0);
    let task_id = "task-past";
    let first = append_one(&live.log, &submitted).await;
    let done = Envelope::new(
        "w",
        task::Completed {
            task_id: task_id.into(),
            attempt: 1,
            output: None,
        },
    );
    append_one(&live.log, &done).await;

    let copy = live.nats.scratch().join("past.sqlite3");
    vibehq_projector::replay(
        &live.log,
        ReplayOptions {
            into: copy.clone(),
            streams: vec![StreamKind::Tasks],
            until: Until::Sequence([(StreamKind::Tasks, first)].into()),
        },
        |_| {},
    )
    .await
    .expect("replay");
    let rows = &dump(&copy)["container_tasks"];
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["status"], "pending",
        "the completion came after the cut"
    );
}

#[tokio::test]
async fn an_append_expecting_a_stale_version_is_refused() {
    let nats = vibehq_test_support::NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1).await.expect("streams");
    let submitted = fixtures::every_kind("w", "c", "occ").remove(0);
    let v0 = log
        .append(&submitted, Expect::New)
        .await
        .expect("create")
        .sequence;
    let claim = |worker: &str| {
        Envelope::new(
            worker,
            task::Assigned {
                task_id: "task-occ".into(),
                attempt: 1,
                lease_ms: 1000,
                lease: None,
            },
        )
    };
    // Every event of a task is under one filter, so a claim expects the submission; the
    // claims' subjects differ (each names its claimer), and still only one wins.
    log.append(&claim("a"), Expect::Version(v0))
        .await
        .expect("first claim wins");
    let lost = log.append(&claim("b"), Expect::Version(v0)).await;
    assert!(
        matches!(lost, Err(vibehq_events::Error::Conflict { .. })),
        "{lost:?}"
    );
    let stale = log.append(&claim("b"), Expect::New).await;
    assert!(
        matches!(stale, Err(vibehq_events::Error::Conflict { .. })),
        "{stale:?}"
    );
    let other = fixtures::every_kind("w", "c", "occ").remove(0);
    let recreate = log.append(&other, Expect::New).await;
    assert!(
        matches!(recreate, Err(vibehq_events::Error::Conflict { .. })),
        "{recreate:?}"
    );
}

#[tokio::test]
async fn a_retried_append_is_answered_as_the_first_even_when_its_expectation_moved_on() {
    let nats = vibehq_test_support::NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1).await.expect("streams");
    let submitted = fixtures::every_kind("w", "c", "retry").remove(0);
    let first = log.append(&submitted, Expect::New).await.expect("create");
    let retried = log.append(&submitted, Expect::New).await.expect("answered");
    assert_eq!(
        (retried.sequence, retried.duplicate),
        (first.sequence, true)
    );
}

#[tokio::test]
async fn the_projector_resumes_where_it_stopped() {
    let live = Live::start().await;
    live.append_and_project(&fixtures::task_workload(100, "first"))
        .await;
    let (first_run, live) = live.stop().await;
    assert_eq!(first_run.applied, 100);

    let more = fixtures::task_workload(50, "second");
    live.log
        .append_all(&more)
        .await
        .expect("append while stopped");
    let (projector, handle) = vibehq_projector::Projector::new(
        vibehq_projector::Options::new(&live.database),
        live.log.clone(),
    )
    .expect("reopen");
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(projector.run(stop.clone()));
    assert!(
        handle
            .wait_for(StreamKind::Tasks, 150, Duration::from_secs(20))
            .await
    );
    stop.cancel();
    let second_run = run.await.expect("join").expect("run");
    assert_eq!(second_run.applied, 50, "only the new events were applied");
}

#[tokio::test]
async fn an_event_sqlite_refuses_is_kept_aside_and_the_rest_of_its_batch_applies() {
    let nats = vibehq_test_support::NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1).await.expect("streams");
    let database = nats.scratch().join("refusing.sqlite3");
    // A projection whose SQLite refuses one particular row (standing in for any row-level
    // failure a future migration or a corrupt row could cause).
    let conn = vibehq_projector::db::open_writer(&database).expect("open");
    conn.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON container_instances
         WHEN NEW.instance_id = 'explode' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END;",
    )
    .expect("trigger");
    drop(conn);
    let starting = |id: &str| {
        Envelope::new(
            "w",
            vibehq_events::container::Starting {
                instance_id: id.into(),
                port: 1,
            },
        )
    };
    log.append_all(&[starting("ok-1"), starting("explode"), starting("ok-2")])
        .await
        .expect("append");

    let (projector, handle) =
        vibehq_projector::Projector::new(vibehq_projector::Options::new(&database), log.clone())
            .expect("projector");
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(projector.run(stop.clone()));
    assert!(
        handle
            .wait_for(StreamKind::Containers, 3, Duration::from_secs(20))
            .await
    );
    stop.cancel();
    let totals = run.await.expect("join").expect("run");
    assert_eq!((totals.applied, totals.rejected), (2, 1));

    let tables = dump(&database);
    let ids: Vec<_> = tables["container_instances"]
        .iter()
        .map(|r| r["instance_id"].clone())
        .collect();
    assert_eq!(ids, [json!("ok-1"), json!("ok-2")]);
    let rejected = &tables["projector_rejected"];
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["stream_sequence"], 2);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("refused by trigger")
    );
}

#[tokio::test]
async fn replay_ends_even_when_the_streams_last_event_was_deleted() {
    let live = Live::start().await;
    live.append_and_project(&fixtures::task_workload(3, "gone"))
        .await;
    let stream = live
        .log
        .jetstream()
        .get_stream(StreamKind::Tasks.name())
        .await
        .expect("stream");
    assert!(
        stream.delete_message(3).await.expect("delete"),
        "an operator removed the last event"
    );

    let copy = live.nats.scratch().join("after-delete.sqlite3");
    let replayed = tokio::time::timeout(
        Duration::from_secs(10),
        vibehq_projector::replay(
            &live.log,
            ReplayOptions {
                into: copy,
                streams: vec![StreamKind::Tasks],
                until: Until::End,
            },
            |_| {},
        ),
    )
    .await
    .expect("replay ends")
    .expect("replay");
    assert_eq!(replayed.0.applied, 2);
}
