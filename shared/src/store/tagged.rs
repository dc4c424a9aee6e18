//! Tags in the store: which series a tagged metric updates, the caps on the
//! cardinality of tags (claimed in Redis by `claim_tags.lua`), and how a
//! query's tag selection becomes the series it reads.
//!
//! **Pre-aggregation at ingest.** A metric updates the buckets of its type's
//! own series ([`SeriesKey::All`]), as before tags; with tags, also those of
//! the series of each of its tag values ([`SeriesKey::TagValue`]) and, with
//! two tags or more, of its whole combination ([`SeriesKey::Combination`]),
//! all in the same atomic script call as before (every key carries the
//! type's hash tag). A metric with *k* tags therefore updates
//! 3 × (1 + k + [k ≥ 2]) buckets: 3 untagged, 6 with one tag, 12 with two,
//! 30 with eight. (With one tag the combination is the tag value's series.)
//!
//! **Queries** read whole series, never points ([`resolve`]):
//!
//! | query | series read |
//! |---|---|
//! | no tags | the type's own (1) |
//! | one filter `tag.k=v` | the series of `k=v` (1) |
//! | `group_by=k` | the series of every value of `k` seen since the window's start (≤ `MAX_TAG_VALUES_PER_KEY`) |
//! | several filters, or filters with `group_by` | the series of every combination holding the filters (and `k`) seen since the window's start (≤ `MAX_TAG_COMBINATIONS`) |
//!
//! each over the window's buckets (≤ 194 for a summary), so the cost is the
//! number of series read times the window's buckets, independent of the
//! number of points and of the cardinality of tags the query does not
//! name. A query whose read would pass [`MAX_SELECTED_BUCKETS`] is refused.
//! The values and combinations come from the registries the caps keep.
//!
//! **Caps.** Each type has a registry of its tag combinations and one per
//! tag key of its values (sorted sets, in the type's hash slot, scored by
//! the latest metric timestamp claimed with them, trimmed after the
//! retention). A metric whose tag value or combination is new is claimed
//! there by one script call before it is stored; a cap passed refuses the
//! request before anything is written. An instance remembers what it
//! claimed for [`KNOWN_FOR`] of wall-clock time and [`REFRESH_S`] of metric
//! time, so a known tag costs no extra round trip.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::cluster_routing::Slot;
use redis::{FromRedisValue, ParsingError, RedisError, Script, Value};

use super::buckets::BucketRef;
use super::stats::WindowStats;
use super::{IngestError, MetricStore, StoreError};
use crate::connection::{Redis, RedisMode, ReplyFields};
use crate::keys::SeriesKey;
use crate::metric::{Metric, MetricType};
use crate::tags::{TagKey, TagSelection, TagValue, Tags};

static CLAIM: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| crate::connection::script(include_str!("claim_tags.lua")));

/// How long (wall clock) an instance trusts its memory of a claim: past it,
/// the next metric with that tag is claimed again, so that a registry lost
/// with its Redis is rebuilt (and the caps enforced again) within this time.
pub const KNOWN_FOR: Duration = Duration::from_secs(600);

/// Metric time, s, a claim covers: a known tag is claimed again when a
/// metric's timestamp is more than this past the timestamp last claimed,
/// so a registry's score lags the latest timestamp of its member by at most
/// this much (queries look back this much further).
pub const REFRESH_S: i64 = 3_600;

/// Claims one instance remembers at most; past it, it forgets them all.
const KNOWN_MAX: usize = 100_000;

/// The most buckets a query with tags reads (series × buckets of the
/// window): about 1,000 groups of a monthly summary. Beyond it the query is
/// refused with a 422 that says why.
pub const MAX_SELECTED_BUCKETS: usize = 200_000;

/// The most points a grouped series answers (groups listed × points per
/// group), so that its body stays a few megabytes (Lambda's response limit
/// is 6 MB).
pub const MAX_GROUPED_POINTS: usize = 10_000;

/// The most buckets one read pipeline carries; a larger read is split
/// into pipelines sent together, so that no read holds Redis for long.
const BUCKETS_PER_CALL: usize = 25_000;

/// What this instance claimed recently: `registry key \n member` → (the
/// metric timestamp claimed, when).
#[derive(Debug, Default)]
pub(super) struct Known(HashMap<String, (i64, Instant)>);

