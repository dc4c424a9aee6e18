//! Figure 7: tags. What a summary filtered or grouped by a tag costs
//! beside an unfiltered one, what tags cost an ingest in Redis CPU, and
//! what one tag value's series occupies for the full retention.
//!
//! The data set: `points` metrics of one type, `points / hosts` per host
//! spread over the last 30 days (as figure 3's), each tagged with its host
//! (`host=web-000`…) and the host's region (`region`, host `i` in region
//! `i mod 3`), loaded in batches of 500 of one host's consecutive points
//! (as an agent on each host sends them) through `MetricStore::ingest` (the
//! storage script of a batch `POST`, the tag claims included).
//!
//! - Queries: `MetricStore::aggregate` for the `monthly` window (the Redis
//!   part of a cache miss, as figure 3), beside `aggregate_selected` with
//!   one host filter, grouped by region, two filters (host and region) and
//!   grouped by host, timed in turn.
//! - Ingest: metrics stored one per call and in batches of 500 at the
//!   current minute, untagged and with the two tags (values already claimed,
//!   so no claim call), a batch holding one host's metrics or every host's
//!   in turn, in alternating slices; Redis' CPU (`INFO cpu`) and the time
//!   inside the storage script (`cmdstat_evalsha`) over each slice.
//! - Memory: `MEMORY USAGE` of every container of the type's own series,
//!   of each host's, each region's and each combination's, enumerated from
//!   the bucket layout, and of the registries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use rand::Rng;
use redis::aio::MultiplexedConnection;
use shared::keys::SeriesKey;
use shared::metric::{Metric, MetricType};
use shared::store::buckets::{BucketRef, Granularity};
use shared::tags::{TagKey, TagSelection, Tags};
use shared::window::{Period, Window};
use shared::AppState;

use crate::data_size::{memory_usage, BATCH};
use crate::redis_side::ServerStats;
use crate::results::Tags as TagResults;

/// The regions; host `i` is in region `i mod 3`.
pub const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-south-1"];
/// Batches in flight during the backfill (as figure 3's).
const IN_FLIGHT: usize = 4;
/// How far back the data reaches, s (as figure 3's).
const SPAN_S: i64 = 30 * 86_400 - 15 * 60;
/// Alternating slices of each ingest measurement.
const SLICES: usize = 4;

/// The tags of host `h`.
pub fn tags_of(h: u64) -> Tags {
    let host = format!("web-{h:03}");
    Tags::from_pairs([
        ("host", host.as_str()),
        ("region", REGIONS[(h % 3) as usize]),
    ])
    .unwrap_or_default()
}

/// The tagged data set of one run.
pub struct TagData {
    /// Its metric type.
    pub metric_type: MetricType,
    /// Points.
    pub points: u64,
    /// Hosts.
    pub hosts: u64,
    /// The end of the data: points lie in `[end - SPAN_S, end)`.
    pub end: DateTime<Utc>,
}

impl TagData {
    /// Batch `index`: points `index * BATCH…` of the data set, where point
    /// `i` is point `i mod per_host` of host `i / per_host`, each host's
    /// points spread evenly (with jitter) over the span.
    fn batch(&self, index: usize) -> Vec<Metric> {
        let per_host = (self.points / self.hosts).max(1);
        let spacing_ms = (SPAN_S * 1000) as f64 / per_host as f64;
        let start_ms = (self.end.timestamp() - SPAN_S) * 1000;
        let mut rng = rand::rng();
        let first = index * BATCH;
        let last = ((index + 1) * BATCH).min(self.points as usize);
        (first..last)
            .map(|i| {
                let (host, j) = (i as u64 / per_host, i as u64 % per_host);
                let offset = (j as f64 + rng.random::<f64>()) * spacing_ms;
                Metric {
                    timestamp: Utc
                        .timestamp_millis_opt(start_ms + offset as i64)
                        .single()
                        .unwrap_or(self.end),
                    value: (rng.random::<f64>() * 10_000.0).round() / 100.0,
                    metric_type: self.metric_type.clone(),
                    tags: tags_of(host.min(self.hosts - 1)),
                }
            })
            .collect()
    }

