//! Figure 2, Redis' side: the rate Redis itself sustains for the work of one
//! ingest, measured with `redis-benchmark` replaying **our own** scripts.
//!
//! The two `EVALSHA` calls of a real accepted ingest (the limiter's, then the
//! storage script's) are captured with `MONITOR` while the handler serves one
//! request, so the replay carries exactly the keys and arguments the service
//! sends: nothing is rebuilt by hand that could drift from the code. The
//! limiter's client part of the key becomes `__rand_int__`, which
//! `redis-benchmark -r` replaces by a random number on every call, as the
//! handler run uses a fresh client per request.
//!
//! An accepted ingest needs both calls, one after the other, so Redis'
//! request rate for ingests is that of the pair: with rates `a` (limiter)
//! and `b` (storage) measured apart, one pair costs `1/a + 1/b` seconds of
//! Redis, hence `1 / (1/a + 1/b)` pairs per second.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;

/// A command as Redis received it: its arguments, unescaped.
pub type Argv = Vec<String>;

/// The first `want` `EVALSHA` calls the server on 127.0.0.1:`port` executes
/// while `during` runs, seen with `MONITOR` (the redis crate's monitor
/// connection), in the order Redis ran them.
///
/// # Errors
/// No Redis there, or fewer calls seen within 5 s of `during`'s end.
pub async fn monitor_evalshas<T>(
    port: u16,
    want: usize,
    during: impl std::future::Future<Output = T>,
) -> Result<(T, Vec<Argv>), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/0")).map_err(|e| e.to_string())?;
    let mut monitor = client
        .get_async_monitor()
        .await
        .map_err(|e| e.to_string())?;
    let outcome = during.await;
    let mut lines = monitor.on_message::<String>();
    let mut seen = Vec::new();
    while seen.len() < want {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| format!("MONITOR saw {} of {want} EVALSHA calls", seen.len()))?;
        let evalsha = |argv: &Argv| {
            argv.first()
                .is_some_and(|c| c.eq_ignore_ascii_case("EVALSHA"))
        };
        seen.extend(parse_monitor_line(&line).filter(evalsha));
    }
    Ok((outcome, seen))
}

/// Parses a `MONITOR` line, `+1700000000.000000 [0 127.0.0.1:5000] "CMD" "arg"…`,
/// into the command's arguments (Redis writes them with `sdscatrepr`
/// escapes: `\\`, `\"`, `\n`, `\r`, `\t`, `\a`, `\b`, `\xHH`).
pub fn parse_monitor_line(line: &str) -> Option<Argv> {
    let rest = &line[line.find("] ")? + 2..];
    let bytes = rest.as_bytes();
    let mut argv = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut arg = Vec::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
                match bytes[i] {
                    b'n' => arg.push(b'\n'),
                    b'r' => arg.push(b'\r'),
                    b't' => arg.push(b'\t'),
                    b'a' => arg.push(7),
                    b'b' => arg.push(8),
                    b'x' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                        arg.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    other => arg.push(other),
                }
            } else {
                arg.push(bytes[i]);
            }
            i += 1;
        }
        i += 1;
        argv.push(String::from_utf8(arg).ok()?);
    }
    Some(argv)
}

/// The limiter call with its client replaced by `__rand_int__`: the hash
/// tag of `{p}:rl:{ip:198.18.0.7}:sliding_log` becomes `{ip:__rand_int__}`.
pub fn randomise_client(limiter: &Argv) -> Result<Argv, String> {
    let mut argv = limiter.clone();
    let key = argv
        .get_mut(3)
        .ok_or("the captured limiter call has no key")?;
    let open = key.find(":rl:{").ok_or("not a rate-limit key")? + 5;
    let close = open
        + key[open..]
            .find('}')
            .ok_or("no hash tag in the rate-limit key")?;
    key.replace_range(open..close, "ip:__rand_int__");
    Ok(argv)
}

/// What one `redis-benchmark` run measured.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// Calls per second.
    pub rps: f64,
    /// CPU seconds `redis-benchmark` itself used (user + system).
    pub client_cpu_s: f64,
}

