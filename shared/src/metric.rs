//! Metrics as clients send them, and their validation.
//!
//! A metric is `{"timestamp": RFC 3339 with offset, "value": finite number,
//! "type": [A-Za-z0-9_.-]{1,64}}`, optionally with `"tags": {"host":
//! "web-7"}` (validated by [`crate::tags`]). A body is one metric object or a JSON array
//! of 1 to `MAX_BATCH_SIZE` of them; a batch is validated as a whole and every
//! invalid item is reported with its index. Nothing here touches Redis: the
//! storage only ever sees metrics that passed [`parse_metrics`].
//!
//! Numbers are read from the raw JSON text ([`serde_json::value::RawValue`])
//! rather than through `f64` deserialisation, so that `1e309` is a clear 422
//! ("not a finite number") instead of a parse error, and no string, boolean or
//! null is ever coerced into a number.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::settings::{ConfigError, Env};
use crate::tags::Tags;

/// One offending field of a rejected request.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    /// Position of the item in a batch body; absent for a single object, a
    /// query parameter or a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, nullable = false, minimum = 0, examples(1))]
    pub index: Option<usize>,
    /// The field, query parameter or header, e.g. `value`, `period`,
    /// `Idempotency-Key`, or `body` for the body as a whole.
    #[schema(examples("value"))]
    pub field: String,
    /// Why it was refused, phrased for the client.
    #[schema(examples("must be a number, not a string"))]
    pub reason: String,
}

impl FieldError {
    /// A field error outside any batch.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            index: None,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Well-formed input that is not valid: every offending field, and a
/// one-line summary of them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct Invalid {
    /// A one-line summary, for people.
    pub detail: String,
    /// Every offending field with its reason.
    pub errors: Vec<FieldError>,
}

impl Invalid {
    /// Input with a single offending field.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let error = FieldError::new(field, reason);
        Self {
            detail: format!("{}: {}", error.field, error.reason),
            errors: vec![error],
        }
    }
}

/// Why a metrics body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// The body is not UTF-8 JSON, or is JSON but neither an object nor an
    /// array.
    #[error("{0}")]
    Malformed(String),
    /// The body is JSON but some metric in it is invalid; nothing of it is kept.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Longest accepted metric type, in characters (all ASCII, so also bytes).
pub const MAX_TYPE_LEN: usize = 64;

/// A validated metric type: 1–64 characters from `A-Z a-z 0-9 _ . -`,
/// case-sensitive. It becomes part of Redis keys, so anything else is rejected,
/// never escaped or truncated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MetricType(String);

impl MetricType {
    /// Validates `raw`.
    ///
    /// # Errors
    /// A reason, phrased for the client, when `raw` is empty, longer than
    /// [`MAX_TYPE_LEN`] characters or has a character outside the set.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        let chars = raw.chars().count();
        if chars > MAX_TYPE_LEN {
            return Err(format!(
                "must be at most {MAX_TYPE_LEN} characters (got {chars})"
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "may only contain A-Z a-z 0-9 _ . - (found {bad:?})"
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// The type as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated metric, as stored and as echoed in a 201: the timestamp
/// normalised to UTC with a `Z`, fractional seconds only when sent.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StoredMetric)]
pub struct Metric {
    /// When it was measured: UTC, RFC 3339 with `Z`.
    #[serde(serialize_with = "serialize_timestamp")]
    #[schema(value_type = String, format = DateTime, pattern = "Z$", examples("2026-02-18T12:00:00Z"))]
    pub timestamp: DateTime<Utc>,
    /// The value stored; always finite.
    pub value: f64,
    /// The metric type.
    #[serde(rename = "type")]
    #[schema(value_type = String, examples("cpu_usage"))]
    pub metric_type: MetricType,
    /// Its tags, tag keys to values in key order; absent without tags.
    #[serde(skip_serializing_if = "Tags::is_empty")]
    #[schema(value_type = Option<Tags>, nullable = false)]
    pub tags: Tags,
}

/// RFC 3339 in UTC with a `Z`, with fractional seconds only when present.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Serialises a timestamp as [`format_timestamp`] writes it.
///
/// # Errors
/// The serializer's.
pub fn serialize_timestamp<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(*t))
}

/// Bounds on acceptable timestamps and batch sizes: the settings of
/// validation (and of the storage's retention).
#[derive(Debug, Clone, Copy)]
pub struct MetricLimits {
    /// `METRIC_RETENTION_DAYS`, default 35 (1..=3650 days): older timestamps
    /// are rejected, and buckets expire after it.
    pub retention: ChronoDuration,
    /// `MAX_FUTURE_SKEW_SECONDS`, default 300 (0..=86 400 s): timestamps
    /// further ahead of now are rejected.
    pub max_future_skew: ChronoDuration,
    /// `MAX_BATCH_SIZE`, default 500 (1..=10 000): the most items in an
    /// array body.
    pub max_batch_size: usize,
}

impl MetricLimits {
    /// Reads and validates `METRIC_RETENTION_DAYS`, `MAX_FUTURE_SKEW_SECONDS`
    /// and `MAX_BATCH_SIZE`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let days = env.int("METRIC_RETENTION_DAYS", 35, 1..=3650)?;
        let skew = env.int("MAX_FUTURE_SKEW_SECONDS", 300, 0..=86_400)?;
        Ok(Self {
            retention: ChronoDuration::days(days as i64),
            max_future_skew: ChronoDuration::seconds(skew as i64),
            max_batch_size: env.int("MAX_BATCH_SIZE", 500, 1..=10_000)? as usize,
        })
    }

    /// The retention in whole days (`METRIC_RETENTION_DAYS`).
    pub fn retention_days(&self) -> u32 {
        u32::try_from(self.retention.num_days()).unwrap_or(u32::MAX)
    }
}

/// A parsed request body: one metric or a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsBody {
    /// The metrics, in body order.
    pub metrics: Vec<Metric>,
    /// True when the body was a JSON array (the 201 then reports a count).
    pub is_batch: bool,
}

