//! Figures 3 and 6: how the cost of a summary and the memory of Redis grow
//! with the data.
//!
//! Data is loaded as a backfill would: points of one type in time order,
//! spread evenly (with jitter) over the last 30 days, sent in batches of 500
//! straight through `MetricStore::ingest` (the storage script of a batch
//! `POST`), a few batches in flight on one connection.
//!
//! - Figure 3 times `MetricStore::aggregate` for the `monthly` window (what a
//!   cache miss computes from Redis), and the whole summary handler with
//!   `Cache-Control: no-cache` (the cache bypassed; lock, buckets, breaker,
//!   the simulated external source at 0 ms latency and 0 failures, cache
//!   write), for a type holding 1 thousand and one holding 1 million points.
//! - Figure 6 sums `MEMORY USAGE <key> SAMPLES 0` over the keys of the data
//!   set, enumerated from the bucket layout (`shared::store::buckets` and
//!   `Keys::metric_base`), never by scanning others' keys; on the private
//!   server a `SCAN` of the same keys checks that enumeration.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rand::Rng;
use redis::aio::MultiplexedConnection;
use shared::handlers::metrics_summary;
use shared::keys::Keys;
use shared::metric::{Metric, MetricType};
use shared::store::buckets::{cover, BucketRef, Granularity};
use shared::window::{Period, Window};
use shared::AppState;

use crate::events;
use crate::results::MemorySample;

/// Metrics per `MetricStore::ingest` call (the default `MAX_BATCH_SIZE`).
pub const BATCH: usize = 500;
/// Batches in flight at once during a backfill.
const IN_FLIGHT: usize = 4;
/// How far back the data reaches, s: 30 days, less a margin so that every
/// point is still inside the `monthly` window while the figure is measured.
const SPAN_S: i64 = 30 * 86_400 - 15 * 60;

/// Types and how many points each gets.
pub struct DataSet {
    /// `(type, points)`.
    pub types: Vec<(MetricType, u64)>,
    /// The end of the data (points lie in `[end - SPAN_S, end)`).
    pub end: DateTime<Utc>,
}

impl DataSet {
    /// `points` points for each of `names`, ending a minute before now.
    pub fn new(names: &[String], points: u64) -> Result<Self, String> {
        let types = names
            .iter()
            .map(|n| MetricType::parse(n).map(|t| (t, points)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            types,
            end: Utc::now() - chrono::Duration::seconds(60),
        })
    }

    fn total(&self) -> u64 {
        self.types.iter().map(|(_, n)| n).sum()
    }

    /// Every container key the data set can have written, from the bucket
    /// layout: one minute container per hour, one hour container per day,
    /// one day container per 32-day era of the span.
    pub fn keys(&self, keys: &Keys) -> Vec<String> {
        let end = self.end.timestamp();
        let start = end - SPAN_S;
        let mut suffixes = BTreeSet::new();
        for (granularity, step) in [
            (Granularity::Minute, 3_600),
            (Granularity::Hour, 86_400),
            (Granularity::Day, 86_400),
        ] {
            let mut t = start;
            while t < end + step {
                suffixes.insert(BucketRef::containing(granularity, t.min(end)).container_suffix());
                t += step;
            }
        }
        let mut all = Vec::with_capacity(self.types.len() * suffixes.len());
        for (t, _) in &self.types {
            let base = keys.metric_base(t.as_str());
            all.extend(suffixes.iter().map(|s| format!("{base}:{s}")));
        }
        all
    }

    /// The metrics of batch `index` of type `type_index`.
    fn batch(&self, type_index: usize, index: usize) -> Vec<Metric> {
        let (metric_type, points) = &self.types[type_index];
        let spacing_ms = (SPAN_S * 1000) as f64 / *points as f64;
        let start_ms = (self.end.timestamp() - SPAN_S) * 1000;
        let mut rng = rand::rng();
        let first = index * BATCH;
        let last = ((index + 1) * BATCH).min(*points as usize);
        (first..last)
            .map(|i| {
                let offset = (i as f64 + rng.random::<f64>()) * spacing_ms;
                let ms = start_ms + offset as i64;
                Metric {
                    timestamp: Utc.timestamp_millis_opt(ms).single().unwrap_or(self.end),
                    value: (rng.random::<f64>() * 10_000.0).round() / 100.0,
                    metric_type: metric_type.clone(),
                    tags: Default::default(),
                }
            })
            .collect()
    }

