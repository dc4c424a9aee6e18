//! Metric storage: pre-aggregated time buckets in Redis, so a summary costs
//! the same for a thousand or a billion points.
//!
//! Each accepted metric updates one bucket of each granularity (minute, hour,
//! day — see [`buckets`]) in **one atomic script call** (`ingest.lua`); raw
//! points are never kept. A bucket holds the count, a compensated sum
//! ([`compensated`]), min, max and a DDSketch of its values ([`sketch`]).
//! A summary reads the at most ~200 buckets covering its window in **one
//! round trip** (a pipeline of `HMGET`s, one per container, decoded in Rust:
//! [`buckets::StoredBucket`]) and merges them ([`stats`]); a series
//! ([`series`]) reads the buckets of all its steps in one round trip too.
//! Late and out-of-order metrics land in the buckets of their own timestamp.
//! Every container key expires at its end + `METRIC_RETENTION_DAYS` + one
//! day, so storage is bounded.
//!
//! A tagged metric also updates the series of its tags, in the same call,
//! and a query can select or group by tags ([`tagged`]).
//!
//! All keys of one metric type share the hash tag `{<type>}`, so every
//! script call stays within one Redis Cluster slot. A batch holding several
//! metric types is stored in one call per hash slot in cluster mode (see
//! [`MetricStore::ingest`]), in one call on a single node.
//!
//! How many metric types a deployment holds is bounded by [`registry`]
//! (`MAX_METRIC_TYPES`), around the storage call.

pub mod buckets;
pub mod compensated;
mod limited;
pub mod registry;
pub mod series;
pub mod sketch;
pub mod stats;
pub mod tagged;

use std::collections::BTreeMap;

use redis::cluster_routing::Slot;
use redis::{FromRedisValue, ParsingError, RedisError, Script, Value};

use crate::connection::{Redis, RedisMode, ReplyFields};
use crate::keys::{Keys, SeriesKey};
use crate::metric::{Metric, MetricType};
use crate::tags::{TagKey, TagLimits, TagSelection, TagValue};
use crate::window::Window;
use buckets::{cover, BucketRef, Granularity, StoredBucket};
use series::SeriesPlan;
use stats::WindowStats;

pub use limited::Limited;

const INGEST_LUA: &str = include_str!("ingest.lua");

static INGEST: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| crate::connection::script(INGEST_LUA));

/// The reply of `ingest.lua`, decoded here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IngestReply {
    /// `{"stored"}`: the parts not yet recorded were added (and their
    /// records written).
    Stored,
    /// `{"checked"}`: a `check` call found that a write would store.
    Checked,
    /// `{"replay", body}`: every part was recorded by an earlier attempt;
    /// nothing written; the original 201 body.
    Replay(String),
    /// `{"mismatch"}`: the idempotency key was used with another body.
    Mismatch,
    /// `{"overflow", u}`: update `u` (0-based over the call's updates) would
    /// overflow its bucket's sum.
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
            "checked" => Ok(Self::Checked),
            "replay" => Ok(Self::Replay(fields.take()?)),
            "mismatch" => Ok(Self::Mismatch),
            "overflow" => Ok(Self::Overflow {
                update: fields.take()?,
            }),
            other => Err(fields.unexpected(other)),
        }
    }
}

/// The metrics grouped by type, types in the order they first appear.
fn parts_by_type(metrics: &[Metric]) -> Vec<Part<'_>> {
    let mut parts: Vec<Part<'_>> = Vec::new();
    for (i, metric) in metrics.iter().enumerate() {
        match parts
            .iter_mut()
            .find(|p| p.metric_type == &metric.metric_type)
        {
            Some(part) => part.metrics.push(i),
            None => parts.push(Part {
                metric_type: &metric.metric_type,
                metrics: vec![i],
            }),
        }
    }
    parts
}

