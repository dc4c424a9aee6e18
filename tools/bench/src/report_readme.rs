//! The README's Performance section, written by `bench report --readme` from
//! the same results as `BENCHMARKS.md`, so the two cannot disagree.
//!
//! The section is the text between the README's `<!-- section: benchmarks -->`
//! and `<!-- /section: benchmarks -->` markers; everything outside them is
//! left as it was.

use crate::report::{median, thousands};
use crate::results::{Results, WrkRun};
use crate::Options;

const START: &str = "<!-- section: benchmarks -->";
const END: &str = "<!-- /section: benchmarks -->";

/// Replaces the Performance section of the README at `path` with one
/// summarising `r` and `e2e`.
///
/// # Errors
/// The README cannot be read or written, or lacks either marker (in that
/// order).
pub fn write(path: &str, r: &Results, e2e: &[WrkRun], opts: &Options) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let updated = replace_section(&text, &section(r, e2e, opts))
        .ok_or_else(|| format!("{path}: no `{START}` … `{END}` section to rewrite"))?;
    std::fs::write(path, updated).map_err(|e| format!("{path}: {e}"))?;
    eprintln!("==> rewrote the Performance section of {path}");
    Ok(())
}

/// `text` with what lies between the markers replaced by `body`; `None`
/// when the markers are missing or out of order.
fn replace_section(text: &str, body: &str) -> Option<String> {
    let start = text.find(START)? + START.len();
    let end = start + text[start..].find(END)?;
    Some(format!("{}\n{body}{}", &text[..start], &text[end..]))
}

/// Wraps `text` at 79 columns, the first line after `first`, the others
/// after `rest`. A unit (`µs`, `ms`, `s`, `MiB`) stays on the line of its
/// number.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let unit = matches!(
            word.trim_end_matches([',', '.', ';', ')', ':']),
            "µs" | "ms" | "s" | "MiB"
        );
        match words.last_mut() {
            Some(last) if unit => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_string()),
        }
    }
    let mut out = String::new();
    let mut line = first.to_string();
    // Whether `line` holds a word yet (a line is never broken before its first).
    let mut has_word = false;
    for word in words {
        if has_word && line.chars().count() + 1 + word.chars().count() > 79 {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
        }
        if !line.is_empty() && !line.ends_with(' ') {
            line.push(' ');
        }
        line.push_str(&word);
        has_word = true;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `text` as a markdown bullet wrapped at 79 columns.
fn bullet(text: &str) -> String {
    wrap(text, "-", "  ")
}

/// `lo–hi` of `values` with `digits` decimals, or just one value when they
/// round alike.
fn range(values: &[f64], digits: usize) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = (format!("{lo:.digits$}"), format!("{hi:.digits$}"));
    if lo == hi {
        lo
    } else {
        format!("{lo}–{hi}")
    }
}

