//! The Lambda runtime of the functions: `lambda_http::run` with CloudWatch
//! EMF metrics ([`crate::observability`]) flushed after every invocation, and
//! the process entry point ([`main`]) every function's `main.rs` calls.

use std::future::Future;
use std::process::ExitCode;

use lambda_http::{Body, IntoResponse, Request, Response};

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
    let collector = if settings.emf_enabled() {
        install(settings)
    } else {
        None
    };
    match collector {
        Some(collector) => {
            metrics_cloudwatch_embedded::lambda::handler::run_http(collector, handler).await
        }
        None => lambda_http::run(lambda_http::service_fn(handler)).await,
    }
}

/// The body of every Redis-backed function: logging, the instance's
/// [`AppState`](crate::state::AppState) built once per cold start (it connects to
/// Redis lazily, on the first request), then `handler` for each request
/// under [`run`]. A configuration error exits the process with the message
/// naming the variable ([`AppState::from_env_or_exit`](crate::state::AppState::from_env_or_exit)).
///
/// # Errors
/// What [`run`] returns.
pub async fn serve_api<H, Fut>(handler: H) -> Result<(), lambda_http::Error>
where
    H: Fn(&'static crate::state::AppState, Request) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    crate::telemetry::init();
    // Leaked on purpose: the state lives as long as the process (one Lambda
    // instance), and a 'static borrow lets every request's future hold it.
    let state: &'static crate::state::AppState =
        Box::leak(Box::new(crate::state::AppState::from_env_or_exit()));
    run(&state.config.observability, move |req| async move {
        Ok::<_, lambda_http::Error>(handler(state, req).await)
    })
    .await
}

/// The command-line flag that makes a function validate its settings and
/// exit instead of serving: `0` when they are valid, `78` (`EX_CONFIG`) with
/// the message naming the variable otherwise. `make dev` runs it before
/// starting the emulator, so a bad `.env` is reported at once.
pub const CHECK_CONFIG_FLAG: &str = "--check-config";

/// The body of every function's `main`: prepares the process, then runs
/// `serve` on a tokio runtime. With [`CHECK_CONFIG_FLAG`] it only validates
/// the configuration ([`crate::config::Config::from_env`]) and exits.
///
/// Before any thread exists it removes `AWS_LAMBDA_MAX_CONCURRENCY` when that
/// asks for at most one request at a time (as `cargo lambda watch` sets it):
/// `lambda_runtime` then serves sequentially, as it does anyway, but would
/// otherwise warn on every start that its `concurrency-tokio` feature is off.
/// A value above 1 (Lambda Managed Instances) is kept, and so is the warning.
pub fn main<F, Fut>(serve: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), lambda_http::Error>>,
{
    if std::env::args().skip(1).any(|arg| arg == CHECK_CONFIG_FLAG) {
        return match crate::config::Config::from_env() {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("configuration error: {err}");
                ExitCode::from(78)
            }
        };
    }
    let sequential = std::env::var("AWS_LAMBDA_MAX_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|n| n <= 1);
    if sequential {
        // Sound: no other thread exists yet to read the environment.
        std::env::remove_var("AWS_LAMBDA_MAX_CONCURRENCY");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("the Lambda runtime stopped: {err}");
            ExitCode::FAILURE
        }
    }
}
