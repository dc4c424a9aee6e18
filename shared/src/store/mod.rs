//! Metric storage: pre-aggregated time buckets in Redis, so a summary costs
//! the same for a thousand or a billion points.
//!
//! Each accepted metric updates one bucket of each granularity (minute, hour,
//! day — see [`buckets`]) in **one atomic script call** (`ingest.lua`); raw
//! points are never kept. A bucket holds the count, a compensated sum
//! ([`compensated`]), min, max and a DDSketch of its values ([`sketch`]).
//! A summary reads the at most ~200 buckets covering its window in **one
//! script call** (`summary.lua`) and merges them ([`stats`]); a series
//! ([`series`]) reads the buckets of all its steps in one call too.
//! Late and out-of-order metrics land in the buckets of their own timestamp.
//! Every container key expires at its end + `METRIC_RETENTION_DAYS` + one
//! day, so storage is bounded.
//!
//! All keys of one metric type share the hash tag `{<type>}`, so both scripts
//! stay within one Redis Cluster slot.

pub mod buckets;
pub mod compensated;
pub mod series;
pub mod sketch;
pub mod stats;

use std::collections::BTreeMap;

use redis::{FromRedisValue, ParsingError, RedisError, Script, Value};

use crate::connection::{Redis, ReplyFields};
use crate::keys::Keys;
use crate::metric::{Metric, MetricType};
use crate::window::Window;
use buckets::{cover, BucketRef, Granularity, StoredBucket};
use series::SeriesPlan;
use stats::WindowStats;

static INGEST: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("ingest.lua")));

/// The reply of `ingest.lua`, decoded here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IngestReply {
    /// `{"stored"}`: the metrics were added (and the record written).
    Stored,
    /// `{"replay", body}`: a retry; nothing written; the original 201 body.
    Replay(String),
    /// `{"mismatch"}`: the idempotency key was used with another body.
    Mismatch,
    /// `{"overflow", u}`: update `u` (0-based; each metric makes one update
    /// per granularity, in order) would overflow its bucket's sum.
    Overflow {
        /// The update's index.
        update: usize,
    },
}

impl FromRedisValue for IngestReply {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("ingest.lua", reply)?;
        let tag: String = fields.take()?;
        match tag.as_str() {
            "stored" => Ok(Self::Stored),
            "replay" => Ok(Self::Replay(fields.take()?)),
            "mismatch" => Ok(Self::Mismatch),
            "overflow" => Ok(Self::Overflow {
                update: fields.take()?,
            }),
            other => Err(fields.unexpected(other)),
        }
    }
}

static SUMMARY: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("summary.lua")));

/// The reply of `summary.lua`, decoded here and nowhere else: for each
/// bucket asked, in the order asked, the bucket (`None` when empty) — the
/// script is asked for each bucket's main field and then its folded field
/// (`<start>.s`), so the reply holds them in pairs. A bucket that is not in
/// the bucket format is counted and left out (as empty) rather than failing
/// the read.
#[derive(Debug, Clone, Default)]
struct SummaryReply {
    buckets: Vec<Option<StoredBucket>>,
    unreadable: usize,
}

impl FromRedisValue for SummaryReply {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let values: Vec<Option<Vec<u8>>> = FromRedisValue::from_redis_value(reply)?;
        let mut decoded = Self::default();
        let mut values = values.into_iter();
        while let Some(main) = values.next() {
            let folded = values.next().flatten();
            let Some(main) = main else {
                decoded.buckets.push(None);
                continue;
            };
            let text = std::str::from_utf8(&main).ok();
            let folded = folded.as_deref().and_then(|b| std::str::from_utf8(b).ok());
            match text.and_then(|text| StoredBucket::parse(text, folded)) {
                Some(bucket) => decoded.buckets.push(Some(bucket)),
                None => {
                    decoded.unreadable += 1;
                    decoded.buckets.push(None);
                }
            }
        }
        Ok(decoded)
    }
}

/// Seconds a container outlives the retention, so a container is never
/// deleted while a window inside the retention can still read it.
const EXPIRY_SLACK_S: i64 = 86_400;

