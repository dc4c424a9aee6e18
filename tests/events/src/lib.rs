//! Synthetic API Gateway, Function URL and Application Load Balancer events
//! as `lambda_http::Request`s.
//!
//! The builder writes the JSON event AWS would send (HTTP API payload
//! format 2.0, REST API v1 "proxy" events, a Lambda Function URL's 2.0
//! events, an ALB target group's events) and turns it into a request with
//! `lambda_http::request::from_str`, the deserialiser the Lambda runtime uses.
//! So the request carries the same URI, headers, body and `RequestContext`
//! extension (with `sourceIp`) as in AWS, and handlers that read the client's
//! IP from the request context can be tested with several clients.
//!
//! Shapes follow the AWS documentation of the payload formats: in v2,
//! repeated query parameters and headers are joined with commas and the raw
//! query string is kept in `rawQueryString`; in v1 the single-value maps keep
//! the last value and `multiValue*` maps keep all of them. A Function URL
//! reports the address it observed as `sourceIp` **and** appends it to
//! `X-Forwarded-For`; an ALB has no source address in its event and only
//! appends the address it observed to `X-Forwarded-For` (its default
//! `append` mode), with single-value headers (the last value of a repeated
//! header) unless multi-value headers are enabled on the target group.
//!
//! ```
//! use synthetic_events::http_v2;
//!
//! let req = http_v2("POST", "/api/metrics")
//!     .json(&serde_json::json!({"timestamp": "2026-02-18T12:00:00Z", "value": 1.5, "type": "cpu"}))
//!     .source_ip("198.51.100.7")
//!     .build();
//! assert_eq!(req.uri().path(), "/api/metrics");
//! ```

pub mod round_trips;

use std::sync::atomic::{AtomicU32, Ordering};

use lambda_http::aws_lambda_events::encodings::Base64Data;
use serde_json::{json, Map, Value};

/// The source IP events carry unless told otherwise (TEST-NET-3, RFC 5737).
pub const DEFAULT_SOURCE_IP: &str = "203.0.113.10";

static NEXT_CLIENT: AtomicU32 = AtomicU32::new(0);

/// A fresh client address in 198.18.0.0/15, the block RFC 2544 reserves for
/// benchmarks (131,072 of them, then reused): such addresses only name
/// rate-limit keys, nothing is ever sent to them.
pub fn next_client_ip() -> String {
    let n = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed) % (1 << 17);
    format!("198.{}.{}.{}", 18 + (n >> 16), (n >> 8) & 0xff, n & 0xff)
}

/// Which event format to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HTTP API, payload format version 2.0.
    HttpV2,
    /// REST API (payload format 1.0).
    RestV1,
    /// A Lambda Function URL (payload format 2.0, `routeKey` `$default`).
    FunctionUrl,
    /// An Application Load Balancer target group; `multi_value` when the
    /// target group sends `multiValueHeaders`.
    Alb {
        /// Headers (and query parameters) as lists of all their values.
        multi_value: bool,
    },
}

#[derive(Debug, Clone)]
enum EventBody {
    None,
    Text(String),
    Binary(Vec<u8>),
}

/// Builds one synthetic event; start with [`http_v2`] or [`rest_v1`].
#[derive(Debug, Clone)]
pub struct EventBuilder {
    format: Format,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: EventBody,
    source_ip: Option<String>,
}

/// An HTTP API (payload v2.0) event for `method` on `path` (no query string:
/// add one with [`EventBuilder::query`]).
pub fn http_v2(method: &str, path: &str) -> EventBuilder {
    EventBuilder::new(Format::HttpV2, method, path)
}

/// A REST API (v1) event for `method` on `path`.
pub fn rest_v1(method: &str, path: &str) -> EventBuilder {
    EventBuilder::new(Format::RestV1, method, path)
}

/// A Lambda Function URL event for `method` on `path`: its source IP is in
/// the request context and appended to `X-Forwarded-For`.
pub fn function_url(method: &str, path: &str) -> EventBuilder {
    EventBuilder::new(Format::FunctionUrl, method, path)
}