    /// Stores the whole data set; returns the seconds it took.
    pub async fn ingest(self: &Arc<Self>, state: &Arc<AppState>) -> Result<f64, String> {
        let jobs: Arc<Vec<(usize, usize)>> = Arc::new(
            self.types
                .iter()
                .enumerate()
                .flat_map(|(t, (_, n))| (0..(*n as usize).div_ceil(BATCH)).map(move |b| (t, b)))
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..IN_FLIGHT {
            let (jobs, next, data, state) = (
                Arc::clone(&jobs),
                Arc::clone(&next),
                Arc::clone(self),
                Arc::clone(state),
            );
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(t, b)) = jobs.get(i) else {
                        return Ok::<(), String>(());
                    };
                    let metrics = data.batch(t, b);
                    state
                        .store
                        .ingest(&state.redis, &metrics, None)
                        .await
                        .map_err(|e| format!("backfill: {e}"))?;
                }
            }));
        }
        for worker in workers {
            worker.await.map_err(|e| e.to_string())??;
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

/// `used_memory` from `INFO memory`, bytes.
pub async fn used_memory(conn: &mut MultiplexedConnection) -> Result<i64, String> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no used_memory in INFO memory".to_string())
}

/// Waits until Redis has freed what `UNLINK` handed to its background
/// thread (`lazyfree_pending_objects` is 0), at most 10 s.
pub async fn settle(conn: &mut MultiplexedConnection) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        let pending = info
            .lines()
            .find_map(|l| l.strip_prefix("lazyfree_pending_objects:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if pending == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sums `MEMORY USAGE … SAMPLES 0` over `keys` (missing keys count 0).
/// Returns `(keys that exist, bytes)`.
pub async fn memory_usage(
    conn: &mut MultiplexedConnection,
    keys: &[String],
) -> Result<(u64, u64), String> {
    let (mut existing, mut bytes) = (0, 0);
    for chunk in keys.chunks(1_000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
        for size in sizes.into_iter().flatten() {
            existing += 1;
            bytes += size;
        }
    }
    Ok((existing, bytes))
}

/// `OBJECT ENCODING` of each existing key, counted by encoding.
pub async fn encodings(
    conn: &mut MultiplexedConnection,
    keys: &[String],
) -> Result<Vec<(String, u64)>, String> {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for chunk in keys.chunks(1_000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("OBJECT").arg("ENCODING").arg(key);
        }
        let found: Vec<Option<String>> = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
        for encoding in found.into_iter().flatten() {
            *counts.entry(encoding).or_default() += 1;
        }
    }
    Ok(counts.into_iter().collect())
}

/// Every key matching `pattern` (`SCAN … MATCH … COUNT 10000`, through the
/// redis crate's cursor iterator; a key `SCAN` returns twice is kept once),
/// on the benchmark's private server only.
pub async fn matching_keys(
    conn: &mut MultiplexedConnection,
    pattern: &str,
) -> Result<Vec<String>, String> {
    let mut scan = redis::cmd("SCAN");
    scan.cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(10_000);
    let mut iter = scan
        .iter_async::<String>(conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    while let Some(key) = iter.next_item().await {
        keys.push(key.map_err(|e| e.to_string())?);
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// How many keys match `pattern`, for checking the enumeration.
pub async fn scan_count(conn: &mut MultiplexedConnection, pattern: &str) -> Result<u64, String> {
    Ok(matching_keys(conn, pattern).await?.len() as u64)
}

/// Deletes `keys` (our own, computed keys only).
pub async fn unlink(conn: &mut MultiplexedConnection, keys: &[String]) -> Result<(), String> {
    for chunk in keys.chunks(1_000) {
        let _: u64 = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    settle(conn).await
}

/// Ingests `data` and measures what it occupies. Returns the sample and the
/// backfill's points per second.
pub async fn load_and_weigh(
    state: &Arc<AppState>,
    conn: &mut MultiplexedConnection,
    data: &Arc<DataSet>,
    scan_pattern: &str,
) -> Result<(MemorySample, f64), String> {
    settle(conn).await?;
    let before = used_memory(conn).await?;
    let seconds = data.ingest(state).await?;
    let after = used_memory(conn).await?;
    let keys = data.keys(&state.keys);
    let (existing, bytes) = memory_usage(conn, &keys).await?;
    let scanned = scan_count(conn, scan_pattern).await?;
    Ok((
        MemorySample {
            types: data.types.len() as u64,
            points: data.total(),
            keys: existing,
            keys_scanned: scanned,
            memory_usage_bytes: bytes,
            used_memory_delta_bytes: after - before,
        },
        data.total() as f64 / seconds,
    ))
}

/// Buckets a `monthly` summary reads now.
pub fn monthly_buckets() -> usize {
    let w = Window::trailing(Period::Monthly, Utc::now());
    cover(w.from.timestamp(), w.to.timestamp()).len()
}

/// Median µs of `samples` timed `MetricStore::aggregate` calls for the
/// monthly window of each type, interleaved so that drift hits both alike.
/// Also returns the counts the last calls saw.
pub async fn time_aggregates(
    state: &AppState,
    small: &MetricType,
    large: &MetricType,
    samples: usize,
) -> Result<(f64, f64, (u64, u64)), String> {
    let (mut a, mut b) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    let mut counts = (0, 0);
    for _ in 0..samples {
        for (t, out, count) in [
            (small, &mut a, &mut counts.0),
            (large, &mut b, &mut counts.1),
        ] {
            let window = Window::trailing(Period::Monthly, Utc::now());
            let started = Instant::now();
            let aggregate = state
                .store
                .aggregate(&state.redis, t, &window)
                .await
                .map_err(|e| e.to_string())?;
            out.push(micros(started));
            *count = aggregate.count;
        }
    }
    Ok((
        crate::stats::quantile_us(&mut a, 0.5),
        crate::stats::quantile_us(&mut b, 0.5),
        counts,
    ))
}

/// Median µs of `samples` timed `MetricStore::series` calls for 30 days at
/// a `1h` step (720 points, 720 hour buckets) of each type, interleaved.
pub async fn time_series(
    state: &AppState,
    small: &MetricType,
    large: &MetricType,
    samples: usize,
) -> Result<(f64, f64), String> {
    let (mut a, mut b) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        for (t, out) in [(small, &mut a), (large, &mut b)] {
            let window = Window::trailing(Period::Monthly, Utc::now());
            let plan =
                shared::store::series::plan(window.from.timestamp(), window.to.timestamp(), 3_600)
                    .map_err(|e| e.to_string())?;
            let started = Instant::now();
            state
                .store
                .series(&state.redis, t, &plan)
                .await
                .map_err(|e| e.to_string())?;
            out.push(micros(started));
        }
    }
    Ok((
        crate::stats::quantile_us(&mut a, 0.5),
        crate::stats::quantile_us(&mut b, 0.5),
    ))
}

/// Median µs of the summary handler with `Cache-Control: no-cache`, each type
/// in turn.
pub async fn time_handler(
    state: &AppState,
    small: &MetricType,
    large: &MetricType,
    samples: usize,
) -> Result<(f64, f64), String> {
    let (mut a, mut b) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        for (t, out) in [(small, &mut a), (large, &mut b)] {
            let req = events::summary(t.as_str(), "monthly", true)?;
            let started = Instant::now();
            let response = metrics_summary(state, req).await;
            out.push(micros(started));
            if response.status() != 200 {
                return Err(format!("summary answered {}", response.status()));
            }
        }
    }
    Ok((
        crate::stats::quantile_us(&mut a, 0.5),
        crate::stats::quantile_us(&mut b, 0.5),
    ))
}

fn micros(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)
}
