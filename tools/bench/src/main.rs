//! `bench`: how close each path of the service is to the limit set by Redis
//! itself, and how its cost grows with data. `make bench` (`scripts/bench.sh`)
//! runs it against a private `redis-server` on 127.0.0.1, keeps the raw
//! results in `target/bench/` and fills the tables of `BENCHMARKS.md`.
//!
//! ```text
//! bench measure --port <redis port> --out results.json [--runs 5] [--quick]
//!               [--functions-dir target/release] [--arm64-dir target/lambda]
//! bench report  --dir target/bench --out BENCHMARKS.md [--readme README.md]
//!               [--command "make bench"] [--build-seconds S] …
//! bench clear   --port <redis port> --pattern <glob>
//! bench cluster --port <redis port> --cluster-port <cluster node port>
//!               --results results.json [--client-threads 1]
//! bench peer    --port <redis port> --redis-pid P --out peer.json
//!               --ours-url URL --ours-pid P --ours-prefix X
//!               --seed-url URL --seed-pid P --seed-prefix X [--rounds 3] [--quick]
//! bench invocation --url <emulator URL> --out invocation.jsonl [--runs 3]
//!               [--seconds 8] [--connections 4] [--warmup-seconds 3]
//!               [--functions-dir target/release]
//! ```
//!
//! Every figure is measured `--runs` times, runs interleaved so that a slow
//! spell of the machine touches every figure alike, and reported as the
//! median with its spread. Load is bounded: fixed request counts, fixed data
//! sets, every child process under a time limit, only 127.0.0.1.
//!
//! Modules, each depending only on those listed after it: `report` (the
//! tables, from `results`), the figures' measurements (`cluster`,
//! `cache_hit` and `figure2` over
//! `throughput` and `redis_side`, `peer` and `invocation` over `load`, `peer` over `data_size`, `dimensions` over `data_size`,
//! `data_size`, `cold_start`), then `results`,
//! `events`, `process` and `stats`.

mod cache_hit;
mod cluster;
mod cold_start;
mod data_size;
mod dimensions;
mod events;
mod figure2;
mod invocation;
mod load;
mod peer;
mod process;
mod redis_side;
mod report;
mod results;
mod stats;
mod throughput;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use shared::config::Config;
use shared::metric::MetricType;
use shared::AppState;

use redis_side::Argv;
use results::{BinarySize, ColdStartRow, Machine, Results, RoundTrips, ThroughputRow};

/// The concurrencies of figure 2.
const CONCURRENCIES: [usize; 3] = [1, 16, 64];
/// The functions whose cold start is measured (the four endpoints of the
/// API; `docs` only serves static documents), with their first request.
const FUNCTIONS: [(&str, &str); 4] = [
    ("health", "GET /health"),
    ("ingest-metric", "POST /api/metrics (one metric)"),
    (
        "metrics-summary",
        "GET /api/metrics/summary?period=daily (cache miss)",
    ),
    (
        "metrics-series",
        "GET /api/metrics/series?period=daily&step=1h (cache miss)",
    ),
];
/// `bench clear`: deletes the keys of the private Redis on `--port` that
/// match `--pattern` (a `SCAN MATCH` glob) with [`redis_side::clear`], the
/// same way the in-process figures clear theirs; returns how many.
///
/// # Errors
/// A missing option, or no Redis on the port.
async fn clear(opts: &Options) -> Result<u64, String> {
    let port = opts.get("port").ok_or("--port is required")?;
    let pattern = opts.get("pattern").ok_or("--pattern is required")?;
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/0")).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("no Redis at 127.0.0.1:{port}: {e}"))?;
    redis_side::clear(&mut conn, pattern).await
}

/// Every function the release build produces a `bootstrap` for.
const RELEASED: [&str; 5] = [
    "health",
    "ingest-metric",
    "metrics-summary",
    "metrics-series",
    "docs",
];

