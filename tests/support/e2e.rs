//! The end-to-end suite's fixture: one local stack (`cargo lambda watch`
//! serving the real function binaries, on a real Redis) per *group* of tests,
//! started by the first test of the group that asks for it and stopped when
//! the test binary exits.
//!
//! Each group is its own test binary (`tests/tests/e2e_<group>.rs`), so
//! `cargo test` runs the groups one after another, and
//! `cargo test -p analytics-tests --test e2e_cache` runs one. Its tests start
//! with `let Some(stack) = e2e::stack(&e2e::CACHE).await else { return };`.
//! To add a group: a `pub static` [`Group`] here and a test file
//! `tests/tests/e2e_<name>.rs` whose tests ask [`stack`] for it.
//!
//! Why a test binary per group: one test per behaviour keeps the names
//! meaningful (a failure names the behaviour, and the group's other tests
//! still run), stacks never run side by side on a small machine, and plain
//! `cargo test` needs no other runner (cargo-nextest's test groups would
//! serialize tests but not share one stack among them).
//!
//! What a stack is:
//! - the functions, built first the way the emulator runs them
//!   (`cargo build --bin <function>`, one at a time, so with each package's
//!   own features), so that no request waits for a compilation;
//! - `cargo lambda watch --env-file <group>.env --invoke-address 127.0.0.1
//!   --invoke-port <free port> --concurrency 4 --ignore-changes` (several
//!   function processes per route share Redis, as Lambda instances do;
//!   `--ignore-changes`: the stack serves the code that was built, even if
//!   files change during the run);
//! - its Redis: `REDIS_URL` when set (`make test` sets it), else a
//!   [`PrivateRedis`](crate::private_redis::PrivateRedis) of its own on a
//!   free port, stopped after the emulator;
//! - its env file: that `REDIS_URL`, the suite's `REDIS_MODE`, a random
//!   `REDIS_KEY_PREFIX`, `RUST_LOG`
//!   and the group's [`Group::settings`];
//! - ready when `GET /health` answers 200 and `GET /api/metrics/summary`
//!   and `GET /api/metrics/series` answered (a 422 each, which starts those
//!   functions without using any quota: the emulator answers a 500 of its
//!   own to requests that reach a function while it is still starting).
//!
//! The env file and the emulator's log are kept in `target/<profile>/e2e/`
//! (`<group>.env`, `<group>.log`) for a look after a failure.
//!
//! The emulator dies with the test binary: it is stopped (SIGTERM, on which
//! it stops its function processes; SIGKILL after 10 s) by an exit hook, and
//! on Linux the kernel sends it SIGTERM if the test binary dies first
//! ([`crate::process`]).
//!
//! Without `cargo-lambda` (on `PATH`, or in the repository's `.venv/bin`,
//! where `make test` installs it) every end-to-end test prints a `SKIPPED`
//! line to stderr and passes, unless `REQUIRE_E2E=1` (set by `make test` and
//! CI), which makes it fail instead: the suite never passes silently without
//! its end-to-end tests where they are required.
//!
//! Settings (environment): `E2E_CONCURRENCY` (function processes per route,
//! default 4), `E2E_STARTUP_TIMEOUT_SECONDS` (from the emulator's start to
//! ready, default 300; the build before it is bounded only by the run's own
//! limit), `E2E_RUST_LOG` (the functions' `RUST_LOG`, default `info`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::{Mutex as AsyncMutex, MutexGuard, OnceCell};

use crate::stub::Stub;

/// A group of end-to-end tests and the settings of its stack, on top of
/// `REDIS_URL` and a random `REDIS_KEY_PREFIX`. The emulator reports every
/// caller as 127.0.0.1, so every group but [`RATELIMIT`] sets a rate limit far
/// above what its tests send.
pub struct Group {
    /// The group's name, in log lines and file names.
    pub name: &'static str,
    /// `(VARIABLE, value)` pairs written to the stack's env file.
    pub settings: &'static [(&'static str, &'static str)],
    /// Whether `EXTERNAL_SERVICE_URL` points at a [`Stub`] the tests serve
    /// ([`Stack::start_stub`]) on a port chosen for the stack.
    pub stub: bool,
    /// Whether the group's tests run one at a time ([`stack`] holds a lock for
    /// the test's duration): they share state of the stack (the caller's
    /// quota, the breaker, the stub's port).
    pub serial: bool,
    started: OnceCell<Result<Running, String>>,
    turn: AsyncMutex<()>,
}

