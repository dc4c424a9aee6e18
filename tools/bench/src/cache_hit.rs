//! Figure 8: what a summary cache hit costs Redis, against the plainest
//! read Redis serves, `GET` of a value of the same size.
//!
//! A hit is answered by one `GET` of the cached entry (the response body and
//! a short trailer), so Redis cannot do it for less than `redis-benchmark`
//! sending `GET` of that very key: the same value, the same reply size. The
//! key and its value are those of a real hit (captured with `MONITOR` while
//! the handler answered one), so nothing is rebuilt by hand that could drift
//! from the code.
//!
//! **Ours**: `metrics_summary` called in-process at concurrency C from C
//! independent `AppState`s (each its own connection, one request at a time,
//! as C warm Lambda instances; figure 2's *instances*), every request a hit
//! from one of a few clients of its own instance. **Redis**: `redis-benchmark -c C` sending that
//! `GET`. Each run is [`ROUNDS`] rounds of *`GET` replay, ours*, each on a
//! third of the run's requests; each side's Redis CPU (`INFO cpu`,
//! `used_cpu_sys + used_cpu_user`) is added over its rounds and divided by
//! its requests. The target (issue: a hit is one plain read) is ours ≤ 1.2×
//! the replay's, per run.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use serde::{Deserialize, Serialize};
use shared::config::Config;
use shared::handlers::metrics_summary;
use shared::AppState;

use crate::events;
use crate::redis_side::{self, Argv};
use crate::stats::Spread;

/// Rounds of alternation per run.
pub const ROUNDS: usize = 3;
/// The concurrency measured (figure 2's highest).
pub const CONCURRENCY: usize = 64;
/// The target: Redis CPU per hit over Redis CPU per `GET` of the same value.
pub const TARGET: f64 = 1.2;

/// Figure 8's raw samples, one per run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheHit {
    /// Concurrency of both sides.
    pub concurrency: usize,
    /// Requests per side per run.
    pub requests: usize,
    /// Bytes of the cached entry (`STRLEN` of the key the hit reads).
    pub value_bytes: u64,
    /// The `redis-benchmark` command of one round (`<port>`: the private
    /// server's).
    pub command: String,
    /// Ours: Redis CPU per hit, µs.
    pub ours_cpu_us: Vec<f64>,
    /// `redis-benchmark`: Redis CPU per `GET`, µs.
    pub get_cpu_us: Vec<f64>,
    /// Ours: hits per second.
    pub ours_rps: Vec<f64>,
    /// `redis-benchmark`: `GET`s per second.
    pub get_rps: Vec<f64>,
    /// Ours: Redis commands per hit (`INFO commandstats`, all commands).
    pub ours_commands: Vec<f64>,
    /// Answers other than 200 with `X-Cache: HIT`, all runs.
    pub not_hit: u64,
}

impl CacheHit {
    /// Ours over the `GET` replay, per run.
    pub fn ratios(&self) -> Vec<f64> {
        let runs = self.ours_cpu_us.iter().zip(&self.get_cpu_us);
        runs.map(|(ours, get)| ours / get).collect()
    }
}

/// What one side did over its rounds.
#[derive(Debug, Default)]
struct Side {
    requests: usize,
    elapsed_s: f64,
    cpu_s: f64,
    commands: u64,
}

/// A summary type with one metric and its cached daily summary, and the
/// `GET` a hit sends, captured.
pub struct Prepared {
    metric_type: String,
    get: Argv,
}

