//! Tags on metrics, in-process against a real Redis: filtered and grouped
//! summaries and series compared with a brute-force computation over the
//! same random tagged data, bad tags, the caps on tag values and
//! combinations (with real concurrency from several instances), and the
//! keys tags write.

use std::collections::BTreeMap;

use analytics_tests::{body_json, config, config_with_prefix, http_v2, random_prefix, random_type};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shared::handlers::{ingest_metric, metrics_series, metrics_summary};
use shared::metric::format_timestamp;
use shared::AppState;
use synthetic_events::next_client_ip;

const GENEROUS: [(&str, &str); 4] = [
    ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
    ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
    ("RATE_LIMIT_REQUESTS", "1000000"),
    ("SERIES_RATE_LIMIT_REQUESTS", "1000000"),
];

fn state(pairs: &[(&str, &str)]) -> AppState {
    let mut all = GENEROUS.to_vec();
    all.extend_from_slice(pairs);
    AppState::new(config(&all)).unwrap()
}

async fn post(state: &AppState, body: &Value) -> (u16, Value) {
    let request = http_v2("POST", "/api/metrics")
        .json(body)
        .source_ip(&next_client_ip())
        .build();
    let response = ingest_metric(state, request).await;
    (response.status().as_u16(), body_json(&response))
}

async fn get(state: &AppState, path: &str, query: &str) -> (u16, Value, String) {
    let request = http_v2("GET", path)
        .query(query)
        .source_ip(&next_client_ip())
        .build();
    let response = if path.ends_with("series") {
        metrics_series(state, request).await
    } else {
        metrics_summary(state, request).await
    };
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.status().as_u16(), body_json(&response), cache)
}

/// One metric of the random data set.
#[derive(Debug, Clone)]
struct Point {
    t: DateTime<Utc>,
    value: f64,
    tags: BTreeMap<String, String>,
}

impl Point {
    fn json(&self, metric_type: &str) -> Value {
        let mut metric = json!({
            "timestamp": format_timestamp(self.t),
            "value": self.value,
            "type": metric_type,
        });
        if !self.tags.is_empty() || self.value < 1.0 {
            // Now and then an explicit empty object: the same as no tags.
            metric["tags"] = json!(self.tags);
        }
        metric
    }

    fn matches(&self, filters: &[(&str, &str)]) -> bool {
        filters
            .iter()
            .all(|(k, v)| self.tags.get(*k).map(String::as_str) == Some(*v))
    }
}

/// 3,000 metrics over the 3 hours before `end`: 8 hosts, each in one of 3
/// regions (values shifted per region), an `az` tag on about two thirds, a
/// tenth with only a host, a tenth untagged.
fn random_points(end: DateTime<Utc>, seed: u64) -> Vec<Point> {
    let mut rng = StdRng::seed_from_u64(seed);
    let regions = ["eu-west-1", "us-east-1", "ap-south-1"];
    (0..3_000)
        .map(|_| {
            let host = rng.random_range(0..8usize);
            let region = regions[host % 3];
            let t = end - TimeDelta::seconds(rng.random_range(60..3 * 3_600));
            let value = (host % 3) as f64 * 40.0 + (rng.random::<f64>() * 6_000.0).round() / 100.0;
            let mut tags = BTreeMap::new();
            match rng.random_range(0..10) {
                0 => {}
                1 => {
                    tags.insert("host".to_string(), format!("web-{host}"));
                }
                _ => {
                    tags.insert("host".to_string(), format!("web-{host}"));
                    tags.insert("region".to_string(), region.to_string());
                    if rng.random_bool(0.66) {
                        let az = if rng.random_bool(0.5) { "a" } else { "b" };
                        tags.insert("az".to_string(), az.to_string());
                    }
                }
            }
            Point { t, value, tags }
        })
        .collect()
}

