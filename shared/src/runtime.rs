//! The Lambda runtime of the functions: `lambda_http::run` with CloudWatch
//! EMF metrics ([`crate::observability`]) flushed after every invocation.

use std::future::Future;

use lambda_http::{IntoResponse, Request};

use crate::observability::{self, ObservabilitySettings, COLD_START};

/// The `FunctionName` dimension: `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda
/// and by `cargo lambda watch`), else the executable's name.
fn function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::current_exe()
                .ok()?
                .file_name()?
                .to_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Installs the EMF recorder (once per process) and describes the metrics.
/// `None` if a recorder is already installed.
fn install(
    settings: &ObservabilitySettings,
) -> Option<&'static metrics_cloudwatch_embedded::Collector> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(settings.namespace.clone())
        .with_dimension("FunctionName", function_name())
        .lambda_cold_start_metric(COLD_START)
        .with_lambda_request_id("RequestId")
        .init();
    let collector = match collector {
        Ok(collector) => collector,
        Err(err) => {
            tracing::warn!(error = %err, "EMF metrics disabled");
            return None;
        }
    };
    observability::describe();
    Some(collector)
}

/// Runs the Lambda HTTP handler like `lambda_http::run`, with EMF metrics:
/// the recorder is installed with `settings`' namespace, and the metrics of
/// each invocation are written to stdout when it completes. Each
/// invocation runs inside the runtime's span, which carries `requestId`.
///
/// # Errors
/// What `lambda_http::run` returns: the runtime could not reach the Lambda
/// API.
pub async fn run<'a, T, F, R>(
    settings: &ObservabilitySettings,
    handler: T,
) -> Result<(), lambda_http::Error>
where
    T: FnMut(Request) -> F,
    F: Future<Output = Result<R, lambda_http::Error>> + Send + 'a,
    R: IntoResponse,
{
    match install(settings) {
        Some(collector) => {
            metrics_cloudwatch_embedded::lambda::handler::run_http(collector, handler).await
        }
        None => lambda_http::run(lambda_http::service_fn(handler)).await,
    }
}