fn section(r: &Results, e2e: &[WrkRun], opts: &Options) -> String {
    let command = opts.get("command").map_or("make bench", String::as_str);
    let mut md = String::from("## Performance\n\n");
    md.push_str(&wrap(
        &format!(
            "Measured with `{command}` (a private Redis on loopback, medians of {} run{}; \
             numbers, machine and exact commands in [BENCHMARKS.md](BENCHMARKS.md); this \
             section is rewritten by each run):",
            r.runs,
            if r.runs == 1 { "" } else { "s" }
        ),
        "",
        "",
    ));
    md.push('\n');
    let trips = |path: &str| {
        r.round_trips
            .iter()
            .find(|row| row.path.starts_with(path))
            .and_then(|row| row.counts.iter().max().copied())
            .map_or("–".to_string(), |c| c.to_string())
    };
    md.push_str(&bullet(&format!(
        "Redis round trips per request: ingest {}, rate-limited ingest {}, cache hit {}, \
         cache miss {}, health {} (held by `tests/tests/round_trips.rs`).",
        trips("ingest, accepted (one"),
        trips("ingest, rate-limited"),
        trips("summary, cache hit"),
        trips("summary, cache miss"),
        trips("health"),
    )));
    if let Some(row) = r.throughput.rows.iter().find(|row| row.concurrency == 64) {
        let ratios = crate::report_throughput::ratios(row);
        md.push_str(&bullet(&format!(
            "In-process ingest at concurrency 64 reaches {:.2} ({} over {} runs) of the rate \
             at which `redis-benchmark` gets our two scripts through the same Redis (median \
             of the per-run ratios; target ≥ 0.8). Redis spends {:.0} µs of CPU per ingest \
             from our client and {:.0} µs per pair of calls from `redis-benchmark`; our client \
             spends {:.0} µs of its own (`redis-benchmark`: {:.0} µs), on another core. A \
             profile taken once with callgrind puts it at about 64k user-space instructions \
             per ingest, half of them in the redis crate.",
            median(&ratios),
            range(&ratios, 2),
            ratios.len(),
            median(&row.server_cpu_us),
            median(&row.server_cpu_us_pair),
            median(&row.client_cpu_us),
            median(&row.redis_benchmark_cpu_us_pair),
        )));
    }
    let d = &r.data_size;
    let ratio: Vec<f64> = d
        .aggregate_large_us
        .iter()
        .zip(&d.aggregate_small_us)
        .map(|(l, s)| l / s)
        .collect();
    if !ratio.is_empty() {
        md.push_str(&bullet(&format!(
            "A monthly summary over {} points costs {:.2}× what it costs over {} ({:.0} µs \
             against {:.0} µs of Redis work; target ≤ 1.5): it reads pre-aggregated buckets, \
             not points.",
            thousands(d.large_points as f64),
            median(&ratio),
            thousands(d.small_points as f64),
            median(&d.aggregate_large_us),
            median(&d.aggregate_small_us),
        )));
    }
    let p = |label: &str, pick: fn(&WrkRun) -> f64| {
        let v: Vec<f64> = e2e.iter().filter(|w| w.label == label).map(pick).collect();
        median(&v) / 1000.0
    };
    if !e2e.is_empty() {
        md.push_str(&bullet(&format!(
            "Through `cargo lambda watch` on the same machine ({} connections): ingest p50 \
             {:.1} ms, p99 {:.1} ms; summary cache hit p50 {:.1} ms, p99 {:.1} ms — mostly the \
             emulator's own HTTP and runtime API hops, which in AWS are API Gateway's and \
             Lambda's.",
            e2e[0].connections,
            p("ingest", |w| w.p50_us),
            p("ingest", |w| w.p99_us),
            p("summary_hit", |w| w.p50_us),
            p("summary_hit", |w| w.p99_us),
        )));
    }
    fn memory(
        samples: &[crate::results::MemorySample],
    ) -> Option<(&crate::results::MemorySample, f64, f64)> {
        let bytes: Vec<f64> = samples
            .iter()
            .map(|s| s.memory_usage_bytes as f64)
            .collect();
        let first = samples.first()?;
        let total = median(&bytes);
        Some((first, total / 1_048_576.0, total / first.points as f64))
    }
    if let (Some((one, one_mib, one_per)), Some((many, many_mib, many_per))) =
        (memory(&r.memory.one_type), memory(&r.memory.thousand_types))
    {
        md.push_str(&bullet(&format!(
            "Redis memory (`MEMORY USAGE` of the keys): {} metrics of one type over 30 days \
             take {one_mib:.1} MiB ({one_per:.1} bytes per metric: buckets, not points); {} \
             types × {} metrics take {many_mib:.0} MiB ({many_per:.0} bytes per metric, as \
             each type has its own buckets).",
            thousands(one.points as f64),
            thousands(many.types as f64),
            thousands(many.points as f64 / many.types.max(1) as f64),
        )));
    }
    let cs = &r.cold_start.rows;
    if !cs.is_empty() {
        let first: Vec<f64> = cs
            .iter()
            .map(|row| median(&row.first_response_ms))
            .collect();
        let rss: Vec<f64> = cs
            .iter()
            .map(|row| median(&row.peak_rss_kib) / 1024.0)
            .collect();
        md.push_str(&bullet(&format!(
            "Cold start of a function to its first response {} ms, peak RSS {} MiB (x86_64 \
             release builds under a runtime API emulation; mimalloc, the global allocator, \
             accounts for about 6 MiB of it).",
            range(&first, 0),
            range(&rss, 0),
        )));
    }
    if let Some(e) = opts.get("elapsed-seconds") {
        md.push_str(&bullet(&format!(
            "The whole command took {e} s on {} cores, the build included{}.",
            crate::report::cores(),
            opts.get("build-kind")
                .map(|k| format!(" ({k})"))
                .unwrap_or_default()
        )));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_section() {
        let text = format!("# A\n{START}\nold\n{END}\n## B\n");
        assert_eq!(
            replace_section(&text, "new\n").unwrap(),
            format!("# A\n{START}\nnew\n{END}\n## B\n")
        );
        assert!(replace_section("# A\n", "new\n").is_none());
        assert!(replace_section(&format!("{END}\n{START}\n"), "new\n").is_none());
    }

    #[test]
    fn bullets_wrap_at_79_columns() {
        let text = "word ".repeat(40);
        let wrapped = bullet(&text);
        assert!(wrapped.starts_with("- word"));
        assert!(wrapped.lines().all(|l| l.len() <= 79));
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("  word")));
        assert_eq!(
            wrapped.split_whitespace().filter(|w| *w == "word").count(),
            40
        );
    }

    #[test]
    fn units_stay_with_their_numbers() {
        let text = format!("{}32 µs, 8.5 ms and 14 MiB.", "x".repeat(74));
        let wrapped = wrap(&text, "", "");
        assert!(wrapped.contains("32 µs,"), "{wrapped}");
        assert!(wrapped.contains("8.5 ms"), "{wrapped}");
        assert!(wrapped.contains("14 MiB."), "{wrapped}");
        assert!(wrapped.lines().all(|l| !l.starts_with(' ')), "{wrapped}");
    }
}
