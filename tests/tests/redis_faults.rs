//! Redis faults, injected for real: a paused or busy Redis, a Redis killed
//! and restarted, a flushed script cache, a reply lost after the write, a
//! fault-injection run that kills Redis repeatedly under load, connections
//! closed while idle (`timeout 1`, a restart), a node turned replica, a
//! Redis user that may not run scripts, and a Redis out of memory.
//!
//! Every test runs against its own private `redis-server` (never the shared
//! one), through the real handlers in-process. What they hold the service to:
//! while Redis cannot answer, every request answers 503 with `Retry-After`
//! and a problem body within a bound derived from `REDIS_TIMEOUT_MS` (never a
//! hang, never a 500); the same warm state serves again by itself once Redis
//! is back, reloading its scripts; a connection closed while idle costs no
//! request; every acknowledged metric is counted exactly once, however often
//! the client had to retry; and a fault that retrying cannot fix is a named
//! 500 (507 out of memory, where reads are still served) without
//! `Retry-After`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use analytics_tests::logs::CapturedLogs;
use analytics_tests::private_redis::PrivateRedis;
use analytics_tests::{body_json, config_with_prefix, http_v2, random_prefix, random_type};
use chrono::Utc;
use futures::StreamExt;
use lambda_http::{Body, Response};
use rand::Rng;
use serde_json::{json, Value};
use shared::handlers::{health, ingest_metric, metrics_series, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Keeps the limiter and the external source out of the way: these tests are
/// about Redis.
const GENEROUS: [(&str, &str); 4] = [
    ("RATE_LIMIT_REQUESTS", "1000000"),
    ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
    ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
    ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
];

/// `REDIS_TIMEOUT_MS` of the pause, sleep and restart tests.
const TIMEOUT_MS: u64 = 300;

/// The correctness bound on an answer while Redis cannot answer: a handful of
/// `REDIS_TIMEOUT_MS`, well under the 3 s request deadline. Not a benchmark:
/// it only tells "answered because of the Redis timeout" from "hung until
/// the deadline (or forever)".
fn unavailable_bound() -> Duration {
    Duration::from_millis(4 * TIMEOUT_MS)
}

/// One "Lambda instance" of a deployment whose keys live under `prefix`, on
/// the private (single-node) server at `url`, whatever the suite's
/// `REDIS_MODE` (the cluster counterparts are in `cluster_failover.rs`).
fn instance(url: &str, prefix: &str, pairs: &[(&str, &str)]) -> AppState {
    let mut all: Vec<(&str, &str)> = GENEROUS.to_vec();
    all.push(("REDIS_URL", url));
    all.push(("REDIS_MODE", "standalone"));
    all.extend_from_slice(pairs);
    AppState::new(config_with_prefix(prefix, &all)).unwrap()
}

fn metric(t: &str, value: f64) -> Value {
    json!({"timestamp": format_timestamp(Utc::now()), "value": value, "type": t})
}

async fn post(state: &AppState, key: Option<&str>, body: &Value) -> Response<Body> {
    let mut event = http_v2("POST", "/api/metrics").json(body);
    if let Some(key) = key {
        event = event.header("Idempotency-Key", key);
    }
    ingest_metric(state, event.build()).await
}

async fn get_health(state: &AppState) -> Response<Body> {
    health(state, http_v2("GET", "/health").build()).await
}

/// The hourly summary of `t`, recomputed (`Cache-Control: no-cache`) so that
/// it shows what is stored now.
async fn get_summary(state: &AppState, t: &str) -> Response<Body> {
    metrics_summary(
        state,
        http_v2("GET", "/api/metrics/summary")
            .query(&format!("type={t}&period=hourly"))
            .header("cache-control", "no-cache")
            .build(),
    )
    .await
}

async fn timed<F: std::future::Future>(work: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let output = work.await;
    (output, started.elapsed())
}

/// A 503 with `Retry-After` ≥ 1 and the endpoint's error body, within
/// [`unavailable_bound`].
fn assert_unavailable(what: &str, response: &Response<Body>, elapsed: Duration) {
    let body = body_json(response);
    assert_eq!(response.status(), 503, "{what}: {body}");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no numeric Retry-After"));
    assert!(retry_after >= 1, "{what}");
    if what.contains("health") {
        assert_eq!(body["status"], "unavailable", "{what}: {body}");
        assert_eq!(body["redis"], "unhealthy", "{what}: {body}");
        assert_eq!(
            body["conditions"][0]["name"], "redis_unavailable",
            "{what}: {body}"
        );
    } else {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        assert_eq!(body["status"], 503, "{what}: {body}");
        assert_eq!(
            body["type"], "urn:analytics-api:problem:service-unavailable",
            "{what}: {body}"
        );
    }
    assert!(
        elapsed < unavailable_bound(),
        "{what}: answered after {elapsed:?}, bound {:?}",
        unavailable_bound()
    );
}

/// The summary's `count` after checking that it is a 200.
fn summary_count(what: &str, response: &Response<Body>) -> u64 {
    let body = body_json(response);
    assert_eq!(response.status(), 200, "{what}: {body}");
    body["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {body}"))
}

/// A plain connection to the private server, for the test's own commands.
/// Its timeouts are long (the client's defaults are 1 s and 0.5 s), so that it
/// can wait out a stall.
async fn admin(server: &PrivateRedis) -> redis::aio::MultiplexedConnection {
    let patient = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .unwrap()
}

/// One field of `INFO <section>`, e.g. `number_of_cached_scripts` of `memory`.
async fn info(server: &PrivateRedis, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut admin(server).await)
        .await
        .unwrap();
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