/// Why an ingest failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The sum of a bucket would overflow a 64-bit float; nothing was stored.
    #[error("the sum of a time bucket would overflow a 64-bit float (metric {metric_index})")]
    Overflow {
        /// Position, in the ingested slice, of the metric that overflowed.
        metric_index: usize,
    },
    /// The idempotency key was already used with a different body; nothing
    /// was stored.
    #[error("the idempotency key was already used with a different body")]
    KeyReused,
    /// Redis failed or timed out; nothing is known to be stored.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Why a summary's buckets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed or timed out, or the script's reply did not have its
    /// shape.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// An idempotency record to check and write in the same atomic step as the
/// metrics (IETF draft "The Idempotency-Key HTTP Header Field").
#[derive(Debug, Clone)]
pub struct Idempotency<'a> {
    /// The record's Redis key (client and key hashed, see [`Keys::idempotency`]).
    pub key: String,
    /// Hex SHA-256 of the request's canonical metrics
    /// ([`crate::metric::MetricsBody::fingerprint`]).
    pub fingerprint: String,
    /// The 201 body to replay for a retry.
    pub response_body: &'a str,
    /// How long the record lives (`IDEMPOTENCY_TTL_SECONDS`), s.
    pub ttl_s: u64,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The metrics were stored (and the idempotency record written).
    Stored,
    /// A retry of an earlier request: nothing stored; its original 201 body.
    Replayed(String),
}

/// Reads and writes the buckets of every metric type under one key prefix.
#[derive(Debug, Clone)]
pub struct MetricStore {
    keys: Keys,
    retention_s: i64,
}

impl MetricStore {
    /// `retention_days` is `METRIC_RETENTION_DAYS`.
    pub fn new(keys: Keys, retention_days: u32) -> Self {
        Self {
            keys,
            retention_s: i64::from(retention_days) * 86_400,
        }
    }

    fn container_key(&self, metric_type: &MetricType, bucket: BucketRef) -> String {
        self.keys.metric_container(
            metric_type.as_str(),
            bucket.granularity.tag(),
            bucket.container_start(),
        )
    }

    /// Stores `metrics` (already validated) atomically: all of them or none,
    /// in one Redis round trip. With `idempotency`, the record is checked and
    /// written by the same script: a retry (same key, same fingerprint) stores
    /// nothing and returns the original body; concurrent requests with one key
    /// store once.
    ///
    /// # Errors
    /// [`IngestError::Overflow`] when a bucket sum would stop being finite;
    /// [`IngestError::KeyReused`] when the key was used with another body;
    /// [`IngestError::Redis`] when Redis fails (the script is atomic, so a
    /// failure before it ran stored nothing).
    pub async fn ingest(
        &self,
        redis: &Redis,
        metrics: &[Metric],
        idempotency: Option<&Idempotency<'_>>,
    ) -> Result<IngestOutcome, IngestError> {
        // KEYS[1] is the idempotency record when there is one; the containers
        // follow in the order the metrics first touch them, each once.
        let first = usize::from(idempotency.is_some()) + 1;
        let mut containers: BTreeMap<(&str, Granularity, i64), usize> = BTreeMap::new();
        let mut keys: Vec<String> = Vec::new();
        let mut updates: Vec<(usize, i64, f64, i64, std::sync::Arc<str>)> =
            Vec::with_capacity(metrics.len() * 3);
        for metric in metrics {
            let t = metric.timestamp.timestamp();
            let key = std::sync::Arc::<str>::from(sketch::bin_key(metric.value));
            for granularity in Granularity::ALL {
                let bucket = BucketRef::containing(granularity, t);
                let container = (
                    metric.metric_type.as_str(),
                    granularity,
                    bucket.container_start(),
                );
                let index = *containers.entry(container).or_insert_with(|| {
                    keys.push(self.container_key(&metric.metric_type, bucket));
                    first + keys.len() - 1
                });
                let expire_at = bucket.container_end() + self.retention_s + EXPIRY_SLACK_S;
                updates.push((index, bucket.start, metric.value, expire_at, key.clone()));
            }
        }
        let mut invocation = INGEST.prepare_invoke();
        match idempotency {
            Some(record) => invocation
                .key(&record.key)
                .arg("1")
                .arg(&record.fingerprint)
                .arg(record.response_body)
                .arg(record.ttl_s),
            None => invocation.arg("0").arg("").arg("").arg(0),
        };
        invocation.key(keys).arg(updates.len());
        for (index, start, value, expire_at, key) in &updates {
            // The redis crate writes an f64 with `ryu`: the shortest text that
            // parses back to the same double (`85.5`, `1e300`), which is what
            // the script's `tonumber` reads.
            invocation
                .arg(index)
                .arg(start)
                .arg(value)
                .arg(expire_at)
                .arg(&**key);
        }
        let reply: IngestReply = invocation.invoke_async(&mut redis.clone()).await?;
        match reply {
            IngestReply::Stored => Ok(IngestOutcome::Stored),
            IngestReply::Replay(body) => Ok(IngestOutcome::Replayed(body)),
            IngestReply::Mismatch => Err(IngestError::KeyReused),
            IngestReply::Overflow { update } => Err(IngestError::Overflow {
                metric_index: update / Granularity::ALL.len(),
            }),
        }
    }