/// The functions' allocator (see `functions/health/src/main.rs`): the
/// in-process figures run the same handlers and must allocate the same way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("measure") => options(&args[1..]).and_then(|opts| {
            let threads: usize = match opts.get("client-threads") {
                Some(n) => n.parse().map_err(|_| "--client-threads: not a number")?,
                None => 1,
            };
            runtime(threads)?.block_on(measure(&opts, threads))
        }),
        Some("cluster") => options(&args[1..]).and_then(|opts| {
            let threads: usize = match opts.get("client-threads") {
                Some(n) => n.parse().map_err(|_| "--client-threads: not a number")?,
                None => 1,
            };
            runtime(threads)?.block_on(cluster::measure(&opts))
        }),
        Some("peer") => {
            options(&args[1..]).and_then(|opts| runtime(1)?.block_on(peer::measure(&opts)))
        }
        Some("invocation") => options(&args[1..]).and_then(|opts| invocation::measure(&opts)),
        Some("report") => options(&args[1..]).and_then(|opts| report::write(&opts)),
        Some("clear") => {
            options(&args[1..]).and_then(|opts| runtime(1)?.block_on(clear(&opts)).map(|_| ()))
        }
        _ => Err(
            "usage: bench measure --port <redis port> --out <file> [--runs N] [--quick] \
                  [--only 2,8] [--client-threads N] [--functions-dir DIR] [--arm64-dir DIR] \
                  [--sizes-file BUILD_SIZES.md [--sizes-sources TEXT]]\n       \
                  bench report --dir <results dir> --out BENCHMARKS.md [--readme README.md] \
                  [--name value ...]\n       \
                  bench clear --port <redis port> --pattern <glob>\n       \
                  bench invocation --url <emulator URL> --out <file.jsonl> [--runs 3] \
                  [--seconds 8] [--connections 4] [--warmup-seconds 3] \
                  [--functions-dir DIR]\n       \
                  bench cluster --port <redis port> --cluster-port <cluster node port> \
                  --results <results.json> [--client-threads N]\n       \
                  bench peer --port <redis port> --redis-pid P --out <peer.json> \
                  --ours-url URL --ours-pid P --ours-prefix X --seed-url URL --seed-pid P \
                  --seed-prefix X [--rounds N] [--seconds S] [--points N] [--quick]"
                .to_string(),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime the simulated instances run on. One thread by default, like
/// `redis-benchmark`'s single event loop: the client side of figure 2 then
/// takes at most one of the machine's cores and leaves Redis the other, for
/// both clients alike. More threads: a multi-threaded runtime (what each
/// function's `#[tokio::main]` starts, one worker per core).
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().map_err(|e| e.to_string())
}

/// `--name value` pairs (a flag without a value is `"1"`).
pub type Options = HashMap<String, String>;

fn options(args: &[String]) -> Result<Options, String> {
    let mut opts = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let name = args[i]
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {:?}", args[i]))?;
        match args.get(i + 1).filter(|v| !v.starts_with("--")) {
            Some(value) => {
                opts.insert(name.to_string(), value.clone());
                i += 2;
            }
            None => {
                opts.insert(name.to_string(), "1".to_string());
                i += 1;
            }
        }
    }
    Ok(opts)
}

fn log(message: &str) {
    eprintln!("==> {message}");
}

/// Sizes of one run of each figure; `--quick` shrinks them to try the
/// harness itself.
struct Plan {
    runs: usize,
    requests: [usize; 3],
    large_points: u64,
    small_points: u64,
    types: usize,
    points_per_type: u64,
    aggregate_samples: usize,
    handler_samples: usize,
    tag_points: u64,
    tag_hosts: u64,
    tag_samples: usize,
    tag_host_group_samples: usize,
    tag_ingest_metrics: usize,
    hit_requests: usize,
}

