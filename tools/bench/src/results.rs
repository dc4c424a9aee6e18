//! What `bench measure` records (`target/bench/results.json`) and
//! `bench report` renders: the raw samples, one per run, never summaries.

use serde::{Deserialize, Serialize};

/// Everything measured in-process, one sample per run for each figure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Runs per figure.
    pub runs: usize,
    /// When the measurements started (RFC 3339, UTC).
    pub started_at: String,
    /// When they ended.
    pub finished_at: String,
    /// `/proc/loadavg` (1, 5, 15 min) when they started and ended.
    pub load_start: [f64; 3],
    /// See [`Results::load_start`].
    pub load_end: [f64; 3],
    /// `redis_version` of the Redis measured.
    pub redis_version: String,
    /// The machine measured on.
    pub machine: Machine,
    /// The Redis key prefix everything was written under.
    pub prefix: String,
    /// Figure 1.
    pub round_trips: Vec<RoundTrips>,
    /// Figure 2.
    pub throughput: Throughput,
    /// Figure 3.
    pub data_size: DataSize,
    /// Figure 6.
    pub memory: Memory,
    /// Figure 5.
    pub cold_start: ColdStart,
    /// Figures 1 and 2 on a local Redis Cluster (`bench cluster`; empty
    /// until it has run).
    #[serde(default)]
    pub cluster: Cluster,
    /// Figure 7: tags (empty until it has run).
    #[serde(default)]
    pub tags: Tags,
    /// Figure 8: summary cache hits against `GET` (empty until it has run).
    #[serde(default)]
    pub cache_hit: crate::cache_hit::CacheHit,
}

/// The machine a run measured on, read when it started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// The cores this process may run on (`available_parallelism`).
    pub cores: usize,
    /// `MemTotal` of `/proc/meminfo`, KiB.
    pub memory_kib: u64,
    /// The kernel's release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// The first line of `wrk --version` (empty without wrk).
    pub wrk: String,
}

impl Machine {
    /// Reads this machine's description (fields it cannot read stay empty).
    pub fn read() -> Self {
        let proc = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
                .unwrap_or_default()
        };
        let version = |program: &str| {
            std::process::Command::new(program)
                .arg("--version")
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default()
        };
        Self {
            cpu: field(&proc("/proc/cpuinfo"), "model name"),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_kib: field(&proc("/proc/meminfo"), "MemTotal")
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0),
            kernel: proc("/proc/sys/kernel/osrelease").trim().to_string(),
            rustc: version("rustc"),
            wrk: version("wrk"),
        }
    }
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages (NaN if unknown).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN));
    [(); 3].map(|()| values.next().unwrap_or(f64::NAN))
}

/// Figure 1: Redis round trips of one request on one path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundTrips {
    /// What was sent, e.g. "ingest, accepted".
    pub path: String,
    /// The HTTP status it got.
    pub status: u16,
    /// Round trips counted in each run.
    pub counts: Vec<u64>,
    /// The budget held by `tests/tests/round_trips.rs` (or the target).
    pub budget: u64,
}

/// Figure 2, all concurrencies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Requests per measurement at each concurrency.
    pub requests: Vec<(usize, usize)>,
    /// One row per concurrency.
    pub rows: Vec<ThroughputRow>,
    /// The `redis-benchmark` command lines (with the captured arguments).
    pub commands: Vec<String>,
    /// Threads of the runtime the simulated instances ran on (1: a
    /// current-thread runtime).
    pub client_threads: usize,
    /// Rounds of alternation between ours and the replays per run
    /// (`figure2::SLICES`).
    pub slices: usize,
}

