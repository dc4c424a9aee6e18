//! Percentiles and sums of stored buckets against brute force, on a real
//! Redis: points go through the ingest script, windows are read back with
//! `HMGET` and merged, and every reported quantile must lie
//! within the sketch's relative accuracy α of the exact rank-based quantile
//! of the points in the window; sums must match an exactly rounded sum
//! (Shewchuk's algorithm, Python's `math.fsum`) within Neumaier's bound.

use std::collections::BTreeMap;

use analytics_tests::{random_prefix, random_type, redis_connection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Script;
use shared::connection::Redis;
use shared::keys::Keys;
use shared::store::buckets::{cover, BucketRef, BucketSketch, Granularity, StoredBucket};
use shared::store::series::plan;
use shared::store::sketch::{bin_key, Sketch, RELATIVE_ACCURACY};
use shared::store::stats::WindowStats;

static INGEST: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("../../shared/src/store/ingest.lua")));

const DAY: i64 = 86_400;
const QUANTILES: [f64; 10] = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999];

/// The buckets of one metric type under a fresh key prefix. Every call
/// touches one type's keys (one hash slot), so this runs on a single node or
/// a Redis Cluster alike (`REDIS_MODE`).
struct Buckets {
    redis: Redis,
    keys: Keys,
    metric_type: String,
}

impl Buckets {
    async fn new(label: &str) -> Self {
        Self {
            redis: redis_connection().await,
            keys: Keys::new(random_prefix()),
            metric_type: random_type(label),
        }
    }

    fn container(&self, bucket: BucketRef) -> String {
        self.keys.metric_container(
            &self.metric_type,
            bucket.granularity.tag(),
            bucket.container_start(),
        )
    }

    /// Stores `points` (unix s, value) in one script call; `Err` with the
    /// script's reply when it did not store them (`overflow`).
    async fn ingest(&mut self, points: &[(i64, f64)]) -> Result<(), Vec<String>> {
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut keys = Vec::new();
        let mut expiries = Vec::new();
        let mut updates = Vec::new();
        for (t, _) in points {
            let mut buckets = Vec::new();
            for g in Granularity::ALL {
                let bucket = BucketRef::containing(g, *t);
                let key = self.container(bucket);
                let i = *index.entry(key.clone()).or_insert_with(|| {
                    keys.push(key);
                    expiries.push(bucket.container_end() + 36 * DAY);
                    keys.len()
                });
                buckets.push((i, bucket.start));
            }
            updates.push(buckets);
        }
        let mut call = INGEST.prepare_invoke();
        // A write without idempotency records: one part of every metric,
        // each with its value, sketch key and (key index, bucket start) of
        // its three buckets.
        call.key(keys)
            .arg("write")
            .arg(0)
            .arg(1)
            .arg(points.len())
            .arg(expiries);
        for ((_, value), buckets) in points.iter().zip(updates) {
            call.arg(value).arg(bin_key(*value)).arg(buckets.len());
            for (i, start) in buckets {
                call.arg(i).arg(start);
            }
        }
        let reply: Vec<String> = call.invoke_async(&mut self.redis.clone()).await.unwrap();
        match reply.first().map(String::as_str) {
            Some("stored") => Ok(()),
            _ => Err(reply),
        }
    }

    /// The stored values of `buckets` (the bucket field, and the folded
    /// field of the text format), in their order, in one pipeline.
    async fn read(&mut self, buckets: &[BucketRef]) -> Vec<(Option<Vec<u8>>, Option<String>)> {
        let mut pipe = redis::pipe();
        for bucket in buckets {
            pipe.cmd("HMGET")
                .arg(self.container(*bucket))
                .arg(bucket.start)
                .arg(format!("{}.s", bucket.start));
        }
        let reply: Vec<(Option<Vec<u8>>, Option<String>)> =
            pipe.query_async(&mut self.redis.clone()).await.unwrap();
        reply
    }

    async fn window(&mut self, from: i64, to: i64) -> WindowStats {
        let mut stats = WindowStats::new();
        for (value, folded) in self.read(&cover(from, to)).await {
            if let Some(value) = value {
                stats.add_stored(&value, folded.as_deref()).unwrap();
            }
        }
        stats
    }
}