async fn measure(opts: &Options, client_threads: usize) -> Result<(), String> {
    let port: u16 = opts
        .get("port")
        .ok_or("--port is required")?
        .parse()
        .map_err(|_| "--port: not a port")?;
    let out = PathBuf::from(opts.get("out").ok_or("--out is required")?);
    let quick = opts.contains_key("quick");
    let runs: usize = match opts.get("runs") {
        Some(r) => r.parse().map_err(|_| "--runs: not a number")?,
        None if quick => 1,
        None => 5,
    };
    let plan = if quick {
        Plan {
            runs,
            requests: [600, 2_100, 4_200],
            large_points: 20_000,
            small_points: 1_000,
            types: 20,
            points_per_type: 1_000,
            aggregate_samples: 20,
            handler_samples: 10,
            tag_points: 20_000,
            tag_hosts: 100,
            tag_samples: 20,
            tag_host_group_samples: 5,
            tag_ingest_metrics: 2_000,
            hit_requests: 4_200,
        }
    } else {
        Plan {
            runs,
            requests: [4_200, 19_800, 30_000],
            large_points: 1_000_000,
            small_points: 1_000,
            types: 1_000,
            points_per_type: 1_000,
            aggregate_samples: 200,
            handler_samples: 100,
            tag_points: 1_000_000,
            tag_hosts: 100,
            tag_samples: 100,
            tag_host_group_samples: 10,
            tag_ingest_metrics: 4_000,
            hit_requests: 30_000,
        }
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let config = |pairs: &[(&str, &str)]| -> Result<Config, String> {
        let mut all = vec![
            ("REDIS_URL", url.as_str()),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
            ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
            ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
        ];
        all.extend_from_slice(pairs);
        Config::from_pairs(&all).map_err(|e| e.to_string())
    };
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("no Redis at 127.0.0.1:{port}: {e}"))?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut results = Results {
        runs: plan.runs,
        started_at: chrono::Utc::now().to_rfc3339(),
        load_start: results::load_average(),
        machine: Machine::read(),
        redis_version: info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string(),
        prefix: prefix.clone(),
        ..Results::default()
    };
    results.throughput.requests = CONCURRENCIES.iter().copied().zip(plan.requests).collect();
    results.throughput.rows = CONCURRENCIES
        .iter()
        .map(|&c| ThroughputRow {
            concurrency: c,
            ..ThroughputRow::default()
        })
        .collect();
    results.data_size.small_points = plan.small_points;
    results.data_size.large_points = plan.large_points;
    results.data_size.samples_per_run = plan.aggregate_samples;
    results.data_size.handler_samples_per_run = plan.handler_samples;
    results.data_size.batch = data_size::BATCH;
    results.data_size.buckets_read = data_size::monthly_buckets();
    results.tags.points = plan.tag_points;
    results.tags.hosts = plan.tag_hosts;
    results.tags.regions = dimensions::REGIONS.len() as u64;
    results.tags.samples_per_run = plan.tag_samples;
    results.tags.host_group_samples_per_run = plan.tag_host_group_samples;
    results.tags.ingest_metrics = plan.tag_ingest_metrics;

    let ingest_config = config(&[("RATE_LIMIT_REQUESTS", "1000000")])?;
    let rate_limit_keys = format!("{prefix}:rl:*");
    let replays = capture_scripts(port, &ingest_config).await?;
    for (&c, &n) in CONCURRENCIES.iter().zip(&plan.requests) {
        // The ingest's replay runs in two halves per slice, `return 1`
        // once on the whole count (see `figure2`).
        let [ingest, trivial] = &replays;
        let slice = n / figure2::SLICES;
        for (argv, calls) in [
            (ingest, slice / 2),
            (ingest, slice - slice / 2),
            (trivial, n),
        ] {
            results
                .throughput
                .commands
                .push(redis_side::command_line(calls, c, argv));
        }
    }

    let functions_dir = opts.get("functions-dir").map(PathBuf::from);
    if let Some(dir) = &functions_dir {
        results.cold_start.binaries_dir = dir.display().to_string();
        results.cold_start.rows = FUNCTIONS
            .iter()
            .map(|(f, request)| ColdStartRow {
                function: f.to_string(),
                request: request.to_string(),
                binary_bytes: std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0),
                ..ColdStartRow::default()
            })
            .collect();
    }

    // `--only 2,5`: some figures only (to profile or try one of them).
    let only: Option<Vec<String>> = opts
        .get("only")
        .map(|list| list.split(',').map(|f| f.trim().to_string()).collect());
    let wanted = |figure: &str| only.as_ref().is_none_or(|o| o.iter().any(|f| f == figure));
    results.throughput.client_threads = client_threads;
    results.throughput.slices = figure2::SLICES;

    // Figure 7's data set is loaded once (its backfill writes about a
    // hundred times the buckets of figure 3's), timed in every run, and
    // deleted after the last.
    let tag_data = match wanted("7") {
        true => {
            log("tags: loading the tagged data set");
            Some(load_tag_data(&config, &mut conn, &plan, &mut results).await?)
        }
        false => None,
    };

    // Figure 8's cached summary is prepared once, cached for longer than
    // the whole measurement; every run reads it.
    let hit_config = config(&[("CACHE_TTL_SECONDS", "3600")])?;
    let hit = match wanted("8") {
        true => Some(cache_hit::prepare(port, &hit_config, &mut results.cache_hit).await?),
        false => None,
    };

    for run in 1..=plan.runs {
        if wanted("1") {
            log(&format!("run {run}/{}: round trips", plan.runs));
            round_trips(
                config(&[("RATE_LIMIT_REQUESTS", "3")])?,
                &mut results.round_trips,
            )
            .await?;
        }

        let figure2 = if wanted("2") { plan.requests.len() } else { 0 };
        for (row, &n) in results
            .throughput
            .rows
            .iter_mut()
            .zip(&plan.requests)
            .take(figure2)
        {
            let c = row.concurrency;
            log(&format!(
                "run {run}/{}: ingest throughput at concurrency {c}",
                plan.runs
            ));
            let mut setup = figure2::Setup {
                conn: &mut conn,
                port,
                config: &ingest_config,
                replays: &replays,
                rate_limit_keys: &rate_limit_keys,
            };
            let sample = figure2::run(&mut setup, c, n).await?;
            let (ours, replayed) = (&sample.instances, &sample.ingest);
            let per_request = |v: f64| v * 1e6 / ours.requests as f64;
            row.instances_rps.push(ours.rps());
            row.instances_p50_us.push(ours.latency_us(0.5));
            row.instances_p99_us.push(ours.latency_us(0.99));
            row.client_cpu_us.push(ours.client_cpu_us());
            row.build_us.push(ours.build_us);
            row.server_cpu_us.push(per_request(ours.redis.cpu_s));
            row.server_script_us
                .push(per_request(ours.redis.evalsha_us as f64 / 1e6));
            row.shared_rps.push(sample.shared.rps());
            row.errors += ours.errors + sample.shared.errors;
            let per_call = |v: f64| v * 1e6 / replayed.calls as f64;
            row.redis_ingest_rps.push(replayed.rps());
            row.redis_trivial_rps.push(sample.trivial.rps());
            row.server_cpu_us_replay
                .push(per_call(replayed.server.cpu_s));
            row.server_script_us_replay
                .push(per_call(replayed.server.evalsha_us as f64 / 1e6));
            row.redis_benchmark_cpu_us_replay
                .push(per_call(replayed.client_cpu_s));
            row.expired_during += ours.redis.expired_keys + replayed.server.expired_keys;
        }

        if let Some(prepared) = &hit {
            log(&format!(
                "run {run}/{}: summary cache hits against GET",
                plan.runs
            ));
            let out = &mut results.cache_hit;
            cache_hit::run(
                port,
                &hit_config,
                &mut conn,
                prepared,
                plan.hit_requests,
                out,
            )
            .await?;
        }

        if wanted("3") || wanted("6") {
            log(&format!(
                "run {run}/{}: summary cost and Redis memory",
                plan.runs
            ));
            data_figures(&config, &mut conn, &plan, run, &mut results).await?;
        }

        if let Some((state, data)) = &tag_data {
            log(&format!("run {run}/{}: tags", plan.runs));
            tag_figure(state, data, &mut conn, &plan, run, &mut results).await?;
        }

        if let Some(dir) = functions_dir.as_ref().filter(|_| wanted("5")) {
            log(&format!("run {run}/{}: cold starts", plan.runs));
            let env: Vec<(String, String)> = [
                ("REDIS_URL", url.as_str()),
                ("REDIS_KEY_PREFIX", prefix.as_str()),
                ("RATE_LIMIT_REQUESTS", "1000000"),
                ("EXTERNAL_SERVICE_LATENCY_MS", "0"),
                ("EXTERNAL_SERVICE_FAILURE_RATE", "0"),
                ("RUST_LOG", "info"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            for row in &mut results.cold_start.rows {
                let event = cold_start_event(&row.function, run)?;
                let start =
                    cold_start::start_once(&dir.join(&row.function), &row.function, &env, &event)?;
                row.statuses.push(start.status);
                row.init_ms.push(start.init_ms);
                row.first_response_ms.push(start.first_response_ms);
                row.peak_rss_kib.push(start.peak_rss_kib);
            }
        }
    }

    if let Some((state, _)) = &tag_data {
        let prefix = state.keys.prefix();
        redis_side::clear(&mut conn, &format!("{prefix}:{{bench_tags_*")).await?;
    }

    let (arm64, note) = arm64_sizes(opts);
    results.cold_start.arm64 = arm64;
    results.cold_start.arm64_note = note;
    results.finished_at = chrono::Utc::now().to_rfc3339();
    results.load_end = results::load_average();
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&out, json).map_err(|e| format!("{}: {e}", out.display()))?;
    log(&format!("results written to {}", out.display()));
    Ok(())
}

