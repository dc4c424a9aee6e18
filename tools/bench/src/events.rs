//! The bench's synthetic requests: API Gateway HTTP API (payload format 2.0)
//! events from the `synthetic-events` builder the tests use, turned into a
//! `lambda_http::Request` by `lambda_http::request::from_str` (the runtime's
//! own deserialiser), so the handlers see what they see in AWS. The
//! cold-start figure sends the JSON itself through its runtime API emulation.
//! Client addresses come from [`next_client_ip`] (198.18.0.0/15, the block
//! RFC 2544 reserves for benchmarks).

pub use synthetic_events::{http_v2, next_client_ip, EventBuilder};

/// `POST /api/metrics` with one metric of `metric_type` timestamped now,
/// from `client_ip`.
pub fn ingest_event(metric_type: &str, value: f64, client_ip: &str) -> EventBuilder {
    http_v2("POST", "/api/metrics")
        .json(&serde_json::json!({
            "timestamp": shared::metric::format_timestamp(chrono::Utc::now()),
            "value": value,
            "type": metric_type,
        }))
        .source_ip(client_ip)
}

/// [`ingest_event`] from a fresh client address, as a request.
///
/// # Errors
/// `lambda_http`'s message when it does not accept the event (a bug here).
pub fn ingest(metric_type: &str, value: f64) -> Result<lambda_http::Request, String> {
    ingest_event(metric_type, value, &next_client_ip()).try_build()
}

/// `GET /api/metrics/summary?type=…&period=…` from a fresh client address,
/// with `Cache-Control: no-cache` when `no_cache`.
///
/// # Errors
/// `lambda_http`'s message when it does not accept the event (a bug here).
pub fn summary(
    metric_type: &str,
    period: &str,
    no_cache: bool,
) -> Result<lambda_http::Request, String> {
    let mut event = http_v2("GET", "/api/metrics/summary")
        .query(&format!("type={metric_type}&period={period}"))
        .source_ip(&next_client_ip());
    if no_cache {
        event = event.header("cache-control", "no-cache");
    }
    event.try_build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_requests() {
        let req = summary("cpu", "monthly", true).unwrap();
        assert_eq!(req.uri().path(), "/api/metrics/summary");
        assert_eq!(req.headers()["cache-control"], "no-cache");
        let req = ingest("cpu", 1.5).unwrap();
        assert_eq!(req.method(), "POST");
    }
}
