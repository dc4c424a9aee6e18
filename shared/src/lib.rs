//! The analytics API's core, shared by every Lambda function.
//!
//! Each HTTP endpoint is its own Lambda function (`functions/<name>`), whose
//! `main` builds an [`AppState`] once per cold start and hands requests to a
//! handler in [`handlers`]. All state lives in Redis, so every instance of
//! every function sees the same limiter, cache, breaker and metrics:
//!
//! - [`config`]: every environment variable, validated once at cold start.
//! - [`connection`]: the instance's lazy, self-reconnecting Redis connection,
//!   each command bounded by `REDIS_TIMEOUT_MS`, round trips counted.
//! - [`keys`]: the one place that names Redis keys (prefix, hash tags).
//! - [`metric`], [`window`]: request validation (metrics, summary queries).
//! - [`store`]: metrics pre-aggregated in minute/hour/day buckets by one
//!   atomic Lua script; a summary reads ≤ ~200 buckets whatever the data size.
//! - [`external`]: the unreliable external source (simulated or HTTP).
//! - [`http`]: RFC 9457 problem details and JSON responses.
//! - [`handlers`]: `health`, `ingest_metric`, `metrics_summary`.
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
pub mod responses;
pub mod runtime;
pub mod settings;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod window;

pub use state::AppState;

/// The allocator of every binary linking this crate (the functions, and the
/// tests and benchmarks that run their handlers): mimalloc (Leijen, Zorn and
/// de Moura, "Mimalloc: Free List Sharding in Action", 2019), through the
/// `mimalloc` crate. Each Redis command boxes a future of about 1.1 KiB in
/// the redis crate (`RedisFuture`), above glibc's per-thread cache; there,
/// each such allocation consolidates the fast bins, and glibc's `malloc` and
/// `free` were a third of the instructions of an ingest (BENCHMARKS.md,
/// figure 2). mimalloc serves every size the request path uses from
/// per-thread free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
