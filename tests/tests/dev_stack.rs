//! `make dev` (`scripts/dev.sh`) as a user runs it: its settings file edited
//! while it serves takes effect without a restart by hand, and an invalid
//! setting stops it at once with a message naming the variable.
//!
//! Each run serves on a free port (never 8000) with its own settings file
//! (`DEV_ENV_FILE`) and key prefix. Needs `cargo-lambda` (on `PATH` or in
//! `.venv/`, where `make test` installs it); without it the test reports
//! `SKIPPED` (or fails with `REQUIRE_E2E=1`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use analytics_tests::e2e::{
    find_tool, header, metric, repo_root, skip, structured_param, tail, work_dir,
};
use analytics_tests::process::{signal, spawn_tied};
use analytics_tests::{free_port, random_prefix, random_type, redis_mode, redis_url};

/// How long `make dev` may take to answer `/health`: the functions are built
/// first (already built by the other tests in a `make test` run).
const STARTUP: Duration = Duration::from_secs(600);

/// `scripts/dev.sh` on `port` with the settings of `env_file`, its output in
/// `log`, stopped (SIGTERM) should this test binary die first.
fn dev(port: u16, env_file: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create the log");
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("scripts/dev.sh"))
        .current_dir(repo_root())
        .env("PORT", port.to_string())
        .env("DEV_ENV_FILE", env_file)
        .env("REDIS_URL", redis_url())
        // Cargo's variables of this test run would make the nested builds
        // redo work (see tests/support/e2e.rs).
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PKG_NAME")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log"))
        .stderr(log);
    spawn_tied(command, libc::SIGTERM).expect("start scripts/dev.sh")
}

fn write_settings(path: &Path, prefix: &str, extra: &[&str]) {
    let mut text = format!(
        "REDIS_URL={}\nREDIS_MODE={}\nREDIS_KEY_PREFIX={prefix}\nRUST_LOG=warn\nEXTERNAL_SERVICE_FAILURE_RATE=0\n",
        redis_url(),
        redis_mode()
    );
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write the settings file");
}

/// The `q` of `RateLimit-Policy` on an accepted POST.
async fn quota(client: &reqwest::Client, base: &str, metric_type: &str) -> Option<u64> {
    let response = client
        .post(format!("{base}/api/metrics"))
        .json(&metric(metric_type, 1.0))
        .send()
        .await
        .ok()?;
    let policy = header(response.headers(), "ratelimit-policy")?.to_string();
    structured_param(&policy, "q")
}

fn stop(mut child: Child) {
    signal(child.id(), libc::SIGTERM);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn paths(name: &str) -> (PathBuf, PathBuf) {
    let dir = work_dir();
    let id = random_prefix();
    (
        dir.join(format!("{name}-{id}.env")),
        dir.join(format!("{name}-{id}.log")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_applies_an_edited_settings_file_without_a_restart_by_hand() {
    if find_tool("cargo-lambda").is_none() {
        return skip(
            "dev_applies_an_edited_settings_file_without_a_restart_by_hand",
            "cargo-lambda is not installed (make test installs it)",
        );
    }
    let (env_file, log) = paths("dev-reload");
    let prefix = random_prefix();
    write_settings(&env_file, &prefix, &["RATE_LIMIT_REQUESTS=1000"]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = dev(port, &env_file, &log);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let metric_type = random_type("dev_reload");

    let until = Instant::now() + STARTUP;
    let mut first = None;
    while Instant::now() < until && first.is_none() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("make dev exited with {status}: {}", tail(&log, 40));
        }
        first = quota(&client, &base, &metric_type).await;
        if first.is_none() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert_eq!(first, Some(1000), "make dev serves: {}", tail(&log, 40));

    // An idle stack keeps serving: nothing may end a function that waits
    // for its next request (the emulator's --timeout did, after 5 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let health = client
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(health.ok(), Some(200), "after 8 s idle: {}", tail(&log, 40));

    write_settings(&env_file, &prefix, &["RATE_LIMIT_REQUESTS=1001"]);
    let until = Instant::now() + Duration::from_secs(180);
    let mut seen = first;
    while Instant::now() < until && seen != Some(1001) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seen = quota(&client, &base, &metric_type).await.or(seen);
    }
    stop(child);
    assert_eq!(seen, Some(1001), "the edit took effect: {}", tail(&log, 40));
}

#[test]
fn dev_refuses_an_invalid_setting_naming_the_variable() {
    if find_tool("cargo-lambda").is_none() {
        return skip(
            "dev_refuses_an_invalid_setting_naming_the_variable",
            "cargo-lambda is not installed (make test installs it)",
        );
    }
    let (env_file, log) = paths("dev-invalid");
    write_settings(&env_file, &random_prefix(), &["RATE_LIMIT_ALGORITHM=leaky"]);
    let mut child = dev(free_port(), &env_file, &log);
    let until = Instant::now() + STARTUP;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dev.sh") {
            break status;
        }
        assert!(
            Instant::now() < until,
            "make dev did not stop on an invalid setting: {}",
            tail(&log, 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = tail(&log, 40);
    assert!(!status.success(), "{output}");
    assert!(output.contains("RATE_LIMIT_ALGORITHM"), "{output}");
    assert!(!output.contains("serving on http"), "{output}");
}
