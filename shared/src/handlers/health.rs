//! `GET /health`: can requests succeed, is acknowledged data at risk, and
//! what is the circuit breaker doing?

use std::time::Instant;

use lambda_http::http::header::{HeaderValue, RETRY_AFTER};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use redis::{RedisError, Value};

use super::{bounded, deadline, require_method};
use crate::breaker::STATE_READ_COMMANDS;
use crate::connection::{ClusterState, RedisMode};
use crate::http::{json_response, respond, ApiError};
use crate::redis_server::{self, assess, NodeInfo, Probe};
use crate::responses::{
    CircuitBreakers, ClusterHealth, ConditionEffect, Health, HealthCondition, HealthConditionName,
    HealthStatus, HealthUnavailable, RedisHealthy, RedisMemory, RedisUnhealthy, UnavailableStatus,
};
use crate::state::{AppState, EXTERNAL_SERVICE};

/// Answers whether requests can succeed, checking what they need of Redis:
///
/// - it answers (`PING`) and the breaker's state can be read;
/// - scripts may run: a harmless script on the breaker's hash slot
///   ([`redis_server::add_probe`]), refused with `NOPERM` when the user may
///   not run scripts, `OOM` when memory is full, `READONLY` on a replica;
/// - memory, eviction policy and role from `INFO memory stats replication`
///   (in cluster mode from every master);
/// - in cluster mode, that every hash slot is served (`CLUSTER INFO`,
///   `CLUSTER NODES`).
///
/// 200 `{"status": "ok", "redis": "healthy", "redis_latency_ms": 0.21,
///   "circuit_breaker": {"external_service": "closed" | "open" | "half_open"},
///   "memory": {…}, "conditions": [], "version": …}`; `status` is `degraded`
/// with each condition named in `conditions` when data or later requests
/// are at risk but requests succeed (an evicting `maxmemory-policy`, one
/// that cannot be read, memory nearly full under `noeviction`). 503
/// `{"status": "unavailable", "redis": "unhealthy", "conditions":
/// [{"name": …, "effect": "unavailable", "detail": …}], …}`
/// when requests cannot succeed: Redis does not answer (within about 2 ×
/// `REDIS_TIMEOUT_MS`), scripts are refused, memory is full under
/// `noeviction`, `REDIS_URL` reaches a read-only replica, or (cluster mode)
/// a slot is not served. `Retry-After` comes with a 503 unless every
/// condition needs an operator (scripts refused for want of permission,
/// memory full).
///
/// One Redis round trip on one node: everything above is pipelined. In
/// cluster mode two, sent concurrently: the pipeline (to the breaker's
/// master; `CLUSTER INFO`/`NODES` instead of `INFO`) and `INFO` to every
/// master. The first check after a node restarted costs one more (`EVAL`
/// of the probe, which that node then caches). Each reading is reported
/// through [`redis_server::ServerWatch::observe`]: a condition is logged
/// once when it appears, an evicting policy counted in the EMF metric
/// `RedisEvictingPolicy`.
///
/// An open breaker is a degraded dependency, not a dead service: health stays
/// 200 `ok`. The breaker state shown is the *effective* one (`half_open` once
/// the reset timeout has passed, even before a probe).
pub async fn health(state: &AppState, req: Request) -> Response<Body> {
    // Not `before`: this check reads the server on every call already.
    respond(bounded(deadline(state), state, check(state, req)).await)
}