/// Figure 2 at one concurrency; each vector holds one sample per run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// Requests in flight.
    pub concurrency: usize,
    /// Ingest requests/s, one `AppState` (one connection) per worker, each
    /// run's slices together.
    pub instances_rps: Vec<f64>,
    /// p50 latency of those requests, µs.
    pub instances_p50_us: Vec<f64>,
    /// p99 latency, µs.
    pub instances_p99_us: Vec<f64>,
    /// Ingest requests/s, one `AppState` shared by every worker (one
    /// multiplexed connection).
    pub shared_rps: Vec<f64>,
    /// Non-201 answers seen (should be 0).
    pub errors: u64,
    /// `redis-benchmark` EVALSHA of an accepted ingest's script call,
    /// calls/s.
    pub redis_ingest_rps: Vec<f64>,
    /// `redis-benchmark` EVALSHA of `return 1`, calls/s.
    pub redis_trivial_rps: Vec<f64>,
    /// CPU of this process per ingest (instances case), µs; includes
    /// building each request from the template.
    pub client_cpu_us: Vec<f64>,
    /// Time to build one request from the template, µs (part of
    /// `client_cpu_us`).
    pub build_us: Vec<f64>,
    /// CPU of the Redis server per ingest (instances case), µs.
    pub server_cpu_us: Vec<f64>,
    /// CPU of the Redis server per replayed ingest call under
    /// `redis-benchmark`, µs.
    pub server_cpu_us_replay: Vec<f64>,
    /// CPU of `redis-benchmark` itself per replayed call, µs.
    pub redis_benchmark_cpu_us_replay: Vec<f64>,
    /// Time the Redis server spent executing the script per ingest
    /// (instances case; `cmdstat_evalsha` `usec`), µs.
    pub server_script_us: Vec<f64>,
    /// The same per replayed call under `redis-benchmark`, µs.
    pub server_script_us_replay: Vec<f64>,
    /// Keys Redis expired during the timed measurements of this row, all
    /// runs (each measurement starts with the rate-limit keys of the
    /// previous ones deleted, so only other figures' keys can expire).
    pub expired_during: u64,
}

/// Figure 3: summary cost versus data size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataSize {
    /// Points in the small type.
    pub small_points: u64,
    /// Points in the large type.
    pub large_points: u64,
    /// Timed `MetricStore::aggregate` calls per run and size.
    pub samples_per_run: usize,
    /// Timed summary handler calls per run and size.
    pub handler_samples_per_run: usize,
    /// Median `MetricStore::aggregate` time per run, small type, µs.
    pub aggregate_small_us: Vec<f64>,
    /// Same, large type.
    pub aggregate_large_us: Vec<f64>,
    /// Median `MetricStore::series` time per run (30 days at `1h`: 720
    /// points), small type, µs.
    #[serde(default)]
    pub series_small_us: Vec<f64>,
    /// Same, large type.
    #[serde(default)]
    pub series_large_us: Vec<f64>,
    /// Median handler time with `Cache-Control: no-cache`, small type, µs.
    pub handler_small_us: Vec<f64>,
    /// Same, large type.
    pub handler_large_us: Vec<f64>,
    /// Buckets read by one monthly summary (the cover of the window).
    pub buckets_read: usize,
    /// Points/s of the 1-million-point backfill (batches through
    /// `MetricStore::ingest`).
    pub backfill_points_per_s: Vec<f64>,
    /// Batch size of the backfill.
    pub batch: usize,
    /// Counts reported by the summaries (checks that the data is there).
    pub counts_seen: Vec<(u64, u64)>,
}

/// Figure 6: Redis memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    /// 1 million metrics of one type (`--quick`: fewer).
    pub one_type: Vec<MemorySample>,
    /// 1,000 types of 1,000 metrics each (`--quick`: fewer types).
    pub thousand_types: Vec<MemorySample>,
    /// Hash encodings seen (`OBJECT ENCODING`) and how many keys had each.
    pub encodings: Vec<(String, u64)>,
}

/// The memory of one data set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemorySample {
    /// Metric types.
    pub types: u64,
    /// Metrics ingested.
    pub points: u64,
    /// Keys that exist among those computed from the bucket layout.
    pub keys: u64,
    /// Keys found by `SCAN` of the same pattern (private Redis only), as a
    /// check of the enumeration.
    pub keys_scanned: u64,
    /// Sum of `MEMORY USAGE <key> SAMPLES 0`, bytes.
    pub memory_usage_bytes: u64,
    /// Growth of `INFO memory` `used_memory` over the ingest, bytes
    /// (includes the keyspace's own dictionaries).
    pub used_memory_delta_bytes: i64,
}

/// Figure 5.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ColdStart {
    /// One row per function.
    pub rows: Vec<ColdStartRow>,
    /// Where the x86_64 binaries were taken from.
    pub binaries_dir: String,
    /// The arm64 `bootstrap` sizes.
    pub arm64: Vec<BinarySize>,
    /// Where the arm64 sizes come from.
    pub arm64_note: String,
}

/// Cold starts of one function.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ColdStartRow {
    /// The function (crate) name.
    pub function: String,
    /// The first request it got.
    pub request: String,
    /// Status of each run's first response.
    pub statuses: Vec<u16>,
    /// Spawn to the first `GET …/invocation/next`, ms.
    pub init_ms: Vec<f64>,
    /// Spawn to the first response posted, ms.
    pub first_response_ms: Vec<f64>,
    /// Peak resident set (`VmHWM`) after the first response, KiB.
    pub peak_rss_kib: Vec<f64>,
    /// Size of the x86_64 release binary, bytes.
    pub binary_bytes: u64,
}