impl MetricsBody {
    /// Hex SHA-256 of the body's canonical form: one line per metric,
    /// `type \t UTC timestamp \t value` (shortest round-trip float), and
    /// `\t` and the canonical tags for a tagged metric, in body
    /// order, after a line telling a batch from a single object. Ignored fields,
    /// whitespace, key order and the timestamp's original offset do not
    /// change it; any change to a stored value does. Used to tell a retry from
    /// a different request under the same `Idempotency-Key`.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(if self.is_batch { "batch\n" } else { "single\n" });
        for m in &self.metrics {
            // An untagged metric's line is what it was before tags existed,
            // so that records written then still match their retries.
            let tags = if m.tags.is_empty() {
                String::new()
            } else {
                format!("\t{}", m.tags.canonical())
            };
            hash.update(format!(
                "{}\t{}\t{:?}{}\n",
                m.metric_type,
                m.timestamp.to_rfc3339_opts(SecondsFormat::Nanos, true),
                m.value,
                tags
            ));
        }
        hex::encode(hash.finalize())
    }
}

/// Parses and validates a `POST /api/metrics` body against `now`.
///
/// # Errors
/// - [`MetricError::Malformed`] when the body is not UTF-8 JSON, or is JSON
///   but neither an object nor an array;
/// - [`MetricError::Invalid`] listing every invalid field (with its index in
///   a batch) — nothing of an invalid batch is kept.
pub fn parse_metrics(
    body: &[u8],
    now: DateTime<Utc>,
    limits: &MetricLimits,
) -> Result<MetricsBody, MetricError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| MetricError::Malformed("the body is not valid UTF-8".into()))?;
    let raw: &RawValue = serde_json::from_str(text)
        .map_err(|e| MetricError::Malformed(format!("the body is not valid JSON: {e}")))?;
    let json = raw.get().trim_start();
    if json.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(json)
            .map_err(|e| MetricError::Malformed(format!("the body is not valid JSON: {e}")))?;
        if items.is_empty() || items.len() > limits.max_batch_size {
            return Err(Invalid::field(
                "body",
                format!(
                    "a batch holds 1 to {} metrics (got {})",
                    limits.max_batch_size,
                    items.len()
                ),
            )
            .into());
        }
        let mut metrics = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match parse_one(item, now, limits) {
                Ok(metric) => metrics.push(metric),
                Err(item_errors) => errors.extend(item_errors.into_iter().map(|mut e| {
                    e.index = Some(index);
                    e
                })),
            }
        }
        if !errors.is_empty() {
            let invalid: std::collections::BTreeSet<_> =
                errors.iter().filter_map(|e| e.index).collect();
            return Err(Invalid {
                detail: format!(
                    "{} of {} metrics are invalid; nothing was stored",
                    invalid.len(),
                    items.len()
                ),
                errors,
            }
            .into());
        }
        Ok(MetricsBody {
            metrics,
            is_batch: true,
        })
    } else if json.starts_with('{') {
        let metric = parse_one(raw, now, limits).map_err(|errors| Invalid {
            detail: errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.reason))
                .collect::<Vec<_>>()
                .join("; "),
            errors,
        })?;
        Ok(MetricsBody {
            metrics: vec![metric],
            is_batch: false,
        })
    } else {
        Err(MetricError::Malformed(
            "the body must be a JSON object (one metric) or an array of them".into(),
        ))
    }
}

