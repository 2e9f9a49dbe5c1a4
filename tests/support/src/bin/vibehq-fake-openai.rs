//! The deterministic OpenAI-compatible server of `vibehq_test_support::openai`, as a process,
//! for tests whose clients run outside Rust (a browser, the `openai` package).
//!
//! `vibehq-fake-openai [ADDR]` (default `127.0.0.1:0`) prints its base URL (`http://…/v1`) on
//! the first line of stdout, then serves until killed. Unscripted requests answer "ok" (or a
//! value of the JSON Schema they ask for); script replies with `POST /_script` (see the
//! module's docs).

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let server = vibehq_test_support::openai::FakeOpenAi::on(&addr).await;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", server.url());
    let _ = stdout.flush();
    std::future::pending::<()>().await;
}
