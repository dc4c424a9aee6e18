//! The HTTP edge shared by every function: RFC 9457 problem details, JSON
//! responses and the parts of a `lambda_http::Request` the handlers read.
//!
//! Handlers return `Result<Response<Body>, ApiError>` and use `?`; the one
//! conversion [`ApiError::into_response`] turns every failure into an
//! `application/problem+json` body with the right status and headers, so no
//! handler builds an error response by hand.

use std::time::Duration;

use lambda_http::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

/// Media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Media type of every successful body.
pub const JSON: &str = "application/json";

/// One offending field of a rejected request, listed in a 422 body under
/// `errors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// Position of the item in a batch body (absent for a single object or a
    /// query parameter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The field or query parameter, e.g. `value` or `period`.
    pub field: String,
    /// Why it was refused, phrased for the client.
    pub reason: String,
}

impl FieldError {
    /// A field error outside any batch.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            index: None,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Everything a request can fail with. Each variant maps to one status code
/// and one problem `type`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON (or not UTF-8).
    #[error("{0}")]
    MalformedJson(String),
    /// 401: an API key is required and the request's is missing or unknown.
    #[error("a valid x-api-key header is required")]
    Unauthorized,
    /// 404: no such route (only reachable when a function is invoked on a path it does not serve).
    #[error("no route for {0}")]
    NotFound(String),
    /// 405: the route exists with another method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// 413: the body exceeds `MAX_BODY_BYTES` (the field carries the limit, bytes).
    #[error("the body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 422: well-formed but invalid input; `errors` lists every offending field.
    #[error("{detail}")]
    Unprocessable {
        /// A one-line summary.
        detail: String,
        /// Every offending field with its reason.
        errors: Vec<FieldError>,
    },
    /// 422: an `Idempotency-Key` was reused with a different body.
    #[error("this Idempotency-Key was already used with a different body")]
    IdempotencyKeyReused,
    /// 429: the client's rate limit is exhausted; headers carry `Retry-After`
    /// and the `RateLimit`/`RateLimit-Policy` fields.
    #[error("rate limit exceeded; retry after {retry_after_s} s")]
    TooManyRequests {
        /// Seconds until the next request can succeed, ≥ 1.
        retry_after_s: u64,
        /// Header fields describing the limiter state.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// 503: a dependency (Redis) failed or the request deadline passed.
    /// The detail never contains credentials.
    #[error("{detail}")]
    Unavailable {
        /// What was unavailable, for the client.
        detail: String,
        /// Seconds the client should wait before retrying, ≥ 1.
        retry_after_s: u64,
    },
}

impl ApiError {
    /// A 422 with a single offending field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let error = FieldError::new(field, reason);
        Self::Unprocessable {
            detail: format!("{}: {}", error.field, error.reason),
            errors: vec![error],
        }
    }

    /// A 503 caused by Redis: logged here (without any credential) and
    /// answered with `Retry-After: 1`.
    pub fn redis(err: &redis::RedisError) -> Self {
        tracing::warn!(error.kind = ?err.kind(), error = %err, "redis unavailable");
        crate::observability::redis_error();
        Self::Unavailable {
            detail: "the data store is temporarily unavailable".into(),
            retry_after_s: 1,
        }
    }

    /// A 503 for a request that ran out of `REQUEST_DEADLINE_MS`.
    pub fn deadline(deadline: Duration) -> Self {
        tracing::warn!(
            deadline_ms = deadline.as_millis() as u64,
            "request deadline exceeded"
        );
        Self::Unavailable {
            detail: "the request could not be completed in time".into(),
            retry_after_s: 1,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable { .. } | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn problem_type(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "urn:analytics-api:problem:malformed-json",
            Self::Unauthorized => "urn:analytics-api:problem:unauthorized",
            Self::NotFound(_) => "urn:analytics-api:problem:not-found",
            Self::MethodNotAllowed(_) => "urn:analytics-api:problem:method-not-allowed",
            Self::PayloadTooLarge(_) => "urn:analytics-api:problem:payload-too-large",
            Self::Unprocessable { .. } => "urn:analytics-api:problem:validation-failed",
            Self::IdempotencyKeyReused => "urn:analytics-api:problem:idempotency-key-reused",
            Self::TooManyRequests { .. } => "urn:analytics-api:problem:rate-limited",
            Self::Unavailable { .. } => "urn:analytics-api:problem:service-unavailable",
        }
    }

    /// The problem details response (RFC 9457): `type`, `title`, `status`,
    /// `detail`, and `errors` for a 422.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut body = serde_json::json!({
            "type": self.problem_type(),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        if let Self::Unprocessable { errors, .. } = &self {
            body["errors"] = serde_json::to_value(errors).unwrap_or_default();
        }
        let mut response = json_response(status, &body);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            Self::TooManyRequests {
                retry_after_s,
                headers,
            } => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
                for (name, value) in headers {
                    response.headers_mut().insert(name, value);
                }
            }
            Self::Unavailable { retry_after_s, .. } => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        Self::redis(&err)
    }
}

/// A JSON response with `status`. Serialisation of the service's own types
/// cannot fail (no maps with non-string keys, no non-finite floats reach it);
/// should it ever, the body is an empty object rather than a panic.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// Turns a handler's result into the response sent, whatever happened.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(ApiError::into_response)
}

/// The raw bytes of the request body. API Gateway delivers binary payloads
/// base64-encoded; `lambda_http` has already decoded them into
/// [`Body::Binary`].
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// The Lambda request id of this invocation, or a fresh UUID when the request
/// did not come through the Lambda runtime (in-process tests).
pub fn request_id(req: &Request) -> String {
    use lambda_http::RequestExt;
    req.lambda_context_ref()
        .map(|ctx| ctx.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}
