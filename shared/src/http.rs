//! The HTTP edge shared by every function: RFC 9457 problem details, JSON
//! responses, the `RateLimit` fields, and the parts of a
//! `lambda_http::Request` the handlers read.
//!
//! Components below this layer know nothing of HTTP: each returns its own
//! typed result or error, and the `From` conversions here map them to an
//! [`ApiError`] (status code, problem type, headers). Handlers return
//! `Result<Response<Body>, ApiError>` and use `?`; the one conversion
//! [`ApiError::into_response`] turns every failure into an
//! `application/problem+json` body with the right status and headers, so no
//! handler builds an error response by hand.

use std::time::Duration;

use lambda_http::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use lambda_http::http::StatusCode;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use crate::cache::CacheError;
use crate::connection::Fault;
use crate::identity::{
    client_address, identify, ClientId, IdentityError, IdentitySettings, Unidentified,
    API_KEY_HEADER, FORWARDED_FOR_HEADER,
};
use crate::metric::{FieldError, Invalid, MetricError};
use crate::rate_limit::{RateLimitDecision, RateLimitError};
use crate::responses::Problem;
use crate::store::registry::AdmitError;
use crate::store::StoreError;

/// Media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Media type of every successful body.
pub const JSON: &str = "application/json";

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
    /// 400: no API keys are configured and the client's address could not
    /// be determined; the detail names `TRUSTED_PROXY_HOPS`.
    #[error("the client could not be identified: {0}")]
    Unidentified(Unidentified),
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
    /// 422: a metric's tag value or tag combination would pass its cap;
    /// `errors` names the metric (`index` in a batch) and its tag.
    #[error("{detail}")]
    TagLimit {
        /// A one-line summary naming the cap and its setting.
        detail: String,
        /// The refused metric's tag.
        errors: Vec<FieldError>,
    },
    /// 422: an `Idempotency-Key` was reused with a different body.
    #[error("this Idempotency-Key was already used with a different body")]
    IdempotencyKeyReused,
    /// 409: the request holds metric types new to the deployment, and
    /// storing them would take it past `MAX_METRIC_TYPES`; nothing was
    /// stored. Conflict (RFC 9110 §15.5.10): the deployment's state, not the
    /// request's form, refuses it, and the client can resolve it (send
    /// existing types) where a retry as such never helps.
    #[error(
        "this request holds {new_types} metric type(s) new to this deployment, which holds \
         {live} of its limit of MAX_METRIC_TYPES = {max_types}; nothing was stored. Metrics \
         of types already stored are accepted; a type stops counting when its data expires \
         (METRIC_RETENTION_DAYS after its last metric)"
    )]
    MetricTypeLimit {
        /// `MAX_METRIC_TYPES`.
        max_types: u64,
        /// Types the deployment held.
        live: u64,
        /// Types of the request new to the deployment.
        new_types: u64,
    },
    /// 429: the client's budget of new metric types per hour is spent; the
    /// response carries `Retry-After`.
    #[error(
        "this client may create MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR = {budget} new \
         metric types per hour; nothing was stored. Retry after {retry_after_s} s, or send \
         metrics of types already stored"
    )]
    NewMetricTypesLimited {
        /// `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR`.
        budget: u64,
        /// Seconds until the request fits the budget, ≥ 1.
        retry_after_s: u64,
    },
    /// 429: the client's rate limit is exhausted; the response carries
    /// `Retry-After` and the `RateLimit`/`RateLimit-Policy` fields of the
    /// refusing decision.
    #[error("rate limit exceeded; retry after {} s", retry_after_s(.0))]
    TooManyRequests(RateLimitDecision),
    /// 503: a dependency (Redis) failed in a way that retrying can fix
    /// ([`Fault::Transient`]), or the request deadline passed. The detail
    /// never contains credentials.
    #[error("{detail}")]
    Unavailable {
        /// What was unavailable, for the client.
        detail: String,
        /// Seconds the client should wait before retrying, ≥ 1.
        retry_after_s: u64,
    },
    /// 500, or 507 for [`Fault::OutOfMemory`]: Redis refused the request for
    /// a reason that asking again will not fix; the problem's `type` names
    /// the class, and no `Retry-After` is sent. The cause is in the
    /// service's error log. ([`ApiError::redis`] never makes one of
    /// `Fault::Transient`, which would be a 503 with `Retry-After`.)
    ///
    /// 500 rather than 502: the service is not a gateway relaying Redis'
    /// answer, the fault is in its own deployment (its store's access rules,
    /// credentials, scripts or configuration), and API Gateway itself
    /// answers 502 when a function's response is invalid, which this must
    /// not be mistaken for. 507 Insufficient Storage (RFC 4918 §11.5: the
    /// server cannot store what the request needs) for a store out of
    /// memory, without `Retry-After`: memory comes back when its operator
    /// adds some or keys expire, minutes to days, so no delay would be
    /// honest, and clients retrying every second would only add load.
    #[error("{}", store_fault_detail(*.0))]
    Store(Fault),
}