/// Ingests one metric of a fresh type, answers its daily summary once (a
/// miss, which fills the cache), then captures the command a hit sends.
///
/// # Errors
/// A message when a request fails or the hit is not one plain `GET`.
pub async fn prepare(port: u16, config: &Config, out: &mut CacheHit) -> Result<Prepared, String> {
    let state = AppState::new(config.clone()).map_err(|e| e.to_string())?;
    let metric_type = format!(
        "bench_hit_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let ingested = shared::handlers::ingest_metric(&state, events::ingest(&metric_type, 1.0)?)
        .await
        .status();
    if ingested != 201 {
        return Err(format!("the cache-hit figure's ingest answered {ingested}"));
    }
    let miss = metrics_summary(&state, events::summary(&metric_type, "daily", false)?).await;
    if miss.status() != 200 {
        return Err(format!("the first summary answered {}", miss.status()));
    }
    let hit = metrics_summary(&state, events::summary(&metric_type, "daily", false)?);
    let (response, commands) = monitor(port, hit).await?;
    if !is_hit(&response) {
        return Err(format!("the captured summary was not a hit: {response:?}"));
    }
    let [get] = <[Argv; 1]>::try_from(commands)
        .map_err(|seen| format!("a hit sent {} commands, not one: {seen:?}", seen.len()))?;
    if !get[0].eq_ignore_ascii_case("GET") || get.len() != 2 {
        return Err(format!("a hit sent {get:?}, not one GET"));
    }
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/0")).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    out.value_bytes = redis::cmd("STRLEN")
        .arg(&get[1])
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Prepared { metric_type, get })
}

/// Whether `response` is a cache hit (200, `X-Cache: HIT`).
fn is_hit(response: &lambda_http::Response<lambda_http::Body>) -> bool {
    response.status() == 200
        && response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"HIT"))
}

/// The commands other than `MONITOR`'s own that the server on `port` runs
/// while `during` runs, in order.
async fn monitor<T>(
    port: u16,
    during: impl std::future::Future<Output = T>,
) -> Result<(T, Vec<Argv>), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/0")).map_err(|e| e.to_string())?;
    let mut monitor = client
        .get_async_monitor()
        .await
        .map_err(|e| e.to_string())?;
    let outcome = during.await;
    // A marker after the request: everything before it is the request's.
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let marker = format!("bench-hit-end-{}", uuid::Uuid::new_v4().simple());
    let _: () = redis::cmd("ECHO")
        .arg(&marker)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut lines = monitor.on_message::<String>();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next())
            .await
            .ok()
            .flatten()
            .ok_or("MONITOR did not see the end of the captured request")?;
        let Some(argv) = redis_side::parse_monitor_line(&line) else {
            continue;
        };
        if argv.get(1) == Some(&marker) {
            return Ok((outcome, seen));
        }
        // The connection setup of a state (HELLO, CLIENT SETINFO…) is not
        // the hit's.
        let setup = ["HELLO", "CLIENT", "SELECT", "AUTH", "PING"];
        if !argv
            .first()
            .is_some_and(|c| setup.iter().any(|s| c.eq_ignore_ascii_case(s)))
        {
            seen.push(argv);
        }
    }
}

/// The summary request of a hit, parsed once; each timed request is built
/// from it right before it is served (a few clones, as figure 2 builds its
/// ingests), so our client leaves Redis its core.
struct Template {
    parts: lambda_http::http::request::Parts,
    context: ApiGatewayV2httpRequestContext,
}

impl Template {
    fn new(metric_type: &str) -> Result<Self, String> {
        let (parts, _) = events::summary(metric_type, "daily", false)?.into_parts();
        let Some(RequestContext::ApiGatewayV2(context)) = parts.extensions.request_context_ref()
        else {
            return Err("the synthetic summary event has no API Gateway v2 context".into());
        };
        let context = context.clone();
        Ok(Self { parts, context })
    }

    fn build(&self, client_ip: &str) -> lambda_http::Request {
        let mut context = self.context.clone();
        context.http.source_ip = Some(client_ip.to_string());
        let mut req = lambda_http::Request::new(lambda_http::Body::Empty);
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = self.parts.uri.clone();
        *req.headers_mut() = self.parts.headers.clone();
        *req.extensions_mut() = self.parts.extensions.clone();
        req.with_request_context(RequestContext::ApiGatewayV2(context))
    }
}

