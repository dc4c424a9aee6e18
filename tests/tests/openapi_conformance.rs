//! Real responses of every endpoint, happy and error paths, conform to the
//! OpenAPI document: the status is documented for the operation, the
//! `Content-Type` is one the response declares, the body validates (JSON
//! Schema 2020-12, formats checked) against that content's schema, every
//! header the document marks `required` is present, every documented header
//! that is present validates against its schema, and no header of the
//! service's own vocabulary is sent without being documented.
//!
//! The responses come from the real handlers in-process (synthetic API
//! Gateway events, a real Redis under a random key prefix); the unavailable
//! cases point `REDIS_URL` at a closed port or at a local listener that never
//! answers. A final check makes sure every documented (operation, status,
//! content type) was produced at least once, so a new documented response
//! without a test here fails.

use std::collections::BTreeSet;
use std::sync::Mutex;

use analytics_tests::private_redis::PrivateRedis;
use analytics_tests::{config, http_v2, random_type, EventBuilder};
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::handlers::{health, ingest_metric, metrics_series, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;

/// Response headers of the service's own vocabulary: any of these on a
/// response must be documented for that response.
const OWN_HEADERS: &[&str] = &[
    "retry-after",
    "ratelimit-policy",
    "ratelimit",
    "x-cache",
    "cache-control",
    "age",
    "idempotent-replayed",
];

/// The document, and which of its responses the tests produced.
struct Spec {
    doc: Value,
    seen: Mutex<BTreeSet<(String, String, String, String)>>,
}

impl Spec {
    fn new() -> Self {
        Spec {
            doc: serde_json::from_str(&shared::openapi::document_json())
                .expect("the document is JSON"),
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// A validator for `schema`, a schema object of the document whose
    /// `$ref`s point into `#/components/...`: the components are attached to
    /// it, so the references resolve inside the schema itself.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = match schema {
            Value::Object(map) => map.clone(),
            other => panic!("schema is not an object: {other}"),
        };
        root.insert("components".into(), self.doc["components"].clone());
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("invalid schema {schema}: {e}"))
    }

    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        self.validator(schema)
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// Checks `response` of `method path` against the document and returns
    /// its body as JSON.
    fn check(&self, method: &str, path: &str, response: &Response<Body>) -> Value {
        let status = response.status().as_str().to_string();
        let operation = &self.doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let documented = &operation["responses"][&status];
        let body = body_json(response);
        let context = format!("{method} {path} → {status} {body}");
        assert!(
            documented.is_object(),
            "undocumented status: {context}; documented: {:?}",
            operation["responses"]
                .as_object()
                .map(|r| r.keys().collect::<Vec<_>>())
        );

        let content_type = header(response, "content-type")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let media = &documented["content"][&content_type];
        assert!(
            media.is_object(),
            "undocumented content type {content_type:?}: {context}"
        );
        let errors = self.errors(&media["schema"], &body);
        assert!(
            errors.is_empty(),
            "body does not conform: {context}: {errors:#?}"
        );

        let declared = documented["headers"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, spec) in &declared {
            let value = response.headers().get(name.as_str());
            if spec["required"] == true {
                assert!(value.is_some(), "required header {name} missing: {context}");
            }
            if let Some(value) = value {
                let text = value.to_str().unwrap_or_default();
                // Header values are text; integer-valued headers are checked
                // as the number they spell.
                let mut candidates = vec![Value::from(text)];
                if let Ok(n) = text.parse::<u64>() {
                    candidates.push(Value::from(n));
                }
                let validator = self.validator(&spec["schema"]);
                assert!(
                    candidates.iter().any(|c| validator.is_valid(c)),
                    "header {name}: {text:?} does not conform to {}: {context}",
                    spec["schema"]
                );
            }
        }
        for name in response.headers().keys() {
            if OWN_HEADERS.contains(&name.as_str()) {
                assert!(
                    declared
                        .keys()
                        .any(|d| d.eq_ignore_ascii_case(name.as_str())),
                    "header {name} is sent but not documented: {context}"
                );
            }
        }
        self.seen.lock().unwrap().insert((
            method.to_string(),
            path.to_string(),
            status,
            content_type,
        ));
        body
    }

    /// Every (method, path, status, content type) the document declares.
    fn documented(&self) -> BTreeSet<(String, String, String, String)> {
        let mut all = BTreeSet::new();
        for (path, operations) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    for content_type in response["content"].as_object().unwrap().keys() {
                        all.insert((
                            method.clone(),
                            path.clone(),
                            status.clone(),
                            content_type.clone(),
                        ));
                    }
                }
            }
        }
        all
    }
}