fn parse_one(
    raw: &RawValue,
    now: DateTime<Utc>,
    limits: &MetricLimits,
) -> Result<Metric, Vec<FieldError>> {
    let fields: HashMap<String, &RawValue> = match serde_json::from_str(raw.get()) {
        Ok(fields) => fields,
        Err(_) => return Err(vec![FieldError::new("body", "must be a JSON object")]),
    };
    let mut errors = Vec::new();
    let timestamp = match fields.get("timestamp") {
        None => Err("is required".to_string()),
        Some(raw) => parse_timestamp(raw, now, limits),
    }
    .map_err(|reason| errors.push(FieldError::new("timestamp", reason)))
    .ok();
    let value = match fields.get("value") {
        None => Err("is required".to_string()),
        Some(raw) => parse_value(raw),
    }
    .map_err(|reason| errors.push(FieldError::new("value", reason)))
    .ok();
    let metric_type = match fields.get("type") {
        None => Err("is required".to_string()),
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => MetricType::parse(&s),
            Err(_) => Err("must be a string".to_string()),
        },
    }
    .map_err(|reason| errors.push(FieldError::new("type", reason)))
    .ok();
    let tags = match fields.get("tags") {
        None => Some(Tags::none()),
        Some(raw) => Tags::from_json(raw.get())
            .map_err(|problems| {
                errors.extend(
                    problems
                        .into_iter()
                        .map(|(field, reason)| FieldError::new(field, reason)),
                );
            })
            .ok(),
    };
    match (timestamp, value, metric_type, tags) {
        (Some(timestamp), Some(value), Some(metric_type), Some(tags)) => Ok(Metric {
            timestamp,
            value,
            metric_type,
            tags,
        }),
        _ => Err(errors),
    }
}

/// A JSON number that fits a finite `f64`. Strings, booleans, null, arrays,
/// objects and overflowing numbers are refused.
fn parse_value(raw: &RawValue) -> Result<f64, String> {
    let text = raw.get();
    let is_number = text
        .chars()
        .next()
        .is_some_and(|c| c == '-' || c.is_ascii_digit());
    if !is_number {
        let kind = match text.chars().next() {
            Some('"') => "a string",
            Some('t' | 'f') => "a boolean",
            Some('n') => "null",
            Some('[') => "an array",
            Some('{') => "an object",
            _ => "not a number",
        };
        return Err(format!("must be a number, not {kind}"));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("must be a finite number that fits a 64-bit float".into()),
    }
}

fn parse_timestamp(
    raw: &RawValue,
    now: DateTime<Utc>,
    limits: &MetricLimits,
) -> Result<DateTime<Utc>, String> {
    let text: String = serde_json::from_str(raw.get())
        .map_err(|_| "must be an RFC 3339 string such as 2026-02-18T12:00:00Z".to_string())?;
    let timestamp = parse_rfc3339(&text)?;
    if timestamp > now + limits.max_future_skew {
        return Err(format!(
            "is more than {} s in the future",
            limits.max_future_skew.num_seconds()
        ));
    }
    if timestamp < now - limits.retention {
        return Err(format!(
            "is older than the retention of {} days",
            limits.retention.num_days()
        ));
    }
    Ok(timestamp)
}

/// Parses an RFC 3339 date-time that carries a UTC offset (`Z` or `±hh:mm`)
/// and normalises it to UTC.
///
/// # Errors
/// A reason for the client when the text is not such a date-time, quoting at
/// most [`QUOTED_CHARS`] characters of it ([`quote_input`]).
pub fn parse_rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "{} is not an RFC 3339 date-time with a UTC offset, such as 2026-02-18T12:00:00Z",
                quote_input(text)
            )
        })
}

/// The most characters of a client's input that an error message quotes.
pub const QUOTED_CHARS: usize = 40;