    /// The statistics of `metric_type` over `window` (count, compensated
    /// sum, min, max and the merged quantile sketch): one Redis round trip
    /// reading at most ~200 buckets, independent of the number of points.
    ///
    /// # Errors
    /// [`StoreError::Redis`] when Redis fails or times out.
    pub async fn aggregate(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        window: &Window,
    ) -> Result<WindowStats, StoreError> {
        let buckets = cover(window.from.timestamp(), window.to.timestamp());
        let mut total = WindowStats::new();
        for bucket in self
            .read(redis, metric_type, &buckets)
            .await?
            .iter()
            .flatten()
        {
            total.add_bucket(bucket);
        }
        Ok(total)
    }

    /// The statistics of each point of a planned series ([`series::plan`]),
    /// in order: one Redis round trip for all the plan's buckets, so the cost
    /// depends on the plan, never on the number of points stored.
    ///
    /// # Errors
    /// [`StoreError::Redis`] when Redis fails or times out.
    pub async fn series(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        plan: &SeriesPlan,
    ) -> Result<Vec<WindowStats>, StoreError> {
        let buckets = self.read(redis, metric_type, plan.buckets()).await?;
        let mut points = vec![WindowStats::new(); plan.points()];
        for (bucket, point) in buckets.iter().zip(plan.point_of_each_bucket()) {
            if let Some(bucket) = bucket {
                points[point].add_bucket(bucket);
            }
        }
        Ok(points)
    }

    /// Each of `buckets` as stored (`None` when empty), in their order, read
    /// by one `summary.lua` call grouped by container (each bucket's main
    /// and folded fields).
    async fn read(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        buckets: &[BucketRef],
    ) -> Result<Vec<Option<StoredBucket>>, StoreError> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        // Group the buckets by container, keeping each bucket's position.
        let mut containers: BTreeMap<String, Vec<(i64, usize)>> = BTreeMap::new();
        for (position, bucket) in buckets.iter().enumerate() {
            containers
                .entry(self.container_key(metric_type, *bucket))
                .or_default()
                .push((bucket.start, position));
        }
        let mut invocation = SUMMARY.prepare_invoke();
        for key in containers.keys() {
            invocation.key(key);
        }
        for fields in containers.values() {
            invocation.arg(2 * fields.len());
            for (start, _) in fields {
                invocation.arg(start).arg(format!("{start}.s"));
            }
        }
        let reply: SummaryReply = invocation.invoke_async(&mut redis.clone()).await?;
        if reply.unreadable > 0 {
            tracing::warn!(
                metric_type = %metric_type,
                buckets = reply.unreadable,
                "skipping unreadable buckets"
            );
        }
        let mut out = vec![None; buckets.len()];
        for (bucket, (_, position)) in reply.buckets.into_iter().zip(containers.values().flatten())
        {
            out[*position] = bucket;
        }
        Ok(out)
    }
}
