//! ElastiCache IAM authentication (`REDIS_AUTH_MODE=iam`): no Redis password
//! anywhere, the function's IAM role proves who it is.
//!
//! The functions connect over TLS as the ElastiCache user `REDIS_IAM_USER_ID`
//! and present a short-lived **IAM auth token** as the password. The token is
//! a SigV4-presigned request, as ElastiCache documents it ("Authenticating
//! with IAM", ElastiCache User Guide):
//!
//! ```text
//! GET http://<REDIS_IAM_CACHE_NAME>/?Action=connect&User=<REDIS_IAM_USER_ID>
//!     [&ResourceType=ServerlessCache]        (ElastiCache Serverless only)
//! service elasticache, X-Amz-Expires=900, signed in the query string,
//! then the leading "http://" removed
//! ```
//!
//! It is signed by the AWS SDK's own signer (`aws-sigv4`, the crate every AWS
//! SDK for Rust client signs with) with the credentials found by `aws-config`'s
//! default chain: in Lambda, the function role's keys from the environment.
//! Credentials and region are resolved **lazily**, on the first connection, so
//! a cold start never touches the network.
//!
//! Lifetimes, and how each is respected:
//! - A token is accepted for 900 s after signing. [`IamTokenProvider`] is a
//!   [`redis::StreamingCredentialsProvider`]: the redis crate asks it for a
//!   fresh token on every (re)connection, and a live connection
//!   re-authenticates (`AUTH user <new token>`) every [`REFRESH_EVERY`],
//!   well inside the 900 s.
//! - ElastiCache closes an IAM-authenticated connection after 12 hours unless
//!   it re-authenticates; the periodic `AUTH` extends it, and the connection
//!   wrapper replaces its connection after [`MAX_CONNECTION_AGE`] anyway
//!   (`connection::Redis::with_credentials_provider`), so even a
//!   connection whose re-authentication failed never reaches the limit.
//!
//! A token is a bearer secret for up to 15 minutes: [`AuthToken`] has no
//! `Display`, its `Debug` is redacted, and nothing in this module logs it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
/// Re-exported so callers can give [`IamTokenProvider::with_credentials`]
/// fixed credentials without depending on `aws-credential-types`.
pub use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use futures_util::{Stream, StreamExt};
use redis::{BasicAuth, ErrorKind, RedisError, RedisResult};

use crate::settings::{ConfigError, Env};

/// The SigV4 service name of ElastiCache.
pub const SERVICE: &str = "elasticache";

/// How long a token is accepted after signing (`X-Amz-Expires`), 900 s: the
/// maximum ElastiCache allows.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// How often a live connection re-authenticates with a new token (600 s):
/// two thirds of [`TOKEN_LIFETIME`], so a delayed refresh still finds the
/// previous token valid.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);

/// After a failed token generation (credentials unavailable), how soon the
/// next attempt is made, 30 s.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(30);

/// The age (11 h) after which the connection is replaced by a new one, an
/// hour before ElastiCache's 12-hour limit on IAM-authenticated connections.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(11 * 3600);

/// What a token authorises: one user on one cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The replication group id or serverless cache name (`REDIS_IAM_CACHE_NAME`).
    pub cache_name: String,
    /// The ElastiCache user id (`REDIS_IAM_USER_ID`), also the Redis user name.
    pub user_id: String,
    /// True for an ElastiCache Serverless cache (`REDIS_IAM_SERVERLESS`).
    pub serverless: bool,
}

impl TokenRequest {
    /// Reads `REDIS_IAM_USER_ID`, `REDIS_IAM_CACHE_NAME` and
    /// `REDIS_IAM_SERVERLESS` (default false), for `REDIS_AUTH_MODE=iam`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the variable when one is missing or holds a
    /// character outside `A-Z a-z 0-9 - _ .` (ElastiCache names use only
    /// these; anything else would change the meaning of the signed URL).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let checked = |variable: &'static str| {
            let value = env
                .optional(variable)
                .unwrap_or_default()
                .trim()
                .to_string();
            if value.is_empty() {
                return Err(ConfigError::new(
                    variable,
                    "required when REDIS_AUTH_MODE=iam",
                ));
            }
            if !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(ConfigError::new(variable, "use only A-Z a-z 0-9 - _ ."));
            }
            Ok(value)
        };
        let user_id = checked("REDIS_IAM_USER_ID")?;
        let cache_name = checked("REDIS_IAM_CACHE_NAME")?;
        Ok(Self {
            cache_name,
            user_id,
            serverless: env.parse("REDIS_IAM_SERVERLESS", false)?,
        })
    }

    /// The request that gets presigned, before signing.
    fn url(&self) -> String {
        let mut url = format!(
            "http://{}/?Action=connect&User={}",
            self.cache_name, self.user_id
        );
        if self.serverless {
            url.push_str("&ResourceType=ServerlessCache");
        }
        url
    }
}

