//! The gateway every model call goes through: a fallback chain across providers, a timeout per
//! call, `retry-after` respected, and one `ai.model_called` event per attempt.
//!
//! A provider is tried in configured order (a request may name one to try first). Timeouts,
//! 429s, 5xx answers and unreachable providers move on to the next one; any other failure (a
//! 400, say) would fail the same way anywhere and is returned at once. A 429's `retry-after`
//! takes that provider out of the chain until it has passed, for every call; when every
//! provider is cooling down the call fails at once with the shortest wait, rather than
//! hammering a provider that asked for a pause.
//!
//! A streamed call falls back only until its first delta reached the caller: after that the
//! caller has shown a user half an answer, and a second provider's different answer would be
//! spliced onto it. `fallback_after_first_token` allows it anyway, announcing the switch with
//! [`Delta::Restart`] so the caller can discard what it showed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use vibehq_events::EventLog;
use vibehq_events::ai::ModelCalled;
use vibehq_events::log::Expect;

use crate::Actor;
use crate::provider::{
    Answer, CallError, Conversation, Delta, PriceTable, Provider, ProviderConfig, SetupError,
    Streamed, Tier,
};

/// The gateway's configuration (`[ai]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Providers in fallback order.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// The longest one attempt may take, in milliseconds (a request may ask for less); for a
    /// streamed answer, the longest wait for its next delta.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Fall back even after a streamed answer's first delta reached the caller.
    #[serde(default)]
    pub fallback_after_first_token: bool,
    /// Prices per million tokens by model name, for each attempt's `cost_usd`.
    #[serde(default)]
    pub prices: PriceTable,
}

fn default_timeout_ms() -> u64 {
    60_000
}

impl Default for GatewayConfig {
    /// No providers, and the file's defaults for the rest.
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            timeout_ms: default_timeout_ms(),
            fallback_after_first_token: false,
            prices: PriceTable::new(),
        }
    }
}

/// What asked for a model call (recorded with each attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Ask,
    Route,
    Structured,
    Tools,
    Evaluate,
    Plan,
    /// A chat through the OpenAI-compatible door (`/v1/chat/completions`).
    Chat,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Ask => "ask",
            Operation::Route => "route",
            Operation::Structured => "structured",
            Operation::Tools => "tools",
            Operation::Evaluate => "evaluate",
            Operation::Plan => "plan",
            Operation::Chat => "chat",
        }
    }
}

/// One call through the gateway.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub caller: &'a Actor,
    pub operation: Operation,
    pub tier: Tier,
    /// Try this provider first.
    pub provider: Option<&'a str>,
    pub conversation: &'a Conversation,
    /// Shorter than the configured timeout, if set.
    pub timeout: Option<Duration>,
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reply {
    /// The call's id: `vibehq audit ai-call <request_id>` shows its attempts.
    pub request_id: String,
    /// The provider and model that answered.
    pub provider: String,
    pub model: String,
    pub answer: Answer,
    /// How many providers were tried (1 when the first answered).
    pub attempts: u32,
    pub latency_ms: f64,
    pub first_token_ms: Option<f64>,
}

/// A call that produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    #[error(
        "no AI provider is configured: add an [[ai.providers]] table to the config file \
         (see deploy/vibehq.example.toml)"
    )]
    NoProviders,
    /// Every provider failed in a way that allowed falling back (or was cooling down).
    #[error("every provider failed: {}", .failures.join("; "))]
    Exhausted {
        request_id: String,
        failures: Vec<String>,
        /// Whether every provider is rate limiting (answered 429, or is cooling down from one).
        rate_limited: bool,
        /// When the soonest of them said it would take calls again.
        retry_after: Option<Duration>,
    },
    /// A failure another provider would not mend (a 400, an unparsable answer).
    #[error("{provider}: {error}")]
    Failed {
        request_id: String,
        provider: String,
        error: CallError,
    },
    /// A streamed answer broke after its first delta, with falling back then not allowed.
    #[error("{provider} failed after the answer began streaming: {error}")]
    Interrupted {
        request_id: String,
        provider: String,
        error: CallError,
    },
    /// The attempt happened but could not be recorded.
    #[error("cannot record the call: {0}")]
    Record(#[from] vibehq_events::log::Error),
}

/// The gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    providers: Vec<Provider>,
    prices: PriceTable,
    timeout: Duration,
    fallback_after_first_token: bool,
    /// Providers that answered 429 with `retry-after`, and until when.
    cooling: Mutex<HashMap<String, Instant>>,
    log: EventLog,
}