fn body_json(response: &Response<Body>) -> Value {
    let bytes: &[u8] = match response.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => b"",
    };
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn state(pairs: &[(&str, &str)]) -> AppState {
    let mut all = vec![
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
    ];
    all.extend_from_slice(pairs);
    AppState::new(config(&all)).expect("a valid test configuration")
}

/// A Redis URL on which nothing listens (a port just released).
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("redis://127.0.0.1:{port}/0")
}

/// A local listener that accepts connections and never answers (a hung
/// Redis), kept alive by the returned handle.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!(
        "redis://127.0.0.1:{}/0",
        listener.local_addr().unwrap().port()
    );
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

fn metric(metric_type: &str, value: f64) -> Value {
    json!({"timestamp": format_timestamp(chrono::Utc::now()), "value": value, "type": metric_type})
}

fn post(body: &str) -> EventBuilder {
    http_v2("POST", "/api/metrics").body(body)
}

fn summary(query: &str) -> Request {
    http_v2("GET", "/api/metrics/summary").query(query).build()
}

fn series(query: &str) -> Request {
    http_v2("GET", "/api/metrics/series").query(query).build()
}

/// A `no-cache` GET of `path`: what a cache hit would not count.
fn refresh(path: &str, query: &str) -> Request {
    http_v2("GET", path)
        .query(query)
        .header("cache-control", "no-cache")
        .build()
}