/// What one write call's reply means for the request; `owners` maps the
/// call's updates to metric positions.
fn outcome(reply: IngestReply, owners: &[usize]) -> Result<IngestOutcome, IngestError> {
    match reply {
        IngestReply::Stored | IngestReply::Checked => Ok(IngestOutcome::Stored),
        IngestReply::Replay(body) => Ok(IngestOutcome::Replayed(body)),
        IngestReply::Mismatch => Err(IngestError::KeyReused),
        IngestReply::Overflow { update } => Err(IngestError::Overflow {
            metric_index: owners.get(update).copied().unwrap_or(0),
        }),
    }
}

/// The query parameter that makes a selection's cost: `group_by` when it
/// groups, else its filters (`tag`).
fn selection_field(selection: &TagSelection) -> &'static str {
    match selection.group_by {
        Some(_) => "group_by",
        None => "tag",
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
    /// A metric's tag value or tag combination would pass its cap
    /// (`MAX_TAG_VALUES_PER_KEY`, `MAX_TAG_COMBINATIONS`); nothing was
    /// stored.
    #[error("metric {metric_index} would pass a cap on tags")]
    TagLimit {
        /// Position, in the ingested slice, of the first refused metric.
        metric_index: usize,
        /// The tag key whose values passed `MAX_TAG_VALUES_PER_KEY`; `None`
        /// when the combinations passed `MAX_TAG_COMBINATIONS`.
        key: Option<TagKey>,
        /// The cap that was reached.
        limit: u32,
    },
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
    /// A query with tags would read more than
    /// [`tagged::MAX_SELECTED_BUCKETS`] buckets; nothing was read.
    #[error(
        "this query would read {buckets} buckets of {series} series; at most {max}: add a filter, \
         or ask for a shorter window or a coarser step",
        max = tagged::MAX_SELECTED_BUCKETS
    )]
    TooManyBuckets {
        /// The query parameter that selected them: `group_by`, or `tag` for
        /// filters.
        field: &'static str,
        /// Series the query selects.
        series: usize,
        /// Buckets it would read (series × buckets of the window).
        buckets: usize,
    },
}

/// The idempotency records to check and write in the same atomic step as
/// the metrics (IETF draft "The Idempotency-Key HTTP Header Field").
///
/// On a single node, one record per request: [`Keys::idempotency`]. In
/// cluster mode, that record claims the key for the request's fingerprint
/// first (so a reused key is refused before anything is written, whatever
/// types the bodies hold), and each metric type of the request has its own
/// record in its hash slot, [`Keys::idempotency_part`], written by the same
/// script call as that type's buckets.
#[derive(Debug, Clone)]
pub struct Idempotency<'a> {
    /// 32 hex characters identifying the client (a digest of its identity).
    pub client: String,
    /// Hex SHA-256 of the `Idempotency-Key`.
    pub key_digest: String,
    /// Hex SHA-256 of the request's canonical metrics
    /// ([`crate::metric::MetricsBody::fingerprint`]).
    pub fingerprint: String,
    /// The 201 body to replay for a retry.
    pub response_body: &'a str,
    /// How long the records live (`IDEMPOTENCY_TTL_SECONDS`), s.
    pub ttl_s: u64,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The metrics were stored (and the idempotency records written); after
    /// a partial failure, the parts still missing were.
    Stored,
    /// A retry of an earlier request: nothing stored; its original 201 body.
    Replayed(String),
}

/// The metrics of one type: the unit of the idempotency records.
struct Part<'m> {
    metric_type: &'m MetricType,
    /// Positions in the ingested slice.
    metrics: Vec<usize>,
}

/// Whether a call decides only or also writes.
#[derive(Clone, Copy)]
enum CallMode {
    Write,
    Check,
}

/// Reads and writes the buckets of every metric type under one key prefix.
#[derive(Debug, Clone)]
pub struct MetricStore {
    keys: Keys,
    retention_s: i64,
    tag_limits: TagLimits,
    /// Tags this instance claimed recently ([`tagged`]), shared by clones.
    known: tagged::SharedKnown,
    /// Registries this instance read lately ([`tagged`]), shared by clones.
    seen: tagged::SharedSeen,
}

