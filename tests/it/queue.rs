//! The task queue: priorities, targeting, leases, retries, idempotency, bulk submission, and
//! what it does with input it cannot use.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use vibehq_events::task::Step;
use vibehq_events::task::lifecycle::State;
use vibehq_events::{EventKind, Subject};
use vibehq_queue::{Actor, Error, NewTask, Options};

use crate::common::Harness;

fn task(priority: i64) -> NewTask {
    NewTask {
        task_type: "health_audit".into(),
        command: "audit".into(),
        priority,
        max_attempts: 3,
        ..Default::default()
    }
}

fn container(worker: &str, container: &str) -> Actor {
    Actor::new(worker, Some(container.into()))
}

/// The kinds of a task's events, oldest first.
async fn kinds(h: &Harness, id: &str) -> Vec<EventKind> {
    h.log
        .history_of(
            vibehq_events::StreamKind::Tasks,
            &Subject::task(id),
            u64::MAX,
        )
        .await
        .expect("history")
        .iter()
        .map(|r| r.decode().expect("event").kind())
        .collect()
}

#[tokio::test]
async fn a_thousand_tasks_drain_in_priority_order_for_one_container() {
    let h = Harness::start(Options::default()).await;
    let priorities: Vec<i64> = (0..1000).map(|i| (i * 7919 % 10) as i64).collect();
    let submitted = h
        .queue
        .submit_many(
            &Actor::worker("orchestrator"),
            priorities.iter().map(|p| task(*p)).collect(),
        )
        .await
        .expect("one request");
    let priority_of: HashMap<String, i64> = submitted
        .into_iter()
        .map(|s| s.task_id)
        .zip(priorities)
        .collect();

    let me = container("factory-1", "c1");
    let mut seen = Vec::new();
    while let Some(claim) = h.queue.claim(&me, Duration::ZERO).await.expect("claim") {
        seen.push(claim.priority);
        assert_eq!(claim.priority, priority_of[&claim.task_id]);
        h.queue
            .complete(&claim.task_id, Some(claim.attempt), &me, None)
            .await
            .expect("complete");
    }
    assert_eq!(seen.len(), 1000);
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "not in priority order: {seen:?}"
    );
}

#[tokio::test]
async fn a_thousand_tasks_go_in_one_request_all_or_nothing() {
    let h = Harness::start(Options::default()).await;
    let by = Actor::worker("orchestrator");
    let keyed = |i: usize| NewTask {
        idempotency_key: Some(format!("bulk-{i}")),
        ..task((i % 10) as i64)
    };
    let first = h
        .queue
        .submit_many(&by, (0..1000).map(keyed).collect())
        .await
        .expect("stored");
    assert_eq!(first.len(), 1000);
    assert!(first.iter().all(|s| s.created));
    let sequences: HashSet<u64> = first.iter().map(|s| s.sequence).collect();
    assert_eq!(sequences.len(), 1000, "every task has its own sequence");

    // The same request again (a client retrying): the same tasks, none created twice.
    let again = h
        .queue
        .submit_many(&by, (0..1000).map(keyed).collect())
        .await
        .expect("answered");
    assert_eq!(
        again.iter().map(|s| &s.task_id).collect::<Vec<_>>(),
        first.iter().map(|s| &s.task_id).collect::<Vec<_>>()
    );
    assert!(again.iter().all(|s| !s.created));

    // Half of it known, half new: the known ones are themselves, the new ones created.
    let mixed = h
        .queue
        .submit_many(&by, (500..1500).map(keyed).collect())
        .await
        .expect("answered");
    assert_eq!(mixed.iter().filter(|s| s.created).count(), 500);

    // More than a batch holds is refused whole.
    let refused = h
        .queue
        .submit_many(&by, (0..1001).map(|_| task(0)).collect())
        .await;
    assert!(
        matches!(refused, Err(Error::TooMany { max: 1000 })),
        "{refused:?}"
    );
    let info = h
        .log
        .stream_info(vibehq_events::StreamKind::Tasks)
        .await
        .expect("info");
    assert_eq!(
        info.state.messages, 1500,
        "nothing of the refused request was stored"
    );
}