/// Figure 1: counts every hot path once (`synthetic_events::round_trips`,
/// the paths and budgets `tests/tests/round_trips.rs` holds) and adds the
/// counts to `rows` (created on the first run). `config` must allow 3
/// requests per client.
async fn round_trips(config: Config, rows: &mut Vec<RoundTrips>) -> Result<(), String> {
    let state = AppState::new(config).map_err(|e| e.to_string())?;
    let metric_type = format!("rt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    for c in synthetic_events::round_trips::hot_paths(&state, &metric_type).await? {
        match rows.iter_mut().find(|r| r.path == c.path) {
            Some(row) => row.counts.push(c.round_trips),
            None => rows.push(RoundTrips {
                path: c.path.to_string(),
                status: c.status,
                counts: vec![c.round_trips],
                budget: c.budget,
            }),
        }
    }
    Ok(())
}

/// The two `redis-benchmark` commands of figure 2: the script call of an
/// accepted ingest on a single node (the limiter and the storage together;
/// its client randomised) as one real ingest sent it, and a trivial script.
async fn capture_scripts(port: u16, config: &Config) -> Result<[Vec<String>; 2], String> {
    let state = AppState::new(config.clone()).map_err(|e| e.to_string())?;
    // Loads the script and registers the type first, so the captured
    // request sends one EVALSHA only.
    shared::handlers::ingest_metric(&state, events::ingest("bench_ingest", 1.0)?).await;
    let captured = shared::handlers::ingest_metric(&state, events::ingest("bench_ingest", 2.0)?);
    let (response, seen) = redis_side::monitor_evalshas(port, 1, captured).await?;
    if response.status() != 201 {
        return Err(format!(
            "the captured ingest answered {}",
            response.status()
        ));
    }
    let [ingest] = <[Argv; 1]>::try_from(seen).map_err(|_| "not one call")?;
    if !ingest.get(3).is_some_and(|k| k.contains(":rl:")) {
        return Err(format!(
            "the first key of an ingest's call is not the limiter's: {ingest:?}"
        ));
    }
    let ingest = redis_side::randomise_client(&ingest)?;
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/0")).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let trivial = vec!["EVALSHA".to_string(), sha, "0".to_string()];
    Ok([ingest, trivial])
}

