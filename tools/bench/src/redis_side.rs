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

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A command as Redis received it: its arguments, unescaped.
pub type Argv = Vec<String>;

/// Starts `MONITOR` on 127.0.0.1:`port` and returns a receiver of every
/// `EVALSHA` the server executes from then on, until `want` were seen or
/// `within` passed.
pub fn monitor_evalshas(
    port: u16,
    want: usize,
    within: Duration,
) -> Result<mpsc::Receiver<Argv>, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"MONITOR\r\n")
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut ok = String::new();
    reader.read_line(&mut ok).map_err(|e| e.to_string())?;
    if !ok.starts_with("+OK") {
        return Err(format!("MONITOR answered {ok:?}"));
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + within;
        let mut seen = 0;
        let mut line = String::new();
        while seen < want && Instant::now() < deadline {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if let Some(argv) = parse_monitor_line(line.trim_end()) {
                        if argv
                            .first()
                            .is_some_and(|c| c.eq_ignore_ascii_case("EVALSHA"))
                        {
                            seen += 1;
                            if tx.send(argv).is_err() {
                                break;
                            }
                        }
                    }
                }
                Err(_) => continue,
            }
        }
    });
    Ok(rx)
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

/// CPU seconds the Redis server has used (`INFO cpu`: `used_cpu_sys` +
/// `used_cpu_user`, all of its threads).
pub async fn server_cpu_s(conn: &mut redis::aio::MultiplexedConnection) -> Result<f64, String> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_sys:") + field("used_cpu_user:"))
}

/// `1 / (1/a + 1/b)`: the rate of a pair of operations done one after the
/// other on a server that does `a` of the first or `b` of the second per
/// second.
pub fn pair_rate(a: f64, b: f64) -> f64 {
    1.0 / (1.0 / a + 1.0 / b)
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
        assert!((pair_rate(2.0, 2.0) - 1.0).abs() < 1e-12);
    }
}