/// Runs `redis-benchmark` with `argv` as its command: `n` calls over
/// `concurrency` connections to 127.0.0.1:`port`.
pub fn redis_benchmark(
    port: u16,
    n: usize,
    concurrency: usize,
    argv: &Argv,
) -> Result<Replay, String> {
    let children_before = children_cpu_s();
    let mut command = Command::new("redis-benchmark");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", &n.to_string(), "-c", &concurrency.to_string()])
        .args(["-r", "100000000", "--csv"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = crate::process::output_within(command, Duration::from_secs(120))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // "test","rps","avg_latency_ms",… then one line per test.
    let line = stdout
        .lines()
        .find(|l| !l.starts_with("\"test\"") && l.contains("\",\""))
        .ok_or_else(|| {
            format!(
                "no result from redis-benchmark: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let rps = line
        .rsplit("\",\"")
        .nth(6)
        .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
        .ok_or_else(|| format!("unexpected redis-benchmark line {line:?}"))?;
    Ok(Replay {
        rps,
        client_cpu_s: children_cpu_s() - children_before,
    })
}

/// CPU seconds used by this process' children that have been waited for:
/// `cutime + cstime` of `/proc/self/stat`, in clock ticks of 1/100 s
/// (`USER_HZ`, 100 on Linux).
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is field 3, cutime 16, cstime 17.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(13) + ticks(14)) / 100.0
}

/// The command line [`redis_benchmark`] runs, for the report (`<port>`
/// stands for the private server's port).
pub fn command_line(n: usize, concurrency: usize, argv: &Argv) -> String {
    let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!(
        "redis-benchmark -h 127.0.0.1 -p <port> -n {n} -c {concurrency} -r 100000000 --csv {}",
        quoted.join(" ")
    )
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/=".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What the Redis server has done so far, from one `INFO cpu commandstats
/// stats`: the difference of two snapshots taken around a measurement says
/// what Redis spent on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerStats {
    /// CPU seconds used by all of its threads (`used_cpu_sys` +
    /// `used_cpu_user`).
    pub cpu_s: f64,
    /// `EVALSHA` calls executed (`cmdstat_evalsha` `calls`).
    pub evalsha_calls: u64,
    /// Microseconds spent executing them (`cmdstat_evalsha` `usec`): the
    /// scripts themselves, without reading requests or writing replies.
    pub evalsha_us: u64,
    /// `EVALSHA` calls that failed or were rejected (`failed_calls` +
    /// `rejected_calls`): a replay whose calls fail would measure nothing.
    pub evalsha_failed: u64,
    /// Keys removed by expiry, lazily or by the active cycle (`expired_keys`).
    pub expired_keys: u64,
}

impl ServerStats {
    /// A snapshot of the server's counters.
    ///
    /// # Errors
    /// The connection's error, as text.
    pub async fn read(conn: &mut redis::aio::MultiplexedConnection) -> Result<Self, String> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .arg("stats")
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self::parse(&info))
    }

    fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // cmdstat_evalsha:calls=3,usec=120,usec_per_call=40.00,…
        let evalsha = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
                .and_then(|stats| {
                    stats
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                })
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Self {
            cpu_s: field("used_cpu_sys:") + field("used_cpu_user:"),
            evalsha_calls: evalsha("calls"),
            evalsha_us: evalsha("usec"),
            evalsha_failed: evalsha("failed_calls") + evalsha("rejected_calls"),
            expired_keys: field("expired_keys:") as u64,
        }
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            cpu_s: self.cpu_s - earlier.cpu_s,
            evalsha_calls: self.evalsha_calls.saturating_sub(earlier.evalsha_calls),
            evalsha_us: self.evalsha_us.saturating_sub(earlier.evalsha_us),
            evalsha_failed: self.evalsha_failed.saturating_sub(earlier.evalsha_failed),
            expired_keys: self.expired_keys.saturating_sub(earlier.expired_keys),
        }
    }

    /// Two differences added together (the slices of one measurement).
    pub fn plus(&self, other: &Self) -> Self {
        Self {
            cpu_s: self.cpu_s + other.cpu_s,
            evalsha_calls: self.evalsha_calls + other.evalsha_calls,
            evalsha_us: self.evalsha_us + other.evalsha_us,
            evalsha_failed: self.evalsha_failed + other.evalsha_failed,
            expired_keys: self.expired_keys + other.expired_keys,
        }
    }
}