impl MetricStore {
    /// `retention_days` is `METRIC_RETENTION_DAYS`; the caps on tags are
    /// the defaults until [`MetricStore::with_tag_limits`].
    pub fn new(keys: Keys, retention_days: u32) -> Self {
        Self {
            keys,
            retention_s: i64::from(retention_days) * 86_400,
            tag_limits: TagLimits::default(),
            known: Default::default(),
            seen: Default::default(),
        }
    }

    /// The store with the caps on tags `limits` (`MAX_TAG_VALUES_PER_KEY`,
    /// `MAX_TAG_COMBINATIONS`).
    pub fn with_tag_limits(mut self, limits: TagLimits) -> Self {
        self.tag_limits = limits;
        self
    }

    fn container_key(
        &self,
        metric_type: &MetricType,
        series: SeriesKey<'_>,
        bucket: BucketRef,
    ) -> String {
        self.keys.series_container(
            metric_type.as_str(),
            series,
            bucket.granularity.tag(),
            bucket.container_start(),
        )
    }

    /// Stores `metrics` (already validated). With `idempotency`, the
    /// records are checked and written by the same script calls as the
    /// metrics: a retry (same key, same fingerprint) stores nothing and
    /// returns the original body; concurrent requests with one key store
    /// once.
    ///
    /// Tagged metrics update the series of their tags too, in the same
    /// calls ([`tagged`]). A tag value or combination this instance has not
    /// claimed recently is first claimed against the caps, one call per
    /// hash slot; a cap passed refuses the whole request before anything
    /// is stored (what was claimed in other slots' calls stays claimed).
    ///
    /// **Standalone**: one script call, one round trip: all of the metrics
    /// or none.
    ///
    /// **Cluster**: every script call touches one hash slot. The metric types
    /// are grouped by slot; with one slot (every single-type request) it is
    /// one call as on a single node. With an Idempotency-Key, the request's
    /// claim record (the client's slot) is written first and refuses a key
    /// used with another body before anything is stored. With several slots,
    /// each slot's call runs first in `check` mode (read-only: the records
    /// and every bucket sum), so a batch that would overflow any bucket or
    /// reuses a key stores nothing; then each slot's call writes its part
    /// atomically with its per-type records. Between the two, a concurrent
    /// request can still push a bucket of this batch to overflow: that part
    /// is then refused and the others stay stored. A failure between the
    /// writes leaves some parts stored: a keyed retry stores exactly the
    /// missing parts (the others replay).
    ///
    /// # Errors
    /// [`IngestError::Overflow`] when a bucket sum would stop being finite;
    /// [`IngestError::KeyReused`] when the key was used with another body;
    /// [`IngestError::TagLimit`] when a tag would pass a cap;
    /// [`IngestError::Redis`] when Redis fails (each call is atomic; in
    /// cluster mode the calls of other slots may have stored their parts).
    pub async fn ingest(
        &self,
        redis: &Redis,
        metrics: &[Metric],
        idempotency: Option<&Idempotency<'_>>,
    ) -> Result<IngestOutcome, IngestError> {
        if metrics.is_empty() {
            return Ok(IngestOutcome::Stored);
        }
        self.claim_tags(redis, metrics).await?;
        let parts = parts_by_type(metrics);
        if redis.mode() == RedisMode::Standalone {
            // One part (one record) for the whole request, in one call.
            let all = Part {
                metric_type: &metrics[0].metric_type,
                metrics: parts.into_iter().flat_map(|p| p.metrics).collect(),
            };
            let records: Vec<String> = idempotency
                .map(|i| self.keys.idempotency(&i.client, &i.key_digest))
                .into_iter()
                .collect();
            let (reply, owners) = self
                .call(
                    redis,
                    CallMode::Write,
                    &[all],
                    &records,
                    metrics,
                    idempotency,
                )
                .await?;
            return outcome(reply, &owners);
        }
        self.ingest_per_slot(redis, metrics, parts, idempotency)
            .await
    }