/// Checks a summary's (or a group's, or a point's) statistics against the
/// values it should cover: exact count, min and max, the sum to 1e-9, and
/// every percentile within 1 % of the exact rank ⌊q (n − 1)⌋.
fn check(got: &Value, values: &[f64], what: &str) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    assert_eq!(got["count"].as_u64(), Some(n as u64), "{what}: {got}");
    let sum: f64 = sorted.iter().sum();
    let got_sum = got["sum"].as_f64().unwrap();
    assert!(
        (got_sum - sum).abs() <= 1e-9 * sum.abs().max(1.0),
        "{what}: sum {got_sum} vs {sum}"
    );
    if n == 0 {
        assert!(got["min_value"].is_null(), "{what}: {got}");
        return;
    }
    assert_eq!(got["min_value"].as_f64(), Some(sorted[0]), "{what}");
    assert_eq!(got["max_value"].as_f64(), Some(sorted[n - 1]), "{what}");
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let exact = sorted[(q * (n - 1) as f64).floor() as usize];
        let reported = got["percentiles"][name].as_f64().unwrap();
        assert!(
            (reported - exact).abs() <= 0.01 * exact.abs() * (1.0 + 1e-9),
            "{what}: {name} {reported} vs exact {exact}"
        );
    }
}

/// The groups brute force expects for `group_by=key` under `filters`:
/// value → values, ranked by count (then value), as the API ranks them.
fn expected_groups(
    points: &[Point],
    filters: &[(&str, &str)],
    key: &str,
) -> Vec<(String, Vec<f64>)> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.matches(filters)) {
        if let Some(v) = p.tags.get(key) {
            groups.entry(v.clone()).or_default().push(p.value);
        }
    }
    let mut ranked: Vec<(String, Vec<f64>)> = groups.into_iter().collect();
    ranked.sort_by(|(a, x), (b, y)| y.len().cmp(&x.len()).then_with(|| a.cmp(b)));
    ranked
}

fn query_of(filters: &[(&str, &str)]) -> String {
    filters
        .iter()
        .map(|(k, v)| format!("&tag.{k}={v}"))
        .collect()
}