impl Known {
    fn covers(&self, id: &str, timestamp: i64) -> bool {
        self.0.get(id).is_some_and(|(claimed, at)| {
            timestamp <= claimed + REFRESH_S && at.elapsed() < KNOWN_FOR
        })
    }

    fn remember(&mut self, id: String, timestamp: i64) {
        if self.0.len() >= KNOWN_MAX {
            self.0.clear();
        }
        let now = Instant::now();
        let entry = self.0.entry(id).or_insert((timestamp, now));
        *entry = (entry.0.max(timestamp), now);
    }
}

/// The shared memory of claims of one store (cloned stores share it).
pub(super) type SharedKnown = Arc<Mutex<Known>>;

/// Registries this instance read: registry key → the tag values it listed,
/// the guess of the next grouped read ([`MetricStore::resolve_and_read`]).
#[derive(Debug, Default)]
pub(super) struct Seen(HashMap<String, Vec<TagValue>>);

impl Seen {
    fn remember(&mut self, registry: String, values: Vec<TagValue>) {
        if self.0.len() >= KNOWN_MAX && !self.0.contains_key(&registry) {
            self.0.clear();
        }
        self.0.insert(registry, values);
    }
}

/// The shared memory of registries read (cloned stores share it).
pub(super) type SharedSeen = Arc<Mutex<Seen>>;

/// One series of a type, owned: what a query reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series {
    /// Every metric of the type.
    All,
    /// The metrics tagged `key=value`.
    TagValue(TagKey, TagValue),
    /// The metrics whose whole set of tags is this one (two tags or more).
    Combination(String),
}

impl Series {
    /// Its key part.
    pub fn key(&self) -> SeriesKey<'_> {
        match self {
            Self::All => SeriesKey::All,
            Self::TagValue(key, value) => SeriesKey::TagValue {
                key: key.as_str(),
                value: value.as_str(),
            },
            Self::Combination(digest) => SeriesKey::Combination { digest },
        }
    }
}

/// The series `metric` updates besides [`SeriesKey::All`]: one per tag,
/// and its combination's (named by `digest`) when it has two tags or more.
pub(super) fn tag_series<'m>(
    metric: &'m Metric,
    digest: Option<&'m str>,
) -> impl Iterator<Item = SeriesKey<'m>> + 'm {
    let values = metric.tags.iter().map(|(k, v)| SeriesKey::TagValue {
        key: k.as_str(),
        value: v.as_str(),
    });
    values.chain(digest.map(|digest| SeriesKey::Combination { digest }))
}

/// The digest naming each metric's combination series, `None` for metrics
/// with fewer than two tags.
pub(super) fn combination_digests(metrics: &[Metric]) -> Vec<Option<String>> {
    metrics
        .iter()
        .map(|m| (m.tags.len() >= 2).then(|| m.tags.digest()))
        .collect()
}

/// The reply of `claim_tags.lua`, decoded here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClaimReply {
    /// `{"claimed"}`.
    Claimed,
    /// `{"capped", c}`: claim `c` (0-based) passed its registry's cap.
    Capped(usize),
}

impl FromRedisValue for ClaimReply {
    fn from_redis_value(reply: Value) -> Result<Self, ParsingError> {
        let mut fields = ReplyFields::new("claim_tags.lua", reply)?;
        let tag: String = fields.take()?;
        match tag.as_str() {
            "claimed" => Ok(Self::Claimed),
            "capped" => Ok(Self::Capped(fields.take()?)),
            other => Err(fields.unexpected(other)),
        }
    }
}

/// One claim to make: a registry, a member, the latest timestamp, and the
/// first metric that needs it.
struct Claim {
    registry: String,
    member: String,
    timestamp: i64,
    /// The tag key whose values the registry holds; `None` for combinations.
    key: Option<TagKey>,
    metric: usize,
    slot: Slot,
}