/// An Application Load Balancer event for `method` on `path`, single-value
/// headers: the source IP ([`EventBuilder::source_ip`], the address the ALB
/// observed) is appended to `X-Forwarded-For` and is nowhere else.
pub fn alb(method: &str, path: &str) -> EventBuilder {
    EventBuilder::new(Format::Alb { multi_value: false }, method, path)
}

/// [`alb`] with the target group's multi-value headers enabled.
pub fn alb_multi_value(method: &str, path: &str) -> EventBuilder {
    EventBuilder::new(Format::Alb { multi_value: true }, method, path)
}

impl EventBuilder {
    fn new(format: Format, method: &str, path: &str) -> Self {
        Self {
            format,
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: EventBody::None,
            source_ip: Some(DEFAULT_SOURCE_IP.to_string()),
        }
    }

    /// The raw query string, without `?`, e.g. `"type=cpu&period=daily"`.
    /// Values are taken as already percent-encoded.
    pub fn query(mut self, raw: &str) -> Self {
        self.query = raw.trim_start_matches('?').to_string();
        self
    }

    /// Adds a header (names are lower-cased, as API Gateway HTTP APIs do).
    /// Repeating a name keeps both values.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// A text body, sent as is (`isBase64Encoded: false`).
    pub fn body(mut self, text: &str) -> Self {
        self.body = EventBody::Text(text.to_string());
        self
    }

    /// A JSON body plus `content-type: application/json`.
    pub fn json(self, value: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(&value.to_string())
    }

    /// A body API Gateway delivers base64-encoded (`isBase64Encoded: true`),
    /// as it does for binary media types.
    pub fn base64_body(mut self, bytes: &[u8]) -> Self {
        self.body = EventBody::Binary(bytes.to_vec());
        self
    }

    /// The caller's IP as AWS observed it: as API Gateway reports it
    /// (`requestContext.http.sourceIp` in v2, `requestContext.identity.sourceIp`
    /// in v1); a Function URL reports it there too and appends it to
    /// `X-Forwarded-For`; an ALB only appends it to `X-Forwarded-For`.
    pub fn source_ip(mut self, ip: &str) -> Self {
        self.source_ip = Some(ip.to_string());
        self
    }

    /// An event without any source IP.
    pub fn no_source_ip(mut self) -> Self {
        self.source_ip = None;
        self
    }

    /// The JSON event, as Lambda would receive it.
    pub fn to_json(&self) -> Value {
        match self.format {
            Format::HttpV2 => self.v2_json(),
            Format::RestV1 => self.v1_json(),
            Format::FunctionUrl => self.function_url_json(),
            Format::Alb { multi_value } => self.alb_json(multi_value),
        }
    }

