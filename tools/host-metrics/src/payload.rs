//! Request bodies for `POST /api/metrics` and reading the server's refusals.
//!
//! One sample becomes a JSON array of metrics (a batch, stored all-or-nothing
//! by the API); servers without batch support get the same metrics as single
//! objects instead. Metric shape: `{"timestamp": RFC 3339 UTC, "value": f64,
//! "type": "...", "tags": {"host": "..."}}`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

/// Metric type of the CPU reading: utilisation of all cores, percent (0–100).
pub const CPU_TYPE: &str = "cpu_usage";
/// Metric type of the memory reading: used memory over total memory, percent (0–100).
pub const MEMORY_TYPE: &str = "memory_used_percent";

/// One sample of this machine: both readings taken at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// When the sample was taken.
    pub at: DateTime<Utc>,
    /// Global CPU utilisation, percent.
    pub cpu_usage: f64,
    /// Memory in use, percent of the total.
    pub memory_used_percent: f64,
}

/// One metric as the API expects it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// RFC 3339 with a `Z` offset and millisecond precision.
    pub timestamp: String,
    /// The reading; always finite.
    pub value: f64,
    /// The metric type, e.g. [`CPU_TYPE`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The `host` tag: which machine it was measured on.
    pub host: String,
}

/// The longest tag value the API takes, characters.
pub const MAX_TAG_VALUE_LEN: usize = 64;

/// True for a character the API takes in a tag value (`A-Z a-z 0-9 _ . - /`).
fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

/// Checks a `--host` given on the command line: the API's tag value rules.
///
/// # Errors
/// A reason for the user when `raw` is empty, longer than 64 characters or
/// holds a character outside `A-Z a-z 0-9 _ . - /`.
pub fn host_tag(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(format!("must be 1 to {MAX_TAG_VALUE_LEN} characters"));
    }
    match raw.chars().find(|c| !tag_char(*c)) {
        Some(bad) => Err(format!(
            "may only contain A-Z a-z 0-9 _ . - / (found {bad:?})"
        )),
        None => Ok(raw.to_string()),
    }
}

/// A machine's hostname made into a valid `host` tag: any other character
/// becomes `-`, cut at 64 characters; `unknown` when nothing is left.
pub fn hostname_tag(hostname: &str) -> String {
    let tag: String = hostname
        .chars()
        .map(|c| if tag_char(c) { c } else { '-' })
        .take(MAX_TAG_VALUE_LEN)
        .collect();
    if tag.is_empty() {
        "unknown".to_string()
    } else {
        tag
    }
}

impl Reading {
    /// The sample's metrics, tagged `host`, in a fixed order (CPU, then
    /// memory). A value that is not finite is left out: JSON cannot carry it
    /// and the API would refuse it.
    pub fn metrics(&self, host: &str) -> Vec<Metric> {
        let timestamp = self.at.to_rfc3339_opts(SecondsFormat::Millis, true);
        [
            (CPU_TYPE, self.cpu_usage),
            (MEMORY_TYPE, self.memory_used_percent),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_finite())
        .map(|(kind, value)| Metric {
            timestamp: timestamp.clone(),
            value,
            kind,
            host: host.to_string(),
        })
        .collect()
    }
}

/// The batch body: a JSON array of `metrics`.
pub fn batch_body(metrics: &[Metric]) -> Value {
    Value::Array(metrics.iter().map(single_body).collect())
}

/// The body of a single metric: one JSON object.
pub fn single_body(metric: &Metric) -> Value {
    serde_json::json!({
        "timestamp": metric.timestamp,
        "value": metric.value,
        "type": metric.kind,
        "tags": {"host": metric.host},
    })
}

/// Problem `type` of a reused `Idempotency-Key` (never a sign that arrays
/// are unsupported).
const IDEMPOTENCY_KEY_REUSED: &str = "urn:analytics-api:problem:idempotency-key-reused";

