//! JSON request bodies, read by hand so every error names its field.
//!
//! A service that takes the same JSON objects over REST and over RPC checks them with this one
//! parser, so an input is refused the same way, with the same field named, whichever door it
//! came in by. Bodies are read field by field from a JSON object rather than deserialized into a
//! struct (whose errors mostly point at a line and column, and which ignores unknown fields by
//! default): here every error names its field, and unknown fields are refused ([`Body::only`]).
//!
//! Errors are [`ApiError`]s: HTTP answers with them as they are; RPC turns their status into the
//! service error's code and their JSON body into its description.

use std::ops::RangeInclusive;

use axum::http::StatusCode;
use serde_json::{Map, Value};
use vibehq_events::validate_name;

use crate::error::ApiError;

/// Largest request body accepted (413 beyond), so one client cannot make a service buffer an
/// unbounded request.
pub const MAX_BODY: usize = 256 * 1024;

/// A JSON object body, with errors naming what is wrong.
///
/// The map is public so a caller can read a field whose shape is its own (a nested object, say)
/// or take a field out once it has been read.
#[derive(Debug, Default)]
pub struct Body(pub Map<String, Value>);

impl Body {
    /// Parses a body: empty means `{}`; anything but a JSON object is refused (400, `body`),
    /// and so is anything over [`MAX_BODY`] (413, `body`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ApiError> {
        Self::from_value(json(bytes)?)
    }

    /// A body already parsed: anything but a JSON object is refused (400, `body`).
    pub fn from_value(value: Value) -> Result<Self, ApiError> {
        match value {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(ApiError::invalid("body", "the body must be a JSON object")),
        }
    }

    /// Refuses (422) the first field not in `allowed`: a misspelt field is an error, not a
    /// default silently applied.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(unprocessable(
                unknown,
                format!("unknown field {unknown:?}; allowed: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// An optional string: absent or `null` is `None`; anything but a string is 422.
    pub fn string(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(unprocessable(field, format!("{field} must be a string"))),
        }
    }

    /// A required string of 1 to `max` characters, not blank (422 otherwise): it has a
    /// character that is neither white space nor a control character
    /// ([`crate::schema::NOT_BLANK`] in the document).
    pub fn required_string(&self, field: &str, max: usize) -> Result<String, ApiError> {
        let value = self
            .string(field)?
            .ok_or_else(|| unprocessable(field, format!("{field} is required")))?;
        let blank = value.chars().all(|c| c.is_whitespace() || c.is_control());
        if blank || value.chars().count() > max {
            return Err(unprocessable(
                field,
                format!("{field} must be 1-{max} characters"),
            ));
        }
        Ok(value)
    }

    /// A worker or container name: 1-64 letters, digits, `_` or `-` (422 otherwise; see
    /// [`vibehq_events::actor`] for why).
    pub fn name(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.string(field)? {
            Some(name) => {
                validate_name(&name).map_err(|e| unprocessable(field, e.to_string()))?;
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    /// An optional integer within `range`: absent or `null` is `None`; anything else outside
    /// the range, or not an integer, is 422.
    pub fn integer(
        &self,
        field: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            // `3.0` is an integer too (JSON Schema's `integer`, and what some encoders write).
            Some(Value::Number(n)) => match n.as_i64().or_else(|| whole(n.as_f64()?)) {
                Some(i) if range.contains(&i) => Ok(Some(i)),
                _ => Err(unprocessable(
                    field,
                    format!(
                        "{field} must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )),
            },
            Some(_) => Err(unprocessable(field, format!("{field} must be an integer"))),
        }
    }

    /// An optional number within `range`: absent or `null` is `None`; anything else is 422.
    pub fn number(&self, field: &str, range: RangeInclusive<f64>) -> Result<Option<f64>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if range.contains(&x) => Ok(Some(x)),
                _ => Err(unprocessable(
                    field,
                    format!(
                        "{field} must be a number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )),
            },
            Some(_) => Err(unprocessable(field, format!("{field} must be a number"))),
        }
    }

    /// An optional boolean: absent or `null` is `None`; anything but `true` or `false` is 422.
    pub fn boolean(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(unprocessable(
                field,
                format!("{field} must be true or false"),
            )),
        }
    }
}

/// `x` as an integer, if it is a whole number an `i64` holds.
fn whole(x: f64) -> Option<i64> {
    // 2^63 is exactly representable; every whole f64 below it in size fits an i64.
    (x.fract() == 0.0 && x.abs() < 9_223_372_036_854_775_808.0).then_some(x as i64)
}

/// Parses a request body as JSON: empty means `{}`; more than [`MAX_BODY`] bytes is 413 and
/// anything that is not JSON is 400, both naming `body`.
pub fn json(bytes: &[u8]) -> Result<Value, ApiError> {
    json_within(bytes, MAX_BODY)
}

/// [`json`] for a service whose bodies may be larger (the AI's prompts): `max` bytes at most.
pub fn json_within(bytes: &[u8], max: usize) -> Result<Value, ApiError> {
    if bytes.len() > max {
        return Err(too_large_at(max));
    }
    if bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))
}

/// A 422 naming `field`: the body is JSON, but a field in it is missing, unknown or wrong.
pub fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        message,
        Some(field.to_owned()),
    )
}

/// The 413 for a body over [`MAX_BODY`], naming `body`.
pub fn too_large() -> ApiError {
    too_large_at(MAX_BODY)
}

/// The 413 for a body over `max` bytes, naming `body`.
pub fn too_large_at(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than {max} bytes"),
        Some("body".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(error: ApiError) -> (u16, Option<String>) {
        (error.status.as_u16(), error.detail.field)
    }

    #[test]
    fn a_body_that_is_not_an_object_or_too_large_is_refused_as_the_body() {
        let error = Body::from_json(b"[1]").expect_err("refused");
        assert_eq!(field(error), (400, Some("body".into())));
        let error = Body::from_json(&vec![b' '; MAX_BODY + 1]).expect_err("refused");
        assert_eq!(field(error), (413, Some("body".into())));
        assert!(Body::from_json(b"").expect("empty is {}").0.is_empty());
    }
}
