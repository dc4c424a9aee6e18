//! Hostile input never breaks request handling.
//!
//! Property tests (`proptest`) drive the real `POST /api/metrics` and
//! `GET /api/metrics/summary` handlers in-process, with synthetic API Gateway
//! events (payload v2.0 and REST v1) against the real Redis under a random key
//! prefix and a rate limit far above what the tests send. Whatever arrives —
//! arbitrary bytes as base64 bodies (as API Gateway delivers binary payloads)
//! or as text, invalid UTF-8, JSON nested tens of thousands of levels deep (as
//! the body, as a field, inside a batch), numbers beyond a 64-bit float
//! (`1e309`, 100-digit integers, denormals, `-0`), long strings, any Unicode in
//! `type` (multi-byte characters right at the 64-character limit), arbitrary
//! percent-encoded query strings with repeated parameters, arbitrary
//! `Idempotency-Key` and `Cache-Control` values — every answer:
//!
//! - is a 2xx or a 4xx, never a 5xx (Redis is up) and never a panic;
//! - has a strict JSON body (no `NaN`/`Infinity` tokens, every number finite)
//!   of at most Lambda's 6 MB response payload limit, past which API Gateway
//!   would answer 502 itself;
//! - when a 4xx, is `application/problem+json` with `type`, `title`,
//!   `status` (equal to the HTTP status) and `detail` (RFC 9457).
//!
//! The pure validators (`parse_metrics`, `parse_summary_query`,
//! `MetricType::parse`) get more cases of their own, with exact properties:
//! every finite float literal is accepted as the same number, a type is
//! accepted exactly when it is 1–64 characters of `A-Za-z0-9_.-`, and an
//! accepted summary query has a whole-minute window inside the retention.
//!
//! Case counts are fixed here (not taken from `PROPTEST_CASES`) so the file
//! stays a few seconds long, and failures are not persisted to files: a
//! failure found once is kept below as an explicit regression test.

use std::sync::LazyLock;

use analytics_tests::{config, http_v2, random_type, rest_v1, EventBuilder};
use chrono::{Duration as ChronoDuration, Utc};
use lambda_http::{Body, Response};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError};
use serde_json::{json, Value};
use shared::handlers::{ingest_metric, metrics_summary};
use shared::http::ApiError;
use shared::metric::{
    format_timestamp, parse_metrics, Invalid, MetricError, MetricLimits, MetricType,
};
use shared::window::parse_summary_query;
use shared::AppState;

/// Lambda's limit on a synchronous response payload (bytes); above it the
/// invocation fails and API Gateway answers 502.
const LAMBDA_RESPONSE_LIMIT: usize = 6 * 1024 * 1024;

/// One runtime and one "Lambda instance" for every test of this file: the
/// handlers are what is under test, not the cold start.
struct Harness {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let state = runtime.block_on(async {
        AppState::new(config(&[
            ("RATE_LIMIT_REQUESTS", "1000000"),
            ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
            ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
            ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ]))
        .expect("a valid test configuration")
    });
    Harness { runtime, state }
});

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// What a handler answered.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn from_response(response: Response<Body>) -> Self {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = match response.into_body() {
            Body::Text(text) => text.into_bytes(),
            Body::Binary(bytes) => bytes,
            _ => Vec::new(),
        };
        Reply {
            status,
            content_type,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(600).collect()
    }
}

fn ingest(event: &EventBuilder) -> Reply {
    let h = &*HARNESS;
    let response = h.runtime.block_on(ingest_metric(&h.state, event.build()));
    Reply::from_response(response)
}

fn summary(event: &EventBuilder) -> Reply {
    let h = &*HARNESS;
    let response = h.runtime.block_on(metrics_summary(&h.state, event.build()));
    Reply::from_response(response)
}

/// True when every number in `value` is finite (serde_json parses an
/// overflowing literal as an error, but be explicit about it).
fn all_numbers_finite(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Array(items) => items.iter().all(all_numbers_finite),
        Value::Object(map) => map.values().all(all_numbers_finite),
        _ => true,
    }
}