    /// The request a handler receives for this event.
    ///
    /// Panics when `lambda_http` does not accept the event (a bug in this
    /// builder, not in the code under test).
    pub fn build(&self) -> lambda_http::Request {
        self.try_build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`EventBuilder::build`], with `lambda_http`'s refusal as an error
    /// message (naming the event) instead of a panic.
    ///
    /// # Errors
    /// When `lambda_http` does not accept the event.
    pub fn try_build(&self) -> Result<lambda_http::Request, String> {
        let event = self.to_json().to_string();
        lambda_http::request::from_str(&event)
            .map_err(|e| format!("lambda_http rejected the synthetic event: {e}\n{event}"))
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| match part.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(part), String::new()),
            })
            .collect()
    }

    fn body_fields(&self) -> (Value, bool) {
        match &self.body {
            EventBody::None => (Value::Null, false),
            EventBody::Text(text) => (Value::String(text.clone()), false),
            EventBody::Binary(bytes) => {
                // `Base64Data` is non-exhaustive: fill a default one.
                let mut data = Base64Data::default();
                data.extend_from_slice(bytes);
                (serde_json::to_value(data).unwrap_or(Value::Null), true)
            }
        }
    }

    fn v2_json(&self) -> Value {
        // Repeated headers and query parameters are joined with commas in v2.
        let mut headers = Map::new();
        let mut cookies = Vec::new();
        for (name, value) in &self.headers {
            if name == "cookie" {
                cookies.extend(value.split("; ").map(|c| Value::String(c.to_string())));
                continue;
            }
            join_into(&mut headers, name, value);
        }
        headers
            .entry("host")
            .or_insert_with(|| json!("api.example.test"));
        let mut params = Map::new();
        for (k, v) in self.query_pairs() {
            join_into(&mut params, &k, &v);
        }
        let (body, is_base64) = self.body_fields();
        let mut http = json!({
            "method": self.method,
            "path": self.path,
            "protocol": "HTTP/1.1",
            "userAgent": "synthetic-events",
        });
        if let Some(ip) = &self.source_ip {
            http["sourceIp"] = json!(ip);
        }
        let mut event = json!({
            "version": "2.0",
            "routeKey": format!("{} {}", self.method, self.path),
            "rawPath": self.path,
            "rawQueryString": self.query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "testapi",
                "domainName": "api.example.test",
                "domainPrefix": "api",
                "http": http,
                "requestId": uuid::Uuid::new_v4().to_string(),
                "routeKey": format!("{} {}", self.method, self.path),
                "stage": "$default",
                "time": "18/Feb/2026:12:00:00 +0000",
                "timeEpoch": 1_771_416_000_000_u64,
            },
            "isBase64Encoded": is_base64,
        });
        if !params.is_empty() {
            event["queryStringParameters"] = Value::Object(params);
        }
        if !cookies.is_empty() {
            event["cookies"] = Value::Array(cookies);
        }
        if !body.is_null() {
            event["body"] = body;
        }
        event
    }

    fn v1_json(&self) -> Value {
        let mut headers = Map::new();
        let mut multi_headers = Map::new();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), json!(value));
            push_into(&mut multi_headers, name, value);
        }
        headers
            .entry("host")
            .or_insert_with(|| json!("api.example.test"));
        multi_headers
            .entry("host")
            .or_insert_with(|| json!(["api.example.test"]));
        let mut params = Map::new();
        let mut multi_params = Map::new();
        for (k, v) in self.query_pairs() {
            params.insert(k.clone(), json!(v));
            push_into(&mut multi_params, &k, &v);
        }
        let (body, is_base64) = self.body_fields();
        let mut identity = json!({ "userAgent": "synthetic-events" });
        if let Some(ip) = &self.source_ip {
            identity["sourceIp"] = json!(ip);
        }
        json!({
            "resource": self.path,
            "path": self.path,
            "httpMethod": self.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": if params.is_empty() { Value::Null } else { Value::Object(params) },
            "multiValueQueryStringParameters": if multi_params.is_empty() { Value::Null } else { Value::Object(multi_params) },
            "pathParameters": Value::Null,
            "stageVariables": Value::Null,
            "requestContext": {
                "accountId": "123456789012",
                "resourceId": "test",
                "path": format!("/prod{}", self.path),
                "stage": "prod",
                "domainName": "api.example.test",
                "domainPrefix": "api",
                "requestId": uuid::Uuid::new_v4().to_string(),
                "protocol": "HTTP/1.1",
                "identity": identity,
                "resourcePath": self.path,
                "httpMethod": self.method,
                "apiId": "testapi",
                "requestTime": "18/Feb/2026:12:00:00 +0000",
                "requestTimeEpoch": 1_771_416_000_000_u64,
            },
            "body": body,
            "isBase64Encoded": is_base64,
        })
    }
}

impl EventBuilder {
    /// The headers with the source IP appended to `X-Forwarded-For`, as a
    /// Function URL or an ALB in `append` mode forwards them (a new field
    /// when the client sent none, else appended to the last one).
    fn headers_with_appended_source(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.clone();
        if let Some(ip) = &self.source_ip {
            match headers
                .iter_mut()
                .rev()
                .find(|(name, _)| name == "x-forwarded-for")
            {
                Some((_, value)) => {
                    value.push_str(", ");
                    value.push_str(ip);
                }
                None => headers.push(("x-forwarded-for".to_string(), ip.clone())),
            }
        }
        headers
    }

