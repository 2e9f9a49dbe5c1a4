//! The AI gateway's own cost per model call, against a provider on loopback.
//!
//! The same deterministic OpenAI-compatible server the tests use (`FakeOpenAi`, in this
//! process) answers every call at once, so what is left is client work: rig-core building the
//! request and reading the answer, and — through the gateway only — the fallback chain, the
//! timeout and the `ai.model_called` event appended to JetStream (acknowledged before the call
//! returns, so the record cannot be lost). Calls alternate between the provider called directly
//! (rig-core through `Provider`, no gateway) and through the [`Gateway`], one at a time, so both
//! see the same machine; the gateway's added latency is the difference of their percentiles.
//! A bare JetStream publish-and-ack is measured in the same run as the floor of recording.
//!
//! Then the OpenAI-compatible door: the same chat request POSTed over HTTP to the provider
//! directly and to vibehq's `/v1/chat/completions` (served by its axum router on loopback, in
//! this process), alternating; the difference is what an unmodified SDK pays for going through
//! vibehq: a second HTTP exchange, the translation, the gateway and the record.
//!
//! `cargo bench -p vibehq-benches --bench ai`; calls: `VIBEHQ_BENCH_CALLS` (default 2000).

use std::time::Instant;

use axum::body::Body;
use hdrhistogram::Histogram;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vibehq_ai::provider::{Conversation, Provider, ProviderConfig, ProviderKind, Tier};
use vibehq_ai::{Actor, Gateway, GatewayConfig, Operation, Request};
use vibehq_benches::{histogram, percentiles, record, size};
use vibehq_events::EventLog;
use vibehq_test_support::NatsServer;
use vibehq_test_support::openai::FakeOpenAi;

fn main() {
    vibehq_benches::block_on(run());
}

async fn run() {
    let calls = size("VIBEHQ_BENCH_CALLS", 2000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("AI gateway benchmark: {calls} sequential calls each way, {cores} cores\n");
    let nats = NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1)
        .await
        .unwrap_or_else(|e| panic!("streams: {e}"));
    let fake = FakeOpenAi::start().await;
    let config = ProviderConfig {
        name: "fake".into(),
        kind: ProviderKind::Openai,
        base_url: Some(fake.url()),
        api_key_env: None,
        model: "bench-model".into(),
        small_model: None,
        large_model: None,
        max_tokens: None,
    };
    let direct = Provider::new(config.clone()).unwrap_or_else(|e| panic!("provider: {e}"));
    let gateway = Gateway::new(
        GatewayConfig {
            providers: vec![config],
            ..GatewayConfig::default()
        },
        log.clone(),
    )
    .unwrap_or_else(|e| panic!("gateway: {e}"));
    let caller = Actor::new("bench", None);
    let conversation = Conversation::prompt("Say ok.");
    let request = Request {
        caller: &caller,
        operation: Operation::Ask,
        tier: Tier::Medium,
        provider: None,
        conversation: &conversation,
        timeout: None,
    };

    let (mut alone, mut through, mut publish) = (histogram(), histogram(), histogram());
    let warmup = calls / 10;
    for i in 0..warmup + calls {
        let started = Instant::now();
        direct
            .complete("bench-model", &conversation)
            .await
            .unwrap_or_else(|e| panic!("direct call: {e}"));
        let direct_time = started.elapsed();
        let started = Instant::now();
        gateway
            .complete(request)
            .await
            .unwrap_or_else(|e| panic!("gateway call: {e}"));
        let gateway_time = started.elapsed();
        let started = Instant::now();
        log.jetstream()
            .publish("vibehq.ai.calls.bench-floor", "x".into())
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"))
            .await
            .unwrap_or_else(|e| panic!("ack: {e}"));
        let publish_time = started.elapsed();
        if i >= warmup {
            record(&mut alone, direct_time);
            record(&mut through, gateway_time);
            record(&mut publish, publish_time);
        }
    }
    println!(
        "{:<34} {}",
        "provider called directly (rig)",
        percentiles(&alone)
    );
    println!("{:<34} {}", "through the gateway", percentiles(&through));
    println!(
        "{:<34} {}",
        "JetStream publish + ack (floor)",
        percentiles(&publish)
    );
    let added = |q: f64| {
        let at = |h: &Histogram<u64>| h.value_at_quantile(q) as f64 / 1000.0;
        at(&through) - at(&alone)
    };
    println!(
        "\ngateway added latency: p50 {:.3} ms, p99 {:.3} ms (target p99 < 1 ms)",
        added(0.5),
        added(0.99)
    );

    // The OpenAI-compatible door, against the provider's own endpoint, both over HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let door = format!(
        "http://{}/v1/chat/completions",
        listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"))
    );
    let app = vibehq_ai::openai::router(gateway.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let provider_url = format!("{}/chat/completions", fake.url());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(connector);
    let post = |url: &str, model: &str| {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say ok."}],
        });
        let request = axum::http::Request::post(url)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap_or_else(|e| panic!("request: {e}"));
        let client = client.clone();
        async move {
            let started = Instant::now();
            let response = client
                .request(request)
                .await
                .unwrap_or_else(|e| panic!("POST: {e}"));
            assert!(response.status().is_success(), "{}", response.status());
            axum::body::to_bytes(Body::new(response.into_body()), 1 << 20)
                .await
                .unwrap_or_else(|e| panic!("body: {e}"));
            started.elapsed()
        }
    };
    let (mut provider_http, mut door_http) = (histogram(), histogram());
    for i in 0..warmup + calls {
        let direct_time = post(&provider_url, "bench-model").await;
        let door_time = post(&door, "vibehq/medium").await;
        if i >= warmup {
            record(&mut provider_http, direct_time);
            record(&mut door_http, door_time);
        }
    }
    println!(
        "\n{:<34} {}",
        "provider's /chat/completions",
        percentiles(&provider_http)
    );
    println!(
        "{:<34} {}",
        "vibehq's /v1/chat/completions",
        percentiles(&door_http)
    );
    let added = |q: f64| {
        let at = |h: &Histogram<u64>| h.value_at_quantile(q) as f64 / 1000.0;
        at(&door_http) - at(&provider_http)
    };
    println!(
        "OpenAI-compatible door added latency: p50 {:.3} ms, p99 {:.3} ms (target p99 < 1 ms)",
        added(0.5),
        added(0.99)
    );
}
