//! One run of the client: sample, send, summarise, print.

use std::time::Duration;

use crate::cli::Args;
use crate::client::{ApiClient, ClientError, Delivery, SendMode};
use crate::host::HostSampler;
use crate::payload::{Metric, Reading, CPU_TYPE, MEMORY_TYPE};
use crate::retry::RetryPolicy;
use crate::series::format_series;
use crate::summary::{format_table, Summary};

/// The summaries printed at the end.
pub const SUMMARY_PERIOD: &str = "hourly";

/// The step of the CPU series printed after the summaries.
pub const SERIES_STEP: &str = "5m";

/// Why a run failed.
#[derive(Debug)]
pub enum RunError {
    /// The API could not be used at all (unreachable, bad URL, summary failed).
    Api(ClientError),
    /// Some samples could not be read or were refused; the others were sent
    /// and summarised.
    SamplesFailed {
        /// Samples not stored.
        failed: u32,
        /// Samples taken.
        total: u32,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api(err) => err.fmt(f),
            Self::SamplesFailed { failed, total } => {
                write!(f, "{failed} of {total} samples were not stored")
            }
        }
    }
}

impl std::error::Error for RunError {}

impl From<ClientError> for RunError {
    fn from(err: ClientError) -> Self {
        Self::Api(err)
    }
}

/// Takes `args.samples` samples `args.interval()` apart, then sends them in
/// as few requests as `args.batch_size` allows (one request for the
/// defaults, so a run fits in the default rate limit of 5 POSTs a minute),
/// then prints the hourly summary of both metric types, read fresh
/// (`Cache-Control: no-cache`), next to how many metrics of each type this
/// run stored, the same summaries of this host only (`tag.host`: every
/// metric is tagged with [`Args::host_tag`]), and the CPU series of the
/// last hour in 5-minute steps.
///
/// Errors at once when the API cannot be reached; a sample that cannot be
/// read or that the API refuses is reported on stderr and makes the run fail
/// after the summaries.
pub async fn run(args: &Args) -> Result<(), RunError> {
    let client = ApiClient::new(
        &args.base_url,
        args.api_key.clone(),
        Duration::from_millis(args.timeout_ms),
        policy(args),
    )?;
    let host = args.host_tag();
    let readings = take_samples(args).await;
    let mut failed = args.samples - readings.len() as u32;
    let mut stored = Stored::default();
    let mut mode = SendMode::Batch;
    for chunk in readings.chunks(readings_per_request(args.batch_size)) {
        let metrics: Vec<Metric> = chunk.iter().flat_map(|r| r.metrics(&host)).collect();
        match client.send_metrics(&metrics, &mut mode).await {
            Ok(delivery) => {
                println!("{}", describe(chunk.len(), &metrics, &delivery));
                stored.add(&metrics);
            }
            Err(err @ (ClientError::Unreachable { .. } | ClientError::InvalidBaseUrl(_))) => {
                return Err(err.into())
            }
            Err(err) => {
                eprintln!("{} samples not stored: {err}", chunk.len());
                failed += chunk.len() as u32;
            }
        }
    }
    let summaries = fetch_summaries(&client).await?;
    println!(
        "\nHourly summaries from {} (read with Cache-Control: no-cache):\n",
        args.base_url
    );
    print!("{}", format_table(&summaries, |kind| stored.of(kind)));
    if summaries
        .iter()
        .any(|summary| summary.count > stored.of(&summary.kind))
    {
        println!("\n`count` also includes metrics of the same types stored earlier in the window.");
    }
    let host_summaries = fetch_host_summaries(&client, &host).await?;
    println!(
        "\nHourly summaries of host {host} (tag.host={host}, read with Cache-Control: no-cache):\n"
    );
    print!("{}", format_table(&host_summaries, |kind| stored.of(kind)));
    if host_summaries.iter().any(|s| s.filters.is_none()) {
        println!(
            "\nThe server ignored the tag filter (it has no tags): these are all hosts' figures."
        );
    }
    // The series is an extra: a deployment without the route still gets its
    // summaries, and the run does not fail for it.
    match client.series(CPU_TYPE, SUMMARY_PERIOD, SERIES_STEP).await {
        Ok(series) => {
            println!(
                "\n{} over the last hour, {}-steps (read with Cache-Control: no-cache):\n",
                series.kind, series.step
            );
            print!("{}", format_series(&series));
        }
        Err(err) => eprintln!("\nno series of {CPU_TYPE}: {err}"),
    }
    match failed {
        0 => Ok(()),
        _ => Err(RunError::SamplesFailed {
            failed,
            total: args.samples,
        }),
    }
}

/// The retry bounds chosen on the command line; backoff starts at 500 ms.
fn policy(args: &Args) -> RetryPolicy {
    RetryPolicy {
        max_retries: args.max_retries,
        max_wait: Duration::from_secs(args.max_retry_wait_s),
        base_backoff: Duration::from_millis(500),
    }
}

/// Every reading one sample yields at most this many metrics (CPU, memory).
const METRICS_PER_READING: usize = 2;

