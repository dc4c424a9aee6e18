//! Figure 2's protocol: one run at one concurrency.
//!
//! Our handler ([`crate::throughput`]) and `redis-benchmark` replaying the
//! script call an accepted ingest makes on a single node (the limiter and the
//! storage in one call; [`crate::redis_side`]) alternate in [`SLICES`]
//! rounds of *half a replay, ours, half a replay*, each round on a third of
//! the run's requests: a spell of the shared machine's noise then falls on
//! both sides instead of on one measurement, and ours always sits between
//! the two halves of Redis' share, so a drift over a round touches both
//! alike. The slices of
//! each side are added together as if timed in one piece (requests over
//! total time). Every measurement starts with the rate-limit keys of the
//! earlier ones deleted ([`redis_side::clear`]), and a replay whose calls
//! failed in Redis (`cmdstat_evalsha` `failed_calls`) is an error, not a rate.

use redis::aio::MultiplexedConnection;
use shared::config::Config;

use crate::redis_side::{self, Argv, ServerStats};
use crate::throughput::{self, Measured};

/// Rounds of alternation per run.
pub const SLICES: usize = 3;

/// `redis-benchmark` runs of one command, added together.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Calls made.
    pub calls: usize,
    /// Their time as `redis-benchmark` reports it (calls / its rate), s.
    pub elapsed_s: f64,
    /// CPU `redis-benchmark` used, s.
    pub client_cpu_s: f64,
    /// What the server did meanwhile.
    pub server: ServerStats,
}

impl Replayed {
    /// Calls per second.
    pub fn rps(&self) -> f64 {
        self.calls as f64 / self.elapsed_s
    }

    fn merge(&mut self, other: Replayed) {
        self.calls += other.calls;
        self.elapsed_s += other.elapsed_s;
        self.client_cpu_s += other.client_cpu_s;
        self.server = self.server.plus(&other.server);
    }
}

/// One run of figure 2 at one concurrency.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Ours, one `AppState` per worker (the figure the target applies to).
    pub instances: Measured,
    /// Ours, one `AppState` for every worker (context).
    pub shared: Measured,
    /// `redis-benchmark`: the ingest's script call.
    pub ingest: Replayed,
    /// `redis-benchmark`: `return 1`.
    pub trivial: Replayed,
}

/// Where the run measures: the private server and what to send it.
pub struct Setup<'a> {
    /// The bench's own connection, for `INFO` and clearing keys.
    pub conn: &'a mut MultiplexedConnection,
    /// The private server's port.
    pub port: u16,
    /// The handler states' configuration.
    pub config: &'a Config,
    /// The ingest's and `return 1` calls `redis-benchmark` replays.
    pub replays: &'a [Argv; 2],
    /// `{prefix}:rl:*`: the keys deleted before each measurement.
    pub rate_limit_keys: &'a str,
}

/// `n` requests (rounded down to a multiple of [`SLICES`]) of each side at
/// concurrency `c`.
///
/// # Errors
/// A message when Redis, `redis-benchmark` or a handler state fails, or a
/// replayed call failed in Redis.
pub async fn run(setup: &mut Setup<'_>, c: usize, n: usize) -> Result<Sample, String> {
    let slice = n / SLICES;
    let [ingest, trivial] = setup.replays;
    let mut sample = Sample::default();
    for _ in 0..SLICES {
        let first = slice / 2;
        sample.ingest.merge(replay(setup, first, c, ingest).await?);
        redis_side::clear(setup.conn, setup.rate_limit_keys).await?;
        let ours =
            throughput::measure(setup.config, "bench_ingest", c, slice, false, setup.conn).await?;
        sample.instances.merge(ours);
        sample
            .ingest
            .merge(replay(setup, slice - first, c, ingest).await?);
    }
    redis_side::clear(setup.conn, setup.rate_limit_keys).await?;
    let shared = throughput::measure(
        setup.config,
        "bench_ingest",
        c,
        SLICES * slice,
        true,
        setup.conn,
    )
    .await?;
    sample.shared.merge(shared);
    sample.trivial = replay(setup, SLICES * slice, c, trivial).await?;
    Ok(sample)
}

/// One `redis-benchmark` run of `argv` on a keyspace cleared of rate-limit
/// keys, and what the server did meanwhile.
async fn replay(
    setup: &mut Setup<'_>,
    n: usize,
    c: usize,
    argv: &Argv,
) -> Result<Replayed, String> {
    redis_side::clear(setup.conn, setup.rate_limit_keys).await?;
    let before = ServerStats::read(setup.conn).await?;
    let replay = redis_side::redis_benchmark(setup.port, n, c, argv)?;
    let server = ServerStats::read(setup.conn).await?.since(&before);
    if server.evalsha_failed > 0 {
        return Err(format!(
            "{} of redis-benchmark's {n} calls failed in Redis: {}",
            server.evalsha_failed,
            argv.join(" ")
        ));
    }
    Ok(Replayed {
        calls: n,
        elapsed_s: n as f64 / replay.rps,
        client_cpu_s: replay.client_cpu_s,
        server,
    })
}
