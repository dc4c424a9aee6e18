//! Load through the Lambda emulator (`cargo lambda watch`), with the CPU
//! the processes behind it spent: `wrk` against a URL ([`wrk_with_cpu`]),
//! and the CPU time of processes read from `/proc/<pid>/stat` around it.
//!
//! The function processes the emulator spawns are found by name
//! ([`pids_named`]: the executable's name, as `/proc/<pid>/comm` holds it,
//! cut to 15 bytes by the kernel). CPU time is `utime + stime`, in clock
//! ticks of 10 ms on Linux, so a run must be long enough for thousands of
//! ticks (seconds of load) to say anything per request.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::results::WrkRun;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, which
/// Linux fixes at 100 for user space whatever the kernel's `HZ`).
const TICKS_PER_SECOND: u64 = 100;

/// The processes whose `/proc/<pid>/comm` is `name` (cut to the 15 bytes
/// the kernel keeps), in increasing pid order.
pub fn pids_named(name: &str) -> Vec<u32> {
    let comm = &name.as_bytes()[..name.len().min(15)];
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.strip_suffix(b"\n").unwrap_or(&c) == comm)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The processes running the executable `path` (their `/proc/<pid>/exe`),
/// in increasing pid order: on a machine where other emulators run
/// functions of the same names, only this checkout's.
pub fn pids_of(path: &Path) -> Vec<u32> {
    let Ok(path) = path.canonicalize() else {
        return Vec::new();
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    pids_named(name)
        .into_iter()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == path))
        .collect()
}

/// The CPU time (user + system) process `pid` has spent, or `None` when it
/// has gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields 14 and 15 (utime, stime) count from after its closing one.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// One `wrk` load: `connections` connections (one thread) for `seconds`
/// against `url` + `path`, with `tools/bench/wrk.lua`'s settings.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    /// The run's name in the results (`WRK_LABEL`).
    pub label: &'a str,
    /// The emulator's address, e.g. `http://127.0.0.1:9000`.
    pub url: &'a str,
    /// `GET` or `POST` (one metric per request).
    pub method: &'a str,
    /// Path and query string.
    pub path: &'a str,
    /// Length of the run, seconds.
    pub seconds: u64,
    /// wrk connections.
    pub connections: u64,
    /// `WRK_TYPE`: the metric type a POST sends.
    pub metric_type: &'a str,
}

/// What one load measured: wrk's results, and the CPU time each of the
/// given processes spent during it (`None` for one that ended meanwhile).
#[derive(Debug, Clone)]
pub struct Measured {
    /// wrk's results (`wrk.lua`'s JSON line).
    pub wrk: WrkRun,
    /// Per process given, in their order: CPU time spent during the run.
    pub cpu: Vec<Option<Duration>>,
}

impl Measured {
    /// CPU time of all the processes given, per completed request, µs.
    pub fn cpu_per_request_us(&self) -> f64 {
        let total: Duration = self.cpu.iter().flatten().sum();
        total.as_secs_f64() * 1e6 / self.wrk.requests.max(1) as f64
    }
}

/// Runs `load` with `wrk` (bounded: killed a minute after its length) and
/// reads the CPU time of `pids` just before and just after it.
///
/// # Errors
/// wrk cannot run, fails, or prints no results line.
pub fn wrk_with_cpu(load: &Load<'_>, pids: &[u32]) -> Result<Measured, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("wrk.lua");
    let mut command = Command::new("wrk");
    command
        .args(["-t", "1", "-c", &load.connections.to_string()])
        .args(["-d", &format!("{}s", load.seconds), "--timeout", "5s", "-s"])
        .arg(&script)
        .arg(load.url)
        .env("WRK_LABEL", load.label)
        .env("WRK_METHOD", load.method)
        .env("WRK_PATH", load.path)
        .env("WRK_TYPE", load.metric_type)
        .env("WRK_CONNECTIONS", load.connections.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let before: Vec<Option<Duration>> = pids.iter().map(|&p| cpu_time(p)).collect();
    let output = crate::process::output_within(command, Duration::from_secs(load.seconds + 60))?;
    let after: Vec<Option<Duration>> = pids.iter().map(|&p| cpu_time(p)).collect();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("wrk printed no results: {stdout}"))?;
    let wrk: WrkRun = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
    let cpu = before
        .into_iter()
        .zip(after)
        .map(|(b, a)| Some(a?.saturating_sub(b?)))
        .collect();
    Ok(Measured { wrk, cpu })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_by_name_and_spends_cpu() {
        let me = std::process::id();
        let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
        assert!(pids_named(comm.trim_end()).contains(&me));
        let exe = std::env::current_exe().unwrap();
        assert!(pids_of(&exe).contains(&me));
        let before = cpu_time(me).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(x) | 1);
        }
        assert!(cpu_time(me).unwrap() >= before);
        assert_eq!(cpu_time(u32::MAX), None);
    }
}
