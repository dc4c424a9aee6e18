//! Time buckets: how a metric's timestamp maps to pre-aggregated buckets, and
//! how a summary window is covered by as few buckets as possible.
//!
//! Three granularities, like RedisTimeSeries compaction rules but updated in
//! the same atomic script as the write:
//!
//! | granularity | bucket | container hash (one Redis key) | buckets per container |
//! |---|---|---|---|
//! | minute | 60 s | one hour | 60 |
//! | hour | 3 600 s | one day | 24 |
//! | day | 86 400 s | one 32-day era | 32 |
//!
//! A container is a small Redis hash (`field = bucket start, unix s`,
//! `value` = one bucket in the format of [`StoredBucket`]).
//! A window of whole minutes is covered greedily: minutes up to the first
//! hour boundary, hours up to the first day boundary, whole days, then hours
//! and minutes again — at most 59 + 23 + days + 23 + 59 buckets (≤ 194 for 30
//! days), whatever the number of points stored.

use std::fmt;

use super::compensated::CompensatedSum;

/// Seconds in a minute, hour and day.
const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// Days per day-bucket container.
const ERA_DAYS: i64 = 32;

/// A bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// 60 s buckets in hourly containers.
    Minute,
    /// 3 600 s buckets in daily containers.
    Hour,
    /// 86 400 s buckets in 32-day containers.
    Day,
}

impl Granularity {
    /// All granularities; each metric updates one bucket of each.
    pub const ALL: [Granularity; 3] = [Self::Minute, Self::Hour, Self::Day];

    /// Bucket length, s.
    pub fn bucket_seconds(self) -> i64 {
        match self {
            Self::Minute => MINUTE,
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }

    /// Container length, s.
    pub fn container_seconds(self) -> i64 {
        match self {
            Self::Minute => HOUR,
            Self::Hour => DAY,
            Self::Day => ERA_DAYS * DAY,
        }
    }

    /// The one-letter tag in the container's key (`m`, `h`, `d`).
    pub fn tag(self) -> &'static str {
        match self {
            Self::Minute => "m",
            Self::Hour => "h",
            Self::Day => "d",
        }
    }
}

/// One bucket: a granularity and the bucket's start (unix s, aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketRef {
    /// Its size.
    pub granularity: Granularity,
    /// Its start, unix s, a multiple of the bucket size.
    pub start: i64,
}

impl BucketRef {
    /// The bucket of `granularity` that holds the instant `t` (unix s).
    pub fn containing(granularity: Granularity, t: i64) -> Self {
        let size = granularity.bucket_seconds();
        Self {
            granularity,
            start: t.div_euclid(size) * size,
        }
    }

    /// Start of the container (Redis hash) holding this bucket, unix s.
    pub fn container_start(self) -> i64 {
        let size = self.granularity.container_seconds();
        self.start.div_euclid(size) * size
    }

    /// End of the container holding this bucket, unix s (exclusive).
    pub fn container_end(self) -> i64 {
        self.container_start() + self.granularity.container_seconds()
    }

    /// The container's key suffix after the type's base key: `m:<start>`.
    pub fn container_suffix(self) -> String {
        format!("{}:{}", self.granularity.tag(), self.container_start())
    }
}

/// Covers the window `[from, to)` (unix s, whole minutes, `from ≤ to`) with the
/// fewest aligned buckets, in time order. The buckets are disjoint and their
/// union is exactly the window.
pub fn cover(from: i64, to: i64) -> Vec<BucketRef> {
    let mut buckets = Vec::new();
    let mut t = from;
    let mut take = |t: &mut i64, g: Granularity| {
        buckets.push(BucketRef {
            granularity: g,
            start: *t,
        });
        *t += g.bucket_seconds();
    };
    // Ascend: small buckets until the next larger boundary…
    while t < to && t % HOUR != 0 && t + MINUTE <= to {
        take(&mut t, Granularity::Minute);
    }
    while t < to && t % DAY != 0 && t + HOUR <= to {
        take(&mut t, Granularity::Hour);
    }
    // …then the largest that fit, and descend again for the tail.
    while t + DAY <= to {
        take(&mut t, Granularity::Day);
    }
    while t + HOUR <= to {
        take(&mut t, Granularity::Hour);
    }
    while t + MINUTE <= to {
        take(&mut t, Granularity::Minute);
    }
    buckets
}

/// One bucket as stored in its container: **the bucket format**, defined
/// here once. Written (and read back, to add to it) only by `ingest.lua`,
/// read by [`StoredBucket::parse`] for summaries and series (`summary.lua`
/// returns the stored texts unchanged).
///
/// A bucket is one or two fields of its container hash:
///
/// ```text
/// <start>    <count> <sum> <compensation> <min> <max> <sbins> <rbins>[ <positive floor> <negative floor>]|<recent tokens>
/// <start>.s  <folded tokens>
/// ```
///
/// Single spaces; `count`, `sbins`, `rbins` non-negative integers; `sum`,
/// `compensation` finite doubles written with `%.17g` (which round-trips
/// every double), `min`, `max` with `%.15g` when that reads back the same
/// double, else `%.17g`. `sum` and `compensation` are the two parts of a
/// Neumaier sum ([`super::compensated`]). The tokens are the bucket's
/// quantile sketch ([`super::sketch`]), split in two: at most 128 recent
/// tokens (`rbins`) in the main field, which a single ingest rewrites
/// without copying the rest, and the folded tokens (`sbins`) in the
/// `<start>.s` field, which exists only once a bucket has had more bins than
/// that; a bin may appear in both, and readers add them. The floors (a
/// decimal index, or `x` when unset) appear once a store of the sketch has
/// been collapsed.
///
/// Buckets written before sketches existed read `"<count> <sum> <min>
/// <max>"`: they still give count, sum, min and max; a window holding one
/// reports no percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBucket {
    /// Number of points in the bucket.
    pub count: u64,
    /// Sum of their values, compensated; finite (`ingest.lua` refuses an
    /// overflow).
    pub sum: CompensatedSum,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The recent sketch tokens, `None` for a bucket of the format before
    /// sketches.
    pub sketch: Option<String>,
    /// Tokens in the folded field, per the header (0: no such field).
    pub folded_bins: u64,
    /// The folded field's text, when it was read.
    pub folded: Option<String>,
}

