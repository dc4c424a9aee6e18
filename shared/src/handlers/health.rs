//! `GET /health`: is Redis reachable, and what is the circuit breaker doing?

use std::time::Instant;

use lambda_http::http::header::{HeaderValue, RETRY_AFTER};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use redis::Value;

use super::{require_method, within_deadline};
use crate::breaker::STATE_READ_COMMANDS;
use crate::connection::{ClusterState, RedisMode};
use crate::http::{json_response, ApiError};
use crate::responses::{
    CircuitBreakers, ClusterHealth, DegradedStatus, Health, HealthDegraded, HealthyStatus,
    RedisHealthy, RedisUnhealthy,
};
use crate::state::AppState;

/// Answers 200
/// `{"status": "ok", "redis": "healthy", "redis_latency_ms": 0.21,
///   "circuit_breaker": {"external_service": "closed" | "open" | "half_open"}, "version": …}`
/// when Redis answers, and 503 `{"status": "degraded", "redis": "unhealthy"}`
/// with `Retry-After` when it does not (within about 2 × `REDIS_TIMEOUT_MS`).
///
/// In cluster mode (`REDIS_MODE=cluster`) both bodies gain
/// `"cluster": {"cluster_state": "ok", "masters": 3, "masters_reachable": 3}`
/// (from `CLUSTER INFO` and `CLUSTER NODES` of the breaker's node, in the
/// same pipeline; when that pipeline fails, of any node, in a second round
/// trip), and the answer is 503 unless `cluster_state` is `ok`: some hash
/// slot is not served, so some requests would fail.
///
/// One Redis round trip: `PING` and the breaker's state read are pipelined.
/// An open breaker is a degraded dependency, not a dead service: health stays
/// 200. The breaker state shown is the *effective* one (`half_open` once the
/// reset timeout has passed, even before a probe).
pub async fn health(state: &AppState, req: Request) -> Response<Body> {
    within_deadline(state, async {
        require_method(&req, Method::GET)?;
        let started = Instant::now();
        let cluster_mode = state.redis.mode() == RedisMode::Cluster;
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        state.breaker.add_state_read(&mut pipe);
        if cluster_mode {
            ClusterState::add_read(&mut pipe);
        }
        let replies: Result<Vec<Value>, _> = pipe.query_async(&mut state.redis.clone()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let breaker = replies.as_ref().map_err(Clone::clone).and_then(|r| {
            state
                .breaker
                .effective_state_from(r.get(1..).unwrap_or_default())
        });
        let cluster = match (&replies, cluster_mode) {
            (Ok(r), true) => {
                let at = 1 + STATE_READ_COMMANDS;
                match (r.get(at), r.get(at + 1)) {
                    (Some(info), Some(nodes)) => Some(ClusterState::from_replies(info, nodes)),
                    _ => None,
                }
            }
            // The breaker's node refused (a slot not served answers
            // CLUSTERDOWN) or is gone: ask any node what the cluster is doing.
            (Err(_), true) => {
                let mut pipe = redis::pipe();
                ClusterState::add_read(&mut pipe);
                let read: Result<Vec<Value>, _> = pipe.query_async(&mut state.redis.clone()).await;
                read.ok().and_then(|r| match r.as_slice() {
                    [info, nodes] => Some(ClusterState::from_replies(info, nodes)),
                    _ => None,
                })
            }
            _ => None,
        };
        let cluster_ok = cluster
            .as_ref()
            .is_none_or(|c| c.as_ref().is_ok_and(|c| c.state == "ok"));
        let cluster = cluster.and_then(Result::ok).map(|c| ClusterHealth {
            cluster_state: c.state,
            masters: c.masters,
            masters_reachable: c.masters_reachable,
        });
        match breaker {
            Ok(breaker) if cluster_ok => Ok(json_response(
                StatusCode::OK,
                &Health {
                    status: HealthyStatus::Ok,
                    redis: RedisHealthy::Healthy,
                    redis_latency_ms: (latency_ms * 1000.0).round() / 1000.0,
                    circuit_breaker: CircuitBreakers {
                        external_service: breaker,
                    },
                    cluster,
                    version: env!("CARGO_PKG_VERSION").to_string(),
                },
            )),
            failed => {
                if let Err(err) = failed {
                    let _logged = ApiError::redis(&err);
                }
                if let Some(cluster) = &cluster {
                    tracing::warn!(
                        cluster_state = %cluster.cluster_state,
                        masters = cluster.masters,
                        masters_reachable = cluster.masters_reachable,
                        "the Redis Cluster does not serve every slot"
                    );
                }
                let mut response = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &HealthDegraded {
                        status: DegradedStatus::Degraded,
                        redis: RedisUnhealthy::Unhealthy,
                        cluster,
                        version: env!("CARGO_PKG_VERSION").to_string(),
                    },
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(1u32));
                Ok(response)
            }
        }
    })
    .await
}
