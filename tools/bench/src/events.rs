//! Synthetic API Gateway HTTP API (payload format 2.0) events.
//!
//! The same JSON Lambda's runtime hands a function, turned into a
//! `lambda_http::Request` by `lambda_http::request::from_str` (the runtime's
//! own deserialiser), so the handlers see what they see in AWS. The cold-start
//! figure sends the JSON itself through its runtime API emulation.
//!
//! Client addresses come from 198.18.0.0/15, the block RFC 2544 reserves for
//! benchmarks: they only name rate-limit keys; nothing is ever sent to them.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Map, Value};

/// One request to build.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The raw path, e.g. `/api/metrics`.
    pub path: &'a str,
    /// The raw query string without `?` (values already percent-encoded;
    /// the bench only sends plain `key=value` pairs).
    pub query: &'a str,
    /// Header names (lower case) and values.
    pub headers: Vec<(&'a str, String)>,
    /// A text body.
    pub body: Option<String>,
    /// The caller's address as API Gateway reports it.
    pub source_ip: String,
}

/// The JSON event API Gateway sends for `event`.
pub fn to_json(event: &Event<'_>) -> Value {
    let mut headers = Map::new();
    headers.insert("host".into(), json!("api.example.test"));
    for (name, value) in &event.headers {
        headers.insert((*name).to_string(), json!(value));
    }
    let mut params = Map::new();
    for pair in event.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k.to_string(), json!(v));
    }
    let route = format!("{} {}", event.method, event.path);
    let mut value = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": event.path,
        "rawQueryString": event.query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "benchapi",
            "domainName": "api.example.test",
            "domainPrefix": "api",
            "http": {
                "method": event.method,
                "path": event.path,
                "protocol": "HTTP/1.1",
                "sourceIp": event.source_ip,
                "userAgent": "bench",
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route,
            "stage": "$default",
            "time": "18/Feb/2026:12:00:00 +0000",
            "timeEpoch": 1_771_416_000_000_u64,
        },
        "isBase64Encoded": false,
    });
    if !params.is_empty() {
        value["queryStringParameters"] = Value::Object(params);
    }
    if let Some(body) = &event.body {
        value["body"] = json!(body);
    }
    value
}

/// The request a handler receives for `event`.
///
/// # Errors
/// `lambda_http`'s message when it does not accept the event (a bug here).
pub fn request(event: &Event<'_>) -> Result<lambda_http::Request, String> {
    lambda_http::request::from_str(&to_json(event).to_string())
        .map_err(|e| format!("lambda_http rejected a synthetic event: {e}"))
}

static NEXT_CLIENT: AtomicU32 = AtomicU32::new(0);

/// A fresh client address in 198.18.0.0/15 (131 072 of them, then reused).
pub fn next_client_ip() -> String {
    let n = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed) % (1 << 17);
    format!("198.{}.{}.{}", 18 + (n >> 16), (n >> 8) & 0xff, n & 0xff)
}

/// `POST /api/metrics` with one metric of `metric_type` timestamped now,
/// from a fresh client address.
pub fn ingest(metric_type: &str, value: f64) -> Result<lambda_http::Request, String> {
    let body = json!({
        "timestamp": shared::metric::format_timestamp(chrono::Utc::now()),
        "value": value,
        "type": metric_type,
    });
    request(&Event {
        method: "POST",
        path: "/api/metrics",
        headers: vec![("content-type", "application/json".into())],
        body: Some(body.to_string()),
        source_ip: next_client_ip(),
        ..Event::default()
    })
}

/// `GET /api/metrics/summary?type=…&period=…`, with `Cache-Control: no-cache`
/// when `no_cache`.
pub fn summary(
    metric_type: &str,
    period: &str,
    no_cache: bool,
) -> Result<lambda_http::Request, String> {
    let query = format!("type={metric_type}&period={period}");
    let mut headers = Vec::new();
    if no_cache {
        headers.push(("cache-control", "no-cache".to_string()));
    }
    request(&Event {
        method: "GET",
        path: "/api/metrics/summary",
        query: &query,
        headers,
        source_ip: next_client_ip(),
        ..Event::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_stay_in_the_benchmarking_block() {
        for _ in 0..3 {
            let ip: std::net::Ipv4Addr = next_client_ip().parse().unwrap();
            let o = ip.octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{ip}");
        }
    }

    #[test]
    fn events_become_requests() {
        let req = summary("cpu", "monthly", true).unwrap();
        assert_eq!(req.uri().path(), "/api/metrics/summary");
        assert_eq!(req.headers()["cache-control"], "no-cache");
        let req = ingest("cpu", 1.5).unwrap();
        assert_eq!(req.method(), "POST");
    }
}
