//! The statistics of a window merged from its stored buckets
//! ([`StoredBucket`]): count, compensated sum, min, max and the quantile
//! sketch.

use super::buckets::{BucketSketch, StoredBucket};
use super::compensated::CompensatedSum;
use super::sketch::{Sketch, StoredBins};

/// 2⁻⁶⁴, exactly. A window's sum is also accumulated scaled by it, so that
/// a total beyond `f64::MAX` of finite bucket sums is still known: up to
/// 2⁶⁴ merged buckets, the scaled sum cannot overflow.
const SCALE: f64 = 1.0 / 18_446_744_073_709_551_616.0;

/// The statistics of a window: its buckets merged. Sums are compensated
/// across buckets too; the sketch is the exact merge of the buckets'.
///
/// Each stored bucket's sum is finite, but a window's can exceed a double:
/// [`WindowStats::sum`] then saturates at ±`f64::MAX` and the average comes
/// from the scaled sum, so every number reported is finite.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Number of points.
    pub count: u64,
    /// Smallest value, `None` when `count == 0`.
    pub min: Option<f64>,
    /// Largest value, `None` when `count == 0`.
    pub max: Option<f64>,
    plain: CompensatedSum,
    scaled: CompensatedSum,
    sketch: Sketch,
    /// The bins of the window's only bucket, kept as stored rather than
    /// merged into `sketch` (empty then): a window of one binary bucket (a
    /// series point at the step of its buckets) answers its quantiles from
    /// them. Merged into `sketch` when a second bucket comes.
    kept: Option<KeptBins>,
    /// Points of buckets without a (complete) sketch.
    unsketched: u64,
}

/// A binary bucket's bytes, where its bins start, their layout and the
/// values they hold (checked by [`StoredBins::checked`]).
#[derive(Debug, Clone, PartialEq)]
struct KeptBins {
    bytes: Vec<u8>,
    at: usize,
    width: usize,
    dense: bool,
    total: u64,
}

impl KeptBins {
    fn bins(&self) -> StoredBins<'_> {
        StoredBins {
            body: &self.bytes[self.at..],
            width: self.width,
            dense: self.dense,
        }
    }
}

impl WindowStats {
    /// No points.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one decoded bucket.
    pub fn add_bucket(&mut self, bucket: &StoredBucket) {
        if !self.add_numbers(bucket) {
            return;
        }
        if let Some(total) = self.keepable(bucket) {
            if let BucketSketch::Binary {
                bytes,
                at,
                width,
                dense,
            } = &bucket.sketch
            {
                self.kept = Some(KeptBins {
                    bytes: bytes[*at..].to_vec(),
                    at: 0,
                    width: *width,
                    dense: *dense,
                    total,
                });
                return;
            }
        }
        self.add_bins(&bucket.sketch, bucket.count);
    }

    /// As [`WindowStats::add_bucket`], taking the bucket: the first bucket
    /// of a window keeps its bytes without copying them.
    pub fn take_bucket(&mut self, bucket: StoredBucket) {
        if !self.add_numbers(&bucket) {
            return;
        }
        match (self.keepable(&bucket), bucket.sketch) {
            (
                Some(total),
                BucketSketch::Binary {
                    bytes,
                    at,
                    width,
                    dense,
                },
            ) => {
                self.kept = Some(KeptBins {
                    bytes,
                    at,
                    width,
                    dense,
                    total,
                })
            }
            (_, sketch) => self.add_bins(&sketch, bucket.count),
        }
    }

    /// Merges a nonempty bucket's count, sums, min and max; false (nothing
    /// merged) for an empty one.
    fn add_numbers(&mut self, bucket: &StoredBucket) -> bool {
        if bucket.count == 0 {
            return false;
        }
        self.count = self.count.saturating_add(bucket.count);
        self.plain.add_sum(bucket.sum);
        self.scaled.add_sum(CompensatedSum::from_parts(
            bucket.sum.running() * SCALE,
            bucket.sum.compensation() * SCALE,
        ));
        self.min = Some(self.min.map_or(bucket.min, |m| m.min(bucket.min)));
        self.max = Some(self.max.map_or(bucket.max, |m| m.max(bucket.max)));
        true
    }