/// One run: [`ROUNDS`] rounds of *`GET` replay, ours*, `n` requests per
/// side, at [`CONCURRENCY`]; the samples are added to `out`.
///
/// # Errors
/// A message when Redis, `redis-benchmark` or a state fails.
pub async fn run(
    port: u16,
    config: &Config,
    conn: &mut redis::aio::MultiplexedConnection,
    prepared: &Prepared,
    n: usize,
    out: &mut CacheHit,
) -> Result<(), String> {
    let c = CONCURRENCY;
    let slice = n / ROUNDS;
    out.concurrency = c;
    out.requests = slice * ROUNDS;
    out.command = redis_side::command_line(slice, c, &prepared.get);
    let states: Vec<Arc<AppState>> = (0..c)
        .map(|_| {
            AppState::new(config.clone())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    // Connects every state, untimed.
    for state in &states {
        let req = events::summary(&prepared.metric_type, "daily", false)?;
        if !is_hit(&metrics_summary(state, req).await) {
            return Err("a warm-up summary was not a hit".into());
        }
    }
    let template = Arc::new(Template::new(&prepared.metric_type)?);
    let (mut ours, mut get) = (Side::default(), Side::default());
    for _ in 0..ROUNDS {
        let before = Counters::read(conn).await?;
        let replay = redis_side::redis_benchmark(port, slice, c, &prepared.get)?;
        let used = Counters::read(conn).await?.since(&before);
        get.requests += slice;
        get.elapsed_s += slice as f64 / replay.rps;
        get.cpu_s += used.cpu_s;
        get.commands += used.commands;

        let before = Counters::read(conn).await?;
        let started = std::time::Instant::now();
        let mut tasks = Vec::with_capacity(c);
        for (worker, state) in states.iter().enumerate() {
            let state = Arc::clone(state);
            let template = Arc::clone(&template);
            let count = slice / c + usize::from(worker < slice % c);
            // Each instance's requests from clients of its own.
            let ips: Vec<String> = (0..8).map(|_| events::next_client_ip()).collect();
            tasks.push(tokio::spawn(async move {
                let mut not_hit = 0u64;
                for i in 0..count {
                    let req = template.build(&ips[i % ips.len()]);
                    not_hit += u64::from(!is_hit(&metrics_summary(&state, req).await));
                }
                not_hit
            }));
        }
        for task in tasks {
            out.not_hit += task.await.map_err(|e| e.to_string())?;
        }
        let elapsed_s = started.elapsed().as_secs_f64();
        let used = Counters::read(conn).await?.since(&before);
        ours.requests += slice;
        ours.elapsed_s += elapsed_s;
        ours.cpu_s += used.cpu_s;
        ours.commands += used.commands;
    }
    let per = |side: &Side| side.cpu_s * 1e6 / side.requests as f64;
    out.ours_cpu_us.push(per(&ours));
    out.get_cpu_us.push(per(&get));
    out.ours_rps.push(ours.requests as f64 / ours.elapsed_s);
    out.get_rps.push(get.requests as f64 / get.elapsed_s);
    out.ours_commands
        .push(ours.commands as f64 / ours.requests as f64);
    Ok(())
}

/// The server's CPU and the commands it has run (all of them, from
/// `INFO commandstats`), less the `INFO` calls that read them.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    cpu_s: f64,
    commands: u64,
}

impl Counters {
    async fn read(conn: &mut redis::aio::MultiplexedConnection) -> Result<Self, String> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self::parse(&info))
    }

    fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // cmdstat_get:calls=3,usec=120,…; INFO itself is not a request's.
        let commands = info
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| {
                let calls = l.split_once("calls=")?.1;
                calls.split(',').next()?.trim().parse::<u64>().ok()
            })
            .sum();
        Self {
            cpu_s: field("used_cpu_sys:") + field("used_cpu_user:"),
            commands,
        }
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            cpu_s: self.cpu_s - earlier.cpu_s,
            commands: self.commands.saturating_sub(earlier.commands),
        }
    }
}

