//! The dashboard in a real browser: `vibehq up` with an API token, a load balancer of
//! `vibehq-echo` instances and the deterministic OpenAI-compatible provider, driven by
//! `tests/browser/dashboard.mjs` (Playwright over Debian's Chromium). The script makes its own
//! work over REST and checks each page; its screenshots land in
//! `target/ci-artifacts/dashboard/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use vibehq_test_support::openai::FakeOpenAi;

use crate::common::{UpProcess, whole_system_config};

const TOKEN: &str = "dashboard-operator-token-0123";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_dashboard_works_in_a_browser() {
    let browser = repository().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "tests/browser has no node_modules: run `npm ci --prefix tests/browser` (tests/run.sh does), \
         and install Debian's chromium (`apt-get install chromium`)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `apt-get install chromium` (.ci/run does)"
    );
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = whole_system_config(dir.path(), &fake, &format!("api_tokens = [\"{TOKEN}\"]"));
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

    let screenshots = repository().join("target/ci-artifacts/dashboard");
    let run = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&browser)
        .env("VIBEHQ_URL", &up.http)
        .env("VIBEHQ_TOKEN", TOKEN)
        .env("VIBEHQ_FAKE_OPENAI", fake.url())
        .env("VIBEHQ_SCREENSHOTS", &screenshots)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser checks end within 2 minutes")
        .expect("run node (install Node.js 20+)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the browser checks failed:\n{report}"
    );
    assert!(report.contains("ok - "), "{report}");
    assert!(
        screenshots.join("tasks.png").exists(),
        "no screenshots in {}",
        screenshots.display()
    );
}
