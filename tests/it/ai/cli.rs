//! `vibehq ai`: the gateway from a terminal.

use super::*;

/// Runs `vibehq ai --url <rig> --worker-name cli-test ARGS`: whether it succeeded, and what it
/// printed on stdout and stderr.
pub(super) async fn aicli(rig: &Rig, args: &[&str]) -> (bool, String, String) {
    let output = crate::common::vibehq()
        .args(["ai", "--url", &rig.base, "--worker-name", "cli-test"])
        .args(args)
        .output()
        .await
        .expect("run vibehq ai");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn vibehq_ai_streams_an_answer_routes_runs_tools_and_decides_an_approval_from_a_terminal() {
    let rig = Rig::start().await;

    rig.a.push(Reply::Stream(vec!["Hel".into(), "lo!".into()]));
    let (ok, stdout, stderr) = aicli(&rig, &["ask", "hello"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "Hello!\n");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("a/model-a, 1 attempt, request "))
        .unwrap_or_else(|| panic!("no summary on stderr: {stderr}"));
    let request_id = summary.rsplit(' ').next().expect("a request id");
    let attempts = rig.rows("ai_model_calls", "request_id", request_id).await;
    assert_eq!(
        attempts[0]["worker_name"], "cli-test",
        "the CLI calls as --worker-name"
    );

    rig.a.push(text("Paris."));
    let (ok, stdout, stderr) = aicli(&rig, &["--json", "ask", "Capital of France?"]).await;
    assert!(ok, "{stderr}");
    let reply: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    assert_eq!(reply["answer"]["text"], "Paris.");

    let (ok, stdout, stderr) = aicli(&rig, &["route", "What is 2+2?"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("small") && stdout.contains("a/model-a-small"),
        "{stdout}"
    );

    rig.a.push(Reply::StreamToolCall {
        name: "list_container_status".into(),
        parts: vec!["{".into(), "}".into()],
    });
    rig.a
        .push(Reply::Stream(vec!["No ".into(), "containers.".into()]));
    let (ok, stdout, stderr) = aicli(&rig, &["run", "Which containers run?"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "No containers.\n");
    assert!(
        stderr.contains("→ list_container_status {}\n← "),
        "{stderr}"
    );

    let dir = tempfile::tempdir().expect("dir");
    let steps = dir.path().join("steps.json");
    std::fs::write(
        &steps,
        r#"[{"title": "Restart the workers", "requires_approval": true}]"#,
    )
    .expect("write steps");
    let steps = steps.to_str().expect("a UTF-8 path");
    let (ok, stdout, stderr) = aicli(&rig, &["plan", "Fix the workers", "--steps", steps]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("awaiting_approval  Restart the workers"),
        "{stdout}"
    );
    let approval = stdout
        .lines()
        .find_map(|l| l.strip_prefix("approval ")?.split_once(" pending"))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no pending approval printed: {stdout}"));
    let (ok, stdout, stderr) = aicli(&rig, &["approve", &approval, "--comment", "go"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("approval {approval} approved by cli-test")),
        "{stdout}"
    );
}

#[tokio::test]
async fn vibehq_ai_fails_with_the_servers_reason_or_names_the_unreadable_file() {
    let rig = Rig::start().await;

    let (ok, _, stderr) = aicli(&rig, &["approve", "nope"]).await;
    assert!(!ok, "approving an unknown approval succeeded");
    assert!(
        stderr.contains("404") && stderr.contains("approval_id"),
        "{stderr}"
    );

    let schema = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(schema.path(), "{not json").expect("write");
    let path = schema.path().to_str().expect("a UTF-8 path");
    let (ok, _, stderr) = aicli(&rig, &["structured", "x", "--schema", path]).await;
    assert!(!ok, "an invalid schema file was accepted");
    assert!(
        stderr.contains(path) && stderr.contains("not JSON"),
        "{stderr}"
    );

    let (ok, _, stderr) = aicli(
        &rig,
        &["ask", "hi", "--tier", "small", "--provider", "nope"],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("provider"), "{stderr}");
    assert!(
        rig.a.requests().is_empty(),
        "a refused call reached a provider"
    );
}

#[tokio::test]
async fn vibehq_ai_readme_writes_a_workers_readme_from_its_code_through_the_gateway() {
    let rig = Rig::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let worker = dir.path().join("acme-fixer");
    std::fs::create_dir_all(worker.join("src")).expect("dir");
    std::fs::write(
        worker.join("Cargo.toml"),
        "[package]\nname = \"acme-fixer\"\n",
    )
    .expect("write");
    std::fs::write(
        worker.join("src/main.rs"),
        "// handles the `fix-disk` command\nfn main() {}\n",
    )
    .expect("write");
    let path = worker.to_string_lossy().into_owned();

    rig.a.push(text(
        "```markdown\n# acme-fixer\n\nHandles the `fix-disk` command.\n```",
    ));
    let (ok, _, stderr) = aicli(&rig, &["readme", &path]).await;
    assert!(ok, "{stderr}");
    let readme = std::fs::read_to_string(worker.join("README.md")).expect("README written");
    assert_eq!(readme, "# acme-fixer\n\nHandles the `fix-disk` command.\n");
    assert!(stderr.contains("read 2 files"), "{stderr}");
    // The model was shown the code, with the instructions.
    let sent = rig.a.requests();
    let asked = sent.last().expect("a request").to_string();
    assert!(
        asked.contains("fix-disk") && asked.contains("README.md"),
        "{asked}"
    );
    let request_id = stderr
        .lines()
        .find(|l| l.contains("request "))
        .and_then(|l| l.rsplit(' ').next())
        .expect("a summary");
    let calls = rig.rows("ai_model_calls", "request_id", request_id).await;
    assert_eq!(calls[0]["worker_name"], "cli-test");

    // An existing README is kept unless --force.
    let (ok, _, stderr) = aicli(&rig, &["readme", &path]).await;
    assert!(!ok && stderr.contains("--force"), "{stderr}");
    let (ok, _, stderr) = aicli(&rig, &["readme", "/no/such/folder"]).await;
    assert!(!ok && stderr.contains("is not a folder"), "{stderr}");
}