#[tokio::test]
async fn filtered_and_grouped_summaries_match_brute_force() {
    let state = state(&[]);
    let t = random_type("tags");
    let end = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let points = random_points(end, 18);
    for chunk in points.chunks(500) {
        let batch: Vec<Value> = chunk.iter().map(|p| p.json(&t)).collect();
        let (status, body) = post(&state, &json!(batch)).await;
        assert_eq!(status, 201, "{body}");
    }
    let window = format!(
        "type={t}&from={}&to={}",
        format_timestamp(end - TimeDelta::hours(4)),
        format_timestamp(end)
    );
    let values = |filters: &[(&str, &str)]| -> Vec<f64> {
        points
            .iter()
            .filter(|p| p.matches(filters))
            .map(|p| p.value)
            .collect()
    };

    for filters in [
        vec![],
        vec![("host", "web-3")],
        vec![("region", "eu-west-1")],
        vec![("az", "b")],
        vec![("region", "eu-west-1"), ("az", "a")],
        vec![("host", "web-1"), ("region", "us-east-1")],
        vec![("host", "web-1"), ("region", "eu-west-1")],
        vec![("host", "web-4"), ("region", "us-east-1"), ("az", "b")],
        vec![("host", "web-9")],
    ] {
        let query = format!("{window}{}", query_of(&filters));
        let (status, body, _) = get(&state, "/api/metrics/summary", &query).await;
        assert_eq!(status, 200, "{query}: {body}");
        check(&body, &values(&filters), &query);
        let echoed: BTreeMap<String, String> = filters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if filters.is_empty() {
            assert!(body.get("filters").is_none(), "{body}");
        } else {
            assert_eq!(body["filters"], json!(echoed), "{body}");
        }
    }

    for (filters, key, limit) in [
        (vec![], "region", None),
        (vec![], "host", Some(3)),
        (vec![], "az", None),
        (vec![("region", "eu-west-1")], "host", None),
        (vec![("region", "eu-west-1")], "region", None),
        (vec![("region", "us-east-1"), ("az", "a")], "host", Some(1)),
        (vec![("host", "web-2")], "az", None),
        (vec![], "nothing", None),
    ] {
        let mut query = format!("{window}{}&group_by={key}", query_of(&filters));
        if let Some(limit) = limit {
            query.push_str(&format!("&limit={limit}"));
        }
        let (status, body, _) = get(&state, "/api/metrics/summary", &query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert!(body.get("count").is_none(), "{body}");
        assert_eq!(body["group_by"], key);
        let expected = expected_groups(&points, &filters, key);
        let listed = limit.unwrap_or(100).min(expected.len());
        let groups = body["groups"].as_array().unwrap();
        assert_eq!(groups.len(), listed, "{query}: {body}");
        assert_eq!(
            body["groups_left_out"].as_u64(),
            Some((expected.len() - listed) as u64),
            "{query}"
        );
        for (got, (value, values)) in groups.iter().zip(&expected) {
            assert_eq!(got["value"], value.as_str(), "{query}: {body}");
            check(got, values, &format!("{query} group {value}"));
        }
    }

    // Filters in another order are the same cached query; others are not.
    let (_, a, cache) = get(
        &state,
        "/api/metrics/summary",
        &format!("{window}&tag.az=a&tag.region=eu-west-1"),
    )
    .await;
    assert_eq!(cache, "HIT");
    check(
        &a,
        &values(&[("region", "eu-west-1"), ("az", "a")]),
        "reordered",
    );
    let (_, _, cache) = get(
        &state,
        "/api/metrics/summary",
        &format!("{window}&tag.az=a&tag.region=us-east-1"),
    )
    .await;
    assert_eq!(cache, "MISS");
}

#[tokio::test]
async fn filtered_and_grouped_series_match_brute_force() {
    let state = state(&[]);
    let t = random_type("tagseries");
    let end = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let points = random_points(end, 7);
    for chunk in points.chunks(500) {
        let batch: Vec<Value> = chunk.iter().map(|p| p.json(&t)).collect();
        assert_eq!(post(&state, &json!(batch)).await.0, 201);
    }
    let from = end - TimeDelta::hours(3);
    let window = format!(
        "type={t}&step=15m&from={}&to={}",
        format_timestamp(from),
        format_timestamp(end)
    );
    let in_step = |p: &Point, i: usize| {
        let start = from + TimeDelta::minutes(15 * i as i64);
        p.t >= start && p.t < start + TimeDelta::minutes(15)
    };
    let check_points = |got: &Value, members: &[&Point], what: &str| {
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), 12, "{what}");
        for (i, point) in got.iter().enumerate() {
            let values: Vec<f64> = members
                .iter()
                .filter(|p| in_step(p, i))
                .map(|p| p.value)
                .collect();
            check(point, &values, &format!("{what} point {i}"));
        }
    };

    for filters in [
        vec![("host", "web-5")],
        vec![("region", "ap-south-1"), ("az", "b")],
    ] {
        let query = format!("{window}{}", query_of(&filters));
        let (status, body, _) = get(&state, "/api/metrics/series", &query).await;
        assert_eq!(status, 200, "{query}: {body}");
        let members: Vec<&Point> = points.iter().filter(|p| p.matches(&filters)).collect();
        check_points(&body["points"], &members, &query);
    }

    let query = format!("{window}&group_by=region&limit=2");
    let (status, body, _) = get(&state, "/api/metrics/series", &query).await;
    assert_eq!(status, 200, "{query}: {body}");
    let expected = expected_groups(&points, &[], "region");
    assert_eq!(body["groups_left_out"], 1);
    let groups = body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for (got, (value, values)) in groups.iter().zip(&expected) {
        assert_eq!(got["value"], value.as_str());
        assert_eq!(got["count"].as_u64(), Some(values.len() as u64));
        let members: Vec<&Point> = points
            .iter()
            .filter(|p| p.tags.get("region") == Some(value))
            .collect();
        check_points(&got["points"], &members, &format!("{query} {value}"));
    }

    // A grouped series is bounded in points: limit × points ≤ 10,000.
    let (status, body, _) = get(
        &state,
        "/api/metrics/series",
        &format!("type={t}&period=daily&step=1m&group_by=host&limit=10"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "limit", "{body}");
    // Without `limit`, the default gives way: as many groups as fit (a day
    // at 1m is 1,440 or 1,441 points a group, so 6), the rest counted.
    let (status, body, _) = get(
        &state,
        "/api/metrics/series",
        &format!("type={t}&period=daily&step=1m&group_by=host"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let groups = body["groups"].as_array().unwrap();
    let points = groups[0]["points"].as_array().unwrap().len();
    assert!(groups.len() * points <= 10_000, "{}", groups.len());
    assert_eq!(
        groups.len(),
        (10_000 / points).min(groups.len() + body["groups_left_out"].as_u64().unwrap() as usize),
        "{body}"
    );
}

#[tokio::test]
async fn bad_tags_are_422_naming_the_tag_and_store_nothing() {
    let state = state(&[]);
    let t = random_type("badtags");
    let now = format_timestamp(Utc::now());
    let metric = |tags: Value| json!({"timestamp": now, "value": 1.0, "type": t, "tags": tags});
    for (tags, field, hint) in [
        (json!({"Host": "a"}), "tags", "a-z 0-9 _"),
        (json!({"host": "a b"}), "tags.host", "may only contain"),
        (json!({"host": "a:b"}), "tags.host", "may only contain"),
        (json!({"host": "{x}"}), "tags.host", "may only contain"),
        (json!({"host": ""}), "tags.host", "must not be empty"),
        (json!({"host": "v".repeat(65)}), "tags.host", "at most 64"),
        (json!({"host": 7}), "tags.host", "must be a string"),
        (json!(["host"]), "tags", "must be an object"),
        (
            json!({"a": "1", "b": "1", "c": "1", "d": "1", "e": "1", "f": "1", "g": "1", "h": "1", "i": "1"}),
            "tags",
            "at most 8",
        ),
    ] {
        let (status, body) = post(&state, &metric(tags.clone())).await;
        assert_eq!(status, 422, "{tags}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{tags}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(hint),
            "{tags}: {body}"
        );
    }
    // A key sent twice is named, not silently overwritten.
    let twice = format!(
        r#"{{"timestamp":"{now}","value":1,"type":"{t}","tags":{{"host":"a","host":"b"}}}}"#
    );
    let request = http_v2("POST", "/api/metrics")
        .header("content-type", "application/json")
        .body(&twice)
        .source_ip(&next_client_ip())
        .build();
    let response = ingest_metric(&state, request).await;
    assert_eq!(response.status(), 422);
    assert_eq!(body_json(&response)["errors"][0]["field"], "tags.host");
    // A batch with one bad tag stores nothing of it.
    let batch = json!([metric(json!({"host": "a"})), metric(json!({"host": "a b"}))]);
    let (status, body) = post(&state, &batch).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["index"], 1);
    let (_, body, _) = get(
        &state,
        "/api/metrics/summary",
        &format!("type={t}&period=hourly"),
    )
    .await;
    assert_eq!(body["count"], 0, "{body}");
    // Bad filters and group-bys are 422s too.
    for (query, field) in [
        ("tag.Host=a", "tag"),
        ("tag.host=a%20b", "tag.host"),
        ("group_by=a-b", "group_by"),
        ("limit=3", "limit"),
    ] {
        let (status, body, _) = get(
            &state,
            "/api/metrics/summary",
            &format!("type={t}&period=hourly&{query}"),
        )
        .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn caps_on_tag_values_and_combinations_refuse_the_whole_request() {
    let prefix = random_prefix();
    let caps = [
        ("MAX_TAG_VALUES_PER_KEY", "3"),
        ("MAX_TAG_COMBINATIONS", "4"),
    ];
    let instance = || {
        let mut all = GENEROUS.to_vec();
        all.extend_from_slice(&caps);
        AppState::new(config_with_prefix(&prefix, &all)).unwrap()
    };
    let state = instance();
    let t = random_type("caps");
    let now = format_timestamp(Utc::now());
    let metric = |tags: Value| json!({"timestamp": now, "value": 1.0, "type": t, "tags": tags});
    for host in ["a", "b", "c"] {
        assert_eq!(post(&state, &metric(json!({"host": host}))).await.0, 201);
    }
    // (Two periods: the first answer is cached.)
    let (hourly, daily) = (
        format!("type={t}&period=hourly"),
        format!("type={t}&period=daily"),
    );
    // A fourth value of `host`: refused, naming the cap and its setting.
    let (status, body) = post(&state, &metric(json!({"host": "d"}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], "urn:analytics-api:problem:tag-limit-exceeded");
    assert_eq!(body["errors"][0]["field"], "tags.host");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("MAX_TAG_VALUES_PER_KEY") && detail.contains('3'),
        "{detail}"
    );
    // A batch with a known value and a new one: nothing of it is stored.
    let batch = json!([metric(json!({"host": "a"})), metric(json!({"host": "e"}))]);
    let (status, body) = post(&state, &batch).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["index"], 1, "{body}");
    assert_eq!(
        get(&state, "/api/metrics/summary", &hourly).await.1["count"],
        3
    );
    // Known values are still accepted, from any instance.
    let other = instance();
    assert_eq!(post(&other, &metric(json!({"host": "b"}))).await.0, 201);
    assert_eq!(post(&other, &metric(json!({"host": "d"}))).await.0, 422);
    // Combinations: {a}, {b}, {c} and one more fit under 4.
    let (status, _) = post(&state, &metric(json!({"host": "a", "region": "x"}))).await;
    assert_eq!(status, 201);
    let (status, body) = post(&other, &metric(json!({"host": "b", "region": "x"}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "tags");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_TAG_COMBINATIONS"),
        "{body}"
    );
    assert_eq!(
        get(&other, "/api/metrics/summary", &daily).await.1["count"],
        5
    );
    // Untagged metrics of the type are never capped.
    assert_eq!(
        post(&other, &json!({"timestamp": now, "value": 2.0, "type": t}))
            .await
            .0,
        201
    );
    // Another type has caps of its own.
    let u = random_type("caps_other");
    let (status, _) = post(
        &state,
        &json!({"timestamp": now, "value": 1.0, "type": u, "tags": {"host": "z"}}),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn caps_hold_across_concurrent_instances() {
    let prefix = random_prefix();
    let t = random_type("race");
    let instances: Vec<AppState> = (0..4)
        .map(|_| {
            let mut all = GENEROUS.to_vec();
            all.push(("MAX_TAG_VALUES_PER_KEY", "5"));
            AppState::new(config_with_prefix(&prefix, &all)).unwrap()
        })
        .collect();
    let now = format_timestamp(Utc::now());
    // 40 distinct new hosts at once, 10 per instance.
    let sends = instances.iter().enumerate().flat_map(|(i, state)| {
        let (t, now) = (t.clone(), now.clone());
        (0..10).map(move |j| {
            let metric = json!({"timestamp": now, "value": 1.0, "type": t, "tags": {"host": format!("h{i}-{j}")}});
            async move { post(state, &metric).await.0 }
        })
    });
    let statuses = futures::future::join_all(sends).await;
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 422).count();
    assert_eq!((accepted, refused), (5, 35), "{statuses:?}");
    let registry = instances[0].keys.tag_values(&t, "host");
    let members: u64 = redis::cmd("ZCARD")
        .arg(&registry)
        .query_async(&mut instances[0].redis.clone())
        .await
        .unwrap();
    assert_eq!(members, 5);
    let (_, body, _) = get(
        &instances[3],
        "/api/metrics/summary",
        &format!("type={t}&period=hourly&group_by=host"),
    )
    .await;
    assert_eq!(body["groups"].as_array().unwrap().len(), 5, "{body}");
    assert_eq!(body["groups_left_out"], 0);
}

#[tokio::test]
async fn every_key_tags_write_expires() {
    let state = state(&[]);
    let t = random_type("ttl");
    let at = Utc::now();
    let metric = json!({"timestamp": format_timestamp(at), "value": 1.0, "type": t,
        "tags": {"host": "web-1", "region": "eu"}});
    assert_eq!(post(&state, &metric).await.0, 201);
    let tags = shared::tags::Tags::from_pairs([("host", "web-1"), ("region", "eu")]).unwrap();
    let digest = tags.digest();
    let hour = at.timestamp().div_euclid(3_600) * 3_600;
    let mut keys = vec![
        state.keys.tag_combinations(&t),
        state.keys.tag_values(&t, "host"),
        state.keys.tag_values(&t, "region"),
    ];
    for series in [
        shared::keys::SeriesKey::All,
        shared::keys::SeriesKey::TagValue {
            key: "host",
            value: "web-1",
        },
        shared::keys::SeriesKey::TagValue {
            key: "region",
            value: "eu",
        },
        shared::keys::SeriesKey::Combination { digest: &digest },
    ] {
        keys.push(state.keys.series_container(&t, series, "m", hour));
    }
    let retention = 35 * 86_400;
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut state.redis.clone())
            .await
            .unwrap();
        assert!(
            ttl > retention && ttl < retention + 3 * 86_400,
            "{key}: {ttl}"
        );
    }
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(state.keys.tag_combinations(&t))
        .arg(0)
        .arg(-1)
        .query_async(&mut state.redis.clone())
        .await
        .unwrap();
    assert_eq!(members, ["host=web-1,region=eu"]);
}

/// A grouped query reads the registry in the same pipeline as the buckets of
/// the values it listed last time: a value that appeared since is still
/// read (in a second round trip), so the answer never lags the registry.
#[tokio::test]
async fn grouped_queries_see_tag_values_that_appear_between_them() {
    let state = state(&[]);
    let t = random_type("tags_new_value");
    let end = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let at = format_timestamp(end - TimeDelta::minutes(30));
    let metric = |host: &str, value: f64| json!({"timestamp": at, "value": value, "type": t, "tags": {"host": host}});
    let query = format!(
        "type={t}&from={}&to={}&group_by=host",
        format_timestamp(end - TimeDelta::hours(1)),
        format_timestamp(end)
    );
    let groups = |body: &Value| -> Vec<(String, u64)> {
        body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["value"].as_str().unwrap().to_string(),
                    g["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let batch = json!([metric("a", 1.0), metric("a", 2.0), metric("b", 3.0)]);
    assert_eq!(post(&state, &batch).await.0, 201);
    let (status, first, _) = get(&state, "/api/metrics/summary", &query).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(groups(&first), [("a".to_string(), 2), ("b".to_string(), 1)]);
    let batch = json!([metric("c", 4.0), metric("c", 5.0), metric("c", 6.0)]);
    assert_eq!(post(&state, &batch).await.0, 201);
    // Another window (not the cached answer), the same registry.
    let later = format!(
        "type={t}&from={}&to={}&group_by=host",
        format_timestamp(end - TimeDelta::minutes(59)),
        format_timestamp(end)
    );
    for (path, query) in [
        ("/api/metrics/summary", later.clone()),
        ("/api/metrics/series", format!("{later}&step=1m")),
    ] {
        let (status, body, cache) = get(&state, path, &query).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"), "{body}");
        if path.ends_with("summary") {
            assert_eq!(
                groups(&body),
                [
                    ("c".to_string(), 3),
                    ("a".to_string(), 2),
                    ("b".to_string(), 1)
                ]
            );
        } else {
            let listed: Vec<&str> = body["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["value"].as_str().unwrap())
                .collect();
            assert_eq!(listed, ["c", "a", "b"], "{body}");
        }
    }
}