/// The size of one built binary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BinarySize {
    /// The function.
    pub function: String,
    /// Bytes.
    pub bytes: u64,
    /// When it was built (file mtime, RFC 3339), if known.
    pub built: String,
}

/// Figure 4: one `wrk` run through `cargo lambda watch` (one line of the
/// JSON-lines file `bench.sh` writes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WrkRun {
    /// `ingest` or `summary_hit`.
    pub label: String,
    /// Completed requests.
    pub requests: u64,
    /// Wall time, µs.
    pub duration_us: u64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// See [`WrkRun::p50_us`].
    pub p99_us: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Responses that were not 2xx/3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Open connections.
    pub connections: u64,
    /// GET responses whose `X-Cache` header was not `HIT` (0 for POSTs).
    pub not_hit: u64,
}

/// Figure 10: one run of one route through the emulator with the CPU its
/// function's processes spent (`bench invocation`, one line of
/// `invocation.jsonl`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InvocationRun {
    /// `floor`, `health`, `ingest` or `summary_hit`.
    pub label: String,
    /// The round, from 1.
    pub round: usize,
    /// The function's processes (emulator instances) measured.
    pub processes: usize,
    /// Their CPU time (user + system) per completed request, µs.
    pub cpu_per_request_us: f64,
    /// wrk's results of the run.
    pub wrk: WrkRun,
}

/// Figures 1 and 2 on a local Redis Cluster, beside the single node
/// (`bench cluster`, `crate::cluster`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cluster {
    /// Masters that served the slots (their counters are added together).
    pub masters: usize,
    /// Replicas, all masters together (not counted in the CPU figures).
    pub replicas: usize,
    /// `redis_version` of the cluster's nodes.
    pub redis_version: String,
    /// The key prefix the cluster measurements wrote under.
    pub prefix: String,
    /// Figure 1's paths and the cluster's own ones, counted on the single
    /// node (`REDIS_MODE=standalone`); `budget` is the single node's.
    pub round_trips_single: Vec<RoundTrips>,
    /// The same paths counted on the cluster (`REDIS_MODE=cluster`);
    /// `budget` is what `tests/tests/cluster.rs` holds, or the single node's.
    pub round_trips_cluster: Vec<RoundTrips>,
    /// Figure 2's *instances* case on the cluster, one row per concurrency.
    pub throughput: Vec<ClusterThroughputRow>,
}

/// Figure 2's *instances* case on the cluster at one concurrency; each
/// vector holds one sample per run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterThroughputRow {
    /// Requests in flight (one `AppState` each).
    pub concurrency: usize,
    /// Requests per measurement.
    pub requests: usize,
    /// Ingest requests/s.
    pub instances_rps: Vec<f64>,
    /// p50 latency, µs.
    pub p50_us: Vec<f64>,
    /// p99 latency, µs.
    pub p99_us: Vec<f64>,
    /// CPU of the masters per ingest (`INFO cpu`, added over the masters), µs.
    pub server_cpu_us: Vec<f64>,
    /// Time the masters spent executing scripts per ingest
    /// (`cmdstat_evalsha` `usec`, added over the masters), µs.
    pub server_script_us: Vec<f64>,
    /// `EVALSHA` calls the masters executed per ingest (a check: 2).
    pub evalsha_per_ingest: Vec<f64>,
    /// Answers other than 201, all runs (should be 0).
    pub errors: u64,
}