/// An IAM auth token: the presigned request without `http://`, used as the
/// Redis password. Deliberately without `Display`; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// The token text, for the `AUTH` command only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Why no token could be made. The messages name no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamAuthError {
    /// The default chain found no region (in Lambda, `AWS_REGION` is always set).
    #[error("no AWS region configured for ElastiCache IAM authentication (set AWS_REGION)")]
    NoRegion,
    /// The default chain has no credentials provider at all.
    #[error("no AWS credentials provider for ElastiCache IAM authentication")]
    NoCredentialsProvider,
    /// The credentials provider failed (message from `aws-config`).
    #[error("could not load AWS credentials: {0}")]
    Credentials(String),
    /// The signer refused the request (message from `aws-sigv4`).
    #[error("could not sign the ElastiCache IAM auth token: {0}")]
    Signing(String),
}

impl From<IamAuthError> for RedisError {
    fn from(err: IamAuthError) -> Self {
        RedisError::from((
            ErrorKind::AuthenticationFailed,
            "ElastiCache IAM authentication",
            err.to_string(),
        ))
    }
}

/// Signs the token for `request` with `credentials` in `region` at `time`.
/// Pure: no I/O, deterministic for fixed inputs (tests compare it with an
/// independent SigV4 implementation).
///
/// The request carries no headers and an empty body; the signature covers
/// the `host` header and the SHA-256 of the empty payload, as a SigV4 query
/// signer does for a plain (non-S3) request. A session token (always present
/// for a Lambda role) is sent as `X-Amz-Security-Token` and signed.
///
/// # Errors
/// [`IamAuthError::Signing`] if the signer rejects the parameters.
pub fn generate_token(
    request: &TokenRequest,
    credentials: Credentials,
    region: &str,
    time: SystemTime,
) -> Result<AuthToken, IamAuthError> {
    let signing_error = |e: &dyn fmt::Display| IamAuthError::Signing(e.to_string());
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| signing_error(&e))?;
    let url = request.url();
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| signing_error(&e))?;
    let (instructions, _signature) = sign(signable, &params.into())
        .map_err(|e| signing_error(&e))?
        .into_parts();
    // The SDK adds the signature parameters to a request with its own query
    // encoding; the token is that request's URI without the scheme.
    let mut signed = http::Request::get(url.as_str())
        .body(())
        .map_err(|e| signing_error(&e))?;
    instructions.apply_to_request_http1x(&mut signed);
    let uri = signed.uri().to_string();
    Ok(AuthToken(
        uri.strip_prefix("http://").unwrap_or(&uri).to_string(),
    ))
}

/// Where the signing credentials and region come from.
enum Source {
    /// `aws-config`'s default chain, loaded on first use.
    DefaultChain(Box<tokio::sync::OnceCell<SdkConfig>>),
    /// Given credentials (tests, or a caller that already holds them).
    Given {
        credentials: SharedCredentialsProvider,
        region: Region,
    },
}

struct Inner {
    request: TokenRequest,
    source: Source,
}

/// Makes IAM auth tokens on demand and streams a fresh one to each Redis
/// connection every [`REFRESH_EVERY`]. Cheap to clone.
///
/// As a [`redis::StreamingCredentialsProvider`] (the redis crate's
/// `token-based-authentication`): each `subscribe` yields a token at once
/// (used by a new connection's `AUTH`), then one per refresh period (used to
/// re-authenticate the live connection). The crate subscribes twice per
/// connection, once for the first `AUTH` and once for the refresh loop, so a
/// new connection sends a second `AUTH` right after connecting. When
/// credentials are unavailable the stream yields an error (the connection
/// attempt fails and the request gets a 503) and tries again after
/// [`RETRY_AFTER_ERROR`]. Credentials are asked of the chain for every token;
/// in Lambda that is a read of the environment.
#[derive(Clone)]
pub struct IamTokenProvider {
    inner: Arc<Inner>,
    refresh_every: Duration,
}

