//! The HTTP side: sending samples to `POST /api/metrics` with retries and
//! fetching `GET /api/metrics/summary`.
//!
//! Every POST carries an `Idempotency-Key` (IETF draft "The Idempotency-Key
//! HTTP Header Field", a structured-field string holding a UUID v4), fresh
//! for each body and reused on each retry of it, so a retry after a timeout
//! or a 503 never counts a metric twice on a server that honours the key.

use std::time::Duration;

use chrono::Utc;
use reqwest::header::{CACHE_CONTROL, RETRY_AFTER};
use reqwest::{Client, Method, RequestBuilder, Url};
use serde_json::Value;

use crate::payload::{arrays_unsupported, batch_body, single_body, Metric};
use crate::retry::{parse_retry_after, RetryPolicy, Retryable};
use crate::series::Series;
use crate::summary::Summary;

/// Header carrying the API key.
const API_KEY_HEADER: &str = "x-api-key";
/// Request header of the idempotency draft.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header marking a replayed answer.
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Everything that can end a request without success.
#[derive(Debug)]
pub enum ClientError {
    /// `--base-url` is not an absolute http(s) URL.
    InvalidBaseUrl(String),
    /// No connection could be made (nothing listening, DNS failure, TLS
    /// failure…); the run cannot go on.
    Unreachable {
        /// The URL that was tried.
        url: String,
        /// The transport error, as text.
        reason: String,
    },
    /// The server answered with a status that retrying cannot fix.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The response body (usually RFC 9457 problem details).
        body: String,
    },
    /// Still 429/503/timing out after every allowed retry.
    GaveUp {
        /// Requests made, the first one included.
        attempts: u32,
        /// The last condition seen.
        last: String,
    },
    /// A 2xx response whose body is not the expected JSON.
    BadResponse(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidBaseUrl(reason) => write!(f, "invalid base URL: {reason}"),
            Self::Unreachable { url, reason } => write!(
                f,
                "cannot reach the API at {url}: {reason} (is it running? see --base-url / API_BASE_URL)"
            ),
            Self::Rejected { status, body } => {
                write!(f, "the API refused the request with {status}: {body}")
            }
            Self::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts (last: {last})")
            }
            Self::BadResponse(reason) => write!(f, "unexpected response: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A final (non-retried) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Whether the server said this is a replay (`Idempotent-Replayed: true`).
    pub replayed: bool,
    /// Requests made to get it, the first one included.
    pub attempts: u32,
    /// The body as text.
    pub body: String,
}

/// How samples are sent: batches until the server shows it only takes objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// One JSON array per call.
    Batch,
    /// One JSON object per metric.
    OneByOne,
}

/// What happened to one call of [`ApiClient::send_metrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// How it was finally sent.
    pub mode: SendMode,
    /// The answers of the requests that stored it (one for a batch).
    pub answers: Vec<Answer>,
}

/// A client of one API deployment.
pub struct ApiClient {
    http: Client,
    metrics_url: Url,
    summary_url: Url,
    series_url: Url,
    api_key: Option<String>,
    policy: RetryPolicy,
    timeout: Duration,
}