impl Gateway {
    pub fn new(config: GatewayConfig, log: EventLog) -> Result<Self, SetupError> {
        let providers = config
            .providers
            .into_iter()
            .map(Provider::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                providers,
                prices: config.prices,
                timeout: Duration::from_millis(config.timeout_ms.max(1)),
                fallback_after_first_token: config.fallback_after_first_token,
                cooling: Mutex::new(HashMap::new()),
                log,
            }),
        })
    }

    pub fn log(&self) -> &EventLog {
        &self.inner.log
    }

    /// Appends an AI event by `caller` (unconditionally: each one is a new aggregate or a
    /// new fact about one).
    pub(crate) async fn record(
        &self,
        caller: &Actor,
        payload: impl Into<vibehq_events::Payload>,
    ) -> Result<(), vibehq_events::log::Error> {
        self.inner
            .log
            .append(&caller.envelope(payload), Expect::Any)
            .await
            .map(drop)
    }

    /// The configured providers, in fallback order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderConfig> {
        self.inner.providers.iter().map(|p| &p.config)
    }

    /// Checks a provider name a request gave.
    pub fn check_provider(&self, name: &str) -> Result<(), GatewayError> {
        if self.inner.providers.iter().any(|p| p.name() == name) {
            Ok(())
        } else {
            Err(GatewayError::UnknownProvider(name.to_owned()))
        }
    }

    /// The provider a call for `tier` would try first now, and its model.
    pub fn first_choice(&self, tier: Tier) -> Option<(&str, &str)> {
        let now = Instant::now();
        let cooling = lock(&self.inner.cooling);
        let mut providers = self.inner.providers.iter();
        providers
            .clone()
            .find(|p| cooling.get(p.name()).is_none_or(|until| *until <= now))
            .or_else(|| providers.next())
            .map(|p| (p.name(), p.config.model_for(tier)))
    }

    /// Asks for a whole answer.
    pub async fn complete(&self, request: Request<'_>) -> Result<Reply, GatewayError> {
        self.call(request, None).await
    }

    /// Asks for a streamed answer, handing each delta to `on_delta` as it arrives.
    pub async fn stream(
        &self,
        request: Request<'_>,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<Reply, GatewayError> {
        self.call(request, Some(on_delta)).await
    }

    async fn call(
        &self,
        request: Request<'_>,
        mut on_delta: Option<&mut (dyn FnMut(Delta) + Send)>,
    ) -> Result<Reply, GatewayError> {
        if self.inner.providers.is_empty() {
            return Err(GatewayError::NoProviders);
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        let chain = self.chain(request.provider)?;
        let span = tracing::info_span!(
            "ai_call", %request_id, operation = request.operation.as_str(),
            tier = request.tier.as_str(), worker_name = %request.caller.worker_name,
        );
        async {
            let timeout = request
                .timeout
                .map_or(self.inner.timeout, |t| t.min(self.inner.timeout));
            let started = Instant::now();
            let mut failures = Vec::new();
            let mut attempt = 0;
            let mut soonest: Option<Duration> = None;
            let mut rate_limited = true;
            // Whether the caller was shown part of an answer that then broke.
            let mut shown = false;
            for provider in chain {
                if let Some(wait) = self.cooling_for(provider.name()) {
                    failures.push(format!("{}: cooling down for {wait:?} (retry-after)", provider.name()));
                    soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                    continue;
                }
                attempt += 1;
                let model = provider.config.model_for(request.tier);
                let attempt_started = Instant::now();
                let (result, first_token, delivered) = match on_delta.as_deref_mut() {
                    None => {
                        let result = tokio::time::timeout(
                            timeout,
                            provider.complete(model, request.conversation),
                        )
                        .await
                        .unwrap_or(Err(CallError::Timeout(timeout)));
                        (result, None, false)
                    }
                    Some(sink) => {
                        if std::mem::take(&mut shown) {
                            sink(Delta::Restart {
                                provider: provider.name().to_owned(),
                            });
                        }
                        stream_attempt(provider, model, request.conversation, timeout, sink).await
                    }
                };
                let latency = attempt_started.elapsed();
                let streamed = on_delta.is_some();
                self.record_attempt(
                    &request, &request_id, attempt, provider, model, &result, latency,
                    first_token, streamed,
                )
                .await?;
                match result {
                    Ok(answer) => {
                        tracing::info!(provider = provider.name(), model, attempt, latency_ms = ms(latency), "answered");
                        return Ok(Reply {
                            request_id,
                            provider: provider.name().to_owned(),
                            model: model.to_owned(),
                            answer,
                            attempts: attempt,
                            latency_ms: ms(started.elapsed()),
                            first_token_ms: first_token.map(ms),
                        });
                    }
                    Err(error) => {
                        tracing::warn!(provider = provider.name(), model, attempt, %error, "attempt failed");
                        if let Some(wait) = error.retry_after() {
                            self.cool(provider.name(), wait);
                            soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                        }
                        rate_limited &= matches!(error, CallError::RateLimited { .. });
                        shown = delivered;
                        if delivered && !self.inner.fallback_after_first_token {
                            return Err(GatewayError::Interrupted {
                                request_id,
                                provider: provider.name().to_owned(),
                                error,
                            });
                        }
                        if !error.falls_back() {
                            return Err(GatewayError::Failed {
                                request_id,
                                provider: provider.name().to_owned(),
                                error,
                            });
                        }
                        failures.push(format!("{}: {error}", provider.name()));
                    }
                }
            }
            Err(GatewayError::Exhausted {
                request_id,
                failures,
                rate_limited,
                retry_after: soonest,
            })
        }
        .instrument(span)
        .await
    }

    /// The providers to try, in order: the named one first, then the rest.
    fn chain(&self, first: Option<&str>) -> Result<Vec<&Provider>, GatewayError> {
        let providers = &self.inner.providers;
        match first {
            None => Ok(providers.iter().collect()),
            Some(name) => {
                let pinned = providers
                    .iter()
                    .find(|p| p.name() == name)
                    .ok_or_else(|| GatewayError::UnknownProvider(name.to_owned()))?;
                Ok(std::iter::once(pinned)
                    .chain(providers.iter().filter(|p| p.name() != name))
                    .collect())
            }
        }
    }

    fn cooling_for(&self, provider: &str) -> Option<Duration> {
        let mut cooling = lock(&self.inner.cooling);
        let until = *cooling.get(provider)?;
        let now = Instant::now();
        if until <= now {
            cooling.remove(provider);
            return None;
        }
        Some(until - now)
    }

    fn cool(&self, provider: &str, wait: Duration) {
        lock(&self.inner.cooling).insert(provider.to_owned(), Instant::now() + wait);
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_attempt(
        &self,
        request: &Request<'_>,
        request_id: &str,
        attempt: u32,
        provider: &Provider,
        model: &str,
        result: &Result<Answer, CallError>,
        latency: Duration,
        first_token: Option<Duration>,
        streamed: bool,
    ) -> Result<(), GatewayError> {
        let usage = result.as_ref().map(|a| a.usage).unwrap_or_default();
        let error = result.as_ref().err();
        vibehq_metrics::metrics()
            .model_calls
            .get_or_create(&vibehq_metrics::ModelLabels {
                provider: provider.name().to_owned(),
                model: model.to_owned(),
                outcome: error.map_or("ok", CallError::outcome).to_owned(),
            })
            .observe(latency.as_secs_f64());
        let event = ModelCalled {
            attempt_id: uuid::Uuid::now_v7().to_string(),
            request_id: request_id.to_owned(),
            attempt,
            operation: request.operation.as_str().to_owned(),
            provider: provider.name().to_owned(),
            model: model.to_owned(),
            streamed,
            outcome: error.map_or("ok", CallError::outcome).to_owned(),
            status_code: error.map_or(Some(200), CallError::status),
            error: error.map(ToString::to_string),
            retry_after_ms: error
                .and_then(CallError::retry_after)
                .map(|d| d.as_millis() as u64),
            latency_ms: ms(latency),
            first_token_ms: first_token.map(ms),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_tokens,
            cost_usd: self.inner.prices.get(model).and_then(|p| p.cost(&usage)),
        };
        Ok(self.record(request.caller, event).await?)
    }
}

/// One streamed attempt: the answer (or why not), when the first delta came, and whether any
/// delta reached the caller. `timeout` is the longest silence: before the first delta and
/// between two.
async fn stream_attempt(
    provider: &Provider,
    model: &str,
    conversation: &Conversation,
    timeout: Duration,
    sink: &mut (dyn FnMut(Delta) + Send),
) -> (Result<Answer, CallError>, Option<Duration>, bool) {
    let started = Instant::now();
    let mut stream = match provider.stream(model, conversation) {
        Ok(stream) => stream,
        Err(error) => return (Err(error), None, false),
    };
    let mut first = None;
    loop {
        // The timeout bounds the wait for each delta, so a long answer that keeps streaming is
        // never cut off, and a provider that stalls is left after `timeout` either way.
        let next = match tokio::time::timeout(timeout, stream.next()).await {
            Ok(next) => next,
            Err(_) => return (Err(CallError::Timeout(timeout)), first, first.is_some()),
        };
        match next {
            Some(Ok(Streamed::Delta(delta))) => {
                first.get_or_insert_with(|| started.elapsed());
                sink(delta);
            }
            Some(Ok(Streamed::Done(answer))) => {
                return (
                    Ok(answer),
                    Some(first.unwrap_or_else(|| started.elapsed())),
                    first.is_some(),
                );
            }
            Some(Err(error)) => return (Err(error), first, first.is_some()),
            None => {
                let error = CallError::Other {
                    status: None,
                    message: "the stream ended without an answer".into(),
                };
                return (Err(error), first, first.is_some());
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_config_files_defaults() {
        let from_file: GatewayConfig = serde_json::from_str("{}").expect("an empty [ai]");
        assert_eq!(GatewayConfig::default().timeout_ms, from_file.timeout_ms);
        assert_eq!(from_file.timeout_ms, 60_000);
    }
}
