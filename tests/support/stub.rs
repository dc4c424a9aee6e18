//! A scriptable local HTTP server standing in for the external data source.
//!
//! It answers every path and method with the current [`StubReply`] (status,
//! delay, body), which a test can change at any time, and counts the calls it
//! receives, so tests can check how often the source was really called (cache
//! hits, single-flight, an open circuit breaker). It listens on 127.0.0.1 only.
//!
//! ```ignore
//! let stub = Stub::start().await;
//! stub.set(StubReply::json(200, serde_json::json!({"external_metric_context": 7})));
//! let config = config(&[("EXTERNAL_SERVICE_URL", &stub.url())]);
//! // ... requests ...
//! assert_eq!(stub.calls(), 1);
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// What the stub answers: status, optional delay before answering, body and
/// its content type.
#[derive(Debug, Clone)]
pub struct StubReply {
    /// HTTP status code.
    pub status: u16,
    /// Time waited before the answer is sent (to exceed client timeouts).
    pub delay: Duration,
    /// The body, sent as is.
    pub body: String,
    /// The `content-type` of the body.
    pub content_type: &'static str,
}

impl StubReply {
    /// A JSON body with `status`.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            body: body.to_string(),
            content_type: "application/json",
        }
    }

    /// A plain-text body with `status` (e.g. a 500 error page, or a 200 that
    /// is not JSON).
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            body: body.to_string(),
            content_type: "text/plain",
        }
    }

    /// The same reply, sent after `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl Default for StubReply {
    /// A healthy source: 200 `{"external_metric_context": 342}`.
    fn default() -> Self {
        Self::json(200, serde_json::json!({ "external_metric_context": 342 }))
    }
}

#[derive(Default)]
struct StubState {
    reply: Mutex<StubReply>,
    calls: AtomicUsize,
    queries: Mutex<Vec<String>>,
}

/// A running stub server; it stops when dropped.
pub struct Stub {
    addr: SocketAddr,
    state: Arc<StubState>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    /// Starts a stub on a free port of 127.0.0.1, answering
    /// [`StubReply::default`] until told otherwise.
    pub async fn start() -> Stub {
        Self::start_on(0).await
    }

    /// Starts a stub on `port` of 127.0.0.1 (0: any free port); panics when
    /// it cannot listen there.
    pub async fn start_on(port: u16) -> Stub {
        Self::try_start_on(port)
            .await
            .unwrap_or_else(|e| panic!("stub server cannot listen on 127.0.0.1:{port}: {e}"))
    }

    /// Like [`Stub::start_on`], with the error of binding the port. The
    /// end-to-end stacks call the stub on a port fixed when they start.
    pub async fn try_start_on(port: u16) -> std::io::Result<Stub> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(StubState::default());
        let app = Router::new().fallback(answer).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Stub { addr, state, task })
    }

    /// The URL to configure as `EXTERNAL_SERVICE_URL`:
    /// `http://127.0.0.1:<port>/external`.
    pub fn url(&self) -> String {
        format!("http://{}/external", self.addr)
    }

    /// The address the stub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `reply` to every call from now on.
    pub fn set(&self, reply: StubReply) {
        *self.state.reply.lock().expect("stub state lock") = reply;
    }

    /// Calls received so far, counted when they arrive (a call the client
    /// abandoned at its timeout counts too).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// The raw query strings of the calls received so far, in arrival order.
    pub fn queries(&self) -> Vec<String> {
        self.state.queries.lock().expect("stub state lock").clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(state): State<Arc<StubState>>, RawQuery(query): RawQuery) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    state
        .queries
        .lock()
        .expect("stub state lock")
        .push(query.unwrap_or_default());
    let reply = state.reply.lock().expect("stub state lock").clone();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stub_answers_as_scripted_and_counts_calls() {
        let stub = Stub::start().await;
        let client = reqwest::Client::new();
        let first = client
            .get(format!("{}?type=cpu&period=daily", stub.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        let body: serde_json::Value = first.json().await.unwrap();
        assert_eq!(body["external_metric_context"], 342);

        stub.set(StubReply::text(503, "down"));
        let second = client.get(stub.url()).send().await.unwrap();
        assert_eq!(second.status(), 503);
        assert_eq!(second.text().await.unwrap(), "down");

        stub.set(StubReply::default().with_delay(Duration::from_millis(300)));
        let slow = client
            .get(stub.url())
            .timeout(Duration::from_millis(50))
            .send()
            .await;
        assert!(slow.is_err(), "the delay outlasts the client's timeout");

        assert_eq!(stub.calls(), 3);
        assert_eq!(stub.queries()[0], "type=cpu&period=daily");
    }
}
