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
//! `value` = one bucket in the format of [`StoredBucket`]), kept in Redis'
//! compact listpack encoding.
//! A window of whole minutes is covered greedily: minutes up to the first
//! hour boundary, hours up to the first day boundary, whole days, then hours
//! and minutes again — at most 59 + 23 + days + 23 + 59 buckets (≤ 194 for 30
//! days), whatever the number of points stored.

use std::fmt;

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

/// 2⁻⁶⁴, exactly. A window's sum is also accumulated scaled by it, so that
/// a total beyond `f64::MAX` of finite bucket sums is still known: up to
/// 2⁶⁴ merged buckets, the scaled sum cannot overflow.
const SCALE: f64 = 1.0 / 18_446_744_073_709_551_616.0;

/// The aggregate of one bucket, or of a whole window: count, sum, min, max.
///
/// Each stored bucket's sum is finite (`ingest.lua` refuses a metric that
/// would make it overflow), but the buckets of a window can add up beyond a
/// double's range. `sum` then saturates at ±`f64::MAX` and the average is
/// computed from the scaled sum, so every number reported is finite (JSON
/// has no infinity; serde_json would write `null`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Number of points.
    pub count: u64,
    /// Sum of their values; always finite: ±`f64::MAX` when the exact sum is
    /// beyond it.
    pub sum: f64,
    /// Smallest value, `None` when `count == 0`.
    pub min: Option<f64>,
    /// Largest value, `None` when `count == 0`.
    pub max: Option<f64>,
    /// The running sum by plain `f64` additions: infinite or NaN once it
    /// overflowed, and then never finite again.
    plain: f64,
    /// The running sum × [`SCALE`].
    scaled: f64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl Aggregate {
    /// No points.
    pub const EMPTY: Aggregate = Aggregate {
        count: 0,
        sum: 0.0,
        min: None,
        max: None,
        plain: 0.0,
        scaled: 0.0,
    };

    /// One bucket (or point): `count` values summing to `sum` (finite).
    fn bucket(count: u64, sum: f64, min: f64, max: f64) -> Self {
        Aggregate {
            count,
            sum,
            min: Some(min),
            max: Some(max),
            plain: sum,
            scaled: sum * SCALE,
        }
    }

    /// Adds one point.
    pub fn push(&mut self, value: f64) {
        self.merge(&Aggregate::bucket(1, value, value, value));
    }

    /// Combines another aggregate into this one (associative and commutative,
    /// up to floating-point rounding of `sum`).
    pub fn merge(&mut self, other: &Aggregate) {
        if other.count == 0 {
            return;
        }
        self.count = self.count.saturating_add(other.count);
        self.plain += other.plain;
        self.scaled += other.scaled;
        self.sum = if self.plain.is_finite() {
            self.plain
        } else {
            (self.scaled / SCALE).clamp(-f64::MAX, f64::MAX)
        };
        self.min = Some(self.min.map_or(other.min.unwrap_or(f64::INFINITY), |m| {
            m.min(other.min.unwrap_or(m))
        }));
        self.max = Some(
            self.max
                .map_or(other.max.unwrap_or(f64::NEG_INFINITY), |m| {
                    m.max(other.max.unwrap_or(m))
                }),
        );
    }

    /// The mean, `None` when empty; finite even when the sum is not (it
    /// lies between `min` and `max`).
    pub fn average(&self) -> Option<f64> {
        (self.count > 0).then(|| {
            let n = self.count as f64;
            if self.plain.is_finite() {
                self.plain / n
            } else {
                let mean = self.scaled / n / SCALE;
                // Not `clamp`, which panics should the bounds ever be out of order.
                mean.max(self.min.unwrap_or(mean))
                    .min(self.max.unwrap_or(mean))
            }
        })
    }
}

