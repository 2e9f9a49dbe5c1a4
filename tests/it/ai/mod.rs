//! AI operations against a real nats-server, the real projection and two deterministic
//! OpenAI-compatible providers on loopback (`FakeOpenAi`), reached over HTTP through rig-core
//! exactly as a real provider would be.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use vibehq_ai::ops::Ai;
use vibehq_ai::provider::{Price, ProviderConfig, ProviderKind};
use vibehq_ai::{Gateway, GatewayConfig};
use vibehq_events::StreamKind;
use vibehq_projector::{ReplayOptions, Until, query};
use vibehq_queue::{Actor, NewTask};
use vibehq_test_support::openai::{FakeOpenAi, Reply};

use crate::common::{Harness, Live, call, dump, post};

mod anthropic;
mod cli;
mod gateway;
mod input;
mod openai;
mod plans;
mod replay;
mod rpc;
mod structured;
mod tools;
mod ws;

/// Two providers in fallback order (`a`, then `b`), the AI routes, and `AIOps`.
pub(super) struct Rig {
    pub(super) live: Live,
    pub(super) harness: Harness,
    pub(super) a: FakeOpenAi,
    pub(super) b: FakeOpenAi,
    pub(super) base: String,
    pub(super) ai: Ai,
    pub(super) stop: CancellationToken,
}

pub(super) fn provider(name: &str, fake: &FakeOpenAi) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind: ProviderKind::Openai,
        base_url: Some(fake.url()),
        api_key_env: None,
        model: format!("model-{name}"),
        small_model: Some(format!("model-{name}-small")),
        large_model: None,
        max_tokens: None,
    }
}

impl Rig {
    pub(super) async fn start() -> Self {
        let live = Live::start().await;
        let harness = Harness::on(None, live.log.clone(), vibehq_queue::Options::default()).await;
        let (a, b) = (FakeOpenAi::start().await, FakeOpenAi::start().await);
        let config = GatewayConfig {
            providers: vec![provider("a", &a), provider("b", &b)],
            timeout_ms: 5_000,
            fallback_after_first_token: false,
            prices: BTreeMap::from([(
                "model-b".to_owned(),
                Price {
                    input: 2.0,
                    output: 8.0,
                    cached_input: Some(0.5),
                },
            )]),
        };
        let gateway = Gateway::new(config, live.log.clone()).expect("gateway");
        let ai = Ai::new(
            gateway,
            harness.queue.clone(),
            live.reader(),
            live.handle.clone(),
        );
        let state = vibehq_api::AppState {
            reader: live.reader(),
            projector: live.handle.clone(),
            log: live.log.clone(),
            nats_url: live.nats.url(),
        };
        let routes = vec![
            (
                vibehq_ai::http::router(ai.clone()),
                vibehq_ai::http::AiDoc::openapi(),
            ),
            (
                vibehq_ai::openai::router(ai.gateway.clone()),
                vibehq_ai::openai::OpenAiDoc::openapi(),
            ),
        ];
        let app = vibehq_api::router(state, routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            live,
            harness,
            a,
            b,
            base,
            ai,
            stop: CancellationToken::new(),
        }
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post(&format!("{}{path}", self.base), body).await
    }

    /// The gateway's attempts for the call that answered `reply`.
    pub(super) async fn attempts(&self, reply: &Value) -> Vec<Map<String, Value>> {
        let request_id = reply["request_id"].as_str().expect("a request id");
        self.rows("ai_model_calls", "request_id", request_id).await
    }

    /// Rows of an `ai_*` table once the projection holds everything appended so far.
    pub(super) async fn rows(
        &self,
        table: &str,
        column: &'static str,
        value: &str,
    ) -> Vec<Map<String, Value>> {
        let last = self
            .live
            .log
            .stream_info(StreamKind::Ai)
            .await
            .expect("stream info")
            .state
            .last_sequence;
        self.live.caught_up(StreamKind::Ai, last).await;
        let table = vibehq_projector::Table::named(table).expect("table");
        let filter = query::Filter {
            columns: vec![(column, value.to_owned())],
            limit: 1000,
            ..query::Filter::default()
        };
        self.live
            .reader()
            .read(move |conn| query::list(conn, table, &filter))
            .await
            .expect("rows")
            .items
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) fn text(reply: &str) -> Reply {
    Reply::Text(reply.into())
}

/// The named events of a Server-Sent Events body, in order.
pub(super) fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            Some((name?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

/// Starts `AIOps` and waits until it answers `$SRV.PING`.
pub(super) async fn serve_rpc(rig: &Rig) -> async_nats::Client {
    tokio::spawn(vibehq_ai::rpc::run(
        rig.ai.clone(),
        rig.live.nats.connect().await,
        rig.stop.clone(),
    ));
    let client = rig.live.nats.connect().await;
    for _ in 0..200 {
        if client
            .request("$SRV.PING.AIOps", Default::default())
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    client
}
