//! The metrics pipeline in-process: synthetic API Gateway events through the
//! real handlers against a real Redis, each test under its own key prefix.

use std::time::{Duration, Instant};

use analytics_tests::{
    body_json, config, config_with_prefix, http_v2, random_prefix, random_type, rest_v1,
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use lambda_http::{Body, Response};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shared::handlers::{health, ingest_metric, metrics_summary};
use shared::metric::format_timestamp;
use shared::store::buckets::{BucketRef, Granularity};
use shared::AppState;

fn state(pairs: &[(&str, &str)]) -> AppState {
    // Summaries here check aggregates, not the external source.
    let mut all = vec![
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
    ];
    all.extend_from_slice(pairs);
    AppState::new(config(&all)).unwrap()
}

async fn post(state: &AppState, body: &Value) -> Response<Body> {
    ingest_metric(state, http_v2("POST", "/api/metrics").json(body).build()).await
}

async fn summary(state: &AppState, query: &str) -> (u16, Value) {
    let response = metrics_summary(
        state,
        http_v2("GET", "/api/metrics/summary").query(query).build(),
    )
    .await;
    (response.status().as_u16(), body_json(&response))
}

fn metric(t: DateTime<Utc>, value: f64, metric_type: &str) -> Value {
    json!({"timestamp": format_timestamp(t), "value": value, "type": metric_type})
}

#[tokio::test]
async fn health_is_ok_when_redis_answers() {
    let state = state(&[]);
    let response = health(&state, http_v2("GET", "/health").build()).await;
    assert_eq!(response.status(), 200);
    let body = body_json(&response);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["redis"], "healthy");
}

