"""The design this project started from, as a measured peer.

A FastAPI service keeping its state in Redis with redis-py, as that design
describes it: a fixed-window rate limiter (`INCR` and `EXPIRE` in one
`MULTI`/`EXEC` pipeline) on `POST /api/metrics`, every point appended as JSON
to a Redis list per type, `GET /api/metrics/summary` computed from the whole
list and cached with `GET`/`SETEX`, and an in-process circuit breaker
(closed, open, half-open under an `asyncio.Lock`) around a simulated
external source. Nothing here is improved on that design: the benchmark
compares the project with it as it was.

Settings (environment): REDIS_URL, REDIS_KEY_PREFIX, RATE_LIMIT_REQUESTS,
RATE_LIMIT_WINDOW_SECONDS, CACHE_TTL_SECONDS, EXTERNAL_SERVICE_LATENCY_MS,
EXTERNAL_SERVICE_FAILURE_RATE, BREAKER_FAILURE_THRESHOLD,
BREAKER_RECOVERY_SECONDS.
"""

import asyncio
import json
import os
import random
import time
from datetime import datetime, timedelta, timezone

import redis.asyncio as redis
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

REDIS_URL = os.getenv("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.getenv("REDIS_KEY_PREFIX", "seed")
RATE_LIMIT_REQUESTS = int(os.getenv("RATE_LIMIT_REQUESTS", "5"))
RATE_LIMIT_WINDOW_SECONDS = int(os.getenv("RATE_LIMIT_WINDOW_SECONDS", "60"))
CACHE_TTL_SECONDS = int(os.getenv("CACHE_TTL_SECONDS", "60"))
EXTERNAL_LATENCY_S = float(os.getenv("EXTERNAL_SERVICE_LATENCY_MS", "100")) / 1000
EXTERNAL_FAILURE_RATE = float(os.getenv("EXTERNAL_SERVICE_FAILURE_RATE", "0.2"))
BREAKER_FAILURE_THRESHOLD = int(os.getenv("BREAKER_FAILURE_THRESHOLD", "3"))
BREAKER_RECOVERY_SECONDS = float(os.getenv("BREAKER_RECOVERY_SECONDS", "30"))

PERIODS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": timedelta(days=30),
}

app = FastAPI(title="Real-Time Analytics API (the original design)")
pool = redis.Redis.from_url(REDIS_URL, decode_responses=True)


class Metric(BaseModel):
    timestamp: datetime
    value: float
    type: str


class CircuitBreaker:
    """Closed, open, half-open; transitions under an asyncio.Lock."""

    def __init__(self, threshold: int, recovery_s: float):
        self.threshold = threshold
        self.recovery_s = recovery_s
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.lock = asyncio.Lock()

    async def call(self, func):
        async with self.lock:
            if self.state == "open":
                if time.monotonic() - self.opened_at < self.recovery_s:
                    raise RuntimeError("circuit open")
                self.state = "half-open"
        try:
            result = await func()
        except Exception:
            async with self.lock:
                self.failures += 1
                if self.state == "half-open" or self.failures >= self.threshold:
                    self.state = "open"
                    self.opened_at = time.monotonic()
            raise
        async with self.lock:
            self.state = "closed"
            self.failures = 0
        return result


breaker = CircuitBreaker(BREAKER_FAILURE_THRESHOLD, BREAKER_RECOVERY_SECONDS)


async def external_source():
    """The simulated unreliable external data source."""
    if EXTERNAL_LATENCY_S > 0:
        await asyncio.sleep(EXTERNAL_LATENCY_S)
    if random.random() < EXTERNAL_FAILURE_RATE:
        raise RuntimeError("external service failed")
    return {"status": "success", "external_metric_context": random.randint(1, 1000)}


async def external_data():
    try:
        return await breaker.call(external_source)
    except Exception:
        return {"status": "fallback", "external_metric_context": None}


@app.get("/health")
async def health():
    try:
        await pool.ping()
    except Exception:
        return JSONResponse({"status": "error", "redis": "unhealthy"}, status_code=503)
    return {"status": "ok", "redis": "healthy"}


@app.post("/api/metrics", status_code=201)
async def ingest(metric: Metric, request: Request):
    key = f"{PREFIX}:rate_limit:{request.client.host}"
    async with pool.pipeline(transaction=True) as pipe:
        count, _ = await pipe.incr(key).expire(key, RATE_LIMIT_WINDOW_SECONDS).execute()
    if count > RATE_LIMIT_REQUESTS:
        return JSONResponse(
            {"detail": "Too Many Requests"},
            status_code=429,
            headers={"Retry-After": str(RATE_LIMIT_WINDOW_SECONDS)},
        )
    point = {"timestamp": metric.timestamp.isoformat(), "value": metric.value, "type": metric.type}
    await pool.rpush(f"{PREFIX}:metrics:{metric.type}", json.dumps(point))
    return {"message": "Metric stored", "metric": point}


@app.get("/api/metrics/summary")
async def summary(type: str = Query(...), period: str = Query(...)):
    if period not in PERIODS:
        return JSONResponse({"detail": f"period must be one of {list(PERIODS)}"}, status_code=422)
    cache_key = f"{PREFIX}:summary:{type}:{period}"
    cached = await pool.get(cache_key)
    if cached is not None:
        return JSONResponse(json.loads(cached), headers={"X-Cache": "HIT"})
    since = datetime.now(timezone.utc) - PERIODS[period]
    values = []
    for raw in await pool.lrange(f"{PREFIX}:metrics:{type}", 0, -1):
        point = json.loads(raw)
        if datetime.fromisoformat(point["timestamp"]) >= since:
            values.append(point["value"])
    body = {
        "type": type,
        "period": period,
        "average_value": sum(values) / len(values) if values else 0.0,
        "count": len(values),
        "external_data": await external_data(),
    }
    await pool.setex(cache_key, CACHE_TTL_SECONDS, json.dumps(body))
    return JSONResponse(body, headers={"X-Cache": "MISS"})