/// Whether a refusal of a batch means "this server does not take arrays", so
/// the client should send the metrics one by one.
///
/// True for 400 (a server that parses the body straight into one object calls
/// an array malformed) and for a 422 whose problem body (RFC 9457) lists no
/// per-item `index`: a batch-aware server names the offending items by index,
/// an object-only server complains about the body as a whole. A 422 for a
/// reused idempotency key is not such a sign.
pub fn arrays_unsupported(status: u16, body: &str) -> bool {
    match status {
        400 => true,
        422 => {
            let Ok(problem) = serde_json::from_str::<Value>(body) else {
                return true;
            };
            if problem.get("type").and_then(Value::as_str) == Some(IDEMPOTENCY_KEY_REUSED) {
                return false;
            }
            let has_index = problem
                .get("errors")
                .and_then(Value::as_array)
                .is_some_and(|errors| errors.iter().any(|e| e.get("index").is_some()));
            !has_index
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn reading(cpu: f64, memory: f64) -> Reading {
        Reading {
            at: Utc
                .with_ymd_and_hms(2026, 2, 18, 12, 0, 0)
                .single()
                .expect("valid date"),
            cpu_usage: cpu,
            memory_used_percent: memory,
        }
    }

    #[test]
    fn batch_is_an_array_of_both_metrics() {
        let body = batch_body(&reading(12.5, 48.25).metrics("web-7"));
        assert_eq!(
            body,
            json!([
                {"timestamp": "2026-02-18T12:00:00.000Z", "value": 12.5, "type": "cpu_usage", "tags": {"host": "web-7"}},
                {"timestamp": "2026-02-18T12:00:00.000Z", "value": 48.25, "type": "memory_used_percent", "tags": {"host": "web-7"}},
            ])
        );
    }

    #[test]
    fn single_body_is_an_object() {
        let metrics = reading(1.0, 2.0).metrics("web-7");
        assert_eq!(
            single_body(&metrics[1]),
            json!({"timestamp": "2026-02-18T12:00:00.000Z", "value": 2.0, "type": "memory_used_percent", "tags": {"host": "web-7"}})
        );
    }

    #[test]
    fn values_stay_numbers_in_the_serialised_text() {
        let text = batch_body(&reading(0.0, 100.0).metrics("web-7")).to_string();
        assert!(text.contains(r#""value":0.0"#), "{text}");
        assert!(text.contains(r#""value":100.0"#), "{text}");
    }

    #[test]
    fn non_finite_values_are_left_out() {
        let metrics = reading(f64::NAN, 40.0).metrics("web-7");
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].kind, MEMORY_TYPE);
        assert!(reading(f64::INFINITY, f64::NEG_INFINITY)
            .metrics("web-7")
            .is_empty());
    }

    #[test]
    fn host_tags_follow_the_apis_rules() {
        assert_eq!(host_tag("web-7.eu").as_deref(), Ok("web-7.eu"));
        for bad in ["", "a b", "a:b", &"h".repeat(65)] {
            assert!(host_tag(bad).is_err(), "{bad:?}");
        }
        assert_eq!(hostname_tag("My Host:1"), "My-Host-1");
        assert_eq!(hostname_tag(""), "unknown");
        assert_eq!(hostname_tag(&"h".repeat(80)).len(), 64);
        assert!(host_tag(&hostname_tag("ünïcode")).is_ok());
    }

    #[test]
    fn bad_request_means_arrays_unsupported() {
        assert!(arrays_unsupported(400, "{}"));
    }

    #[test]
    fn whole_body_422_means_arrays_unsupported() {
        let body = json!({
            "type": "urn:analytics-api:problem:validation-failed",
            "status": 422,
            "errors": [{"field": "body", "reason": "expected a JSON object"}],
        });
        assert!(arrays_unsupported(422, &body.to_string()));
        assert!(arrays_unsupported(422, "not json"));
    }

    #[test]
    fn per_item_422_is_a_real_refusal() {
        let body = json!({
            "type": "urn:analytics-api:problem:validation-failed",
            "status": 422,
            "errors": [{"index": 1, "field": "timestamp", "reason": "too far in the future"}],
        });
        assert!(!arrays_unsupported(422, &body.to_string()));
    }

    #[test]
    fn reused_idempotency_key_is_a_real_refusal() {
        let body = json!({"type": IDEMPOTENCY_KEY_REUSED, "status": 422});
        assert!(!arrays_unsupported(422, &body.to_string()));
    }

    #[test]
    fn other_statuses_are_not_about_arrays() {
        for status in [201, 401, 413, 429, 500, 503] {
            assert!(!arrays_unsupported(status, "{}"), "{status}");
        }
    }
}