async fn cached_scripts(server: &PrivateRedis) -> u64 {
    info(server, "memory", "number_of_cached_scripts")
        .await
        .parse()
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Stall {
    /// `CLIENT PAUSE <ms> ALL`: every client's commands wait.
    Pause,
    /// `DEBUG SLEEP <s>`: the server's only thread is busy.
    Busy,
}

/// While Redis stalls, every endpoint of a warm instance, and of a cold one
/// that connects for the first time during the stall, answers a bounded 503;
/// when the stall ends the same states answer 200/201 on their first request,
/// and the POST retried with its `Idempotency-Key` is counted once.
async fn stalled_redis_is_a_bounded_503_then_the_same_state_serves(stall: Stall) {
    let server = PrivateRedis::start_with(&["--enable-debug-command", "local"]);
    let prefix = random_prefix();
    let timeout = TIMEOUT_MS.to_string();
    let pairs = [("REDIS_TIMEOUT_MS", timeout.as_str())];
    let warm = instance(&server.url(), &prefix, &pairs);
    let cold = instance(&server.url(), &prefix, &pairs);
    let t = random_type("stall");
    assert_eq!(get_health(&warm).await.status(), 200);
    assert_eq!(post(&warm, None, &metric(&t, 1.0)).await.status(), 201);
    assert_eq!(summary_count("warm-up", &get_summary(&warm, &t).await), 1);

    // Long enough for every request below to time out inside it.
    let stall_ms: u64 = 2_000;
    let _busy_client = match stall {
        Stall::Pause => {
            let _: () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(stall_ms)
                .arg("ALL")
                .query_async(&mut admin(&server).await)
                .await
                .unwrap();
            None
        }
        Stall::Busy => {
            // Sent without waiting for the reply, which comes when the sleep ends.
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
            write!(stream, "DEBUG SLEEP {}\r\n", stall_ms as f64 / 1000.0).unwrap();
            stream.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some(stream)
        }
    };
    let stalled_at = Instant::now();

    let warm_body = metric(&t, 2.0);
    let cold_body = metric(&t, 3.0);
    let (wh, wp, ws, ch, cp, cs) = tokio::join!(
        timed(get_health(&warm)),
        timed(post(&warm, Some("stalled-warm"), &warm_body)),
        timed(get_summary(&warm, &t)),
        timed(get_health(&cold)),
        timed(post(&cold, Some("stalled-cold"), &cold_body)),
        timed(get_summary(&cold, &t)),
    );
    assert_unavailable("warm health", &wh.0, wh.1);
    assert_unavailable("warm ingest", &wp.0, wp.1);
    assert_unavailable("warm summary", &ws.0, ws.1);
    assert_unavailable("cold health", &ch.0, ch.1);
    assert_unavailable("cold ingest", &cp.0, cp.1);
    assert_unavailable("cold summary", &cs.0, cs.1);
    assert!(
        stalled_at.elapsed() < Duration::from_millis(stall_ms),
        "the requests must have been answered during the {stall:?}"
    );

    // A new connection's PING is answered once the stall is over.
    let _: String = tokio::time::timeout(Duration::from_secs(10), async {
        redis::cmd("PING")
            .query_async(&mut admin(&server).await)
            .await
            .unwrap()
    })
    .await
    .expect("the stall ends");

    // The same states, not rebuilt: each endpoint's first request succeeds.
    for (name, state) in [("warm", &warm), ("cold", &cold)] {
        let response = get_health(state).await;
        assert_eq!(response.status(), 200, "{name}: {}", body_json(&response));
    }
    let retried = post(&warm, Some("stalled-warm"), &warm_body).await;
    assert_eq!(retried.status(), 201, "{}", body_json(&retried));
    let retried = post(&cold, Some("stalled-cold"), &cold_body).await;
    assert_eq!(retried.status(), 201, "{}", body_json(&retried));
    assert_eq!(summary_count("warm", &get_summary(&warm, &t).await), 3);
    assert_eq!(summary_count("cold", &get_summary(&cold, &t).await), 3);
}

#[tokio::test]
async fn a_paused_redis_is_a_bounded_503_and_the_same_state_serves_after_the_pause() {
    stalled_redis_is_a_bounded_503_then_the_same_state_serves(Stall::Pause).await;
}

#[tokio::test]
async fn a_busy_redis_is_a_bounded_503_and_the_same_state_serves_after_the_sleep() {
    stalled_redis_is_a_bounded_503_then_the_same_state_serves(Stall::Busy).await;
}

/// SIGKILL: connections drop and nothing listens. Every endpoint answers a
/// bounded 503; once Redis is back on the same port the warm state
/// reconnects by itself and reloads its scripts, which died with the server.
#[tokio::test]
async fn a_killed_and_restarted_redis_is_recovered_by_the_warm_state() {
    let mut server = PrivateRedis::start();
    let timeout = TIMEOUT_MS.to_string();
    let state = instance(
        &server.url(),
        &random_prefix(),
        &[("REDIS_TIMEOUT_MS", &timeout)],
    );
    let t = random_type("restart");
    assert_eq!(get_health(&state).await.status(), 200);
    assert_eq!(post(&state, None, &metric(&t, 1.0)).await.status(), 201);
    assert_eq!(summary_count("warm-up", &get_summary(&state, &t).await), 1);

    server.kill();
    let while_down = metric(&t, 2.0);
    for round in 0..2 {
        let (h, p, s) = tokio::join!(
            timed(get_health(&state)),
            timed(post(&state, Some("while-down"), &while_down)),
            timed(get_summary(&state, &t)),
        );
        assert_unavailable(&format!("health, round {round}"), &h.0, h.1);
        assert_unavailable(&format!("ingest, round {round}"), &p.0, p.1);
        assert_unavailable(&format!("summary, round {round}"), &s.0, s.1);
    }

    // Idle while Redis is down, as an instance between requests: whatever the
    // connection does in the background happens now. Then restart off the
    // runtime's thread, so that the runtime keeps running meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    assert_eq!(cached_scripts(&server).await, 0);
    // The first request after Redis is back succeeds.
    let response = get_health(&state).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    // Persistence is off: the restarted server is empty, scripts included.
    let response = post(&state, None, &metric(&t, 3.0)).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    assert_eq!(
        summary_count("after restart", &get_summary(&state, &t).await),
        1
    );
    assert!(cached_scripts(&server).await > 0);
}

/// After `SCRIPT FLUSH` the first request of each endpoint succeeds: every
/// script is loaded again on `NOSCRIPT` within the same request.
#[tokio::test]
async fn after_script_flush_the_first_request_of_each_endpoint_succeeds() {
    let server = PrivateRedis::start();
    let state = instance(&server.url(), &random_prefix(), &[]);
    let t = random_type("flush");
    assert_eq!(post(&state, None, &metric(&t, 1.0)).await.status(), 201);
    assert_eq!(summary_count("warm-up", &get_summary(&state, &t).await), 1);
    let flush = || async {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut admin(&server).await)
            .await
            .unwrap();
        assert_eq!(cached_scripts(&server).await, 0);
    };

    let second = metric(&t, 2.0);
    flush().await;
    let response = post(&state, Some("after-flush"), &second).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    flush().await;
    assert_eq!(
        summary_count("after flush", &get_summary(&state, &t).await),
        2
    );
    flush().await;
    assert_eq!(get_health(&state).await.status(), 200);
    flush().await;
    // The limiter's script first, then the ingest script (a replay).
    let response = post(&state, Some("after-flush"), &second).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(summary_count("replayed", &get_summary(&state, &t).await), 2);
}