/// The problem detail of a permanent store fault, for the client.
fn store_fault_detail(fault: Fault) -> &'static str {
    match fault {
        Fault::OutOfMemory => {
            "the data store is out of memory and refuses writes until its operator frees or adds memory"
        }
        Fault::PermissionDenied => {
            "the data store denies this service a command or key it needs; its operator must grant it"
        }
        Fault::AuthenticationFailed => {
            "the service cannot authenticate to its data store; its operator must fix the credentials"
        }
        Fault::ScriptError => {
            "a data store script of this service failed; its operator must look into the service's error log"
        }
        Fault::Misconfigured | Fault::Transient => {
            "the data store refuses this service's commands; its operator must fix what the service's error log names"
        }
    }
}

/// `Retry-After` of a refusing decision, ≥ 1 s (for an accepted one, the
/// time until `remaining` next increases).
fn retry_after_s(decision: &RateLimitDecision) -> u64 {
    decision
        .retry_after_s
        .unwrap_or(decision.reset_after_s)
        .max(1)
}

impl ApiError {
    /// A 422 with a single offending field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid::field(field, reason).into()
    }

    /// The answer to a failed Redis call, by its [`Fault`]: a transient
    /// fault is a 503 with `Retry-After: 1` (logged as a warning), any other
    /// a [`ApiError::Store`] problem naming it (logged as an error with its
    /// cause). Redis' error texts carry no credentials, and the URL is never
    /// logged.
    pub fn redis(err: &redis::RedisError) -> Self {
        crate::observability::redis_error();
        let fault = Fault::of(err);
        if fault.is_transient() {
            tracing::warn!(
                error.kind = ?err.kind(),
                error.code = err.code().unwrap_or_default(),
                error = %err,
                "redis unavailable"
            );
            return Self::Unavailable {
                detail: "the data store is temporarily unavailable".into(),
                retry_after_s: 1,
            };
        }
        tracing::error!(
            fault = fault.as_str(),
            error.kind = ?err.kind(),
            error.code = err.code().unwrap_or_default(),
            error = %err,
            "redis refused the request: {}",
            store_fault_detail(fault)
        );
        Self::Store(fault)
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
            Self::MalformedJson(_) | Self::Unidentified(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable { .. } | Self::TagLimit { .. } | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::MetricTypeLimit { .. } => StatusCode::CONFLICT,
            Self::TooManyRequests(_) | Self::NewMetricTypesLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable { .. } | Self::Store(Fault::Transient) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Store(Fault::OutOfMemory) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem_type(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "urn:analytics-api:problem:malformed-json",
            Self::Unauthorized => "urn:analytics-api:problem:unauthorized",
            Self::Unidentified(_) => "urn:analytics-api:problem:client-unidentified",
            Self::NotFound(_) => "urn:analytics-api:problem:not-found",
            Self::MethodNotAllowed(_) => "urn:analytics-api:problem:method-not-allowed",
            Self::PayloadTooLarge(_) => "urn:analytics-api:problem:payload-too-large",
            Self::Unprocessable { .. } => "urn:analytics-api:problem:validation-failed",
            Self::TagLimit { .. } => "urn:analytics-api:problem:tag-limit-exceeded",
            Self::IdempotencyKeyReused => "urn:analytics-api:problem:idempotency-key-reused",
            Self::MetricTypeLimit { .. } => "urn:analytics-api:problem:metric-type-limit",
            Self::NewMetricTypesLimited { .. } => {
                "urn:analytics-api:problem:new-metric-types-rate-limited"
            }
            Self::TooManyRequests(_) => "urn:analytics-api:problem:rate-limited",
            Self::Unavailable { .. } | Self::Store(Fault::Transient) => {
                "urn:analytics-api:problem:service-unavailable"
            }
            Self::Store(Fault::OutOfMemory) => "urn:analytics-api:problem:store-out-of-memory",
            Self::Store(Fault::PermissionDenied) => {
                "urn:analytics-api:problem:store-permission-denied"
            }
            Self::Store(Fault::AuthenticationFailed) => {
                "urn:analytics-api:problem:store-authentication-failed"
            }
            Self::Store(Fault::ScriptError) => "urn:analytics-api:problem:store-script-error",
            Self::Store(Fault::Misconfigured) => "urn:analytics-api:problem:store-misconfigured",
        }
    }

    /// The problem details response (RFC 9457): `type`, `title`, `status`,
    /// `detail`, and `errors` for a 422.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let body = Problem {
            problem_type: self.problem_type().to_string(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                Self::Unprocessable { errors, .. } | Self::TagLimit { errors, .. } => {
                    Some(errors.clone())
                }
                _ => None,
            },
        };
        let mut response = json_response(status, &body);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            Self::TooManyRequests(decision) => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_s(&decision)));
                response.headers_mut().extend(rate_limit_fields(&decision));
            }
            Self::Unavailable { retry_after_s, .. }
            | Self::NewMetricTypesLimited { retry_after_s, .. } => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
            }
            Self::Store(Fault::Transient) => {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::Unprocessable {
            detail: invalid.detail,
            errors: invalid.errors,
        }
    }
}

