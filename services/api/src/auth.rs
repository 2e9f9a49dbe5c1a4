//! Bearer-token access to the HTTP API.
//!
//! With tokens configured, every request but the health endpoints (`GET /health` and
//! `/health/…`, for load balancers' probes) must
//! carry `Authorization: Bearer <token>` matching one of them. Tokens are compared in constant
//! time and never logged ([`Token`]'s `Debug` is redacted). Listening beyond loopback without
//! tokens is refused at start ([`crate::Error::Unprotected`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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

/// Rejects requests without a valid bearer token.
pub(crate) async fn require(
    State(tokens): State<Arc<Vec<Token>>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/health" || path.starts_with("/health/") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let allowed = presented.is_some_and(|p| {
        // Check every token so the time taken does not depend on which one matched.
        tokens.iter().fold(false, |ok, t| {
            ok | constant_time_eq(p.as_bytes(), t.0.as_bytes())
        })
    });
    if allowed {
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
}