    fn function_url_json(&self) -> Value {
        let mut url = Self {
            headers: self.headers_with_appended_source(),
            ..self.clone()
        };
        url.format = Format::HttpV2;
        let mut event = url.v2_json();
        event["routeKey"] = json!("$default");
        event["requestContext"]["routeKey"] = json!("$default");
        event["requestContext"]["domainName"] = json!("abcdefghij.lambda-url.eu-west-1.on.aws");
        event["requestContext"]["domainPrefix"] = json!("abcdefghij");
        event["requestContext"]["apiId"] = json!("abcdefghij");
        event["headers"]["host"] = json!("abcdefghij.lambda-url.eu-west-1.on.aws");
        event
    }

    fn alb_json(&self, multi_value: bool) -> Value {
        let mut headers = Map::new();
        let mut multi_headers = Map::new();
        for (name, value) in self.headers_with_appended_source() {
            headers.insert(name.clone(), json!(value));
            push_into(&mut multi_headers, &name, &value);
        }
        let host = "internal-api-123456.eu-west-1.elb.amazonaws.com";
        headers.entry("host").or_insert_with(|| json!(host));
        multi_headers.entry("host").or_insert_with(|| json!([host]));
        let mut params = Map::new();
        let mut multi_params = Map::new();
        for (k, v) in self.query_pairs() {
            params.insert(k.clone(), json!(v));
            push_into(&mut multi_params, &k, &v);
        }
        let (body, is_base64) = self.body_fields();
        let mut event = json!({
            "requestContext": {"elb": {"targetGroupArn":
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/6d0ecf831eec9f09"}},
            "httpMethod": self.method,
            "path": self.path,
            "isBase64Encoded": is_base64,
            "body": if body.is_null() { json!("") } else { body },
        });
        if multi_value {
            event["multiValueHeaders"] = Value::Object(multi_headers);
            event["multiValueQueryStringParameters"] = Value::Object(multi_params);
        } else {
            event["headers"] = Value::Object(headers);
            event["queryStringParameters"] = Value::Object(params);
        }
        event
    }
}

fn join_into(map: &mut Map<String, Value>, key: &str, value: &str) {
    match map.get_mut(key) {
        Some(Value::String(existing)) => {
            existing.push(',');
            existing.push_str(value);
        }
        _ => {
            map.insert(key.to_string(), json!(value));
        }
    }
}

fn push_into(map: &mut Map<String, Value>, key: &str, value: &str) {
    match map.get_mut(key) {
        Some(Value::Array(values)) => values.push(json!(value)),
        _ => {
            map.insert(key.to_string(), json!([value]));
        }
    }
}

/// Percent-decoding for query parameters (`+` is a space, as in forms); an
/// invalid escape is kept as it is.
fn decode(raw: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::request::RequestContext;
    use lambda_http::{Body, RequestExt};

    #[test]
    fn client_addresses_stay_in_the_benchmarking_block() {
        for _ in 0..3 {
            let ip: std::net::Ipv4Addr = next_client_ip().parse().unwrap();
            let o = ip.octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{ip}");
        }
    }

    fn source_ip(req: &lambda_http::Request) -> Option<String> {
        match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
            Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.source_ip.clone(),
            _ => None,
        }
    }

    #[test]
    fn v2_events_carry_method_path_query_headers_body_and_ip() {
        let req = http_v2("post", "/api/metrics")
            .query("type=cpu&period=daily&type=mem")
            .header("X-Api-Key", "k1")
            .json(&json!({"value": 1}))
            .source_ip("198.51.100.7")
            .build();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri().path(), "/api/metrics");
        assert_eq!(req.uri().query(), Some("type=cpu&period=daily&type=mem"));
        assert_eq!(req.headers()["x-api-key"], "k1");
        assert_eq!(req.headers()["content-type"], "application/json");
        assert!(matches!(req.body(), Body::Text(t) if t == r#"{"value":1}"#));
        assert_eq!(source_ip(&req).as_deref(), Some("198.51.100.7"));
        let params = req.query_string_parameters();
        assert_eq!(params.first("period"), Some("daily"));
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV2(_))
        ));
    }

    #[test]
    fn v1_events_carry_the_same_request() {
        let req = rest_v1("GET", "/api/metrics/summary")
            .query("type=cpu&period=hourly")
            .header("Cache-Control", "no-cache")
            .source_ip("198.51.100.8")
            .build();
        assert_eq!(req.method(), "GET");
        // As in AWS, lambda_http puts the REST API stage in front of the path
        // and keeps the resource path as the raw path.
        assert_eq!(req.uri().path(), "/prod/api/metrics/summary");
        assert_eq!(req.raw_http_path(), "/api/metrics/summary");
        assert_eq!(req.headers()["cache-control"], "no-cache");
        assert_eq!(req.query_string_parameters().first("type"), Some("cpu"));
        assert_eq!(source_ip(&req).as_deref(), Some("198.51.100.8"));
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV1(_))
        ));
    }

    #[test]
    fn base64_bodies_arrive_decoded_and_events_may_lack_an_ip() {
        for builder in [
            http_v2("POST", "/api/metrics"),
            rest_v1("POST", "/api/metrics"),
        ] {
            let req = builder.base64_body(b"\x00\xffraw").no_source_ip().build();
            assert_eq!(req.body().as_ref(), b"\x00\xffraw");
            assert_eq!(source_ip(&req), None);
        }
    }

    fn forwarded_for(req: &lambda_http::Request) -> Vec<String> {
        req.headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn function_url_events_report_and_append_the_source_ip() {
        let req = function_url("GET", "/api/metrics/summary")
            .query("type=cpu&period=hourly")
            .header("x-forwarded-for", "192.0.2.1")
            .source_ip("198.51.100.9")
            .build();
        assert_eq!(req.uri().path(), "/api/metrics/summary");
        assert_eq!(req.query_string_parameters().first("type"), Some("cpu"));
        assert_eq!(source_ip(&req).as_deref(), Some("198.51.100.9"));
        assert_eq!(forwarded_for(&req), ["192.0.2.1, 198.51.100.9"]);
        assert!(matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV2(_))
        ));
    }

    #[test]
    fn alb_events_carry_the_source_ip_only_in_x_forwarded_for() {
        for (builder, multi_value) in [
            (alb("POST", "/api/metrics"), false),
            (alb_multi_value("POST", "/api/metrics"), true),
        ] {
            let req = builder
                .json(&json!({"value": 1}))
                .header("x-forwarded-for", "192.0.2.1")
                .source_ip("198.51.100.9")
                .build();
            assert_eq!(req.method(), "POST", "multi-value {multi_value}");
            assert_eq!(req.uri().path(), "/api/metrics");
            assert!(matches!(req.body(), Body::Text(t) if t == r#"{"value":1}"#));
            assert_eq!(forwarded_for(&req), ["192.0.2.1, 198.51.100.9"]);
            assert_eq!(source_ip(&req), None);
            assert!(matches!(
                req.request_context_ref(),
                Some(RequestContext::Alb(_))
            ));
        }
        let req = alb("GET", "/api/metrics/summary")
            .query("type=cpu&period=daily")
            .source_ip("198.51.100.9")
            .build();
        assert_eq!(req.query_string_parameters().first("period"), Some("daily"));
        assert_eq!(forwarded_for(&req), ["198.51.100.9"]);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let req = http_v2("GET", "/api/metrics/summary")
            .query("from=2026-02-18T12%3A00%3A00%2B01%3A00&x=a+b")
            .build();
        let params = req.query_string_parameters();
        assert_eq!(params.first("from"), Some("2026-02-18T12:00:00+01:00"));
        assert_eq!(params.first("x"), Some("a b"));
    }
}