/// Figures 3 and 6 for one run, on fresh types; the run's keys are deleted
/// afterwards so every run starts from the same server state.
async fn data_figures(
    config: &impl Fn(&[(&str, &str)]) -> Result<Config, String>,
    conn: &mut redis::aio::MultiplexedConnection,
    plan: &Plan,
    run: usize,
    results: &mut Results,
) -> Result<(), String> {
    // As the tagged backfill: a busy machine must not fail the backfill.
    let state = Arc::new(
        AppState::new(config(&[("REDIS_TIMEOUT_MS", "10000")])?).map_err(|e| e.to_string())?,
    );
    let prefix = state.keys.prefix().to_string();
    let large_name = format!("bench_large_r{run}");
    let small_name = format!("bench_small_r{run}");
    let large = Arc::new(data_size::DataSet::new(
        std::slice::from_ref(&large_name),
        plan.large_points,
    )?);
    let small = Arc::new(data_size::DataSet::new(
        std::slice::from_ref(&small_name),
        plan.small_points,
    )?);
    let many_names: Vec<String> = (0..plan.types)
        .map(|i| format!("bench_t{run}_{i:04}"))
        .collect();
    let many = Arc::new(data_size::DataSet::new(&many_names, plan.points_per_type)?);

    let (one_type, rate) = data_size::load_and_weigh(
        &state,
        conn,
        &large,
        &format!("{prefix}:{{{large_name}}}:*"),
    )
    .await?;
    results.memory.one_type.push(one_type);
    results.data_size.backfill_points_per_s.push(rate);
    if results.memory.encodings.is_empty() {
        results.memory.encodings = data_size::encodings(conn, &large.keys(&state.keys)).await?;
    }
    small.ingest(&state).await?;

    let small_type = MetricType::parse(&small_name)?;
    let large_type = MetricType::parse(&large_name)?;
    let (a, b, counts) =
        data_size::time_aggregates(&state, &small_type, &large_type, plan.aggregate_samples)
            .await?;
    results.data_size.aggregate_small_us.push(a);
    results.data_size.aggregate_large_us.push(b);
    results.data_size.counts_seen.push(counts);
    let (a, b) = data_size::time_series(
        &state,
        &small_type,
        &large_type,
        plan.aggregate_samples / 4 + 1,
    )
    .await?;
    results.data_size.series_small_us.push(a);
    results.data_size.series_large_us.push(b);
    let (a, b) =
        data_size::time_handler(&state, &small_type, &large_type, plan.handler_samples).await?;
    results.data_size.handler_small_us.push(a);
    results.data_size.handler_large_us.push(b);

    let (thousand, _) =
        data_size::load_and_weigh(&state, conn, &many, &format!("{prefix}:{{bench_t{run}_*"))
            .await?;
    results.memory.thousand_types.push(thousand);

    for data in [&large, &small, &many] {
        data_size::unlink(conn, &data.keys(&state.keys)).await?;
    }
    Ok(())
}

