//! Secrets never reach a log line or a response body: a Redis password inside
//! `REDIS_URL`, and in IAM mode the AWS secret key, the session token and the
//! auth tokens signed with them.
//!
//! Every log line is captured (with the service's filter at `RUST_LOG=trace`,
//! dependencies included) by a subscriber installed on the test's own thread, while a real request or
//! connection runs on it; the captured text and the response body are
//! searched for the secrets.

use std::time::Duration;

use analytics_tests::logs::CapturedLogs;
use analytics_tests::private_redis::PrivateRedis;
use analytics_tests::{config, http_v2};
use shared::connection::Redis;
use shared::handlers::{health, metrics_summary};
use shared::iam_auth::{Credentials, IamTokenProvider, TokenRequest, MAX_CONNECTION_AGE};
use shared::AppState;

const PASSWORD: &str = "s3cret-Pa55word";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLEsessionTOKEN";

async fn body_text(response: lambda_http::Response<lambda_http::Body>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = match response.body() {
        lambda_http::Body::Text(text) => text.clone(),
        lambda_http::Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    (status, body)
}

#[tokio::test]
async fn a_password_in_redis_url_is_never_shown() {
    // A server whose password is not the one in the URL: every command fails
    // with an authentication error.
    let server = PrivateRedis::start();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "another-password"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{}/0", server.port());
    // The private server is one node, whatever mode the suite runs in.
    let config = config(&[("REDIS_URL", &url), ("REDIS_MODE", "standalone")]);
    assert!(!format!("{config:?}").contains(PASSWORD));

    let captured = CapturedLogs::default();
    let _guard = captured.install("trace");
    tracing::info!(config = ?config, "configuration loaded");
    let state = AppState::new(config).unwrap();

    let (status, body) = body_text(health(&state, http_v2("GET", "/health").build()).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains(PASSWORD), "{body}");
    let summary = http_v2("GET", "/api/metrics/summary").query("type=cpu_usage&period=hourly");
    // A wrong password is a fault retrying cannot fix: a named 500.
    let (status, body) = body_text(metrics_summary(&state, summary.build()).await).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("store-authentication-failed"), "{body}");
    assert!(!body.contains(PASSWORD), "{body}");

    let logs = captured.text();
    assert!(logs.contains("authentication_failed"), "{logs}");
    assert!(logs.contains("app:***@127.0.0.1"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[tokio::test]
async fn an_unreachable_redis_with_a_password_is_reported_without_it() {
    // Nothing listens on the port of a stopped server.
    let mut server = PrivateRedis::start();
    let port = server.port();
    server.kill();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{port}/0");

    let captured = CapturedLogs::default();
    let _guard = captured.install("trace");
    let state = AppState::new(config(&[("REDIS_URL", &url)])).unwrap();
    let (status, body) = body_text(health(&state, http_v2("GET", "/health").build()).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains(PASSWORD), "{body}");
    let logs = captured.text();
    assert!(logs.contains("redis unavailable"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[tokio::test]
async fn iam_tokens_and_aws_secrets_are_never_logged() {
    let server = PrivateRedis::start();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "analytics-app",
            "on",
            "nopass",
            "~*",
            "&*",
            "+@all",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();

    let captured = CapturedLogs::default();
    let _guard = captured.install("trace");
    let provider = IamTokenProvider::with_credentials(
        TokenRequest {
            cache_name: "analytics-cache".into(),
            user_id: "analytics-app".into(),
            serverless: true,
        },
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            SECRET_ACCESS_KEY,
            Some(SESSION_TOKEN.into()),
            None,
            "test",
        ),
        "us-east-1",
    )
    .refreshing_every(Duration::from_millis(30));
    tracing::info!(provider = ?provider, "IAM provider");
    let token = provider.token().await.unwrap();
    tracing::info!(token = ?token, "a token");
    let redis = Redis::with_credentials_provider(
        redis::Client::open(server.url()).unwrap(),
        Duration::from_millis(2000),
        provider,
        MAX_CONNECTION_AGE,
    );
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    assert_eq!(whoami, "analytics-app");
    // Let a few re-authentications happen on this thread's runtime.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = captured.text();
    assert!(logs.contains("AuthToken(<redacted>)"), "{logs}");
    for secret in [
        SECRET_ACCESS_KEY,
        SESSION_TOKEN,
        token.expose(),
        "X-Amz-Signature",
    ] {
        assert!(!logs.contains(secret), "{secret} in {logs}");
    }
}

/// A one-node Redis Cluster serving every slot, whose password is not the
/// one the service is given.
async fn cluster_with_another_password() -> PrivateRedis {
    let server = PrivateRedis::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-announce-ip",
        "127.0.0.1",
    ]);
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg(&["ADDSLOTSRANGE", "0", "16383"])
        .query_async(&mut admin)
        .await
        .unwrap();
    for _ in 0..100 {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut admin)
            .await
            .unwrap();
        if info.contains("cluster_state:ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "another-password"])
        .query_async(&mut admin)
        .await
        .unwrap();
    server
}

#[tokio::test]
async fn a_wrong_password_in_cluster_mode_is_named_too() {
    let server = cluster_with_another_password().await;
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{}", server.port());
    let config = config(&[("REDIS_URL", &url), ("REDIS_MODE", "cluster")]);

    let captured = CapturedLogs::default();
    let _guard = captured.install("trace");
    let state = AppState::new(config).unwrap();
    let summary = http_v2("GET", "/api/metrics/summary").query("type=cpu_usage&period=hourly");
    // The cluster client names the refused password only in its error's
    // text; it is the same permanent fault as on one node.
    let (status, body) = body_text(metrics_summary(&state, summary.build()).await).await;
    let logs = captured.text();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("store-authentication-failed"), "{body}");
    assert!(!body.contains(PASSWORD), "{body}");
    assert!(logs.contains("authentication_failed"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}
