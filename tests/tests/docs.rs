//! The interactive API reference renders in a real browser, from files the
//! `docs` function serves itself.
//!
//! A tiny in-process HTTP server on 127.0.0.1 hands every request to the
//! real handler (`shared::openapi::docs`); headless Chromium loads `/docs`,
//! runs its scripts and dumps the DOM, which must list the four operations.
//! The server records what the page asked for: only `/docs` (the page and its
//! assets) and `/openapi.json`, all answered 200 — nothing comes from
//! elsewhere (the page's Content-Security-Policy would block it anyway).
//!
//! Needs a Chromium binary (`CHROMIUM_BIN`, or `chromium`,
//! `chromium-browser`, `google-chrome` on `PATH`; Debian: `apt-get install
//! chromium`). Without one the test prints why and passes, so a machine
//! without a browser can still run the suite, unless `REQUIRE_CHROMIUM=1`
//! (for CI, where a skipped browser test would hide a missing install).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body as AxumBody};
use axum::http::Request as AxumRequest;
use axum::response::Response as AxumResponse;
use lambda_http::Body;

/// Longest a browser run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// (path and query, status) of every request the browser made.
type Log = Arc<Mutex<Vec<(String, u16)>>>;

fn find_chromium() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CHROMIUM_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|candidate| candidate.is_file())
}

/// Serves `shared::openapi::docs` on a free port of 127.0.0.1.
async fn serve_docs(log: Log) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(move |req: AxumRequest<AxumBody>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = to_bytes(body, 1 << 20).await.unwrap_or_default();
            let body = if bytes.is_empty() {
                Body::Empty
            } else {
                Body::Binary(bytes.to_vec())
            };
            let request = lambda_http::http::Request::from_parts(parts, body);
            let target = request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let response = shared::openapi::docs(&request);
            log.lock()
                .unwrap()
                .push((target, response.status().as_u16()));
            let (parts, body) = response.into_parts();
            let bytes = match body {
                Body::Text(text) => text.into_bytes(),
                Body::Binary(bytes) => bytes,
                _ => Vec::new(),
            };
            AxumResponse::from_parts(parts, AxumBody::from(bytes))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

/// Runs headless Chromium on `url` and returns the DOM after the page's
/// scripts ran (virtual time lets timers and fetches finish).
fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("docs-test-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let started = Instant::now();
    // Read stdout on a thread so a large DOM cannot block the browser on a
    // full pipe while we wait.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("browser status") {
            break status;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            panic!("chromium did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = reader.join().expect("reader thread").unwrap_or_default();
    let _ = std::fs::remove_dir_all(&profile);
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        }
        panic!("chromium exited with {status}: {err}");
    }
    dom
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_renders_the_four_operations_in_a_real_browser() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var_os("REQUIRE_CHROMIUM").is_none_or(|v| v != "1"),
            "REQUIRE_CHROMIUM=1 but no Chromium binary was found (apt-get install chromium, or set CHROMIUM_BIN)"
        );
        analytics_tests::report_skipped(
            "the_reference_renders_the_three_operations_in_a_real_browser",
            "no Chromium binary found (set CHROMIUM_BIN or install Debian's `chromium`); \
             the API reference was not rendered in a browser",
        );
        return;
    };
    let log: Log = Arc::default();
    let (base, server) = serve_docs(log.clone()).await;
    let url = format!("{base}/docs");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url))
        .await
        .expect("browser task");
    server.abort();

    // Swagger UI rendered one block per operation, with its path and
    // operation id (the page enables `displayOperationId`).
    assert!(
        dom.contains("swagger-ui"),
        "no Swagger UI in the DOM:\n{dom}"
    );
    for path in [
        "/health",
        "/api/metrics",
        "/api/metrics/summary",
        "/api/metrics/series",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "operation {path} not rendered:\n{dom}"
        );
    }
    for operation_id in [
        "health",
        "ingest_metric",
        "metrics_summary",
        "metrics_series",
    ] {
        assert!(
            dom.contains(&format!(">{operation_id}<")),
            "operation id {operation_id} not rendered:\n{dom}"
        );
    }
    assert!(dom.contains("Analytics API"), "title not rendered");

    let requests = log.lock().unwrap().clone();
    for (target, status) in &requests {
        assert!(
            target == "/openapi.json" || target == "/docs" || target.starts_with("/docs?asset="),
            "unexpected request {target}: {requests:?}"
        );
        assert_eq!(*status, 200, "{target}: {requests:?}");
    }
    for needed in [
        "/openapi.json",
        "/docs?asset=swagger-ui-bundle.js",
        "/docs?asset=swagger-init.js",
    ] {
        assert!(
            requests.iter().any(|(t, _)| t.starts_with(needed)),
            "the page never loaded {needed}: {requests:?}"
        );
    }
}
