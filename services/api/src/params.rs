//! Query parameters, read so a repeated one is refused (naming it) rather than one of its
//! values silently winning.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;

use crate::error::ApiError;

/// A request's query parameters, each given at most once.
#[derive(Debug, Clone, Default)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::invalid("query", e.body_text()))?;
        read(pairs).map(Params)
    }
}

fn read(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if params.contains_key(&name) {
            return Err(ApiError::invalid(
                name.clone(),
                format!("{name} is given more than once; give it once"),
            ));
        }
        params.insert(name, value);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_parameter_is_refused_by_name() {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let once = read(pairs(&[("worker_name", "a"), ("limit", "5")])).expect("once each");
        assert_eq!(once["worker_name"], "a");
        let twice = read(pairs(&[("worker_name", "a"), ("worker_name", "b")]));
        assert_eq!(
            twice.err().and_then(|e| e.detail.field),
            Some("worker_name".to_owned())
        );
    }
}
