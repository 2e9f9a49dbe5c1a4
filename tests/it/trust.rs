//! Nobody acts as someone else: a worker's NATS credentials let it append, pull and call only
//! as itself (the server refuses the rest), the lifecycle refuses what the server let through
//! but the task's state does not allow, and an API token acts only as the workers it was
//! issued for, over REST and RPC alike.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use serde_json::{Value, json};
use vibehq_events::task::lane::{Lane, Target};
use vibehq_events::{Actor, Envelope, EventLog, StreamKind, task};
use vibehq_queue::{NewTask, Options, Queue};
use vibehq_test_support::NatsServer;

use crate::common::{Live, call};

/// A secured server with workers `alice` and `bob` (who runs container `c1`), its streams,
/// and the service's queue.
struct Secured {
    live: Live,
    log: EventLog,
    queue: Queue,
}

impl Secured {
    async fn start() -> Self {
        let live = Live::on(NatsServer::with_workers(&["alice", "bob:c1"]).await).await;
        let queue = Queue::new(live.log.clone(), Options::default())
            .await
            .expect("queue");
        Self {
            log: live.log.clone(),
            live,
            queue,
        }
    }

    /// What the queue's doors share.
    fn state(&self) -> vibehq_queue::QueueState {
        vibehq_queue::QueueState {
            queue: self.queue.clone(),
            reader: self.live.reader(),
            projector: self.live.handle.clone(),
        }
    }

    async fn submit_for(&self, worker: Option<&str>) -> String {
        let task = NewTask {
            task_type: "job".into(),
            command: "run".into(),
            worker_name: worker.map(str::to_owned),
            ..Default::default()
        };
        self.queue
            .submit(&Actor::worker("orchestrator"), task)
            .await
            .expect("submit")
            .task_id
    }

    /// How many events the tasks stream holds.
    async fn stored(&self) -> u64 {
        self.log
            .stream_info(StreamKind::Tasks)
            .await
            .expect("stream info")
            .state
            .messages
    }
}

/// JetStream as `client`, answering within a second (a publish the server refuses is never
/// acknowledged).
fn jetstream_of(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    js
}

