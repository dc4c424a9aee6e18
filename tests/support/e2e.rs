//! What an end-to-end test needs to know about the stack `make test` started
//! for its group (see `scripts/test.sh` and the top of `tests/tests/e2e.rs`).
//!
//! The runner passes, per group:
//! - `E2E_BASE_URL`: `http://127.0.0.1:<port>` of that group's `cargo lambda watch`;
//! - `E2E_GROUP`: the group's name, checked by [`Stack::for_group`] so that a
//!   test never runs against a stack configured for another group;
//! - `E2E_STUB_PORT`: where the test must serve the stack's external source
//!   (`EXTERNAL_SERVICE_URL` = `http://127.0.0.1:<port>/external`), when the
//!   group uses one;
//! - `E2E_STACK_ENV_FILE`: the env file the stack was started with, read by
//!   [`Stack::setting`] so tests follow the stack's real settings.

use std::time::Duration;

use crate::stub::Stub;

/// The stack of one end-to-end group, with an HTTP client for it.
pub struct Stack {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base_url: String,
    /// A client with a generous timeout: the emulator starts a function
    /// process on its first request to a route, and with `--concurrency` above
    /// 1 also under concurrent load.
    pub client: reqwest::Client,
    settings: Vec<(String, String)>,
}

impl Stack {
    /// The stack started for `group`.
    ///
    /// Panics, with instructions, when the test was not started by
    /// `make test` for that group.
    pub fn for_group(group: &str) -> Stack {
        let base_url = std::env::var("E2E_BASE_URL").unwrap_or_else(|_| {
            panic!("E2E_BASE_URL is not set: end-to-end tests run against a stack that `make test` starts")
        });
        let running = std::env::var("E2E_GROUP").unwrap_or_default();
        assert_eq!(
            running, group,
            "this test belongs to the e2e group {group:?} but the stack was started for {running:?}; \
             run the groups through `make test` (or E2E_GROUPS={group} make e2e)"
        );
        let settings = std::env::var("E2E_STACK_ENV_FILE")
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| parse_env(&text))
            .unwrap_or_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client");
        Stack {
            base_url: base_url.trim_end_matches('/').to_string(),
            client,
            settings,
        }
    }

    /// The full URL of `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url, path_and_query)
    }

    /// `GET path_and_query`.
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(self.url(path_and_query))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"))
    }

    /// `POST path` with a raw body and `content-type: application/json`.
    pub async fn post_raw(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.post_raw(path, &body.to_string()).await
    }

    /// A setting of the stack (`RATE_LIMIT_REQUESTS`, ...), as written in its
    /// env file; `None` when the stack uses the service's default.
    pub fn setting(&self, name: &str) -> Option<String> {
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// A numeric setting, or `default` (the service's default) when unset.
    pub fn setting_u64(&self, name: &str, default: u64) -> u64 {
        self.setting(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
            .unwrap_or(default)
    }

    /// Starts the external source the stack is configured to call, on the
    /// port the runner chose (`E2E_STUB_PORT`).
    pub async fn start_stub(&self) -> Stub {
        let port: u16 = std::env::var("E2E_STUB_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .expect("E2E_STUB_PORT is set by make test for groups with a stub source");
        Stub::start_on(port).await
    }
}

/// The current time as RFC 3339 UTC with whole seconds, e.g.
/// `2026-02-18T12:00:00Z`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_read_like_cargo_lambda_reads_them() {
        let parsed = parse_env("# c\nA=1\n\nB=x=y\nA=2\n");
        assert_eq!(
            parsed,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
                ("A".to_string(), "2".to_string())
            ]
        );
    }
}
