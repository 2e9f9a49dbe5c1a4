//! Traces: with `--otlp-endpoint`, a task's submission (in `vibehq up`) and its run and
//! completion (in a `vibehq worker` process) are one trace at the collector, carried between
//! the processes by the events' NATS headers; the worker's program gets it as `TRACEPARENT`.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};
use vibehq_test_support::NatsServer;

use crate::common::{UpProcess, get_json, vibehq};

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP collector in this test process: it decodes every export with the OTLP
/// protobuf types and keeps the spans.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Seen>>>,
}

impl Collector {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
                    let mut kept = kept.lock().expect("spans");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref()?.value.as_ref())
                            .map(|v| match v {
                                AnyValue::StringValue(s) => s.clone(),
                                other => format!("{other:?}"),
                            })
                            .unwrap_or_default();
                        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                            kept.push(Seen {
                                service: service.clone(),
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                            });
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    fn in_trace(&self, trace_id: &str) -> Vec<Seen> {
        let spans = self.spans.lock().expect("spans");
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_tasks_submission_run_and_completion_are_one_trace_across_processes() {
    let nats = NatsServer::with_workers(&["factory"]).await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let up = UpProcess::start(
        dir.path(),
        &["--nats-url", &nats.url(), "--otlp-endpoint", &collector.url],
    )
    .await;
    let program = dir.path().join("print-trace.sh");
    std::fs::write(&program, "#!/bin/sh\necho \"$TRACEPARENT\"\n").expect("write");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut worker = vibehq()
        .args([
            "worker",
            "--nats-url",
            &nats.bare_url(),
            "--worker-name",
            "factory",
        ])
        .arg("--nats-nkey")
        .arg(nats.seed("factory"))
        .args(["--container-name", "c1", "--otlp-endpoint", &collector.url])
        .arg("--allow")
        .arg(format!("print-trace={}", program.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");

    // The client is traced itself: its trace goes on through vibehq.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let submitted: Value = reqwest::Client::new()
        .post(format!("{}/api/tasks", up.http))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&json!({"task_type": "traced", "command": "print-trace"}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    let task_id = submitted["task_id"].as_str().expect("task_id").to_owned();

    let task = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, task) = get_json(&format!("{}/api/tasks/{task_id}", up.http)).await;
            if task["status"] == "completed" {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the worker completes the task");
    let program_saw = task["output"].as_str().expect("output").trim().to_owned();
    assert!(
        program_saw.starts_with(&format!("00-{trace_id}-")),
        "the program's TRACEPARENT is in the client's trace: {program_saw:?}"
    );

    // A stopped process sends the spans it still holds.
    up.signal(Signal::SIGTERM);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id().expect("running") as i32),
        Signal::SIGTERM,
    )
    .expect("signal");
    worker.wait().await.expect("worker exits");
    let mut up = up;
    up.child.wait().await.expect("up exits");

    let spans = collector.in_trace(trace_id);
    let find = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {name:?} span from {service} in {spans:#?}"))
    };
    let submit = find("vibehq", "POST /api/tasks");
    assert_eq!(
        submit.parent_span_id, client_span,
        "the API continues the client's span"
    );
    let run = find("vibehq-worker", "task");
    assert_eq!(
        run.parent_span_id, submit.span_id,
        "the worker's task span continues the submission it read from NATS"
    );
    let program_run = find("vibehq-worker", "run");
    assert_eq!(program_run.parent_span_id, run.span_id);
    assert_eq!(
        program_saw,
        format!("00-{trace_id}-{}-01", program_run.span_id),
        "the program runs as a child of the run span"
    );
    let report = find("vibehq-worker", "report");
    assert_eq!(
        report.parent_span_id, run.span_id,
        "the completion is in the trace"
    );
}