impl StoredBucket {
    /// Parses the bucket format: the main field's text and, when present,
    /// the folded field's. `None` for anything else, including non-finite
    /// numbers, which `ingest.lua` never writes.
    pub fn parse(text: &str, folded: Option<&str>) -> Option<Self> {
        let (head, sketch) = match text.split_once('|') {
            Some((head, sketch)) => (head, Some(sketch)),
            None => (text, None),
        };
        let mut parts = head.split_ascii_whitespace();
        let count = parts.next()?.parse().ok()?;
        let mut float = || parts.next()?.parse::<f64>().ok().filter(|v| v.is_finite());
        let (sum, compensation) = match sketch {
            Some(_) => (float()?, float()?),
            None => (float()?, 0.0),
        };
        let (min, max) = (float()?, float()?);
        let mut folded_bins = 0;
        if sketch.is_some() {
            // sbins, rbins, then optionally the two floors.
            folded_bins = parts.next()?.parse::<u64>().ok()?;
            parts.next()?.parse::<u64>().ok()?;
            if parts.by_ref().take(2).count() == 1 {
                return None;
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            count,
            sum: CompensatedSum::from_parts(sum, compensation),
            min,
            max,
            sketch: sketch.map(str::to_string),
            folded_bins,
            folded: folded.map(str::to_string),
        })
    }
}

impl fmt::Display for BucketRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.granularity.tag(), self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_cover(from: i64, to: i64) -> Vec<BucketRef> {
        let buckets = cover(from, to);
        let mut t = from;
        for b in &buckets {
            assert_eq!(b.start, t, "gap or overlap in {from}..{to}: {buckets:?}");
            assert_eq!(b.start % b.granularity.bucket_seconds(), 0, "unaligned {b}");
            t += b.granularity.bucket_seconds();
        }
        assert_eq!(t, to, "cover of {from}..{to} ends early");
        buckets
    }

    #[test]
    fn covers_are_exact_and_small() {
        let base = 1_771_372_800; // 2026-02-18T00:00:00Z
        assert!(check_cover(base, base).is_empty());
        assert_eq!(check_cover(base, base + DAY).len(), 1);
        assert_eq!(check_cover(base + 60, base + 120).len(), 1);
        // The worst case of a 30-day window: 59 + 23 + 29 + 23 + 59 buckets.
        let worst = check_cover(base + 60, base + 60 + 30 * DAY);
        assert!(worst.len() <= 194, "{}", worst.len());
        let mut seed = 7u64;
        for _ in 0..2_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let from = base + ((seed >> 20) % (40 * 1440)) as i64 * 60;
            let len = ((seed >> 5) % (31 * 1440)) as i64 * 60;
            assert!(check_cover(from, from + len).len() <= 194);
        }
    }

    #[test]
    fn a_point_lies_in_one_bucket_of_each_granularity() {
        let t = 1_771_416_030; // 2026-02-18T12:00:30Z
        assert_eq!(BucketRef::containing(Granularity::Minute, t).start, t - 30);
        assert_eq!(BucketRef::containing(Granularity::Hour, t).start, t - 30);
        assert_eq!(
            BucketRef::containing(Granularity::Day, t).start,
            t - 30 - 12 * HOUR
        );
        let b = BucketRef::containing(Granularity::Minute, t);
        assert!(b.container_start() <= b.start && b.start < b.container_end());
        assert_eq!(BucketRef::containing(Granularity::Minute, -1).start, -60);
    }

    #[test]
    fn both_bucket_formats_parse() {
        let old = StoredBucket::parse("3 60.5 10 30.5", None).unwrap();
        assert_eq!(
            (old.count, old.sum.value(), old.min, old.max),
            (3, 60.5, 10.0, 30.5)
        );
        assert_eq!(old.sketch, None);
        let new = StoredBucket::parse("3 60.5 1e-15 10 30.5 0 2| 1s:2 2m", None).unwrap();
        assert_eq!(new.sum.value(), 60.5 + 1e-15);
        assert_eq!(new.sketch.as_deref(), Some(" 1s:2 2m"));
        assert!(StoredBucket::parse("3 60.5 0 10 30.5 0 2 -5 x| 1s:2 2m", None).is_some());
        assert_eq!(
            StoredBucket::parse("1 0.10000000000000001 0 0.1 0.1 0 1| 0", None)
                .unwrap()
                .sum
                .value(),
            0.1
        );
        for bad in [
            "garbage",
            "1 inf 1 1",
            "1 NaN 1 1",
            "1 1 -inf 1",
            "1 2 3",
            "x 1 1 1",
            "1 1 1 1 1",
            "1 1 0 1 1|",
            "1 1 0 1 1 1|",
            "1 1 0 1 1 0 1 5| 0",
            "1 1 0 1 1 0 1 5 6 7| 0",
        ] {
            assert_eq!(StoredBucket::parse(bad, None), None, "{bad}");
        }
    }
}