/// The exactly rounded sum of `xs` (Shewchuk's partials with Python's
/// `math.fsum` final rounding, half-even).
fn fsum(xs: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &x0 in xs {
        let mut x = x0;
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        partials.push(x);
    }
    let Some(mut n) = partials.len().checked_sub(1) else {
        return 0.0;
    };
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        lo = y - (hi - x);
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

/// Neumaier's error bound, twice over (in the buckets, then across them).
fn assert_sum_close(got: f64, values: &[f64], context: &str) {
    let exact = fsum(values);
    let eps = f64::EPSILON / 2.0;
    let magnitude: f64 = values.iter().map(|v| v.abs()).sum();
    let bound = 4.0 * eps * exact.abs() + 4.0 * (values.len() as f64) * eps * eps * magnitude;
    assert!(
        (got - exact).abs() <= bound,
        "{context}: sum {got} vs exact {exact} (bound {bound})"
    );
}

fn assert_quantiles(stats: &WindowStats, values: &mut [f64], context: &str) {
    values.sort_by(f64::total_cmp);
    assert_eq!(stats.count, values.len() as u64, "{context}: count");
    if values.is_empty() {
        assert_eq!(stats.quantile(0.5), None);
        return;
    }
    assert_eq!(stats.min, values.first().copied(), "{context}: min");
    assert_eq!(stats.max, values.last().copied(), "{context}: max");
    for q in QUANTILES {
        let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
        let got = stats.quantile(q).unwrap();
        assert!(
            (got - exact).abs() <= RELATIVE_ACCURACY * exact.abs() * (1.0 + 1e-9),
            "{context}: q={q}: {got} vs exact {exact}"
        );
    }
    assert_sum_close(stats.sum(), values, context);
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

type Distribution = fn(&mut StdRng) -> f64;

const DISTRIBUTIONS: [(&str, Distribution); 7] = [
    ("uniform", |r| r.random_range(0.0..100.0)),
    ("lognormal", |r| (1.0 + 2.5 * normal(r)).exp()),
    ("bimodal", |r| {
        if r.random_bool(0.7) {
            10.0 + normal(r)
        } else {
            1000.0 + 50.0 * normal(r)
        }
    }),
    ("constant", |_| 42.0),
    ("wide", |r| 10f64.powf(r.random_range(-6.0..9.0))),
    ("signed", |r| match r.random_range(0..10) {
        0 => 0.0,
        1..=4 => -(10f64.powf(r.random_range(-3.0..6.0))),
        _ => r.random_range(-1000.0..1000.0),
    }),
    ("negative", |r| -(1.0 + 2.0 * normal(r)).exp()),
];

/// Past, inside the retention, on a day boundary.
fn base() -> i64 {
    (chrono::Utc::now().timestamp() - 10 * DAY).div_euclid(DAY) * DAY
}

#[tokio::test]
async fn every_quantile_is_within_alpha_over_windows_crossing_bucket_boundaries() {
    let mut rng = StdRng::seed_from_u64(0xdd5c);
    let base = base();
    for (name, draw) in DISTRIBUTIONS {
        let mut buckets = Buckets::new(name).await;
        // Three days around `base`, ~6 points a minute.
        let mut points: Vec<(i64, f64)> = (0..25_000)
            .map(|_| (base - DAY + rng.random_range(0..3 * DAY), draw(&mut rng)))
            .collect();
        points.sort_by_key(|p| p.0);
        // Mostly batches (the parse path), some single metrics (the token
        // rewrite path), out of order too.
        let (single, batched) = points.split_at(1_500);
        for chunk in batched.chunks(500) {
            buckets.ingest(chunk).await.unwrap();
        }
        for point in single.iter().rev() {
            buckets.ingest(std::slice::from_ref(point)).await.unwrap();
        }
        let windows = [
            (base - DAY, base + 2 * DAY),                             // everything
            (base - 17 * 60, base + 23 * 60), // across a day boundary, minutes only
            (base - 5 * 3_600 - 60, base + DAY + 3_600 + 7 * 60), // minutes, hours, a day, hours, minutes
            (base + 3_600 * 3 + 60 * 13, base + 3_600 * 3 + 60 * 14), // one minute
            (base + 42 * 60, base + 3 * 3_600 + 59 * 60),         // within a day, across hours
        ];
        for (from, to) in windows {
            let stats = buckets.window(from, to).await;
            let mut inside: Vec<f64> = points
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|p| p.1)
                .collect();
            assert_quantiles(&stats, &mut inside, &format!("{name} [{from}, {to})"));
        }
        // A series of 1h points over the same data: each point is checked.
        let series = plan(base - 7 * 3_600, base + 5 * 3_600 + 1, 3_600).unwrap();
        let texts = buckets.read(series.buckets()).await;
        let mut per_point = vec![WindowStats::new(); series.points()];
        for ((value, folded), point) in texts.iter().zip(series.point_of_each_bucket()) {
            if let Some(text) = value {
                per_point[point]
                    .add_stored(text, folded.as_deref())
                    .unwrap();
            }
        }
        for (i, stats) in per_point.iter().enumerate() {
            let start = series.point_start(i);
            let mut inside: Vec<f64> = points
                .iter()
                .filter(|(t, _)| (start..start + series.step).contains(t))
                .map(|p| p.1)
                .collect();
            assert_quantiles(stats, &mut inside, &format!("{name} series point {i}"));
        }
    }
}

#[tokio::test]
async fn sums_are_compensated_in_buckets_and_across_them() {
    let base = base();
    let mut buckets = Buckets::new("sums").await;
    // One bucket: plain addition would give 0.
    let t = base + 3_600 + 30;
    buckets
        .ingest(&[(t, 1e100), (t, 1.0), (t, -1e100)])
        .await
        .unwrap();
    let one = buckets.window(t - 30, t + 30).await;
    assert_eq!((one.count, one.sum()), (3, 1.0));
    assert_eq!(one.average(), Some(1.0 / 3.0));
    // The same, one point at a time, each in a bucket of its own granularity
    // in the window: across buckets.
    let mut across = Buckets::new("sums_across").await;
    for (t, v) in [
        (base - 60, 1e100),
        (base + 3_600, 1.0),
        (base + DAY + 60, -1e100),
    ] {
        across.ingest(&[(t, v)]).await.unwrap();
    }
    assert_eq!(across.window(base - 60, base + DAY + 120).await.sum(), 1.0);
    // Random cancelling magnitudes, against an exactly rounded sum.
    let mut rng = StdRng::seed_from_u64(0x5u64);
    let mut random = Buckets::new("sums_random").await;
    let points: Vec<(i64, f64)> = (0..6_000)
        .map(|_| {
            let magnitude = 10f64.powi(rng.random_range(-20..20));
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            (
                base + rng.random_range(0..2 * DAY),
                sign * magnitude * rng.random::<f64>(),
            )
        })
        .collect();
    for chunk in points.chunks(300) {
        random.ingest(chunk).await.unwrap();
    }
    for single in points.iter().take(200) {
        random.ingest(&[(single.0 + 60, single.1)]).await.unwrap();
    }
    let mut all: Vec<f64> = points.iter().map(|p| p.1).collect();
    all.extend(points.iter().take(200).map(|p| p.1));
    let stats = random.window(base, base + 2 * DAY + 120).await;
    assert_eq!(stats.count, all.len() as u64);
    assert_sum_close(stats.sum(), &all, "random cancelling");
    let naive: f64 = all.iter().sum();
    assert!(
        (stats.sum() - fsum(&all)).abs() <= (naive - fsum(&all)).abs(),
        "compensated is no worse than naive"
    );
    assert_eq!(fsum(&[1e100, 1.0, -1e100]), 1.0);
    assert_eq!(fsum(&[0.1; 10]), 1.0);
}

#[tokio::test]
async fn a_bucket_sum_that_would_overflow_is_refused() {
    let base = base();
    let mut buckets = Buckets::new("overflow").await;
    buckets.ingest(&[(base, f64::MAX)]).await.unwrap();
    let reply = buckets.ingest(&[(base + 1, f64::MAX)]).await.unwrap_err();
    assert_eq!(reply, ["overflow", "0"]);
    let stats = buckets.window(base, base + 60).await;
    assert_eq!((stats.count, stats.sum()), (1, f64::MAX));
}

#[tokio::test]
async fn sketches_past_their_bin_budget_collapse_their_lowest_bins() {
    let base = base();
    let mut rng = StdRng::seed_from_u64(0xc011);
    let mut buckets = Buckets::new("collapse").await;
    let mut values: Vec<f64> = (0..12_000)
        .map(|i| {
            let v = 10f64.powf(rng.random_range(-300.0..300.0));
            if i % 4 == 0 {
                -v
            } else {
                v
            }
        })
        .collect();
    let points: Vec<(i64, f64)> = values.iter().map(|v| (base + 120, *v)).collect();
    for chunk in points.chunks(500) {
        buckets.ingest(chunk).await.unwrap();
    }
    // A few single ingests after the collapse, below the floor too.
    for v in [1e-305, 5.0, -1e-305] {
        buckets.ingest(&[(base + 121, v)]).await.unwrap();
        values.push(v);
    }
    let texts = buckets
        .read(&[BucketRef::containing(Granularity::Minute, base + 120)])
        .await;
    let value = texts[0].0.clone().unwrap();
    assert!(value[0] >= 4, "floors recorded: tag {}", value[0]);
    let Some(BucketSketch::Binary {
        bytes,
        at,
        width,
        dense,
    }) = StoredBucket::decode(value).map(|b| b.sketch)
    else {
        panic!("not a binary bucket");
    };
    let mut sketch = Sketch::new();
    sketch.add_binary(&bytes[at..], width, dense).unwrap();
    assert!(sketch.bins() <= 4_096 + 3, "{} bins", sketch.bins());
    let stats = buckets.window(base, base + 180).await;
    values.sort_by(f64::total_cmp);
    assert_eq!(stats.count, values.len() as u64);
    // The highest values of the positive store (within its 2 048 highest
    // bins) keep the guarantee, and so do the most negative ones.
    for q in [0.001, 0.01, 0.05, 0.9, 0.95, 0.99, 0.999] {
        let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
        let got = stats.quantile(q).unwrap();
        assert!(
            (got - exact).abs() <= RELATIVE_ACCURACY * exact.abs() * (1.0 + 1e-9),
            "q={q}: {got} vs {exact}"
        );
    }
}

#[tokio::test]
async fn buckets_of_the_older_format_read_without_percentiles() {
    let base = base();
    let mut buckets = Buckets::new("old_format").await;
    let minute = BucketRef::containing(Granularity::Minute, base + 60);
    let key = buckets.container(minute);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(minute.start)
        .arg("2 30.5 10 20.5")
        .query_async(&mut buckets.redis.clone())
        .await
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(600)
        .query_async(&mut buckets.redis.clone())
        .await
        .unwrap();
    let old = buckets.window(base + 60, base + 120).await;
    assert_eq!(
        (old.count, old.sum(), old.min, old.max),
        (2, 30.5, Some(10.0), Some(20.5))
    );
    assert_eq!(old.quantile(0.5), None);
    // New points join the old bucket: still counted, still no percentiles.
    buckets.ingest(&[(base + 61, 5.0)]).await.unwrap();
    let value = raw(&mut buckets, minute).await.unwrap();
    assert!(value[0] < b'0', "rewritten in the binary format");
    let mixed = buckets.window(base + 60, base + 120).await;
    assert_eq!((mixed.count, mixed.sum(), mixed.min), (3, 35.5, Some(5.0)));
    assert!(!mixed.has_quantiles());
    // A window without the old bucket has them.
    buckets.ingest(&[(base + 200, 5.0)]).await.unwrap();
    let fresh = buckets.window(base + 180, base + 240).await;
    assert_eq!(fresh.quantile(0.5), Some(5.0));
}

/// The field of `bucket` as stored (`None` when empty).
async fn raw(buckets: &mut Buckets, bucket: BucketRef) -> Option<Vec<u8>> {
    buckets.read(&[bucket]).await.remove(0).0
}

#[tokio::test]
async fn text_buckets_read_and_are_rewritten_in_the_binary_format() {
    let base = base();
    let mut buckets = Buckets::new("text_format").await;
    let minute = BucketRef::containing(Granularity::Minute, base + 60);
    let key = buckets.container(minute);
    // Three points: 1.0 (bin 0, key "0") twice, 10.0 (bin 117, "1t") once,
    // one of the 1.0 in the recent tokens and the rest in the folded field.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(minute.start)
        .arg("3 12 0 1 10 2 1| 0")
        .arg(format!("{}.s", minute.start))
        .arg(" 0 1t")
        .query_async(&mut buckets.redis.clone())
        .await
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(600)
        .query_async(&mut buckets.redis.clone())
        .await
        .unwrap();
    let text = buckets.window(base + 60, base + 120).await;
    assert_eq!((text.count, text.sum()), (3, 12.0));
    let exact = [1.0, 1.0, 10.0];
    for q in [0.0, 0.5, 1.0] {
        let got = text.quantile(q).unwrap();
        let want = exact[(q * 2.0) as usize];
        assert!(
            (got - want).abs() <= RELATIVE_ACCURACY * want,
            "q={q}: {got}"
        );
    }
    // The next write rewrites it in the binary format, the folded field gone.
    buckets.ingest(&[(base + 61, 10.0)]).await.unwrap();
    let value = raw(&mut buckets, minute).await.unwrap();
    assert!(value[0] < b'0', "binary after a write");
    let folded: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg(format!("{}.s", minute.start))
        .query_async(&mut buckets.redis.clone())
        .await
        .unwrap();
    assert_eq!(folded, None);
    let after = buckets.window(base + 60, base + 120).await;
    assert_eq!((after.count, after.sum()), (4, 22.0));
    assert!(after.has_quantiles());
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut buckets.redis.clone())
        .await
        .unwrap();
    assert!(ttl > 0, "the container keeps an expiry: {ttl}");
}

