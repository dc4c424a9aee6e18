//! Percentiles in summaries and `GET /api/metrics/series`, in-process:
//! synthetic API Gateway events through the real handlers against a real
//! Redis, each test under its own key prefix.

use analytics_tests::{body_json, config, http_v2, random_type};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use lambda_http::{Body, Response};
use serde_json::{json, Value};
use shared::handlers::{ingest_metric, metrics_series, metrics_summary};
use shared::metric::format_timestamp;
use shared::store::buckets::{BucketRef, Granularity};
use shared::AppState;
use synthetic_events::next_client_ip;

fn state(pairs: &[(&str, &str)]) -> AppState {
    let mut all = vec![
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
        ("SERIES_RATE_LIMIT_REQUESTS", "1000000"),
    ];
    all.extend_from_slice(pairs);
    AppState::new(config(&all)).unwrap()
}

async fn post(state: &AppState, body: &Value) -> u16 {
    let response = ingest_metric(state, http_v2("POST", "/api/metrics").json(body).build()).await;
    response.status().as_u16()
}

async fn get(state: &AppState, path: &str, query: &str) -> (u16, Value, Response<Body>) {
    let request = http_v2("GET", path)
        .query(query)
        .source_ip(&next_client_ip())
        .build();
    let response = if path.ends_with("series") {
        metrics_series(state, request).await
    } else {
        metrics_summary(state, request).await
    };
    (response.status().as_u16(), body_json(&response), response)
}

fn metric(t: DateTime<Utc>, value: f64, metric_type: &str) -> Value {
    json!({"timestamp": format_timestamp(t), "value": value, "type": metric_type})
}

fn within_alpha(got: &Value, exact: f64) -> bool {
    got.as_f64()
        .is_some_and(|v| (v - exact).abs() <= 0.01 * exact.abs() * (1.0 + 1e-9))
}