/// `median (min–max)` with `digits` decimals, `–` without samples.
fn spread(samples: &[f64], digits: usize) -> String {
    match Spread::of(samples) {
        Some(s) if s.n == 1 => format!("{:.digits$}", s.median),
        Some(s) => format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        ),
        None => "–".into(),
    }
}

/// `v` rounded, with a comma every three digits.
fn thousands(v: f64) -> String {
    let digits = (v.round().max(0.0) as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(samples: &[f64]) -> f64 {
    Spread::of(samples).map_or(f64::NAN, |s| s.median)
}

/// The block `table:cache-hit`.
pub fn table(r: &CacheHit) -> String {
    if r.ours_cpu_us.is_empty() {
        return "Figure 8 was not run.".into();
    }
    let rate = |v: &[f64]| match Spread::of(v) {
        Some(s) => format!(
            "{} ({}–{})",
            thousands(s.median),
            thousands(s.min),
            thousands(s.max)
        ),
        None => "–".into(),
    };
    format!(
        "| C | requests per run and side | cached entry (bytes) | Redis CPU per hit, ours (µs) | \
         Redis CPU per `GET`, `redis-benchmark` (µs) | **ours / `GET`, per run** | commands per hit, ours | \
         hits/s, ours | `GET`s/s, `redis-benchmark` |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | **{}** | {} | {} | {} |\n\n\
         Answers other than a 200 hit, all runs: {}. The `redis-benchmark` command of one round:\n\n\
         ```sh\n{}\n```",
        r.concurrency,
        thousands(r.requests as f64),
        r.value_bytes,
        spread(&r.ours_cpu_us, 1),
        spread(&r.get_cpu_us, 1),
        spread(&r.ratios(), 2),
        spread(&r.ours_commands, 2),
        rate(&r.ours_rps),
        rate(&r.get_rps),
        r.not_hit,
        r.command
    )
}

/// The headline row of figure 8, if it ran: figure, result, target, met.
pub fn headline(r: &CacheHit) -> Option<Vec<String>> {
    if r.ours_cpu_us.is_empty() {
        return None;
    }
    let ratio = median(&r.ratios());
    Some(vec![
        format!(
            "8. Redis CPU per summary cache hit vs `GET` of the same {}-byte value, concurrency {}",
            r.value_bytes, r.concurrency
        ),
        format!(
            "{:.1} µs vs {:.1} µs; ratio per run **{}**",
            median(&r.ours_cpu_us),
            median(&r.get_cpu_us),
            spread(&r.ratios(), 2)
        ),
        format!("≤ {TARGET}"),
        if ratio <= TARGET && r.not_hit == 0 {
            "met".into()
        } else {
            "**not met**".into()
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_every_command_but_info() {
        let info = "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\n# Commandstats\r\n\
                    cmdstat_get:calls=30,usec=120,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_evalsha:calls=2,usec=90,usec_per_call=45.00\r\n\
                    cmdstat_info:calls=3,usec=90,usec_per_call=30.00\r\n";
        let c = Counters::parse(info);
        assert!((c.cpu_s - 3.75).abs() < 1e-9);
        assert_eq!(c.commands, 32);
    }

    #[test]
    fn the_table_and_headline_say_the_ratio_per_run() {
        let r = CacheHit {
            concurrency: 64,
            requests: 30_000,
            value_bytes: 400,
            command: "redis-benchmark …".into(),
            ours_cpu_us: vec![12.0, 11.0, 13.0],
            get_cpu_us: vec![10.0, 10.0, 10.0],
            ours_rps: vec![1.0; 3],
            get_rps: vec![1.0; 3],
            ours_commands: vec![1.0; 3],
            not_hit: 0,
        };
        assert!(table(&r).contains("**1.20 (1.10–1.30)**"));
        assert!(table(&r).contains("| 64 | 30,000 | 400 |"));
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        let row = headline(&r).unwrap();
        assert_eq!(row[3], "met");
        assert!(headline(&CacheHit::default()).is_none());
        assert_eq!(table(&CacheHit::default()), "Figure 8 was not run.");
    }
}
