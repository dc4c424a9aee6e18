//! End-to-end tests over HTTP, group `emf`: the real function binaries with
//! EMF metrics on (as inside Lambda) and a flush period far longer than the
//! test. Counts an instance holds are written when Lambda ends it: the
//! functions register a no-op extension so that a `SIGTERM` comes first,
//! and the test sends that `SIGTERM` to the ingest function's processes as
//! Lambda would, then finds every accepted metric counted in the log.

use std::time::Duration;

use analytics_tests::e2e::{self, now_rfc3339};
use analytics_tests::random_type;
use reqwest::StatusCode;
use serde_json::Value;

/// The sum of `metric` over the EMF documents in `log` (one JSON object per
/// line, starting with `{"_aws"`). The function processes share the log
/// with `cargo run`'s messages, which can land in front of a document on
/// its line, so a document is read from where it starts.
fn emf_sum(log: &str, metric: &str) -> u64 {
    log.lines()
        .filter_map(|line| line.find("{\"_aws\"").map(|at| &line[at..]))
        .filter_map(|doc| serde_json::from_str::<Value>(doc).ok())
        .filter_map(|doc| doc.get(metric).and_then(Value::as_u64))
        .sum()
}

#[tokio::test]
async fn e2e_counts_held_by_an_instance_are_written_at_shutdown() {
    let Some(stack) = e2e::stack(&e2e::EMF).await else {
        return;
    };
    let metric_type = random_type("e2e_emf");
    let ingests = 4;
    for value in 0..ingests {
        let response = stack
            .post_json(
                "/api/metrics",
                &serde_json::json!({
                    "type": metric_type,
                    "value": value,
                    "timestamp": now_rfc3339(),
                }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let pids = stack.function_pids("ingest-metric");
    assert!(!pids.is_empty(), "no ingest-metric process of this stack");
    for pid in &pids {
        analytics_tests::process::signal(*pid, libc::SIGTERM);
    }
    // Every ingest is counted once the processes have written what they held.
    let mut counted = 0;
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&stack.log_path).unwrap_or_default();
        counted = emf_sum(&log, "AcceptedMetrics");
        if counted >= ingests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        counted,
        ingests,
        "AcceptedMetrics over the EMF documents:\n{}",
        e2e::tail(&stack.log_path, 40)
    );
    assert!(
        log.contains("Graceful shutdown completed"),
        "the shutdown hook ran:\n{}",
        e2e::tail(&stack.log_path, 40)
    );
}
