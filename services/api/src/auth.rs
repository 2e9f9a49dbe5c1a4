//! Bearer-token access to the HTTP API, and who a request acts as.
//!
//! With tokens configured, every request but the health endpoints (`GET /health` and
//! `/health/…`, for load balancers' probes) must carry `Authorization: Bearer <token>` matching
//! one of them. An operator's token may act as anyone; a worker's token acts only as the workers
//! it was issued for ([`Identity`]), which every operation that names a worker checks. Tokens are
//! compared in constant time and never logged ([`Token`]'s `Debug` is redacted). Listening
//! beyond loopback without tokens is refused at start ([`crate::Error::Unprotected`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::body::{Body, unprocessable};
use crate::error::ApiError;

/// An API token. Its `Debug` output is redacted so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The API's tokens: operators' and workers'.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Tokens that may act as any worker, and administer.
    pub admin: Vec<Token>,
    /// Tokens that act only as these workers.
    pub workers: Vec<(Vec<String>, Token)>,
}

impl Tokens {
    /// Whether any token is configured (then every request needs one).
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.workers.is_empty()
    }

    /// Who `presented` acts as, if it is a token; every token is compared, so the time taken
    /// does not depend on which one matched.
    fn identify(&self, presented: &str) -> Option<Identity> {
        let mut found = None;
        for token in &self.admin {
            if constant_time_eq(presented.as_bytes(), token.0.as_bytes()) {
                found = Some(Identity::Admin);
            }
        }
        for (workers, token) in &self.workers {
            if constant_time_eq(presented.as_bytes(), token.0.as_bytes()) && found.is_none() {
                found = Some(Identity::Workers(workers.clone()));
            }
        }
        found
    }
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Identity {
    /// No tokens are configured (the API listens on loopback only): anyone acts as anyone.
    #[default]
    Open,
    /// An operator: may act as any worker, and administer.
    Admin,
    /// A worker's token (or RPC request): may act only as these workers.
    Workers(Vec<String>),
}

impl Identity {
    /// Whether this identity may act as `worker`.
    pub fn may_act_as(&self, worker: &str) -> bool {
        match self {
            Identity::Open | Identity::Admin => true,
            Identity::Workers(workers) => workers.iter().any(|w| w == worker),
        }
    }

    /// Refuses (403, naming `field`) acting as `worker` when this identity may not.
    pub fn check(&self, field: &str, worker: &str) -> Result<(), ApiError> {
        match self {
            Identity::Workers(workers) if !self.may_act_as(worker) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this caller acts only as {}, not as {worker}",
                    workers.join(", ")
                ),
                Some(field.to_owned()),
            )),
            _ => Ok(()),
        }
    }

    /// The one worker a worker identity acts as (what a field it left out defaults to).
    pub fn only_worker(&self) -> Option<&str> {
        match self {
            Identity::Workers(workers) if workers.len() == 1 => Some(&workers[0]),
            _ => None,
        }
    }

    /// The worker a request's `field` names, which this identity must be allowed to act as
    /// (403 naming the field otherwise). Left out, it is the one worker this identity acts as,
    /// or else `fallback`; with neither, the field is required (422).
    pub fn acting_as(
        &self,
        body: &Body,
        field: &str,
        fallback: Option<&str>,
    ) -> Result<String, ApiError> {
        if let Some(name) = body.name(field)? {
            self.check(field, &name)?;
            return Ok(name);
        }
        match (self, self.only_worker(), fallback) {
            (_, Some(only), _) => Ok(only.to_owned()),
            (Identity::Workers(_), None, _) => Err(unprocessable(
                field,
                format!("{field} is required: this caller acts as several workers"),
            )),
            (_, None, Some(fallback)) => Ok(fallback.to_owned()),
            (_, None, None) => Err(unprocessable(field, format!("{field} is required"))),
        }
    }

    /// Refuses (403) what only operators may do.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        match self {
            Identity::Workers(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("only an operator may {what}"),
                None,
            )),
            _ => Ok(()),
        }
    }
}

