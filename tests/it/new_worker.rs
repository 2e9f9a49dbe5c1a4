//! `vibehq new worker`: the generated project's own test passes, and the worker it makes
//! completes a task submitted to a real vibehq, in Rust and in Python.
//!
//! The Rust project is built from scratch (about a minute on 2 cores), so that test is
//! `#[ignore]`d in the main run and run on its own by tests/run.sh after it, rather than
//! competing for the cores with the timing-sensitive tests.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{get_json, post, serve, vibehq};

/// `vibehq new worker NAME --lang LANG --dir DIR --url BASE`: made, and registered.
async fn generate(dir: &Path, name: &str, lang: &str, base: &str) {
    let output = vibehq()
        .args([
            "new", "worker", name, "--lang", lang, "--url", base, "--dir",
        ])
        .arg(dir)
        .output()
        .await
        .expect("vibehq new");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("next:"), "{stdout}");
    assert!(stdout.contains(&format!("registered {name}")), "{stdout}");
    // The registration is an event the projection shows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, workers) = get_json(&format!("{base}/api/workers")).await;
        let row = workers["items"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["worker_name"] == name).cloned());
        if let Some(row) = row {
            assert_eq!(row["language"], lang, "{row}");
            assert_eq!(row["commands"], json!(["hello", "summarize"]), "{row}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{workers}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a command in `dir`, which must succeed.
async fn succeeds(dir: &Path, program: &str, args: &[&str]) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/new-worker"),
        )
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `program args` in `dir` as the worker of the vibehq at `base`, submits it a
/// `hello` task and waits until the task completed; its output.
async fn completes_a_task(
    dir: &Path,
    name: &str,
    base: &str,
    program: &str,
    args: &[&str],
) -> Value {
    let mut worker = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("VIBEHQ_URL", base)
        .env_remove("VIBEHQ_WORKER_NAME")
        .env_remove("VIBEHQ_CONTAINER_NAME")
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/new-worker"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the worker starts");
    let (status, submitted) = post(
        &format!("{base}/api/tasks"),
        json!({"task_type": "greeting", "command": "hello", "worker_name": name,
               "parameters": {"name": "vibehq"}}),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let id = submitted["task_id"].as_str().expect("id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let row = loop {
        let (_, row) = get_json(&format!("{base}/api/tasks/{id}")).await;
        if row["status"] == "completed" || tokio::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = worker.kill().await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["assigned_to"], format!("{name}:{name}-1"), "{row}");
    row["output"].clone()
}

#[tokio::test]
async fn a_new_python_worker_passes_its_test_and_completes_a_task() {
    let (_live, _h, base) = serve().await;
    let dir = tempfile::tempdir().expect("dir");
    generate(dir.path(), "acme-py", "python", &base).await;
    let project = dir.path().join("acme-py");
    succeeds(&project, "python3", &["-m", "unittest", "-q"]).await;
    let output = completes_a_task(&project, "acme-py", &base, "python3", &["worker.py"]).await;
    assert_eq!(output, "hello, vibehq, from acme-py");
}

#[tokio::test]
#[ignore = "builds a Rust project from scratch: run on its own by tests/run.sh"]
async fn a_new_rust_worker_builds_passes_its_test_and_completes_a_task() {
    let (_live, _h, base) = serve().await;
    let dir = tempfile::tempdir().expect("dir");
    generate(dir.path(), "acme-fixer", "rust", &base).await;
    let project = dir.path().join("acme-fixer");
    succeeds(&project, "cargo", &["test", "--offline", "--quiet"]).await;
    succeeds(&project, "cargo", &["build", "--offline", "--quiet"]).await;
    let binary =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/new-worker/debug/acme-fixer");
    let output = completes_a_task(
        &project,
        "acme-fixer",
        &base,
        &binary.to_string_lossy(),
        &[],
    )
    .await;
    assert_eq!(output, "hello, vibehq, from acme-fixer");
}

#[tokio::test]
async fn a_worker_name_that_cannot_be_one_or_a_folder_that_exists_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    for (name, says) in [
        ("bad.name", "cannot be a worker's name"),
        ("acme", "exists already"),
    ] {
        std::fs::create_dir_all(dir.path().join("acme")).expect("dir");
        let output = vibehq()
            .args(["new", "worker", name, "--no-register", "--dir"])
            .arg(dir.path())
            .output()
            .await
            .expect("vibehq new");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(says),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_registration_names_its_bad_field_and_a_worker_registers_only_itself() {
    let (_live, _h, base) = serve().await;
    for (body, field) in [
        (json!({"language": "rust"}), "worker_name"),
        (
            json!({"worker_name": "w", "commands": ["rm -rf /"]}),
            "commands",
        ),
        (json!({"worker_name": "w", "commands": "hello"}), "commands"),
        (json!({"worker_name": "w", "language": ""}), "language"),
        (json!({"worker_name": "w", "color": "red"}), "color"),
    ] {
        let (status, error) = post(&format!("{base}/api/workers"), body.clone()).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
}
