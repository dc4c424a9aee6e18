//! The rate limiter and client identity against a real Redis: exactness of
//! the sliding log with real timing, exact admission under real concurrency
//! from several independent connections (as several Lambda instances), key
//! expiry, honest `Retry-After`, header values, `NOSCRIPT` recovery (on a
//! private server), and identities that a client cannot choose.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use analytics_tests::private_redis::PrivateRedis;
use analytics_tests::{config_with_prefix, http_v2, random_prefix, redis_connection, rest_v1};
use lambda_http::http::header::RETRY_AFTER;
use lambda_http::http::StatusCode;
use sha2::{Digest, Sha256};
use shared::config::Config;
use shared::connection::Redis;
use shared::http::{client_identity, rate_limit_fields, ApiError};
use shared::identity::ClientId;
use shared::keys::Keys;
use shared::rate_limit::{RateLimitAlgorithm, RateLimitDecision, RateLimiter};

const ALGORITHMS: [RateLimitAlgorithm; 3] = [
    RateLimitAlgorithm::SlidingLog,
    RateLimitAlgorithm::SlidingWindowCounter,
    RateLimitAlgorithm::TokenBucket,
];

/// One "Lambda instance": its own connection and limiter over `config`.
fn instance(config: &Config) -> (Redis, RateLimiter) {
    let redis = Redis::from_settings(&config.redis).expect("valid REDIS_URL");
    let limiter = RateLimiter::new(
        &config.rate_limit,
        Keys::new(config.redis.key_prefix.clone()),
    );
    (redis, limiter)
}

fn limiter_config(
    prefix: &str,
    algorithm: RateLimitAlgorithm,
    limit: u32,
    window_s: u64,
) -> Config {
    config_with_prefix(
        prefix,
        &[
            ("RATE_LIMIT_ALGORITHM", algorithm.as_str()),
            ("RATE_LIMIT_REQUESTS", &limit.to_string()),
            ("RATE_LIMIT_WINDOW_SECONDS", &window_s.to_string()),
        ],
    )
}

fn ip(addr: &str) -> ClientId {
    ClientId::ip(addr.parse::<IpAddr>().expect("a test address"))
}

fn header(decision: &RateLimitDecision, name: &str) -> String {
    rate_limit_fields(decision)
        .into_iter()
        .find(|(n, _)| n.as_str() == name)
        .and_then(|(_, v)| v.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} field in {:?}", rate_limit_fields(decision)))
}

async fn pttl(key: &str) -> i64 {
    let mut conn = redis_connection().await;
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("PTTL")
}

async fn dump(key: &str) -> Option<Vec<u8>> {
    let mut conn = redis_connection().await;
    redis::cmd("DUMP")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("DUMP")
}

