//! The Lambda runtime of the functions: `lambda_http::run` on a
//! current-thread tokio runtime (a Lambda instance serves one request at a
//! time), with CloudWatch EMF metrics ([`crate::observability`]) written by
//! a flush policy rather than after every invocation, and the process entry
//! point ([`main`]) every function's `main.rs` calls.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use lambda_http::{Body, Request, RequestExt, Response};
use metrics_cloudwatch_embedded::Collector;

use crate::observability::{self, FlushPolicy, FlushReason, ObservabilitySettings, COLD_START};

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

/// The EMF side of one instance: the recorder holding the counts since the
/// last flush, and the policy deciding when they are written.
pub struct Emf {
    collector: &'static Collector,
    policy: Mutex<FlushPolicy>,
}

/// The EMF property naming the invocation that forced a flush
/// ([`FlushReason::Urgent`]); documents written for other reasons sum many
/// invocations and carry none.
pub const REQUEST_ID_PROPERTY: &str = "RequestId";

impl Emf {
    /// Installs the EMF recorder (once per process) with `settings`'
    /// namespace and flush period, and describes the metrics. `None` if a
    /// recorder is already installed.
    pub fn install(settings: &ObservabilitySettings) -> Option<&'static Emf> {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(settings.namespace.clone())
            .with_dimension("FunctionName", function_name())
            .init();
        let collector = match collector {
            Ok(collector) => collector,
            Err(err) => {
                tracing::warn!(error = %err, "EMF metrics disabled");
                return None;
            }
        };
        observability::describe();
        Some(Box::leak(Box::new(Emf::new(collector, settings))))
    }

    /// The EMF side around an installed `collector`, with `settings`' flush
    /// period.
    pub fn new(collector: &'static Collector, settings: &ObservabilitySettings) -> Self {
        Self {
            collector,
            policy: Mutex::new(FlushPolicy::new(settings.flush_period)),
        }
    }

    /// Called when an invocation completes at `now`: `failed` when it
    /// answered a 5xx. Writes the held counts to `out` when the policy says
    /// so ([`FlushPolicy::after_invocation`]), with `request_id` on a
    /// document this invocation forced; returns why it wrote them.
    pub fn after_invocation(
        &self,
        now: Instant,
        request_id: Option<&str>,
        failed: bool,
        out: impl std::io::Write,
    ) -> Option<FlushReason> {
        let urgent = observability::take_urgent() || failed;
        let reason = self
            .policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .after_invocation(now, urgent)?;
        if reason == FlushReason::ColdStart {
            metrics::counter!(COLD_START).increment(1);
        }
        let tagged = reason == FlushReason::Urgent && request_id.is_some();
        if let (true, Some(id)) = (tagged, request_id) {
            self.collector
                .set_property(REQUEST_ID_PROPERTY, id.to_string());
        }
        self.write(out);
        if tagged {
            self.collector.remove_property(REQUEST_ID_PROPERTY);
        }
        Some(reason)
    }

    /// Writes every count held to `out` now (what a shutdown hook calls).
    pub fn flush(&self, out: impl std::io::Write) {
        self.policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flushed(Instant::now());
        self.write(out);
    }

    fn write(&self, out: impl std::io::Write) {
        if let Err(err) = self.collector.flush(out) {
            tracing::warn!(error = %err, "EMF metrics not written");
        }
    }
}

/// Runs the Lambda HTTP handler like `lambda_http::run`, with EMF metrics
/// when `settings` enable them: the recorder is installed with `settings`'
/// namespace, counts are held in the instance and written by the flush
/// policy ([`FlushPolicy`]): at the first invocation, at once after an
/// invocation that failed (a 5xx) or recorded a breaker transition, a
/// failed external call or a Redis error, every `METRICS_FLUSH_SECONDS`,
/// and after an idle spell. Each invocation runs inside the runtime's span,
/// which carries `requestId`.
///
/// # Errors
/// What `lambda_http::run` returns: the runtime could not reach the Lambda
/// API.
pub async fn run<H, Fut>(
    settings: &ObservabilitySettings,
    handler: H,
) -> Result<(), lambda_http::Error>
where
    H: Fn(Request) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let emf = if settings.emf_enabled() {
        Emf::install(settings)
    } else {
        None
    };
    if let Some(emf) = emf {
        flush_at_shutdown(emf).await;
    }
    lambda_http::run(lambda_http::service_fn(move |req: Request| async move {
        let Some(emf) = emf else {
            return Ok::<_, lambda_http::Error>(handler(req).await);
        };
        let request_id = req.lambda_context_ref().map(|c| c.request_id.clone());
        let response = handler(req).await;
        emf.after_invocation(
            Instant::now(),
            request_id.as_deref(),
            response.status().is_server_error(),
            std::io::stdout().lock(),
        );
        Ok(response)
    }))
    .await
}

/// Registers the hook that writes the held EMF counts when Lambda ends the
/// instance: Lambda sends SIGTERM (with up to 500 ms to finish) only to a
/// runtime with an extension registered, so `lambda_runtime` registers a
/// no-op internal extension for it (the pattern of
/// <https://github.com/aws-samples/graceful-shutdown-with-aws-lambda>). It
/// must run before the runtime's first `next` call. Where no Extensions API
/// answers, the instance runs without the hook (one warning): counts held
/// at its end are then lost, at most `METRICS_FLUSH_SECONDS` of them.
async fn flush_at_shutdown(emf: &'static Emf) {
    let hook = move || async move { emf.flush(std::io::stdout().lock()) };
    // The registration panics when it fails; on its own task, that panic
    // stays there.
    if let Err(err) = tokio::spawn(lambda_runtime::spawn_graceful_shutdown_handler(hook)).await {
        tracing::warn!(error = %err, "no EMF flush at shutdown: the extension could not register");
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
    run(&state.config.observability, move |req| handler(state, req)).await
}

/// The command-line flag that makes a function validate its settings and
/// exit instead of serving: `0` when they are valid, `78` (`EX_CONFIG`) with
/// the message naming the variable otherwise. `make dev` runs it before
/// starting the emulator, so a bad `.env` is reported at once.
pub const CHECK_CONFIG_FLAG: &str = "--check-config";

/// The body of every function's `main`: prepares the process, then runs
/// `serve` on a current-thread tokio runtime. With [`CHECK_CONFIG_FLAG`] it only validates
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
    // One thread: an instance serves one request at a time, so worker
    // threads would only add wake-ups across cores to every invocation.
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