impl fmt::Debug for IamTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.inner.source {
            Source::DefaultChain(_) => "aws-config default chain",
            Source::Given { .. } => "given credentials",
        };
        f.debug_struct("IamTokenProvider")
            .field("request", &self.inner.request)
            .field("source", &source)
            .field("refresh_every", &self.refresh_every)
            .finish()
    }
}

impl IamTokenProvider {
    /// A provider signing with `aws-config`'s default credential chain and
    /// region (environment, profile, web identity, ECS, EC2 instance
    /// metadata), resolved on first use. No I/O happens here.
    pub fn from_default_chain(request: TokenRequest) -> Self {
        Self::with_source(request, Source::DefaultChain(Box::default()))
    }

    /// A provider signing with the given credentials (fixed [`Credentials`]
    /// or any credentials provider) in `region`.
    pub fn with_credentials(
        request: TokenRequest,
        credentials: impl ProvideCredentials + 'static,
        region: &str,
    ) -> Self {
        Self::with_source(
            request,
            Source::Given {
                credentials: SharedCredentialsProvider::new(credentials),
                region: Region::new(region.to_string()),
            },
        )
    }

    fn with_source(request: TokenRequest, source: Source) -> Self {
        Self {
            inner: Arc::new(Inner { request, source }),
            refresh_every: REFRESH_EVERY,
        }
    }

    /// The same provider re-authenticating every `period` instead of
    /// [`REFRESH_EVERY`] (tests use a short period).
    pub fn refreshing_every(mut self, period: Duration) -> Self {
        self.refresh_every = period;
        self
    }

    /// A token signed now.
    ///
    /// # Errors
    /// [`IamAuthError`] when no region or credentials can be found.
    pub async fn token(&self) -> Result<AuthToken, IamAuthError> {
        let (credentials, region) = match &self.inner.source {
            Source::Given {
                credentials,
                region,
            } => (credentials.clone(), region.clone()),
            Source::DefaultChain(loaded) => {
                let sdk = loaded.get_or_init(load_default_chain).await;
                let region = sdk.region().cloned().ok_or(IamAuthError::NoRegion)?;
                let credentials = sdk
                    .credentials_provider()
                    .ok_or(IamAuthError::NoCredentialsProvider)?;
                (credentials, region)
            }
        };
        let credentials = credentials
            .provide_credentials()
            .await
            .map_err(|e| IamAuthError::Credentials(error_chain(&e)))?;
        generate_token(
            &self.inner.request,
            credentials,
            region.as_ref(),
            SystemTime::now(),
        )
    }

    async fn basic_auth(&self) -> RedisResult<BasicAuth> {
        match self.token().await {
            Ok(token) => Ok(BasicAuth::new(
                self.inner.request.user_id.clone(),
                token.expose().to_string(),
            )),
            Err(err) => {
                tracing::warn!(error = %err, "no ElastiCache IAM auth token");
                Err(err.into())
            }
        }
    }
}

impl redis::StreamingCredentialsProvider for IamTokenProvider {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let provider = self.clone();
        // State: how long to wait before the next token (zero for the first).
        futures_util::stream::unfold(Duration::ZERO, move |wait| {
            let provider = provider.clone();
            async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let auth = provider.basic_auth().await;
                let next = if auth.is_ok() {
                    provider.refresh_every
                } else {
                    RETRY_AFTER_ERROR.min(provider.refresh_every)
                };
                Some((auth, next))
            }
        })
        .boxed()
    }
}

