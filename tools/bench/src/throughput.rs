//! Figure 2, our side: ingest throughput of the in-process handler
//! (`shared::handlers::ingest_metric` on synthetic API Gateway events, no
//! HTTP), in a closed loop at a fixed concurrency.
//!
//! Two ways to run C requests at a time:
//! - **instances**: C independent `AppState`s, each with its own Redis
//!   connection and one request at a time, as C warm Lambda instances are
//!   (Lambda gives an instance one request at a time). This is the case
//!   comparable with `redis-benchmark -c C`, which also opens C connections
//!   with one command in flight on each.
//! - **shared**: one `AppState` serving C requests at once, all multiplexed
//!   (pipelined) over its single connection; what one process would get if it
//!   served many requests concurrently. Reported for context.
//!
//! Each request is built from one parsed event ([`Template`]) right before it
//! is served, outside its latency sample but inside the measurement's wall
//! time and CPU: the figure is the handler and Redis, not the deserialisation
//! of events (which the Lambda runtime does); building costs a few clones,
//! measured apart and reported. Each request comes from a fresh client address and the limit is far above
//! what the run sends, so every request is accepted: one round trip each on
//! a single node (the limiter and the storage in one script call).

use std::sync::Arc;
use std::time::Instant;

use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use shared::config::Config;
use shared::handlers::ingest_metric;
use shared::AppState;

use crate::events;
use crate::redis_side::ServerStats;
use crate::stats::quantile_us;

/// What one or more timed measurements saw; [`Measured::merge`] adds the
/// slices of one figure-2 run together.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Requests timed.
    pub requests: usize,
    /// Wall time of the timed requests, s.
    pub elapsed_s: f64,
    /// Latency of each request, µs.
    pub latencies_us: Vec<u32>,
    /// Answers other than 201.
    pub errors: u64,
    /// CPU time of this process (handler, redis client, runtime, request
    /// building) over the timed requests, ns.
    pub client_cpu_ns: u64,
    /// Time to build one request from the template, µs (see
    /// [`Template::build_cost_us`]).
    pub build_us: f64,
    /// What the Redis server did over the timed requests (read with `stats`
    /// right before the clock starts and right after it stops).
    pub redis: ServerStats,
}

impl Measured {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed_s
    }

    /// The `q` quantile of the latencies, µs.
    pub fn latency_us(&self, q: f64) -> f64 {
        quantile_us(&mut self.latencies_us.clone(), q)
    }

    /// CPU of this process per request, µs.
    pub fn client_cpu_us(&self) -> f64 {
        self.client_cpu_ns as f64 / 1000.0 / self.requests as f64
    }

    /// `other`'s requests added to these, as if timed together.
    pub fn merge(&mut self, other: Measured) {
        self.build_us = if self.requests == 0 {
            other.build_us
        } else {
            self.build_us.min(other.build_us)
        };
        self.requests += other.requests;
        self.elapsed_s += other.elapsed_s;
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.client_cpu_ns += other.client_cpu_ns;
        self.redis = self.redis.plus(&other.redis);
    }
}

/// The ingest event of `metric_type` as the runtime hands it over, parsed
/// once; every timed request is built from it just before it is served.
///
/// Building all of a measurement's requests before the clock starts, as this
/// harness first did, kept tens of megabytes of parsed events alive through
/// the measurement: walking and freeing them polluted the caches the two
/// cores share and slowed Redis' own script execution by a quarter at
/// concurrency 64 (`cmdstat_evalsha`), which `redis-benchmark`'s tiny working
/// set never does. A request built from the template costs a few clones
/// (measured apart, [`Template::build_cost_us`]) and is hot in cache, like
/// an event the runtime has just deserialised.
pub struct Template {
    parts: lambda_http::http::request::Parts,
    context: ApiGatewayV2httpRequestContext,
    body_start: String,
}

impl Template {
    /// Parses one synthetic event of `metric_type` (timestamped now) through
    /// `lambda_http`'s own deserialiser.
    ///
    /// # Errors
    /// A message when the event is not an API Gateway v2 request.
    pub fn ingest(metric_type: &str) -> Result<Self, String> {
        let (parts, _) = events::ingest(metric_type, 1.0)?.into_parts();
        let Some(RequestContext::ApiGatewayV2(context)) = parts.extensions.request_context_ref()
        else {
            return Err("the synthetic ingest event has no API Gateway v2 context".into());
        };
        let context = context.clone();
        let body_start = format!(
            r#"{{"type":"{metric_type}","timestamp":"{}","value":"#,
            shared::metric::format_timestamp(chrono::Utc::now())
        );
        Ok(Self {
            parts,
            context,
            body_start,
        })
    }

    /// Request `i`: one metric of value `(i % 100) + 0.25` from client
    /// address `client_ip`, with a Lambda context carrying its own request
    /// id, as the runtime sets it.
    pub fn build(&self, i: usize, client_ip: &str) -> lambda_http::Request {
        let mut context = self.context.clone();
        context.http.source_ip = Some(client_ip.to_string());
        let body = format!("{}{}}}", self.body_start, (i % 100) as f64 + 0.25);
        let mut req = lambda_http::Request::new(lambda_http::Body::Text(body));
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = self.parts.uri.clone();
        *req.headers_mut() = self.parts.headers.clone();
        *req.extensions_mut() = self.parts.extensions.clone();
        let mut lambda = lambda_http::Context::default();
        lambda.request_id = format!("bench-{i:012}");
        req.with_request_context(RequestContext::ApiGatewayV2(context))
            .with_lambda_context(lambda)
    }