/// Figure 7: summaries filtered and grouped by tags, the ingest cost of
/// tags, and their memory (`crate::dimensions`); one sample per run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tags {
    /// Points of the tagged data set.
    pub points: u64,
    /// Distinct `host` values (each host in one region).
    pub hosts: u64,
    /// Distinct `region` values.
    pub regions: u64,
    /// Timed calls per run of each of the three compared queries.
    pub samples_per_run: usize,
    /// Timed calls per run of the grouping by `host` (slower).
    pub host_group_samples_per_run: usize,
    /// Points/s of the tagged backfill (batches through
    /// `MetricStore::ingest`, tag claims included).
    pub backfill_points_per_s: Vec<f64>,
    /// Median µs of `MetricStore::aggregate`, monthly, no tags.
    pub unfiltered_us: Vec<f64>,
    /// Median µs of `MetricStore::aggregate_selected`, monthly,
    /// `tag.host=<one host>`.
    pub host_filter_us: Vec<f64>,
    /// Median µs, monthly, `group_by=region`.
    pub region_groups_us: Vec<f64>,
    /// Median µs, monthly, `tag.host=<h>&tag.region=<r>` (the registry of
    /// combinations read first).
    pub two_filters_us: Vec<f64>,
    /// Median µs, monthly, `group_by=host`.
    pub host_groups_us: Vec<f64>,
    /// What the last timed calls of each run counted: unfiltered, one host,
    /// the regions' groups added up, groups by region, groups by host.
    pub counts_seen: Vec<[u64; 5]>,
    /// Redis CPU per metric stored one per call (`INFO cpu`), µs: untagged.
    pub single_untagged_cpu_us: Vec<f64>,
    /// Same, with 2 tags (known: no claim).
    pub single_tagged_cpu_us: Vec<f64>,
    /// Redis CPU per metric stored in batches of 500, µs: untagged.
    pub batch_untagged_cpu_us: Vec<f64>,
    /// Same, with 2 tags, each batch from one host.
    pub batch_tagged_cpu_us: Vec<f64>,
    /// Redis CPU per metric stored in batches of 500 mixing every host, µs:
    /// untagged (the same metrics without tags).
    #[serde(default)]
    pub mixed_untagged_cpu_us: Vec<f64>,
    /// Same, with 2 tags.
    #[serde(default)]
    pub mixed_tagged_cpu_us: Vec<f64>,
    /// Time inside the storage script per metric (`cmdstat_evalsha`
    /// `usec`), one per call, µs: untagged.
    pub single_untagged_script_us: Vec<f64>,
    /// Same, with 2 tags.
    pub single_tagged_script_us: Vec<f64>,
    /// Metrics stored per run for each ingest measurement.
    pub ingest_metrics: usize,
    /// `MEMORY USAGE` of the type's own series (every point), bytes.
    pub own_series_bytes: Vec<f64>,
    /// Mean `MEMORY USAGE` of one host value's series, bytes.
    pub host_series_bytes: Vec<f64>,
    /// Mean `MEMORY USAGE` of one region value's series, bytes.
    pub region_series_bytes: Vec<f64>,
    /// Mean `MEMORY USAGE` of one combination's series, bytes.
    pub combination_series_bytes: Vec<f64>,
    /// `MEMORY USAGE` of the registries (values of both keys,
    /// combinations), bytes.
    pub registry_bytes: Vec<f64>,
    /// Keys of one series for the data's 30 days (enumerated from the
    /// layout).
    pub keys_per_series: u64,
}

/// Figure 9: the service side by side with the design it started from
/// (`bench peer`, `crate::peer`; `target/bench/peer.json`), both loaded
/// over HTTP on one private Redis in alternating rounds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Peer {
    /// Rounds (each loads ours, then the peer).
    pub rounds: usize,
    /// Length of one `wrk` run, s.
    pub seconds: u64,
    /// `--concurrency` of the emulator (instances per function).
    pub emulator_concurrency: usize,
    /// uvicorn worker processes of the peer.
    pub peer_workers: usize,
    /// Points of the type whose uncached summary is timed.
    pub points: u64,
    /// One entry per `wrk` run.
    pub runs: Vec<PeerRun>,
    /// The uncached summaries, one entry per system and round.
    pub uncached: Vec<PeerUncached>,
    /// The commands that started both servers and loaded them.
    pub commands: Vec<String>,
}

/// One `wrk` run of figure 9 and the CPU spent around it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerRun {
    /// `ours` or `seed`.
    pub system: String,
    /// 1-based.
    pub round: usize,
    /// `ingest`, `summary_hit` or `health`.
    pub route: String,
    /// `wrk`'s results.
    pub wrk: WrkRun,
    /// CPU of the function processes (ours) or uvicorn workers (the peer), s.
    pub function_cpu_s: f64,
    /// CPU of the emulator (ours) or the uvicorn supervisor (the peer), s.
    pub server_cpu_s: f64,
    /// CPU of `redis-server`, s.
    pub redis_cpu_s: f64,
}

/// The uncached summaries of one system in one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerUncached {
    /// `ours` or `seed`.
    pub system: String,
    /// 1-based.
    pub round: usize,
    /// Wall time of each request, ms (sequential, one connection each).
    pub ms: Vec<f64>,
}
