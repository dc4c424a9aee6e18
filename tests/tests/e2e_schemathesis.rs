//! End-to-end test over HTTP, group `schemathesis`: requests generated from
//! `openapi.json` by [schemathesis](https://schemathesis.readthedocs.io)
//! (property-based API testing) against a local stack, failing on
//! - any 5xx from our functions (`not_a_server_error`);
//! - any response that does not conform to `openapi.json`: an undocumented
//!   status code, content type or header, a required header missing, or a
//!   body that does not validate against the documented schema.
//!
//! Valid and invalid requests (examples, coverage and fuzzing phases), a
//! bounded number per operation (`SCHEMATHESIS_MAX_EXAMPLES`, default 300)
//! with a fixed seed (`SCHEMATHESIS_SEED`, default 1), so that a run is
//! bounded (about half a minute on 2 cores) and repeatable; set another seed
//! to explore further. `SCHEMATHESIS_TIMEOUT_SECONDS` (default 900) bounds the
//! run.
//!
//! Answers the emulator (`cargo lambda watch`) gives itself, without invoking
//! a function, to input it cannot put into a Lambda event are not counted:
//! `tests/schemathesis_hooks.py` says exactly which and why.
//!
//! schemathesis comes from PyPI, pinned, in the repository's `.venv/`
//! (`make test` installs it; `scripts/test.sh` names the version), or from
//! `PATH`. Without it, or without `cargo-lambda`, the test reports
//! `SKIPPED` (or fails with `REQUIRE_E2E=1`). The stack allows far more
//! requests than the run sends ([`e2e::SCHEMATHESIS`]).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use analytics_tests::e2e;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::test]
async fn e2e_schemathesis_responses_conform_to_openapi_json() {
    let Some(schemathesis) = e2e::find_tool("schemathesis") else {
        e2e::skip(
            "end-to-end group schemathesis",
            "schemathesis is not installed (make test installs it into .venv/)",
        );
        return;
    };
    let Some(stack) = e2e::stack(&e2e::SCHEMATHESIS).await else {
        return;
    };
    let root = e2e::repo_root();
    // Reports land in the working directory: a scratch one under target/.
    let scratch = e2e::work_dir().join("schemathesis");
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    let output = scratch.join("run.log");
    let log = std::fs::File::create(&output).expect("create the run's log");
    let mut command = Command::new(&schemathesis);
    command
        .arg("run")
        .arg(root.join("openapi.json"))
        .args(["--url", &stack.base_url, "--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--max-examples",
            &env_or("SCHEMATHESIS_MAX_EXAMPLES", "300"),
        ])
        .args(["--seed", &env_or("SCHEMATHESIS_SEED", "1")])
        // One worker: with two, one worker's hypothesis changes the
        // interpreter's recursion limit while the other parses source for a
        // strategy's description, which CPython 3.11 (before 3.11.8) reports
        // as "SystemError: AST constructor recursion depth mismatch".
        .args(["--workers", &env_or("SCHEMATHESIS_WORKERS", "1")])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none", "--no-color"])
        .env(
            "SCHEMATHESIS_HOOKS",
            root.join("tests/schemathesis_hooks.py"),
        )
        .current_dir(&scratch)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("a second handle on the log"))
        .stderr(log);
    let mut child = analytics_tests::process::spawn_tied(command, libc::SIGKILL)
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", schemathesis.display()));

    let limit = Duration::from_secs(
        env_or("SCHEMATHESIS_TIMEOUT_SECONDS", "900")
            .parse()
            .unwrap(),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let tail = e2e::tail(&output, 80);
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "schemathesis found failures ({status}); its output ({}) ends with:\n{tail}",
            output.display()
        ),
        None => panic!("schemathesis did not finish within {limit:?}:\n{tail}"),
    }
}
