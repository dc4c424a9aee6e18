//! `POST /api/metrics`: identify the client, rate-limit, validate, then store
//! atomically in the time buckets — once, even when the client retries.

use chrono::Utc;
use lambda_http::http::header::HeaderValue;
use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use sha2::{Digest, Sha256};

use super::{before, deadline, require_method};
use crate::http::{
    body_bytes, client_identity, rate_limit_fields, request_id, respond, ApiError, JSON,
};
use crate::identity::ClientId;
use crate::metric::{parse_metrics, FieldError, MetricsBody};
use crate::responses::Created;
use crate::state::AppState;
use crate::store::{Idempotency, IngestError, IngestOutcome};
use crate::tags::TagKey;

/// The request header naming a retry-safe request (IETF draft "The
/// Idempotency-Key HTTP Header Field").
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header marking a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Longest accepted `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Stores one metric (a JSON object) or a batch (a JSON array, all or
/// nothing) and answers 201 `{"request_id": …, "stored": n, "metric": {…}}`
/// (`metric` only for a single object) once it is stored.
///
/// The rate limiter runs first, before the body is even read, so every POST
/// counts — valid or not, single or batch (a batch is one request), replay or
/// not. Every response that passed or was refused by the limiter carries the
/// `RateLimit-Policy` and `RateLimit` fields.
///
/// With an `Idempotency-Key` header, a retry with the same metrics within
/// `IDEMPOTENCY_TTL_SECONDS` stores nothing and gets the original 201 body
/// again with `Idempotent-Replayed: true`; the same key with different
/// metrics is a 422. The key check and the write are one atomic script, so
/// two concurrent requests with one key store once. Keys are scoped to the
/// client and hashed before they reach Redis. Only successful requests are
/// remembered: a rejected request can be corrected and retried.
///
/// Metric types new to the deployment are admitted by the type registry
/// first ([`crate::store::registry`]): a request that would take the
/// deployment past `MAX_METRIC_TYPES` is refused whole (409), as is one
/// past the client's `MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR` (429);
/// nothing of it is written. Types this instance registered recently cost
/// no round trip.
///
/// Errors: 400 malformed JSON, or a client that cannot be identified (no
/// usable address where `TRUSTED_PROXY_HOPS` says; before the limiter), 401
/// missing/unknown API key (when keys are configured), 409 too many metric
/// types, 413 body over `MAX_BODY_BYTES`, 422 invalid metrics (every
/// offending field listed, bad tags among them), a tag beyond its cap
/// (`MAX_TAG_VALUES_PER_KEY`, `MAX_TAG_COMBINATIONS`) or a reused key, 429 + `Retry-After` over the rate
/// limit or the client's budget of new types, 503 + `Retry-After` when Redis
/// is unavailable (nothing acknowledged), 507 (`store-out-of-memory`, no
/// `Retry-After`) when Redis is out of memory and refuses the write, 500 (a
/// `store-…` problem, no `Retry-After`) when Redis refuses the service for
/// another reason retrying will not fix.
pub async fn ingest_metric(state: &AppState, req: Request) -> Response<Body> {
    let deadline = deadline(state);
    let admitted = before(deadline, state, async {
        require_method(&req, Method::POST)?;
        let client = client_identity(&req, &state.config.identity)?;
        let decision = state.limiter.check(&state.redis, &client).await?;
        if !decision.allowed {
            crate::observability::rate_limited();
            return Err(ApiError::TooManyRequests(decision));
        }
        Ok((client, decision))
    })
    .await;
    let (client, decision) = match admitted {
        Ok(admitted) => admitted,
        Err(err) => return err.into_response(),
    };
    // Whatever happens after the limiter let the request through (even the
    // deadline passing), the response reports the limiter's state.
    let mut response = respond(before(deadline, state, store(state, &req, &client)).await);
    response.headers_mut().extend(rate_limit_fields(&decision));
    response
}

async fn store(
    state: &AppState,
    req: &Request,
    client: &ClientId,
) -> Result<Response<Body>, ApiError> {
    let body = body_bytes(req);
    if body.len() > state.config.request.max_body_bytes {
        return Err(ApiError::PayloadTooLarge(
            state.config.request.max_body_bytes,
        ));
    }
    let idempotency_key = idempotency_key(req.headers())?;
    let parsed = parse_metrics(body, Utc::now(), &state.config.metrics)?;
    let created = Created {
        request_id: request_id(req),
        stored: parsed.metrics.len() as u64,
        metric: (!parsed.is_batch).then(|| parsed.metrics[0].clone()),
    };
    // Cannot fail (strings, integers and finite floats only); should it
    // ever, the body is an empty object rather than a panic.
    let created = serde_json::to_string(&created).unwrap_or_else(|_| "{}".into());
    let client = short_digest(client.as_str());
    // Refused here when the request's new metric types exceed the
    // deployment's cap or the client's budget: before anything is written.
    let admission = state
        .registry
        .admit(&state.redis, &client, &parsed.metrics)
        .await?;
    let record = idempotency_key.map(|key| Idempotency {
        client: client.clone(),
        key_digest: hex::encode(Sha256::digest(key)),
        fingerprint: parsed.fingerprint(),
        response_body: &created,
        ttl_s: state.config.request.idempotency_ttl.as_secs(),
    });
    let result = state
        .store
        .ingest(&state.redis, &parsed.metrics, record.as_ref())
        .await;
    match &result {
        Ok(_) => match state.registry.confirm(&state.redis, &admission).await {
            Ok(()) => {
                if matches!(result, Ok(IngestOutcome::Stored)) {
                    crate::observability::new_metric_types(admission.new_types().count());
                }
            }
            Err(err) => tracing::warn!(
                error = %err,
                "metrics stored, but their new metric types were not confirmed: \
                 they count until their reservation ends, and again from their next write"
            ),
        },
        Err(
            IngestError::Overflow { .. } | IngestError::KeyReused | IngestError::TagLimit { .. },
        ) => {
            // Refused by the storage: its reservations go too (best effort;
            // they end on their own otherwise).
            if let Err(err) = state
                .registry
                .release(&state.redis, &client, &admission)
                .await
            {
                tracing::warn!(error = %err, "reservations of a refused request not released");
            }
        }
        Err(IngestError::Redis(_)) => {}
    }
    let outcome = result.map_err(|err| match err {
        IngestError::Overflow { metric_index } => {
            let mut error = FieldError::new(
                "value",
                "the sum of its time bucket would overflow a 64-bit float",
            );
            error.index = parsed.is_batch.then_some(metric_index);
            ApiError::Unprocessable {
                detail: "a metric would overflow its time bucket; nothing was stored".into(),
                errors: vec![error],
            }
        }
        IngestError::KeyReused => ApiError::IdempotencyKeyReused,
        IngestError::TagLimit {
            metric_index,
            key,
            limit,
        } => tag_limit(&parsed, metric_index, key.as_ref(), limit),
        IngestError::Redis(err) => ApiError::redis(&err),
    })?;
    let mut response = match outcome {
        IngestOutcome::Stored => {
            crate::observability::accepted_metrics(parsed.metrics.len());
            Response::new(Body::from(created))
        }
        IngestOutcome::Replayed(original) => {
            let mut response = Response::new(Body::from(original));
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            response
        }
    };
    *response.status_mut() = StatusCode::CREATED;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(JSON));
    Ok(response)
}

/// The 422 of a metric refused by a cap on tags: its detail names the cap,
/// its setting and the metric type; `errors` the metric's tag.
fn tag_limit(
    parsed: &MetricsBody,
    metric_index: usize,
    key: Option<&TagKey>,
    limit: u32,
) -> ApiError {
    let Some(metric) = parsed.metrics.get(metric_index) else {
        return ApiError::invalid("tags", "a cap on tags was reached");
    };
    let metric_type = &metric.metric_type;
    let (field, reason) = match key.and_then(|k| metric.tags.get(k).map(|v| (k, v))) {
        Some((key, value)) => (
            format!("tags.{key}"),
            format!(
                "{value:?} would be a new value of {key} for {metric_type}, which already has \
                 {limit} (MAX_TAG_VALUES_PER_KEY)"
            ),
        ),
        None => (
            "tags".to_string(),
            format!(
                "{{{}}} would be a new tag combination for {metric_type}, which already has \
                 {limit} (MAX_TAG_COMBINATIONS)",
                metric.tags.canonical()
            ),
        ),
    };
    let mut error = FieldError::new(field, reason.clone());
    error.index = parsed.is_batch.then_some(metric_index);
    ApiError::TagLimit {
        detail: format!("{reason}; nothing was stored"),
        errors: vec![error],
    }
}

/// The `Idempotency-Key`, if any. The draft makes it a structured-field
/// string (`"…"`); a bare token is accepted too.
///
/// # Errors
/// 422 when the header is repeated, empty, longer than
/// [`MAX_IDEMPOTENCY_KEY_LEN`] bytes or not visible ASCII.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |reason: &str| ApiError::invalid("Idempotency-Key", reason);
    if values.next().is_some() {
        return Err(invalid("may appear only once"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII"))?
        .trim();
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(invalid("must be 1 to 255 characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(invalid("must be visible ASCII"));
    }
    Ok(Some(key))
}

/// 32 hex characters of SHA-256: client identities in idempotency keys.
fn short_digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}