/// Every endpoint's happy and error paths, checked against the document, then
/// coverage of every documented response.
#[tokio::test]
async fn every_documented_response_is_produced_and_conforms() {
    let spec = Spec::new();
    let ingest_path = "/api/metrics";
    let summary_path = "/api/metrics/summary";

    // GET /health
    let up = state(&[]);
    let down = state(&[("REDIS_URL", &closed_port_url())]);
    let body = spec.check(
        "get",
        "/health",
        &health(&up, http_v2("GET", "/health").build()).await,
    );
    assert_eq!(body["status"], "ok");
    let body = spec.check(
        "get",
        "/health",
        &health(&down, http_v2("GET", "/health").build()).await,
    );
    assert_eq!(body["status"], "unavailable");
    let (hung_url, hung) = black_hole().await;
    let hung_state = state(&[
        ("REDIS_URL", &hung_url),
        ("REDIS_TIMEOUT_MS", "5000"),
        ("REQUEST_DEADLINE_MS", "200"),
    ]);
    let response = health(&hung_state, http_v2("GET", "/health").build()).await;
    assert_eq!(response.status(), 503);
    let body = spec.check("get", "/health", &response);
    assert_eq!(
        body["type"],
        "urn:analytics-api:problem:service-unavailable"
    );

    // POST /api/metrics: 201 single, batch, replay.
    let t = random_type("conformance");
    let single = metric(&t, 85.5).to_string();
    let response = ingest_metric(&up, post(&single).build()).await;
    let body = spec.check("post", ingest_path, &response);
    assert_eq!(
        (response.status().as_u16(), body["stored"].clone()),
        (201, json!(1))
    );
    let batch = json!([metric(&t, 1.0), metric(&t, 2.0)]).to_string();
    let body = spec.check(
        "post",
        ingest_path,
        &ingest_metric(&up, post(&batch).build()).await,
    );
    assert_eq!(body["stored"], 2);
    assert!(body.get("metric").is_none());
    let key = uuid::Uuid::new_v4().to_string();
    let keyed = || {
        post(&single)
            .header("Idempotency-Key", &format!("\"{key}\""))
            .build()
    };
    let first = ingest_metric(&up, keyed()).await;
    spec.check("post", ingest_path, &first);
    let replay = ingest_metric(&up, keyed()).await;
    spec.check("post", ingest_path, &replay);
    assert_eq!(header(&replay, "idempotent-replayed"), "true");
    assert_eq!(body_json(&replay), body_json(&first));

    // 400, 413, 422 (fields, batch indexes, reused key, bad key).
    spec.check(
        "post",
        ingest_path,
        &ingest_metric(&up, post("{\"timestamp\":").build()).await,
    );
    let small = state(&[("MAX_BODY_BYTES", "64")]);
    let big = json!([metric(&t, 1.0), metric(&t, 2.0), metric(&t, 3.0)]).to_string();
    let response = ingest_metric(&small, post(&big).build()).await;
    assert_eq!(response.status(), 413);
    spec.check("post", ingest_path, &response);
    let invalid = json!({"timestamp": "yesterday", "value": "85", "type": "a b"}).to_string();
    let body = spec.check(
        "post",
        ingest_path,
        &ingest_metric(&up, post(&invalid).build()).await,
    );
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(3));
    let bad_batch = json!([metric(&t, 1.0), {"value": 1}]).to_string();
    let body = spec.check(
        "post",
        ingest_path,
        &ingest_metric(&up, post(&bad_batch).build()).await,
    );
    assert_eq!(body["errors"][0]["index"], 1);
    let other = metric(&t, 99.0).to_string();
    let reused = post(&other)
        .header("Idempotency-Key", &format!("\"{key}\""))
        .build();
    let body = spec.check("post", ingest_path, &ingest_metric(&up, reused).await);
    assert_eq!(
        body["type"],
        "urn:analytics-api:problem:idempotency-key-reused"
    );
    let long_key = "k".repeat(300);
    let bad_key = post(&single).header("Idempotency-Key", &long_key).build();
    let response = ingest_metric(&up, bad_key).await;
    assert_eq!(response.status(), 422);
    spec.check("post", ingest_path, &response);

    // 429 after the quota, with Retry-After and the RateLimit fields.
    let limited = state(&[("RATE_LIMIT_REQUESTS", "1")]);
    spec.check(
        "post",
        ingest_path,
        &ingest_metric(&limited, post(&single).build()).await,
    );
    let response = ingest_metric(&limited, post(&single).build()).await;
    assert_eq!(response.status(), 429);
    spec.check("post", ingest_path, &response);

    // 409 past MAX_METRIC_TYPES; 429 past the client's new types per hour.
    let capped = state(&[
        ("MAX_METRIC_TYPES", "1"),
        ("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "1"),
    ]);
    let response = ingest_metric(&capped, post(&single).build()).await;
    assert_eq!(response.status(), 201);
    let new_type = metric(&random_type("conformance"), 1.0).to_string();
    let response = ingest_metric(&capped, post(&new_type).build()).await;
    assert_eq!(response.status(), 409);
    let body = spec.check("post", ingest_path, &response);
    assert_eq!(body["type"], "urn:analytics-api:problem:metric-type-limit");
    let budgeted = state(&[("MAX_NEW_METRIC_TYPES_PER_CLIENT_PER_HOUR", "1")]);
    let response = ingest_metric(&budgeted, post(&single).build()).await;
    assert_eq!(response.status(), 201);
    let response = ingest_metric(&budgeted, post(&new_type).build()).await;
    assert_eq!(response.status(), 429);
    let body = spec.check("post", ingest_path, &response);
    assert_eq!(
        body["type"],
        "urn:analytics-api:problem:new-metric-types-rate-limited"
    );

    // 401 with API keys configured; a known key passes.
    let digest = hex(Sha256::digest(b"conformance-key"));
    let keyed_state = state(&[("API_KEYS_SHA256", &digest)]);
    let response = ingest_metric(&keyed_state, post(&single).build()).await;
    assert_eq!(response.status(), 401);
    spec.check("post", ingest_path, &response);
    let with_key = post(&single).header("x-api-key", "conformance-key").build();
    let response = ingest_metric(&keyed_state, with_key).await;
    assert_eq!(response.status(), 201);
    spec.check("post", ingest_path, &response);

    // 400 for a client that cannot be identified (no source address).
    let response = ingest_metric(&up, post(&single).no_source_ip().build()).await;
    assert_eq!(response.status(), 400);
    spec.check("post", ingest_path, &response);

    // 503 when Redis is unreachable.
    let response = ingest_metric(&down, post(&single).build()).await;
    assert_eq!(response.status(), 503);
    spec.check("post", ingest_path, &response);

    // GET /api/metrics/summary: MISS, HIT with Age, empty window with nulls,
    // external fallback.
    let query = format!("type={t}&period=hourly");
    let response = metrics_summary(&up, summary(&query)).await;
    let body = spec.check("get", summary_path, &response);
    assert_eq!(header(&response, "x-cache"), "MISS");
    assert!(body["count"].as_u64().unwrap() >= 1, "{body}");
    let response = metrics_summary(&up, summary(&query)).await;
    spec.check("get", summary_path, &response);
    assert_eq!(header(&response, "x-cache"), "HIT");
    assert!(!header(&response, "age").is_empty());
    let failing = state(&[("EXTERNAL_SERVICE_FAILURE_RATE", "1")]);
    let empty = format!("type={}&period=daily", random_type("empty"));
    let body = spec.check(
        "get",
        summary_path,
        &metrics_summary(&failing, summary(&empty)).await,
    );
    assert_eq!(body["count"], 0);
    assert_eq!(body["average_value"], Value::Null);
    assert_eq!(body["external_data"]["status"], "fallback");
    let from = format_timestamp(chrono::Utc::now() - chrono::Duration::hours(2));
    let to = format_timestamp(chrono::Utc::now());
    let custom = format!("type={t}&from={from}&to={to}");
    let body = spec.check(
        "get",
        summary_path,
        &metrics_summary(&up, summary(&custom)).await,
    );
    assert_eq!(body["period"], "custom");

    // 400, 401, 422, 429, 503.
    let anonymous = http_v2("GET", summary_path)
        .query(&query)
        .no_source_ip()
        .build();
    let response = metrics_summary(&up, anonymous).await;
    assert_eq!(response.status(), 400);
    spec.check("get", summary_path, &response);
    let limited = state(&[("SUMMARY_RATE_LIMIT_REQUESTS", "1")]);
    spec.check(
        "get",
        summary_path,
        &metrics_summary(&limited, summary(&query)).await,
    );
    let response = metrics_summary(&limited, refresh(summary_path, &query)).await;
    assert_eq!(response.status(), 429);
    spec.check("get", summary_path, &response);

    // Tags: a tagged ingest, a filtered and a grouped summary and series,
    // a tag beyond its cap.
    let tagged = json!({"timestamp": format_timestamp(chrono::Utc::now()), "value": 3.5,
        "type": t, "tags": {"host": "web-7", "region": "eu-west-1"}});
    let response = ingest_metric(&up, post(&tagged.to_string()).build()).await;
    assert_eq!(response.status(), 201);
    spec.check("post", ingest_path, &response);
    for tags in [
        "tag.host=web-7",
        "tag.host=web-7&tag.region=eu-west-1",
        "group_by=region",
    ] {
        let response =
            metrics_summary(&up, summary(&format!("type={t}&period=hourly&{tags}"))).await;
        let body = spec.check("get", summary_path, &response);
        assert_eq!(response.status(), 200, "{body}");
        let series_query = format!("type={t}&period=hourly&step=5m&{tags}");
        let response = metrics_series(&up, series(&series_query)).await;
        spec.check("get", "/api/metrics/series", &response);
    }
    let capped = state(&[("MAX_TAG_VALUES_PER_KEY", "1")]);
    let host = |host: &str| {
        json!({"timestamp": format_timestamp(chrono::Utc::now()), "value": 1.0,
            "type": t, "tags": {"host": host}})
        .to_string()
    };
    let response = ingest_metric(&capped, post(&host("web-8")).build()).await;
    assert_eq!(response.status(), 201);
    let response = ingest_metric(&capped, post(&host("web-9")).build()).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        body_json(&response)["type"],
        "urn:analytics-api:problem:tag-limit-exceeded"
    );
    spec.check("post", ingest_path, &response);

    let response = metrics_summary(&keyed_state, summary(&query)).await;
    assert_eq!(response.status(), 401);
    spec.check("get", summary_path, &response);
    let response = metrics_summary(&up, summary("type=cpu&period=yearly")).await;
    assert_eq!(response.status(), 422);
    spec.check("get", summary_path, &response);
    let response = metrics_summary(&up, summary("")).await;
    assert_eq!(response.status(), 422);
    spec.check("get", summary_path, &response);
    let response = metrics_summary(&down, summary(&query)).await;
    assert_eq!(response.status(), 503);
    spec.check("get", summary_path, &response);

    // GET /api/metrics/series: MISS, HIT with Age, 400, 401, 422, 429, 503.
    let series_path = "/api/metrics/series";
    let query = format!("type={t}&period=hourly&step=5m");
    let response = metrics_series(&up, series(&query)).await;
    let body = spec.check("get", series_path, &response);
    assert_eq!(header(&response, "x-cache"), "MISS");
    assert!(
        body["points"].as_array().is_some_and(|p| p.len() >= 12),
        "{body}"
    );
    let response = metrics_series(&up, series(&query)).await;
    spec.check("get", series_path, &response);
    assert_eq!(header(&response, "x-cache"), "HIT");
    let anonymous = http_v2("GET", series_path)
        .query(&query)
        .no_source_ip()
        .build();
    let response = metrics_series(&up, anonymous).await;
    assert_eq!(response.status(), 400);
    spec.check("get", series_path, &response);
    let response = metrics_series(&keyed_state, series(&query)).await;
    assert_eq!(response.status(), 401);
    spec.check("get", series_path, &response);
    let response = metrics_series(&up, series("type=cpu&period=monthly&step=1m")).await;
    assert_eq!(response.status(), 422);
    spec.check("get", series_path, &response);
    let limited = state(&[("SERIES_RATE_LIMIT_REQUESTS", "1")]);
    metrics_series(&limited, series(&query)).await;
    let response = metrics_series(&limited, refresh(series_path, &query)).await;
    assert_eq!(response.status(), 429);
    spec.check("get", series_path, &response);
    let response = metrics_series(&down, series(&query)).await;
    assert_eq!(response.status(), 503);
    spec.check("get", series_path, &response);

    // 500 when Redis refuses the service for good (a user that may not run
    // scripts), 507 when it is out of memory: private servers set up so.
    let refusing_server = PrivateRedis::start();
    let mut admin = redis::Client::open(refusing_server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg("on")
        .arg(">limited-pw")
        .arg("~*")
        .arg("+@all")
        .arg("-@scripting")
        .query_async(&mut admin)
        .await
        .unwrap();
    let limited_url = format!(
        "redis://limited:limited-pw@127.0.0.1:{}/0",
        refusing_server.port()
    );
    let refusing = state(&[("REDIS_URL", &limited_url), ("REDIS_MODE", "standalone")]);
    let response = ingest_metric(&refusing, post(&single).build()).await;
    assert_eq!(response.status(), 500);
    spec.check("post", ingest_path, &response);
    let query = format!("type={t}&period=hourly");
    let response = metrics_summary(&refusing, summary(&query)).await;
    assert_eq!(response.status(), 500);
    spec.check("get", summary_path, &response);
    let response = metrics_series(&refusing, series(&format!("{query}&step=5m"))).await;
    assert_eq!(response.status(), 500);
    spec.check("get", series_path, &response);
    let full_server =
        PrivateRedis::start_with(&["--maxmemory", "1", "--maxmemory-policy", "noeviction"]);
    let full = state(&[
        ("REDIS_URL", &full_server.url()),
        ("REDIS_MODE", "standalone"),
    ]);
    let response = ingest_metric(&full, post(&single).build()).await;
    assert_eq!(response.status(), 507);
    spec.check("post", ingest_path, &response);
    let response = metrics_summary(&full, summary(&query)).await;
    assert_eq!(response.status(), 200);
    spec.check("get", summary_path, &response);
    assert_eq!(header(&response, "cache-control"), "max-age=0");

    hung.abort();
    let missing: Vec<_> = spec
        .documented()
        .difference(&spec.seen.lock().unwrap())
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented responses no test produced: {missing:#?}"
    );
}