/// Deletes every key matching `pattern` (`SCAN … MATCH`, then `UNLINK`) and
/// waits for Redis' background thread to free them: the rate-limit keys one
/// measurement of figure 2 created (ours and `redis-benchmark`'s) would
/// otherwise expire 60 s later, in the middle of another measurement, and
/// bill it for their deletion. Private server only; `pattern` always starts
/// with the run's own prefix. Returns how many keys were deleted.
///
/// # Errors
/// The connection's error, as text.
pub async fn clear(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> Result<u64, String> {
    let keys = crate::data_size::matching_keys(conn, pattern).await?;
    crate::data_size::unlink(conn, &keys).await?;
    Ok(keys.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_are_unescaped() {
        let line = r#"+1771416000.123456 [0 127.0.0.1:5000] "EVALSHA" "abc" "1" "p:rl:{ip:198.18.0.7}:sliding_log" "a\"b" "x\x41" """#;
        let argv = parse_monitor_line(line).unwrap();
        assert_eq!(
            argv,
            [
                "EVALSHA",
                "abc",
                "1",
                "p:rl:{ip:198.18.0.7}:sliding_log",
                "a\"b",
                "xA",
                ""
            ]
        );
        let random = randomise_client(&argv).unwrap();
        assert_eq!(random[3], "p:rl:{ip:__rand_int__}:sliding_log");
        assert_eq!(shell_quote(""), "''");
    }

    /// `clear` deletes the keys of its pattern and nothing else, so that a
    /// measurement never pays for expiring an earlier one's rate-limit keys.
    #[tokio::test]
    async fn clear_deletes_only_the_keys_of_its_pattern() {
        let url = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
        let prefix = format!("bench-test-{}", uuid::Uuid::new_v4().simple());
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut pipe = redis::pipe();
        for i in 0..2_500 {
            pipe.cmd("SET")
                .arg(format!("{prefix}:rl:{{ip:{i}}}:sliding_log"))
                .arg(1)
                .arg("EX")
                .arg(60)
                .ignore();
        }
        let kept = format!("{prefix}:{{bench_ingest}}:m:0");
        pipe.cmd("SET").arg(&kept).arg(1).arg("EX").arg(60).ignore();
        let () = pipe.query_async(&mut conn).await.unwrap();

        let deleted = clear(&mut conn, &format!("{prefix}:rl:*")).await.unwrap();
        assert_eq!(deleted, 2_500);
        let left: u64 = redis::cmd("EXISTS")
            .arg(&kept)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 1);
        let _: u64 = redis::cmd("DEL")
            .arg(&kept)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    #[test]
    fn server_stats_are_read_from_info() {
        let info = "# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\n# Commandstats\r\n\
                    cmdstat_evalsha:calls=30,usec=1200,usec_per_call=40.00,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_info:calls=3,usec=90,usec_per_call=30.00\r\n# Stats\r\nexpired_keys:7\r\n";
        let stats = ServerStats::parse(info);
        assert!((stats.cpu_s - 3.75).abs() < 1e-9);
        assert_eq!(
            (stats.evalsha_calls, stats.evalsha_us, stats.expired_keys),
            (30, 1200, 7)
        );
        assert_eq!(stats.evalsha_failed, 0);
        let later = ServerStats {
            cpu_s: 4.0,
            evalsha_calls: 40,
            evalsha_us: 1500,
            evalsha_failed: 2,
            expired_keys: 7,
        };
        assert_eq!(later.since(&stats).evalsha_failed, 2);
        assert_eq!(later.since(&stats).evalsha_us, 300);
    }
}