/// How many readings fit in one request of at most `batch_size` metrics
/// (at least one).
pub fn readings_per_request(batch_size: usize) -> usize {
    (batch_size / METRICS_PER_READING).max(1)
}

/// Samples `args.samples` times, `args.interval()` apart, printing one line
/// per sample; a sample that cannot be read is reported on stderr and left out.
async fn take_samples(args: &Args) -> Vec<Reading> {
    let mut sampler = HostSampler::new();
    let mut readings = Vec::with_capacity(args.samples as usize);
    for n in 1..=args.samples {
        if n > 1 {
            tokio::time::sleep(args.interval()).await;
        }
        match sampler.sample().await {
            Ok(reading) => {
                println!(
                    "sample {n}/{}: {CPU_TYPE}={:.2}% {MEMORY_TYPE}={:.2}%",
                    args.samples, reading.cpu_usage, reading.memory_used_percent
                );
                readings.push(reading);
            }
            Err(reason) => {
                eprintln!(
                    "sample {n}/{}: cannot read this machine: {reason}",
                    args.samples
                )
            }
        }
    }
    readings
}

/// Metrics of each type this run stored.
#[derive(Debug, Default)]
struct Stored {
    cpu: u64,
    memory: u64,
}

impl Stored {
    fn add(&mut self, metrics: &[Metric]) {
        for metric in metrics {
            match metric.kind {
                CPU_TYPE => self.cpu += 1,
                _ => self.memory += 1,
            }
        }
    }

    fn of(&self, kind: &str) -> u64 {
        match kind {
            CPU_TYPE => self.cpu,
            MEMORY_TYPE => self.memory,
            _ => 0,
        }
    }
}

/// The line printed for a stored request, e.g.
/// `sent 5 samples (10 metrics) in 1 request -> 201 (batch)`.
pub fn describe(samples: usize, metrics: &[Metric], delivery: &Delivery) -> String {
    let statuses: Vec<String> = delivery
        .answers
        .iter()
        .map(|a| {
            let mut s = a.status.to_string();
            if a.replayed {
                s.push_str(" replayed");
            }
            if a.attempts > 1 {
                s.push_str(&format!(" after {} attempts", a.attempts));
            }
            s
        })
        .collect();
    let how = match delivery.mode {
        SendMode::Batch => "batch",
        SendMode::OneByOne => "one by one",
    };
    format!(
        "sent {} ({}) in {} -> {} ({how})",
        plural(samples, "sample"),
        plural(metrics.len(), "metric"),
        plural(delivery.answers.len(), "request"),
        statuses.join(", ")
    )
}

/// `n` and `noun`, with an `s` unless `n` is 1.
fn plural(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// The hourly summary of both metric types, bypassing the cache so it counts
/// what this run just stored.
async fn fetch_summaries(client: &ApiClient) -> Result<Vec<Summary>, ClientError> {
    let mut summaries = Vec::with_capacity(2);
    for kind in [CPU_TYPE, MEMORY_TYPE] {
        summaries.push(client.summary(kind, SUMMARY_PERIOD).await?);
    }
    Ok(summaries)
}

/// The hourly summary of both metric types for this host only, fresh.
async fn fetch_host_summaries(client: &ApiClient, host: &str) -> Result<Vec<Summary>, ClientError> {
    let mut summaries = Vec::with_capacity(2);
    for kind in [CPU_TYPE, MEMORY_TYPE] {
        summaries.push(client.host_summary(kind, SUMMARY_PERIOD, host).await?);
    }
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Answer;
    use chrono::Utc;

    fn answer(status: u16, replayed: bool, attempts: u32) -> Answer {
        Answer {
            status,
            replayed,
            attempts,
            body: String::new(),
        }
    }

    fn metrics(samples: usize) -> Vec<Metric> {
        (0..samples)
            .flat_map(|_| {
                Reading {
                    at: Utc::now(),
                    cpu_usage: 12.345,
                    memory_used_percent: 56.7,
                }
                .metrics("web-7")
            })
            .collect()
    }

    #[test]
    fn describes_a_batch() {
        let delivery = Delivery {
            mode: SendMode::Batch,
            answers: vec![answer(201, false, 2)],
        };
        assert_eq!(
            describe(5, &metrics(5), &delivery),
            "sent 5 samples (10 metrics) in 1 request -> 201 after 2 attempts (batch)"
        );
    }

    #[test]
    fn describes_one_by_one_with_a_replay() {
        let delivery = Delivery {
            mode: SendMode::OneByOne,
            answers: vec![answer(201, false, 1), answer(201, true, 1)],
        };
        assert_eq!(
            describe(1, &metrics(1), &delivery),
            "sent 1 sample (2 metrics) in 2 requests -> 201, 201 replayed (one by one)"
        );
    }

    #[test]
    fn a_request_holds_as_many_readings_as_the_batch_size_allows() {
        assert_eq!(readings_per_request(500), 250);
        assert_eq!(readings_per_request(3), 1);
        assert_eq!(readings_per_request(1), 1);
        assert_eq!(readings_per_request(0), 1);
    }
}
