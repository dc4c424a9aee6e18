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
/// read by [`StoredBucket::decode`] for summaries and series (the reader
/// sends `HMGET`s of the bucket fields and decodes the values in Rust).
///
/// A bucket is one field of its container hash, `<start>`, whose value is
/// binary, little-endian (Redis Lua's `struct` format in brackets):
///
/// ```text
/// offset  size  field
///  0      1     tag: 1 sparse bins, 2 dense bins, +4 when floors follow  (B)
///  1      1     w: bytes per bin count, 1, 2, 4 or 6                      (B)
///  2      6     count: points in the bucket                               (I6)
///  8      8     sum: running sum, finite                                  (d)
/// 16      8     compensation: Neumaier's correction of the sum            (d)
/// 24      8     min                                                        (d)
/// 32      8     max                                                        (d)
/// 40      8     only with tag ≥ 4: the floor keys of the positive and
///               negative stores, 0 when unset                             (i4 i4)
/// 40|48   …     bins: sparse, (key, count) pairs in ascending key order  (i3 Iw)…
///               or dense, the first key then one count per key from it
///               on, zeros included                                        (i3 Iw…)
/// ```
///
/// `sum` and `compensation` are the two parts of a Neumaier sum
/// ([`super::compensated`]). The bins are the bucket's DDSketch
/// ([`super::sketch`]) with the keys of [`super::sketch::bin_key`]; the
/// script writes whichever layout is shorter and the smallest count width
/// that holds every count. A bucket of a few points takes 40 bytes of header
/// and 4 bytes per distinct bin (e.g. 23 points of a minute: about 120
/// bytes); a store's floor appears once it has been collapsed.
///
/// The text formats written before remain readable until they expire (the
/// script rewrites a bucket in the binary format when it next writes it):
/// `"<count> <sum> <compensation> <min> <max> <sbins> <rbins>[ <pfloor>
/// <nfloor>]|<tokens>"` with the tokens of [`super::sketch::Sketch::add_stored`]
/// and, when `sbins > 0`, more tokens in the field `<start>.s`; and the
/// oldest, `"<count> <sum> <min> <max>"`, which gives count, sum, min and max
/// but no sketch (a window holding one reports no percentiles).
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
    /// The bucket's sketch as stored.
    pub sketch: BucketSketch,
}

/// The sketch of a [`StoredBucket`], as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum BucketSketch {
    /// A bucket of the oldest text format: no sketch.
    None,
    /// The text format: the main field's tokens, the number of tokens of
    /// the folded field `<start>.s` (0: no such field) and its text, when
    /// read.
    Text {
        /// The tokens after the `|`.
        recent: String,
        /// Tokens in the folded field, per the header.
        folded_bins: u64,
        /// The folded field's text, when it was read.
        folded: Option<String>,
    },
    /// The binary format: the bucket's bytes and where its bins start.
    Binary {
        /// The whole stored value.
        bytes: Vec<u8>,
        /// Offset of the bins.
        at: usize,
        /// Bytes per count.
        width: usize,
        /// Dense layout (else sparse).
        dense: bool,
    },
}

/// Header bytes of a binary bucket without floors.
const BINARY_HEADER: usize = 40;

fn f64_at(bytes: &[u8], at: usize) -> Option<f64> {
    let v = f64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
    v.is_finite().then_some(v)
}

