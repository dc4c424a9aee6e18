//! Figure 9: the service side by side with the design it started from
//! (`tools/seed-peer`: FastAPI and redis-py, an `INCR`+`EXPIRE` limiter,
//! `GET`/`SETEX` caching, points in a Redis list), both over HTTP on one
//! private Redis.
//!
//! `scripts/bench.sh` starts both servers (ours under `cargo lambda watch
//! --release`, the peer under uvicorn) with their own key prefixes and hands
//! their pids here. `bench peer` then loads 100,000 points into each, warms
//! every route up, and measures in alternating rounds (ours, the peer, ours,
//! …): for each concurrency and route a fixed-time `wrk` run
//! ([`crate::load::run`]) with the CPU of the function processes, of the
//! emulator and of `redis-server` read around it, then the uncached summary
//! of the 100,000 points timed request by request. Every request comes from
//! its own client (`X-Forwarded-For`), so both limiters accept every ingest.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use shared::config::Config;
use shared::AppState;

use crate::data_size::DataSet;
use crate::load::{self, Group, Load, Select};
use crate::results::{Peer, PeerRun, PeerUncached};
use crate::{log, Options};

/// The concurrencies (wrk connections) of figure 9.
pub const CONNECTIONS: [usize; 2] = [4, 16];
/// The routes loaded, with their label, method and path.
pub const ROUTES: [(&str, &str, &str); 3] = [
    ("ingest", "POST", "/api/metrics"),
    ("summary_hit", "GET", SUMMARY_HIT),
    ("health", "GET", "/health"),
];
/// The summary whose cache hits are loaded (its type is the ingested one).
const SUMMARY_HIT: &str = "/api/metrics/summary?type=bench_peer&period=daily";
/// The metric type every ingest run sends.
const INGEST_TYPE: &str = "bench_peer";
/// The type holding the points of the uncached summary.
const LARGE_TYPE: &str = "bench_peer_large";
/// Our function binaries (`comm`), whose processes are "function CPU".
const FUNCTIONS: [&str; 4] = [
    "health",
    "ingest-metric",
    "metrics-summary",
    "metrics-series",
];

/// One of the two servers measured.
struct System<'a> {
    name: &'static str,
    url: &'a str,
    prefix: &'a str,
    /// Function processes, then the server around them (emulator or
    /// uvicorn supervisor).
    groups: [Group<'a>; 2],
}

/// `bench peer`: measures figure 9 and writes it to `--out` (`peer.json`).
///
/// # Errors
/// A missing option, a server that does not answer, a failed `wrk` run or a
/// summary that does not count the points loaded.
pub async fn measure(opts: &Options) -> Result<(), String> {
    let get = |name: &str| {
        opts.get(name)
            .map(String::as_str)
            .ok_or(format!("--{name} is required"))
    };
    let number = |name: &str, default: u64| -> Result<u64, String> {
        opts.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{name}: not a number"))
        })
    };
    let port = number("port", 0)?;
    let pid = |name: &str| -> Result<u32, String> {
        get(name)?
            .parse()
            .map_err(|_| format!("--{name}: not a pid"))
    };
    let (redis_pid, ours_pid, seed_pid) = (pid("redis-pid")?, pid("ours-pid")?, pid("seed-pid")?);
    let quick = opts.contains_key("quick");
    let rounds = number("rounds", if quick { 1 } else { 3 })? as usize;
    let seconds = number("seconds", if quick { 3 } else { 8 })?;
    let points = number("points", if quick { 10_000 } else { 100_000 })?;
    let samples = if quick { 1 } else { 3 };
    let out = PathBuf::from(get("out")?);
    let redis_url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("no Redis at 127.0.0.1:{port}: {e}"))?;

    let redis = Group {
        root: redis_pid,
        select: Select::Root,
    };
    let systems = [
        System {
            name: "ours",
            url: get("ours-url")?,
            prefix: get("ours-prefix")?,
            groups: [
                Group {
                    root: ours_pid,
                    select: Select::Named(&FUNCTIONS),
                },
                Group {
                    root: ours_pid,
                    select: Select::Named(&["cargo-lambda"]),
                },
            ],
        },
        System {
            name: "seed",
            url: get("seed-url")?,
            prefix: get("seed-prefix")?,
            groups: [
                Group {
                    root: seed_pid,
                    select: Select::Descendants,
                },
                Group {
                    root: seed_pid,
                    select: Select::Root,
                },
            ],
        },
    ];

    log(&format!(
        "figure 9: loading {points} points into each system"
    ));
    load_ours(&redis_url, systems[0].prefix, points).await?;
    load_seed(&mut conn, systems[1].prefix, points).await?;

    let mut peer = Peer {
        rounds,
        seconds,
        emulator_concurrency: number("emulator-concurrency", 16)? as usize,
        peer_workers: number("peer-workers", 4)? as usize,
        points,
        commands: opts
            .get("commands")
            .map(|c| c.lines().map(str::to_string).collect())
            .unwrap_or_default(),
        ..Peer::default()
    };
    for system in &systems {
        for (label, method, path) in ROUTES {
            warm_up(system, label, method, path)?;
        }
    }
    for round in 1..=rounds {
        for system in &systems {
            for connections in CONNECTIONS {
                for (label, method, path) in ROUTES {
                    log(&format!(
                        "figure 9, round {round}/{rounds}: {} {label} at concurrency {connections}, {seconds} s",
                        system.name
                    ));
                    let load = Load {
                        label,
                        url: system.url,
                        method,
                        path,
                        metric_type: INGEST_TYPE,
                        connections,
                        seconds,
                        own_clients: true,
                    };
                    let [function, server] = system.groups;
                    let m = load::run(&load, &[function, server, redis])?;
                    if round == 1 && system.name == "ours" {
                        let shown = Load {
                            url: "http://127.0.0.1:<port>",
                            ..load.clone()
                        };
                        peer.commands.push(shown.command());
                    }
                    peer.runs.push(PeerRun {
                        system: system.name.into(),
                        round,
                        route: label.into(),
                        wrk: m.wrk,
                        function_cpu_s: m.cpu_s[0],
                        server_cpu_s: m.cpu_s[1],
                        redis_cpu_s: m.cpu_s[2],
                    });
                }
            }
            let ms = uncached(system, &mut conn, points, samples).await?;
            peer.uncached.push(PeerUncached {
                system: system.name.into(),
                round,
                ms,
            });
        }
    }
    for system in &systems {
        crate::redis_side::clear(&mut conn, &format!("{}:*", system.prefix)).await?;
    }
    let json = serde_json::to_string_pretty(&peer).map_err(|e| e.to_string())?;
    std::fs::write(&out, json).map_err(|e| format!("{}: {e}", out.display()))?;
    log(&format!("figure 9 written to {}", out.display()));
    Ok(())
}

