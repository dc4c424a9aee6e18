//! The external data source that enriches each summary.
//!
//! Two implementations behind one type:
//! - **simulated** (default): waits `EXTERNAL_SERVICE_LATENCY_MS`, fails with
//!   probability `EXTERNAL_SERVICE_FAILURE_RATE`, else returns
//!   `{"external_metric_context": <integer 100..=500>}`;
//! - **HTTP** (when `EXTERNAL_SERVICE_URL` is set):
//!   `GET <url>?type=<type>&period=<period>`; a 2xx whose body is a JSON object
//!   is a success and its fields are merged into `external_data`.
//!
//! Every call goes through the circuit breaker ([`crate::breaker`]), which
//! decides whether it is made at all and cancels it at
//! `EXTERNAL_SERVICE_TIMEOUT_MS`; the HTTP client is bounded by the same
//! timeout. A slower call is a failure like any other.

use std::time::Duration;

use rand::Rng;
use serde_json::{Map, Value};

use crate::breaker::FailureKind;
use crate::settings::{ConfigError, Env};
use crate::window::SummaryQuery;

/// The external source's settings.
#[derive(Debug, Clone)]
pub struct ExternalSettings {
    /// `EXTERNAL_SERVICE_URL`: when set, the real HTTP source; else the
    /// simulated one.
    pub url: Option<String>,
    /// `EXTERNAL_SERVICE_LATENCY_MS`, default 50 (0..=60 000): the simulated
    /// source's latency.
    pub latency: Duration,
    /// `EXTERNAL_SERVICE_FAILURE_RATE`, default 0.2 (0..=1): the simulated
    /// source's failure probability.
    pub failure_rate: f64,
    /// `EXTERNAL_SERVICE_TIMEOUT_MS`, default 1000 (1..=60 000): a slower
    /// call is cancelled and counts as a failure.
    pub timeout: Duration,
}

impl ExternalSettings {
    /// Reads and validates the `EXTERNAL_SERVICE_*` variables (the URL's
    /// form is checked by [`ExternalSource::from_settings`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.optional("EXTERNAL_SERVICE_URL"),
            latency: env.millis("EXTERNAL_SERVICE_LATENCY_MS", 50, 0..=60_000)?,
            failure_rate: env.probability("EXTERNAL_SERVICE_FAILURE_RATE", 0.2)?,
            timeout: env.millis("EXTERNAL_SERVICE_TIMEOUT_MS", 1000, 1..=60_000)?,
        })
    }
}

/// Why the source gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExternalError {
    /// A non-2xx status, a body that is not a JSON object or is over
    /// [`MAX_BODY_BYTES`], a connection error, or a simulated failure.
    #[error("the external source failed")]
    Upstream,
    /// The HTTP client gave up at `EXTERNAL_SERVICE_TIMEOUT_MS`.
    #[error("the external source timed out")]
    Timeout,
}

/// How the circuit breaker counts a failed call.
impl From<ExternalError> for FailureKind {
    fn from(err: ExternalError) -> Self {
        match err {
            ExternalError::Upstream => Self::UpstreamError,
            ExternalError::Timeout => Self::Timeout,
        }
    }
}

/// The configured external source.
#[derive(Debug, Clone)]
pub enum ExternalSource {
    /// An in-process stand-in with configurable latency and failure rate.
    Simulated {
        /// How long each call takes.
        latency: Duration,
        /// Probability in `[0, 1]` that a call fails.
        failure_rate: f64,
    },
    /// A real HTTP endpoint.
    Http {
        /// Client built once per cold start (connection pool, rustls).
        client: reqwest::Client,
        /// `EXTERNAL_SERVICE_URL`.
        url: String,
    },
}

impl ExternalSource {
    /// Builds the source chosen by the configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] for `EXTERNAL_SERVICE_URL` when it is not an
    /// `http(s)://` URL or the HTTP client cannot be built.
    pub fn from_settings(settings: &ExternalSettings) -> Result<Self, ConfigError> {
        let Some(url) = &settings.url else {
            return Ok(Self::Simulated {
                latency: settings.latency,
                failure_rate: settings.failure_rate,
            });
        };
        let invalid = |reason: String| ConfigError::new("EXTERNAL_SERVICE_URL", reason);
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid("expected an http:// or https:// URL".into()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self::Http {
            client,
            url: url.clone(),
        })
    }

    /// Calls the source for the summary of `query` (its type and period
    /// label, `custom` for an explicit window).
    ///
    /// # Errors
    /// [`ExternalError::Upstream`] when the call fails,
    /// [`ExternalError::Timeout`] when the HTTP client gives up.
    pub async fn fetch(&self, query: &SummaryQuery) -> Result<Map<String, Value>, ExternalError> {
        let (metric_type, period) = (query.metric_type.as_str(), query.period_label().as_str());
        match self {
            Self::Simulated {
                latency,
                failure_rate,
            } => {
                tokio::time::sleep(*latency).await;
                let mut rng = rand::rng();
                if rng.random_bool(failure_rate.clamp(0.0, 1.0)) {
                    return Err(ExternalError::Upstream);
                }
                let mut data = Map::new();
                data.insert(
                    "external_metric_context".into(),
                    Value::from(rng.random_range(100..=500)),
                );
                Ok(data)
            }
            Self::Http { client, url } => {
                let response = client
                    .get(url)
                    .query(&[("type", metric_type), ("period", period)])
                    .send()
                    .await
                    .map_err(classify)?;
                if !response.status().is_success() {
                    tracing::info!(
                        status = response.status().as_u16(),
                        "external source answered non-2xx"
                    );
                    return Err(ExternalError::Upstream);
                }
                let body = read_limited(response, MAX_BODY_BYTES).await?;
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(data)) => Ok(data),
                    _ => {
                        tracing::info!("external source answered a body that is not a JSON object");
                        Err(ExternalError::Upstream)
                    }
                }
            }
        }
    }
}

/// The largest external body accepted, bytes. Its fields are merged into
/// every summary (and cached): a larger body is a failure, not a multi-MB
/// summary that Lambda could not even return (6 MB response limit).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads at most `limit` bytes of `response`'s body.
///
/// # Errors
/// [`ExternalError::Upstream`] when the body is larger (announced or
/// actual), or the connection fails while reading.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ExternalError> {
    let too_large = || {
        tracing::info!(
            limit_bytes = limit,
            "external source answered a body over the limit"
        );
        ExternalError::Upstream
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn classify(err: reqwest::Error) -> ExternalError {
    if err.is_timeout() {
        ExternalError::Timeout
    } else {
        tracing::info!(error = %err, "external source unreachable");
        ExternalError::Upstream
    }
}