/// The properties every answer has, whatever the request: see the module
/// documentation. Returns the parsed body.
fn check_reply(reply: &Reply) -> Result<Value, TestCaseError> {
    prop_assert!(
        (200..300).contains(&reply.status) || (400..500).contains(&reply.status),
        "status {} (only 2xx and 4xx are acceptable): {}",
        reply.status,
        reply.excerpt()
    );
    prop_assert!(
        reply.body.len() <= LAMBDA_RESPONSE_LIMIT,
        "a {}-byte response exceeds Lambda's response limit",
        reply.body.len()
    );
    let text = std::str::from_utf8(&reply.body);
    prop_assert!(text.is_ok(), "the body is not UTF-8: {}", reply.excerpt());
    // Strict JSON: `NaN`, `Infinity` and out-of-range literals do not parse.
    let body: Value = match serde_json::from_slice(&reply.body) {
        Ok(body) => body,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the body is not strict JSON ({e}): {}",
                reply.excerpt()
            )))
        }
    };
    prop_assert!(
        all_numbers_finite(&body),
        "a non-finite number: {}",
        reply.excerpt()
    );
    if reply.status >= 400 {
        prop_assert_eq!(&reply.content_type, "application/problem+json");
        prop_assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:analytics-api:problem:")),
            "problem type: {}",
            reply.excerpt()
        );
        prop_assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "problem title: {}",
            reply.excerpt()
        );
        prop_assert_eq!(body["status"].as_u64(), Some(u64::from(reply.status)));
        prop_assert!(
            body["detail"].is_string(),
            "problem detail: {}",
            reply.excerpt()
        );
        if reply.status == 422 {
            if let Some(errors) = body.get("errors") {
                let errors = errors.as_array();
                prop_assert!(
                    errors.is_some_and(|e| e
                        .iter()
                        .all(|e| e["field"].is_string() && e["reason"].is_string())),
                    "422 errors: {}",
                    reply.excerpt()
                );
            }
        }
        // Redis is up and the limit is far away: these would be our failures.
        prop_assert!(
            reply.status != 429,
            "rate limited in a test that never nears the limit"
        );
    } else {
        prop_assert_eq!(&reply.content_type, "application/json");
    }
    Ok(body)
}