/// Loads `route` until a 3 s run looks warm (every instance the emulator
/// starts for it is up, the cache filled), at most 5 minutes.
fn warm_up(system: &System<'_>, label: &str, method: &str, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let load = Load {
            label,
            url: system.url,
            method,
            path,
            metric_type: INGEST_TYPE,
            connections: CONNECTIONS[CONNECTIONS.len() - 1],
            seconds: 3,
            own_clients: true,
        };
        let m = load::run(&load, &[])?;
        if m.warm && m.wrk.non_2xx == 0 && m.wrk.socket_errors == 0 {
            return Ok(());
        }
        log(&format!(
            "warming up {} {label}: {} requests, p99 {:.0} µs, {} non-2xx",
            system.name, m.wrk.requests, m.wrk.p99_us, m.wrk.non_2xx
        ));
    }
    Err(format!(
        "{} {label} did not warm up within 5 minutes",
        system.name
    ))
}

/// Stores `points` points of [`LARGE_TYPE`] as a backfill would
/// (figure 3's loader), under `prefix`.
async fn load_ours(redis_url: &str, prefix: &str, points: u64) -> Result<(), String> {
    let config = Config::from_pairs(&[
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", prefix),
        ("REDIS_TIMEOUT_MS", "10000"),
    ])
    .map_err(|e| e.to_string())?;
    let state = Arc::new(AppState::new(config).map_err(|e| e.to_string())?);
    let data = Arc::new(DataSet::new(&[LARGE_TYPE.to_string()], points)?);
    data.ingest(&state).await?;
    Ok(())
}

/// Appends `points` points of [`LARGE_TYPE`] to the peer's list, as its
/// ingest writes them (`json.dumps` of the point), spread over the last
/// 30 days less a margin, like [`load_ours`]'s.
async fn load_seed(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    points: u64,
) -> Result<(), String> {
    let key = format!("{prefix}:metrics:{LARGE_TYPE}");
    let end = Utc::now() - chrono::Duration::seconds(60);
    let span_ms = (30 * 86_400 - 15 * 60) * 1000;
    let mut rng = rand::rng();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..points {
        let back = span_ms - (i as i64 * span_ms / points as i64);
        let at = end - chrono::Duration::milliseconds(back);
        let value = (rng.random::<f64>() * 10_000.0).round() / 100.0;
        batch.push(format!(
            r#"{{"timestamp": "{}", "value": {value:?}, "type": "{LARGE_TYPE}"}}"#,
            at.to_rfc3339()
        ));
        if batch.len() == 1000 || i + 1 == points {
            redis::cmd("RPUSH")
                .arg(&key)
                .arg(&batch)
                .query_async::<()>(conn)
                .await
                .map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    Ok(())
}

/// Times `samples` uncached monthly summaries of [`LARGE_TYPE`], one after
/// the other on fresh connections: ours with `Cache-Control: no-cache`, the
/// peer (which has no way to bypass its cache) after deleting its cache
/// entry. Each must count all `points`.
async fn uncached(
    system: &System<'_>,
    conn: &mut redis::aio::MultiplexedConnection,
    points: u64,
    samples: usize,
) -> Result<Vec<f64>, String> {
    let path = format!("/api/metrics/summary?type={LARGE_TYPE}&period=monthly");
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let mut headers = format!("X-Forwarded-For: 10.255.{}.{}\r\n", i / 256, i % 256 + 1);
        if system.name == "ours" {
            headers.push_str("Cache-Control: no-cache\r\n");
        } else {
            let key = format!("{}:summary:{LARGE_TYPE}:monthly", system.prefix);
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        let (status, body) = http_get(system.url, &path, &headers)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let count = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("count")?.as_u64());
        if status != 200 || count != Some(points) {
            return Err(format!(
                "{}'s uncached summary answered {status} counting {count:?} of {points} points: {body}",
                system.name
            ));
        }
    }
    Ok(times)
}

/// A `GET` over HTTP/1.1 with `Connection: close`: the status and the body.
fn http_get(url: &str, path: &str, headers: &str) -> Result<(u16, String), String> {
    let host = url.strip_prefix("http://").unwrap_or(url);
    let mut stream = TcpStream::connect(host).map_err(|e| format!("{host}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("{host}{path}: {e}"))?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // The JSON object of the body, whether it came whole or in chunks of
    // one (`Transfer-Encoding: chunked` frames it with sizes).
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => &body[start..=end],
        _ => body,
    };
    let body = body.to_string();
    Ok((status, body))
}