    /// Stores the data set; returns the seconds it took.
    pub async fn ingest(self: &Arc<Self>, state: &Arc<AppState>) -> Result<f64, String> {
        let batches = (self.points as usize).div_ceil(BATCH);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..IN_FLIGHT {
            let (next, data, state) = (Arc::clone(&next), Arc::clone(self), Arc::clone(state));
            workers.push(tokio::spawn(async move {
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        return Ok::<(), String>(());
                    }
                    state
                        .store
                        .ingest(&state.redis, &data.batch(b), None)
                        .await
                        .map_err(|e| format!("tagged backfill: {e}"))?;
                }
            }));
        }
        for worker in workers {
            worker.await.map_err(|e| e.to_string())??;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Every container key one series of the data set can have written,
    /// from the bucket layout (as figure 6 enumerates a type's).
    pub fn series_keys(&self, state: &AppState, series: SeriesKey<'_>) -> Vec<String> {
        let end = self.end.timestamp();
        let start = end - SPAN_S;
        let mut containers = std::collections::BTreeSet::new();
        for (granularity, step) in [
            (Granularity::Minute, 3_600),
            (Granularity::Hour, 86_400),
            (Granularity::Day, 86_400),
        ] {
            let mut t = start;
            while t < end + step {
                let bucket = BucketRef::containing(granularity, t.min(end));
                containers.insert((granularity.tag(), bucket.container_start()));
                t += step;
            }
        }
        containers
            .into_iter()
            .map(|(tag, start)| {
                state
                    .keys
                    .series_container(self.metric_type.as_str(), series, tag, start)
            })
            .collect()
    }
}

fn selection(filters: &[(&str, &str)], group_by: Option<&str>) -> Result<TagSelection, String> {
    Ok(TagSelection {
        filters: Tags::from_pairs(filters.iter().copied()).map_err(|e| format!("{e:?}"))?,
        group_by: group_by.map(TagKey::parse).transpose()?,
        limit: 1_000,
    })
}