    /// The cluster mode of [`MetricStore::ingest`].
    async fn ingest_per_slot(
        &self,
        redis: &Redis,
        metrics: &[Metric],
        parts: Vec<Part<'_>>,
        idempotency: Option<&Idempotency<'_>>,
    ) -> Result<IngestOutcome, IngestError> {
        let mut slots: Vec<(Slot, Vec<Part<'_>>)> = Vec::new();
        for part in parts {
            let slot = Slot::for_key(self.keys.metric_base(part.metric_type.as_str()));
            match slots.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, group)) => group.push(part),
                None => slots.push((slot, vec![part])),
            }
        }
        let records = |group: &[Part<'_>]| -> Vec<String> {
            idempotency
                .map(|i| {
                    group
                        .iter()
                        .map(|p| {
                            self.keys.idempotency_part(
                                p.metric_type.as_str(),
                                &i.client,
                                &i.key_digest,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };

        let mut claimed_now = false;
        if let Some(record) = idempotency {
            let claim = [self.keys.idempotency(&record.client, &record.key_digest)];
            let empty = Part {
                metric_type: &metrics[0].metric_type,
                metrics: Vec::new(),
            };
            let (reply, _) = self
                .call(
                    redis,
                    CallMode::Write,
                    &[empty],
                    &claim,
                    metrics,
                    idempotency,
                )
                .await?;
            match reply {
                IngestReply::Mismatch => return Err(IngestError::KeyReused),
                IngestReply::Stored => claimed_now = true,
                _ => {}
            }
        }
        let release = |claimed_now: bool| async move {
            if let (true, Some(record)) = (claimed_now, idempotency) {
                // The request is refused: as on a single node, the key is
                // not remembered, so a corrected body may use it. Best
                // effort; a failure leaves the claim to expire.
                let key = self.keys.idempotency(&record.client, &record.key_digest);
                let _ignored: Result<(), RedisError> = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut redis.clone())
                    .await;
            }
        };

        // Parts already stored by an earlier attempt are left out of the writes.
        let mut pending: Vec<usize> = (0..slots.len()).collect();
        let mut replayed: Option<String> = None;
        if slots.len() > 1 {
            let checks = slots.iter().map(|(_, group)| {
                let records = records(group);
                async move {
                    self.call(
                        redis,
                        CallMode::Check,
                        group,
                        &records,
                        metrics,
                        idempotency,
                    )
                    .await
                }
            });
            let checked = futures_util::future::join_all(checks).await;
            let mut decided = Vec::with_capacity(checked.len());
            for result in checked {
                decided.push(result?);
            }
            let mut first_overflow: Option<usize> = None;
            for (reply, owners) in &decided {
                match reply {
                    IngestReply::Mismatch => return Err(IngestError::KeyReused),
                    IngestReply::Overflow { update } => {
                        let metric = owners.get(*update).copied().unwrap_or(0);
                        first_overflow = Some(first_overflow.map_or(metric, |m| m.min(metric)));
                    }
                    _ => {}
                }
            }
            if let Some(metric_index) = first_overflow {
                release(claimed_now).await;
                return Err(IngestError::Overflow { metric_index });
            }
            pending.retain(|&i| match &decided[i].0 {
                IngestReply::Replay(body) => {
                    replayed.get_or_insert_with(|| body.clone());
                    false
                }
                _ => true,
            });
            if pending.is_empty() {
                return Ok(IngestOutcome::Replayed(replayed.unwrap_or_default()));
            }
        }

        let writes = pending.iter().map(|&i| {
            let group = &slots[i].1;
            let records = records(group);
            async move {
                self.call(
                    redis,
                    CallMode::Write,
                    group,
                    &records,
                    metrics,
                    idempotency,
                )
                .await
            }
        });
        let written = futures_util::future::join_all(writes).await;
        let single = slots.len() == 1;
        let mut stored_any = false;
        let mut failure: Option<IngestError> = None;
        for result in written {
            match result
                .map_err(IngestError::from)
                .and_then(|(r, o)| outcome(r, &o))
            {
                Ok(IngestOutcome::Stored) => stored_any = true,
                Ok(IngestOutcome::Replayed(body)) => {
                    replayed.get_or_insert(body);
                }
                Err(err) => {
                    // Report the first of several failures; an overflow or
                    // mismatch before a Redis failure, being definite.
                    if failure
                        .as_ref()
                        .is_none_or(|f| matches!(f, IngestError::Redis(_)))
                    {
                        failure = Some(err);
                    }
                }
            }
        }
        if let Some(err) = failure {
            if single && matches!(err, IngestError::Overflow { .. }) {
                release(claimed_now).await;
            }
            return Err(err);
        }
        Ok(match (stored_any, replayed) {
            (false, Some(body)) => IngestOutcome::Replayed(body),
            _ => IngestOutcome::Stored,
        })
    }

    /// One `ingest.lua` call over `parts` (all in one hash slot in cluster
    /// mode), with one record per part in `records` (or none). Returns the
    /// reply and, for each update of the call, the position of its metric.
    async fn call(
        &self,
        redis: &Redis,
        mode: CallMode,
        parts: &[Part<'_>],
        records: &[String],
        metrics: &[Metric],
        idempotency: Option<&Idempotency<'_>>,
    ) -> Result<(IngestReply, Vec<usize>), RedisError> {
        let mut invocation = INGEST.prepare_invoke();
        let owners = self.add_call(&mut invocation, mode, parts, records, metrics, idempotency);
        let reply: IngestReply = invocation.invoke_async(&mut redis.clone()).await?;
        Ok((reply, owners))
    }

    /// Appends the keys and arguments of one `ingest.lua` call over `parts`
    /// to `invocation` (after whatever it holds: the script's `KEYS[1]` is
    /// the first key appended here). Returns, for each update of the call,
    /// the position of its metric.
    fn add_call(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        mode: CallMode,
        parts: &[Part<'_>],
        records: &[String],
        metrics: &[Metric],
        idempotency: Option<&Idempotency<'_>>,
    ) -> Vec<usize> {
        // KEYS: the records, then the containers in the order the metrics
        // first touch them, each once, with their expiries. A tagged
        // metric's series (its tag values', its combination's) are updated
        // beside the type's own.
        let first = records.len() + 1;
        let digests = tagged::combination_digests(metrics);
        let mut containers: BTreeMap<(&str, SeriesKey<'_>, Granularity, i64), usize> =
            BTreeMap::new();
        let mut keys: Vec<String> = Vec::new();
        let mut expiries: Vec<i64> = Vec::new();
        let total: usize = parts.iter().map(|p| p.metrics.len()).sum();
        // Per metric: its value, sketch key and number of updates; per
        // update: the container's key index and the bucket's start.
        let mut heads: Vec<(f64, i32, usize)> = Vec::with_capacity(total);
        let mut updates: Vec<(usize, i64)> = Vec::with_capacity(total * 3);
        let mut owners: Vec<usize> = Vec::with_capacity(total * 3);
        for part in parts {
            for &m in &part.metrics {
                let metric = &metrics[m];
                let t = metric.timestamp.timestamp();
                let before = updates.len();
                let series = std::iter::once(SeriesKey::All)
                    .chain(tagged::tag_series(metric, digests[m].as_deref()));
                for series in series {
                    for granularity in Granularity::ALL {
                        let bucket = BucketRef::containing(granularity, t);
                        let container = (
                            metric.metric_type.as_str(),
                            series,
                            granularity,
                            bucket.container_start(),
                        );
                        let index = *containers.entry(container).or_insert_with(|| {
                            keys.push(self.container_key(&metric.metric_type, series, bucket));
                            expiries
                                .push(bucket.container_end() + self.retention_s + EXPIRY_SLACK_S);
                            first + keys.len() - 1
                        });
                        updates.push((index, bucket.start));
                        owners.push(m);
                    }
                }
                // The value's sketch key, the same in all its buckets.
                heads.push((
                    metric.value,
                    sketch::bin_key(metric.value),
                    updates.len() - before,
                ));
            }
        }
        invocation.key(records).key(keys);
        invocation.arg(match mode {
            CallMode::Write => "write",
            CallMode::Check => "check",
        });
        invocation.arg(records.len());
        // Without records the script takes no fingerprint, body or TTL.
        if let Some(record) = idempotency.filter(|_| !records.is_empty()) {
            invocation
                .arg(&record.fingerprint)
                .arg(record.response_body)
                .arg(record.ttl_s);
        }
        invocation.arg(parts.len());
        for part in parts {
            invocation.arg(part.metrics.len());
        }
        invocation.arg(&expiries);
        let mut at = 0;
        for (value, key, n) in &heads {
            // The redis crate writes an f64 with `ryu`: the shortest text that
            // parses back to the same double (`85.5`, `1e300`), which is what
            // the script's `tonumber` reads.
            invocation.arg(value).arg(key).arg(n);
            for (index, start) in &updates[at..at + n] {
                invocation.arg(index).arg(start);
            }
            at += n;
        }
        owners
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
            .into_iter()
            .flatten()
        {
            total.take_bucket(bucket);
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
        for (bucket, point) in buckets.into_iter().zip(plan.point_of_each_bucket()) {
            if let Some(bucket) = bucket {
                points[point].take_bucket(bucket);
            }
        }
        Ok(points)
    }

    /// The statistics of `metric_type` over `window` for a tag selection:
    /// one entry per group, largest count first, groups without metrics in
    /// the window left out (all of them, for [`crate::window`]'s `limit` to
    /// cut); without `group_by`, a single unlabelled entry, empty or not.
    /// Reads the registry of the selection when it needs one (one round
    /// trip), then the buckets of every series selected ([`tagged`]).
    ///
    /// # Errors
    /// [`StoreError::TooManyBuckets`] for a selection that would read more
    /// than [`tagged::MAX_SELECTED_BUCKETS`] buckets; [`StoreError::Redis`].
    pub async fn aggregate_selected(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        window: &Window,
        selection: &TagSelection,
    ) -> Result<Vec<(Option<TagValue>, WindowStats)>, StoreError> {
        let from = window.from.timestamp();
        let buckets = cover(from, window.to.timestamp());
        let point_of = vec![0; buckets.len()];
        let merged = self
            .resolve_and_read(
                redis,
                metric_type,
                selection,
                from,
                tagged::Layout {
                    buckets: &buckets,
                    point_of: &point_of,
                    points: 1,
                },
                selection_field(selection),
            )
            .await?;
        let stats: Vec<_> = merged
            .into_iter()
            .map(|(value, mut points)| (value, points.pop().unwrap_or_default()))
            .collect();
        Ok(match selection.group_by {
            Some(_) => tagged::rank(stats, |s| s.count),
            None => stats,
        })
    }

    /// The points of a planned series for a tag selection, per group as
    /// [`MetricStore::aggregate_selected`] gives them (ranked by the count of
    /// the whole window).
    ///
    /// # Errors
    /// As [`MetricStore::aggregate_selected`].
    pub async fn series_selected(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        plan: &SeriesPlan,
        selection: &TagSelection,
    ) -> Result<Vec<(Option<TagValue>, Vec<WindowStats>)>, StoreError> {
        let point_of: Vec<usize> = plan.point_of_each_bucket().collect();
        let series = self
            .resolve_and_read(
                redis,
                metric_type,
                selection,
                plan.from,
                tagged::Layout {
                    buckets: plan.buckets(),
                    point_of: &point_of,
                    points: plan.points(),
                },
                selection_field(selection),
            )
            .await?;
        Ok(match selection.group_by {
            Some(_) => tagged::rank(series, |points| points.iter().map(|p| p.count).sum()),
            None => series,
        })
    }

    /// Each of `buckets` as stored (`None` when empty), in their order, read
    /// by one pipeline of `HMGET`s, one per container.
    async fn read(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        buckets: &[BucketRef],
    ) -> Result<Vec<Option<StoredBucket>>, StoreError> {
        let mut read = self
            .read_many(redis, metric_type, &[SeriesKey::All], buckets)
            .await?;
        Ok(read.pop().unwrap_or_default())
    }

    /// For each of `series`, each of `buckets` as stored (`None` when
    /// empty), in their order: one round trip, a pipeline of one `HMGET` per
    /// container (all of them in the type's hash slot), decoded here. A
    /// bucket of the text format with a folded field (written before the
    /// binary format, until it expires) costs one more round trip for the
    /// folded fields.
    async fn read_many(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        series: &[SeriesKey<'_>],
        buckets: &[BucketRef],
    ) -> Result<Vec<Vec<Option<StoredBucket>>>, StoreError> {
        if buckets.is_empty() || series.is_empty() {
            return Ok(vec![Vec::new(); series.len()]);
        }
        let plan = self.plan_read(metric_type, series, buckets);
        let mut pipe = redis::pipe();
        plan.add_to(&mut pipe);
        let replies: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut redis.clone()).await?;
        self.finish_read(redis, metric_type, plan, replies).await
    }

    /// The `HMGET`s that read `buckets` of every one of `series`.
    fn plan_read(
        &self,
        metric_type: &MetricType,
        series: &[SeriesKey<'_>],
        buckets: &[BucketRef],
    ) -> ReadPlan {
        // Group the buckets by container, keeping each bucket's position
        // (series after series).
        let mut containers: BTreeMap<String, Vec<(i64, usize)>> = BTreeMap::new();
        for (s, key) in series.iter().enumerate() {
            for (position, bucket) in buckets.iter().enumerate() {
                containers
                    .entry(self.container_key(metric_type, *key, *bucket))
                    .or_default()
                    .push((bucket.start, s * buckets.len() + position));
            }
        }
        ReadPlan {
            containers,
            series: series.len(),
            buckets: buckets.len(),
        }
    }

    /// Decodes the replies of a [`ReadPlan`]'s `HMGET`s, in its order, per
    /// series (reading the folded fields of text buckets that have one).
    async fn finish_read(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        plan: ReadPlan,
        replies: Vec<Vec<Option<Vec<u8>>>>,
    ) -> Result<Vec<Vec<Option<StoredBucket>>>, StoreError> {
        let ReadPlan {
            containers,
            series,
            buckets,
        } = plan;
        let mut out: Vec<Option<StoredBucket>> = vec![None; series * buckets];
        let mut unreadable = 0usize;
        let mut folded: Vec<(&str, i64, usize)> = Vec::new();
        for ((key, fields), values) in containers.iter().zip(replies) {
            for ((start, position), value) in fields.iter().zip(values) {
                let Some(value) = value else { continue };
                match StoredBucket::decode(value) {
                    Some(bucket) => {
                        if bucket.needs_folded() {
                            folded.push((key, *start, *position));
                        }
                        out[*position] = Some(bucket);
                    }
                    None => unreadable += 1,
                }
            }
        }
        if !folded.is_empty() {
            let mut pipe = redis::pipe();
            for (key, start, _) in &folded {
                pipe.cmd("HGET").arg(*key).arg(format!("{start}.s"));
            }
            let texts: Vec<Option<String>> = pipe.query_async(&mut redis.clone()).await?;
            for ((_, _, position), text) in folded.iter().zip(texts) {
                if let Some(bucket) = out[*position].as_mut() {
                    bucket.set_folded(text);
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(
                metric_type = %metric_type,
                buckets = unreadable,
                "skipping unreadable buckets"
            );
        }
        let mut per_series = Vec::with_capacity(series);
        let mut rest = out.into_iter();
        for _ in 0..series {
            per_series.push(rest.by_ref().take(buckets).collect());
        }
        Ok(per_series)
    }
}

/// The `HMGET`s of one read: each container's fields and, for each field,
/// the bucket's position (series after series).
struct ReadPlan {
    containers: BTreeMap<String, Vec<(i64, usize)>>,
    series: usize,
    buckets: usize,
}

impl ReadPlan {
    /// Appends one `HMGET` per container to `pipe`.
    fn add_to(&self, pipe: &mut redis::Pipeline) {
        for (key, fields) in &self.containers {
            let command = pipe.cmd("HMGET").arg(key);
            for (start, _) in fields {
                command.arg(start);
            }
        }
    }

    /// How many commands [`ReadPlan::add_to`] appends.
    fn commands(&self) -> usize {
        self.containers.len()
    }
}