#[tokio::test]
async fn single_ingests_patch_buckets_to_the_bytes_a_batch_writes() {
    let base = base();
    let mut rng = StdRng::seed_from_u64(0x9a7c);
    // Narrow values (dense bins), wide ones (sparse), negatives, zeros and
    // counts past 255 (wider counts).
    let mut values: Vec<f64> = (0..400).map(|_| rng.random_range(10.0..12.0)).collect();
    values.extend((0..300).map(|_| 10f64.powf(rng.random_range(-6.0..9.0))));
    values.extend((0..300).map(|i| {
        if i % 3 == 0 {
            0.0
        } else {
            -rng.random_range(1.0..3.0)
        }
    }));
    values.extend(std::iter::repeat_n(5.0, 300));
    let t = base + 3 * 3_600 + 90;
    let mut batch = Buckets::new("patch_batch").await;
    let mut single = Buckets::new("patch_single").await;
    let mut pairs = Buckets::new("patch_pairs").await;
    let points: Vec<(i64, f64)> = values.iter().map(|v| (t, *v)).collect();
    for (n, point) in points.iter().enumerate() {
        single.ingest(&[*point]).await.unwrap();
        if n % 97 == 0 {
            // The whole batch up to here, to compare at several sizes.
            let mut fresh = Buckets::new("patch_prefix").await;
            fresh.ingest(&points[..=n]).await.unwrap();
            for g in Granularity::ALL {
                let bucket = BucketRef::containing(g, t);
                assert_eq!(
                    raw(&mut single, bucket).await,
                    raw(&mut fresh, bucket).await,
                    "after {} points, {g:?}",
                    n + 1
                );
            }
        }
    }
    batch.ingest(&points).await.unwrap();
    for pair in points.chunks(2) {
        pairs.ingest(pair).await.unwrap();
    }
    for g in Granularity::ALL {
        let bucket = BucketRef::containing(g, t);
        let whole = raw(&mut batch, bucket).await;
        assert_eq!(raw(&mut single, bucket).await, whole, "{g:?}");
        assert_eq!(raw(&mut pairs, bucket).await, whole, "{g:?} in pairs");
    }
    let stats = single.window(t - 90, t + 30).await;
    let mut sorted = values.clone();
    assert_quantiles(&stats, &mut sorted, "patched");
}