impl Group {
    const fn new(
        name: &'static str,
        settings: &'static [(&'static str, &'static str)],
        stub: bool,
        serial: bool,
    ) -> Self {
        Self {
            name,
            settings,
            stub,
            serial,
            started: OnceCell::const_new(),
            turn: AsyncMutex::const_new(()),
        }
    }
}

/// Plain requests against the simulated source, which never fails here.
pub static DEFAULT: Group = Group::new(
    "default",
    &[
        ("RATE_LIMIT_REQUESTS", "100000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "100000"),
        ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "5"),
    ],
    false,
    false,
);

/// A small limit (3 per 60 s, sliding log) that the group's one test
/// exhausts.
pub static RATELIMIT: Group = Group::new(
    "ratelimit",
    &[
        ("RATE_LIMIT_REQUESTS", "3"),
        ("RATE_LIMIT_WINDOW_SECONDS", "60"),
        ("RATE_LIMIT_ALGORITHM", "sliding_log"),
    ],
    false,
    true,
);

/// The test's stub as the source, the breaker's threshold out of reach.
pub static CACHE: Group = Group::new(
    "cache",
    &[
        ("RATE_LIMIT_REQUESTS", "100000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "100000"),
        ("EXTERNAL_SERVICE_TIMEOUT_MS", "2000"),
        ("REQUEST_DEADLINE_MS", "6000"),
        ("CACHE_TTL_SECONDS", "60"),
        ("CACHE_FALLBACK_TTL_SECONDS", "2"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1000"),
    ],
    true,
    true,
);

/// The test's stub as the source: threshold 3, reset timeout 3 s, source
/// timeout 500 ms.
pub static BREAKER: Group = Group::new(
    "breaker",
    &[
        ("RATE_LIMIT_REQUESTS", "100000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "100000"),
        ("EXTERNAL_SERVICE_TIMEOUT_MS", "500"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "3"),
        ("CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "3"),
        ("CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", "1"),
        ("CACHE_FALLBACK_TTL_SECONDS", "1"),
        ("CACHE_TTL_SECONDS", "60"),
    ],
    true,
    true,
);

/// The simulated source with its default failure rate, so that fallback
/// bodies (and an open breaker) are checked against the OpenAPI document too.
pub static SCHEMATHESIS: Group = Group::new(
    "schemathesis",
    &[
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("SUMMARY_RATE_LIMIT_REQUESTS", "1000000"),
        ("SERIES_RATE_LIMIT_REQUESTS", "1000000"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "5"),
    ],
    false,
    true,
);

/// Secrets in every place a request can carry them (`x-api-key`,
/// `Authorization`, cookies, `Idempotency-Key`, bodies), with the functions
/// logging at their most verbose, dependencies included.
pub static SECRETS: Group = Group::new(
    "secrets",
    &[
        ("RATE_LIMIT_REQUESTS", "100000"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
        ("RUST_LOG", "trace"),
        // SHA-256 of `e2e-secret-api-key-7f3a`, the key the group's test sends.
        (
            "API_KEYS_SHA256",
            "f61701c81b094719eb08d44e12e37e9aa2974fac475aa0dd5ef42b826f0ec3d2",
        ),
    ],
    false,
    true,
);

/// EMF metrics on (as inside Lambda) with a flush period far longer than
/// the group's tests, so that counts stay held until something else
/// writes them.
pub static EMF: Group = Group::new(
    "emf",
    &[
        ("RATE_LIMIT_REQUESTS", "100000"),
        ("METRICS_EMF", "on"),
        ("METRICS_FLUSH_SECONDS", "3600"),
        ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
    ],
    false,
    true,
);

/// A group's running stack, shared by its tests.
struct Running {
    base_url: String,
    stub_port: u16,
    settings: Vec<(String, String)>,
    log_path: PathBuf,
    emulator_pid: u32,
}

/// One test's view of its group's stack, with an HTTP client of its own (a
/// client belongs to the runtime of the test that made it).
pub struct Stack {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base_url: String,
    /// A client with a generous timeout: the emulator starts a function
    /// process on its first request to a route, and with `--concurrency`
    /// above 1 also under concurrent load.
    pub client: reqwest::Client,
    stub_port: u16,
    settings: Vec<(String, String)>,
    /// The emulator's log: its own lines and every function process'
    /// output.
    pub log_path: PathBuf,
    /// The emulator's process id; the function processes it starts are
    /// its descendants ([`Stack::function_pids`]).
    pub emulator_pid: u32,
    _turn: Option<MutexGuard<'static, ()>>,
}

/// The stack of `group`, started on first use; `None` after a `SKIPPED` line
/// when `cargo-lambda` is not installed (a failure with `REQUIRE_E2E=1`).
///
/// Panics when the stack does not start (its log's last lines are in the
/// message).
pub async fn stack(group: &'static Group) -> Option<Stack> {
    let Some(cargo_lambda) = find_tool("cargo-lambda") else {
        skip(
            &format!("end-to-end group {}", group.name),
            "cargo-lambda is not installed (make test installs it into .venv/)",
        );
        return None;
    };
    let turn = if group.serial {
        Some(group.turn.lock().await)
    } else {
        None
    };
    let running = group
        .started
        .get_or_init(|| start(group, cargo_lambda))
        .await
        .as_ref()
        .unwrap_or_else(|e| panic!("e2e[{}]: {e}", group.name));
    Some(Stack {
        base_url: running.base_url.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client"),
        stub_port: running.stub_port,
        settings: running.settings.clone(),
        log_path: running.log_path.clone(),
        emulator_pid: running.emulator_pid,
        _turn: turn,
    })
}

/// Reports that `what` did not run because of `reason`
/// ([`crate::report_skipped`]), or panics when `REQUIRE_E2E=1`.
pub fn skip(what: &str, reason: &str) {
    if std::env::var("REQUIRE_E2E").is_ok_and(|v| v == "1") {
        panic!("{what} cannot run: {reason} (REQUIRE_E2E=1)");
    }
    crate::report_skipped(what, reason);
}

/// `name` on `PATH`, else in the repository's `.venv/bin` (where `make test`
/// installs the Python-packaged tools).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([repo_root().join(".venv/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The workspace root (the parent of this crate's folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// `target/<profile>/e2e/`, for the stacks' env files and logs.
pub fn work_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("e2e");
    std::fs::create_dir_all(&dir).expect("create target/<profile>/e2e");
    dir
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start(group: &'static Group, cargo_lambda: PathBuf) -> Result<Running, String> {
    let began = Instant::now();
    let dir = work_dir();
    let log_path = dir.join(format!("{}.log", group.name));
    let env_path = dir.join(format!("{}.env", group.name));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;

    build_functions(&log).map_err(|e| format!("{e}\n{}", tail(&log_path, 40)))?;

    let redis_url = match std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => url,
        None => private_redis()?,
    };
    let port = crate::free_port();
    let stub_port = crate::free_port();
    let mut settings = vec![
        ("REDIS_URL".to_string(), redis_url),
        // The suite's mode (`REDIS_MODE=cluster` with a cluster's node as
        // `REDIS_URL`: the end-to-end groups then run on the cluster too).
        ("REDIS_MODE".to_string(), crate::redis_mode()),
        (
            "REDIS_KEY_PREFIX".to_string(),
            format!(
                "e2e-{}-{}",
                group.name,
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
        ),
        (
            "RUST_LOG".to_string(),
            std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ];
    if group.stub {
        settings.push((
            "EXTERNAL_SERVICE_URL".into(),
            format!("http://127.0.0.1:{stub_port}/external"),
        ));
    }
    // A group's own value of a variable replaces the default above (one
    // line per variable in the env file, so no reader's precedence rule
    // matters).
    for (name, value) in group.settings {
        settings.retain(|(k, _)| k != name);
        settings.push((name.to_string(), value.to_string()));
    }
    let env_text: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_path, env_text).map_err(|e| format!("{}: {e}", env_path.display()))?;

    let mut command = Command::new(&cargo_lambda);
    command
        .args(["lambda", "watch", "--env-file"])
        .arg(&env_path)
        .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
        .arg(port.to_string())
        .arg("--concurrency")
        .arg(env_u64("E2E_CONCURRENCY", 4).to_string())
        .arg("--ignore-changes")
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    without_test_env(&mut command);
    let child = crate::process::spawn_tied(command, libc::SIGTERM)
        .map_err(|e| format!("cannot start {}: {e}", cargo_lambda.display()))?;
    let emulator_pid = child.id();
    let watcher = Arc::new(Mutex::new(Some(child)));
    let stopper = watcher.clone();
    crate::process::at_exit(move || stop(&stopper));

    let base_url = format!("http://127.0.0.1:{port}");
    let deadline =
        Instant::now() + Duration::from_secs(env_u64("E2E_STARTUP_TIMEOUT_SECONDS", 300));
    let ready = wait_until_ready(&base_url, &watcher, deadline).await;
    if let Err(e) = ready {
        stop(&watcher);
        return Err(format!(
            "the stack did not start: {e}\nlast lines of {}:\n{}",
            log_path.display(),
            tail(&log_path, 40)
        ));
    }
    let _ = writeln!(
        std::io::stderr(),
        "e2e[{}]: stack ready on {base_url} in {:.1} s (log: {})",
        group.name,
        began.elapsed().as_secs_f64(),
        log_path.display()
    );
    Ok(Running {
        base_url,
        stub_port,
        settings,
        log_path,
        emulator_pid,
    })
}

/// Starts the stack's own `redis-server`, stopped when the test binary exits
/// (after the emulator: exit hooks run in reverse order); its URL.
fn private_redis() -> Result<String, String> {
    let binary = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
    if find_tool(&binary).is_none() && !Path::new(&binary).is_file() {
        return Err(format!(
            "REDIS_URL is not set and there is no {binary} to start a Redis with"
        ));
    }
    let server = crate::private_redis::PrivateRedis::start();
    let url = server.url();
    crate::process::at_exit(move || drop(server));
    Ok(url)
}

/// Builds every function binary (one crate per folder of `functions/`) the
/// way `cargo lambda watch` runs it, once per test binary. Output goes to
/// `log`.
fn build_functions(log: &std::fs::File) -> Result<(), String> {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return Ok(());
    }
    let mut functions: Vec<String> = std::fs::read_dir(repo_root().join("functions"))
        .map_err(|e| format!("functions/: {e}"))?
        .flatten()
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    functions.sort();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for function in functions {
        let mut command = Command::new(&cargo);
        let status = without_test_env(&mut command)
            .args(["build", "--quiet", "--bin", &function])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log.try_clone().map_err(|e| e.to_string())?)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --bin {function} failed ({status})"));
        }
    }
    *built = true;
    Ok(())
}

/// The variables `cargo test` sets for the test binary about the test's own
/// package (`CARGO_PKG_*`, `CARGO_MANIFEST_DIR`, ...), unset again: some
/// build scripts (ring's) rerun when one of them changes, so a build under
/// them would not reuse the artifacts of a build from a shell, and the next
/// `cargo build` from the shell would redo it.
fn without_test_env(command: &mut Command) -> &mut Command {
    const PACKAGE_VARIABLES: [&str; 6] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_BIN_NAME",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("CARGO_PKG_") || PACKAGE_VARIABLES.contains(&name_str.as_ref()) {
            command.env_remove(&name);
        }
    }
    command
}