impl From<MetricError> for ApiError {
    fn from(err: MetricError) -> Self {
        match err {
            MetricError::Malformed(detail) => Self::MalformedJson(detail),
            MetricError::Invalid(invalid) => invalid.into(),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::Unauthorized => Self::Unauthorized,
            IdentityError::Unidentified(reason) => Self::Unidentified(reason),
        }
    }
}

impl From<RateLimitError> for ApiError {
    fn from(err: RateLimitError) -> Self {
        match err {
            RateLimitError::Redis(err) => Self::redis(&err),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Redis(err) => Self::redis(&err),
            StoreError::TooManyBuckets { field, .. } => {
                Invalid::field(field, err.to_string()).into()
            }
        }
    }
}

impl From<AdmitError> for ApiError {
    fn from(err: AdmitError) -> Self {
        match err {
            AdmitError::Limit {
                max_types,
                live,
                new_types,
            } => {
                tracing::warn!(
                    max_metric_types = max_types,
                    live_metric_types = live,
                    new_metric_types = new_types,
                    "new metric types refused: MAX_METRIC_TYPES reached"
                );
                crate::observability::new_metric_types_refused("max_metric_types");
                Self::MetricTypeLimit {
                    max_types,
                    live,
                    new_types,
                }
            }
            AdmitError::Budget {
                budget,
                retry_after_s,
            } => {
                tracing::warn!(
                    budget,
                    "new metric types refused: the client's budget per hour is spent"
                );
                crate::observability::new_metric_types_refused("client_budget");
                match retry_after_s {
                    Some(retry_after_s) => Self::NewMetricTypesLimited {
                        budget,
                        retry_after_s,
                    },
                    None => Self::Unprocessable {
                        detail: format!(
                            "this request holds more metric types new to this deployment than a \
                             client may create in an hour (MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR \
                             = {budget}); nothing was stored"
                        ),
                        errors: vec![FieldError::new(
                            "body",
                            format!("holds more than {budget} new metric types"),
                        )],
                    },
                }
            }
            AdmitError::Redis(err) => Self::redis(&err),
        }
    }
}

