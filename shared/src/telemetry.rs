//! Logging: JSON lines in Lambda, human-readable text locally.
//!
//! The format follows the function's log configuration: `AWS_LAMBDA_LOG_FORMAT=JSON`
//! (set by Lambda when the function's log format is JSON) gives one JSON object
//! per line, which CloudWatch Logs Insights can query; anything else gives
//! text. `RUST_LOG` (default `info`) filters, e.g. `RUST_LOG=shared=debug,info`.
//! The Lambda runtime opens a span per invocation (`Lambda runtime invoke`)
//! carrying `requestId` and `xrayTraceId`. JSON lines list every span they
//! were logged in, outermost first, so every line logged while serving a
//! request names it as `spans[0].requestId` (Logs Insights: `spans.0.requestId`),
//! however deeply a library nests its own spans. Work a request spawns onto
//! another task keeps the id only if it is `.instrument`ed with the request's span.
//!
//! Secrets never reach a log line: configuration is logged through its
//! redacting `Debug`, API keys and IAM tokens are never logged.

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber once per cold start. Calling it again (as
/// tests may) is harmless.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let _already_set = if json {
        json_subscriber(rust_log.as_deref(), std::io::stdout).try_init()
    } else {
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_filter(filters(rust_log.as_deref())),
            )
            .try_init()
    };
}

/// The JSON-lines subscriber of Lambda, writing to `writer`: one object per
/// event, its fields at the top level, and `spans`, the spans it happened in
/// (outermost first). `rust_log` is `RUST_LOG`'s value.
pub fn json_subscriber<W>(rust_log: Option<&str>, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(writer)
            .with_filter(filters(rust_log)),
    )
}

/// `RUST_LOG` (`info` when unset or invalid), and whatever it says, nothing
/// from `aws_sigv4` below `info` (its `trace` lines print the canonical
/// request, session token included), and nothing from the Lambda runtime
/// below `debug` (its `trace` line "raw JSON event received from Lambda"
/// prints every event whole: API keys, idempotency keys, bodies).
fn filters<S: Subscriber>(rust_log: Option<&str>) -> impl tracing_subscriber::layer::Filter<S> {
    let env = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let no_secrets = filter_fn(|meta| {
        let target = meta.target();
        let signer = target.starts_with("aws_sigv4") && *meta.level() > Level::INFO;
        let raw_events = (target.starts_with("lambda_runtime")
            || target.starts_with("lambda_http"))
            && *meta.level() > Level::DEBUG;
        !(signer || raw_events)
    });
    env.and(no_secrets)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn every_json_line_of_an_invocation_names_its_request_id() {
        let captured = Captured::default();
        let subscriber = json_subscriber(None, captured.clone());
        tracing::subscriber::with_default(subscriber, || {
            // The span lambda_runtime opens around each invocation.
            let invoke = tracing::info_span!(
                "Lambda runtime invoke",
                requestId = "8f612f24-07e4-4676-8442-e8b13ced7f98",
                xrayTraceId = "Root=1-6b0ccbfd-54990c6d138e3abfd727f695"
            );
            let _invoke = invoke.enter();
            tracing::info!("directly in the invocation");
            // A library's own span inside the request.
            let inner = tracing::info_span!("load_credentials", provider = "Environment");
            let _inner = inner.enter();
            tracing::warn!(detail = 3, "inside a nested span");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert_eq!(
                line["spans"][0]["requestId"], "8f612f24-07e4-4676-8442-e8b13ced7f98",
                "{line}"
            );
        }
        assert_eq!(lines[1]["message"], "inside a nested span");
        assert_eq!(lines[1]["detail"], 3);
        assert_eq!(lines[1]["spans"][1]["name"], "load_credentials");
    }

    #[test]
    fn the_runtimes_raw_events_stay_off_whatever_rust_log_says() {
        for rust_log in ["trace", "info,lambda_runtime=trace", "lambda_http=trace"] {
            let captured = Captured::default();
            let subscriber = json_subscriber(Some(rust_log), captured.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(
                    target: "lambda_runtime::layers::api_response",
                    body = r#"{"headers":{"x-api-key":"secret-key"}}"#,
                    "raw JSON event received from Lambda"
                );
                tracing::trace!(target: "lambda_http::request", "an event, whole");
                tracing::debug!(target: "lambda_runtime::runtime", "a debug line");
                tracing::trace!(target: "shared::cache", "ours");
            });
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("secret-key"), "{rust_log}: {text}");
            assert!(!text.contains("an event, whole"), "{rust_log}: {text}");
            if rust_log == "trace" {
                assert!(text.contains("a debug line"), "{rust_log}: {text}");
                assert!(text.contains("ours"), "{rust_log}: {text}");
            }
        }
    }

    #[test]
    fn the_signers_trace_lines_stay_off_whatever_rust_log_says() {
        for rust_log in [
            "trace",
            "info,aws_sigv4=trace",
            "info,aws_sigv4::http_request=trace",
        ] {
            let captured = Captured::default();
            let subscriber = json_subscriber(Some(rust_log), captured.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(target: "aws_sigv4::http_request::sign", "canonical request");
                tracing::info!(target: "aws_sigv4::http_request::sign", "an info line");
                tracing::info!(target: "shared::cache", "ours");
            });
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("canonical request"), "{rust_log}: {text}");
            assert!(text.contains("an info line"), "{rust_log}: {text}");
            assert!(text.contains("ours"), "{rust_log}: {text}");
        }
    }
}