/// Loads figure 7's data set and weighs it; returns the state it was
/// loaded with (commands bounded by 10 s: a tagged batch writes hundreds of
/// buckets, and four are in flight) and the data set.
async fn load_tag_data(
    config: &impl Fn(&[(&str, &str)]) -> Result<Config, String>,
    conn: &mut redis::aio::MultiplexedConnection,
    plan: &Plan,
    results: &mut Results,
) -> Result<(Arc<AppState>, Arc<dimensions::TagData>), String> {
    let state = Arc::new(
        AppState::new(config(&[("REDIS_TIMEOUT_MS", "10000")])?).map_err(|e| e.to_string())?,
    );
    let data = Arc::new(dimensions::TagData {
        metric_type: MetricType::parse("bench_tags_data")?,
        points: plan.tag_points,
        hosts: plan.tag_hosts,
        end: dimensions::end_now(),
    });
    let seconds = data.ingest(&state).await?;
    let out = &mut results.tags;
    out.backfill_points_per_s.push(data.points as f64 / seconds);
    let (bytes, keys) = dimensions::weigh(&state, conn, &data).await?;
    out.own_series_bytes.push(bytes[0]);
    out.host_series_bytes.push(bytes[1]);
    out.region_series_bytes.push(bytes[2]);
    out.combination_series_bytes.push(bytes[3]);
    out.registry_bytes.push(bytes[4]);
    out.keys_per_series = keys;
    Ok((state, data))
}

/// Figure 7's measurements of one run: the queries on the loaded data set,
/// then the ingest costs on fresh types.
async fn tag_figure(
    state: &AppState,
    data: &dimensions::TagData,
    conn: &mut redis::aio::MultiplexedConnection,
    plan: &Plan,
    run: usize,
    results: &mut Results,
) -> Result<(), String> {
    let out = &mut results.tags;
    dimensions::time_queries(
        state,
        data,
        plan.tag_samples,
        plan.tag_host_group_samples,
        out,
    )
    .await?;
    let (plain, tagged) = (
        MetricType::parse(&format!("bench_tags_plain_r{run}"))?,
        MetricType::parse(&format!("bench_tags_ingest_r{run}"))?,
    );
    let n = plan.tag_ingest_metrics;
    let one = dimensions::Sending {
        per_call: 1,
        mixed_hosts: false,
    };
    let [a, b, c, d] =
        dimensions::ingest_cost(state, conn, (&plain, &tagged), plan.tag_hosts, n, one).await?;
    out.single_untagged_cpu_us.push(a);
    out.single_tagged_cpu_us.push(b);
    out.single_untagged_script_us.push(c);
    out.single_tagged_script_us.push(d);
    for (mixed_hosts, untagged, tagged_out) in [
        (
            false,
            &mut out.batch_untagged_cpu_us,
            &mut out.batch_tagged_cpu_us,
        ),
        (
            true,
            &mut out.mixed_untagged_cpu_us,
            &mut out.mixed_tagged_cpu_us,
        ),
    ] {
        let sending = dimensions::Sending {
            per_call: data_size::BATCH,
            mixed_hosts,
        };
        let [a, b, _, _] = dimensions::ingest_cost(
            state,
            conn,
            (&plain, &tagged),
            plan.tag_hosts,
            n * 5,
            sending,
        )
        .await?;
        untagged.push(a);
        tagged_out.push(b);
    }
    let prefix = state.keys.prefix();
    redis_side::clear(conn, &format!("{prefix}:{{bench_tags_[pi]*_r{run}}}*")).await?;
    Ok(())
}