impl<E: Into<ApiError>> From<CacheError<E>> for ApiError {
    fn from(err: CacheError<E>) -> Self {
        match err {
            CacheError::Redis(err) => Self::redis(&err),
            CacheError::Compute(err) => err.into(),
        }
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10 §2): the
/// policy, e.g. `"default";q=5;w=60`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10 §3): the current
/// state, e.g. `"default";r=0;t=37`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The `RateLimit-Policy` and `RateLimit` fields of a limiter decision
/// (draft-ietf-httpapi-ratelimit-headers-10), named after its policy, e.g.
/// `RateLimit-Policy: "default";q=5;w=60` and `RateLimit: "default";r=0;t=37`
/// (`"summary"` and `"series"` for the reads). Sent on every response of a
/// limited route that reached the limiter, accepted or not. `Retry-After`
/// is not included: the 429 ([`ApiError::TooManyRequests`]) adds it.
pub fn rate_limit_fields(decision: &RateLimitDecision) -> Vec<(HeaderName, HeaderValue)> {
    [
        (
            &RATELIMIT_POLICY,
            field(
                decision.policy,
                "q",
                decision.limit.into(),
                "w",
                decision.window_s,
            ),
        ),
        (
            &RATELIMIT,
            field(
                decision.policy,
                "r",
                decision.remaining.into(),
                "t",
                decision.reset_after_s,
            ),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name.clone(), value)))
    .collect()
}