    /// For a bucket whose numbers were just merged: the values its bins
    /// hold when they can be kept as stored, i.e. it is the window's only
    /// bucket, binary, and its bins can be read in place and hold all its
    /// points.
    fn keepable(&self, bucket: &StoredBucket) -> Option<u64> {
        let BucketSketch::Binary {
            bytes,
            at,
            width,
            dense,
        } = &bucket.sketch
        else {
            return None;
        };
        if self.count != bucket.count || self.kept.is_some() {
            return None;
        }
        let (_, total) = StoredBins::checked(bytes.get(*at..)?, *width, *dense)?;
        (total == bucket.count).then_some(total)
    }

    /// Merges a bucket's sketch into the window's, after the kept bins of
    /// the window's first bucket.
    fn add_bins(&mut self, sketch: &BucketSketch, count: u64) {
        if let Some(kept) = self.kept.take() {
            // Checked when kept: every bin is added.
            let bins = kept.bins();
            let _ = self.sketch.add_binary(bins.body, bins.width, bins.dense);
        }
        // Bins go straight into the window's sketch: should they not cover
        // the bucket's points (a bucket that gained points before its format
        // had sketches, or a folded field missing), the window reports no
        // quantiles at all, so the partial bins do no harm.
        let read = match sketch {
            BucketSketch::Binary {
                bytes,
                at,
                width,
                dense,
            } => self.sketch.add_binary(&bytes[*at..], *width, *dense),
            BucketSketch::Text {
                recent,
                folded_bins,
                folded,
            } => {
                let n = self.sketch.add_stored(recent);
                match (n, folded) {
                    (n, _) if *folded_bins == 0 => n,
                    (Ok(a), Some(text)) => self.sketch.add_stored(text).map(|b| a + b),
                    _ => Ok(0),
                }
            }
            BucketSketch::None => Ok(0),
        };
        let sketched = match read {
            Ok(n) if n == count => n,
            _ => 0,
        };
        self.unsketched = self
            .unsketched
            .saturating_add(count.saturating_sub(sketched));
    }

    /// Decodes and merges one stored bucket: its field's value (any format
    /// of [`StoredBucket`]) and, for a text bucket, its folded field's
    /// (`None` when absent).
    ///
    /// # Errors
    /// `Err(())` when the value is not a stored bucket; nothing is merged.
    #[allow(clippy::result_unit_err)]
    pub fn add_stored(&mut self, value: &[u8], folded: Option<&str>) -> Result<(), ()> {
        let mut bucket = StoredBucket::decode(value.to_vec()).ok_or(())?;
        if bucket.needs_folded() {
            bucket.set_folded(folded.map(str::to_string));
        }
        self.take_bucket(bucket);
        Ok(())
    }

    /// Adds one value, as the ingest script would (for tests and tools).
    pub fn push(&mut self, value: f64) {
        let mut sketch = Sketch::new();
        sketch.add(value);
        self.add_bucket(&StoredBucket {
            count: 1,
            sum: CompensatedSum::from_parts(value, 0.0),
            min: value,
            max: value,
            sketch: BucketSketch::Text {
                recent: sketch.to_stored(),
                folded_bins: 0,
                folded: None,
            },
        });
    }

    /// The sum, compensated; always finite: ±`f64::MAX` when the exact sum
    /// is beyond it.
    pub fn sum(&self) -> f64 {
        let plain = self.plain.value();
        if self.plain.running().is_finite() && plain.is_finite() {
            plain
        } else {
            (self.scaled.value() / SCALE).clamp(-f64::MAX, f64::MAX)
        }
    }

    /// The mean, `None` when empty; finite even when the sum is not (it lies
    /// between `min` and `max`).
    pub fn average(&self) -> Option<f64> {
        (self.count > 0).then(|| {
            let n = self.count as f64;
            let plain = self.plain.value();
            let mean = if self.plain.running().is_finite() && plain.is_finite() {
                plain / n
            } else {
                self.scaled.value() / n / SCALE
            };
            // Not `clamp`, which panics should the bounds ever be out of order.
            mean.max(self.min.unwrap_or(mean))
                .min(self.max.unwrap_or(mean))
        })
    }

    /// True when every point of the window is in the sketch, so quantiles
    /// can be reported (false when a bucket predates sketches).
    pub fn has_quantiles(&self) -> bool {
        self.unsketched == 0
    }