impl ApiClient {
    /// A client for `base_url` (e.g. `http://localhost:8000`; a path prefix is
    /// kept). `timeout` bounds each request. Errors on a URL that is not
    /// absolute http(s).
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
        policy: RetryPolicy,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/');
        let metrics_url = endpoint(base, "/api/metrics")?;
        let summary_url = endpoint(base, "/api/metrics/summary")?;
        let series_url = endpoint(base, "/api/metrics/series")?;
        let http = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .user_agent(concat!("host-metrics/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::InvalidBaseUrl(e.to_string()))?;
        Ok(Self {
            http,
            metrics_url,
            summary_url,
            series_url,
            api_key,
            policy,
            timeout,
        })
    }

    /// Sends `metrics` (at most the server's `MAX_BATCH_SIZE`). In
    /// [`SendMode::Batch`] they go as one array; if the server shows it does not take arrays
    /// ([`arrays_unsupported`]), `mode` switches to [`SendMode::OneByOne`]
    /// for this and every later call.
    pub async fn send_metrics(
        &self,
        metrics: &[Metric],
        mode: &mut SendMode,
    ) -> Result<Delivery, ClientError> {
        if *mode == SendMode::Batch {
            let answer = self.post_metrics(&batch_body(metrics)).await?;
            if is_success(answer.status) {
                return Ok(Delivery {
                    mode: SendMode::Batch,
                    answers: vec![answer],
                });
            }
            if !arrays_unsupported(answer.status, &answer.body) {
                return Err(rejected(answer));
            }
            *mode = SendMode::OneByOne;
        }
        let mut answers = Vec::with_capacity(metrics.len());
        for metric in metrics {
            let answer = self.post_metrics(&single_body(metric)).await?;
            if !is_success(answer.status) {
                return Err(rejected(answer));
            }
            answers.push(answer);
        }
        Ok(Delivery {
            mode: SendMode::OneByOne,
            answers,
        })
    }

    /// POSTs one body under a fresh idempotency key, retrying as the policy
    /// allows. Returns the first answer that is not retried.
    pub async fn post_metrics(&self, body: &Value) -> Result<Answer, ClientError> {
        let key = idempotency_key();
        self.execute(|| {
            self.request(Method::POST, self.metrics_url.clone())
                .header(IDEMPOTENCY_KEY_HEADER, &key)
                .json(body)
        })
        .await
    }

    /// Fetches the summary of `kind` over `period` (e.g. `hourly`), retrying
    /// on 429/503 like a POST. Sends `Cache-Control: no-cache`, so the
    /// summary is recomputed and counts what was just stored rather than
    /// what a cached copy saw. Errors on any non-2xx answer.
    pub async fn summary(&self, kind: &str, period: &str) -> Result<Summary, ClientError> {
        self.fresh_json(
            &self.summary_url,
            "summary",
            &[("type", kind), ("period", period)],
        )
        .await
    }

    /// Like [`Self::summary`], counting only the metrics tagged `host`
    /// (`tag.host=<host>`).
    pub async fn host_summary(
        &self,
        kind: &str,
        period: &str,
        host: &str,
    ) -> Result<Summary, ClientError> {
        self.fresh_json(
            &self.summary_url,
            "summary",
            &[("type", kind), ("period", period), ("tag.host", host)],
        )
        .await
    }

    /// Fetches the series of `kind` over `period` at `step` (e.g. `hourly`,
    /// `5m`), like [`Self::summary`]: retried on 429/503, read with
    /// `Cache-Control: no-cache`. Errors on any non-2xx answer.
    pub async fn series(
        &self,
        kind: &str,
        period: &str,
        step: &str,
    ) -> Result<Series, ClientError> {
        self.fresh_json(
            &self.series_url,
            "series",
            &[("type", kind), ("period", period), ("step", step)],
        )
        .await
    }

    /// GETs `endpoint` with `query`, bypassing the server's cache
    /// (`Cache-Control: no-cache`) and retrying like a POST, and decodes the
    /// 2xx body as `T`; `what` names it in errors.
    async fn fresh_json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &Url,
        what: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let mut url = endpoint.clone();
        url.query_pairs_mut().extend_pairs(query);
        let answer = self
            .execute(|| {
                self.request(Method::GET, url.clone())
                    .header(CACHE_CONTROL, "no-cache")
            })
            .await?;
        if !is_success(answer.status) {
            return Err(rejected(answer));
        }
        let kind = query.first().map_or("", |(_, v)| v);
        serde_json::from_str(&answer.body)
            .map_err(|e| ClientError::BadResponse(format!("{what} of {kind}: {e}")))
    }

    /// A request with the headers every call carries.
    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.api_key {
            Some(key) => builder.header(API_KEY_HEADER, key),
            None => builder,
        }
    }

    /// Sends the request `build` makes until it gets an answer that is not
    /// 429/503/a timeout, or the policy gives up. `build` is called once per
    /// attempt so every retry is the identical request.
    async fn execute(&self, build: impl Fn() -> RequestBuilder) -> Result<Answer, ClientError> {
        let mut retry = 0;
        loop {
            let attempts = retry + 1;
            let (why, retry_after, last) = match build().send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let Some(why) = Retryable::from_status(status) else {
                        return answer(response, attempts).await;
                    };
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, Utc::now()));
                    (why, retry_after, format!("HTTP {status}"))
                }
                Err(err) if err.is_timeout() => (
                    Retryable::TimedOut,
                    None,
                    format!("no answer within {} ms", self.timeout.as_millis()),
                ),
                Err(err) => {
                    return Err(ClientError::Unreachable {
                        url: err.url().map(|u| u.as_str().to_owned()).unwrap_or_default(),
                        reason: root_cause(&err),
                    })
                }
            };
            let Some(wait) = self.policy.delay(why, retry_after, retry) else {
                return Err(ClientError::GaveUp { attempts, last });
            };
            eprintln!("  {last}; retrying in {:.1} s", wait.as_secs_f64());
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }
}

/// `base` + `path` as a URL; errors unless absolute http(s).
fn endpoint(base: &str, path: &str) -> Result<Url, ClientError> {
    let url = Url::parse(&format!("{base}{path}"))
        .map_err(|e| ClientError::InvalidBaseUrl(format!("{base:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(ClientError::InvalidBaseUrl(format!(
            "{base:?}: scheme {other:?} is not http or https"
        ))),
    }
}

/// A fresh key in the draft's structured-field string form: `"<uuid v4>"`.
fn idempotency_key() -> String {
    format!("\"{}\"", uuid::Uuid::new_v4())
}

/// Reads a final response.
async fn answer(response: reqwest::Response, attempts: u32) -> Result<Answer, ClientError> {
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get(REPLAYED_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let body = response
        .text()
        .await
        .map_err(|e| ClientError::BadResponse(format!("reading the body: {e}")))?;
    Ok(Answer {
        status,
        replayed,
        attempts,
        body,
    })
}

/// Whether `status` is 2xx.
fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// A final non-2xx answer as an error.
fn rejected(answer: Answer) -> ClientError {
    ClientError::Rejected {
        status: answer.status,
        body: answer.body,
    }
}

/// The innermost cause of a transport error ("Connection refused (os error
/// 111)"): the outer layers only repeat the URL and the library's plumbing.
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
