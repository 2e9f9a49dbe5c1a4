//! The JSON error every endpoint answers with.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error response: `{"error": {"code": …, "message": …, "field": …}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, and with which input.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`invalid_field`, `not_found`, …).
    pub code: &'static str,
    /// A sentence for humans.
    pub message: String,
    /// The request field (query parameter, path segment or body field) at fault, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `outcome_unknown`: the task the write was about. Sending the same request again
    /// is safe; a submission sent again with this `task_id` is stored at most once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// For `outcome_unknown` of a bulk submission: every task's id, in input order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ids: Option<Vec<String>>,
    /// For a model call that failed: its id, whose attempts `vibehq audit ai-call` shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error that renders as [`ErrorBody`] with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: errors travel in every `Result` of the request path, which should stay small.
    pub detail: Box<ErrorDetail>,
}

impl ApiError {
    /// 400: a request field has a bad value.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            message,
            Some(field.into()),
        )
    }

    /// 404: nothing has this id.
    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            message,
            Some(field.into()),
        )
    }

    /// 503/500: the server could not do its part.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message,
            None,
        )
    }

    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        Self {
            status,
            detail: Box::new(ErrorDetail {
                code,
                message: message.into(),
                field,
                task_id: None,
                task_ids: None,
                request_id: None,
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: *self.detail,
            }),
        )
            .into_response()
    }
}

impl From<vibehq_projector::Error> for ApiError {
    fn from(error: vibehq_projector::Error) -> Self {
        tracing::error!(%error, "projection query failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the projection could not be read",
            None,
        )
    }
}

/// A documented error answer: [`ErrorBody`] as JSON, with `description`.
pub fn error_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// Adds to every operation of `doc` the errors any operation of its kind may answer, where its
/// own declaration leaves them out: a body that is not a JSON object (400), too large (413) or
/// with a wrong field (422); a query parameter that is unknown or wrong (400).
pub fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::ParameterIn;

    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let has_query = operation
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
            let mut errors = Vec::new();
            if operation.request_body.is_some() {
                errors.extend([
                    (
                        "400",
                        "The body is not JSON, or not a JSON object; `field` is `body`",
                    ),
                    ("413", "The body is larger than 256 KiB"),
                    (
                        "422",
                        "A body field is missing, unknown or wrong; `field` names it",
                    ),
                ]);
            }
            if has_query {
                errors.push((
                    "400",
                    "A query parameter is unknown or wrong; `field` names it",
                ));
            }
            for (status, description) in errors {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(error_response(description)));
            }
        }
    }
}