async fn check(state: &AppState, req: Request) -> Result<Response<Body>, ApiError> {
    require_method(&req, Method::GET)?;
    let started = Instant::now();
    let cluster_mode = state.redis.mode() == RedisMode::Cluster;
    let probe_key = state.keys.breaker(EXTERNAL_SERVICE);
    let mut pipe = redis::pipe();
    // Each reply on its own: a refused probe must not hide the others.
    pipe.ignore_errors();
    pipe.cmd("PING");
    state.breaker.add_state_read(&mut pipe);
    redis_server::add_probe(&mut pipe, &probe_key);
    if cluster_mode {
        ClusterState::add_read(&mut pipe);
    } else {
        redis_server::add_info(&mut pipe);
    }
    let mut connection = state.redis.clone();
    let pipeline = pipe.query_async::<Vec<Value>>(&mut connection);
    let masters = async {
        if cluster_mode {
            Some(redis_server::read_info(&state.redis).await)
        } else {
            None
        }
    };
    let (replies, masters) = tokio::join!(pipeline, masters);
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;

    let probe_at = 1 + STATE_READ_COMMANDS;
    let breaker = replies.as_ref().map_err(Clone::clone).and_then(|r| {
        if let Some(Value::ServerError(err)) = r
            .iter()
            .take(probe_at)
            .find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(RedisError::from(err.clone()));
        }
        state
            .breaker
            .effective_state_from(r.get(1..).unwrap_or_default())
    });
    let mut probe = match &replies {
        Ok(r) => r.get(probe_at).map_or(Probe::NoAnswer, Probe::from_reply),
        Err(_) => Probe::NoAnswer,
    };
    if probe.is_noscript() {
        probe = redis_server::probe_eval(&state.redis, &probe_key).await;
    }
    let nodes: Result<Vec<NodeInfo>, String> = match (masters, &replies) {
        (Some(Ok(nodes)), _) => Ok(nodes.into_iter().map(|(_, info)| info).collect()),
        (Some(Err(err)), _) => Err(error_code(&err)),
        (None, Ok(r)) => match r.get(probe_at + 1) {
            Some(reply) => redis_server::nodes_from_reply(reply)
                .map(|nodes| nodes.into_iter().map(|(_, info)| info).collect()),
            None => Err("no reply".into()),
        },
        (None, Err(err)) => Err(error_code(err)),
    };
    let redis_answered = breaker.is_ok();
    let assessment = assess(
        redis_answered.then_some(&probe),
        nodes.as_deref().map_err(String::as_str),
    );
    if redis_answered {
        state.server.observe(&assessment);
    }

    let cluster = match (&replies, cluster_mode) {
        (Ok(r), true) => match (r.get(probe_at + 1), r.get(probe_at + 2)) {
            (Some(info), Some(nodes)) => Some(ClusterState::from_replies(info, nodes)),
            _ => None,
        },
        // The breaker's node is gone: ask any node what the cluster is doing.
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

    let mut conditions: Vec<HealthCondition> = Vec::new();
    let mut transient = false;
    if let Err(err) = &breaker {
        let _logged = ApiError::redis(err);
        conditions.push(unavailable(
            HealthConditionName::RedisUnavailable,
            unanswered(err),
        ));
        transient = true;
    }
    if !cluster_ok {
        if let Some(cluster) = &cluster {
            tracing::warn!(
                cluster_state = %cluster.cluster_state,
                masters = cluster.masters,
                masters_reachable = cluster.masters_reachable,
                "the Redis Cluster does not serve every slot"
            );
        }
        conditions.push(unavailable(
            HealthConditionName::ClusterDown,
            "the Redis Cluster does not serve every hash slot (cluster_state is not ok)".into(),
        ));
        transient = true;
    }
    if redis_answered {
        transient |= assessment
            .conditions
            .iter()
            .any(|c| c.blocks_requests() && c.is_transient());
        conditions.extend(assessment.conditions.iter().map(HealthCondition::from));
    }
    let memory = assessment.memory.as_ref().map(RedisMemory::from);
    let version = env!("CARGO_PKG_VERSION").to_string();

    match breaker {
        Ok(breaker)
            if !conditions
                .iter()
                .any(|c| c.effect == ConditionEffect::Unavailable) =>
        {
            Ok(json_response(
                StatusCode::OK,
                &Health {
                    status: if conditions.is_empty() {
                        HealthStatus::Ok
                    } else {
                        HealthStatus::Degraded
                    },
                    redis: RedisHealthy::Healthy,
                    redis_latency_ms: (latency_ms * 1000.0).round() / 1000.0,
                    circuit_breaker: CircuitBreakers {
                        external_service: breaker,
                    },
                    memory,
                    conditions,
                    cluster,
                    version,
                },
            ))
        }
        _ => {
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &HealthUnavailable {
                    status: UnavailableStatus::Unavailable,
                    redis: RedisUnhealthy::Unhealthy,
                    conditions,
                    memory,
                    cluster,
                    version,
                },
            );
            if transient {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(1u32));
            }
            Ok(response)
        }
    }
}

fn unavailable(name: HealthConditionName, detail: String) -> HealthCondition {
    HealthCondition {
        name,
        effect: ConditionEffect::Unavailable,
        detail,
    }
}

/// Why Redis' answer is missing, without its address or message (the
/// body is public; the log line of [`ApiError::redis`] has the cause).
fn unanswered(err: &RedisError) -> String {
    if err.is_timeout() {
        "Redis did not answer within about 2 × REDIS_TIMEOUT_MS".into()
    } else if err.is_io_error() || err.is_connection_refusal() || err.is_connection_dropped() {
        "Redis could not be reached".into()
    } else {
        format!(
            "Redis answered the health check's reads with {}",
            error_code(err)
        )
    }
}

/// A short name of what went wrong: the server's error code, or the kind.
fn error_code(err: &RedisError) -> String {
    match err.code() {
        Some(code) => code.to_string(),
        None => format!("{:?}", err.kind()),
    }
}