impl MetricStore {
    /// Claims every tag value and combination of `metrics` that this
    /// instance has not claimed recently, against the caps; one script call
    /// per hash slot (one on a single node), none when every tag is known.
    ///
    /// # Errors
    /// [`IngestError::TagLimit`] naming the first metric (by position) whose
    /// claim passed a cap — nothing of that call was claimed;
    /// [`IngestError::Redis`].
    pub(super) async fn claim_tags(
        &self,
        redis: &Redis,
        metrics: &[Metric],
    ) -> Result<(), IngestError> {
        let claims = self.pending_claims(metrics);
        if claims.is_empty() {
            return Ok(());
        }

        // One call per slot (every claim in one call on a single node).
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut slots: Vec<Option<Slot>> = Vec::new();
        for (i, claim) in claims.iter().enumerate() {
            let slot = (redis.mode() == RedisMode::Cluster).then_some(claim.slot);
            match slots.iter().position(|s| *s == slot) {
                Some(g) => groups[g].push(i),
                None => {
                    slots.push(slot);
                    groups.push(vec![i]);
                }
            }
        }
        let calls = groups
            .iter()
            .map(|group| self.claim_call(redis, &claims, group));
        let replies = futures_util::future::join_all(calls).await;
        let mut refused: Option<&Claim> = None;
        for (group, reply) in groups.iter().zip(replies) {
            match reply? {
                ClaimReply::Claimed => {
                    let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                    for &i in group {
                        let claim = &claims[i];
                        known.remember(
                            format!("{}\n{}", claim.registry, claim.member),
                            claim.timestamp,
                        );
                    }
                }
                ClaimReply::Capped(c) => {
                    let claim = group.get(c).map(|&i| &claims[i]);
                    if let Some(claim) = claim {
                        if refused.is_none_or(|r| claim.metric < r.metric) {
                            refused = Some(claim);
                        }
                    }
                }
            }
        }
        match refused {
            None => Ok(()),
            Some(claim) => Err(IngestError::TagLimit {
                metric_index: claim.metric,
                key: claim.key.clone(),
                limit: match claim.key {
                    Some(_) => self.tag_limits.max_values_per_key,
                    None => self.tag_limits.max_combinations,
                },
            }),
        }
    }

    /// Whether every tag value and combination of `metrics` was claimed by
    /// this instance recently, so that storing them needs no claim call.
    pub fn tags_claimed(&self, metrics: &[Metric]) -> bool {
        self.pending_claims(metrics).is_empty()
    }