#[tokio::test]
async fn targeted_tasks_reach_only_their_worker_and_untargeted_ones_spread() {
    let h = Harness::start(Options::default()).await;
    let workers: Vec<String> = (1..=5).map(|i| format!("worker-{i}")).collect();
    let mut tasks: Vec<NewTask> = workers
        .iter()
        .map(|w| NewTask {
            worker_name: Some(w.clone()),
            ..task(0)
        })
        .collect();
    tasks.extend((0..20).map(|_| task(0)));
    let ids = h.submit_all(tasks).await;
    let targeted: HashMap<&String, &String> = ids.iter().take(5).zip(&workers).collect();

    let mut claimed_by: HashMap<String, Vec<String>> = HashMap::new();
    let mut idle = 0;
    while idle < workers.len() {
        idle = 0;
        for worker in &workers {
            let me = container(worker, "main");
            match h.queue.claim(&me, Duration::ZERO).await.expect("claim") {
                Some(claim) => {
                    h.queue
                        .complete(&claim.task_id, Some(claim.attempt), &me, None)
                        .await
                        .expect("complete");
                    claimed_by
                        .entry(worker.clone())
                        .or_default()
                        .push(claim.task_id);
                }
                None => idle += 1,
            }
        }
    }
    for (task_id, worker) in targeted {
        assert!(
            claimed_by[worker].contains(task_id),
            "{task_id} did not reach {worker}"
        );
    }
    let total: usize = claimed_by.values().map(Vec::len).sum();
    assert_eq!(total, 25);
    for worker in &workers {
        assert!(
            claimed_by[worker].len() >= 2,
            "{worker} got no untargeted work: {claimed_by:?}"
        );
    }
}

#[tokio::test]
async fn a_container_targeted_task_goes_to_that_container_only() {
    let h = Harness::start(Options::default()).await;
    let ids = h
        .submit_all(vec![NewTask {
            worker_name: Some("w".into()),
            container_name: Some("c2".into()),
            ..task(5)
        }])
        .await;
    for outsider in [
        container("w", "c1"),
        container("other", "c2"),
        Actor::worker("w"),
    ] {
        let claim = h
            .queue
            .claim(&outsider, Duration::ZERO)
            .await
            .expect("claim");
        assert!(claim.is_none(), "{outsider} took it");
    }
    let claim = h
        .queue
        .claim(&container("w", "c2"), Duration::ZERO)
        .await
        .expect("claim");
    assert_eq!(claim.map(|c| c.task_id), Some(ids[0].clone()));
}