/// Every example in the document conforms to the schema it illustrates:
/// response and request body examples, parameter examples and the examples
/// of each component schema.
#[test]
fn documented_examples_conform() {
    let spec = Spec::new();
    let mut checked = 0;
    let mut check = |schema: &Value, example: &Value, context: &str| {
        let errors = spec.errors(schema, example);
        assert!(errors.is_empty(), "{context}: {example} → {errors:#?}");
        checked += 1;
    };
    let media_examples = |media: &Value| -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        if !media["example"].is_null() {
            all.push(media["example"].clone());
        }
        if let Some(named) = media["examples"].as_object() {
            all.extend(named.values().map(|e| e["value"].clone()));
        }
        all
    };
    let doc = spec.doc.clone();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for param in operation["parameters"].as_array().into_iter().flatten() {
                if !param["example"].is_null() {
                    let context = format!("{method} {path} parameter {}", param["name"]);
                    check(&param["schema"], &param["example"], &context);
                }
            }
            for (content_type, media) in operation["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                for example in media_examples(media) {
                    check(
                        &media["schema"],
                        &example,
                        &format!("{method} {path} request {content_type}"),
                    );
                }
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                for (content_type, media) in response["content"].as_object().unwrap() {
                    let examples = media_examples(media);
                    assert!(
                        !examples.is_empty(),
                        "{method} {path} {status} {content_type} has no example"
                    );
                    for example in examples {
                        check(
                            &media["schema"],
                            &example,
                            &format!("{method} {path} {status} {content_type}"),
                        );
                    }
                }
            }
        }
    }
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        for example in schema["examples"].as_array().into_iter().flatten() {
            check(&reference, example, &format!("schema {name}"));
        }
    }
    assert!(checked > 20, "only {checked} examples checked");
}

/// The validator is strict enough to catch drift: an undocumented field, a
/// wrong type or a missing required field is rejected.
#[test]
fn the_schemas_reject_drift() {
    let spec = Spec::new();
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let ok = json!({"type": "urn:analytics-api:problem:not-found", "title": "Not Found", "status": 404, "detail": "x"});
    assert!(spec.errors(&problem, &ok).is_empty());
    let mut extra = ok.clone();
    extra["instance"] = json!("/x");
    assert!(!spec.errors(&problem, &extra).is_empty());
    let summary = json!({"$ref": "#/components/schemas/Summary"});
    let bad_time = json!({
        "type": "t", "period": "hourly",
        "window": {"from": "yesterday", "to": "2026-02-18T12:00:00Z"},
        "count": 0, "average_value": null, "min_value": null, "max_value": null, "sum": 0.0,
        "external_data": {"status": "fallback", "reason": "timeout"}
    });
    assert!(
        !spec.errors(&summary, &bad_time).is_empty(),
        "formats are validated"
    );
    let created = json!({"$ref": "#/components/schemas/Created"});
    assert!(!spec.errors(&created, &json!({"stored": 1})).is_empty());
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