#[tokio::test]
async fn a_stored_metric_is_echoed_normalised_with_a_request_id() {
    let state = state(&[]);
    let t = random_type("cpu");
    let now = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let local = now.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap());
    let response = post(
        &state,
        &json!({"timestamp": local.to_rfc3339(), "value": 85.5, "type": t, "ignored": {"x": 1}}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let body = body_json(&response);
    assert_eq!(body["stored"], 1);
    assert_eq!(body["metric"]["timestamp"], format_timestamp(now));
    assert_eq!(body["metric"]["value"], 85.5);
    assert_eq!(body["metric"]["type"], t.as_str());
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
}

#[tokio::test]
async fn every_period_counts_the_points_inside_it() {
    let state = state(&[]);
    let t = random_type("periods");
    let now = Utc::now();
    let points = [
        (now - TimeDelta::seconds(30), 10.0),
        (now - TimeDelta::hours(2), 20.0),
        (now - TimeDelta::days(2), 30.0),
        (now - TimeDelta::days(10), 40.5),
    ];
    for (at, value) in points {
        assert_eq!(post(&state, &metric(at, value, &t)).await.status(), 201);
    }
    for (period, count, sum, min, max) in [
        ("hourly", 1, 10.0, 10.0, 10.0),
        ("daily", 2, 30.0, 10.0, 20.0),
        ("weekly", 3, 60.0, 10.0, 30.0),
        ("monthly", 4, 100.5, 10.0, 40.5),
    ] {
        let (status, body) = summary(&state, &format!("type={t}&period={period}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["type"], t.as_str());
        assert_eq!(body["period"], period);
        assert_eq!(body["count"], count, "{period}: {body}");
        assert_eq!(body["sum"], sum, "{period}");
        assert_eq!(body["min_value"], min, "{period}");
        assert_eq!(body["max_value"], max, "{period}");
        assert_eq!(body["average_value"], sum / count as f64, "{period}");
        assert_eq!(body["external_data"]["status"], "success");
        let from = DateTime::parse_from_rfc3339(body["window"]["from"].as_str().unwrap()).unwrap();
        let to = DateTime::parse_from_rfc3339(body["window"]["to"].as_str().unwrap()).unwrap();
        assert!(
            to > now && to.with_timezone(&Utc) - now <= TimeDelta::minutes(1),
            "{body}"
        );
        assert_eq!(to.timestamp() % 60, 0);
        assert!(from < to);
    }
}

#[tokio::test]
async fn a_type_without_data_has_count_zero_and_nulls() {
    let state = state(&[]);
    let (status, body) = summary(
        &state,
        &format!("type={}&period=daily", random_type("empty")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 0);
    assert_eq!(body["sum"], 0.0);
    assert!(body["average_value"].is_null());
    assert!(body["min_value"].is_null());
    assert!(body["max_value"].is_null());
}

#[tokio::test]
async fn bad_queries_are_422_problems_naming_what_is_wrong() {
    let state = state(&[]);
    let from = format_timestamp(Utc::now() - chrono::Duration::hours(2));
    let to = format_timestamp(Utc::now() - chrono::Duration::hours(1));
    let both = format!("type=cpu&period=daily&from={from}&to={to}");
    let only_from = format!("type=cpu&from={from}");
    // (query, the fields listed, whether the allowed periods are named)
    for (query, fields, names_periods) in [
        ("", &["type", "period"][..], true),
        ("type=cpu", &["period"], true),
        ("type=cpu&period=yearly", &["period"], true),
        ("type=a%20b&period=daily", &["type"], false),
        ("type=cpu&period=daily&period=hourly", &["period"], false),
        (both.as_str(), &["period"], false),
        (only_from.as_str(), &["to"], false),
    ] {
        let (status, body) = summary(&state, query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["status"], 422);
        let listed: Vec<&str> = body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(listed, fields, "{query}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert_eq!(
            detail.contains("hourly, daily, weekly, monthly"),
            names_periods,
            "{query}: {detail}"
        );
        for field in fields {
            assert!(detail.contains(field), "{query}: {detail}");
        }
    }
}

#[tokio::test]
async fn invalid_metrics_are_rejected_with_the_right_status() {
    let state = state(&[("MAX_BODY_BYTES", "1024")]);
    let now = format_timestamp(Utc::now());
    let cases: Vec<(String, u16)> = vec![
        ("{not json".into(), 400),
        ("[".into(), 400),
        (
            json!({"timestamp": now, "value": "85", "type": "cpu"}).to_string(),
            422,
        ),
        (
            json!({"timestamp": now, "value": 1, "type": "a b"}).to_string(),
            422,
        ),
        (
            json!({"timestamp": "2026-02-18T12:00:00", "value": 1, "type": "cpu"}).to_string(),
            422,
        ),
        (
            format!(r#"{{"timestamp":"{now}","value":1e309,"type":"cpu"}}"#),
            422,
        ),
        ("x".repeat(2000), 413),
    ];
    for (body, expected) in cases {
        let response =
            ingest_metric(&state, http_v2("POST", "/api/metrics").body(&body).build()).await;
        assert_eq!(response.status().as_u16(), expected, "{body:.80}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem = body_json(&response);
        assert_eq!(problem["status"], expected);
        for field in ["type", "title", "detail"] {
            assert!(problem[field].is_string(), "{problem}");
        }
        let text = problem.to_string();
        assert!(!text.contains("NaN") && !text.contains("Infinity"));
    }
}

#[tokio::test]
async fn rest_v1_events_and_base64_bodies_work_too() {
    let state = state(&[]);
    let t = random_type("v1");
    let body = metric(Utc::now(), 1.0, &t).to_string();
    let response = ingest_metric(&state, rest_v1("POST", "/api/metrics").body(&body).build()).await;
    assert_eq!(response.status(), 201);
    let response = ingest_metric(
        &state,
        http_v2("POST", "/api/metrics")
            .base64_body(body.as_bytes())
            .build(),
    )
    .await;
    assert_eq!(response.status(), 201);
    let response = metrics_summary(
        &state,
        rest_v1("GET", "/api/metrics/summary")
            .query(&format!("period=hourly&type={t}"))
            .build(),
    )
    .await;
    assert_eq!(body_json(&response)["count"], 2);
}

/// Late and out-of-order points land in their own buckets, and every summary
/// equals a brute-force computation over the raw points.
#[tokio::test]
async fn summaries_equal_brute_force_on_random_data() {
    let state = state(&[]);
    let t = random_type("random");
    let now = Utc::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let points: Vec<(DateTime<Utc>, f64)> = (0..600)
        .map(|_| {
            let age = TimeDelta::seconds(rng.random_range(0..31 * 86_400));
            (now - age, rng.random_range(-1000.0..1000.0))
        })
        .collect();
    // Sent in random order, in batches, so late points arrive after newer ones.
    for chunk in points.chunks(50) {
        let batch: Vec<Value> = chunk.iter().map(|(at, v)| metric(*at, *v, &t)).collect();
        let response = post(&state, &Value::Array(batch)).await;
        assert_eq!(response.status(), 201, "{}", body_json(&response));
        assert_eq!(body_json(&response)["stored"], chunk.len());
    }
    let mut queries: Vec<String> = ["hourly", "daily", "weekly", "monthly"]
        .iter()
        .map(|p| format!("type={t}&period={p}"))
        .collect();
    for _ in 0..25 {
        let from = now - TimeDelta::seconds(rng.random_range(60..32 * 86_400));
        let to = (from + TimeDelta::seconds(rng.random_range(1..20 * 86_400))).min(now);
        queries.push(format!(
            "type={t}&from={}&to={}",
            format_timestamp(from).replace('+', "%2B"),
            format_timestamp(to).replace('+', "%2B")
        ));
    }
    for query in queries {
        let (status, body) = summary(&state, &query).await;
        assert_eq!(status, 200, "{query}: {body}");
        let from = DateTime::parse_from_rfc3339(body["window"]["from"].as_str().unwrap()).unwrap();
        let to = DateTime::parse_from_rfc3339(body["window"]["to"].as_str().unwrap()).unwrap();
        let inside: Vec<f64> = points
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(body["count"], inside.len(), "{query}");
        if inside.is_empty() {
            assert!(body["average_value"].is_null());
            continue;
        }
        let sum: f64 = inside.iter().sum();
        let min = inside.iter().copied().fold(f64::INFINITY, f64::min);
        let max = inside.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(
            close(body["sum"].as_f64().unwrap(), sum),
            "{query}: {body} vs {sum}"
        );
        assert!(
            close(
                body["average_value"].as_f64().unwrap(),
                sum / inside.len() as f64
            ),
            "{query}"
        );
        assert_eq!(body["min_value"].as_f64().unwrap(), min, "{query}");
        assert_eq!(body["max_value"].as_f64().unwrap(), max, "{query}");
    }
}

/// 64 concurrent ingests spread over 4 independent handler states (4 Lambda
/// instances, each with its own connection) are all counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ingests_from_several_instances_are_all_counted() {
    let prefix = random_prefix();
    let states: Vec<AppState> = (0..4)
        .map(|_| {
            AppState::new(config_with_prefix(
                &prefix,
                &[
                    ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
                    ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
                    ("RATE_LIMIT_REQUESTS", "1000000"),
                    ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
                ],
            ))
            .unwrap()
        })
        .collect();
    let t = random_type("concurrent");
    let now = Utc::now();
    let results = futures::future::join_all((0..64).map(|i| {
        let state = &states[i % 4];
        let body = metric(now, i as f64 + 0.5, &t);
        async move { post(state, &body).await.status().as_u16() }
    }))
    .await;
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    let (_, body) = summary(&states[0], &format!("type={t}&period=hourly")).await;
    assert_eq!(body["count"], 64);
    assert_eq!(body["sum"], (0..64).map(|i| i as f64 + 0.5).sum::<f64>());
    assert_eq!(body["min_value"], 0.5);
    assert_eq!(body["max_value"], 63.5);
}

/// Every key the pipeline writes has a TTL.
#[tokio::test]
async fn every_metric_key_expires() {
    let cfg = config(&[("METRIC_RETENTION_DAYS", "2")]);
    let prefix = cfg.redis.key_prefix.clone();
    let state = AppState::new(cfg).unwrap();
    let t = random_type("ttl");
    let now = Utc::now();
    assert_eq!(post(&state, &metric(now, 1.0, &t)).await.status(), 201);
    let mut conn = analytics_tests::redis_connection().await;
    let keys = Granularity::ALL.map(|g| {
        let bucket = BucketRef::containing(g, now.timestamp());
        format!("{prefix}:{{{t}}}:{}", bucket.container_suffix())
    });
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // container end + retention (2 days) + 1 day slack, at most 32 + 3 days.
        assert!(ttl > 2 * 86_400 && ttl <= 35 * 86_400, "{key}: {ttl}");
    }
}

/// With nothing listening on the Redis port, every endpoint answers 503 with
/// `Retry-After` quickly — including on a cold start — and recovers as soon
/// as Redis is there, without a new instance.
#[tokio::test]
async fn redis_down_is_a_fast_503_and_a_warm_instance_recovers() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let state = state(&[
        ("REDIS_URL", &url),
        ("REDIS_MODE", "standalone"),
        ("REDIS_TIMEOUT_MS", "500"),
    ]);
    let t = random_type("down");
    let body = metric(Utc::now(), 1.0, &t);
    let query = format!("type={t}&period=hourly");
    for _ in 0..2 {
        let started = Instant::now();
        let responses = [
            health(&state, http_v2("GET", "/health").build()).await,
            post(&state, &body).await,
            metrics_summary(
                &state,
                http_v2("GET", "/api/metrics/summary").query(&query).build(),
            )
            .await,
        ];
        for response in &responses {
            assert_eq!(response.status(), 503, "{}", body_json(response));
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry >= 1);
        }
        assert_eq!(body_json(&responses[0])["redis"], "unhealthy");
        assert_eq!(body_json(&responses[1])["status"], 503);
        // A bound, not a benchmark: no request waits for the 3 s deadline.
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }

    let dir = std::env::temp_dir().join(format!("redis-recover-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if health(&state, http_v2("GET", "/health").build())
            .await
            .status()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingest_status = post(&state, &body).await.status();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(recovered, "the warm instance did not reconnect");
    assert_eq!(ingest_status, 201);
}
