//! The analytics API's core, shared by every Lambda function.
//!
//! Each HTTP endpoint is its own Lambda function (`functions/<name>`), whose
//! `main` builds an [`AppState`] once per cold start and hands requests to a
//! handler in [`handlers`]. All state lives in Redis, so every instance of
//! every function sees the same limiter, cache, breaker and metrics.
//!
//! The modules form layers that read top-down: each uses only its own layer
//! and the layers below, and none uses another that uses it back
//! (`cargo test -p shared --test layering` checks both from the sources).
//!
//! **The HTTP edge** — the only modules that know `lambda_http`:
//! - [`handlers`]: `health`, `ingest_metric`, `metrics_summary`,
//!   `metrics_series`, each under one request deadline.
//! - [`openapi`]: the OpenAPI document, derived from the response types, and
//!   the `docs` function's handler.
//! - [`runtime`]: the Lambda runtime with EMF metrics flushed per invocation.
//! - [`http`]: RFC 9457 problem details, the `RateLimit` fields, status codes:
//!   every component's error becomes an [`http::ApiError`] here.
//! - [`responses`]: every response body, one type each, served and documented.
//! - [`telemetry`]: logging (JSON lines in Lambda).
//!
//! **Composition**:
//! - [`state`]: the [`AppState`] of one instance: configuration, connection
//!   and the components built on them.
//! - [`config`]: [`config::Config`], every component's settings together,
//!   and the HTTP edge's own.
//!
//! **Components** — each returns its own typed result or error:
//! - [`cache`]: read-through cache of summaries and series with fleet-wide
//!   single-flight.
//! - [`breaker`]: circuit breaker persisted in Redis; runs a guarded call.
//! - [`external`]: the unreliable external source (simulated or HTTP).
//! - [`rate_limit`]: sliding log, sliding window counter or GCRA; a typed
//!   decision.
//! - [`identity`]: who the client is (API-key digest or source address).
//! - [`store`]: metrics pre-aggregated in minute/hour/day buckets (count,
//!   compensated sum, min, max, a DDSketch) by one atomic Lua script; a
//!   summary reads ≤ ~200 buckets whatever the data size, a series the
//!   buckets of its steps; `store::registry` bounds the number of metric
//!   types (`MAX_METRIC_TYPES`).
//! - [`window`]: summary and series queries (quantiles, step) and their time
//!   windows.
//! - [`metric`]: metrics as clients send them, and their validation.
//! - [`tags`]: the tags (dimensions) of a metric: validation, canonical
//!   form, and the caps on their cardinality.
//!
//! **Foundation**:
//! - [`observability`]: CloudWatch EMF counters.
//! - [`keys`]: the one place that names Redis keys (prefix, hash tags).
//! - [`redis_server`]: what the Redis server will do with the service's
//!   data: its eviction policy, memory, role, and whether scripts may run.
//! - [`connection`]: the instance's lazy, self-reconnecting Redis connection,
//!   each command bounded by `REDIS_TIMEOUT_MS`, round trips counted; the
//!   reader of the scripts' replies.
//! - [`iam_auth`]: ElastiCache IAM authentication tokens.
//! - [`settings`]: reading the environment; errors that name the variable.
//!
//! Every operation whose correctness depends on concurrency is one Lua script
//! that reads the clock with `redis.call('TIME')`; every key it writes
//! expires. `ARCHITECTURE.md` explains the design and its trade-offs.

pub mod breaker;
pub mod cache;
pub mod config;
pub mod connection;
pub mod external;
pub mod handlers;
pub mod http;
pub mod iam_auth;
pub mod identity;
pub mod keys;
pub mod metric;
pub mod observability;
pub mod openapi;
pub mod rate_limit;
pub mod redis_server;
pub mod responses;
pub mod runtime;
pub mod settings;
pub mod state;
pub mod store;
pub mod tags;
pub mod telemetry;
pub mod window;

pub use state::AppState;
