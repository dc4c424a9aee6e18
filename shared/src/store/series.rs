//! Planning a time series: which buckets make each point.
//!
//! A series asks for one point per `step` over a window. The window is
//! aligned outward to step boundaries (multiples of the step since the Unix
//! epoch, so `1d` points start at 00:00 UTC and `1h` points on the hour),
//! and each point `[t, t + step)` is covered by the fewest aligned buckets
//! ([`cover`]): one for `1m`, `1h` and `1d`, five minutes for `5m`, fifteen
//! for `15m`, six hours for `6h`. The plan's size therefore depends only on
//! the window and the step — never on how many points are stored — and is
//! bounded by [`MAX_POINTS`] points and [`MAX_BUCKETS`] buckets, all read in
//! one round trip.

use super::buckets::{cover, BucketRef};
use crate::window::step::{step_label, NAMED_STEPS};

/// The most points one series answers.
pub const MAX_POINTS: i64 = 1_500;

/// The most buckets one series reads: [`MAX_POINTS`] points of the `15m`
/// step, fifteen minute buckets each (the worst named step).
pub const MAX_BUCKETS: usize = 22_500;

/// Why a series cannot be planned: both say how to fix the query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// More than [`MAX_POINTS`] points.
    #[error(
        "{points} points of {step} each; at most {MAX_POINTS} per series: use a step of at least {suggested_step}, or a window of at most {longest_window_s} s at this step"
    )]
    TooManyPoints {
        /// Points the query asked for.
        points: i64,
        /// The step asked for (label).
        step: String,
        /// The smallest step that fits (a name where one fits).
        suggested_step: String,
        /// The longest window at the asked step, s.
        longest_window_s: i64,
    },
    /// More than [`MAX_BUCKETS`] buckets (a step that is not a whole number
    /// of hours, over a long window).
    #[error(
        "this step needs {buckets} buckets; at most {MAX_BUCKETS} per series: use a step of whole hours or one of 1m, 5m, 15m, or a shorter window"
    )]
    TooManyBuckets {
        /// Buckets the plan would read.
        buckets: usize,
    },
}

/// A planned series: aligned window, step, and the buckets of each point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPlan {
    /// Start of the first point, unix s (aligned to the step).
    pub from: i64,
    /// End of the last point, unix s, exclusive (aligned to the step).
    pub to: i64,
    /// Step, s.
    pub step: i64,
    buckets: Vec<BucketRef>,
    /// `ends[i]`: one past the last bucket of point `i` in `buckets`.
    ends: Vec<usize>,
}

impl SeriesPlan {
    /// Number of points.
    pub fn points(&self) -> usize {
        self.ends.len()
    }

    /// Start of point `i`, unix s.
    pub fn point_start(&self, i: usize) -> i64 {
        self.from + i as i64 * self.step
    }

    /// Every bucket the series reads, point after point, in time order.
    pub fn buckets(&self) -> &[BucketRef] {
        &self.buckets
    }

    /// The buckets of point `i`.
    pub fn point_buckets(&self, i: usize) -> &[BucketRef] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buckets[start..self.ends[i]]
    }

    /// For each bucket of [`Self::buckets`], the point it belongs to.
    pub fn point_of_each_bucket(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.points()).flat_map(|i| std::iter::repeat_n(i, self.point_buckets(i).len()))
    }
}

/// Plans the series of `[from, to)` (unix s, `from < to`) at `step` seconds
/// (a positive multiple of 60): the window is aligned outward to multiples
/// of the step, and every point gets its greedy cover of buckets.
///
/// # Errors
/// [`PlanError`] when the series would exceed [`MAX_POINTS`] points or
/// [`MAX_BUCKETS`] buckets; the message says how to fix the query.
pub fn plan(from: i64, to: i64, step: i64) -> Result<SeriesPlan, PlanError> {
    debug_assert!(step > 0 && step % 60 == 0 && from <= to);
    let first = from.div_euclid(step) * step;
    let last = -((-to).div_euclid(step)) * step;
    let points = (last - first) / step;
    if points > MAX_POINTS {
        return Err(PlanError::TooManyPoints {
            points,
            step: step_label(step),
            suggested_step: smallest_fitting_step(from, to),
            // Any window this long fits whatever its alignment (the window
            // is widened outward to whole steps).
            longest_window_s: (MAX_POINTS - 1) * step,
        });
    }
    // Every point of one step has a cover of the same size, up to how the
    // step meets hour and day boundaries: bound the total before building.
    let per_point = cover(first, first + step)
        .len()
        .max(cover(last - step, last).len());
    if per_point.saturating_mul(points as usize) > 2 * MAX_BUCKETS {
        return Err(PlanError::TooManyBuckets {
            buckets: per_point * points as usize,
        });
    }
    let mut buckets = Vec::new();
    let mut ends = Vec::with_capacity(points as usize);
    for i in 0..points {
        let t = first + i * step;
        buckets.extend(cover(t, t + step));
        ends.push(buckets.len());
    }
    if buckets.len() > MAX_BUCKETS {
        return Err(PlanError::TooManyBuckets {
            buckets: buckets.len(),
        });
    }
    Ok(SeriesPlan {
        from: first,
        to: last,
        step,
        buckets,
        ends,
    })
}

