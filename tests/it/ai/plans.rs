//! Agent plans: steps that wait for a human, and plans the model proposes.

use super::*;

#[tokio::test]
async fn a_step_needing_approval_blocks_until_approved_and_a_rejected_step_stops_the_plan() {
    let rig = Rig::start().await;
    let steps = json!([
        {"title": "Collect the audit findings"},
        {"title": "Restart the failing workers", "requires_approval": true, "command": "restart-workers"},
        {"title": "Report what changed"}
    ]);
    let statuses = |plan: &Value| -> Vec<String> {
        plan["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    };

    let (status, plan) = rig
        .post(
            "/api/ai/plans",
            json!({"worker_name": "orchestrator", "goal": "Fix the workers", "steps": steps}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["status"], "awaiting_approval");
    assert_eq!(
        statuses(&plan),
        ["completed", "awaiting_approval", "pending"]
    );
    let approval = plan["approvals"][0]["approval_id"]
        .as_str()
        .expect("approval")
        .to_owned();
    assert_eq!(
        plan["approvals"][0]["action"],
        "Restart the failing workers"
    );

    // Still waiting when asked again: nothing moves without a human.
    let plan_id = plan["plan_id"].as_str().expect("plan id").to_owned();
    let (_, again) = crate::common::get_json(&format!("{}/api/ai/plans/{plan_id}", rig.base)).await;
    assert_eq!(
        statuses(&again),
        ["completed", "awaiting_approval", "pending"]
    );

    let (status, plan) = rig
        .post(
            &format!("/api/ai/approvals/{approval}/approve"),
            json!({"worker_name": "alice", "comment": "go"}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    // The approved command runs on the task queue, and the plan waits for it.
    assert_eq!(statuses(&plan), ["completed", "running", "pending"]);
    let queue_task = plan["tasks"][1]["queue_task_id"]
        .as_str()
        .expect("submitted to the queue");
    let task = rig
        .harness
        .queue
        .load(queue_task)
        .await
        .expect("load")
        .expect("the queued step");
    assert_eq!(task.submitted.command, "restart-workers");
    assert_eq!(plan["approvals"][0]["decided_by"], "alice");

    // A container runs it; when it completes, the plan goes on by itself.
    let container = Actor::new("factory-1", Some("c1".into()));
    let claim = rig
        .harness
        .queue
        .claim_task(queue_task, &container)
        .await
        .expect("claim the step");
    rig.harness
        .queue
        .complete(
            queue_task,
            Some(claim.attempt),
            &container,
            Some("3 restarted".into()),
        )
        .await
        .expect("complete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let finished = loop {
        let rows = rig.rows("ai_tasks", "plan_id", &plan_id).await;
        let now: Vec<&str> = rows.iter().filter_map(|r| r["status"].as_str()).collect();
        if now == ["completed", "completed", "completed"] {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plan did not go on: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(finished[1]["result"], "3 restarted");

    let (status, error) = rig
        .post(
            &format!("/api/ai/approvals/{approval}/reject"),
            json!({"worker_name": "bob"}),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("already_decided"))
    );

    // A rejected step stops its plan: the steps after it are cancelled.
    let (_, plan) = rig
        .post(
            "/api/ai/plans",
            json!({"worker_name": "orchestrator", "goal": "Fix again", "steps": steps}),
        )
        .await;
    let approval = plan["approvals"][0]["approval_id"]
        .as_str()
        .expect("approval")
        .to_owned();
    let (status, plan) = rig
        .post(
            &format!("/api/ai/approvals/{approval}/reject"),
            json!({"worker_name": "bob", "comment": "not now"}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["status"], "rejected");
    assert_eq!(statuses(&plan), ["completed", "rejected", "cancelled"]);
}

#[tokio::test]
async fn the_model_turns_a_goal_into_the_plan_when_no_steps_are_given() {
    let rig = Rig::start().await;
    rig.a.push(text(
        r#"{"steps": [{"title": "Run the health audit", "command": "health-audit"},
                      {"title": "Scale the pool to 3", "requires_approval": true}]}"#,
    ));
    let (status, plan) = rig
        .post(
            "/api/ai/plans",
            json!({"worker_name": "orchestrator", "goal": "Get the fleet healthy"}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    let titles: Vec<&str> = plan["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["title"].as_str())
        .collect();
    assert_eq!(titles, ["Run the health audit", "Scale the pool to 3"]);
    // The first step runs on the task queue; the approval is asked for once it is done.
    assert_eq!(plan["status"], "running");
    assert!(
        plan["tasks"][0]["queue_task_id"].is_string(),
        "the first step went to the queue"
    );
    assert_eq!(plan["tasks"][1]["status"], "pending");
}

#[tokio::test]
async fn consecutive_command_steps_are_queued_as_a_chain_and_a_failed_one_cancels_the_rest() {
    let rig = Rig::start().await;
    // The dependency watcher, as `vibehq up` runs it: the queue releases each step.
    tokio::spawn(vibehq_queue::dependencies::run_watcher(
        crate::common::queue_state(&rig.live, &rig.harness),
        tokio_util::sync::CancellationToken::new(),
    ));
    let steps = json!([
        {"title": "Build", "command": "build"},
        {"title": "Test", "command": "test"},
        {"title": "Deploy", "command": "deploy"},
        {"title": "Announce"}
    ]);
    let (status, plan) = rig
        .post(
            "/api/ai/plans",
            json!({"worker_name": "orchestrator", "goal": "Ship it", "steps": steps}),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    let plan_id = plan["plan_id"].as_str().expect("plan id").to_owned();
    let statuses: Vec<&str> = plan["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["status"].as_str())
        .collect();
    assert_eq!(statuses, ["running", "running", "running", "pending"]);
    let queued: Vec<String> = (0..3)
        .map(|i| {
            plan["tasks"][i]["queue_task_id"]
                .as_str()
                .expect("queued")
                .to_owned()
        })
        .collect();
    // Each waits on the step before it, in the queue.
    for i in 1..3 {
        let task = rig
            .harness
            .queue
            .load(&queued[i])
            .await
            .expect("load")
            .expect("queued step");
        assert_eq!(task.submitted.depends_on, [queued[i - 1].clone()]);
    }

    // Only the first is handed out; when it completes, the queue hands out the second.
    let container = Actor::new("factory-1", Some("c1".into()));
    let claim = |wanted: String| {
        let queue = rig.harness.queue.clone();
        let container = container.clone();
        async move {
            let claim = queue
                .claim(&container, Duration::from_secs(5))
                .await
                .expect("claim")
                .expect("the next step");
            assert_eq!(claim.task_id, wanted);
            assert!(
                queue
                    .claim(&container, Duration::from_millis(200))
                    .await
                    .expect("claim")
                    .is_none(),
                "one step at a time"
            );
            claim
        }
    };
    let first = claim(queued[0].clone()).await;
    rig.harness
        .queue
        .complete(
            &queued[0],
            Some(first.attempt),
            &container,
            Some("built".into()),
        )
        .await
        .expect("complete");
    let second = claim(queued[1].clone()).await;
    rig.harness
        .queue
        .fail(
            &queued[1],
            Some(second.attempt),
            &container,
            "3 tests failed".into(),
            false,
        )
        .await
        .expect("fail");

    // The plan records it by itself: the failed step stops it, the rest are cancelled, the
    // deploy's queue task too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = rig.rows("ai_tasks", "plan_id", &plan_id).await;
        let now: Vec<&str> = rows.iter().filter_map(|r| r["status"].as_str()).collect();
        if now == ["completed", "failed", "cancelled", "cancelled"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plan did not settle: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deploy = rig
        .harness
        .queue
        .load(&queued[2])
        .await
        .expect("load")
        .expect("queued step");
    assert_eq!(deploy.status.state.as_str(), "cancelled");
}
