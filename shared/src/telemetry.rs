//! Logging: JSON lines in Lambda, human-readable text locally.
//!
//! The format follows the function's log configuration: `AWS_LAMBDA_LOG_FORMAT=JSON`
//! (set by Lambda when the function's log format is JSON) gives one JSON object
//! per line, which CloudWatch Logs Insights can query; anything else gives
//! text. `RUST_LOG` (default `info`) filters, e.g. `RUST_LOG=shared=debug,info`.
//! The Lambda runtime opens a span per invocation carrying `requestId`, so
//! every line logged while serving a request names it.
//!
//! Secrets never reach a log line: configuration is logged through its
//! redacting `Debug`, API keys and IAM tokens are never logged.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once per cold start. Calling it again (as
/// tests may) is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