    /// Time of one [`Template::build`] and dropping what it built, µs: the
    /// part of the client CPU per request that is the harness', not the
    /// handler's. A tight loop without I/O, so wall time is CPU time; the
    /// best of three rounds.
    pub fn build_cost_us(&self) -> f64 {
        const N: usize = 5_000;
        let ips: Vec<String> = (0..64).map(|_| events::next_client_ip()).collect();
        (0..3)
            .map(|_| {
                let started = Instant::now();
                for i in 0..N {
                    std::hint::black_box(self.build(i, &ips[i % ips.len()]));
                }
                started.elapsed().as_secs_f64() * 1e6 / N as f64
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// Where [`measure`] reads the server's counters around the timed part: one
/// node (a connection of the bench's own), or the masters of a cluster
/// added together (`crate::cluster::Masters`).
pub trait Counters {
    /// The counters now.
    ///
    /// # Errors
    /// The connection's error, as text.
    fn read(&mut self) -> impl std::future::Future<Output = Result<ServerStats, String>>;
}

impl Counters for redis::aio::MultiplexedConnection {
    async fn read(&mut self) -> Result<ServerStats, String> {
        ServerStats::read(self).await
    }
}

/// `n` requests through `concurrency` independent states (instances) when
/// `shared` is false, or through one state when it is true. `stats` reads
/// the server's counters around the timed part.
pub async fn measure(
    config: &Config,
    metric_type: &str,
    concurrency: usize,
    n: usize,
    shared: bool,
    stats: &mut impl Counters,
) -> Result<Measured, String> {
    let states: Vec<Arc<AppState>> = if shared {
        vec![Arc::new(
            AppState::new(config.clone()).map_err(|e| e.to_string())?,
        )]
    } else {
        (0..concurrency)
            .map(|_| {
                AppState::new(config.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };
    // Connect every state (lazily connecting) and load the scripts, untimed.
    for state in &states {
        let status = ingest_metric(state, events::ingest(metric_type, 0.5)?)
            .await
            .status();
        if status != 201 {
            return Err(format!("warm-up ingest answered {status}"));
        }
    }
    let template = Arc::new(Template::ingest(metric_type)?);
    // Each request from a client of its own (the addresses are built here,
    // outside the clock: a few bytes each).
    let mut chunks: Vec<Vec<(usize, String)>> = (0..concurrency).map(|_| Vec::new()).collect();
    for i in 0..n {
        chunks[i % concurrency].push((i, events::next_client_ip()));
    }
    let server_before = stats.read().await?;
    let cpu_before = process_cpu_ns();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for (worker, chunk) in chunks.into_iter().enumerate() {
        let state = Arc::clone(&states[worker % states.len()]);
        let template = Arc::clone(&template);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(chunk.len());
            let mut errors = 0u64;
            for (i, ip) in chunk {
                let req = template.build(i, &ip);
                let t = Instant::now();
                let status = ingest_metric(&state, req).await.status();
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                errors += u64::from(status != 201);
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.map_err(|e| e.to_string())?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let client_cpu_ns = process_cpu_ns().saturating_sub(cpu_before);
    let redis = stats.read().await?.since(&server_before);
    Ok(Measured {
        requests: n,
        elapsed_s,
        latencies_us: latencies,
        errors,
        client_cpu_ns,
        build_us: template.build_cost_us(),
        redis,
    })
}

/// CPU time used so far by the threads of this process, ns: the sum of the
/// first field of `/proc/self/task/<tid>/schedstat` (time on a CPU). The
/// runtime's worker threads live as long as the process, so differences
/// over a measurement are exact.
pub fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_url() -> String {
        std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into())
    }

    /// A request built from the template is served like the event the
    /// runtime deserialises: its own client address (what the limiter
    /// counts), body and Lambda request id.
    #[tokio::test]
    async fn a_request_built_from_the_template_is_served_like_a_parsed_event() {
        let url = redis_url();
        let prefix = format!("bench-test-{}", uuid::Uuid::new_v4().simple());
        let config = Config::from_pairs(&[
            ("REDIS_URL", url.as_str()),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
            ("RATE_LIMIT_REQUESTS", "1"),
        ])
        .unwrap();
        let state = AppState::new(config).unwrap();
        let template = Template::ingest("bench_template").unwrap();
        for (i, ip) in [(7, "198.18.0.7"), (8, "198.18.0.8")] {
            let response = ingest_metric(&state, template.build(i, ip)).await;
            assert_eq!(response.status(), 201, "client {ip}");
            let body: serde_json::Value = match response.body() {
                lambda_http::Body::Text(text) => serde_json::from_str(text).unwrap(),
                other => panic!("unexpected body {other:?}"),
            };
            assert_eq!(body["request_id"], format!("bench-{i:012}"));
            assert_eq!(body["metric"]["value"], (i % 100) as f64 + 0.25);
            assert_eq!(body["metric"]["type"], "bench_template");
        }
        // The same address again is the same client, over its limit of 1.
        let again = ingest_metric(&state, template.build(9, "198.18.0.7")).await;
        assert_eq!(again.status(), 429);

        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let deleted = crate::redis_side::clear(&mut conn, &format!("{prefix}:*"))
            .await
            .unwrap();
        assert!(deleted >= 2, "the two clients' keys and the buckets");
    }
}
