//! Compensated summation: Neumaier's variant of Kahan's algorithm
//! (A. Neumaier, "Rundungsfehleranalyse einiger Verfahren zur Summation
//! endlicher Summen", ZAMM 54, 1974), the same arithmetic `ingest.lua` uses
//! inside each bucket.
//!
//! Besides the running sum it keeps the rounding error of every addition,
//! `(s − t) + x` or `(x − t) + s` whichever operand is larger, and adds it
//! back at the end. Large values that cancel therefore no longer swallow
//! small ones: `[1e100, 1.0, −1e100]` sums to `1.0`, where plain addition
//! gives `0.0`. The error is at most about `2ε |Σx| + n ε² Σ|x|`
//! (ε = 2⁻⁵³) instead of plain summation's `n ε Σ|x|`.

/// A sum with its running compensation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    /// Nothing added.
    pub const ZERO: CompensatedSum = CompensatedSum {
        sum: 0.0,
        compensation: 0.0,
    };

    /// A sum as stored in a bucket: its running sum and compensation.
    pub fn from_parts(sum: f64, compensation: f64) -> Self {
        Self { sum, compensation }
    }

    /// Adds one term.
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// Adds another compensated sum (both its parts, as terms).
    pub fn add_sum(&mut self, other: CompensatedSum) {
        self.add(other.sum);
        self.add(other.compensation);
    }

    /// The running sum without its compensation: infinite or NaN once an
    /// addition overflowed, and never finite again.
    pub fn running(&self) -> f64 {
        self.sum
    }

    /// The running compensation.
    pub fn compensation(&self) -> f64 {
        self.compensation
    }

    /// The compensated total, `sum + compensation`.
    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> f64 {
        let mut s = CompensatedSum::ZERO;
        values.iter().for_each(|v| s.add(*v));
        s.value()
    }

    #[test]
    fn large_values_that_cancel_keep_the_small_ones() {
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[1.0, 1e100, 1.0, -1e100]), 2.0);
        assert_eq!(sum(&[0.1; 10]), 1.0);
        assert_eq!(sum(&[]), 0.0);
        let mut a = CompensatedSum::ZERO;
        a.add(1e100);
        a.add(1.0);
        let mut b = CompensatedSum::ZERO;
        b.add(-1e100);
        b.add(2.0);
        a.add_sum(b);
        assert_eq!(a.value(), 3.0);
    }
}