async fn wait_until_ready(
    base_url: &str,
    watcher: &Mutex<Option<Child>>,
    deadline: Instant,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    loop {
        if let Some(Some(status)) = watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(|child| child.try_wait().ok().flatten())
        {
            return Err(format!("cargo lambda watch exited ({status})"));
        }
        let last = match client.get(format!("{base_url}/health")).send().await {
            Ok(response) if response.status() == StatusCode::OK => break,
            Ok(response) => format!("GET /health answered {}", response.status()),
            Err(e) => format!("GET /health: {e}"),
        };
        if Instant::now() > deadline {
            return Err(format!("not ready in time; last: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The emulator answers a 500 of its own to a request that reaches a
    // function while its first instance is still starting: every route's
    // first instance is started here, one request at a time (a 422 or 401
    // warms a function without using any quota).
    for path in ["/api/metrics/summary", "/api/metrics/series"] {
        client
            .get(format!("{base_url}{path}"))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| format!("warming up GET {path}: {e}"))?;
    }
    Ok(())
}

/// Stops the watcher: SIGTERM, on which it stops its function processes
/// (they run in sessions of their own, out of reach of a process-group
/// signal), then SIGKILL if it is still there after 10 s.
fn stop(watcher: &Mutex<Option<Child>>) {
    let Some(mut child) = watcher.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    crate::process::signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of the file at `path`.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Stack {
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
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_raw(path, &body.to_string()).await
    }

    /// The processes of function `binary` (its executable's file name, as
    /// `ingest-metric`) this stack's emulator has started: descendants of
    /// [`Stack::emulator_pid`], read from `/proc`.
    pub fn function_pids(&self, binary: &str) -> Vec<u32> {
        let parent_of = |pid: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces or parentheses.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let descends = |mut pid: u32| {
            for _ in 0..16 {
                match parent_of(pid) {
                    Some(parent) if parent == self.emulator_pid => return true,
                    Some(parent) if parent > 1 => pid = parent,
                    _ => return false,
                }
            }
            false
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()
                    .and_then(|exe| exe.file_name().map(|n| n == binary))
                    .unwrap_or(false)
            })
            .filter(|pid| descends(*pid))
            .collect()
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

    /// Starts the external source the stack is configured to call (groups
    /// with [`Group::stub`]). The previous test's stub may still hold the
    /// port for a moment while its runtime shuts down, so binding is retried
    /// for up to 5 s.
    pub async fn start_stub(&self) -> Stub {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Stub::try_start_on(self.stub_port).await {
                Ok(stub) => return stub,
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "the stub cannot listen on 127.0.0.1:{}: {e}",
                        self.stub_port
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

// ------------------------------------------------- assertions and requests ---

/// Status, headers and JSON body of `response`; panics when the body is not
/// JSON.
pub async fn json_body(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
    (status, headers, body)
}

/// The value of header `name`, when present and text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts an RFC 9457 problem details response with status `expected`.
pub fn assert_problem(status: StatusCode, headers: &HeaderMap, body: &Value, expected: u16) {
    assert_eq!(status.as_u16(), expected, "{body}");
    let content_type = header(headers, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content-type {content_type:?}"
    );
    assert_eq!(body["status"], expected, "{body}");
    assert!(body["type"].is_string(), "{body}");
    assert!(body["title"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
}

/// The fields named in a 422's `errors` list.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a 422 lists its errors: {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `"default";r=2;t=60` → the value of `param` (`r`, `t`, `q`, `w`).
pub fn structured_param(field: &str, param: &str) -> Option<u64> {
    field
        .split(';')
        .map(str::trim)
        .find_map(|part| part.strip_prefix(&format!("{param}=")))
        .and_then(|v| v.trim().parse().ok())
}

/// The current time as RFC 3339 UTC with whole seconds, e.g.
/// `2026-02-18T12:00:00Z`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A timestamp `seconds_ago` (inside every window ending now), in UTC.
pub fn recent_utc(seconds_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds_ago))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A metric of `metric_type` with `value`, timestamped 2 s ago.
pub fn metric(metric_type: &str, value: f64) -> Value {
    json!({ "timestamp": recent_utc(2), "value": value, "type": metric_type })
}

/// `GET /api/metrics/summary?<query>` as status, headers and JSON body.
pub async fn summary(stack: &Stack, query: &str) -> (StatusCode, HeaderMap, Value) {
    json_body(stack.get(&format!("/api/metrics/summary?{query}")).await).await
}

/// Asserts that the JSON number `actual` equals `expected` within 1e-9
/// relative.
pub fn assert_close(actual: &Value, expected: f64) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{actual} is a number"));
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{actual} != {expected}"
    );
}