/// Points of the window `from`..`to` at `step` once aligned outward.
fn points_at(from: i64, to: i64, step: i64) -> i64 {
    -((-to).div_euclid(step)) - from.div_euclid(step)
}

/// The smallest step (a multiple of 60 s) at which `from`..`to` can be
/// planned (at most [`MAX_POINTS`] points once aligned, at most
/// [`MAX_BUCKETS`] buckets), by its name where it has one, else in seconds
/// with the next named step beside it.
fn smallest_fitting_step(from: i64, to: i64) -> String {
    let mut step = ((to - from) / MAX_POINTS / 60).max(1) * 60;
    while points_at(from, to, step) > MAX_POINTS || plan(from, to, step).is_err() {
        step += 60;
    }
    let named = NAMED_STEPS.iter().find(|(_, s)| *s >= step);
    match named {
        Some((name, s)) if *s == step => (*name).to_string(),
        Some((name, _)) => format!("{step} s (or {name})"),
        None => format!("{step} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::buckets::Granularity;
    use crate::window::step::parse_step;

    const BASE: i64 = 1_771_372_800; // 2026-02-18T00:00:00Z

    fn check(plan: &SeriesPlan) {
        for i in 0..plan.points() {
            let mut t = plan.point_start(i);
            for b in plan.point_buckets(i) {
                assert_eq!(b.start, t, "point {i}: gap or overlap");
                t += b.granularity.bucket_seconds();
            }
            assert_eq!(t, plan.point_start(i) + plan.step, "point {i} ends early");
        }
        assert_eq!(plan.point_start(plan.points()), plan.to);
        assert_eq!(plan.point_of_each_bucket().count(), plan.buckets().len());
    }

    #[test]
    fn windows_align_outward_to_the_step() {
        let p = plan(BASE + 3_600 + 120, BASE + 3 * 3_600 + 60, 3_600).unwrap();
        assert_eq!(
            (p.from, p.to, p.points()),
            (BASE + 3_600, BASE + 4 * 3_600, 3)
        );
        check(&p);
        assert!(p
            .buckets()
            .iter()
            .all(|b| b.granularity == Granularity::Hour));
        let d = plan(BASE + 7_200, BASE + 86_400 * 30, 86_400).unwrap();
        assert_eq!((d.from, d.points()), (BASE, 30));
        assert!(d
            .buckets()
            .iter()
            .all(|b| b.granularity == Granularity::Day));
    }

    #[test]
    fn named_steps_read_few_buckets_per_point() {
        for (name, step, per_point) in [
            ("1m", 60, 1),
            ("5m", 300, 5),
            ("15m", 900, 15),
            ("1h", 3_600, 1),
            ("6h", 21_600, 6),
            ("1d", 86_400, 1),
        ] {
            assert_eq!(parse_step(name), Ok(step));
            let p = plan(BASE, BASE + step * MAX_POINTS, step).unwrap();
            check(&p);
            assert_eq!(p.points() as i64, MAX_POINTS);
            assert_eq!(p.buckets().len(), per_point * MAX_POINTS as usize, "{name}");
        }
        // A step that is not a divisor of an hour still covers exactly.
        let odd = plan(BASE + 420, BASE + 420 + 7 * 3_600, 25 * 60).unwrap();
        check(&odd);
        let long = plan(BASE, BASE + 10 * 86_400, 2 * 86_400).unwrap();
        check(&long);
        assert_eq!(long.buckets().len(), 10);
    }

    #[test]
    fn too_many_points_or_buckets_say_how_to_fix_the_query() {
        let err = plan(BASE, BASE + 30 * 86_400, 60).unwrap_err();
        assert!(matches!(
            err,
            PlanError::TooManyPoints { points: 43_200, .. }
        ));
        let text = err.to_string();
        assert!(
            text.contains("at least 1h") && text.contains("89940 s"),
            "{text}"
        );
        // The advice works: the suggested step plans, and so does a window
        // of the longest length named, whatever its alignment.
        assert!(plan(BASE, BASE + 30 * 86_400, 3600).is_ok());
        let text = plan(BASE, BASE + 2 * 86_400, 60).unwrap_err().to_string();
        assert!(text.contains("at least 120 s (or 5m)"), "{text}");
        assert!(plan(BASE, BASE + 2 * 86_400, 120).is_ok());
        assert!(plan(BASE + 30, BASE + 30 + 89_940, 60).is_ok());
        let err = plan(BASE + 30, BASE + 30 + 90_000, 60).unwrap_err();
        assert!(
            matches!(err, PlanError::TooManyPoints { points: 1501, .. }),
            "{err}"
        );
        let text = plan(BASE, BASE + 90 * 86_400, 3600)
            .unwrap_err()
            .to_string();
        assert!(text.contains("at least 7200 s (or 6h)"), "{text}");
        let err = plan(BASE, BASE + 30 * 86_400, 59 * 60).unwrap_err();
        assert!(matches!(err, PlanError::TooManyBuckets { .. }), "{err}");
    }
}