#[tokio::test]
async fn an_expired_lease_hands_the_task_on_and_the_late_result_is_refused() {
    let options = Options {
        lease: Duration::from_secs(1),
        ..Options::default()
    };
    let h = Harness::start(options).await;
    let id = h.submit_all(vec![task(1)]).await.remove(0);
    let (a, b) = (container("factory", "a"), container("factory", "b"));

    let first = h
        .queue
        .claim(&a, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(first.attempt, 1);
    // `a` goes silent; after its lease, `b` gets the task as attempt 2.
    let second = h
        .queue
        .claim(&b, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("redelivered");
    assert_eq!((second.task_id.as_str(), second.attempt), (id.as_str(), 2));

    let late = h
        .queue
        .complete(&id, Some(1), &a, Some("late".into()))
        .await;
    assert!(matches!(late, Err(Error::StaleClaim { .. })), "{late:?}");
    let heartbeat = h.queue.heartbeat(&id, Some(1), &a).await;
    assert!(
        matches!(heartbeat, Err(Error::StaleClaim { .. })),
        "{heartbeat:?}"
    );
    h.queue
        .complete(&id, Some(2), &b, Some("done".into()))
        .await
        .expect("b completes");
    let again = h
        .queue
        .complete(&id, Some(2), &b, Some("twice".into()))
        .await;
    assert!(
        matches!(again, Err(Error::StaleClaim { .. })),
        "completes once"
    );

    assert_eq!(
        kinds(&h, &id).await,
        [
            EventKind::TaskSubmitted,
            EventKind::TaskAssigned,
            EventKind::TaskRequeued,
            EventKind::TaskAssigned,
            EventKind::TaskResultRefused,
            EventKind::TaskCompleted,
            EventKind::TaskResultRefused,
        ]
    );
    let task = h.queue.load(&id).await.expect("load").expect("task");
    assert_eq!(task.status.state, State::Completed);
}

#[tokio::test]
async fn heartbeats_keep_a_lease() {
    let options = Options {
        lease: Duration::from_secs(1),
        ..Options::default()
    };
    let h = Harness::start(options).await;
    let id = h.submit_all(vec![task(1)]).await.remove(0);
    let a = container("factory", "a");
    let claim = h
        .queue
        .claim(&a, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    h.queue
        .start(&id, Some(claim.attempt), &a)
        .await
        .expect("start");
    // While `a` heartbeats, `b` waits for work for two and a half leases and gets none.
    let b = container("factory", "b");
    let waiting = h.queue.claim(&b, Duration::from_millis(2500));
    tokio::pin!(waiting);
    let mut beat = tokio::time::interval(Duration::from_millis(300));
    let taken = loop {
        tokio::select! {
            taken = &mut waiting => break taken.expect("claim"),
            _ = beat.tick() => h.queue.heartbeat(&id, Some(claim.attempt), &a).await.expect("heartbeat"),
        }
    };
    assert!(taken.is_none(), "the lease was lost: {taken:?}");
    h.queue
        .complete(&id, Some(claim.attempt), &a, None)
        .await
        .expect("still ours after 2.5 s");
}

#[tokio::test]
async fn a_task_that_exhausts_its_attempts_ends_failed_with_its_last_error() {
    let options = Options {
        retry_backoff: Duration::from_millis(50),
        ..Options::default()
    };
    let h = Harness::start(options).await;
    let id = h
        .submit_all(vec![NewTask {
            max_attempts: 2,
            ..task(3)
        }])
        .await
        .remove(0);
    let me = container("w", "c");
    let first = h
        .queue
        .claim(&me, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    let outcome = h
        .queue
        .fail(&id, Some(first.attempt), &me, "exit 1".into(), true)
        .await
        .expect("fail");
    assert!(outcome.retried);
    let second = h
        .queue
        .claim(&me, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("retry");
    assert_eq!(second.attempt, 2);
    let outcome = h
        .queue
        .fail(&id, Some(2), &me, "exit 2".into(), true)
        .await
        .expect("fail");
    assert!(!outcome.retried, "no attempts left");
    let task = h.queue.load(&id).await.expect("load").expect("task");
    assert_eq!(
        (task.status.state, task.error.as_deref()),
        (State::Failed, Some("exit 2"))
    );
    assert!(
        h.queue
            .claim(&me, Duration::from_millis(200))
            .await
            .expect("claim")
            .is_none()
    );
}

#[tokio::test]
async fn submitting_with_the_same_idempotency_key_twice_yields_one_task() {
    let h = Harness::start(Options::default()).await;
    let by = Actor::worker("orchestrator");
    let keyed = || NewTask {
        idempotency_key: Some("audit-2026-11-26".into()),
        ..task(1)
    };
    let first = h.queue.submit(&by, keyed()).await.expect("first");
    let second = h.queue.submit(&by, keyed()).await.expect("second");
    assert!(first.created && !second.created);
    assert_eq!(first.task_id, second.task_id);
    assert_eq!(first.sequence, second.sequence);
    assert_eq!(kinds(&h, &first.task_id).await, [EventKind::TaskSubmitted]);

    // The same key for a different task is refused, naming the task it belongs to.
    let other = NewTask {
        idempotency_key: Some("audit-2026-11-26".into()),
        ..task(7)
    };
    let reused = h.queue.submit(&by, other).await;
    assert!(
        matches!(&reused, Err(Error::KeyReused { task_id, .. }) if *task_id == first.task_id),
        "{reused:?}"
    );
}

#[tokio::test]
async fn a_cancelled_task_is_never_handed_out() {
    let h = Harness::start(Options::default()).await;
    let id = h.submit_all(vec![task(9)]).await.remove(0);
    h.queue
        .cancel(&id, &Actor::worker("ops"), Some("not needed".into()))
        .await
        .expect("cancel");
    assert!(
        h.queue
            .claim(&container("w", "c"), Duration::ZERO)
            .await
            .expect("claim")
            .is_none()
    );
    let again = h.queue.cancel(&id, &Actor::worker("ops"), None).await;
    let Err(Error::Refused { refusal, .. }) = again else {
        panic!("cancelled twice: {again:?}");
    };
    assert_eq!(refusal.to_string(), "a cancelled task cannot be cancelled");
}

#[tokio::test]
async fn racing_containers_complete_every_task_exactly_once() {
    let h = Harness::start(Options::default()).await;
    let ids: HashSet<String> = h
        .submit_all((0..300).map(|i| task(i % 10)).collect())
        .await
        .into_iter()
        .collect();
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let queue = h.queue.clone();
        workers.spawn(async move {
            let me = container("pool", &format!("c{i}"));
            let mut done = Vec::new();
            loop {
                let claim =
                    tokio::time::timeout(Duration::from_secs(5), queue.claim(&me, Duration::ZERO))
                        .await
                        .expect("claim hung")
                        .expect("claim");
                let Some(claim) = claim else { break };
                tokio::time::timeout(
                    Duration::from_secs(5),
                    queue.complete(&claim.task_id, Some(claim.attempt), &me, None),
                )
                .await
                .expect("complete hung")
                .expect("complete");
                done.push(claim.task_id);
            }
            done
        });
    }
    let mut completed = Vec::new();
    while let Some(done) = workers.join_next().await {
        completed.extend(done.expect("worker"));
    }
    let unique: HashSet<String> = completed.iter().cloned().collect();
    assert_eq!(completed.len(), 300, "no task completed twice");
    assert_eq!(unique, ids, "no task lost");
}

#[tokio::test]
async fn a_claim_of_several_tasks_where_one_went_stale_still_claims_the_rest() {
    let h = Harness::start(Options::default()).await;
    let ids = h.submit_all((0..8).map(|_| task(2)).collect()).await;
    // Another process's view moved one task on before this claim's appends: it was cancelled.
    h.queue
        .cancel(&ids[3], &Actor::worker("ops"), None)
        .await
        .expect("cancel");
    let me = container("w", "c");
    let claims = h
        .queue
        .claim_many(&me, 16, Duration::ZERO)
        .await
        .expect("claim");
    let claimed: HashSet<&str> = claims.iter().map(|c| c.task_id.as_str()).collect();
    let expected: HashSet<&str> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(claimed, expected, "the stale task costs the others nothing");
    assert!(claims.iter().all(|c| c.attempt == 1));
    for claim in &claims {
        h.queue
            .complete(&claim.task_id, None, &me, None)
            .await
            .expect("complete without naming the attempt");
    }
    assert_eq!(
        kinds(&h, &ids[3]).await,
        [EventKind::TaskSubmitted, EventKind::TaskCancelled]
    );
}

#[tokio::test]
async fn the_holder_completes_without_naming_its_attempt_and_anyone_else_is_refused() {
    let h = Harness::start(Options::default()).await;
    let id = h.submit_all(vec![task(4)]).await.remove(0);
    let (a, b) = (container("factory", "a"), container("factory", "b"));
    h.queue
        .claim(&a, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");

    let refused = h
        .queue
        .complete(&id, None, &b, Some("not mine".into()))
        .await;
    assert!(
        matches!(refused, Err(Error::StaleClaim { .. })),
        "{refused:?}"
    );
    let refused = h
        .queue
        .fail(&id, None, &Actor::worker("factory"), "x".into(), true)
        .await;
    assert!(
        matches!(refused, Err(Error::StaleClaim { .. })),
        "{refused:?}"
    );
    h.queue
        .complete(&id, None, &a, Some("mine".into()))
        .await
        .expect("the holder completes");
    assert_eq!(
        kinds(&h, &id).await,
        [
            EventKind::TaskSubmitted,
            EventKind::TaskAssigned,
            EventKind::TaskResultRefused,
            EventKind::TaskResultRefused,
            EventKind::TaskCompleted,
        ]
    );
}

#[tokio::test]
async fn a_task_is_claimed_by_id_from_its_lane_and_the_rest_stay_in_line() {
    let h = Harness::start(Options::default()).await;
    let ids = h.submit_all((0..5).map(|_| task(6)).collect()).await;
    let me = container("w", "c");
    let claim = h.queue.claim_task(&ids[3], &me).await.expect("claim by id");
    assert_eq!(
        (claim.task_id.as_str(), claim.attempt),
        (ids[3].as_str(), 1)
    );
    let again = h.queue.claim_task(&ids[3], &container("w", "d")).await;
    assert!(matches!(again, Err(Error::Refused { .. })), "{again:?}");
    let targeted = h
        .submit_all(vec![NewTask {
            worker_name: Some("other".into()),
            ..task(6)
        }])
        .await
        .remove(0);
    let refused = h.queue.claim_task(&targeted, &me).await;
    let Err(Error::Refused { refusal, .. }) = refused else {
        panic!("claimed another worker's task: {refused:?}");
    };
    assert_eq!(
        refusal.to_string(),
        "the task is for worker other; w:c may not take it"
    );
    // The others are still handed out first in line.
    let mut rest = Vec::new();
    while let Some(next) = h.queue.claim(&me, Duration::ZERO).await.expect("claim") {
        rest.push(next.task_id);
    }
    let expected: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(rest, expected);
}

#[tokio::test]
async fn concurrent_claimers_in_one_process_never_share_a_task() {
    let h = Harness::start(Options::default()).await;
    let claimers: Vec<_> = (0..8)
        .map(|i| {
            let queue = h.queue.clone();
            tokio::spawn(async move {
                let me = container("factory", &format!("c{i}"));
                let mut mine = Vec::new();
                while let Some(claim) = queue
                    .claim(&me, Duration::from_millis(500))
                    .await
                    .expect("claim")
                {
                    mine.push(claim.task_id);
                }
                mine
            })
        })
        .collect();
    let ids = h.submit_all((0..200).map(|i| task(i % 3)).collect()).await;

    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.expect("claimer"));
    }
    claimed.sort();
    let mut submitted = ids;
    submitted.sort();
    assert_eq!(claimed, submitted, "every task claimed exactly once");
}

#[tokio::test]
async fn a_submission_is_its_pending_work_and_the_actor_is_in_every_later_subject() {
    let h = Harness::start(Options::default()).await;
    let id = h
        .submit_all(vec![NewTask {
            worker_name: Some("factory-1".into()),
            ..task(7)
        }])
        .await
        .remove(0);
    let me = container("factory-1", "c9");
    let claim = h
        .queue
        .claim(&me, Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    h.queue
        .complete(&claim.task_id, None, &me, None)
        .await
        .expect("complete");

    let history = h
        .log
        .history_of(
            vibehq_events::StreamKind::Tasks,
            &Subject::task(&id),
            u64::MAX,
        )
        .await
        .expect("history");
    let subjects: Vec<&str> = history.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            format!("vibehq.tasks.{id}.submitted.p7.w.factory-1"),
            format!("vibehq.tasks.{id}.{}.factory-1.c9", Step::Assigned.token()),
            format!("vibehq.tasks.{id}.{}.factory-1.c9", Step::Completed.token()),
        ]
    );
    // The lane's consumer handed out the submission once, and nothing else exists to carry it.
    let tasks = h
        .log
        .jetstream()
        .get_stream("VIBEHQ_TASKS")
        .await
        .expect("stream");
    let lane = tasks
        .consumer_info("vibehq-lane-p7-w-factory-1")
        .await
        .expect("the lane's consumer");
    assert_eq!(
        (
            lane.delivered.consumer_sequence,
            lane.num_pending,
            lane.num_ack_pending
        ),
        (1, 0, 0)
    );
    assert!(
        h.log.jetstream().get_stream("VIBEHQ_WORK").await.is_err(),
        "no work stream"
    );
}

#[tokio::test]
async fn a_claim_reports_the_lease_its_lane_really_has() {
    let thirty = Options {
        lease: Duration::from_secs(30),
        ..Options::default()
    };
    let h = Harness::start(thirty).await;
    h.submit_all(vec![task(5), task(5)]).await;
    let first = h
        .queue
        .claim(&container("w", "a"), Duration::ZERO)
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(first.lease_ms, 30_000);

    // Another process configured with a shorter lease claims from the same lane, whose
    // consumer the first process created: the consumer's lease is the one that holds.
    let one = Options {
        lease: Duration::from_secs(1),
        ..Options::default()
    };
    let other = Harness::on(None, h.log.clone(), one).await;
    let second = other
        .queue
        .claim(&container("w", "b"), Duration::from_secs(2))
        .await
        .expect("claim")
        .expect("task");
    assert_eq!(second.lease_ms, 30_000);
}

#[tokio::test]
async fn twenty_thousand_unreadable_messages_on_every_subject_vibehq_reads_leave_it_working() {
    use futures::StreamExt;
    const JUNK: usize = 20_000;
    let live = crate::common::Live::start().await;
    let h = Harness::on(None, live.log.clone(), Options::default()).await;
    let rpc = vibehq_queue::rpc::Rpc::start(
        crate::common::queue_state(&live, &h),
        live.nats.connect().await,
    )
    .await
    .expect("the RPC service starts");
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(rpc.serve(stop));
    // A task before the flood, so its lane's consumer exists and takes the junk too.
    let me = container("w", "c");
    let first = h.submit_all(vec![task(5)]).await.remove(0);

    // Anyone may publish anything (until the server's permissions say otherwise): junk on a
    // lane, on task events, on the other streams, on announcements and on the RPC subjects.
    let outsider = live.nats.connect().await;
    let subjects = [
        "vibehq.tasks.junk-{i}.submitted.p5.any",
        "vibehq.tasks.junk-{i}.completed.w.c",
        "vibehq.containers.instances.junk-{i}",
        "vibehq.ai.calls.junk-{i}",
        "vibehq.wake.p5.any",
        "vibehq.rpc.tasks.submitTask",
    ];
    for subject in subjects {
        for i in 0..JUNK {
            let junk = if i % 2 == 0 {
                &b"\x00"[..]
            } else {
                &b"{\"not\": \"an event\"}"[..]
            };
            outsider
                .publish(subject.replace("{i}", &i.to_string()), junk.into())
                .await
                .expect("publish");
        }
    }
    outsider.flush().await.expect("flush");

    // Submissions, claims and the projection all still work.
    let second = h.submit_all(vec![task(5)]).await.remove(0);
    let mut claimed = Vec::new();
    while claimed.len() < 2 {
        let claim = h
            .queue
            .claim(&me, Duration::from_secs(30))
            .await
            .expect("claim")
            .expect("the real tasks come through the junk");
        let sequence = h
            .queue
            .complete(&claim.task_id, None, &me, None)
            .await
            .expect("complete");
        claimed.push((claim.task_id, sequence));
    }
    let ids: HashSet<&str> = claimed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, HashSet::from([first.as_str(), second.as_str()]));
    let last = claimed.iter().map(|(_, s)| *s).max().expect("sequences");
    live.caught_up(vibehq_events::StreamKind::Tasks, last).await;
    let conn = vibehq_projector::db::open_reader(&live.database).expect("open");
    let tasks = vibehq_projector::Table::named("container_tasks").expect("table");
    for id in [&first, &second] {
        let row = vibehq_projector::query::get(&conn, tasks, id)
            .expect("get")
            .expect("row");
        assert_eq!(row["status"], "completed", "{id}");
    }
    let rejected: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM projector_rejected WHERE stream_name = 'VIBEHQ_TASKS'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        rejected,
        2 * JUNK as i64,
        "every junk task message kept aside"
    );
    // The RPC service answers still.
    let answer = crate::common::call(
        &live.nats.connect().await,
        "vibehq.rpc.tasks.getTask",
        serde_json::json!({"task_id": first}).to_string().into(),
    )
    .await
    .expect("answered");
    assert_eq!(answer["status"], "completed");
    // And a live feed reads past the junk.
    let mut feed = Box::pin(
        live.log
            .read(vibehq_events::StreamKind::Tasks, None, 1, last)
            .await
            .expect("read"),
    );
    let mut read = 0;
    while let Some(record) = feed.next().await {
        record.expect("record");
        read += 1;
    }
    assert!(read > 2 * JUNK);
}