/// `text` quoted for an error message (Rust's `{:?}` escaping), cut after
/// [`QUOTED_CHARS`] characters with `…` and the full length in characters.
///
/// Why the cut: an error body quotes the input twice (`detail` and
/// `errors`), and escaping can make a character up to ~7 bytes of JSON, so
/// quoting a whole 1 MiB field could exceed Lambda's 6 MB response payload
/// limit — the invocation would fail and API Gateway would answer 502.
pub fn quote_input(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} characters)", &text[..cut], text.chars().count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, 18, 12, 0, 0).unwrap()
    }

    fn limits() -> MetricLimits {
        MetricLimits {
            retention: ChronoDuration::days(35),
            max_future_skew: ChronoDuration::seconds(300),
            max_batch_size: 3,
        }
    }

    fn parse(body: &str) -> Result<MetricsBody, MetricError> {
        parse_metrics(body.as_bytes(), now(), &limits())
    }

    fn rejected_fields(body: &str) -> Vec<String> {
        match parse(body) {
            Err(MetricError::Invalid(Invalid { errors, .. })) => {
                errors.into_iter().map(|e| e.field).collect()
            }
            other => panic!("expected 422 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_metric_is_normalised_to_utc() {
        let body = parse(
            r#"{"timestamp":"2026-02-18T13:00:00+01:00","value":85.5,"type":"cpu_usage","extra":[1e999]}"#,
        );
        // `1e999` in an ignored field is not even parsed as a number.
        let parsed = body.unwrap();
        assert!(!parsed.is_batch);
        let m = &parsed.metrics[0];
        assert_eq!(m.timestamp, now());
        assert_eq!(m.value, 85.5);
        assert_eq!(m.metric_type.as_str(), "cpu_usage");
        assert_eq!(format_timestamp(m.timestamp), "2026-02-18T12:00:00Z");
    }

    #[test]
    fn malformed_json_is_a_400() {
        for body in [
            "",
            "{",
            "not json",
            "\"a string\"",
            "42",
            "null",
            "{\"a\":1}}",
        ] {
            assert!(
                matches!(parse(body), Err(MetricError::Malformed(_))),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse_metrics(&[0xff, 0xfe], now(), &limits()),
            Err(MetricError::Malformed(_))
        ));
    }

    #[test]
    fn values_must_be_finite_numbers() {
        let ts = r#""timestamp":"2026-02-18T12:00:00Z","type":"t""#;
        for value in ["\"85\"", "true", "null", "{}", "[]", "1e309", "-1e309"] {
            assert_eq!(
                rejected_fields(&format!("{{{ts},\"value\":{value}}}")),
                ["value"],
                "{value}"
            );
        }
        for (value, expected) in [
            ("0", 0.0),
            ("-1.5", -1.5),
            ("1.7976931348623157e308", f64::MAX),
        ] {
            let body = parse(&format!("{{{ts},\"value\":{value}}}")).unwrap();
            assert_eq!(body.metrics[0].value, expected);
        }
    }

    #[test]
    fn types_are_validated_never_escaped() {
        let max = "a".repeat(64);
        assert!(MetricType::parse(&max).is_ok());
        for bad in [
            "",
            "has space",
            "a{b}",
            "a:b",
            "a*",
            "ü",
            &"a".repeat(65),
            &"é".repeat(64),
        ] {
            assert!(MetricType::parse(bad).is_err(), "{bad:?}");
        }
        assert!(MetricType::parse("Cpu.Usage-1_x").is_ok());
    }

    #[test]
    fn timestamps_need_an_offset_and_a_sane_range() {
        for ts in [
            "2026-02-18T12:00:00",
            "2026-02-18",
            "yesterday",
            "2026-02-18T12:06:00Z",
            "2026-01-13T11:59:59Z",
        ] {
            let body = format!(r#"{{"timestamp":"{ts}","value":1,"type":"t"}}"#);
            assert_eq!(rejected_fields(&body), ["timestamp"], "{ts}");
        }
        for ts in ["2026-02-18T12:05:00Z", "2026-01-14T12:00:00Z"] {
            let body = format!(r#"{{"timestamp":"{ts}","value":1,"type":"t"}}"#);
            assert!(parse(&body).is_ok(), "{ts}");
        }
        assert_eq!(
            rejected_fields(r#"{"timestamp":1771416000,"value":1,"type":"t"}"#),
            ["timestamp"]
        );
    }

    #[test]
    fn tags_are_optional_validated_and_echoed_in_order() {
        let body = parse(
            r#"{"timestamp":"2026-02-18T12:00:00Z","value":1,"type":"t","tags":{"region":"eu","host":"web-7"}}"#,
        )
        .unwrap();
        let m = &body.metrics[0];
        assert_eq!(m.tags.canonical(), "host=web-7,region=eu");
        assert_eq!(
            serde_json::to_value(m).unwrap()["tags"],
            serde_json::json!({"host": "web-7", "region": "eu"})
        );
        let plain = parse(r#"{"timestamp":"2026-02-18T12:00:00Z","value":1,"type":"t"}"#).unwrap();
        assert!(serde_json::to_value(&plain.metrics[0])
            .unwrap()
            .get("tags")
            .is_none());
        assert_eq!(
            rejected_fields(
                r#"{"timestamp":"2026-02-18T12:00:00Z","value":1,"type":"t","tags":{"host":"a b"}}"#
            ),
            ["tags.host"]
        );
        assert_eq!(
            rejected_fields(
                r#"[{"timestamp":"2026-02-18T12:00:00Z","value":1,"type":"t","tags":[]}]"#
            ),
            ["tags"]
        );
    }

    #[test]
    fn fingerprints_cover_tags_and_keep_untagged_ones() {
        let fp = |body: &str| parse(body).unwrap().fingerprint();
        let plain = fp(r#"{"timestamp":"2026-02-18T12:00:00Z","value":1.5,"type":"t"}"#);
        assert_eq!(
            plain,
            fp(r#"{"timestamp":"2026-02-18T12:00:00Z","value":1.5,"type":"t","tags":{}}"#)
        );
        let a = fp(
            r#"{"timestamp":"2026-02-18T12:00:00Z","value":1.5,"type":"t","tags":{"a":"1","b":"2"}}"#,
        );
        let b = fp(
            r#"{"timestamp":"2026-02-18T12:00:00Z","value":1.5,"type":"t","tags":{"b":"2","a":"1"}}"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, plain);
        // The line of an untagged metric is the one used before tags existed.
        use sha2::{Digest, Sha256};
        let old = hex::encode(Sha256::digest(
            "single\nt\t2026-02-18T12:00:00.000000000Z\t1.5\n",
        ));
        assert_eq!(plain, old);
    }

    #[test]
    fn every_missing_field_is_listed() {
        assert_eq!(rejected_fields("{}"), ["timestamp", "value", "type"]);
    }

    #[test]
    fn a_batch_is_all_or_nothing_with_indexes() {
        let ok = r#"{"timestamp":"2026-02-18T12:00:00Z","value":1,"type":"t"}"#;
        let bad = r#"{"timestamp":"2026-02-18T12:00:00Z","value":"x","type":"t"}"#;
        let batch = parse(&format!("[{ok},{ok}]")).unwrap();
        assert!(batch.is_batch);
        assert_eq!(batch.metrics.len(), 2);
        match parse(&format!("[{ok},{bad},{ok}]")) {
            Err(MetricError::Invalid(Invalid { errors, .. })) => {
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].index, Some(1));
                assert_eq!(errors[0].field, "value");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rejected_fields("[]"), ["body"]);
        assert_eq!(rejected_fields(&format!("[{ok},{ok},{ok},{ok}]")), ["body"]);
        assert_eq!(rejected_fields("[1]"), ["body"]);
    }

    #[test]
    fn fingerprints_ignore_form_but_not_content() {
        let fp = |body: &str| parse(body).unwrap().fingerprint();
        let a = fp(r#"{"timestamp":"2026-02-18T12:00:00Z","value":1.5,"type":"t"}"#);
        let b = fp(
            r#"{ "type":"t", "value":1.50, "extra":true, "timestamp":"2026-02-18T13:00:00+01:00" }"#,
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            fp(r#"{"timestamp":"2026-02-18T12:00:00Z","value":1.6,"type":"t"}"#)
        );
        assert_ne!(
            a,
            fp(r#"{"timestamp":"2026-02-18T12:00:01Z","value":1.5,"type":"t"}"#)
        );
        assert_ne!(
            a,
            fp(r#"{"timestamp":"2026-02-18T12:00:00Z","value":1.5,"type":"T"}"#)
        );
        assert_ne!(
            a,
            fp(r#"[{"timestamp":"2026-02-18T12:00:00Z","value":1.5,"type":"t"}]"#)
        );
    }

    #[test]
    fn quoted_input_is_bounded() {
        assert_eq!(quote_input("2026-13-01"), "\"2026-13-01\"");
        let forty = "x".repeat(QUOTED_CHARS);
        assert_eq!(quote_input(&forty), format!("{forty:?}"));
        let long = "\u{85}".repeat(500_000);
        let quoted = quote_input(&long);
        assert!(quoted.len() < 300, "{quoted}");
        assert!(quoted.ends_with("… (500000 characters)"), "{quoted}");
        let reason = parse_rfc3339(&long).unwrap_err();
        assert!(reason.len() < 400, "{reason}");
    }

    #[test]
    fn deep_nesting_is_a_client_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).is_err());
        let deep_field = format!(
            r#"{{"timestamp":"2026-02-18T12:00:00Z","value":1,"type":"t","x":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        // An ignored field is skipped without recursion: accepted or a 400, never a crash.
        assert!(matches!(
            parse(&deep_field),
            Ok(_) | Err(MetricError::Malformed(_))
        ));
    }
}