/// One bucket as stored in a container hash: **the bucket format**, defined
/// here once.
///
/// The text is `"<count> <sum> <min> <max>"`, single spaces: `count` a
/// non-negative integer, the others finite doubles written with `%.17g`
/// (which round-trips every double), e.g. `"3 60.5 10 30.5"`. It is written
/// (and read back, to add to it) only by `ingest.lua` (`encode_bucket`,
/// `decode_bucket`), and read by [`StoredBucket::parse`] for summaries
/// (`summary.lua` returns the stored text unchanged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredBucket {
    /// Number of points in the bucket.
    pub count: u64,
    /// Sum of their values; finite (`ingest.lua` refuses an overflow).
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl StoredBucket {
    /// Parses the bucket format. `None` for anything else, including
    /// non-finite numbers, which `ingest.lua` never writes.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_ascii_whitespace();
        let count = parts.next()?.parse().ok()?;
        let mut float = || parts.next()?.parse::<f64>().ok().filter(|v| v.is_finite());
        let (sum, min, max) = (float()?, float()?, float()?);
        Some(Self {
            count,
            sum,
            min,
            max,
        })
    }

    /// The bucket as an aggregate, to merge with others.
    pub fn aggregate(&self) -> Aggregate {
        Aggregate::bucket(self.count, self.sum, self.min, self.max)
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
    fn aggregates_merge_like_the_raw_points() {
        let values = [3.5, -1.0, 10.25, 0.0];
        let mut whole = Aggregate::EMPTY;
        values.iter().for_each(|v| whole.push(*v));
        let (mut a, mut b) = (Aggregate::EMPTY, Aggregate::EMPTY);
        a.push(3.5);
        a.push(-1.0);
        b.push(10.25);
        b.push(0.0);
        a.merge(&Aggregate::EMPTY);
        a.merge(&b);
        assert_eq!(a, whole);
        assert_eq!(whole.count, 4);
        assert_eq!(whole.min, Some(-1.0));
        assert_eq!(whole.max, Some(10.25));
        assert_eq!(whole.average(), Some(12.75 / 4.0));
        assert_eq!(Aggregate::EMPTY.average(), None);
    }

    #[test]
    fn window_sums_beyond_a_double_saturate_and_averages_stay_finite() {
        let max = f64::MAX;
        let close = |a: f64, b: f64| (a - b).abs() <= max * 1e-15;
        let bucket = |count: u64, sum: f64, min: f64, max: f64| {
            StoredBucket::parse(&format!("{count} {sum:e} {min:e} {max:e}"))
                .unwrap()
                .aggregate()
        };
        let mut a = Aggregate::EMPTY;
        for _ in 0..3 {
            a.merge(&bucket(1, max, max, max));
        }
        assert_eq!((a.count, a.sum, a.average()), (3, max, Some(max)));
        // Back in range once negative buckets follow: the scaled sum knows.
        a.merge(&bucket(2, -max, -max, 0.0));
        assert_eq!(a.sum, max, "2 × MAX saturates");
        a.merge(&bucket(1, -max, -max, -max));
        assert!(close(a.sum, max), "{a:?}");
        a.merge(&bucket(1, -max, -max, -max));
        assert!(close(a.sum, 0.0), "{a:?}");
        assert!(close(a.average().unwrap(), 0.0), "{a:?}");
        let mut b = Aggregate::EMPTY;
        for v in [-max, -max, -max / 2.0] {
            b.push(v);
        }
        assert_eq!(b.sum, -max);
        assert!(close(b.average().unwrap(), -max / 3.0 * 2.5), "{b:?}");
        for bad in ["1 inf 1 1", "1 NaN 1 1", "1 1 -inf 1", "1 2 3", "x 1 1 1"] {
            assert_eq!(StoredBucket::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn stored_buckets_round_trip() {
        let a = StoredBucket::parse("3 60.5 10 30.5").unwrap().aggregate();
        assert_eq!(a.count, 3);
        assert_eq!(a.sum, 60.5);
        assert_eq!((a.min, a.max), (Some(10.0), Some(30.5)));
        assert!(StoredBucket::parse("garbage").is_none());
        assert_eq!(
            StoredBucket::parse("1 0.10000000000000001 0.10000000000000001 0.10000000000000001")
                .unwrap()
                .sum,
            0.1
        );
    }
}
