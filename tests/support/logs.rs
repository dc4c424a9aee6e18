//! The service's own log lines, captured in a test.
//!
//! [`CapturedLogs::install`] puts the functions' JSON subscriber
//! (`shared::telemetry::json_subscriber`, as they log in Lambda) on the
//! current thread, writing into memory; the tests then read what a log
//! reader would see. The guard is per thread, so tests running in parallel
//! in one binary never see each other's lines, provided each serves its
//! requests on its own single-threaded runtime (`#[tokio::test]`'s default).

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

/// Everything logged on this thread while the guard of
/// [`CapturedLogs::install`] lives.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

impl CapturedLogs {
    /// The service's JSON subscriber at `level` (a `RUST_LOG` filter such as
    /// `"info"` or `"trace"`) on this thread, until the guard is dropped.
    pub fn install(&self, level: &str) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(shared::telemetry::json_subscriber(
            Some(level),
            self.clone(),
        ))
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The lines written so far that are JSON objects, parsed.
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}