/// Publishes `event` on its own subject through `js`: whether the stream acknowledged it.
async fn stored_by(js: &jetstream::Context, subject: String, event: &Envelope) -> bool {
    let payload = Bytes::from(event.encode().expect("encode"));
    match js.publish(subject, payload).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

/// Whether a request as `client` is answered at all within a second.
async fn answered(client: &async_nats::Client, subject: &str, body: Value) -> bool {
    let request = client.request(subject.to_owned(), body.to_string().into());
    matches!(
        tokio::time::timeout(Duration::from_secs(1), request).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn a_workers_credentials_append_only_its_own_events() {
    let s = Secured::start().await;
    let bobs = s.submit_for(Some("bob")).await;
    let before = s.stored().await;
    let alice = jetstream_of(s.live.nats.connect_as("alice").await);

    let as_bob = Actor::worker("bob").envelope(task::Completed {
        task_id: bobs.clone(),
        attempt: 1,
        output: Some("forged".into()),
    });
    assert!(
        !stored_by(&alice, as_bob.subject().to_string(), &as_bob).await,
        "alice may not append in bob's name"
    );

    let submitted = Actor::worker("alice").envelope(task::Submitted {
        task_id: "sneaky".into(),
        task_type: "job".into(),
        command: "run".into(),
        parameters: None,
        priority: 9,
        worker_name: None,
        container_name: None,
        max_attempts: 3,
        idempotency_key: None,
        ..Default::default()
    });
    assert!(
        !stored_by(&alice, submitted.subject().to_string(), &submitted).await,
        "a worker may not submit by appending: submissions go through the API, which checks who may submit"
    );

    let cancelled = Actor::worker("alice").envelope(task::Cancelled {
        task_id: bobs.clone(),
        reason: None,
    });
    assert!(
        !stored_by(&alice, cancelled.subject().to_string(), &cancelled).await,
        "cancelling is the service's"
    );

    let delete = format!("$JS.API.STREAM.MSG.DELETE.{}", StreamKind::Tasks.name());
    assert!(
        !answered(&alice.client(), &delete, json!({"seq": 1})).await,
        "a worker may not delete events"
    );
    let purge = format!("$JS.API.STREAM.PURGE.{}", StreamKind::Tasks.name());
    assert!(!answered(&alice.client(), &purge, json!({})).await);

    assert_eq!(s.stored().await, before, "nothing alice tried was stored");
}

#[tokio::test]
async fn a_worker_pulls_only_lanes_it_may_take_from_and_calls_rpc_only_as_itself() {
    let s = Secured::start().await;
    let service = s.live.nats.connect().await;
    let rpc = vibehq_queue::rpc::Rpc::start(s.state(), service)
        .await
        .expect("rpc");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(rpc.serve(stop.clone()));
    let _bobs = s.submit_for(Some("bob")).await;
    let alice = s.live.nats.connect_as("alice").await;

    let bobs_lane = Lane::new(0, Target::Worker("bob".into())).consumer_name();
    let next = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{bobs_lane}",
        StreamKind::Tasks.name()
    );
    assert!(
        !answered(&alice, &next, json!({"batch": 1, "no_wait": true})).await,
        "alice may not pull bob's work"
    );

    let claim = json!({"worker_name": "bob"});
    assert!(
        !answered(&alice, "vibehq.rpc.tasks.claimTask.bob", claim.clone()).await,
        "alice may not call as bob"
    );
    assert!(
        !answered(&alice, "vibehq.rpc.tasks.claimTask", claim.clone()).await,
        "the bare subject is the operators'"
    );
    let (status, body) = call(
        &alice,
        "vibehq.rpc.tasks.claimTask.alice",
        claim.to_string().into(),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (403, Some("worker_name"))
    );
    let mine = call(
        &alice,
        "vibehq.rpc.tasks.claimTask.alice",
        Bytes::from_static(b"{}"),
    )
    .await
    .expect("alice claims as herself");
    assert_eq!(mine, Value::Null, "bob's task is not alice's to take");

    let bob = s.live.nats.connect_as("bob").await;
    let taken = call(
        &bob,
        "vibehq.rpc.tasks.claimTask.bob",
        Bytes::from_static(b"{}"),
    )
    .await
    .expect("bob claims");
    assert!(taken["task_id"].is_string(), "{taken}");
    for (op, extra) in [
        ("completeTask", json!({})),
        ("failTask", json!({"error": "sabotage"})),
        ("heartbeatTask", json!({})),
    ] {
        let mut body = json!({"task_id": taken["task_id"], "worker_name": "bob"});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let (status, refusal) = call(
            &alice,
            &format!("vibehq.rpc.tasks.{op}.alice"),
            body.to_string().into(),
        )
        .await
        .expect_err("refused");
        assert_eq!(
            (status, refusal["error"]["field"].as_str()),
            (403, Some("worker_name")),
            "{op}"
        );
    }
    let done = call(
        &bob,
        "vibehq.rpc.tasks.completeTask.bob",
        json!({"task_id": taken["task_id"]}).to_string().into(),
    )
    .await
    .expect("bob completes as himself");
    assert!(done["sequence"].is_u64(), "{done}");
    stop.cancel();
}

#[tokio::test]
async fn a_worker_queue_on_its_own_credentials_claims_and_completes() {
    let s = Secured::start().await;
    let id = s.submit_for(Some("bob")).await;
    let bob = EventLog::new(s.live.nats.connect_as("bob").await);
    let queue = Queue::new(bob, Options::default())
        .await
        .expect("bob's queue");
    let bob_c1 = Actor::new("bob", Some("c1".into()));
    let claim = queue
        .claim(&bob_c1, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("bob's task");
    assert_eq!(claim.task_id, id);
    queue
        .complete(&id, Some(claim.attempt), &bob_c1, Some("done".into()))
        .await
        .expect("complete");
}

#[tokio::test]
async fn results_a_worker_may_append_but_does_not_hold_are_refused_and_the_holder_still_finishes() {
    let s = Secured::start().await;
    let id = s.submit_for(None).await;
    let bob = Actor::worker("bob");
    let claim = s
        .queue
        .claim(&bob, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("the task");

    // Alice appends in her own name, which her credentials allow, a completion of bob's claim.
    let alice = EventLog::new(s.live.nats.connect_as("alice").await);
    let forged = Actor::worker("alice").envelope(task::Completed {
        task_id: id.clone(),
        attempt: claim.attempt,
        output: Some("forged".into()),
    });
    alice
        .append(&forged, vibehq_events::Expect::Any)
        .await
        .expect("the server stores it: the subject is alice's");
    let task = s.queue.load(&id).await.expect("load").expect("the task");
    assert_eq!(
        (task.status.state.as_str(), task.status.holder.as_ref()),
        ("assigned", Some(&bob)),
        "the fold refuses a completion from a non-holder"
    );

    s.queue
        .complete(&id, Some(claim.attempt), &bob, Some("real".into()))
        .await
        .expect("bob's completion lands after the refused one");
    let task = s.queue.load(&id).await.expect("load").expect("the task");
    assert_eq!(task.status.state.as_str(), "completed");
}

/// POSTs `body` with `token`: the status and JSON answer.
async fn post_as(token: &str, url: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const OPERATOR: &str = "operator-token-0123456789";
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";

#[tokio::test]
async fn a_token_acts_only_as_the_workers_it_was_issued_for() {
    use vibehq_api::auth::{Token, Tokens};
    let tokens = Tokens {
        admin: vec![Token::new(OPERATOR)],
        workers: vec![
            (vec!["alice".into()], Token::new(ALICE)),
            (vec!["bob".into()], Token::new(BOB)),
        ],
    };
    let (_live, _h, base) = crate::common::serve_on(Live::start().await, tokens).await;
    let tasks = format!("{base}/api/tasks");

    let (status, body) = post_as(
        ALICE,
        &tasks,
        json!({"task_type": "t", "command": "c", "submitted_by": "bob"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (403, Some("submitted_by"))
    );
    let (status, submitted) =
        post_as(ALICE, &tasks, json!({"task_type": "t", "command": "c"})).await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["task_id"].as_str().expect("id").to_owned();

    let (status, body) = post_as(
        ALICE,
        &format!("{tasks}/claim"),
        json!({"worker_name": "bob", "wait_ms": 1000}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (403, Some("worker_name"))
    );
    let (status, claim) = post_as(BOB, &format!("{tasks}/claim"), json!({"wait_ms": 5000})).await;
    assert_eq!(
        (status, claim["task_id"].as_str()),
        (200, Some(id.as_str())),
        "bob's token claims as bob"
    );

    for step in ["start", "heartbeat", "complete"] {
        let (status, body) = post_as(
            ALICE,
            &format!("{tasks}/{id}/{step}"),
            json!({"worker_name": "bob"}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (403, Some("worker_name")),
            "{step}"
        );
    }
    let (status, body) = post_as(
        ALICE,
        &format!("{tasks}/{id}/fail"),
        json!({"worker_name": "bob", "error": "sabotage"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (403, Some("worker_name"))
    );
    let (status, body) = post_as(ALICE, &format!("{tasks}/{id}/complete"), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("stale_claim")),
        "as herself, alice holds nothing: {body}"
    );
    let (status, body) = post_as(BOB, &format!("{tasks}/{id}/cancel"), json!({})).await;
    assert_eq!(status, 403, "cancelling is an operator's: {body}");

    let (status, done) = post_as(
        BOB,
        &format!("{tasks}/{id}/complete"),
        json!({"output": "ok"}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let (status, _) = post_as(
        OPERATOR,
        &tasks,
        json!({"task_type": "t", "command": "c", "submitted_by": "bob"}),
    )
    .await;
    assert_eq!(status, 201, "an operator may act as anyone");
}

#[tokio::test]
async fn an_event_the_lifecycle_refuses_is_recorded_as_refused_never_as_a_change() {
    let live = Live::on(NatsServer::with_workers(&["alice"]).await).await;
    let (live, harness, base) =
        crate::common::serve_on(live, vibehq_api::auth::Tokens::default()).await;
    let mut feed = crate::queue_live::open(&base, "").await;
    let id = harness
        .submit_all(vec![NewTask {
            task_type: "job".into(),
            command: "run".into(),
            ..Default::default()
        }])
        .await
        .remove(0);
    let claim = harness
        .queue
        .claim(&Actor::worker("bob"), Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("the task");

    let alice = EventLog::new(live.nats.connect_as("alice").await);
    let mut last = 0;
    for (task_id, attempt) in [("ghost", 1), (id.as_str(), claim.attempt)] {
        let forged = Actor::worker("alice").envelope(task::Completed {
            task_id: task_id.to_owned(),
            attempt,
            output: None,
        });
        last = alice
            .append(&forged, vibehq_events::Expect::Any)
            .await
            .expect("stored: the subject is alice's own")
            .sequence;
    }

    let events = crate::queue_live::events_through(&mut feed, last).await;
    let forged: Vec<&Value> = events
        .iter()
        .filter(|e| e["worker_name"] == "alice")
        .collect();
    assert_eq!(forged.len(), 2, "{events:?}");
    for event in &forged {
        assert!(event["refused"].is_string(), "sent as refused: {event}");
        assert_ne!(event["status"], "completed", "never as a change: {event}");
    }

    live.caught_up(StreamKind::Tasks, last).await;
    let db = crate::common::dump(&live.database);
    let refusals = &db["container_task_refusals"];
    let refused_ids: Vec<&str> = refusals
        .iter()
        .filter_map(|r| r["task_id"].as_str())
        .collect();
    assert!(
        refused_ids.contains(&"ghost") && refused_ids.contains(&id.as_str()),
        "{refusals:?}"
    );
    let tasks = &db["container_tasks"];
    assert!(
        tasks.iter().all(|t| t["task_id"] != "ghost"),
        "no task was made up"
    );
    let row = tasks
        .iter()
        .find(|t| t["task_id"] == id.as_str())
        .expect("the task");
    assert_eq!(row["status"], "assigned");

    let copy = live.nats.scratch().join("replayed.sqlite3");
    vibehq_projector::replay(
        &live.log,
        vibehq_projector::ReplayOptions {
            into: copy.clone(),
            streams: StreamKind::ALL.to_vec(),
            until: vibehq_projector::Until::End,
        },
        |_| {},
    )
    .await
    .expect("replay");
    let replayed = crate::common::dump(&copy);
    assert_eq!(
        replayed["container_task_refusals"], db["container_task_refusals"],
        "the same on replay"
    );
    assert_eq!(replayed["container_tasks"], db["container_tasks"]);
}

#[tokio::test]
async fn nats_auth_writes_a_server_configuration_that_up_and_its_workers_run_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let auth = dir.path().join("auth");
    let written = crate::common::vibehq()
        .args(["nats-auth", "--worker", "alice:c1", "--out"])
        .arg(&auth)
        .output()
        .await
        .expect("run nats-auth");
    assert!(written.status.success(), "{written:?}");
    for seed in ["service.nk", "alice.nk"] {
        let mode = std::fs::metadata(auth.join(seed))
            .expect(seed)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{seed} is readable by its owner only");
    }

    let mut options = vibehq_nats::Options::new(dir.path().join("jetstream"));
    options.config = Some(auth.join("auth.conf"));
    let server = vibehq_nats::EmbeddedNats::start(options)
        .await
        .expect("nats-server");
    let url = server.url();
    let service_seed = auth.join("service.nk").display().to_string();
    let up = crate::common::UpProcess::start(
        &dir.path().join("data"),
        &["--nats-url", &url, "--nats-nkey", &service_seed],
    )
    .await;

    let (status, submitted) = crate::common::post(
        &format!("{}/api/tasks", up.http),
        json!({"task_type": "greet", "command": "hello", "worker_name": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["task_id"].as_str().expect("id").to_owned();
    let _worker = crate::common::vibehq()
        .args([
            "worker",
            "--nats-url",
            &url,
            "--worker-name",
            "alice",
            "--container-name",
            "c1",
        ])
        .arg("--nats-nkey")
        .arg(auth.join("alice.nk"))
        .args(["--allow", "hello=/bin/echo hi"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the worker");
    let row = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, row) = crate::common::get_json(&format!("{}/api/tasks/{id}", up.http)).await;
            if row["status"] == "completed" {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("alice's worker completes the task");
    assert_eq!(row["output"].as_str().map(str::trim), Some("hi"));
    assert_eq!(row["worker_name"], "alice");

    let impostor = crate::common::vibehq()
        .args([
            "worker",
            "--nats-url",
            &url,
            "--worker-name",
            "bob",
            "--container-name",
            "c1",
        ])
        .arg("--nats-nkey")
        .arg(auth.join("alice.nk"))
        .args(["--allow", "hello=/bin/echo hi"])
        .output();
    let impostor = tokio::time::timeout(Duration::from_secs(30), impostor)
        .await
        .expect("the impostor gives up")
        .expect("run");
    assert!(!impostor.status.success());
    let stderr = String::from_utf8_lossy(&impostor.stderr);
    assert!(stderr.contains("bob"), "{stderr}");
}
