//! `/openapi.json` says exactly what the API does: schemathesis (pinned in
//! `tests/python/requirements.txt`, installed by `tests/run.sh`) runs every check it has
//! against a whole `vibehq up` — the queue, a load balancer of `vibehq-echo` instances and the
//! AI gateway on the deterministic provider — and finds nothing. It sends bodies and queries
//! the document allows (each must be accepted), ones it forbids (each must be refused with a
//! 4xx), and checks every answer's status, content type and body against the document.

use std::process::Stdio;
use std::time::Duration;

use vibehq_test_support::openai::FakeOpenAi;

use crate::common::{UpProcess, whole_system_config};

#[tokio::test]
#[ignore = "loads the machine for minutes: tests/run.sh runs it after the suite, with the project builds"]
async fn schemathesis_finds_no_difference_between_the_document_and_the_api() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = whole_system_config(dir.path(), &fake, "");
    let up = UpProcess::start(
        dir.path(),
        &[
            "--embedded-nats-port",
            "0",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
    )
    .await;

    let report = dir.path().join("schemathesis");
    let run = tokio::process::Command::new("python3")
        .args([
            "-c",
            "from schemathesis.cli import schemathesis; schemathesis()",
        ])
        .args(["run", &format!("{}/openapi.json", up.http)])
        .args([
            "--checks",
            "all",
            "--seed",
            "20261204",
            "--max-examples",
            "40",
        ])
        // One worker: hypothesis's source inspection is not thread-safe on Python 3.11
        // ("AST constructor recursion depth mismatch" with two).
        .args(["--workers", "1", "--no-color"])
        // A claim may wait up to 30 s for work (`wait_ms`), by design.
        .args(["--max-response-time", "31"])
        // The WebSocket routes are in the document for readers, but an HTTP fuzzer cannot
        // drive them: a 101 hands its pooled connection to the WebSocket, and the next
        // request on it fails. Real WebSocket clients test them (queue_live, balancer, ai::ws).
        .args(["--exclude-path-regex", "^/ws/"])
        .arg("--report-dir")
        .arg(&report)
        // Its cache (`.schemathesis/`) goes with the run, not into the checkout.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect(
            "run python3 with schemathesis (tests/run.sh installs it into target/tools/python)",
        );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found differences:\n{printed}"
    );
    // A warning (operations whose drawn ids all answered 404) is not a difference; a failed
    // check (❌) or an error (🚫) in any phase is.
    assert!(
        !printed.contains('❌') && !printed.contains('🚫') && printed.contains(" passed"),
        "{printed}"
    );
}