/// A loopback TCP proxy in front of a Redis that can lose one reply: once
/// armed with a marker, the first client command containing it is forwarded
/// (so Redis runs it) but its reply is swallowed and the client connection
/// closed, as when a connection breaks between the write and the answer.
/// Armed with a delay instead ([`LossyProxy::delay_reply_to_command_containing`]),
/// it holds that reply back for the delay and then delivers it.
struct LossyProxy {
    port: u16,
    marker: Arc<Mutex<Option<Vec<u8>>>>,
    delay: Arc<Mutex<Option<Duration>>>,
    lost: Arc<AtomicUsize>,
}

impl LossyProxy {
    async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let marker: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let delay: Arc<Mutex<Option<Duration>>> = Arc::default();
        let lost = Arc::new(AtomicUsize::new(0));
        let (accept_marker, accept_lost, accept_delay) =
            (marker.clone(), lost.clone(), delay.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    server,
                    accept_marker.clone(),
                    accept_delay.clone(),
                    accept_lost.clone(),
                ));
            }
        });
        Self {
            port,
            marker,
            delay,
            lost,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn lose_reply_to_command_containing(&self, marker: &str) {
        *self.marker.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    fn delay_reply_to_command_containing(&self, marker: &str, delay: Duration) {
        *self.delay.lock().unwrap() = Some(delay);
        self.lose_reply_to_command_containing(marker);
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    marker: Arc<Mutex<Option<Vec<u8>>>>,
    delay: Arc<Mutex<Option<Duration>>>,
    lost: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let lose_next_reply = Arc::new(AtomicBool::new(false));
    let arm = lose_next_reply.clone();
    let upstream = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            {
                let mut marker = marker.lock().unwrap();
                let hit = marker
                    .as_ref()
                    .is_some_and(|m| chunk.windows(m.len()).any(|w| w == m.as_slice()));
                if hit {
                    *marker = None;
                    arm.store(true, Ordering::SeqCst);
                }
            }
            if server_write.write_all(chunk).await.is_err() {
                break;
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if lose_next_reply.load(Ordering::SeqCst) {
            let held = delay.lock().unwrap().take();
            if let Some(held) = held {
                lose_next_reply.store(false, Ordering::SeqCst);
                tokio::time::sleep(held).await;
            } else {
                lost.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        if client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
}

/// A request the limiter let through and that then runs out of
/// `REQUEST_DEADLINE_MS` while storing still reports the limiter's state:
/// every response that passed the limiter carries the `RateLimit` fields.
#[tokio::test]
async fn a_deadline_after_the_limiter_still_reports_the_rate_limit() {
    let server = PrivateRedis::start();
    let proxy = LossyProxy::start(server.port()).await;
    let state = instance(
        &proxy.url(),
        &random_prefix(),
        &[
            ("REDIS_TIMEOUT_MS", "5000"),
            ("REQUEST_DEADLINE_MS", "400"),
            ("EXTERNAL_SERVICE_TIMEOUT_MS", "100"),
        ],
    );
    let warm_up = random_type("warmup");
    assert_eq!(
        post(&state, None, &metric(&warm_up, 1.0)).await.status(),
        201
    );

    let t = random_type("slow_store");
    // The storage call: the type's hash tag is in its keys only.
    proxy.delay_reply_to_command_containing(&format!("{{{t}}}"), Duration::from_millis(1500));
    let response = post(&state, None, &metric(&t, 1.0)).await;
    assert_eq!(response.status(), 503, "{}", body_json(&response));
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        response.headers().contains_key("ratelimit"),
        "{:?}",
        response.headers()
    );
    assert!(response.headers().contains_key("ratelimit-policy"));
}

/// The case idempotency keys exist for: the ingest script ran and its write
/// is stored, but the reply never reached the function, which can only
/// answer 503. The client's retry with the same key is answered from the
/// stored record and counts nothing twice.
#[tokio::test]
async fn a_write_whose_reply_was_lost_is_not_counted_twice_on_a_retry_with_its_key() {
    let server = PrivateRedis::start();
    let proxy = LossyProxy::start(server.port()).await;
    let state = instance(&proxy.url(), &random_prefix(), &[]);
    // Loads the limiter and ingest scripts, so the marked command is the
    // ingest script itself and not a NOSCRIPT round.
    let warm_up = random_type("warmup");
    assert_eq!(
        post(&state, None, &metric(&warm_up, 1.0)).await.status(),
        201
    );

    let t = random_type("lost");
    let body = metric(&t, 7.0);
    // The type's hash tag appears in the ingest script's keys only (the
    // limiter's keys name the client, the type registry's claim the bare type).
    proxy.lose_reply_to_command_containing(&format!("{{{t}}}"));
    let first = post(&state, Some("lost-reply-1"), &body).await;
    assert_eq!(proxy.lost.load(Ordering::SeqCst), 1, "no reply was lost");
    assert_eq!(first.status(), 503, "{}", body_json(&first));
    assert!(first.headers().contains_key("retry-after"));
    // A 503 does not mean "not stored": the write happened.
    assert_eq!(
        summary_count("after the lost reply", &get_summary(&state, &t).await),
        1
    );

    let retry = post(&state, Some("lost-reply-1"), &body).await;
    assert_eq!(retry.status(), 201, "{}", body_json(&retry));
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(body_json(&retry)["metric"]["value"], 7.0);
    assert_eq!(
        summary_count("after the retry", &get_summary(&state, &t).await),
        1
    );
}

/// Sets the flag when dropped, also when the test fails: stops the chaos
/// thread, which then drops (and so stops) its Redis.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What one metric's client saw until it was acknowledged.
#[derive(Debug, Clone)]
struct Delivery {
    /// Requests sent, the acknowledged one included.
    attempts: u32,
    /// Whether the 201 was a replay (an earlier attempt had been stored).
    replayed: bool,
    /// Whether a 201 was received at all (within the bounded attempts).
    acknowledged: bool,
    /// Statuses other than 201 and 503, with their bodies.
    unexpected: Vec<String>,
    /// The slowest answer this client got.
    slowest: Duration,
}

/// Sends one metric under its own `Idempotency-Key`, retrying with the SAME
/// key (and the same body) on 503 with a capped exponential backoff plus
/// jitter until a 201 or `max_attempts`. The backoff is shorter than the
/// 1 s `Retry-After` to keep the test short; a retry's timing does not change
/// what is stored.
async fn deliver(state: &AppState, key: &str, body: &Value, max_attempts: u32) -> Delivery {
    let mut delivery = Delivery {
        attempts: 0,
        replayed: false,
        acknowledged: false,
        unexpected: Vec::new(),
        slowest: Duration::ZERO,
    };
    while delivery.attempts < max_attempts {
        delivery.attempts += 1;
        let (response, elapsed) = timed(post(state, Some(key), body)).await;
        delivery.slowest = delivery.slowest.max(elapsed);
        match response.status().as_u16() {
            201 => {
                delivery.acknowledged = true;
                delivery.replayed = response.headers().contains_key("idempotent-replayed");
                return delivery;
            }
            503 => {
                assert!(response.headers().contains_key("retry-after"), "{key}");
                let cap = 400u64;
                let backoff = (10u64 << delivery.attempts.min(6)).min(cap);
                let jitter = rand::rng().random_range(0..=backoff / 2);
                tokio::time::sleep(Duration::from_millis(backoff + jitter)).await;
            }
            status => {
                delivery
                    .unexpected
                    .push(format!("{status}: {}", body_json(&response)));
                return delivery;
            }
        }
    }
    delivery
}

/// The fault-injection run. A private Redis with `appendonly yes` and
/// `appendfsync always` (every acknowledged write is on disk before the
/// reply) is SIGKILLed and restarted on the same port and directory several
/// times while a client sends a few thousand single metrics through three
/// independent instances, each metric with its own `Idempotency-Key`,
/// retried with that key until acknowledged. One more kill after the last
/// acknowledgement makes every count come from the replayed append-only
/// file. Then every acknowledged metric is counted exactly once.
///
/// Each metric has its own type, so its summary shows exactly how often it
/// was counted (0 = lost, 2 or more = duplicated) and with which value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_metrics_are_counted_exactly_once_across_kills_and_restarts() {
    const METRICS: usize = 2_000;
    const IN_FLIGHT: usize = 16;
    const KILLS: usize = 5;
    const MAX_ATTEMPTS: u32 = 60;

    let mut server = PrivateRedis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let prefix = random_prefix();
    // Every metric is a type of its own: room for all of them.
    let pairs = [
        ("REDIS_TIMEOUT_MS", "200"),
        ("REQUEST_DEADLINE_MS", "1000"),
        ("MAX_METRIC_TYPES", "10000"),
        ("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "10000"),
    ];
    let instances: Arc<Vec<AppState>> =
        Arc::new((0..3).map(|_| instance(&url, &prefix, &pairs)).collect());
    let base = random_type("chaos");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let metrics: Vec<(String, String, Value)> = (0..METRICS)
        .map(|i| {
            let t = format!("{base}_{i}");
            let body = json!({
                "timestamp": format_timestamp(Utc::now()),
                "value": (i + 1) as f64,
                "type": t,
            });
            (format!("chaos-{run}-{i}"), t, body)
        })
        .collect();

    // The chaos: kill, stay down briefly, restart. Kill k happens at a random
    // point of the k-th sixth of the run, counted in acknowledgements (here
    // every few hundred ms), so that every kill lands in live traffic
    // whatever the machine's speed; the last one leaves a twelfth to go.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let client_done = Arc::new(AtomicBool::new(false));
    let _stop_chaos = SetOnDrop(client_done.clone());
    let chaos = {
        let (acknowledged, client_done) = (acknowledged.clone(), client_done.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rng();
            let segment = METRICS / (KILLS + 1);
            let mut kills = 0;
            for k in 1..=KILLS {
                let at = k * segment + rng.random_range(0..segment / 2);
                while acknowledged.load(Ordering::SeqCst) < at {
                    if client_done.load(Ordering::SeqCst) {
                        return (server, kills);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                server.kill();
                kills += 1;
                std::thread::sleep(Duration::from_millis(rng.random_range(20..=150)));
                server.restart();
            }
            (server, kills)
        })
    };

    let started = Instant::now();
    let mut deliveries: Vec<(usize, Delivery)> = tokio::time::timeout(
        Duration::from_secs(45),
        futures::stream::iter(metrics.iter().enumerate())
            .map(|(i, (key, _, body))| {
                let (instances, acknowledged) = (instances.clone(), acknowledged.clone());
                async move {
                    let delivery =
                        deliver(&instances[i % instances.len()], key, body, MAX_ATTEMPTS).await;
                    if delivery.acknowledged {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    (i, delivery)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect(),
    )
    .await
    .expect("the client finished within its time bound (a request hung?)");
    let sending_took = started.elapsed();
    client_done.store(true, Ordering::SeqCst);
    // In completion order until now.
    deliveries.sort_by_key(|(i, _)| *i);
    let deliveries: Vec<Delivery> = deliveries.into_iter().map(|(_, d)| d).collect();

    // Everything acknowledged must already be on disk: one more kill, so that
    // every count below comes from the replayed append-only file.
    let (server, kills) = tokio::task::spawn_blocking(move || {
        let (mut server, kills) = chaos.join().expect("the chaos thread");
        server.kill();
        server.restart();
        (server, kills)
    })
    .await
    .unwrap();

    let unexpected: Vec<&String> = deliveries.iter().flat_map(|d| &d.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "never a 500 or other surprise: {unexpected:?}"
    );
    let slowest = deliveries
        .iter()
        .map(|d| d.slowest)
        .max()
        .unwrap_or_default();
    // A bound, not a benchmark: no request outlived its 1 s deadline by much.
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?}"
    );
    let acked = deliveries.iter().filter(|d| d.acknowledged).count();
    assert_eq!(info(&server, "persistence", "aof_enabled").await, "1");

    // Verify through a recovered warm instance, a few requests at a time.
    let verifier = &instances[0];
    let mut recovered = false;
    for _ in 0..50 {
        if get_health(verifier).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the warm instance did not recover after the last restart"
    );
    let counts: HashMap<usize, (u64, f64)> = futures::stream::iter(metrics.iter().enumerate())
        .map(|(i, (_, t, _))| async move {
            // A 503 is a fair answer from a loaded machine (this Redis syncs
            // every write to disk); it is the counts that are checked here.
            let mut response = get_summary(verifier, t).await;
            for _ in 0..20 {
                if response.status() != 503 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                response = get_summary(verifier, t).await;
            }
            let body = body_json(&response);
            assert_eq!(response.status(), 200, "{t}: {body}");
            (
                i,
                (
                    body["count"].as_u64().unwrap(),
                    body["sum"].as_f64().unwrap(),
                ),
            )
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;

    let mut counted = 0u64;
    let mut duplicates = 0u64;
    let mut lost = Vec::new();
    let mut wrong_value = Vec::new();
    let mut stored_unacknowledged = 0;
    for (i, delivery) in deliveries.iter().enumerate() {
        let (count, sum) = counts[&i];
        counted += count;
        duplicates += count.saturating_sub(1);
        if count >= 1 && sum != count as f64 * (i + 1) as f64 {
            wrong_value.push(i);
        }
        match (delivery.acknowledged, count) {
            (true, 0) => lost.push(i),
            (false, 1..) => stored_unacknowledged += 1,
            _ => {}
        }
    }
    let retried = deliveries.iter().filter(|d| d.attempts > 1).count();
    let replayed = deliveries.iter().filter(|d| d.replayed).count();
    let max_attempts = deliveries.iter().map(|d| d.attempts).max().unwrap_or(0);
    let requests: u32 = deliveries.iter().map(|d| d.attempts).sum();
    eprintln!(
        "fault injection: {METRICS} metrics, {requests} requests in {sending_took:?}, \
         {kills} kills; acknowledged {acked}, counted {counted}, duplicates {duplicates}, \
         lost {}, needed a retry {retried} (at most {max_attempts} attempts), \
         acknowledged as a replay {replayed}, stored but never acknowledged \
         {stored_unacknowledged}, slowest answer {slowest:?}",
        lost.len()
    );

    assert_eq!(
        kills, KILLS,
        "every kill happened while the client was sending"
    );
    assert!(retried > 0, "the kills were never seen by the client");
    assert_eq!(
        acked, METRICS,
        "every metric was acknowledged within {MAX_ATTEMPTS} attempts"
    );
    assert!(lost.is_empty(), "acknowledged but not counted: {lost:?}");
    assert_eq!(duplicates, 0, "counted more than once");
    assert!(
        wrong_value.is_empty(),
        "counted with another value: {wrong_value:?}"
    );
    assert_eq!(counted, acked as u64, "acknowledged = counted");
}

/// `total_connections_received` of `INFO stats`: how many connections the
/// server accepted since it started.
async fn connections_received(server: &PrivateRedis) -> u64 {
    info(server, "stats", "total_connections_received")
        .await
        .parse()
        .unwrap()
}

/// Redis' `timeout 1` closes every connection idle for more than a second,
/// as NAT gateways and proxies do with idle connections, and as happens to a
/// Lambda instance frozen between requests. Ten independent instances each
/// make a request every 2.5 s (health, ingest and summary in turn), so every
/// one of the 50 requests meets a connection the server closed while it was
/// idle: all are answered (no 503), every acknowledged metric is counted
/// once, and the server shows that the connections were indeed dropped and
/// made anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_while_idle_cost_no_request() {
    const INSTANCES: usize = 10;
    const ROUNDS: usize = 5;
    // Redis closes a connection idle for more than `timeout` whole seconds,
    // checked ten times a second: by 2.1 s at the latest.
    const IDLE: Duration = Duration::from_millis(2_500);
    let server = PrivateRedis::start_with(&["--timeout", "1"]);
    let prefix = random_prefix();
    let instances: Vec<AppState> = (0..INSTANCES)
        .map(|_| instance(&server.url(), &prefix, &[]))
        .collect();
    let t = random_type("idle");
    for state in &instances {
        assert_eq!(get_health(state).await.status(), 200);
    }
    let received_before = connections_received(&server).await;

    let answers: Vec<Vec<(&str, u16, Value)>> =
        futures::future::join_all(instances.iter().enumerate().map(|(i, state)| {
            let t = t.clone();
            async move {
                let mut answers = Vec::new();
                for round in 0..ROUNDS {
                    tokio::time::sleep(IDLE).await;
                    let (what, response) = match (i + round) % 3 {
                        0 => ("health", get_health(state).await),
                        1 => ("ingest", post(state, None, &metric(&t, 1.0)).await),
                        _ => ("summary", get_summary(state, &t).await),
                    };
                    answers.push((what, response.status().as_u16(), body_json(&response)));
                }
                answers
            }
        }))
        .await;

    let answers: Vec<(&str, u16, Value)> = answers.into_iter().flatten().collect();
    assert_eq!(answers.len(), INSTANCES * ROUNDS);
    let failed: Vec<&(&str, u16, Value)> = answers
        .iter()
        .filter(|(what, status, _)| *status != if *what == "ingest" { 201 } else { 200 })
        .collect();
    assert!(failed.is_empty(), "answers after an idle drop: {failed:?}");
    let ingested = answers
        .iter()
        .filter(|(what, ..)| *what == "ingest")
        .count();
    assert_eq!(
        summary_count("after the rounds", &get_summary(&instances[0], &t).await),
        ingested as u64
    );
    let reconnected = connections_received(&server).await - received_before;
    assert!(
        reconnected >= (INSTANCES * ROUNDS) as u64,
        "the server closed idle connections only {reconnected} times"
    );

    // A burst after an idle drop: every request of it, not only the first
    // to reach the closed connection, goes to the fresh one.
    tokio::time::sleep(IDLE).await;
    let burst = futures::future::join_all((0..12).map(|i| {
        let (state, t) = (&instances[0], t.clone());
        async move {
            match i % 3 {
                0 => get_health(state).await,
                1 => post(state, None, &metric(&t, 1.0)).await,
                _ => get_summary(state, &t).await,
            }
        }
    }))
    .await;
    for response in &burst {
        assert!(
            response.status().is_success(),
            "a request of the burst: {} {}",
            response.status(),
            body_json(response)
        );
    }
}

/// Connections to Redis carry TCP keepalive, probing after 60 s of silence
/// (the kernel's default would be two hours, or never without the option):
/// the kernel's table of this process' sockets shows the keepalive timer
/// armed on the client side of the connection, due within 60 s.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn connections_to_redis_use_tcp_keepalive() {
    let server = PrivateRedis::start();
    let state = instance(&server.url(), &random_prefix(), &[]);
    assert_eq!(get_health(&state).await.status(), 200);
    // /proc/net/tcp: `sl local rem st tx:rx tr:when ...`, addresses as
    // `HEX_IP:HEX_PORT`, state 01 = established, timer 2 = keepalive, its
    // due time in clock ticks (USER_HZ, 100 a second).
    let remote = format!(":{:04X}", server.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let timers: Vec<(u32, u64)> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let client_side = fields.get(2)?.ends_with(&remote) && fields.get(3)? == &"01";
            let (timer, when) = fields.get(5)?.split_once(':')?;
            client_side.then(|| {
                (
                    u32::from_str_radix(timer, 16).unwrap(),
                    u64::from_str_radix(when, 16).unwrap(),
                )
            })
        })
        .collect();
    assert_eq!(timers.len(), 1, "one connection to the server: {timers:?}");
    let (timer, when) = timers[0];
    assert_eq!(timer, 2, "the keepalive timer is armed");
    assert!(when <= 60 * 100, "first probe due in {when} ticks");
}

/// A problem response that is not to be retried: `status`, the problem
/// `type` `urn:analytics-api:problem:<name>`, and no `Retry-After`.
fn assert_permanent(what: &str, response: &Response<Body>, status: u16, name: &str) {
    let body = body_json(response);
    assert_eq!(response.status(), status, "{what}: {body}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    assert_eq!(
        body["type"],
        format!("urn:analytics-api:problem:{name}"),
        "{what}: {body}"
    );
    assert_eq!(body["status"], status, "{what}: {body}");
    assert!(
        !response.headers().contains_key("retry-after"),
        "{what}: a permanent fault must not invite a retry"
    );
}

async fn get_series(state: &AppState, t: &str) -> Response<Body> {
    metrics_series(
        state,
        http_v2("GET", "/api/metrics/series")
            .query(&format!("type={t}&period=hourly&step=15m"))
            .header("cache-control", "no-cache")
            .build(),
    )
    .await
}

/// A Redis user that may run everything but scripts (`-@scripting`): every
/// endpoint that needs a script answers 500 `store-permission-denied`
/// without `Retry-After` (retrying cannot help until the ACL changes), and
/// the error log names the fault and Redis' own reason, never the password.
#[tokio::test]
async fn a_user_without_scripting_gets_a_named_500_not_a_retry() {
    const PASSWORD: &str = "limited-Pa55word";
    let server = PrivateRedis::start();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg("on")
        .arg(format!(">{PASSWORD}"))
        .arg("~*")
        .arg("+@all")
        .arg("-@scripting")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    let url = format!("redis://limited:{PASSWORD}@127.0.0.1:{}/0", server.port());
    let state = instance(&url, &random_prefix(), &[]);
    let t = random_type("noperm");

    let logs = CapturedLogs::default();
    let guard = logs.install("info");
    let ingest = post(&state, Some("noperm"), &metric(&t, 1.0)).await;
    let summary = get_summary(&state, &t).await;
    let series = get_series(&state, &t).await;
    drop(guard);

    assert_permanent("ingest", &ingest, 500, "store-permission-denied");
    assert_permanent("summary", &summary, 500, "store-permission-denied");
    assert_permanent("series", &series, 500, "store-permission-denied");
    let lines = logs.lines();
    let errors: Vec<&Value> = lines
        .iter()
        .filter(|line| line["level"] == "ERROR" && line["fault"] == "permission_denied")
        .collect();
    assert_eq!(errors.len(), 3, "one error line per request: {lines:?}");
    for line in &errors {
        assert_eq!(line["error.code"], "NOPERM", "{line}");
        let error = line["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("evalsha"),
            "the log names Redis' reason: {line}"
        );
    }
    let text = format!("{lines:?}");
    assert!(!text.contains(PASSWORD), "the password was logged");
    // Nothing but the scripts is refused to this user: nothing was stored.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// Sets `maxmemory` 2 MiB above what the server uses, then writes 16 KiB
/// values until Redis answers `OOM`: a store filled up under `noeviction`.
/// Then `maxmemory` is lowered 1 MiB below what is used, so that the store
/// stays full while connections come and go (the buffers of a closed
/// connection are freed, which could otherwise make room for a few writes).
async fn fill_up(server: &PrivateRedis) {
    let used = || async {
        info(server, "memory", "used_memory")
            .await
            .parse::<u64>()
            .unwrap()
    };
    let mut admin = admin(server).await;
    let set_maxmemory = |bytes: u64| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("maxmemory").arg(bytes);
        cmd
    };
    let _: () = set_maxmemory(used().await + 2 * 1024 * 1024)
        .query_async(&mut admin)
        .await
        .unwrap();
    let filler = "x".repeat(16 * 1024);
    for i in 0.. {
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query_async(&mut admin)
            .await;
        match set {
            Ok(()) => assert!(i < 10_000, "Redis never refused a write"),
            Err(err) if err.code() == Some("OOM") => break,
            Err(err) => panic!("filling up: {err}"),
        }
    }
    let _: () = set_maxmemory(used().await - 1024 * 1024)
        .query_async(&mut admin)
        .await
        .unwrap();
}

/// Redis at `maxmemory` under `noeviction` refuses every write. An ingest is
/// refused with 507 `store-out-of-memory` (no `Retry-After`) and writes
/// nothing; a summary is still answered: a cached one from the cache, a
/// fresh one computed without it (taking the single-flight lock is a write)
/// and marked `max-age=0`; a series is answered without being counted by
/// its limiter; and a circuit breaker that would have to write to admit a
/// probe gives the external fallback instead of failing the summary.
#[tokio::test]
async fn out_of_memory_refuses_ingests_and_still_answers_summaries() {
    let server = PrivateRedis::start_with(&["--maxmemory-policy", "noeviction"]);
    let prefix = random_prefix();
    let state = instance(&server.url(), &prefix, &[]);
    // The same deployment's breaker, opened by a failing source and ready to
    // probe one second later.
    let flaky = instance(
        &server.url(),
        &prefix,
        &[
            ("EXTERNAL_SERVICE_FAILURE_RATE", "1"),
            ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1"),
            ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "1"),
        ],
    );
    let t = random_type("oom");
    for value in [1.0, 2.0, 3.0] {
        assert_eq!(post(&state, None, &metric(&t, value)).await.status(), 201);
    }
    let cached_query = format!("type={t}&period=daily");
    let cached = || {
        metrics_summary(
            &state,
            http_v2("GET", "/api/metrics/summary")
                .query(&cached_query)
                .build(),
        )
    };
    assert_eq!(cached().await.headers()["x-cache"], "MISS");
    let opened = body_json(&get_summary(&flaky, &t).await);
    assert_eq!(
        opened["external_data"]["reason"], "upstream_error",
        "{opened}"
    );

    fill_up(&server).await;
    let keys_before: u64 = redis::cmd("DBSIZE")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();

    let refused = post(&state, Some("oom"), &metric(&t, 4.0)).await;
    assert_permanent("ingest", &refused, 507, "store-out-of-memory");
    let keys_after: u64 = redis::cmd("DBSIZE")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    // (The limiter counted the request in the client's existing log: every
    // POST counts.)
    assert_eq!(keys_after, keys_before, "the refused ingest created no key");

    let fresh = get_summary(&state, &t).await;
    assert_eq!(summary_count("uncached summary", &fresh), 3);
    assert_eq!(fresh.headers()["x-cache"], "MISS");
    assert_eq!(fresh.headers()["cache-control"], "max-age=0");
    let hit = cached().await;
    assert_eq!(hit.status(), 200, "{}", body_json(&hit));
    assert_eq!(hit.headers()["x-cache"], "HIT");

    let series = get_series(&state, &t).await;
    let body = body_json(&series);
    assert_eq!(series.status(), 200, "{body}");
    let counted: u64 = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 3);
    assert_eq!(series.headers()["cache-control"], "max-age=0");
    // This client has no series log yet, so the sliding log's first write
    // is the new entry, which Redis refuses: the series is served
    // uncounted. So is a token bucket's.
    assert!(!series.headers().contains_key("ratelimit"));
    let bucket = instance(
        &server.url(),
        &prefix,
        &[("RATE_LIMIT_ALGORITHM", "token_bucket")],
    );
    let uncounted = get_series(&bucket, &t).await;
    assert_eq!(uncounted.status(), 200, "{}", body_json(&uncounted));
    assert!(!uncounted.headers().contains_key("ratelimit"));
    assert!(!uncounted.headers().contains_key("ratelimit-policy"));

    // The reset timeout has passed: admitting a probe means writing the
    // half-open state, which Redis refuses.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let probed = get_summary(&flaky, &t).await;
    assert_eq!(summary_count("summary behind the breaker", &probed), 3);
    assert_eq!(
        body_json(&probed)["external_data"],
        json!({"status": "fallback", "reason": "circuit_open"})
    );
    let breaker: Option<String> = redis::cmd("HGET")
        .arg(format!("{prefix}:cb:{{external_service}}"))
        .arg("state")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    assert_eq!(breaker.as_deref(), Some("open"));

    // Room again: the refused metric, sent again with its key, is stored
    // now (not replayed: nothing of it was recorded).
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    let stored = post(&state, Some("oom"), &metric(&t, 4.0)).await;
    assert_eq!(stored.status(), 201, "{}", body_json(&stored));
    assert!(!stored.headers().contains_key("idempotent-replayed"));
    assert_eq!(
        summary_count("with room", &get_summary(&state, &t).await),
        4
    );
}

/// A script that runs too long makes Redis answer every other client
/// `BUSY`: a transient fault, so a 503 with `Retry-After`, and the same
/// state serves again once the script is killed.
#[tokio::test]
async fn a_busy_script_is_a_503_with_retry_after() {
    let server = PrivateRedis::start_with(&["--busy-reply-threshold", "50"]);
    let timeout = TIMEOUT_MS.to_string();
    let state = instance(
        &server.url(),
        &random_prefix(),
        &[("REDIS_TIMEOUT_MS", &timeout)],
    );
    let t = random_type("busy");
    assert_eq!(post(&state, None, &metric(&t, 1.0)).await.status(), 201);

    // Sent without waiting for the reply, which comes when it is killed.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    write!(stream, "EVAL \"while true do end\" 0\r\n").unwrap();
    stream.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = metric(&t, 2.0);
    let (p, s) = tokio::join!(
        timed(post(&state, Some("busy"), &second)),
        timed(get_summary(&state, &t)),
    );
    assert_unavailable("ingest", &p.0, p.1);
    assert_unavailable("summary", &s.0, s.1);

    let _: () = redis::cmd("SCRIPT")
        .arg("KILL")
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    // The script stops at its next check of the kill flag.
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut admin = admin(&server).await;
        while redis::cmd("PING")
            .query_async::<String>(&mut admin)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the script was killed");
    let retried = post(&state, Some("busy"), &second).await;
    assert_eq!(retried.status(), 201, "{}", body_json(&retried));
    assert_eq!(
        summary_count("after the kill", &get_summary(&state, &t).await),
        2
    );
}

/// A node that became a replica answers writes `READONLY`, as the old
/// primary does during a failover: a 503 with `Retry-After`, and the
/// connection is replaced, so that the next command resolves the hostname
/// again (after an ElastiCache failover it names the new primary) instead of
/// asking the replica forever. Once the node is a primary again, the next
/// request succeeds.
#[tokio::test]
async fn a_read_only_answer_is_a_503_and_replaces_the_connection() {
    let primary = PrivateRedis::start();
    let node = PrivateRedis::start();
    let state = instance(&node.url(), &random_prefix(), &[]);
    let t = random_type("readonly");
    assert_eq!(post(&state, None, &metric(&t, 1.0)).await.status(), 201);
    // One connection for the test's own commands, so that the count of
    // connections the node accepted is the service's.
    let mut admin = admin(&node).await;
    let received = |admin: &mut redis::aio::MultiplexedConnection| {
        let mut admin = admin.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("stats")
                .query_async(&mut admin)
                .await
                .unwrap();
            info.lines()
                .find_map(|line| line.strip_prefix("total_connections_received:"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        }
    };
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query_async(&mut admin)
        .await
        .unwrap();
    let before = received(&mut admin).await;

    let (response, elapsed) = timed(post(&state, Some("readonly"), &metric(&t, 2.0))).await;
    assert_unavailable("ingest on a replica", &response, elapsed);
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let response = post(&state, Some("readonly"), &metric(&t, 2.0)).await;
    assert_eq!(response.status(), 201, "{}", body_json(&response));
    assert_eq!(
        received(&mut admin).await - before,
        1,
        "the service connected anew once after READONLY"
    );
}

/// An instance idle while Redis restarts holds a connection the server
/// closed: its next request goes to a fresh connection and succeeds, on
/// every endpoint, without a 503 first.
#[tokio::test]
async fn a_restart_while_idle_costs_no_request() {
    let mut server = PrivateRedis::start();
    let state = instance(&server.url(), &random_prefix(), &[]);
    let t = random_type("idle_restart");
    assert_eq!(get_health(&state).await.status(), 200);
    assert_eq!(post(&state, None, &metric(&t, 1.0)).await.status(), 201);
    for round in 0..3 {
        server = tokio::task::spawn_blocking(move || {
            server.restart();
            server
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = match round {
            0 => get_health(&state).await,
            1 => post(&state, None, &metric(&t, 2.0)).await,
            _ => get_summary(&state, &t).await,
        };
        assert!(
            response.status().is_success(),
            "round {round}: {} {}",
            response.status(),
            body_json(&response)
        );
    }
}
