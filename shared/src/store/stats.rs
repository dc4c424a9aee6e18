//! The statistics of a window merged from its stored buckets
//! ([`StoredBucket`]): count, compensated sum, min, max and the quantile
//! sketch.

use super::buckets::{BucketSketch, StoredBucket};
use super::compensated::CompensatedSum;
use super::sketch::Sketch;

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
    /// Points of buckets without a (complete) sketch.
    unsketched: u64,
}

impl WindowStats {
    /// No points.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one decoded bucket.
    pub fn add_bucket(&mut self, bucket: &StoredBucket) {
        if bucket.count == 0 {
            return;
        }
        self.count = self.count.saturating_add(bucket.count);
        self.plain.add_sum(bucket.sum);
        self.scaled.add_sum(CompensatedSum::from_parts(
            bucket.sum.running() * SCALE,
            bucket.sum.compensation() * SCALE,
        ));
        self.min = Some(self.min.map_or(bucket.min, |m| m.min(bucket.min)));
        self.max = Some(self.max.map_or(bucket.max, |m| m.max(bucket.max)));
        // Bins go straight into the window's sketch: should they not cover
        // the bucket's points (a bucket that gained points before its format
        // had sketches, or a folded field missing), the window reports no
        // quantiles at all, so the partial bins do no harm.
        let read = match &bucket.sketch {
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
            Ok(n) if n == bucket.count => n,
            _ => 0,
        };
        self.unsketched = self
            .unsketched
            .saturating_add(bucket.count.saturating_sub(sketched));
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
        self.add_bucket(&bucket);
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
        let estimate = self.sketch.quantile(q)?;
        Some(
            estimate
                .max(self.min.unwrap_or(estimate))
                .min(self.max.unwrap_or(estimate)),
        )
    }

    /// Number of nonempty sketch bins merged (a measure of the work done).
    pub fn sketch_bins(&self) -> usize {
        self.sketch.bins()
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
}