    /// The claims `metrics` need: their tag values and combinations this
    /// instance has not claimed recently, each once (with the latest
    /// timestamp that needs it).
    fn pending_claims(&self, metrics: &[Metric]) -> Vec<Claim> {
        let mut claims: Vec<Claim> = Vec::new();
        if metrics.iter().all(|m| m.tags.is_empty()) {
            return claims;
        }
        let mut index: HashMap<String, usize> = HashMap::new();
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for (position, metric) in metrics.iter().enumerate() {
                if metric.tags.is_empty() {
                    continue;
                }
                let t = metric.timestamp.timestamp();
                let metric_type = metric.metric_type.as_str();
                let mut wanted: Vec<(String, String, Option<TagKey>)> = vec![(
                    self.keys.tag_combinations(metric_type),
                    metric.tags.canonical(),
                    None,
                )];
                for (k, v) in metric.tags.iter() {
                    wanted.push((
                        self.keys.tag_values(metric_type, k.as_str()),
                        v.as_str().to_string(),
                        Some(k.clone()),
                    ));
                }
                for (registry, member, key) in wanted {
                    let id = format!("{registry}\n{member}");
                    if known.covers(&id, t) {
                        continue;
                    }
                    match index.get(&id) {
                        Some(&i) => claims[i].timestamp = claims[i].timestamp.max(t),
                        None => {
                            index.insert(id, claims.len());
                            claims.push(Claim {
                                slot: Slot::for_key(self.keys.metric_base(metric_type)),
                                registry,
                                member,
                                timestamp: t,
                                key,
                                metric: position,
                            });
                        }
                    }
                }
            }
        }
        claims
    }

    /// One `claim_tags.lua` call over the claims `group` of `claims`.
    async fn claim_call(
        &self,
        redis: &Redis,
        claims: &[Claim],
        group: &[usize],
    ) -> Result<ClaimReply, RedisError> {
        let mut registries: Vec<&str> = Vec::new();
        let mut caps: Vec<u32> = Vec::new();
        let mut invocation = CLAIM.prepare_invoke();
        let mut args: Vec<(usize, &str, i64)> = Vec::with_capacity(group.len());
        for &i in group {
            let claim = &claims[i];
            let k = match registries.iter().position(|r| *r == claim.registry) {
                Some(k) => k,
                None => {
                    registries.push(&claim.registry);
                    caps.push(match claim.key {
                        Some(_) => self.tag_limits.max_values_per_key,
                        None => self.tag_limits.max_combinations,
                    });
                    registries.len() - 1
                }
            };
            args.push((k + 1, &claim.member, claim.timestamp));
        }
        for registry in &registries {
            invocation.key(*registry);
        }
        invocation
            .arg(self.retention_s)
            .arg(super::EXPIRY_SLACK_S)
            .arg(&caps);
        for (k, member, timestamp) in args {
            invocation.arg(k).arg(member).arg(timestamp);
        }
        invocation.invoke_async(&mut redis.clone()).await
    }

    /// The members of one registry whose latest claimed timestamp is at or
    /// after `since` (unix s).
    async fn registry_members(
        &self,
        redis: &Redis,
        registry: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError> {
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(registry)
            .arg(since)
            .arg("+inf")
            .query_async(&mut redis.clone())
            .await?;
        Ok(members)
    }

    /// The groups of series a selection reads for a window starting at
    /// `from` (unix s): a single unlabelled group without `group_by`, else
    /// one group per value of the key (in no particular order). Reads a
    /// registry when the selection needs one (one round trip).
    ///
    /// # Errors
    /// [`StoreError::Redis`].
    pub async fn resolve(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        selection: &TagSelection,
        from: i64,
    ) -> Result<Vec<(Option<TagValue>, Vec<Series>)>, StoreError> {
        let filters = &selection.filters;
        let since = from - REFRESH_S;
        let Some(key) = &selection.group_by else {
            return Ok(vec![(
                None,
                self.filtered(redis, metric_type, filters, since).await?,
            )]);
        };
        if let Some(value) = filters.get(key) {
            // Grouping by a key the filters fix: one group.
            let series = self.filtered(redis, metric_type, filters, since).await?;
            return Ok(vec![(Some(value.clone()), series)]);
        }
        if filters.is_empty() {
            let registry = self.keys.tag_values(metric_type.as_str(), key.as_str());
            let values = self.registry_members(redis, &registry, since).await?;
            return Ok(values
                .into_iter()
                .filter_map(|v| TagValue::parse(&v).ok())
                .map(|v| (Some(v.clone()), vec![Series::TagValue(key.clone(), v)]))
                .collect());
        }
        let mut groups: BTreeMap<TagValue, Vec<Series>> = BTreeMap::new();
        for combination in self.combinations(redis, metric_type, since).await? {
            if !combination.contains_all(filters) {
                continue;
            }
            if let Some(value) = combination.get(key) {
                groups
                    .entry(value.clone())
                    .or_default()
                    .push(Series::Combination(combination.digest()));
            }
        }
        Ok(groups.into_iter().map(|(v, s)| (Some(v), s)).collect())
    }

    /// The series holding exactly the metrics that match every filter.
    async fn filtered(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        filters: &Tags,
        since: i64,
    ) -> Result<Vec<Series>, StoreError> {
        let mut tags = filters.iter();
        match (tags.next(), tags.next()) {
            (None, _) => Ok(vec![Series::All]),
            (Some((k, v)), None) => Ok(vec![Series::TagValue(k.clone(), v.clone())]),
            _ => Ok(self
                .combinations(redis, metric_type, since)
                .await?
                .into_iter()
                // Every combination holding two filters has two tags or
                // more, so it has a series of its own.
                .filter(|c| c.contains_all(filters))
                .map(|c| Series::Combination(c.digest()))
                .collect()),
        }
    }

    /// The type's tag combinations claimed since `since`.
    async fn combinations(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        since: i64,
    ) -> Result<Vec<Tags>, StoreError> {
        let registry = self.keys.tag_combinations(metric_type.as_str());
        let members = self.registry_members(redis, &registry, since).await?;
        Ok(members
            .iter()
            .filter_map(|m| Tags::parse_canonical(m))
            .collect())
    }

    /// [`MetricStore::resolve`] and [`MetricStore::read_groups`] in one
    /// round trip when they can be: for a `group_by` without filters, the
    /// registry of the key's values is read in the same pipeline as the
    /// buckets of the values this instance saw there last time (the
    /// registry's answer decides: a value no longer listed is dropped, a
    /// new one read in a second round trip), so a repeated grouped query
    /// costs one round trip, as an unfiltered one does. Any other
    /// selection resolves first, then reads.
    ///
    /// # Errors
    /// As [`MetricStore::read_groups`].
    pub(super) async fn resolve_and_read(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        selection: &TagSelection,
        from: i64,
        layout: Layout<'_>,
        field: &'static str,
    ) -> Result<Vec<(Option<TagValue>, Vec<WindowStats>)>, StoreError> {
        let key = match &selection.group_by {
            Some(key) if selection.filters.is_empty() && !layout.buckets.is_empty() => key,
            _ => {
                let groups = self.resolve(redis, metric_type, selection, from).await?;
                let merged = self
                    .read_groups(redis, metric_type, &groups, layout, field)
                    .await?;
                return Ok(groups.into_iter().map(|(v, _)| v).zip(merged).collect());
            }
        };
        let registry = self.keys.tag_values(metric_type.as_str(), key.as_str());
        let since = from - REFRESH_S;
        let guess: Vec<TagValue> = self
            .seen
            .lock()
            .map(|seen| seen.0.get(&registry).cloned().unwrap_or_default())
            .unwrap_or_default();
        let buckets = layout.buckets.len();
        let guess = if guess.len().saturating_mul(buckets) <= BUCKETS_PER_CALL {
            guess
        } else {
            Vec::new()
        };
        let guessed: Vec<Series> = guess
            .iter()
            .map(|v| Series::TagValue(key.clone(), v.clone()))
            .collect();
        let keys: Vec<SeriesKey<'_>> = guessed.iter().map(Series::key).collect();
        let plan = self.plan_read(metric_type, &keys, layout.buckets);
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&registry)
            .arg(since)
            .arg("+inf");
        if !guess.is_empty() {
            plan.add_to(&mut pipe);
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut redis.clone()).await?;
        let parse = |e: ParsingError| StoreError::Redis(RedisError::from(e));
        let mut rest = replies.split_off(1.min(replies.len()));
        let members: Vec<String> = match replies.pop() {
            Some(reply) => FromRedisValue::from_redis_value(reply).map_err(parse)?,
            None => Vec::new(),
        };
        let values: Vec<TagValue> = members
            .iter()
            .filter_map(|v| TagValue::parse(v).ok())
            .collect();
        let total = values.len().saturating_mul(buckets);
        if total > MAX_SELECTED_BUCKETS {
            return Err(StoreError::TooManyBuckets {
                field,
                series: values.len(),
                buckets: total,
            });
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.remember(registry, values.clone());
        }
        let mut read: HashMap<TagValue, Vec<Option<super::buckets::StoredBucket>>> = HashMap::new();
        if !guess.is_empty() {
            rest.truncate(plan.commands());
            let hmgets: Vec<Vec<Option<Vec<u8>>>> = rest
                .into_iter()
                .map(FromRedisValue::from_redis_value)
                .collect::<Result<_, _>>()
                .map_err(parse)?;
            let decoded = self.finish_read(redis, metric_type, plan, hmgets).await?;
            read.extend(guess.into_iter().zip(decoded));
        }
        let missing: Vec<(Option<TagValue>, Vec<Series>)> = values
            .iter()
            .filter(|v| !read.contains_key(*v))
            .map(|v| {
                (
                    Some(v.clone()),
                    vec![Series::TagValue(key.clone(), v.clone())],
                )
            })
            .collect();
        let mut late: HashMap<TagValue, Vec<WindowStats>> = HashMap::new();
        if !missing.is_empty() {
            let merged = self
                .read_groups(redis, metric_type, &missing, layout, field)
                .await?;
            for ((value, _), points) in missing.into_iter().zip(merged) {
                if let Some(value) = value {
                    late.insert(value, points);
                }
            }
        }
        Ok(values
            .into_iter()
            .map(|value| {
                let points = match (read.remove(&value), late.remove(&value)) {
                    (_, Some(points)) => points,
                    (Some(series), None) => {
                        let mut points = vec![WindowStats::new(); layout.points];
                        for (bucket, point) in series.into_iter().zip(layout.point_of) {
                            if let Some(bucket) = bucket {
                                points[*point].take_bucket(bucket);
                            }
                        }
                        points
                    }
                    (None, None) => vec![WindowStats::new(); layout.points],
                };
                (Some(value), points)
            })
            .collect())
    }

    /// Reads the layout's buckets of every series in `groups` (pipelines
    /// of at most `BUCKETS_PER_CALL` buckets, sent together) and merges them
    /// per group and per point of each bucket.
    /// `field` is the query parameter a refusal names.
    ///
    /// # Errors
    /// [`StoreError::TooManyBuckets`] before reading anything when the read
    /// would pass [`MAX_SELECTED_BUCKETS`]; [`StoreError::Redis`].
    pub(super) async fn read_groups(
        &self,
        redis: &Redis,
        metric_type: &MetricType,
        groups: &[(Option<TagValue>, Vec<Series>)],
        layout: Layout<'_>,
        field: &'static str,
    ) -> Result<Vec<Vec<WindowStats>>, StoreError> {
        let Layout {
            buckets,
            point_of,
            points,
        } = layout;
        let series: usize = groups.iter().map(|(_, s)| s.len()).sum();
        let total = series.saturating_mul(buckets.len());
        if total > MAX_SELECTED_BUCKETS {
            return Err(StoreError::TooManyBuckets {
                field,
                series,
                buckets: total,
            });
        }
        let all: Vec<(usize, SeriesKey<'_>)> = groups
            .iter()
            .enumerate()
            .flat_map(|(g, (_, series))| series.iter().map(move |s| (g, s.key())))
            .collect();
        let per_call = (BUCKETS_PER_CALL / buckets.len().max(1)).max(1);
        let reads = all.chunks(per_call).map(|chunk| {
            let keys: Vec<SeriesKey<'_>> = chunk.iter().map(|(_, k)| *k).collect();
            async move { self.read_many(redis, metric_type, &keys, buckets).await }
        });
        let read = futures_util::future::join_all(reads).await;
        let mut merged = vec![vec![WindowStats::new(); points]; groups.len()];
        let mut at = all.iter();
        for chunk in read {
            for series in chunk? {
                let Some((group, _)) = at.next() else {
                    break;
                };
                for (bucket, point) in series.into_iter().zip(point_of) {
                    if let Some(bucket) = bucket {
                        merged[*group][*point].take_bucket(bucket);
                    }
                }
            }
        }
        Ok(merged)
    }
}