/// A handler's `Identity` argument: who the request's token acts as, or [`Identity::Open`]
/// when the API has no tokens.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Identity>()
            .cloned()
            .unwrap_or_default())
    }
}

/// `routes`, each answering only requests with one of `tokens` (none: everyone, as
/// [`Identity::Open`]).
pub fn protect(routes: axum::Router, tokens: Tokens) -> axum::Router {
    if tokens.is_empty() {
        return routes;
    }
    routes.layer(axum::middleware::from_fn_with_state(
        Arc::new(tokens),
        require,
    ))
}

/// Rejects requests without a valid bearer token, and tells the handlers who a request acts
/// as (an [`Identity`] extension).
async fn require(State(tokens): State<Arc<Tokens>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path.starts_with("/health/") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| socket_token(&mut request));
    if let Some(identity) = presented.as_deref().and_then(|p| tokens.identify(p)) {
        request.extensions_mut().insert(identity);
        return next.run(request).await;
    }
    let message = if presented.is_some() {
        "the bearer token is not valid"
    } else {
        "this API needs `Authorization: Bearer <token>`"
    };
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
        Some("authorization".into()),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A browser cannot set headers on a WebSocket handshake, so a WebSocket upgrade may carry its
/// token as `?access_token=` instead; it is taken out of the query before the route sees it.
fn socket_token(request: &mut Request) -> Option<String> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    let query = request.uri().query()?;
    let mut token = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("access_token=") {
            Some(value) => {
                token = Some(percent_decode(value));
                false
            }
            None => true,
        })
        .collect();
    let token = token?;
    let path = request.uri().path();
    let rebuilt = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    *request.uri_mut() = rebuilt.parse().ok()?;
    Some(token)
}

/// `%XX` escapes and `+` in a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without exiting early on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_never_show() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret-longer"));
        assert_eq!(format!("{:?}", Token::new("secret")), "Token(***)");
    }

    #[test]
    fn a_worker_token_acts_only_as_its_workers() {
        let tokens = Tokens {
            admin: vec![Token::new("admin-token-0123456")],
            workers: vec![(vec!["a".into()], Token::new("worker-a-token-0123"))],
        };
        let a = tokens.identify("worker-a-token-0123").expect("a worker");
        assert!(a.may_act_as("a") && !a.may_act_as("b"));
        assert_eq!(
            a.check("worker_name", "b").expect_err("refused").status,
            403
        );
        assert_eq!(
            tokens.identify("admin-token-0123456"),
            Some(Identity::Admin)
        );
        assert_eq!(tokens.identify("nope"), None);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c%zz%4"), "a+b c%zz%4");
    }

    #[test]
    fn a_left_out_name_is_the_callers_own_and_a_named_one_must_be_allowed() {
        let body = |v: serde_json::Value| Body::from_value(v).expect("an object");
        let a = Identity::Workers(vec!["a".into()]);
        let named_b = body(serde_json::json!({"worker_name": "b"}));
        let none = body(serde_json::json!({}));
        assert_eq!(a.acting_as(&none, "worker_name", None).expect("a"), "a");
        let refused = a
            .acting_as(&named_b, "worker_name", None)
            .expect_err("not a");
        assert_eq!(
            (refused.status.as_u16(), refused.detail.field.as_deref()),
            (403, Some("worker_name"))
        );
        assert_eq!(
            Identity::Admin
                .acting_as(&named_b, "worker_name", None)
                .expect("b"),
            "b"
        );
        assert_eq!(
            Identity::Open
                .acting_as(&none, "submitted_by", Some("api"))
                .expect("api"),
            "api"
        );
        let required = Identity::Open
            .acting_as(&none, "worker_name", None)
            .expect_err("required");
        assert_eq!(required.status.as_u16(), 422);
        let several = Identity::Workers(vec!["a".into(), "b".into()]);
        assert_eq!(
            several
                .acting_as(&none, "submitted_by", Some("api"))
                .expect_err("which")
                .status
                .as_u16(),
            422
        );
    }
}