/// The first event of `function` in run `run`.
fn cold_start_event(function: &str, run: usize) -> Result<serde_json::Value, String> {
    let ip = events::next_client_ip();
    let event = match function {
        "health" => events::http_v2("GET", "/health").source_ip(&ip),
        "ingest-metric" => events::ingest_event("bench_cold", 42.5, &ip),
        "metrics-summary" => events::http_v2("GET", "/api/metrics/summary")
            .query(&format!(
                "type=bench_cold_{run}_{}&period=daily",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ))
            .source_ip(&ip),
        "metrics-series" => events::http_v2("GET", "/api/metrics/series")
            .query(&format!(
                "type=bench_cold_{run}_{}&period=daily&step=1h",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ))
            .source_ip(&ip),
        other => return Err(format!("no first request for {other}")),
    };
    Ok(event.to_json())
}

/// The arm64 `bootstrap` sizes of the release build (`make release`), from
/// `--arm64-dir` (`target/lambda/<function>/bootstrap`), with a note saying
/// where they come from.
fn arm64_sizes(opts: &Options) -> (Vec<BinarySize>, String) {
    let Some(dir) = opts.get("arm64-dir").map(Path::new) else {
        return (Vec::new(), "not looked for (no --arm64-dir)".into());
    };
    let mut sizes = Vec::new();
    for function in RELEASED {
        let path = dir.join(function).join("bootstrap");
        if let Ok(meta) = std::fs::metadata(&path) {
            let built = meta
                .modified()
                .ok()
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
                .unwrap_or_default();
            sizes.push(BinarySize {
                function: function.to_string(),
                bytes: meta.len(),
                built,
            });
        }
    }
    let note = if sizes.len() == RELEASED.len() {
        let mut note = "measured on the binaries of the last `make release` (`cargo lambda build --release --arm64`), built at the times shown".to_string();
        if opts.contains_key("arm64-stale") {
            note.push_str(
                "; the functions' sources changed after that build, so these may differ from what \
                 the current sources build (run `make release`, then `make bench`)",
            );
        }
        note
    } else if let Some(recorded) = opts
        .get("sizes-file")
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|text| recorded_sizes(&text))
        .filter(|recorded| !recorded.is_empty())
    {
        sizes = recorded;
        format!(
            "`make release` has not been run on this checkout, so these are the sizes it recorded in `{}`, {}",
            opts.get("sizes-file").map_or("", String::as_str),
            opts.get("sizes-sources").map_or(
                "which does not say which commit they were built from",
                String::as_str
            )
        )
    } else {
        format!(
            "`make release` has not been run on this checkout ({} of {} `bootstrap` files found); run it, then `make bench` again",
            sizes.len(),
            RELEASED.len()
        )
    };
    (sizes, note)
}

/// The rows `| `<function>` | <bytes> | …` of the sizes table that
/// `scripts/build-release.sh --markdown` writes.
fn recorded_sizes(text: &str) -> Vec<BinarySize> {
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let function = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let bytes = cells.get(2)?.replace([',', ' '], "").parse().ok()?;
            RELEASED.contains(&function).then(|| BinarySize {
                function: function.to_string(),
                bytes,
                built: "recorded".to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_sizes_are_read_from_the_release_table() {
        let table = "| function | `bootstrap` (bytes) | MiB | zipped (bytes) |\n|---|---:|---:|---:|\n\
                     | `docs` | 8577280 | 8.18 | 3045673 |\n| `health` | 8455520 | 8.06 | 3927265 |\n";
        let sizes = recorded_sizes(table);
        assert_eq!(sizes.len(), 2);
        assert_eq!(
            (sizes[1].function.as_str(), sizes[1].bytes),
            ("health", 8_455_520)
        );
    }
}
