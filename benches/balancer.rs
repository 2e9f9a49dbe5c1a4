//! The load balancer's proxy: requests/s and latency through it, against the same instance hit
//! directly in the same run.
//!
//! One `vibehq-echo` instance run by a [`Pool`] (probing it as in production), C concurrent
//! keep-alive clients sending `GET /bench` for a fixed time, first straight to the instance,
//! then through the [`Proxy`]. Reported: requests/s of each and their ratio, latency
//! percentiles, and the p50/p99 the proxy adds; once against an instance that answers at once,
//! and once against one that takes 2 ms per request. On a small machine the clients, the
//! proxy and the instance share the cores: against an instance that does nothing, the proxy's
//! second HTTP exchange per request is most of the work, so that ratio shows its CPU cost.
//!
//! `cargo build --release -p vibehq-test-support --bin vibehq-echo && cargo bench -p
//! vibehq-benches --bench balancer`; time per phase: `VIBEHQ_BENCH_SECS` (default 5),
//! clients: `VIBEHQ_BENCH_CLIENTS` (default 32).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hdrhistogram::Histogram;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vibehq_balancer::{Policy, Pool, Process, Proxy, ServiceSpec, Strategy};
use vibehq_benches::{histogram, line, percentiles, rate, record, size};
use vibehq_events::EventLog;
use vibehq_test_support::NatsServer;

fn main() {
    vibehq_benches::block_on(run());
}

async fn run() {
    let seconds = size("VIBEHQ_BENCH_SECS", 5) as u64;
    let clients = size("VIBEHQ_BENCH_CLIENTS", 32);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "load balancer benchmark: {clients} keep-alive clients, {seconds} s per phase, one \
         vibehq-echo instance, {cores} cores\n"
    );
    let nats = NatsServer::start().await;
    let log = EventLog::new(nats.connect().await);
    log.ensure_streams(1)
        .await
        .unwrap_or_else(|e| panic!("streams: {e}"));
    let spec = ServiceSpec {
        worker_name: "bench".into(),
        container_name: "echo".into(),
        program: echo(),
        args: Vec::new(),
        env: Default::default(),
        health_path: Some("/health".into()),
        heartbeat: None,
        nats_url: None,
    };
    let pool = Pool::new(spec, Policy::default(), Arc::new(Process), log);
    pool.scale(1).await.unwrap_or_else(|e| panic!("scale: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        let status = pool.status();
        if let Some(port) = status
            .instances
            .first()
            .filter(|i| i.in_rotation)
            .and_then(|i| i.port)
        {
            break port;
        }
        assert!(
            Instant::now() < deadline,
            "the instance never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let proxy_addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let app = Proxy::new(pool.clone(), Strategy::LeastOutstanding).router();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let duration = Duration::from_secs(seconds);
    for (path, what) in [
        (
            "/bench",
            "an instance that answers at once (the proxy's own cost)",
        ),
        (
            "/slow",
            "an instance that takes 2 ms per request (a typical service)",
        ),
    ] {
        println!("— {what}: GET {path}");
        let direct = load(&format!("http://127.0.0.1:{port}{path}"), clients, duration).await;
        let proxied = load(&format!("http://{proxy_addr}{path}"), clients, duration).await;
        report(&direct, &proxied);
    }
    pool.scale(0).await.unwrap_or_else(|e| panic!("scale: {e}"));
}

fn report(direct: &Load, proxied: &Load) {
    line("direct to the instance", direct.rate, "req/s", None);
    line(
        "through the proxy",
        proxied.rate,
        "req/s",
        Some(("direct", direct.rate)),
    );
    println!(
        "{:<44} {}",
        "  direct latency",
        percentiles(&direct.latency)
    );
    println!(
        "{:<44} {}",
        "  proxied latency",
        percentiles(&proxied.latency)
    );
    let added = |q: f64| {
        (proxied.latency.value_at_quantile(q) as f64 - direct.latency.value_at_quantile(q) as f64)
            / 1000.0
    };
    println!(
        "{:<44} p50 {:.3} ms, p99 {:.3} ms",
        "  added by the proxy (p diff.; < 0: noise)",
        added(0.5),
        added(0.99)
    );
    println!(
        "{:<44} direct {}, proxied {}",
        "  failed requests", direct.failed, proxied.failed
    );
}

/// The stand-in instance program, built in release mode.
fn echo() -> PathBuf {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("vibehq-echo")))
        .unwrap_or_else(|| panic!("cannot locate the target folder"));
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p vibehq-test-support --bin vibehq-echo",
        bin.display()
    );
    bin
}

struct Load {
    rate: f64,
    latency: Histogram<u64>,
    failed: usize,
}

/// `clients` loops of GET `url` for `duration`.
async fn load(url: &str, clients: usize, duration: Duration) -> Load {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(connector);
    let uri: axum::http::Uri = url.parse().unwrap_or_else(|e| panic!("url: {e}"));
    let started = Instant::now();
    let until = started + duration;
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let (mut latency, mut done, mut failed) = (histogram(), 0usize, 0usize);
                while Instant::now() < until {
                    let t = Instant::now();
                    let request = axum::http::Request::get(uri.clone())
                        .body(Body::empty())
                        .unwrap_or_else(|e| panic!("request: {e}"));
                    match client.request(request).await {
                        Ok(response) if response.status().is_success() => {
                            let body = Body::new(response.into_body());
                            if axum::body::to_bytes(body, 1 << 20).await.is_ok() {
                                record(&mut latency, t.elapsed());
                                done += 1;
                            } else {
                                failed += 1;
                            }
                        }
                        _ => failed += 1,
                    }
                }
                (latency, done, failed)
            })
        })
        .collect();
    let (mut latency, mut done, mut failed) = (histogram(), 0, 0);
    for client in loops {
        let (l, d, f) = client.await.unwrap_or_else(|e| panic!("client: {e}"));
        latency.add(&l).unwrap_or_else(|e| panic!("histogram: {e}"));
        done += d;
        failed += f;
    }
    Load {
        rate: rate(done, started.elapsed()),
        latency,
        failed,
    }
}