/// Checks a 201 of `POST /api/metrics`: `stored` ≥ 1, and a single metric is
/// echoed with a valid type, a finite value and a UTC timestamp.
fn check_created(body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(body["stored"].as_u64().is_some_and(|n| n >= 1), "{body}");
    if let Some(metric) = body.get("metric") {
        prop_assert!(metric["value"].as_f64().is_some_and(f64::is_finite));
        let t = metric["type"].as_str().unwrap_or_default();
        prop_assert!(MetricType::parse(t).is_ok(), "{body}");
        prop_assert!(metric["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
    }
    Ok(())
}

/// Checks a 200 summary: counts and finite aggregates, `null` only when empty.
fn check_summary(body: &Value) -> Result<(), TestCaseError> {
    let count = body["count"].as_u64();
    prop_assert!(count.is_some(), "{body}");
    prop_assert!(body["sum"].as_f64().is_some_and(f64::is_finite), "{body}");
    for field in ["average_value", "min_value", "max_value"] {
        if count == Some(0) {
            prop_assert!(body[field].is_null(), "{field}: {body}");
        } else {
            prop_assert!(
                body[field].as_f64().is_some_and(f64::is_finite),
                "{field}: {body}"
            );
        }
    }
    prop_assert!(MetricType::parse(body["type"].as_str().unwrap_or_default()).is_ok());
    Ok(())
}

// --- generators ------------------------------------------------------------------

/// Number literals around and beyond what a 64-bit float holds, malformed
/// ones, and arbitrary floats in Rust's own formats.
fn number_literal() -> BoxedStrategy<String> {
    let fixed: Vec<&'static str> = vec![
        "1e309",
        "-1e309",
        "1e400",
        "-1e400",
        "1E+309",
        "1.7976931348623157e308",
        "-1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "-0",
        "-0.0",
        "0e0",
        "0E-0",
        "5e-324",
        "4.9e-324",
        "2e-324",
        "2.2250738585072011e-308",
        "2.2250738585072014e-308",
        "1e-400",
        "-1e-400",
        "0.000000000000000000000000000000000000000000000000000000000000000001",
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "inf",
        "+1",
        "01",
        "-01",
        ".5",
        "1.",
        "-",
        "1e",
        "1e+",
        "0x1F",
        "1_000",
        "--1",
        "1e9999999999999999999999",
        "1e-9999999999999999999999",
    ];
    prop_oneof![
        3 => proptest::sample::select(fixed).prop_map(String::from),
        // 100-digit (and longer) integers, signed, with exponents.
        2 => (
            any::<bool>(),
            proptest::collection::vec(0u8..10, 1..400),
            proptest::option::of(-400i32..400),
        )
            .prop_map(|(negative, digits, exponent)| {
                let mut s = String::from(if negative { "-" } else { "" });
                s.extend(digits.iter().map(|d| char::from(b'0' + d)));
                if let Some(e) = exponent {
                    s.push_str(&format!("e{e}"));
                }
                s
            }),
        2 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => any::<u128>().prop_map(|i| i.to_string()),
    ]
    .boxed()
}

/// A JSON string literal (escaped) holding `s`.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Valid metric types, 1 to 64 characters.
fn valid_type() -> BoxedStrategy<String> {
    proptest::string::string_regex("[A-Za-z0-9_.-]{1,64}")
        .expect("a valid regex")
        .boxed()
}

/// Metric types: valid ones, every kind of Unicode, and multi-byte characters
/// placed at the 64-character limit.
fn type_text() -> BoxedStrategy<String> {
    let around_limit = (
        proptest::sample::select(vec!['a', 'é', 'ß', '€', '😀', '\u{0301}', '\0', 'Z']),
        62usize..67,
        any::<bool>(),
    )
        .prop_map(|(c, n, ascii_head)| {
            if ascii_head {
                // n - 1 ASCII letters and the multi-byte character last.
                let mut s = "a".repeat(n - 1);
                s.push(c);
                s
            } else {
                std::iter::repeat_n(c, n).collect()
            }
        });
    prop_oneof![
        2 => valid_type(),
        2 => any::<String>(),
        2 => around_limit,
        1 => proptest::string::string_regex(".{60,70}").expect("a valid regex"),
        1 => proptest::string::string_regex("[A-Za-z0-9_.-]{65,300}").expect("a valid regex"),
        1 => Just(String::new()),
        1 => Just("{cpu}".to_string()),
        1 => Just("cpu*".to_string()),
        1 => Just("a:b".to_string()),
    ]
    .boxed()
}

/// RFC 3339-ish timestamps: near now in every form, at the edges of what
/// chrono represents, and arbitrary text.
/// RFC 3339 timestamps inside the accepted range, in every form: any UTC
/// offset, 0 to 9 fractional digits.
fn recent_timestamp() -> BoxedStrategy<String> {
    (
        -3_000_000i64..240,
        0u32..1_000_000_000,
        -1439i32..1440,
        0usize..10,
    )
        .prop_map(|(offset_s, nanos, offset_min, digits)| {
            let t = Utc::now() + ChronoDuration::seconds(offset_s);
            let tz = chrono::FixedOffset::east_opt(offset_min * 60).expect("less than a day");
            let base = t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S").to_string();
            let frac = format!("{nanos:09}");
            let frac = if digits == 0 {
                String::new()
            } else {
                format!(".{}", &frac[..digits])
            };
            let zone = if offset_min == 0 {
                "Z".to_string()
            } else {
                tz.to_string()
            };
            format!("{base}{frac}{zone}")
        })
        .boxed()
}

/// Timestamps: recent ones in every form, the edges of what chrono
/// represents, and arbitrary text.
fn timestamp_text() -> BoxedStrategy<String> {
    let near_now = recent_timestamp();
    prop_oneof![
        4 => near_now,
        1 => proptest::sample::select(vec![
            "9999-12-31T23:59:59.999999999Z",
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
            "2026-02-30T00:00:00Z",
            "2026-02-18T23:59:60Z",
            "2026-02-18T12:00:00.00000000000000000000000000000000000001Z",
            "2026-02-18T12:00:00+24:00",
            "2026-02-18T12:00:00",
            "2026-02-18 12:00:00Z",
            "+002026-02-18T12:00:00Z",
            "1970-01-01T00:00:00Z",
            "",
        ]).prop_map(String::from),
        1 => any::<String>(),
    ]
    .boxed()
}

/// Deep nesting: `[[[…]]]`, `{"a":{"a":…}}`, mixed, or only opened.
fn deep_json() -> BoxedStrategy<String> {
    (10_000usize..40_000, 0u8..4)
        .prop_map(|(depth, shape)| deep(depth, shape))
        .boxed()
}

fn deep(depth: usize, shape: u8) -> String {
    match shape {
        0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
        2 => format!(
            "{}0{}",
            "[{\"x\":".repeat(depth / 2),
            "}]".repeat(depth / 2)
        ),
        _ => "[{\"a\":".repeat(depth / 2),
    }
}

/// A JSON value in raw text form: anything a hostile client may put in a field.
fn field_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => number_literal(),
        2 => timestamp_text().prop_map(|s| json_string(&s)),
        2 => type_text().prop_map(|s| json_string(&s)),
        1 => proptest::sample::select(vec![
            "null", "true", "false", "[]", "{}", "\"\"", "[1]", "{\"value\":1}",
            "\"\\ud800\"", "\"\\u0000\"",
        ]).prop_map(String::from),
        1 => (1usize..200_000).prop_map(|n| json_string(&"x".repeat(n))),
    ]
    .boxed()
}