#[tokio::test]
async fn summaries_report_default_and_asked_percentiles() {
    let state = state(&[]);
    let t = random_type("pct");
    let now = Utc::now();
    let values: Vec<f64> = (1..=200).map(f64::from).collect();
    let batch: Vec<Value> = values
        .iter()
        .map(|v| metric(now - TimeDelta::seconds(*v as i64 * 7), *v, &t))
        .collect();
    assert_eq!(post(&state, &json!(batch)).await, 201);
    let (status, body, _) = get(
        &state,
        "/api/metrics/summary",
        &format!("type={t}&period=daily"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let percentiles = body["percentiles"].as_object().unwrap();
    assert_eq!(
        percentiles.keys().collect::<Vec<_>>(),
        ["p50", "p90", "p95", "p99"]
    );
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
        let exact = values[(q * 199.0_f64).floor() as usize];
        assert!(within_alpha(&percentiles[name], exact), "{name}: {body}");
    }
    assert!(body.get("note").is_none());
    let (status, body, _) = get(
        &state,
        "/api/metrics/summary",
        &format!("type={t}&period=daily&quantiles=0.5,0.999"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let percentiles = body["percentiles"].as_object().unwrap();
    assert_eq!(percentiles.keys().collect::<Vec<_>>(), ["p50", "p99.9"]);
    assert!(within_alpha(&percentiles["p99.9"], 199.0), "{body}");
    // An empty window: nulls.
    let (_, body, _) = get(
        &state,
        "/api/metrics/summary",
        &format!("type={}&period=daily", random_type("none")),
    )
    .await;
    assert!(body["percentiles"]["p50"].is_null(), "{body}");
    for bad in [
        "0",
        "1",
        "0.5,1.5",
        "x",
        "",
        &(1..=11)
            .map(|i| format!("0.{i:02}"))
            .collect::<Vec<_>>()
            .join(","),
    ] {
        let (status, body, _) = get(
            &state,
            "/api/metrics/summary",
            &format!("type={t}&period=daily&quantiles={bad}"),
        )
        .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "quantiles", "{body}");
    }
}

#[tokio::test]
async fn a_window_holding_an_old_bucket_has_counts_but_null_percentiles_and_a_note() {
    let state = state(&[]);
    let t = random_type("old");
    let at = Utc::now() - TimeDelta::minutes(10);
    // In its minute bucket and its hour bucket, as an ingest stores it: the
    // hourly window reads the hour bucket when it is one whole hour (a
    // request in an hour's last minute), else minutes.
    for (granularity, name) in [(Granularity::Minute, "m"), (Granularity::Hour, "h")] {
        let bucket = BucketRef::containing(granularity, at.timestamp());
        let key = state
            .keys
            .metric_container(&t, name, bucket.container_start());
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(bucket.start)
            .arg("2 30.5 10 20.5")
            .query_async(&mut state.redis.clone())
            .await
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(&key)
            .arg(3_600)
            .query_async(&mut state.redis.clone())
            .await
            .unwrap();
    }
    let (status, body, _) = get(
        &state,
        "/api/metrics/summary",
        &format!("type={t}&period=hourly"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["count"].as_u64(), body["sum"].as_f64()),
        (Some(2), Some(30.5))
    );
    assert!(body["percentiles"]["p50"].is_null(), "{body}");
    assert!(
        body["note"]
            .as_str()
            .is_some_and(|n| n.contains("before percentiles")),
        "{body}"
    );
}

#[tokio::test]
async fn a_series_has_one_aligned_point_per_step_and_empty_steps() {
    let state = state(&[]);
    let t = random_type("series");
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::hours(3);
    // Two points in the first 5 minutes of the hour, one in the third slot.
    for (offset, value) in [(30, 10.0), (200, 20.5), (700, 5.0)] {
        assert_eq!(
            post(
                &state,
                &metric(hour + TimeDelta::seconds(offset), value, &t)
            )
            .await,
            201
        );
    }
    let query = format!(
        "type={t}&step=5m&from={}&to={}",
        format_timestamp(hour + TimeDelta::seconds(1)),
        format_timestamp(hour + TimeDelta::minutes(19))
    );
    let (status, body, response) = get(&state, "/api/metrics/series", &query).await;
    assert_eq!(status, 200, "{body}");
    assert!(response.headers().contains_key("ratelimit"));
    assert_eq!(response.headers()["x-cache"], "MISS");
    assert_eq!(body["step"], "5m");
    assert_eq!(body["step_seconds"], 300);
    assert_eq!(body["window"]["from"], format_timestamp(hour));
    assert_eq!(
        body["window"]["to"],
        format_timestamp(hour + TimeDelta::minutes(20))
    );
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "{body}");
    for (i, point) in points.iter().enumerate() {
        assert_eq!(
            point["t"],
            format_timestamp(hour + TimeDelta::minutes(5 * i as i64))
        );
    }
    assert_eq!(points[0]["count"], 2);
    assert_eq!(points[0]["sum"], 30.5);
    assert_eq!(points[0]["min_value"], 10.0);
    assert_eq!(points[0]["max_value"], 20.5);
    assert!(
        within_alpha(&points[0]["percentiles"]["p50"], 10.0),
        "{body}"
    );
    assert_eq!(points[1]["count"], 0);
    assert_eq!(points[1]["sum"], 0.0);
    for field in ["average_value", "min_value", "max_value"] {
        assert!(points[1][field].is_null(), "{body}");
    }
    assert!(points[1]["percentiles"]["p99"].is_null());
    assert_eq!(points[2]["count"], 1);
    assert_eq!(points[2]["average_value"], 5.0);
    // Cached: the same query is a hit.
    let (_, again, response) = get(&state, "/api/metrics/series", &query).await;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(again, body);
    // One set of quantiles in another order is the same query: a hit.
    let asked = |order: &str| format!("{query}&quantiles={order}");
    let (_, first, response) = get(&state, "/api/metrics/series", &asked("0.9,0.5")).await;
    assert_eq!(response.headers()["x-cache"], "MISS");
    let (_, second, response) = get(&state, "/api/metrics/series", &asked("0.5,0.9")).await;
    assert_eq!(response.headers()["x-cache"], "HIT", "{second}");
    assert_eq!(first, second);
    let (_, _, response) = get(&state, "/api/metrics/series", &asked("0.99,0.9,0.95,0.5")).await;
    assert_eq!(response.headers()["x-cache"], "HIT", "the default set");
    // A trailing period at 1h: the window ends at the end of the current hour.
    let (status, body, _) = get(
        &state,
        "/api/metrics/series",
        &format!("type={t}&period=daily&step=1h"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let points = body["points"].as_array().unwrap();
    assert!((24..=25).contains(&points.len()), "{}", points.len());
    let total: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3);
}

#[tokio::test]
async fn bad_series_queries_are_422_saying_how_to_fix_them() {
    let state = state(&[]);
    for (query, field, hint) in [
        ("type=cpu&period=daily", "step", "is required"),
        ("type=cpu&period=daily&step=90", "step", "multiple of 60"),
        (
            "type=cpu&period=daily&step=1w",
            "step",
            "1m, 5m, 15m, 1h, 6h, 1d",
        ),
        ("type=cpu&period=monthly&step=1m", "step", "at least 1h"),
        ("type=cpu&period=monthly&step=3540", "step", "buckets"),
        ("type=cpu&step=1h", "period", "required"),
        (
            "type=cpu&period=daily&step=1h&quantiles=2",
            "quantiles",
            "between 0 and 1",
        ),
    ] {
        let (status, body, _) = get(&state, "/api/metrics/series", query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(hint),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn series_are_rate_limited_apart_from_ingests() {
    let state = state(&[
        ("SERIES_RATE_LIMIT_REQUESTS", "2"),
        ("RATE_LIMIT_REQUESTS", "1"),
    ]);
    let t = random_type("limited");
    let client = next_client_ip();
    let series = || {
        http_v2("GET", "/api/metrics/series")
            .query(&format!("type={t}&period=hourly&step=5m"))
            .source_ip(&client)
            .build()
    };
    // The first computes (counted); the hits that follow cost one GET and
    // are not counted; a no-cache refresh computes again (counted).
    assert_eq!(metrics_series(&state, series()).await.status(), 200);
    for _ in 0..3 {
        let hit = metrics_series(&state, series()).await;
        assert_eq!(hit.status(), 200);
        assert_eq!(hit.headers()["x-cache"], "HIT");
    }
    let refresh = || {
        http_v2("GET", "/api/metrics/series")
            .query(&format!("type={t}&period=hourly&step=5m"))
            .header("cache-control", "no-cache")
            .source_ip(&client)
            .build()
    };
    let second = metrics_series(&state, refresh()).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["ratelimit"], "\"series\";r=0;t=60");
    let refused = metrics_series(&state, refresh()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["ratelimit-policy"], "\"series\";q=2;w=60");
    // The client's ingest budget is untouched.
    let ingest = http_v2("POST", "/api/metrics")
        .json(&metric(Utc::now(), 1.0, &t))
        .source_ip(&client)
        .build();
    assert_eq!(ingest_metric(&state, ingest).await.status(), 201);
}