#[tokio::test]
async fn sliding_log_is_exact_over_a_rolling_window() {
    // limit 5 per 2 s: 3 requests at t0, 2 at t0 + 1 s. At t0 + 2.1 s the first
    // three have left the window and the other two have not, so exactly 3 more
    // fit. (A fixed window would allow 5 or 0 there, depending on alignment.)
    let config = limiter_config(&random_prefix(), RateLimitAlgorithm::SlidingLog, 5, 2);
    let (redis, limiter) = instance(&config);
    let client = ip("203.0.113.7");

    for _ in 0..3 {
        assert!(limiter.check(&redis, &client).await.unwrap().allowed);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..2 {
        assert!(limiter.check(&redis, &client).await.unwrap().allowed);
    }
    assert!(
        !limiter.check(&redis, &client).await.unwrap().allowed,
        "5 in the window"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut accepted = 0;
    for _ in 0..6 {
        if limiter.check(&redis, &client).await.unwrap().allowed {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 3);
}

#[tokio::test]
async fn sliding_log_after_a_lowered_limit_waits_for_enough_entries_to_leave() {
    // Limit 5 per 3 s: 3 requests at t0, 2 at t0 + 1 s. Then the limit is
    // lowered while the log is live: with 2 allowed the count (5) falls below
    // the limit when the fourth entry leaves (about t0 + 4 s); with 4 allowed,
    // when the second does (about t0 + 3 s). The log is kept to what is in
    // the window, and a refusal changes nothing.
    let prefix = random_prefix();
    let config = limiter_config(&prefix, RateLimitAlgorithm::SlidingLog, 5, 3);
    let (redis, limiter) = instance(&config);
    let client = ip("203.0.113.8");
    let key = limiter.key(&client);
    for _ in 0..3 {
        assert!(limiter.check(&redis, &client).await.unwrap().allowed);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..2 {
        assert!(limiter.check(&redis, &client).await.unwrap().allowed);
    }
    let state = dump(&key).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let lowered = |limit| limiter_config(&prefix, RateLimitAlgorithm::SlidingLog, limit, 3);
    let (_, two) = instance(&lowered(2));
    let d = two.check(&redis, &client).await.unwrap();
    assert!(!d.allowed);
    // About 2.8 s to wait, rounded up.
    assert_eq!(d.retry_after_s, Some(3), "{d:?}");
    let (_, four) = instance(&lowered(4));
    let d = four.check(&redis, &client).await.unwrap();
    assert!(!d.allowed);
    // About 1.8 s.
    assert_eq!(d.retry_after_s, Some(2), "{d:?}");
    assert_eq!(dump(&key).await, state, "a refusal changed the log");

    // After the first three left: 2 in the window, so 2 more fit under 4,
    // and the log holds only the window's entries.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let accepted = four.check(&redis, &client).await.unwrap();
    assert!(accepted.allowed, "{accepted:?}");
    assert_eq!(accepted.remaining, 1);
    let mut conn = redis_connection().await;
    let entries: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 3, "{entries:?}");
    let times: Vec<u64> = entries.iter().map(|e| e.parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[tokio::test]
async fn sliding_window_counter_weights_the_previous_window() {
    // limit 4 per 1 s. 4 requests early in one fixed window; 0.62 s into the
    // next one they still weigh 4 × 0.38 = 1.52, so 2 more fit (1.52 + 2 ≤ 4 <
    // 1.52 + 3). A fixed window would allow 4, the exact log 4 as well (the
    // burst is more than 1 s old). Windows are aligned to the Unix epoch on
    // the server's clock, so the test aligns itself with Redis TIME.
    let config = limiter_config(
        &random_prefix(),
        RateLimitAlgorithm::SlidingWindowCounter,
        4,
        1,
    );
    let (redis, limiter) = instance(&config);
    let client = ip("203.0.113.77");

    let (_, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    let into_window = Duration::from_micros(micros);
    // 0.1 s into the next fixed window.
    tokio::time::sleep(Duration::from_millis(1100) - into_window).await;
    for _ in 0..4 {
        assert!(limiter.check(&redis, &client).await.unwrap().allowed);
    }
    assert!(!limiter.check(&redis, &client).await.unwrap().allowed);

    let (_, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1620) - Duration::from_micros(micros)).await;
    let mut accepted = 0;
    for _ in 0..5 {
        if limiter.check(&redis, &client).await.unwrap().allowed {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_burst_from_four_instances_admits_exactly_the_limit() {
    // A long window keeps the burst inside one fixed window (sliding window
    // counter) and one emission interval (token bucket), so all three
    // algorithms promise exactly `limit` for a burst on a fresh client.
    for algorithm in ALGORITHMS {
        let prefix = random_prefix();
        let config = limiter_config(&prefix, algorithm, 5, 60);
        let instances: Vec<_> = (0..4).map(|_| instance(&config)).collect();
        let client = ip("198.51.100.50");

        let mut tasks = Vec::new();
        for i in 0..50 {
            let (redis, limiter) = instances[i % instances.len()].clone();
            let client = client.clone();
            tasks.push(tokio::spawn(
                async move { limiter.check(&redis, &client).await },
            ));
        }
        let mut decisions = Vec::new();
        for task in tasks {
            decisions.push(task.await.unwrap().unwrap());
        }

        let accepted: Vec<_> = decisions.iter().filter(|d| d.allowed).collect();
        assert_eq!(accepted.len(), 5, "{algorithm}");
        // Every accepted request saw a different remaining count: the checks
        // were serialised by Redis, none was lost or double-counted.
        let remaining: BTreeSet<u32> = accepted.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, (0..5).collect(), "{algorithm}");
        for rejected in decisions.iter().filter(|d| !d.allowed) {
            assert_eq!(rejected.remaining, 0);
            assert!(
                rejected.retry_after_s.is_some_and(|s| s >= 1),
                "{rejected:?}"
            );
        }

        // The one key this client has, named by `Keys`, expires.
        let key = Keys::new(prefix.clone()).rate_limit(client.as_str(), algorithm.as_str());
        assert_eq!(key, instances[0].1.key(&client));
        let ttl = pttl(&key).await;
        assert!(ttl > 0 && ttl <= 120_000, "{algorithm}: PTTL {ttl}");
    }
}

#[tokio::test]
async fn every_key_written_expires() {
    for algorithm in ALGORITHMS {
        let prefix = random_prefix();
        let config = limiter_config(&prefix, algorithm, 3, 2);
        let (redis, limiter) = instance(&config);
        let clients = [
            ip("203.0.113.1"),
            ip("2001:db8::1"),
            ClientId::api_key(&[7; 32]),
        ];
        for client in &clients {
            for _ in 0..5 {
                limiter.check(&redis, client).await.unwrap();
            }
        }
        let keys = Keys::new(prefix);
        for client in &clients {
            let key = keys.rate_limit(client.as_str(), algorithm.as_str());
            let ttl = pttl(&key).await;
            // Sliding log and token bucket: ≤ 1 window; the counter: ≤ 2.
            assert!(ttl > 0 && ttl <= 4_000, "{algorithm} {key}: PTTL {ttl}");
        }
    }
}

#[tokio::test]
async fn clients_have_independent_quotas() {
    for algorithm in ALGORITHMS {
        let config = limiter_config(&random_prefix(), algorithm, 3, 60);
        let (redis, limiter) = instance(&config);
        let (a, b) = (ip("203.0.113.1"), ip("203.0.113.2"));
        for _ in 0..3 {
            assert!(limiter.check(&redis, &a).await.unwrap().allowed);
        }
        assert!(!limiter.check(&redis, &a).await.unwrap().allowed);
        for n in 0..3 {
            let d = limiter.check(&redis, &b).await.unwrap();
            assert!(
                d.allowed,
                "{algorithm}: b's request {n} was limited by a's use"
            );
            assert_eq!(d.remaining, 2 - n);
        }
    }
}

#[tokio::test]
async fn source_ips_from_the_request_context_are_the_clients() {
    let config = limiter_config(&random_prefix(), RateLimitAlgorithm::SlidingLog, 2, 60);
    let (redis, limiter) = instance(&config);
    let check = |req: lambda_http::Request| {
        let (redis, limiter) = (redis.clone(), limiter.clone());
        async move {
            let client = client_identity(&req, &Default::default()).unwrap();
            limiter.check(&redis, &client).await.unwrap()
        }
    };

    // Rotating X-Forwarded-For (and X-Real-IP) does not make a new client.
    for n in 0..5 {
        let spoofed = format!("192.0.2.{n}");
        let req = http_v2("POST", "/api/metrics")
            .source_ip("198.51.100.7")
            .header("x-forwarded-for", &spoofed)
            .header("x-real-ip", &spoofed)
            .build();
        let decision = check(req).await;
        assert_eq!(decision.allowed, n < 2, "request {n}");
    }
    // A different source address is a different client, in either payload format.
    let other_v2 = http_v2("POST", "/api/metrics")
        .source_ip("198.51.100.8")
        .build();
    assert!(check(other_v2).await.allowed);
    let same_v1 = rest_v1("POST", "/api/metrics")
        .source_ip("198.51.100.7")
        .build();
    assert!(
        !check(same_v1).await.allowed,
        "v1 and v2 see the same client"
    );
}

#[tokio::test]
async fn api_keys_are_required_and_each_key_has_its_own_quota() {
    let (alpha, beta) = ("alpha-secret", "beta-secret");
    let digests: Vec<[u8; 32]> = [alpha, beta]
        .iter()
        .map(|key| Sha256::digest(key.as_bytes()).into())
        .collect();
    let hex_list = digests
        .iter()
        .map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(",");
    let config = config_with_prefix(
        &random_prefix(),
        &[
            ("RATE_LIMIT_REQUESTS", "2"),
            ("RATE_LIMIT_WINDOW_SECONDS", "60"),
            ("API_KEYS_SHA256", &hex_list),
        ],
    );
    assert_eq!(config.identity.api_key_digests, digests);
    let (redis, limiter) = instance(&config);
    let identify = |key: Option<&str>| {
        // All from one source address: with keys configured, the key decides.
        let mut event = http_v2("POST", "/api/metrics").source_ip("198.51.100.7");
        if let Some(key) = key {
            event = event.header("x-api-key", key);
        }
        client_identity(&event.build(), &config.identity)
    };

    assert!(matches!(identify(None), Err(ApiError::Unauthorized)));
    assert!(matches!(
        identify(Some("gamma-secret")),
        Err(ApiError::Unauthorized)
    ));
    let unauthorized = identify(Some("gamma-secret")).unwrap_err().into_response();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);

    let a = identify(Some(alpha)).unwrap();
    let b = identify(Some(beta)).unwrap();
    assert_eq!(a, ClientId::api_key(&digests[0]));
    for _ in 0..2 {
        assert!(limiter.check(&redis, &a).await.unwrap().allowed);
    }
    assert!(!limiter.check(&redis, &a).await.unwrap().allowed);
    assert!(
        limiter.check(&redis, &b).await.unwrap().allowed,
        "beta has its own quota"
    );
    assert!(
        !limiter.key(&a).contains(alpha),
        "the key itself never reaches Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honest_and_rejections_do_not_extend_the_block() {
    for algorithm in ALGORITHMS {
        let config = limiter_config(&random_prefix(), algorithm, 2, 2);
        let (redis, limiter) = instance(&config);
        let client = ip("203.0.113.99");
        let key = limiter.key(&client);

        let mut first_rejection = None;
        for _ in 0..10 {
            let d = limiter.check(&redis, &client).await.unwrap();
            if !d.allowed {
                first_rejection = Some((Instant::now(), d));
                break;
            }
        }
        let (rejected_at, rejection) = first_rejection.expect("the limit is reached");
        let retry_after = rejection.retry_after_s.unwrap();
        assert!(retry_after >= 1, "{algorithm}");
        assert_eq!(rejection.reset_after_s, retry_after);
        let state = dump(&key).await;
        assert!(state.is_some());
        let mut last_ttl = pttl(&key).await;

        // Keep knocking: nothing is stored and the wait never grows.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let d = limiter.check(&redis, &client).await.unwrap();
            assert!(!d.allowed, "{algorithm}");
            assert!(
                d.retry_after_s.unwrap() <= retry_after,
                "{algorithm}: {d:?}"
            );
            assert_eq!(
                dump(&key).await,
                state,
                "{algorithm}: a rejection changed the state"
            );
            let ttl = pttl(&key).await;
            assert!(
                ttl <= last_ttl,
                "{algorithm}: a rejection extended the expiry"
            );
            last_ttl = ttl;
        }

        // Waiting out the first Retry-After is enough, despite the retries.
        let until = rejected_at + Duration::from_secs(retry_after);
        tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
        let d = limiter.check(&redis, &client).await.unwrap();
        assert!(
            d.allowed,
            "{algorithm}: refused after waiting Retry-After: {d:?}"
        );
    }
}

#[tokio::test]
async fn headers_count_down_to_zero_then_carry_retry_after() {
    for algorithm in ALGORITHMS {
        let config = limiter_config(&random_prefix(), algorithm, 5, 60);
        let (redis, limiter) = instance(&config);
        let client = ip("203.0.113.5");
        for expected in (0..5).rev() {
            let d = limiter.check(&redis, &client).await.unwrap();
            assert!(d.allowed);
            assert_eq!(d.remaining, expected);
            assert_eq!(header(&d, "ratelimit-policy"), "\"default\";q=5;w=60");
            assert_eq!(
                header(&d, "ratelimit"),
                format!("\"default\";r={expected};t={}", d.reset_after_s)
            );
            // The counter's requests keep some weight until the end of the
            // next fixed window, so its `t` can reach two windows.
            let longest = match algorithm {
                RateLimitAlgorithm::SlidingWindowCounter => 120,
                _ => 60,
            };
            assert!(
                (1..=longest).contains(&d.reset_after_s),
                "{algorithm}: {d:?}"
            );
            if algorithm == RateLimitAlgorithm::SlidingLog {
                // The oldest entry leaves a full window after it was made.
                assert!(d.reset_after_s >= 59, "{d:?}");
            }
            if algorithm == RateLimitAlgorithm::TokenBucket {
                // One token every 60 s / 5 = 12 s.
                assert!(d.reset_after_s <= 12, "{d:?}");
            }
        }

        let d = limiter.check(&redis, &client).await.unwrap();
        assert!(!d.allowed);
        let retry_after = d.retry_after_s.unwrap();
        assert_eq!(
            header(&d, "ratelimit"),
            format!("\"default\";r=0;t={retry_after}")
        );
        let response = ApiError::TooManyRequests(d).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers[RETRY_AFTER], retry_after.to_string().as_str());
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=5;w=60");
        assert_eq!(
            headers["ratelimit"],
            format!("\"default\";r=0;t={retry_after}").as_str()
        );
    }
}

#[tokio::test]
async fn a_warm_check_is_one_round_trip() {
    for algorithm in ALGORITHMS {
        let config = limiter_config(&random_prefix(), algorithm, 5, 60);
        let (redis, limiter) = instance(&config);
        let client = ip("203.0.113.8");
        // The first call may meet NOSCRIPT (then EVAL of the body).
        limiter.check(&redis, &client).await.unwrap();
        for _ in 0..6 {
            let before = redis.round_trips();
            limiter.check(&redis, &client).await.unwrap();
            assert_eq!(redis.round_trips() - before, 1, "{algorithm}");
        }
    }
}

#[tokio::test]
async fn script_flush_between_checks_is_transparent() {
    // SCRIPT FLUSH would disturb parallel tests, so it runs on a private server.
    let server = PrivateRedis::start();
    for algorithm in ALGORITHMS {
        let config = Config::from_pairs(&[
            ("REDIS_URL", &server.url()),
            ("REDIS_KEY_PREFIX", &random_prefix()),
            ("RATE_LIMIT_ALGORITHM", algorithm.as_str()),
            ("RATE_LIMIT_REQUESTS", "5"),
            ("RATE_LIMIT_WINDOW_SECONDS", "60"),
        ])
        .unwrap();
        let (redis, limiter) = instance(&config);
        let client = ip("203.0.113.9");

        let first = limiter.check(&redis, &client).await.unwrap();
        assert_eq!((first.allowed, first.remaining), (true, 4));
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut redis.clone())
            .await
            .unwrap();
        let before = redis.round_trips();
        let second = limiter.check(&redis, &client).await.unwrap();
        assert_eq!((second.allowed, second.remaining), (true, 3), "{algorithm}");
        // EVALSHA → NOSCRIPT, then EVAL of the body (which caches it).
        assert_eq!(redis.round_trips() - before, 2, "{algorithm}");
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = Config::from_pairs(&[
        ("REDIS_URL", &format!("redis://127.0.0.1:{port}/0")),
        ("REDIS_KEY_PREFIX", &random_prefix()),
        ("REDIS_TIMEOUT_MS", "200"),
    ])
    .unwrap();
    let (redis, limiter) = instance(&config);
    // The generous outer bound only turns a hang into a failure.
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        limiter.check(&redis, &ip("203.0.113.10")),
    )
    .await
    .expect("the check gave up by itself");
    let err = result.expect_err("nothing listens on that port");
    let response = ApiError::from(err).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(RETRY_AFTER));
}