    /// The q-quantile (`0 < q < 1`, rank-based; [`super::sketch`]), within
    /// α relatively of the exact one, clamped to the exact min and max.
    /// `None` when the window is empty or some bucket has no sketch.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !self.has_quantiles() {
            return None;
        }
        let estimate = match &self.kept {
            Some(kept) => kept.bins().quantile(kept.total, q)?,
            None => self.sketch.quantile(q)?,
        };
        Some(
            estimate
                .max(self.min.unwrap_or(estimate))
                .min(self.max.unwrap_or(estimate)),
        )
    }

    /// Number of nonempty sketch bins merged (a measure of the work done).
    pub fn sketch_bins(&self) -> usize {
        match &self.kept {
            Some(kept) => kept.bins().bins(),
            None => self.sketch.bins(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_with_an_old_bucket_have_no_quantiles_but_the_rest() {
        let mut w = WindowStats::new();
        w.add_stored(b"2 3 0 1 2 0 2| 0 35", None).unwrap();
        assert!(w.quantile(0.5).is_some());
        w.add_stored(b"3 60.5 10 30.5", None).unwrap();
        assert_eq!(
            (w.count, w.sum(), w.min, w.max),
            (5, 63.5, Some(1.0), Some(30.5))
        );
        assert_eq!(w.quantile(0.5), None);
        assert!(!w.has_quantiles());
        // A new-format bucket that gained points while it was old-format.
        let mut v = WindowStats::new();
        v.add_stored(b"4 3 0 1 2 0 2| 0 35", None).unwrap();
        assert_eq!(v.quantile(0.5), None);
        assert!(w.add_stored(b"garbage", None).is_err());
        // Recent and folded tokens add up; a missing folded field means no
        // quantiles.
        let mut f = WindowStats::new();
        f.add_stored(b"3 3 0 1 1 1 1| 0", Some(" 0:2")).unwrap();
        assert_eq!(f.quantile(0.5), Some(1.0));
        let mut g = WindowStats::new();
        g.add_stored(b"3 3 0 1 1 1 1| 0", None).unwrap();
        assert_eq!(g.quantile(0.5), None);
    }

    #[test]
    fn window_sums_beyond_a_double_saturate_and_averages_stay_finite() {
        let max = f64::MAX;
        let close = |a: f64, b: f64| (a - b).abs() <= max * 1e-15;
        let bucket = |count: u64, sum: f64, min: f64, max: f64| {
            format!("{count} {sum:e} 0 {min:e} {max:e} 0 0|")
        };
        let mut a = WindowStats::new();
        for _ in 0..3 {
            a.add_stored(bucket(1, max, max, max).as_bytes(), None)
                .unwrap();
        }
        assert_eq!((a.count, a.sum(), a.average()), (3, max, Some(max)));
        a.add_stored(bucket(2, -max, -max, 0.0).as_bytes(), None)
            .unwrap();
        assert_eq!(a.sum(), max, "2 × MAX saturates");
        a.add_stored(bucket(1, -max, -max, -max).as_bytes(), None)
            .unwrap();
        assert!(close(a.sum(), max), "{a:?}");
        a.add_stored(bucket(1, -max, -max, -max).as_bytes(), None)
            .unwrap();
        assert!(close(a.sum(), 0.0), "{a:?}");
        assert!(close(a.average().unwrap(), 0.0), "{a:?}");
    }

    #[test]
    fn sums_are_compensated_across_buckets() {
        let mut w = WindowStats::new();
        for text in [
            "1 1e100 0 1e100 1e100 0 0|",
            "1 1 0 1 1 0 0|",
            "1 -1e100 0 -1e100 -1e100 0 0|",
        ] {
            w.add_stored(text.as_bytes(), None).unwrap();
        }
        assert_eq!(w.sum(), 1.0);
        assert_eq!(w.average(), Some(1.0 / 3.0));
    }

    /// A binary bucket of `values` in the sparse or dense layout, counts
    /// `width` bytes wide.
    fn binary_bucket(values: &[f64], dense: bool, width: usize) -> StoredBucket {
        let mut bins = std::collections::BTreeMap::<i32, u64>::new();
        for v in values {
            *bins.entry(super::super::sketch::bin_key(*v)).or_default() += 1;
        }
        let mut bytes = vec![if dense { 2 } else { 1 }, width as u8];
        bytes.extend_from_slice(&(values.len() as u64).to_le_bytes()[..6]);
        let sum: f64 = values.iter().sum();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for n in [sum, 0.0, min, max] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        if dense {
            let (first, last) = (*bins.keys().next().unwrap(), *bins.keys().last().unwrap());
            bytes.extend_from_slice(&first.to_le_bytes()[..3]);
            for key in first..=last {
                let count = bins.get(&key).copied().unwrap_or(0);
                bytes.extend_from_slice(&count.to_le_bytes()[..width]);
            }
        } else {
            for (key, count) in &bins {
                bytes.extend_from_slice(&key.to_le_bytes()[..3]);
                bytes.extend_from_slice(&count.to_le_bytes()[..width]);
            }
        }
        StoredBucket::decode(bytes).unwrap()
    }

    /// The quantiles of `buckets` merged into a dense sketch, clamped.
    fn dense_quantiles(buckets: &[&StoredBucket], qs: &[f64]) -> (Vec<Option<f64>>, usize) {
        let mut sketch = Sketch::new();
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for bucket in buckets {
            let BucketSketch::Binary {
                bytes,
                at,
                width,
                dense,
            } = &bucket.sketch
            else {
                unreachable!()
            };
            sketch.add_binary(&bytes[*at..], *width, *dense).unwrap();
            (min, max) = (min.min(bucket.min), max.max(bucket.max));
        }
        let quantiles = qs
            .iter()
            .map(|q| sketch.quantile(*q).map(|e| e.max(min).min(max)))
            .collect();
        (quantiles, sketch.bins())
    }

    #[test]
    fn one_bucket_answers_from_its_stored_bins_as_a_dense_sketch_would() {
        let qs: Vec<f64> = (0..=200).map(|i| f64::from(i) / 200.0).collect();
        let mut seed = 11u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let sets: Vec<Vec<f64>> = vec![
            (0..1389).map(|_| 20.0 + 60.0 * next()).collect(),
            (0..500)
                .map(|i| match i % 5 {
                    0 => 0.0,
                    1 | 2 => -(1e-3 + 1e4 * next()),
                    _ => 1e-6 + 1e3 * next() * next(),
                })
                .collect(),
            (0..300).map(|_| -(1.0 + next())).collect(),
            vec![0.0; 7],
            vec![42.0],
        ];
        for values in &sets {
            for (dense, width) in [(false, 1), (false, 2), (true, 2), (true, 4), (true, 6)] {
                let bucket = binary_bucket(values, dense, width);
                let mut kept = WindowStats::new();
                kept.take_bucket(bucket.clone());
                let mut copied = WindowStats::new();
                copied.add_bucket(&bucket);
                assert!(kept.kept.is_some() && copied.kept.is_some());
                let (expected, bins) = dense_quantiles(&[&bucket], &qs);
                for stats in [&kept, &copied] {
                    let got: Vec<_> = qs.iter().map(|q| stats.quantile(*q)).collect();
                    assert_eq!(got, expected, "dense {dense}, width {width}");
                    assert_eq!(stats.sketch_bins(), bins);
                    assert!(stats.has_quantiles());
                }
                // A second bucket merges the kept bins with it.
                let other = binary_bucket(&[-3.5, 0.0, 17.0, 17.0, 1e6], !dense, 1);
                kept.take_bucket(other.clone());
                assert!(kept.kept.is_none());
                let (expected, bins) = dense_quantiles(&[&bucket, &other], &qs);
                let got: Vec<_> = qs.iter().map(|q| kept.quantile(*q)).collect();
                assert_eq!(got, expected);
                assert_eq!(kept.sketch_bins(), bins);
                assert_eq!(kept.count, values.len() as u64 + 5);
            }
        }
    }

    #[test]
    fn buckets_not_readable_in_place_merge_as_before() {
        // Sparse keys out of order, and bins that miss a point: merged the
        // usual way (the latter without quantiles).
        let mut bucket = binary_bucket(&[1.0, 2.0, 4.0, 8.0], false, 1);
        if let BucketSketch::Binary { bytes, at, .. } = &mut bucket.sketch {
            let pairs = bytes.split_off(*at);
            bytes.extend_from_slice(
                &[&pairs[..4], &pairs[8..12], &pairs[4..8], &pairs[12..]].concat(),
            );
        }
        let mut w = WindowStats::new();
        w.take_bucket(bucket.clone());
        assert!(w.kept.is_none());
        let (expected, _) = dense_quantiles(&[&bucket], &[0.0, 0.5, 1.0]);
        let got: Vec<_> = [0.0, 0.5, 1.0].iter().map(|q| w.quantile(*q)).collect();
        assert_eq!(got, expected);
        let mut short = binary_bucket(&[1.0, 2.0], true, 1);
        short.count = 3;
        let mut v = WindowStats::new();
        v.take_bucket(short);
        assert!(v.kept.is_none());
        assert_eq!(v.quantile(0.5), None);
    }
}