/// The default chain with an HTTPS client on rustls + ring, for the
/// providers that call AWS (web identity, ECS, instance metadata); in Lambda
/// the environment provider answers without any call.
async fn load_default_chain() -> SdkConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The TLS URL of the IAM mode: `REDIS_URL`'s host, port and database with
/// `rediss://` (ElastiCache requires TLS with IAM authentication) and no
/// credentials (the token is the password).
///
/// # Errors
/// A [`ConfigError`] for `REDIS_URL` when it is not a `redis://` or
/// `rediss://` URL.
pub fn tls_url(redis_url: &str) -> Result<String, ConfigError> {
    let rest = redis_url
        .strip_prefix("rediss://")
        .or_else(|| redis_url.strip_prefix("redis://"))
        .ok_or_else(|| {
            ConfigError::new(
                "REDIS_URL",
                "REDIS_AUTH_MODE=iam needs a redis:// or rediss:// URL (TLS is always used)",
            )
        })?;
    let without_userinfo = match (rest.find('@'), rest.find('/')) {
        (Some(at), Some(slash)) if at < slash => &rest[at + 1..],
        (Some(at), None) => &rest[at + 1..],
        _ => rest,
    };
    Ok(format!("rediss://{without_userinfo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The AWS documentation's example key pair: not a real credential.
    const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE/session+token=";
    // 2025-01-02T03:04:05Z
    const FIXED_TIME_S: u64 = 1_735_787_045;

    // The expected tokens below were computed by an independent SigV4
    // implementation, botocore 1.44.8's query signer, in a virtual
    // environment of its own (`pip install botocore`), with this script:
    //
    //     import datetime
    //     from unittest import mock
    //     from botocore.auth import SigV4QueryAuth
    //     from botocore.awsrequest import AWSRequest
    //     from botocore.credentials import Credentials
    //
    //     FIXED = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    //
    //     def token(cache, user, serverless, session_token=None):
    //         url = f"http://{cache}/?Action=connect&User={user}"
    //         if serverless:
    //             url += "&ResourceType=ServerlessCache"
    //         request = AWSRequest(method="GET", url=url)
    //         credentials = Credentials(
    //             "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", session_token
    //         )
    //         with mock.patch("botocore.compat.datetime") as dt:   # fixes the signing time
    //             dt.datetime.now.return_value = FIXED
    //             dt.timezone = datetime.timezone
    //             SigV4QueryAuth(credentials, "elasticache", "us-east-1", expires=900).add_auth(request)
    //         return request.url.removeprefix("http://")
    //
    //     print(token("analytics-cache", "analytics-app", False))
    //     print(token("analytics-cache", "analytics-app", True))
    //     print(token("analytics-cache", "analytics-app", False, "IQoJb3JpZ2luX2VjEXAMPLE/session+token="))
    const BOTOCORE_TOKEN: &str = "analytics-cache/?Action=connect&User=analytics-app&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250102%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20250102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=60968e79251ec718ba21e2b07eeb361c596bcec2da1aefad9909d47845e8a072";
    const BOTOCORE_SERVERLESS_TOKEN: &str = "analytics-cache/?Action=connect&User=analytics-app&ResourceType=ServerlessCache&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250102%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20250102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=127c10bddf704b93f90a3b56a91c9ef176ab1b1da482fccfac1cc40dd0641c10";
    const BOTOCORE_SESSION_TOKEN: &str = "analytics-cache/?Action=connect&User=analytics-app&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250102%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20250102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2Fsession%2Btoken%3D&X-Amz-Signature=40d04edc18553d8b539820e1dac964a9bf45d73cba14f74c11cf194585d0e6b7";

    fn request(serverless: bool) -> TokenRequest {
        TokenRequest {
            cache_name: "analytics-cache".into(),
            user_id: "analytics-app".into(),
            serverless,
        }
    }

    fn credentials(session_token: Option<&str>) -> Credentials {
        Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            session_token.map(str::to_string),
            None,
            "test",
        )
    }

    fn fixed_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_TIME_S)
    }

    /// `a=1&b=2` as a sorted list of pairs: the server checks the signature
    /// over the canonical (sorted) query, so parameter order is not part of
    /// a token's meaning.
    fn query_pairs(token: &str) -> Vec<(String, String)> {
        let (_, query) = token.split_once('?').unwrap();
        let mut pairs: Vec<(String, String)> = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn the_token_matches_botocore() {
        let token = generate_token(
            &request(false),
            credentials(None),
            "us-east-1",
            fixed_time(),
        )
        .unwrap();
        assert_eq!(token.expose(), BOTOCORE_TOKEN);
    }

    #[test]
    fn the_serverless_token_matches_botocore() {
        let token =
            generate_token(&request(true), credentials(None), "us-east-1", fixed_time()).unwrap();
        assert_eq!(token.expose(), BOTOCORE_SERVERLESS_TOKEN);
    }

    #[test]
    fn a_session_token_is_signed_as_botocore_does() {
        let token = generate_token(
            &request(false),
            credentials(Some(SESSION_TOKEN)),
            "us-east-1",
            fixed_time(),
        )
        .unwrap();
        // Same parameters, same signature; only the order differs (aws-sigv4
        // puts X-Amz-Security-Token after X-Amz-Signature, botocore before).
        assert_eq!(
            query_pairs(token.expose()),
            query_pairs(BOTOCORE_SESSION_TOKEN)
        );
        assert!(token.expose().starts_with("analytics-cache/?"));
    }

    #[test]
    fn the_token_has_the_documented_shape() {
        let token = generate_token(
            &request(false),
            credentials(None),
            "eu-west-1",
            fixed_time(),
        )
        .unwrap();
        let text = token.expose();
        assert!(!text.starts_with("http"), "{text}");
        assert!(text.starts_with("analytics-cache/?Action=connect&User=analytics-app&"));
        assert!(text.contains("X-Amz-Expires=900"));
        assert!(text.contains("%2Feu-west-1%2Felasticache%2Faws4_request"));
        assert!(!text.contains("ResourceType"));
    }

    #[test]
    fn tokens_and_providers_never_show_secrets() {
        let token = generate_token(
            &request(true),
            credentials(Some(SESSION_TOKEN)),
            "us-east-1",
            fixed_time(),
        )
        .unwrap();
        let shown = format!("{token:?}");
        assert_eq!(shown, "AuthToken(<redacted>)");
        let provider = IamTokenProvider::with_credentials(
            request(true),
            credentials(Some(SESSION_TOKEN)),
            "us-east-1",
        );
        let shown = format!("{provider:?}");
        for secret in [SECRET_ACCESS_KEY, SESSION_TOKEN, "X-Amz-Signature"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("analytics-app"));
    }

    #[tokio::test]
    async fn the_stream_yields_a_fresh_token_at_once_then_one_per_period() {
        let provider = IamTokenProvider::with_credentials(
            request(false),
            credentials(Some(SESSION_TOKEN)),
            "us-east-1",
        )
        .refreshing_every(Duration::from_millis(20));
        let mut stream = redis::StreamingCredentialsProvider::subscribe(&provider);
        for _ in 0..3 {
            let auth = stream.next().await.unwrap().unwrap();
            assert_eq!(auth.username(), "analytics-app");
            assert!(auth
                .password()
                .starts_with("analytics-cache/?Action=connect&User=analytics-app&"));
            assert!(auth.password().contains("X-Amz-Security-Token="));
            // BasicAuth's own Debug redacts the password too.
            assert!(!format!("{auth:?}").contains("X-Amz"));
        }
    }

    #[tokio::test]
    async fn missing_credentials_fail_the_token_not_the_process() {
        let provider =
            IamTokenProvider::with_credentials(request(false), NoCredentials, "us-east-1");
        let err = provider.token().await.unwrap_err();
        assert!(matches!(err, IamAuthError::Credentials(_)), "{err:?}");
    }

    /// A credentials source that always fails, as the default chain does
    /// when it finds nothing.
    #[derive(Debug)]
    struct NoCredentials;

    impl ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "no credentials in this test",
                ),
            ))
        }
    }

    #[test]
    fn the_iam_url_always_uses_tls_and_drops_credentials() {
        for (given, expected) in [
            (
                "redis://cache.example:6379/0",
                "rediss://cache.example:6379/0",
            ),
            ("rediss://cache.example:6379", "rediss://cache.example:6379"),
            (
                "redis://user:pw@cache.example:6379/0",
                "rediss://cache.example:6379/0",
            ),
            ("rediss://:pw@cache.example", "rediss://cache.example"),
        ] {
            assert_eq!(tls_url(given).unwrap(), expected);
        }
        assert_eq!(
            tls_url("unix:///tmp/redis.sock").unwrap_err().variable,
            "REDIS_URL"
        );
    }

    fn env_of(pairs: &[(&str, &str)]) -> Result<TokenRequest, ConfigError> {
        let lookup = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        TokenRequest::from_env(&Env::new(&lookup))
    }

    #[test]
    fn names_that_would_change_the_signed_url_are_refused() {
        let err = env_of(&[
            ("REDIS_IAM_USER_ID", "app&Action=other"),
            ("REDIS_IAM_CACHE_NAME", "cache"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "REDIS_IAM_USER_ID");
        assert_eq!(
            env_of(&[("REDIS_IAM_USER_ID", "app")])
                .unwrap_err()
                .variable,
            "REDIS_IAM_CACHE_NAME"
        );
        let parsed = env_of(&[
            ("REDIS_IAM_USER_ID", "analytics-app"),
            ("REDIS_IAM_CACHE_NAME", "analytics-cache"),
            ("REDIS_IAM_SERVERLESS", "true"),
        ])
        .unwrap();
        assert_eq!(parsed, request(true));
    }
}
