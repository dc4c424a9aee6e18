//! HTTP load with `wrk` and the CPU it cost each process around it, for the
//! figures that load servers over HTTP (figures 9 and 10): one [`run`] loads a URL
//! for a fixed time and returns `wrk`'s results (`tools/bench/wrk.lua`) with
//! the CPU time each [`Group`] of processes spent meanwhile, read from
//! `/proc/<pid>/stat` before and after.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::output_within;
use crate::results::WrkRun;

/// Which processes a [`Group`] counts, found again before every run (an
/// emulator starts its instances on demand).
#[derive(Debug, Clone, Copy)]
pub enum Select<'a> {
    /// The root process alone.
    Root,
    /// Every descendant of the root (not the root).
    Descendants,
    /// The root and its descendants whose `comm` (the executable's name, cut
    /// at 15 bytes by the kernel) is one of these.
    Named(&'a [&'a str]),
    /// Every process running this executable (`/proc/<pid>/exe`), wherever
    /// it stands (the root is not used): on a machine where other emulators
    /// run functions of the same names, only this checkout's.
    Executable(&'a Path),
}

/// Processes whose CPU is measured together.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    /// The process whose tree is searched.
    pub root: u32,
    /// Which processes of that tree count.
    pub select: Select<'a>,
}

/// One `wrk` load: `connections` connections for `seconds` against `url`
/// (scheme, host and port) + `path`.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    /// The name of the run in `wrk.lua`'s results.
    pub label: &'a str,
    /// `http://127.0.0.1:<port>`.
    pub url: &'a str,
    /// `GET` or `POST` (one metric of `metric_type`, timestamped now).
    pub method: &'a str,
    /// Path and query string.
    pub path: &'a str,
    /// The metric type of a `POST`'s body.
    pub metric_type: &'a str,
    /// Open connections, on one `wrk` thread.
    pub connections: usize,
    /// Length of the run.
    pub seconds: u64,
    /// Every request from its own client (a fresh `X-Forwarded-For`
    /// address), so that per-client rate limits accept them all.
    pub own_clients: bool,
}

impl Load<'_> {
    /// The `wrk` command line, as a report shows it (the URL last).
    pub fn command(&self) -> String {
        let clients = if self.own_clients {
            " WRK_CLIENTS=each"
        } else {
            ""
        };
        format!(
            "WRK_LABEL={} WRK_METHOD={} WRK_PATH='{}' WRK_TYPE={}{clients} WRK_CONNECTIONS={c} \
             wrk -t 1 -c {c} -d {}s --timeout 5s -s tools/bench/wrk.lua {}",
            self.label,
            self.method,
            self.path,
            self.metric_type,
            self.seconds,
            self.url,
            c = self.connections
        )
    }
}

/// `wrk`'s results and the CPU seconds each group spent during the run.
#[derive(Debug, Clone)]
pub struct Measured {
    /// `wrk.lua`'s line of results.
    pub wrk: WrkRun,
    /// Whether `wrk.lua` judged the run warm (over 100 requests, p99 under
    /// 1 s).
    pub warm: bool,
    /// CPU seconds (user + system) of each group, in the order given.
    pub cpu_s: Vec<f64>,
}

/// Runs `load` (bounded at its length + 60 s) and reads the CPU of `groups`
/// around it.
///
/// # Errors
/// `wrk` cannot start, fails, or prints no results.
pub fn run(load: &Load<'_>, groups: &[Group<'_>]) -> Result<Measured, String> {
    let before: Vec<HashMap<u32, f64>> = groups.iter().map(cpu_of).collect();
    let mut wrk = Command::new("wrk");
    wrk.args(["-t", "1", "-c", &load.connections.to_string()])
        .args(["-d", &format!("{}s", load.seconds), "--timeout", "5s"])
        .args(["-s", concat!(env!("CARGO_MANIFEST_DIR"), "/wrk.lua")])
        .arg(load.url)
        .env("WRK_LABEL", load.label)
        .env("WRK_METHOD", load.method)
        .env("WRK_PATH", load.path)
        .env("WRK_TYPE", load.metric_type)
        .env("WRK_CONNECTIONS", load.connections.to_string())
        .env("WRK_CLIENTS", if load.own_clients { "each" } else { "one" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = output_within(wrk, Duration::from_secs(load.seconds + 60))?;
    let after: Vec<HashMap<u32, f64>> = groups.iter().map(cpu_of).collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("wrk printed no results: {stdout}"))?;
    let wrk: WrkRun = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
    let warm = line.contains("\"warm\":true");
    let cpu_s = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            a.iter()
                .map(|(pid, s)| s - b.get(pid).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    Ok(Measured { wrk, warm, cpu_s })
}

/// CPU seconds so far of every process of `group`, by pid.
pub fn cpu_of(group: &Group<'_>) -> HashMap<u32, f64> {
    members(group)
        .into_iter()
        .filter_map(|pid| Some((pid, cpu_seconds(pid)?)))
        .collect()
}

/// The pids of `group` now.
pub fn members(group: &Group<'_>) -> Vec<u32> {
    match group.select {
        Select::Root => vec![group.root],
        Select::Descendants => descendants(group.root),
        Select::Named(names) => std::iter::once(group.root)
            .chain(descendants(group.root))
            .filter(|&pid| comm(pid).is_some_and(|c| names.contains(&c.as_str())))
            .collect(),
        Select::Executable(path) => running(path),
    }
}

/// The processes running the executable `path`, in increasing pid order.
pub fn running(path: &Path) -> Vec<u32> {
    let Ok(path) = path.canonicalize() else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == path))
        .collect();
    pids.sort_unstable();
    pids
}

/// `utime + stime` of a process, s (`None` once it is gone).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after `comm`, which is parenthesised and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5), 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// `comm` of a process.
fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end().to_string())
}

/// Every process below `root`, from the parent pids of `/proc/*/stat`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// `getconf CLK_TCK`: the unit of `/proc/<pid>/stat`'s times (100 when it
/// cannot be read, the value of every common Linux build).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_and_its_children_are_found() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some_and(|s| s >= 0.0));
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let found = descendants(me);
        let named = members(&Group {
            root: me,
            select: Select::Named(&["sleep"]),
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        assert_eq!(named, vec![child.id()]);
        let exe = std::env::current_exe().unwrap();
        let mine = members(&Group {
            root: 0,
            select: Select::Executable(&exe),
        });
        assert!(mine.contains(&me), "{mine:?}");
    }
}
