//! The `GET /api/metrics/series` response and its rendering as a short
//! table, one line per step.
//!
//! Response shape: `{"type", "period", "window": {"from", "to"}, "step",
//! "step_seconds", "points": [{"t", "count", "sum", "average_value",
//! "min_value", "max_value", "percentiles": {"p50", …}}]}`; empty steps have
//! `count` 0 and `null` statistics.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::summary::format_value;

/// One point of a series; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Point {
    /// Start of the step, RFC 3339 UTC.
    pub t: String,
    /// Number of metrics in the step.
    pub count: u64,
    /// Mean value, `None` when `count` is 0.
    pub average_value: Option<f64>,
    /// Largest value, `None` when `count` is 0.
    pub max_value: Option<f64>,
    /// Percentiles by name (`p50`, …), `None` when unknown.
    #[serde(default)]
    pub percentiles: BTreeMap<String, Option<f64>>,
}

/// A series as the API returns it; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Series {
    /// The metric type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The step, e.g. `5m`.
    pub step: String,
    /// One point per step, in time order.
    pub points: Vec<Point>,
}

const HEADERS: [&str; 6] = ["step start (UTC)", "count", "average", "p50", "p95", "max"];

/// Renders a series as an aligned table, one line per step; numbers are
/// right-aligned. Ends with a newline.
pub fn format_series(series: &Series) -> String {
    let percentile = |point: &Point, name: &str| point.percentiles.get(name).copied().flatten();
    let rows: Vec<[String; 6]> = series
        .points
        .iter()
        .map(|p| {
            [
                p.t.clone(),
                p.count.to_string(),
                format_value(p.average_value),
                format_value(percentile(p, "p50")),
                format_value(percentile(p, "p95")),
                format_value(p.max_value),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = HEADERS.map(str::to_owned);
    let rule = widths.map(|w| "-".repeat(w));
    let mut out = String::new();
    for cells in std::iter::once(&header).chain([&rule]).chain(&rows) {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_series_renders_one_aligned_line_per_step() {
        let series: Series = serde_json::from_value(json!({
            "type": "cpu_usage", "period": "hourly", "step": "5m", "step_seconds": 300,
            "window": {"from": "2026-02-18T11:00:00Z", "to": "2026-02-18T11:10:00Z"},
            "points": [
                {"t": "2026-02-18T11:00:00Z", "count": 2, "sum": 30.5, "average_value": 15.25,
                 "min_value": 10.0, "max_value": 20.5,
                 "percentiles": {"p50": 10.0, "p90": 20.5, "p95": 20.5, "p99": 20.5}},
                {"t": "2026-02-18T11:05:00Z", "count": 0, "sum": 0, "average_value": null,
                 "min_value": null, "max_value": null,
                 "percentiles": {"p50": null, "p90": null, "p95": null, "p99": null}}
            ]
        }))
        .expect("series parses");
        let expected = "\
step start (UTC)      count  average    p50    p95    max
--------------------  -----  -------  -----  -----  -----
2026-02-18T11:00:00Z      2    15.25  10.00  20.50  20.50
2026-02-18T11:05:00Z      0        -      -      -      -
";
        assert_eq!(format_series(&series), expected);
    }
}