/// `"<policy>";<a>=<x>;<b>=<y>`, e.g. `"default";q=5;w=60`: one structured
/// field item with two integer parameters, built without `format!` (it is on
/// every ingest). Plain ASCII, so the conversion cannot fail; a failure
/// would drop the field rather than panic.
fn field(policy: &str, a: &str, x: u64, b: &str, y: u64) -> Option<HeaderValue> {
    let (mut x_digits, mut y_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let text = [
        "\"",
        policy,
        "\";",
        a,
        "=",
        x_digits.format(x),
        ";",
        b,
        "=",
        y_digits.format(y),
    ]
    .concat();
    HeaderValue::try_from(text).ok()
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

/// Who sent `req`: [`identify`] with its `x-api-key` header
/// ([`API_KEY_HEADER`]) and, only when no API keys are configured, the
/// client's address as `TRUSTED_PROXY_HOPS` says ([`client_address`]): the
/// source address AWS put in the request context
/// (`requestContext.http.sourceIp` of an HTTP API or a Function URL, payload
/// v2; `requestContext.identity.sourceIp` of a REST API, v1; an Application
/// Load Balancer's event has none), or an entry of `X-Forwarded-For`
/// appended by a trusted proxy. No other header is read.
///
/// # Errors
/// [`ApiError::Unauthorized`] when API keys are configured and the request's
/// is missing or unknown; [`ApiError::Unidentified`] when none are and the
/// client's address cannot be determined.
pub fn client_identity(req: &Request, settings: &IdentitySettings) -> Result<ClientId, ApiError> {
    let key = req
        .headers()
        .get(API_KEY_HEADER)
        .map(|value| value.as_bytes());
    let address = || {
        let forwarded_for: Vec<&[u8]> = if settings.trusted_proxy_hops == 0 {
            Vec::new()
        } else {
            req.headers()
                .get_all(FORWARDED_FOR_HEADER)
                .iter()
                .map(|value| value.as_bytes())
                .collect()
        };
        client_address(
            source_address(req),
            &forwarded_for,
            settings.trusted_proxy_hops,
        )
    };
    Ok(identify(key, address, &settings.api_key_digests)?)
}

/// The source address AWS's entry point observed, from the request context
/// only, as the event wrote it.
fn source_address(req: &Request) -> Option<&str> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.as_deref(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.source_ip.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod identity_tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::identity::ClientId;
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayProxyRequestContext, ApiGatewayV2httpRequestContext,
    };
    use lambda_http::request::RequestContext;
    use lambda_http::Body;
    use lambda_http::RequestExt;

    fn v2_event(source_ip: Option<&str>, headers: serde_json::Value) -> Request {
        let mut http = serde_json::json!({
            "method": "POST", "path": "/api/metrics", "protocol": "HTTP/1.1", "userAgent": "test"
        });
        if let Some(ip) = source_ip {
            http["sourceIp"] = ip.into();
        }
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "POST /api/metrics",
            "rawPath": "/api/metrics",
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "api",
                "domainName": "api.example.com",
                "domainPrefix": "api",
                "http": http,
                "requestId": "id",
                "routeKey": "POST /api/metrics",
                "stage": "$default",
                "time": "21/Apr/2020:15:08:21 +0000",
                "timeEpoch": 1587481701067u64
            },
            "body": "{}",
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid v2 event")
    }

    fn v1_event(source_ip: &str, headers: serde_json::Value) -> Request {
        let event = serde_json::json!({
            "resource": "/api/metrics",
            "path": "/api/metrics",
            "httpMethod": "POST",
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "resourceId": "r",
                "stage": "prod",
                "requestId": "id",
                "identity": { "sourceIp": source_ip, "userAgent": "test" },
                "resourcePath": "/api/metrics",
                "httpMethod": "POST",
                "apiId": "api"
            },
            "body": "{}",
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid v1 event")
    }

    fn digest_of(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    /// No API keys, `TRUSTED_PROXY_HOPS=hops`.
    fn by_address(hops: u8) -> IdentitySettings {
        IdentitySettings {
            api_key_digests: Vec::new(),
            trusted_proxy_hops: hops,
        }
    }

    fn keyed(digests: &[[u8; 32]]) -> IdentitySettings {
        IdentitySettings {
            api_key_digests: digests.to_vec(),
            trusted_proxy_hops: 0,
        }
    }

    fn unidentified(result: Result<ClientId, ApiError>) -> Unidentified {
        match result {
            Err(ApiError::Unidentified(reason)) => reason,
            other => panic!("expected an unidentified client, got {other:?}"),
        }
    }

    /// An Application Load Balancer's event (multi-value headers off):
    /// no source address anywhere but `X-Forwarded-For`.
    fn alb_event(xff: Option<&str>) -> Request {
        let mut headers = serde_json::json!({
            "host": "lb-123.eu-west-1.elb.amazonaws.com",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https"
        });
        if let Some(xff) = xff {
            headers["x-forwarded-for"] = xff.into();
        }
        let event = serde_json::json!({
            "requestContext": {"elb": {"targetGroupArn":
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/6d0ecf831eec9f09"}},
            "httpMethod": "POST",
            "path": "/api/metrics",
            "queryStringParameters": {},
            "headers": headers,
            "isBase64Encoded": false,
            "body": "{}"
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid ALB event")
    }

    #[test]
    fn payload_v2_uses_the_source_ip_of_the_request_context() {
        let req = v2_event(Some("203.0.113.7"), serde_json::json!({}));
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV2(_))
        ));
        assert_eq!(
            client_identity(&req, &by_address(0)).unwrap().as_str(),
            "ip:203.0.113.7"
        );
    }

    #[test]
    fn payload_v1_uses_the_identity_source_ip() {
        let req = v1_event("198.51.100.23", serde_json::json!({}));
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV1(_))
        ));
        assert_eq!(
            client_identity(&req, &by_address(0)).unwrap().as_str(),
            "ip:198.51.100.23"
        );
    }

    #[test]
    fn forwarding_headers_are_ignored_without_trusted_proxies() {
        let spoofing = serde_json::json!({
            "x-forwarded-for": "192.0.2.1, 192.0.2.2",
            "x-real-ip": "192.0.2.3",
            "forwarded": "for=192.0.2.4",
        });
        let v2 = v2_event(Some("203.0.113.7"), spoofing.clone());
        assert_eq!(
            client_identity(&v2, &by_address(0)).unwrap().as_str(),
            "ip:203.0.113.7"
        );
        let v1 = v1_event("198.51.100.23", spoofing.clone());
        assert_eq!(
            client_identity(&v1, &by_address(0)).unwrap().as_str(),
            "ip:198.51.100.23"
        );
        // Even without a context, the headers are not a fallback.
        let bare = lambda_http::http::Request::builder()
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-real-ip", "192.0.2.3")
            .body(Body::Empty)
            .unwrap();
        assert_eq!(
            unidentified(client_identity(&bare, &by_address(0))),
            Unidentified::NoSourceAddress
        );
    }

    #[test]
    fn a_request_without_a_usable_source_address_is_refused_with_a_400_naming_the_setting() {
        let bare = lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap();
        let no_ip = v2_event(None, serde_json::json!({}));
        let garbage = v2_event(Some("not an address"), serde_json::json!({}));
        for (req, reason) in [
            (&bare, Unidentified::NoSourceAddress),
            (&no_ip, Unidentified::NoSourceAddress),
            (&garbage, Unidentified::InvalidSourceAddress),
        ] {
            let err = client_identity(req, &by_address(0)).unwrap_err();
            assert!(
                matches!(err, ApiError::Unidentified(r) if r == reason),
                "{err:?}"
            );
            let response = err.into_response();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let body: serde_json::Value = serde_json::from_slice(body_bytes_of(&response)).unwrap();
            assert_eq!(
                body["type"],
                "urn:analytics-api:problem:client-unidentified"
            );
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("TRUSTED_PROXY_HOPS"),
                "{body}"
            );
        }
    }

    fn body_bytes_of(response: &Response<Body>) -> &[u8] {
        match response.body() {
            Body::Text(text) => text.as_bytes(),
            Body::Binary(bytes) => bytes,
            _ => &[],
        }
    }

    #[test]
    fn behind_an_alb_the_client_is_the_entry_it_appended() {
        let req = alb_event(Some("192.0.2.250, 203.0.113.7"));
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::Alb(_))
        ));
        assert_eq!(
            client_identity(&req, &by_address(1)).unwrap().as_str(),
            "ip:203.0.113.7",
            "the right-most entry, never the left-most the client wrote"
        );
        // With client port preservation and IPv6.
        let req = alb_event(Some("[2001:db8:7:8::1]:50321"));
        assert_eq!(
            client_identity(&req, &by_address(1)).unwrap().as_str(),
            "ip:2001:db8:7:8::/64"
        );
        // TRUSTED_PROXY_HOPS=0 behind an ALB: refused, not pooled.
        assert_eq!(
            unidentified(client_identity(
                &alb_event(Some("203.0.113.7")),
                &by_address(0)
            )),
            Unidentified::NoSourceAddress
        );
        assert_eq!(
            unidentified(client_identity(&alb_event(None), &by_address(1))),
            Unidentified::TooFewForwarded { found: 0, hops: 1 }
        );
        assert_eq!(
            unidentified(client_identity(
                &alb_event(Some("203.0.113.7")),
                &by_address(2)
            )),
            Unidentified::TooFewForwarded { found: 1, hops: 2 }
        );
        assert_eq!(
            unidentified(client_identity(
                &alb_event(Some("192.0.2.1, garbage")),
                &by_address(1)
            )),
            Unidentified::InvalidForwarded { hops: 1 }
        );
    }

    #[test]
    fn a_known_api_key_identifies_a_request_without_any_address() {
        let digests = [digest_of("alpha-key")];
        let req = alb_event(None);
        let mut with_key = req;
        with_key
            .headers_mut()
            .insert(API_KEY_HEADER, HeaderValue::from_static("alpha-key"));
        assert_eq!(
            client_identity(&with_key, &keyed(&digests)).unwrap(),
            ClientId::api_key(&digests[0])
        );
    }

    #[test]
    fn contexts_attached_with_the_extension_trait_are_read() {
        let mut v2 = ApiGatewayV2httpRequestContext::default();
        v2.http.source_ip = Some("203.0.113.9".into());
        let req = lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap()
            .with_request_context(RequestContext::ApiGatewayV2(v2));
        assert_eq!(
            client_identity(&req, &by_address(0)).unwrap().as_str(),
            "ip:203.0.113.9"
        );

        let mut v1 = ApiGatewayProxyRequestContext::default();
        v1.identity.source_ip = Some("2001:db8:1:2:3:4:5:6".into());
        let req = lambda_http::http::Request::builder()
            .body(Body::Empty)
            .unwrap()
            .with_request_context(RequestContext::ApiGatewayV1(v1));
        assert_eq!(
            client_identity(&req, &by_address(0)).unwrap().as_str(),
            "ip:2001:db8:1:2::/64"
        );
    }

    #[test]
    fn configured_api_keys_are_required() {
        let digests = [digest_of("alpha-key"), digest_of("beta-key")];
        let with_key = |key: Option<&str>| {
            let headers = match key {
                Some(k) => serde_json::json!({ "x-api-key": k }),
                None => serde_json::json!({}),
            };
            client_identity(&v2_event(Some("203.0.113.7"), headers), &keyed(&digests))
        };
        assert!(matches!(with_key(None), Err(ApiError::Unauthorized)));
        assert!(matches!(with_key(Some("")), Err(ApiError::Unauthorized)));
        assert!(matches!(
            with_key(Some("wrong-key")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            with_key(Some("alpha-key ")),
            Err(ApiError::Unauthorized)
        ));

        let alpha = with_key(Some("alpha-key")).unwrap();
        let beta = with_key(Some("beta-key")).unwrap();
        assert_eq!(alpha.as_str(), format!("key:{}", hex::encode(digests[0])));
        assert_eq!(beta, ClientId::api_key(&digests[1]));
        assert_ne!(alpha, beta);
        assert!(
            !alpha.as_str().contains("alpha"),
            "the key itself never appears"
        );
    }

    #[test]
    fn with_api_keys_the_identity_does_not_depend_on_the_address() {
        let digests = [digest_of("alpha-key")];
        let from = |ip: &str| {
            let headers = serde_json::json!({ "x-api-key": "alpha-key", "x-forwarded-for": ip });
            client_identity(&v2_event(Some(ip), headers), &keyed(&digests)).unwrap()
        };
        assert_eq!(from("203.0.113.7"), from("198.51.100.1"));
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use lambda_http::http::header::{CONTENT_TYPE, RETRY_AFTER};

    use super::*;
    use crate::rate_limit::tests::decision;

    #[test]
    fn headers_follow_the_draft_syntax() {
        let d = decision((0, 0, 36_200_000, 36_200_000));
        let headers = rate_limit_fields(&d);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].0.as_str(), "ratelimit-policy");
        assert_eq!(headers[0].1, "\"default\";q=5;w=60");
        assert_eq!(headers[1].0.as_str(), "ratelimit");
        assert_eq!(headers[1].1, "\"default\";r=0;t=37");
    }

    #[test]
    fn a_rejection_becomes_a_429_problem_with_retry_after_and_fields() {
        let response = decision((0, 0, 1_500_000, 1_500_000));
        let response = ApiError::TooManyRequests(response).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers[RETRY_AFTER], "2");
        assert_eq!(headers["ratelimit"], "\"default\";r=0;t=2");
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=5;w=60");
        assert_eq!(headers[CONTENT_TYPE], PROBLEM_JSON);
    }
}