impl StoredBucket {
    /// Decodes a stored bucket value of any format (the binary one, or the
    /// text ones before it). `None` for anything else, including non-finite
    /// numbers, which `ingest.lua` never writes. A text bucket with a folded
    /// field needs it added with [`StoredBucket::set_folded`].
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        match bytes.first() {
            Some(b'0'..=b'9') => {
                let text = std::str::from_utf8(&bytes).ok()?;
                Self::parse(text, None)
            }
            Some(&tag) => {
                if !matches!(tag, 1 | 2 | 5 | 6) || bytes.len() < BINARY_HEADER {
                    return None;
                }
                let width = usize::from(bytes[1]);
                if !matches!(width, 1 | 2 | 4 | 6) {
                    return None;
                }
                let mut count = [0u8; 8];
                count[..6].copy_from_slice(&bytes[2..8]);
                let count = u64::from_le_bytes(count);
                let sum = CompensatedSum::from_parts(f64_at(&bytes, 8)?, f64_at(&bytes, 16)?);
                let (min, max) = (f64_at(&bytes, 24)?, f64_at(&bytes, 32)?);
                let at = if tag >= 4 {
                    BINARY_HEADER + 8
                } else {
                    BINARY_HEADER
                };
                if bytes.len() < at {
                    return None;
                }
                Some(Self {
                    count,
                    sum,
                    min,
                    max,
                    sketch: BucketSketch::Binary {
                        bytes,
                        at,
                        width,
                        dense: tag % 4 == 2,
                    },
                })
            }
            None => None,
        }
    }

    /// Whether this is a text bucket whose folded field `<start>.s` must
    /// be read too ([`StoredBucket::set_folded`]).
    pub fn needs_folded(&self) -> bool {
        matches!(
            &self.sketch,
            BucketSketch::Text { folded_bins, folded: None, .. } if *folded_bins > 0
        )
    }

    /// Adds the text of the folded field of a text bucket.
    pub fn set_folded(&mut self, text: Option<String>) {
        if let BucketSketch::Text { folded, .. } = &mut self.sketch {
            *folded = text;
        }
    }

    /// Parses the text formats: the main field's text and, when present,
    /// the folded field's. `None` for anything else, including non-finite
    /// numbers.
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
            sketch: match sketch {
                Some(recent) => BucketSketch::Text {
                    recent: recent.to_string(),
                    folded_bins,
                    folded: folded.map(str::to_string),
                },
                None => BucketSketch::None,
            },
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
        assert_eq!(old.sketch, BucketSketch::None);
        let new = StoredBucket::parse("3 60.5 1e-15 10 30.5 0 2| 1s:2 2m", None).unwrap();
        assert_eq!(new.sum.value(), 60.5 + 1e-15);
        assert!(matches!(&new.sketch, BucketSketch::Text { recent, .. } if recent == " 1s:2 2m"));
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
            assert_eq!(StoredBucket::decode(bad.as_bytes().to_vec()), None, "{bad}");
        }
        let folded = StoredBucket::decode(b"3 60.5 0 10 30.5 2 1| 1".to_vec()).unwrap();
        assert!(folded.needs_folded());
    }

    fn binary(tag: u8, width: u8, count: u64, numbers: [f64; 4], rest: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, width];
        out.extend_from_slice(&count.to_le_bytes()[..6]);
        for n in numbers {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(rest);
        out
    }

    #[test]
    fn the_binary_format_decodes() {
        let bytes = binary(1, 1, 3, [60.5, 1e-15, 10.0, 30.5], &[1, 0, 0, 3]);
        let bucket = StoredBucket::decode(bytes.clone()).unwrap();
        assert_eq!(
            (bucket.count, bucket.sum.value(), bucket.min, bucket.max),
            (3, 60.5 + 1e-15, 10.0, 30.5)
        );
        assert_eq!(
            bucket.sketch,
            BucketSketch::Binary {
                bytes,
                at: 40,
                width: 1,
                dense: false
            }
        );
        let floors = StoredBucket::decode(binary(6, 2, 1, [1.0; 4], &[0; 8])).unwrap();
        assert!(matches!(
            floors.sketch,
            BucketSketch::Binary {
                at: 48,
                width: 2,
                dense: true,
                ..
            }
        ));
        for bad in [
            binary(3, 1, 1, [1.0; 4], &[]),
            binary(1, 3, 1, [1.0; 4], &[]),
            binary(1, 1, 1, [f64::NAN, 0.0, 1.0, 1.0], &[]),
            binary(1, 1, 1, [1.0, 0.0, f64::INFINITY, 1.0], &[]),
            binary(5, 1, 1, [1.0; 4], &[0; 7]),
            vec![1, 1, 0],
            Vec::new(),
        ] {
            assert_eq!(StoredBucket::decode(bad.clone()), None, "{bad:?}");
        }
    }
}
