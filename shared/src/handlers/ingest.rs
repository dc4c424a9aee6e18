//! `POST /api/metrics`: identify the client, rate-limit, validate, then store
//! atomically in the time buckets — once, even when the client retries.

use chrono::Utc;
use lambda_http::http::header::HeaderValue;
use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use sha2::{Digest, Sha256};

use super::{before, deadline, require_method};
use crate::connection::Fault;
use crate::http::{
    body_bytes, client_identity, rate_limit_fields, request_id, respond, ApiError, JSON,
};
use crate::identity::ClientId;
use crate::metric::{parse_metrics, FieldError, MetricsBody};
use crate::responses::Created;
use crate::state::AppState;
use crate::store::registry::Admission;
use crate::store::{Idempotency, IngestError, IngestOutcome, Limited};
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
/// Every POST counts against the rate limiter — valid or not, single or
/// batch (a batch is one request), replay or not — and a refused one (429)
/// stores nothing, whatever its body. Every response that passed or was
/// refused by the limiter carries the `RateLimit-Policy` and `RateLimit`
/// fields. On a single node, a valid request whose metric types and tags
/// the instance knows is checked and stored by one script call
/// ([`crate::store::Limited`]: one round trip); otherwise (cluster mode, a
/// new type or tag, an invalid body) the limiter's call comes first and
/// storing follows only if it accepted the request.
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
    let identified = before(deadline, state, async {
        require_method(&req, Method::POST)?;
        client_identity(&req, &state.config.identity)
    })
    .await;
    let client = match identified {
        Ok(client) => client,
        Err(err) => return err.into_response(),
    };
    let body = read(state, &req, &client);
    if let Ok(body) = &body {
        if let Some(response) = in_one_call(state, deadline, &client, body).await {
            return response;
        }
    }
    // The limiter's call first, then whatever storing needs: the type
    // registry's and the tag caps' claims, then the storage call.
    let checked = before(deadline, state, async {
        Ok(state.limiter.check(&state.redis, &client).await?)
    })
    .await;
    let decision = match checked {
        Ok(decision) if decision.allowed => decision,
        Ok(decision) => {
            crate::observability::rate_limited();
            return ApiError::TooManyRequests(decision).into_response();
        }
        Err(err) => return err.into_response(),
    };
    // Whatever happens after the limiter let the request through (even the
    // deadline passing), the response reports the limiter's state.
    let stored = async {
        let body = body?;
        let admission = state
            .registry
            .admit(&state.redis, &body.client, &body.parsed.metrics)
            .await?;
        let result = state
            .store
            .ingest(&state.redis, &body.parsed.metrics, body.record().as_ref())
            .await;
        finish(state, &body, &admission, result).await
    };
    let mut response = respond(before(deadline, state, stored).await);
    response.headers_mut().extend(rate_limit_fields(&decision));
    response
}

/// A request's body, read and validated: what storing it needs.
struct Read<'r> {
    parsed: MetricsBody,
    /// The 201 body.
    created: String,
    idempotency_key: Option<&'r str>,
    /// 32 hex characters of the client's identity: its type-registry budget
    /// and idempotency records.
    client: String,
    idempotency_ttl_s: u64,
}

impl Read<'_> {
    /// The idempotency record of the request, if it has a key.
    fn record(&self) -> Option<Idempotency<'_>> {
        self.idempotency_key.map(|key| Idempotency {
            client: self.client.clone(),
            key_digest: hex::encode(Sha256::digest(key)),
            fingerprint: self.parsed.fingerprint(),
            response_body: &self.created,
            ttl_s: self.idempotency_ttl_s,
        })
    }
}

/// Reads and validates the body and the `Idempotency-Key`.
///
/// # Errors
/// 413 over `MAX_BODY_BYTES`; 422 for a bad key; 400/422 for the metrics.
fn read<'r>(state: &AppState, req: &'r Request, client: &ClientId) -> Result<Read<'r>, ApiError> {
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
    Ok(Read {
        parsed,
        created,
        idempotency_key,
        client: short_digest(client.as_str()),
        idempotency_ttl_s: state.config.request.idempotency_ttl.as_secs(),
    })
}

/// On a single node, a valid request whose metric types and tags this
/// instance knows is checked by the limiter and stored in one script call
/// ([`crate::store::Limited`]): `None` when it is not such a request, or
/// when Redis is out of memory and refused the call whole (the two calls
/// then give the documented answer).
async fn in_one_call(
    state: &AppState,
    deadline: tokio::time::Instant,
    client: &ClientId,
    body: &Read<'_>,
) -> Option<Response<Body>> {
    let metrics = &body.parsed.metrics;
    if !state.store.can_ingest_limited(&state.redis, metrics)
        || !state.registry.admits_locally(metrics)
    {
        return None;
    }
    let record = body.record();
    let call = state.store.ingest_limited(
        &state.redis,
        &state.limiter,
        client,
        metrics,
        record.as_ref(),
    );
    let limited = match before(deadline, state, async { Ok(call.await) }).await {
        Ok(Err(IngestError::Redis(err))) if Fault::of(&err) == Fault::OutOfMemory => return None,
        Ok(Err(err)) => Err(ingest_error(&body.parsed, err)),
        Ok(Ok(limited)) => Ok(limited),
        Err(err) => Err(err),
    };
    Some(match limited {
        Err(err) => err.into_response(),
        Ok(Limited::Refused(decision)) => {
            crate::observability::rate_limited();
            ApiError::TooManyRequests(decision).into_response()
        }
        Ok(Limited::Counted(decision, result)) => {
            let admission = Admission::default();
            let finished = before(deadline, state, finish(state, body, &admission, result)).await;
            let mut response = respond(finished);
            response.headers_mut().extend(rate_limit_fields(&decision));
            response
        }
    })
}

/// The response to a storage call's `result`, once the type registry has
/// heard of it: the types `admission` reserved are confirmed (stored) or
/// released (refused).
async fn finish(
    state: &AppState,
    body: &Read<'_>,
    admission: &Admission,
    result: Result<IngestOutcome, IngestError>,
) -> Result<Response<Body>, ApiError> {
    let parsed = &body.parsed;
    match &result {
        Ok(_) => match state.registry.confirm(&state.redis, admission).await {
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
                .release(&state.redis, &body.client, admission)
                .await
            {
                tracing::warn!(error = %err, "reservations of a refused request not released");
            }
        }
        Err(IngestError::Redis(_)) => {}
    }
    let outcome = result.map_err(|err| ingest_error(parsed, err))?;
    let mut response = match outcome {
        IngestOutcome::Stored => {
            crate::observability::accepted_metrics(parsed.metrics.len());
            Response::new(Body::from(body.created.clone()))
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

/// The problem of a storage refusal or failure.
fn ingest_error(parsed: &MetricsBody, err: IngestError) -> ApiError {
    match err {
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
        } => tag_limit(parsed, metric_index, key.as_ref(), limit),
        IngestError::Redis(err) => ApiError::redis(&err),
    }
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