#[cfg(test)]
mod store_fault_tests {
    use lambda_http::http::header::{CONTENT_TYPE, RETRY_AFTER};

    use super::*;

    fn reply_error(wire: &str) -> redis::RedisError {
        redis::parse_redis_value(format!("{wire}\r\n").as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    fn problem(response: &Response<Body>) -> serde_json::Value {
        match response.body() {
            Body::Text(text) => serde_json::from_str(text).unwrap(),
            Body::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
            _ => serde_json::Value::Null,
        }
    }

    #[test]
    fn a_transient_fault_is_a_503_with_retry_after() {
        let response = ApiError::redis(&reply_error("-LOADING Redis is loading")).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(
            problem(&response)["type"],
            "urn:analytics-api:problem:service-unavailable"
        );
    }

    #[test]
    fn a_permanent_fault_is_a_500_naming_it_without_retry_after() {
        let cases = [
            (
                "-NOPERM this user has no permissions to run the 'evalsha' command",
                "store-permission-denied",
            ),
            (
                "-WRONGPASS invalid username-password pair",
                "store-authentication-failed",
            ),
            (
                "-ERR user_script:1: boom script: 82903a04, on @user_script:1.",
                "store-script-error",
            ),
            ("-ERR unknown command 'EVALSHA'", "store-misconfigured"),
        ];
        for (wire, name) in cases {
            let response = ApiError::redis(&reply_error(wire)).into_response();
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{wire}"
            );
            assert!(!response.headers().contains_key(RETRY_AFTER), "{wire}");
            assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
            let body = problem(&response);
            assert_eq!(body["type"], format!("urn:analytics-api:problem:{name}"));
            assert_eq!(body["status"], 500);
            assert!(
                !body["detail"].as_str().unwrap().contains("NOPERM"),
                "{body}"
            );
        }
    }

    #[test]
    fn out_of_memory_is_a_507_without_retry_after() {
        let oom = reply_error("-OOM command not allowed when used memory > 'maxmemory'.");
        let response = ApiError::redis(&oom).into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(!response.headers().contains_key(RETRY_AFTER));
        let body = problem(&response);
        assert_eq!(
            body["type"],
            "urn:analytics-api:problem:store-out-of-memory"
        );
        assert_eq!(body["title"], "Insufficient Storage");
    }
}
