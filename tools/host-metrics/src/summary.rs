//! The `GET /api/metrics/summary` response and its rendering as a table.
//!
//! Response shape: `{"type", "period", "window": {"from", "to"}, "count",
//! "average_value", "min_value", "max_value", "sum", "external_data":
//! {"status", ...}}`; the three statistics are `null` when `count` is 0.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The effective bounds of a summary, RFC 3339 UTC strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Window {
    /// Start, inclusive.
    pub from: String,
    /// End, exclusive.
    pub to: String,
}

/// One summary as the API returns it; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Summary {
    /// The metric type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The period asked for, when one was.
    #[serde(default)]
    pub period: Option<String>,
    /// The window the figures cover.
    pub window: Window,
    /// Number of metrics in the window.
    pub count: u64,
    /// Mean value, `None` when `count` is 0.
    pub average_value: Option<f64>,
    /// Smallest value, `None` when `count` is 0.
    pub min_value: Option<f64>,
    /// Largest value, `None` when `count` is 0.
    pub max_value: Option<f64>,
    /// Context from the external source: `status` plus, on success, its fields.
    #[serde(default)]
    pub external_data: Option<Map<String, Value>>,
    /// The tag filters the server applied (absent from a server without
    /// tags, which ignores them).
    #[serde(default)]
    pub filters: Option<Map<String, Value>>,
}

/// A statistic with two decimals, or `-` when there is none.
pub fn format_value(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => "-".to_owned(),
    }
}

/// The `external_data` cell: its `status`, followed by the other fields in
/// brackets (`success (external_metric_context=342)`), or `-` when absent.
pub fn format_external(external: Option<&Map<String, Value>>) -> String {
    let Some(external) = external else {
        return "-".to_owned();
    };
    let status = external
        .get("status")
        .map(scalar_text)
        .unwrap_or_else(|| "?".to_owned());
    let extras: Vec<String> = external
        .iter()
        .filter(|(key, _)| key.as_str() != "status")
        .map(|(key, value)| format!("{key}={}", scalar_text(value)))
        .collect();
    if extras.is_empty() {
        status
    } else {
        format!("{status} ({})", extras.join(", "))
    }
}

/// A JSON value as plain text: strings without quotes, the rest as JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const HEADERS: [&str; 8] = [
    "type",
    "stored by this run",
    "count",
    "average",
    "min",
    "max",
    "window (UTC)",
    "external_data",
];

/// The cells of one table row, in [`HEADERS`] order.
fn row_cells(summary: &Summary, stored: u64) -> [String; 8] {
    [
        summary.kind.clone(),
        stored.to_string(),
        summary.count.to_string(),
        format_value(summary.average_value),
        format_value(summary.min_value),
        format_value(summary.max_value),
        format!("{} .. {}", summary.window.from, summary.window.to),
        format_external(summary.external_data.as_ref()),
    ]
}

/// Renders summaries as an aligned plain-text table with a header line and a
/// rule, each row beside `stored(type)`, the metrics of that type the run
/// stored; numbers are right-aligned, text left-aligned. Ends with a newline.
pub fn format_table(summaries: &[Summary], stored: impl Fn(&str) -> u64) -> String {
    let rows: Vec<[String; 8]> = summaries
        .iter()
        .map(|summary| row_cells(summary, stored(&summary.kind)))
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
        out.push_str(&format_row(cells, &widths));
        out.push('\n');
    }
    out
}

/// One aligned line; columns 1–5 (counts and statistics) are right-aligned.
fn format_row(cells: &[String; 8], widths: &[usize; 8]) -> String {
    let parts: Vec<String> = cells
        .iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (cell, &w))| {
            if (1..=5).contains(&i) {
                format!("{cell:>w$}")
            } else {
                format!("{cell:<w$}")
            }
        })
        .collect();
    parts.join("  ").trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cpu_summary() -> Summary {
        serde_json::from_value(json!({
            "type": "cpu_usage", "period": "hourly",
            "window": {"from": "2026-02-18T11:01:00Z", "to": "2026-02-18T12:01:00Z"},
            "count": 3, "average_value": 20.166666, "min_value": 10.0, "max_value": 30.5,
            "sum": 60.5,
            "external_data": {"status": "success", "external_metric_context": 342}
        }))
        .expect("summary parses")
    }

    fn empty_summary() -> Summary {
        serde_json::from_value(json!({
            "type": "memory_used_percent", "period": "hourly",
            "window": {"from": "2026-02-18T11:01:00Z", "to": "2026-02-18T12:01:00Z"},
            "count": 0, "average_value": null, "min_value": null, "max_value": null,
            "sum": 0, "external_data": {"status": "fallback"}
        }))
        .expect("summary parses")
    }

    #[test]
    fn values_have_two_decimals_and_null_is_a_dash() {
        assert_eq!(format_value(Some(20.166666)), "20.17");
        assert_eq!(format_value(Some(0.0)), "0.00");
        assert_eq!(format_value(None), "-");
        assert_eq!(format_value(Some(f64::NAN)), "-");
    }

    #[test]
    fn external_shows_status_and_extras() {
        assert_eq!(
            format_external(cpu_summary().external_data.as_ref()),
            "success (external_metric_context=342)"
        );
        assert_eq!(
            format_external(empty_summary().external_data.as_ref()),
            "fallback"
        );
        assert_eq!(format_external(None), "-");
    }

    #[test]
    fn table_is_aligned() {
        let table = format_table(&[cpu_summary(), empty_summary()], |kind| {
            u64::from(kind == "cpu_usage") * 2
        });
        let expected = "\
type                 stored by this run  count  average    min    max  window (UTC)                                  external_data
-------------------  ------------------  -----  -------  -----  -----  --------------------------------------------  -------------------------------------
cpu_usage                             2      3    20.17  10.00  30.50  2026-02-18T11:01:00Z .. 2026-02-18T12:01:00Z  success (external_metric_context=342)
memory_used_percent                   0      0        -      -      -  2026-02-18T11:01:00Z .. 2026-02-18T12:01:00Z  fallback
";
        assert_eq!(table, expected);
    }

    #[test]
    fn summary_tolerates_missing_optional_fields() {
        let summary: Summary = serde_json::from_value(json!({
            "type": "cpu_usage",
            "window": {"from": "a", "to": "b"},
            "count": 0, "average_value": null, "min_value": null, "max_value": null,
            "extra": true
        }))
        .expect("summary parses");
        assert_eq!(summary.period, None);
        assert_eq!(summary.external_data, None);
        assert_eq!(summary.filters, None);
    }
}
