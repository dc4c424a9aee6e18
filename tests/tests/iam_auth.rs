//! The IAM authentication mode's connection behaviour against a real
//! (private) redis-server: it authenticates as the IAM user, re-authenticates
//! the live connection with fresh tokens, and replaces a connection that
//! reached its maximum age.
//!
//! A real ElastiCache checks the token's SigV4 signature; a local server
//! cannot, so the user is created with `nopass` (any password accepted) and
//! the token's exact value is checked by the unit tests against an
//! independent signer. What is tested here is everything around it: which
//! user, when `AUTH` is sent, and connection renewal.

use std::time::{Duration, Instant};

use analytics_tests::private_redis::PrivateRedis;
use redis::AsyncCommands;
use shared::connection::Redis;
use shared::iam_auth::{Credentials, IamTokenProvider, TokenRequest, MAX_CONNECTION_AGE};

const USER: &str = "analytics-app";
/// Generous bound for things that happen "soon" on a loaded machine; the
/// tests poll and never assert how fast.
const EVENTUALLY: Duration = Duration::from_secs(15);

fn provider() -> IamTokenProvider {
    IamTokenProvider::with_credentials(
        TokenRequest {
            cache_name: "analytics-cache".into(),
            user_id: USER.into(),
            serverless: false,
        },
        // The AWS documentation's example key pair: not a real credential.
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        ),
        "us-east-1",
    )
}

/// A private server where only the IAM user may do anything: the default
/// user is disabled, so a command that succeeds proves `AUTH analytics-app`.
async fn server_with_iam_user() -> (PrivateRedis, redis::aio::MultiplexedConnection) {
    let server = PrivateRedis::start();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "admin", "on", ">admin-pw", "~*", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", USER, "on", "nopass", "~*", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let admin_url = format!("redis://admin:admin-pw@127.0.0.1:{}/0", server.port());
    let mut admin = redis::Client::open(admin_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off"])
        .query_async(&mut admin)
        .await
        .unwrap();
    (server, admin)
}

/// How many `AUTH` commands the server has run (`INFO commandstats`).
async fn auth_calls(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_auth:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn client_id(redis: &Redis) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut redis.clone())
        .await
        .unwrap()
}

#[tokio::test]
async fn connects_as_the_iam_user_and_reauthenticates_the_live_connection() {
    let (server, mut admin) = server_with_iam_user().await;
    let redis = Redis::with_credentials_provider(
        redis::Client::open(server.url()).unwrap(),
        Duration::from_millis(2000),
        provider().refreshing_every(Duration::from_millis(50)),
        MAX_CONNECTION_AGE,
    );

    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    assert_eq!(whoami, USER);
    let first_id = client_id(&redis).await;

    // The live connection keeps sending AUTH with new tokens...
    let before = auth_calls(&mut admin).await;
    let started = Instant::now();
    while auth_calls(&mut admin).await < before + 3 {
        assert!(started.elapsed() < EVENTUALLY, "no re-authentication");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...on the same connection, still as the IAM user.
    assert_eq!(client_id(&redis).await, first_id);
    let _: () = redis.clone().set("iam-test-key", "v").await.unwrap();
    let _: () = redis.clone().del("iam-test-key").await.unwrap();
}

#[tokio::test]
async fn a_connection_is_replaced_when_it_reaches_its_maximum_age() {
    let (server, mut admin) = server_with_iam_user().await;
    let max_age = Duration::from_millis(500);
    let redis = Redis::with_credentials_provider(
        redis::Client::open(server.url()).unwrap(),
        Duration::from_millis(2000),
        provider(),
        max_age,
    );

    let created = Instant::now();
    let first = client_id(&redis).await;
    let again = client_id(&redis).await;
    if created.elapsed() < max_age {
        assert_eq!(again, first, "a young connection is kept");
    }

    let started = Instant::now();
    loop {
        let id = client_id(&redis).await;
        if id != first {
            break;
        }
        assert!(
            started.elapsed() < EVENTUALLY,
            "the connection was never renewed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    assert_eq!(
        whoami, USER,
        "the new connection authenticated with a token"
    );

    // The old connection is closed, not leaked with its re-auth task.
    let started = Instant::now();
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let ids: Vec<i64> = clients
            .lines()
            .filter_map(|line| line.strip_prefix("id="))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect();
        if !ids.contains(&first) {
            break;
        }
        assert!(
            started.elapsed() < EVENTUALLY,
            "the old connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
