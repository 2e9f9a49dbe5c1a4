//! Trace context on events: every append carries the W3C `traceparent` of the span it was made
//! in, as a NATS header, so one task's submission, claim, run and completion are one trace
//! across the processes that handle them.
//!
//! Spans become OpenTelemetry spans only where a process installs the exporter (`vibehq
//! --otlp-endpoint`); without it there is no context and no header, and these functions cost a
//! span lookup. Only `traceparent` travels: vibehq writes no `tracestate` of its own.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and, upper-cased, the environment variable a worker's program gets) carrying
/// the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span`, if it is being traced.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier(None);
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.0
}

/// The `traceparent` of the current span, if it is being traced.
pub fn current() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of the remote span `traceparent` names (from a header, an event or a
/// caller). A missing or malformed value leaves `span` where it was: a bad header from a client
/// costs its trace, never its request.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let context = TraceContextPropagator::new().extract(&Carrier(Some(traceparent.to_owned())));
    if context.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started children: nothing to follow.
        let _ = span.set_parent(context);
    }
}

/// The `traceparent` a NATS message carries, if any.
pub fn from_headers(headers: Option<&HeaderMap>) -> Option<String> {
    headers?
        .get(TRACEPARENT)
        .map(|value| value.as_str().to_owned())
}

/// Adds the current span's `traceparent` to an append's headers.
pub(crate) fn inject(headers: &mut HeaderMap) {
    if let Some(traceparent) = current() {
        headers.insert(TRACEPARENT, traceparent.as_str());
    }
}

/// A carrier holding just the `traceparent` value.
struct Carrier(Option<String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untraced_span_has_no_context() {
        assert_eq!(current(), None);
        let mut headers = HeaderMap::new();
        inject(&mut headers);
        assert!(headers.get(TRACEPARENT).is_none());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let span = tracing::info_span!("x");
        follow(&span, Some("not-a-traceparent"));
        assert_eq!(traceparent_of(&span), None);
    }
}