/// One metric object, some of whose fields are missing, duplicated, hostile or
/// joined by unknown ones.
fn metric_object() -> BoxedStrategy<String> {
    use proptest::num::f64 as float;
    let finite = float::POSITIVE | float::NEGATIVE | float::NORMAL | float::SUBNORMAL | float::ZERO;
    (
        proptest::option::weighted(
            0.95,
            prop_oneof![
                8 => recent_timestamp().prop_map(|s| json_string(&s)),
                1 => timestamp_text().prop_map(|s| json_string(&s)),
                1 => field_value(),
            ],
        ),
        proptest::option::weighted(
            0.95,
            prop_oneof![
                5 => finite.prop_map(|f| format!("{f:?}")),
                3 => finite.prop_map(|f| format!("{f:e}")),
                1 => number_literal(),
                1 => field_value(),
            ],
        ),
        proptest::option::weighted(
            0.95,
            prop_oneof![
                8 => valid_type().prop_map(|s| json_string(&s)),
                1 => type_text().prop_map(|s| json_string(&s)),
                1 => field_value(),
            ],
        ),
        proptest::collection::vec((type_text(), field_value()), 0..3),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(timestamp, value, metric_type, extra, duplicate)| {
            let mut fields = Vec::new();
            if let Some(t) = timestamp {
                fields.push(format!("\"timestamp\":{t}"));
            }
            if let Some(v) = value {
                fields.push(format!("\"value\":{v}"));
                if duplicate {
                    fields.push("\"value\":\"again\"".to_string());
                }
            }
            if let Some(t) = metric_type {
                fields.push(format!("\"type\":{t}"));
            }
            for (name, value) in extra {
                fields.push(format!("{}:{value}", json_string(&name)));
            }
            format!("{{{}}}", fields.join(","))
        })
        .boxed()
}

/// A `POST /api/metrics` body: one object, a batch, or something else.
fn metrics_body() -> BoxedStrategy<String> {
    prop_oneof![
        4 => metric_object(),
        2 => proptest::collection::vec(metric_object(), 0..8).prop_map(|items| format!("[{}]", items.join(","))),
        1 => field_value(),
    ]
    .boxed()
}

/// Header values API Gateway can deliver: visible ASCII, spaces, tabs and
/// non-ASCII (obs-text); no control characters, which HTTP forbids in fields.
fn header_value() -> BoxedStrategy<String> {
    prop_oneof![
        2 => proptest::string::string_regex("[!-~]{1,64}").expect("a valid regex"),
        2 => any::<String>().prop_map(|s| s
            .chars()
            .filter(|&c| c == '\t' || (c >= ' ' && c != '\u{7f}'))
            .collect::<String>()),
        1 => proptest::string::string_regex("\"?[ -~]{0,300}\"?").expect("a valid regex"),
        1 => proptest::sample::select(vec![
            "", " ", "\"\"", "\"", "no-cache", "No-Cache, max-age=0", "no-cache,no-cache",
            "max-age=-1", "no-store", "\u{e9}t\u{e9}", "a,b,c", "\"a,b\"",
        ]).prop_map(String::from),
    ]
    .boxed()
}