#[tokio::test]
async fn idle_lanes_are_pruned_and_a_submission_that_slips_in_brings_its_lane_back() {
    use vibehq_queue::inventory;
    let h = Harness::start(Options::default()).await;
    let for_c1 = |priority| NewTask {
        worker_name: Some("w".into()),
        container_name: Some("c1".into()),
        ..task(priority)
    };
    let done = h.submit_all(vec![for_c1(0)]).await.remove(0);
    let c1 = container("w", "c1");
    let claim = h
        .queue
        .claim(&c1, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("the task");
    assert_eq!(claim.task_id, done);
    h.queue
        .complete(&done, None, &c1, None)
        .await
        .expect("complete");
    let waiting = h.submit_all(vec![task(3)]).await.remove(0);

    let lanes = inventory::list(&h.log).await.expect("list");
    let by_lane: HashMap<&str, (u64, u64)> = lanes
        .iter()
        .map(|l| (l.lane.as_str(), (l.pending, l.outstanding)))
        .collect();
    assert_eq!(by_lane.get("p0.c.w.c1"), Some(&(0, 0)), "{lanes:?}");
    assert_eq!(by_lane.get("p3.any"), Some(&(1, 0)), "{lanes:?}");

    let dry = inventory::prune(&h.log, Duration::ZERO, true)
        .await
        .expect("dry run");
    assert_eq!(
        dry.removed,
        ["vibehq-lane-p0-c-c1@w"],
        "a lane with work stays"
    );
    assert_eq!(
        inventory::list(&h.log).await.expect("list").len(),
        lanes.len()
    );

    // While the prune waits, this process still trusts the lane it found and submits into it.
    let prune = tokio::spawn({
        let log = h.log.clone();
        async move { inventory::prune(&log, Duration::ZERO, false).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = h.submit_all(vec![for_c1(0)]).await.remove(0);
    let pruned = prune.await.expect("join").expect("prune");
    assert_eq!(pruned.removed, ["vibehq-lane-p0-c-c1@w"]);
    assert_eq!(
        pruned.recreated,
        ["vibehq-lane-p0-c-c1@w"],
        "the late submission was seen"
    );
    let mut claimed = Vec::new();
    for _ in 0..2 {
        let claim = h
            .queue
            .claim(&c1, Duration::from_secs(5))
            .await
            .expect("claim")
            .expect("a task");
        claimed.push(claim.task_id);
    }
    assert_eq!(
        claimed,
        [waiting, late],
        "the higher priority first, then the late task; the ended one is passed over"
    );
}

#[tokio::test]
async fn lanes_lost_with_their_consumers_are_restored_from_the_submissions() {
    use vibehq_queue::inventory;
    let h = Harness::start(Options::default()).await;
    let ids = h
        .submit_all(vec![
            task(5),
            NewTask {
                worker_name: Some("w".into()),
                ..task(1)
            },
        ])
        .await;
    // As after promoting a mirror or restoring a backup: the stream, without its consumers.
    let stream = h
        .log
        .jetstream()
        .get_stream("VIBEHQ_TASKS")
        .await
        .expect("stream");
    for lane in inventory::list(&h.log).await.expect("list") {
        stream
            .delete_consumer(&lane.consumer)
            .await
            .expect("delete");
    }
    let created = inventory::restore(&h.log, Duration::from_secs(30))
        .await
        .expect("restore");
    assert_eq!(created, ["vibehq-lane-p1-w-w", "vibehq-lane-p5-any"]);
    assert!(
        inventory::restore(&h.log, Duration::from_secs(30))
            .await
            .expect("again")
            .is_empty(),
        "restoring again creates nothing"
    );
    // A fresh queue (another process) finds the work again.
    let other = vibehq_queue::Queue::new(h.log.clone(), Options::default())
        .await
        .expect("queue");
    let mut claimed = Vec::new();
    for _ in 0..2 {
        let claim = other
            .claim(&Actor::worker("w"), Duration::from_secs(5))
            .await
            .expect("claim")
            .expect("a task");
        claimed.push(claim.task_id);
    }
    assert_eq!(claimed, ids);
}