fn micros(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// Times the monthly queries: `samples` of the unfiltered, one-host,
/// by-region and two-filter ones in turn, then `host_samples` grouped by
/// host; pushes each run's medians and the counts seen.
pub async fn time_queries(
    state: &AppState,
    data: &TagData,
    samples: usize,
    host_samples: usize,
    out: &mut TagResults,
) -> Result<(), String> {
    let host = tags_of(data.hosts / 2);
    let (h, r) = (
        host.iter()
            .find(|(k, _)| k.as_str() == "host")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        host.iter()
            .find(|(k, _)| k.as_str() == "region")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
    );
    let one_host = selection(&[("host", &h)], None)?;
    let by_region = selection(&[], Some("region"))?;
    let two = selection(&[("host", &h), ("region", &r)], None)?;
    let by_host = selection(&[], Some("host"))?;
    let t = &data.metric_type;
    let mut times: [Vec<u32>; 5] = Default::default();
    let mut counts = [0u64; 5];
    for _ in 0..samples {
        let window = Window::trailing(Period::Monthly, Utc::now());
        let started = Instant::now();
        let all = state
            .store
            .aggregate(&state.redis, t, &window)
            .await
            .map_err(|e| e.to_string())?;
        times[0].push(micros(started));
        counts[0] = all.count;
        for (i, selection) in [(1, &one_host), (2, &by_region), (3, &two)] {
            let started = Instant::now();
            let groups = state
                .store
                .aggregate_selected(&state.redis, t, &window, selection)
                .await
                .map_err(|e| e.to_string())?;
            times[i].push(micros(started));
            match i {
                1 => counts[1] = groups.first().map_or(0, |(_, s)| s.count),
                2 => {
                    counts[2] = groups.iter().map(|(_, s)| s.count).sum();
                    counts[3] = groups.len() as u64;
                }
                _ => {}
            }
        }
    }
    for _ in 0..host_samples {
        let window = Window::trailing(Period::Monthly, Utc::now());
        let started = Instant::now();
        let groups = state
            .store
            .aggregate_selected(&state.redis, t, &window, &by_host)
            .await
            .map_err(|e| e.to_string())?;
        times[4].push(micros(started));
        counts[4] = groups.len() as u64;
    }
    let [a, b, c, d, e] = &mut times;
    out.unfiltered_us.push(crate::stats::quantile_us(a, 0.5));
    out.host_filter_us.push(crate::stats::quantile_us(b, 0.5));
    out.region_groups_us.push(crate::stats::quantile_us(c, 0.5));
    out.two_filters_us.push(crate::stats::quantile_us(d, 0.5));
    out.host_groups_us.push(crate::stats::quantile_us(e, 0.5));
    out.counts_seen.push(counts);
    Ok(())
}

/// How the metrics of one ingest measurement are sent.
#[derive(Clone, Copy)]
pub struct Sending {
    /// Metrics per `MetricStore::ingest` call.
    pub per_call: usize,
    /// Whether one call's tagged metrics come from every host in turn
    /// (else from one host, the next call from the next).
    pub mixed_hosts: bool,
}

/// Redis CPU and script time per metric of storing `n` metrics as
/// `sending` says, untagged (type `plain`) and with two tags of `hosts`
/// hosts (type `tagged`, its values claimed beforehand), in alternating
/// slices: `(untagged CPU, tagged CPU, untagged script, tagged script)`, µs.
pub async fn ingest_cost(
    state: &AppState,
    conn: &mut MultiplexedConnection,
    (plain, tagged): (&MetricType, &MetricType),
    hosts: u64,
    n: usize,
    sending: Sending,
) -> Result<[f64; 4], String> {
    let host_of = |i: usize| match sending.mixed_hosts {
        true => i as u64 % hosts,
        false => (i / sending.per_call) as u64 % hosts,
    };
    let metrics = |t: &MetricType, with_tags: bool, first: usize, count: usize| -> Vec<Metric> {
        let mut rng = rand::rng();
        let now = Utc::now();
        (first..first + count)
            .map(|i| Metric {
                timestamp: now,
                value: (rng.random::<f64>() * 10_000.0).round() / 100.0,
                metric_type: t.clone(),
                tags: if with_tags {
                    tags_of(host_of(i))
                } else {
                    Tags::none()
                },
            })
            .collect()
    };
    // Untimed: every tag value and combination claimed, both scripts warm.
    for (t, with_tags) in [(plain, false), (tagged, true)] {
        let warm: Vec<Metric> = (0..hosts as usize)
            .flat_map(|h| metrics(t, with_tags, h * sending.per_call, 1))
            .collect();
        for chunk in warm.chunks(BATCH) {
            state
                .store
                .ingest(&state.redis, chunk, None)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let mut spent = [ServerStats::default(); 2];
    let slice = n / SLICES;
    for s in 0..SLICES {
        for (side, (t, with_tags)) in [(plain, false), (tagged, true)].into_iter().enumerate() {
            let all = metrics(t, with_tags, s * slice, slice);
            let before = ServerStats::read(conn).await?;
            for chunk in all.chunks(sending.per_call) {
                state
                    .store
                    .ingest(&state.redis, chunk, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let after = ServerStats::read(conn).await?;
            spent[side] = spent[side].plus(&after.since(&before));
        }
    }
    let per = |v: f64| v / (slice * SLICES) as f64;
    Ok([
        per(spent[0].cpu_s * 1e6),
        per(spent[1].cpu_s * 1e6),
        per(spent[0].evalsha_us as f64),
        per(spent[1].evalsha_us as f64),
    ])
}

/// `MEMORY USAGE` of the data set's series, per kind: the type's own, the
/// mean of one host's, of one region's, of one combination's, and the
/// registries' total, bytes; and the keys of one series.
pub async fn weigh(
    state: &AppState,
    conn: &mut MultiplexedConnection,
    data: &TagData,
) -> Result<([f64; 5], u64), String> {
    let keys_of = |series: SeriesKey<'_>| data.series_keys(state, series);
    let base = conn.clone();
    let bytes = |keys: Vec<String>| {
        let mut conn = base.clone();
        async move { memory_usage(&mut conn, &keys).await.map(|(_, b)| b as f64) }
    };
    let own = bytes(keys_of(SeriesKey::All)).await?;
    let mut hosts = 0.0;
    let mut combinations = 0.0;
    for h in 0..data.hosts {
        let tags = tags_of(h);
        let host = tags
            .get(&TagKey::parse("host")?)
            .map(|v| v.to_string())
            .unwrap_or_default();
        hosts += bytes(keys_of(SeriesKey::TagValue {
            key: "host",
            value: &host,
        }))
        .await?;
        let digest = tags.digest();
        combinations += bytes(keys_of(SeriesKey::Combination { digest: &digest })).await?;
    }
    let mut regions = 0.0;
    for region in REGIONS {
        regions += bytes(keys_of(SeriesKey::TagValue {
            key: "region",
            value: region,
        }))
        .await?;
    }
    let t = data.metric_type.as_str();
    let registries = vec![
        state.keys.tag_combinations(t),
        state.keys.tag_values(t, "host"),
        state.keys.tag_values(t, "region"),
    ];
    let registry = bytes(registries).await?;
    Ok((
        [
            own,
            hosts / data.hosts as f64,
            regions / REGIONS.len() as f64,
            combinations / data.hosts as f64,
            registry,
        ],
        keys_of(SeriesKey::All).len() as u64,
    ))
}

/// The end of a data set loaded now: a minute ago.
pub fn end_now() -> DateTime<Utc> {
    Utc::now() - chrono::Duration::seconds(60)
}