/// The buckets a query reads for each series, and the point (of `points`;
/// 1 for a summary) each bucket belongs to.
#[derive(Clone, Copy)]
pub(super) struct Layout<'a> {
    pub buckets: &'a [BucketRef],
    pub point_of: &'a [usize],
    pub points: usize,
}

/// `groups` (each a label and its statistics) with the empty ones left out,
/// largest `count` first, ties by value.
pub fn rank<T>(
    mut groups: Vec<(Option<TagValue>, T)>,
    count: impl Fn(&T) -> u64,
) -> Vec<(Option<TagValue>, T)> {
    groups.retain(|(_, stats)| count(stats) > 0);
    groups.sort_by(|(a, x), (b, y)| count(y).cmp(&count(x)).then_with(|| a.cmp(b)));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_claims_expire_by_metric_time() {
        let mut known = Known::default();
        known.remember("r\nm".into(), 1_000);
        assert!(known.covers("r\nm", 1_000 + REFRESH_S));
        assert!(known.covers("r\nm", 0));
        assert!(!known.covers("r\nm", 1_001 + REFRESH_S));
        assert!(!known.covers("r\nx", 1_000));
        known.remember("r\nm".into(), 500);
        assert!(known.covers("r\nm", 1_000 + REFRESH_S));
    }

    #[test]
    fn ranks_by_count_then_value() {
        let v = |s: &str| Some(TagValue::parse(s).unwrap());
        let ranked = rank(
            vec![(v("b"), 2), (v("a"), 2), (v("c"), 5), (v("d"), 0)],
            |n| *n,
        );
        let order: Vec<_> = ranked
            .iter()
            .map(|(v, _)| v.clone().unwrap().to_string())
            .collect();
        assert_eq!(order, ["c", "a", "b"]);
    }
}