/// Percent-encodes every byte outside the unreserved set; `+` for spaces at random.
fn percent_encode(bytes: &[u8], plus_for_space: bool) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' if plus_for_space => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Summary query strings: known and unknown parameters, repeated, with
/// arbitrary byte values, all percent-encoded; or raw bytes where `&` and `=`
/// stay structural and everything else is encoded.
fn query_string() -> BoxedStrategy<String> {
    let name = prop_oneof![
        3 => proptest::sample::select(vec!["type", "period", "from", "to"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ];
    let value = prop_oneof![
        2 => type_text().prop_map(String::into_bytes),
        2 => proptest::sample::select(vec!["hourly", "daily", "weekly", "monthly", "yearly", "HOURLY", "", "daily\0"]).prop_map(|s| s.as_bytes().to_vec()),
        2 => timestamp_text().prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ];
    prop_oneof![
        4 => (proptest::collection::vec((name, value, any::<bool>()), 0..8), any::<bool>()).prop_map(
            |(pairs, plus)| {
                pairs
                    .iter()
                    .map(|(n, v, bare)| {
                        if *bare && v.is_empty() {
                            percent_encode(n, plus)
                        } else {
                            format!("{}={}", percent_encode(n, plus), percent_encode(v, plus))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("&")
            }
        ),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(|bytes| {
            bytes
                .split(|&b| b == b'&')
                .map(|part| part.split(|&b| b == b'=').map(|p| percent_encode(p, false)).collect::<Vec<_>>().join("="))
                .collect::<Vec<_>>()
                .join("&")
        }),
    ]
    .boxed()
}

/// The start of a request of either payload format.
fn event(v1: bool, method: &str, path: &str) -> EventBuilder {
    if v1 {
        rest_v1(method, path)
    } else {
        http_v2(method, path)
    }
}

// --- the pure validators ---------------------------------------------------------

fn limits() -> MetricLimits {
    MetricLimits {
        retention: ChronoDuration::days(35),
        max_future_skew: ChronoDuration::seconds(300),
        max_batch_size: 500,
    }
}

/// An error's status must be a 4xx, and a 422 must name its fields.
fn check_error(err: impl Into<ApiError>) -> Result<(), TestCaseError> {
    let err: ApiError = err.into();
    let err = &err;
    prop_assert!(err.status().is_client_error(), "{err:?}");
    if let ApiError::Unprocessable { errors, .. } = err {
        prop_assert!(!errors.is_empty(), "{err:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(1500))]

    /// Any bytes: a parse or a 4xx error, never a panic; what is accepted is valid.
    #[test]
    fn parse_metrics_takes_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        match parse_metrics(&body, Utc::now(), &limits()) {
            Ok(parsed) => prop_assert!(!parsed.metrics.is_empty()),
            Err(err) => check_error(err)?,
        }
    }

    /// Structured hostile bodies: whatever is accepted is a valid metric.
    #[test]
    fn parse_metrics_accepts_only_valid_metrics(body in metrics_body()) {
        let now = Utc::now();
        match parse_metrics(body.as_bytes(), now, &limits()) {
            Ok(parsed) => {
                for m in &parsed.metrics {
                    prop_assert!(m.value.is_finite());
                    prop_assert!(MetricType::parse(m.metric_type.as_str()).is_ok());
                    prop_assert!(m.timestamp <= now + limits().max_future_skew);
                    prop_assert!(m.timestamp >= now - limits().retention);
                }
            }
            Err(err) => check_error(err)?,
        }
    }

    /// Every finite float, in any of Rust's notations, is accepted as exactly
    /// that number (`-0` included); every non-finite literal is a 422 on `value`.
    #[test]
    fn finite_values_round_trip_and_others_are_refused(literal in number_literal()) {
        let now = Utc::now();
        let body = format!(
            r#"{{"timestamp":{},"value":{literal},"type":"t"}}"#,
            json_string(&format_timestamp(now))
        );
        let is_json_number = serde_json::from_str::<serde_json::Number>(&literal).is_ok();
        let expected: Option<f64> = literal.parse::<f64>().ok().filter(|v| v.is_finite());
        match parse_metrics(body.as_bytes(), now, &limits()) {
            Ok(parsed) => {
                let v = parsed.metrics[0].value;
                let want = expected.unwrap_or(f64::NAN);
                prop_assert!(v.to_bits() == want.to_bits(), "{literal} parsed as {v:?}");
            }
            Err(MetricError::Invalid(Invalid { errors, .. })) => {
                prop_assert_eq!(errors.len(), 1);
                prop_assert_eq!(&errors[0].field, "value");
                prop_assert!(
                    !is_json_number || expected.is_none(),
                    "the finite JSON number {} was refused", literal
                );
            }
            Err(MetricError::Malformed(_)) => prop_assert!(!is_json_number, "{}", literal),
        }
    }

    /// A type is accepted exactly when it is 1 to 64 characters of the set.
    #[test]
    fn types_are_accepted_exactly_when_valid(t in type_text()) {
        let valid = (1..=64).contains(&t.chars().count())
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        prop_assert_eq!(MetricType::parse(&t).is_ok(), valid, "{:?}", t);
        let now = Utc::now();
        let body = json!({"timestamp": format_timestamp(now), "value": 1, "type": t}).to_string();
        prop_assert_eq!(parse_metrics(body.as_bytes(), now, &limits()).is_ok(), valid);
    }

    /// Arbitrary query parameters: a query with a whole-minute window inside
    /// the retention and the skew, or a 422.
    #[test]
    fn summary_queries_are_valid_or_422(
        pairs in proptest::collection::vec(
            (prop_oneof![
                proptest::sample::select(vec!["type", "period", "from", "to"]).prop_map(String::from),
                any::<String>(),
            ], prop_oneof![type_text(), timestamp_text(), Just("daily".to_string())]),
            0..6,
        )
    ) {
        let now = Utc::now();
        let retention = ChronoDuration::days(35);
        let skew = ChronoDuration::seconds(300);
        match parse_summary_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), now, retention, skew) {
            Ok(q) => {
                prop_assert!(q.window.from < q.window.to);
                prop_assert_eq!(q.window.from.timestamp() % 60, 0);
                prop_assert_eq!(q.window.to.timestamp() % 60, 0);
                prop_assert!(q.window.from >= now - retention - ChronoDuration::minutes(1));
                prop_assert!(q.window.to <= now + skew + ChronoDuration::minutes(1));
            }
            Err(err) => {
                let err = ApiError::from(err);
                prop_assert_eq!(err.status().as_u16(), 422);
                check_error(err)?;
            }
        }
    }
}

// --- the handlers, in-process ------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(200))]

    /// Arbitrary bytes as API Gateway delivers binary payloads (base64), with
    /// or without a JSON content type, in both payload formats.
    #[test]
    fn ingest_answers_any_binary_body(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        v1 in any::<bool>(),
        json_type in any::<bool>(),
    ) {
        let mut e = event(v1, "POST", "/api/metrics").base64_body(&body);
        if json_type {
            e = e.header("content-type", "application/json");
        }
        let reply = ingest(&e);
        check_reply(&reply)?;
        prop_assert_ne!(reply.status, 201, "arbitrary bytes were stored");
    }

    /// Arbitrary Unicode text bodies.
    #[test]
    fn ingest_answers_any_text_body(body in any::<String>(), v1 in any::<bool>()) {
        let reply = ingest(&event(v1, "POST", "/api/metrics").body(&body));
        check_reply(&reply)?;
    }

    /// Hostile metrics, single or batch, as text or base64, with arbitrary
    /// `Idempotency-Key` headers (none, one, or repeated).
    #[test]
    fn ingest_answers_hostile_metrics(
        body in metrics_body(),
        keys in prop_oneof![
            2 => Just(Vec::new()),
            2 => proptest::collection::vec(header_value(), 1..2),
            1 => proptest::collection::vec(header_value(), 2..4),
        ],
        v1 in any::<bool>(),
        binary in any::<bool>(),
    ) {
        let mut e = event(v1, "POST", "/api/metrics").header("content-type", "application/json");
        e = if binary { e.base64_body(body.as_bytes()) } else { e.body(&body) };
        for key in &keys {
            e = e.header("Idempotency-Key", key);
        }
        let reply = ingest(&e);
        let json = check_reply(&reply)?;
        if reply.status == 201 {
            check_created(&json)?;
        }
    }

    /// Valid metrics with arbitrary `Idempotency-Key` values: stored, replayed
    /// or refused with a 422 — and a key that was accepted replays.
    #[test]
    fn idempotency_keys_of_any_shape(key in header_value(), v1 in any::<bool>()) {
        let t = random_type("hostile_idem");
        let body = json!({"timestamp": format_timestamp(Utc::now()), "value": 1.5, "type": t});
        let send = || ingest(&event(v1, "POST", "/api/metrics").json(&body).header("Idempotency-Key", &key));
        let first = send();
        check_reply(&first)?;
        prop_assert!(first.status == 201 || first.status == 422, "{}", first.status);
        if first.status == 201 {
            let again = send();
            check_reply(&again)?;
            prop_assert_eq!(again.status, 201);
            prop_assert_eq!(again.json(), first.json());
        }
    }

    /// Arbitrary percent-encoded query strings (any bytes, repeated and
    /// unknown parameters) and `Cache-Control` values.
    #[test]
    fn summary_answers_any_query(
        query in query_string(),
        cache_control in proptest::option::of(header_value()),
        v1 in any::<bool>(),
    ) {
        let mut e = event(v1, "GET", "/api/metrics/summary").query(&query);
        if let Some(value) = &cache_control {
            e = e.header("Cache-Control", value);
        }
        let reply = summary(&e);
        let json = check_reply(&reply)?;
        if reply.status == 200 {
            check_summary(&json)?;
        } else {
            prop_assert_eq!(reply.status, 422, "{}", reply.excerpt());
        }
    }

    /// A valid type next to hostile `period`/`from`/`to` values.
    #[test]
    fn summary_answers_hostile_windows(
        period in proptest::option::of(prop_oneof![Just("daily".to_string()), type_text()]),
        from in proptest::option::of(timestamp_text()),
        to in proptest::option::of(timestamp_text()),
        v1 in any::<bool>(),
    ) {
        let mut query = format!("type={}", random_type("hostile_window"));
        for (name, value) in [("period", &period), ("from", &from), ("to", &to)] {
            if let Some(value) = value {
                query.push_str(&format!("&{name}={}", percent_encode(value.as_bytes(), false)));
            }
        }
        let reply = summary(&event(v1, "GET", "/api/metrics/summary").query(&query));
        let json = check_reply(&reply)?;
        if reply.status == 200 {
            check_summary(&json)?;
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(24))]

    /// JSON nested 10 000 to 40 000 levels deep: as the body, as each field,
    /// as an unknown field, and inside a batch.
    #[test]
    fn deep_nesting_is_answered(deep in deep_json(), place in 0u8..6, v1 in any::<bool>()) {
        let ts = json_string(&format_timestamp(Utc::now()));
        let body = match place {
            0 => deep,
            1 => format!(r#"{{"timestamp":{ts},"value":{deep},"type":"t"}}"#),
            2 => format!(r#"{{"timestamp":{ts},"value":1,"type":{deep}}}"#),
            3 => format!(r#"{{"timestamp":{deep},"value":1,"type":"t"}}"#),
            4 => format!(r#"{{"timestamp":{ts},"value":1,"type":"t","extra":{deep}}}"#),
            _ => format!(r#"[{{"timestamp":{ts},"value":1,"type":"t"}},{deep}]"#),
        };
        let reply = ingest(&event(v1, "POST", "/api/metrics").body(&body));
        check_reply(&reply)?;
        prop_assert!(
            reply.status == 400 || reply.status == 422 || (place == 4 && reply.status == 201),
            "{}: {}", reply.status, reply.excerpt()
        );
    }
}

// --- fixed cases -------------------------------------------------------------------

fn check(reply: &Reply) -> Value {
    check_reply(reply).unwrap_or_else(|e| panic!("{e}"))
}

fn post_text(body: &str) -> Reply {
    ingest(&http_v2("POST", "/api/metrics").body(body))
}

fn metric_with(field: &str, raw: &str) -> String {
    let t = random_type("hostile");
    let mut fields = vec![
        ("timestamp", json_string(&format_timestamp(Utc::now()))),
        ("value", "1".to_string()),
        ("type", json_string(&t)),
    ];
    for f in &mut fields {
        if f.0 == field {
            f.1 = raw.to_string();
        }
    }
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

#[test]
fn numbers_beyond_a_double_are_422_on_value_and_edge_values_are_stored() {
    let hundred_digits = format!("1{}", "0".repeat(99));
    for literal in [
        "1e309",
        "-1e309",
        "1e400",
        "1.7976931348623159e308",
        "1e99999999999999999999",
    ] {
        let reply = post_text(&metric_with("value", literal));
        let body = check(&reply);
        assert_eq!(reply.status, 422, "{literal}: {body}");
        assert_eq!(body["errors"][0]["field"], "value", "{literal}");
    }
    for literal in [
        "-0",
        "5e-324",
        "2.2250738585072011e-308",
        "1e-400",
        hundred_digits.as_str(),
        "1.7976931348623157e308",
    ] {
        let expected: f64 = literal.parse().unwrap();
        let reply = post_text(&metric_with("value", literal));
        let body = check(&reply);
        assert_eq!(reply.status, 201, "{literal}: {body}");
        let stored = body["metric"]["value"].as_f64().unwrap();
        assert_eq!(stored.to_bits(), expected.to_bits(), "{literal}: {body}");
    }
    for literal in ["NaN", "Infinity", "-Infinity", "+1", "01", ".5", "0x10"] {
        let reply = post_text(&metric_with("value", literal));
        check(&reply);
        assert_eq!(reply.status, 400, "{literal}");
    }
}

#[test]
fn types_at_the_64_character_limit() {
    let at_limit = |s: String| {
        let reply = post_text(&metric_with("type", &json_string(&s)));
        check(&reply);
        let query = format!("type={}&period=hourly", percent_encode(s.as_bytes(), false));
        let read = summary(&http_v2("GET", "/api/metrics/summary").query(&query));
        check(&read);
        (reply.status, read.status)
    };
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ascii_64 = format!("{id}{}", "a".repeat(56));
    assert_eq!(at_limit(ascii_64.clone()), (201, 200));
    for bad in [
        format!("{ascii_64}a"),
        format!("{}é", &ascii_64[..63]),
        format!("{ascii_64}é"),
        "é".repeat(64),
        "😀".repeat(64),
        "ß".repeat(32),
        format!("{}\u{301}", &ascii_64[..63]),
        "a\0".to_string(),
    ] {
        assert_eq!(at_limit(bad.clone()), (422, 422), "{bad:?}");
    }
}

#[test]
fn invalid_utf8_is_a_400_in_both_formats() {
    for v1 in [false, true] {
        for body in [
            &b"\xff\xfe"[..],
            b"{\"timestamp\":\"\xc3\x28\",\"value\":1,\"type\":\"t\"}",
            b"{\"type\":\"\xed\xa0\x80\"}",
            b"\xef\xbb\xbf{}",
        ] {
            let reply = ingest(&event(v1, "POST", "/api/metrics").base64_body(body));
            check(&reply);
            assert_eq!(reply.status, 400, "{body:?}");
        }
    }
}

#[test]
fn an_empty_body_and_an_oversized_one_are_4xx() {
    let reply = ingest(&http_v2("POST", "/api/metrics"));
    check(&reply);
    assert_eq!(reply.status, 400);
    let huge = format!(
        r#"{{"timestamp":"2026-02-18T12:00:00Z","value":1,"type":"t","pad":"{}"}}"#,
        "x".repeat(HARNESS.state.config.request.max_body_bytes)
    );
    let reply = post_text(&huge);
    check(&reply);
    assert_eq!(reply.status, 413);
}

#[test]
fn echoed_input_cannot_blow_up_the_response() {
    // Characters that `{:?}` escapes at length: U+0085 is 2 bytes of UTF-8
    // and 6 characters escaped (`\u{85}`), 7 bytes once in a JSON string.
    let limit = HARNESS.state.config.request.max_body_bytes;
    let long = "\u{85}".repeat((limit - 200) / 2);
    let reply = post_text(&metric_with("timestamp", &json_string(&long)));
    check(&reply);
    assert_eq!(reply.status, 422);
    let item = |ts: &str| {
        format!(
            r#"{{"timestamp":{},"value":1,"type":"t"}}"#,
            json_string(ts)
        )
    };
    let batch_size = HARNESS.state.config.metrics.max_batch_size;
    let per_item = "\u{85}".repeat((limit / batch_size - 60) / 2);
    let batch = format!("[{}]", vec![item(&per_item); batch_size].join(","));
    assert!(batch.len() <= limit);
    let reply = post_text(&batch);
    check(&reply);
    assert_eq!(reply.status, 422);
    let query = format!(
        "type=cpu&from={}&to=x&period={}",
        percent_encode("\u{85}".repeat(4000).as_bytes(), false),
        percent_encode("\u{85}".repeat(4000).as_bytes(), false)
    );
    let reply = summary(&http_v2("GET", "/api/metrics/summary").query(&query));
    check(&reply);
    assert_eq!(reply.status, 422);
}

#[test]
fn sums_beyond_a_double_across_buckets_stay_finite() {
    // Each value fits its minute, hour and day buckets; together, in a window
    // spanning several days, they exceed f64::MAX.
    let t = random_type("hostile_sum");
    let now = Utc::now();
    for days_ago in [0, 2, 4] {
        let at = now - ChronoDuration::days(days_ago) - ChronoDuration::minutes(5);
        let body = json!({"timestamp": format_timestamp(at), "value": f64::MAX, "type": t});
        let reply = ingest(&http_v2("POST", "/api/metrics").json(&body));
        check(&reply);
        assert_eq!(reply.status, 201);
    }
    let reply =
        summary(&http_v2("GET", "/api/metrics/summary").query(&format!("type={t}&period=weekly")));
    let body = check(&reply);
    assert_eq!(reply.status, 200, "{body}");
    check_summary(&body).unwrap_or_else(|e| panic!("{e}"));
}
