//! Which quantiles a summary or series reports: `p50`, `p90`, `p95` and
//! `p99` unless the query names others with `quantiles=0.5,0.999`.

/// Reported when the query names none.
pub const DEFAULT_QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// The most quantiles one query may ask for.
pub const MAX_QUANTILES: usize = 10;

/// The quantiles of a query: each in (0, 1), at most [`MAX_QUANTILES`],
/// ascending, without repeats, so that the same set asked in any order is
/// one query (and one cache entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantiles(Vec<f64>);

impl Default for Quantiles {
    fn default() -> Self {
        Self(DEFAULT_QUANTILES.to_vec())
    }
}

impl Eq for Quantiles {}

impl std::hash::Hash for Quantiles {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for q in &self.0 {
            q.to_bits().hash(state);
        }
    }
}

impl Quantiles {
    /// Parses `quantiles=` (comma-separated decimals, e.g. `0.5,0.999`).
    ///
    /// # Errors
    /// The reason, for a 422 naming the `quantiles` parameter: a value that
    /// is not a number strictly between 0 and 1, none at all, or more than
    /// [`MAX_QUANTILES`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut out: Vec<f64> = Vec::new();
        for part in raw.split(',') {
            let part = part.trim();
            match part.parse::<f64>() {
                Ok(q) if q > 0.0 && q < 1.0 => {
                    if !out.contains(&q) {
                        out.push(q);
                    }
                }
                _ => {
                    return Err(format!(
                        "must be numbers strictly between 0 and 1, separated by commas, e.g. 0.5,0.999 (got {:?})",
                        part.chars().take(32).collect::<String>()
                    ))
                }
            }
        }
        if out.len() > MAX_QUANTILES {
            return Err(format!(
                "at most {MAX_QUANTILES} distinct values (got {})",
                out.len()
            ));
        }
        out.sort_by(f64::total_cmp);
        Ok(Self(out))
    }

    /// The quantiles, ascending.
    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }

    /// Canonical text for cache keys: the quantiles' shortest decimals,
    /// comma-separated (`0.5,0.9,0.95,0.99` by default).
    pub fn canonical(&self) -> String {
        self.0
            .iter()
            .map(f64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The name a quantile is reported under: `p` and the percentage, from the
/// quantile's shortest decimal so that no binary rounding shows
/// (`0.5` → `p50`, `0.999` → `p99.9`, `0.0001` → `p0.01`).
pub fn label(q: f64) -> String {
    let text = q.to_string();
    let fraction = text.strip_prefix("0.").unwrap_or("");
    let mut digits: String = fraction.to_string();
    while digits.len() < 2 {
        digits.push('0');
    }
    let (whole, rest) = digits.split_at(2);
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    if rest.is_empty() {
        format!("p{whole}")
    } else {
        format!("p{whole}.{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_percentages_as_written() {
        for (q, name) in [
            (0.5, "p50"),
            (0.9, "p90"),
            (0.95, "p95"),
            (0.99, "p99"),
            (0.999, "p99.9"),
            (0.05, "p5"),
            (0.001, "p0.1"),
            (0.0001, "p0.01"),
            (0.12345, "p12.345"),
        ] {
            assert_eq!(label(q), name);
        }
    }

    #[test]
    fn parsing_sorts_and_refuses_what_is_not_in_the_open_interval() {
        assert_eq!(
            Quantiles::parse("0.5,0.999").unwrap().as_slice(),
            [0.5, 0.999]
        );
        assert_eq!(
            Quantiles::parse(" 0.9 ,0.9,0.1").unwrap().as_slice(),
            [0.1, 0.9]
        );
        // One set in any order is one query.
        assert_eq!(
            Quantiles::parse("0.99,0.5,0.95,0.9").unwrap(),
            Quantiles::default()
        );
        assert_eq!(
            Quantiles::parse("0.9,0.5").unwrap().canonical(),
            Quantiles::parse("0.5,0.9").unwrap().canonical()
        );
        assert_eq!(Quantiles::default().canonical(), "0.5,0.9,0.95,0.99");
        for bad in [
            "", "0", "1", "1.5", "-0.1", "x", "0.5,", "NaN", "inf", "0.5;0.9",
        ] {
            assert!(Quantiles::parse(bad).is_err(), "{bad}");
        }
        let eleven = (1..=11)
            .map(|i| format!("0.{i:02}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(Quantiles::parse(&eleven)
            .unwrap_err()
            .contains("at most 10"));
        let ten = (1..=10)
            .map(|i| format!("0.{i:02}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(Quantiles::parse(&ten).unwrap().as_slice().len(), 10);
    }
}
