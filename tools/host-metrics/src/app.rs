//! One run of the client: sample, send, summarise, print.

use std::time::Duration;

use crate::cli::Args;
use crate::client::{ApiClient, ClientError, Delivery, SendMode};
use crate::host::HostSampler;
use crate::payload::{Reading, CPU_TYPE, MEMORY_TYPE};
use crate::retry::RetryPolicy;
use crate::summary::{format_table, Summary};

/// The summaries printed at the end.
pub const SUMMARY_PERIOD: &str = "hourly";

/// Why a run failed.
#[derive(Debug)]
pub enum RunError {
    /// The API could not be used at all (unreachable, bad URL, summary failed).
    Api(ClientError),
    /// Some samples were refused; the others were sent and summarised.
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

/// Takes `args.samples` samples `args.interval()` apart, sends each, then
/// prints the hourly summary of both metric types as a table on stdout.
///
/// Errors at once when the API cannot be reached; a sample the API refuses
/// is reported on stderr and makes the run fail after the summaries.
pub async fn run(args: &Args) -> Result<(), RunError> {
    let client = ApiClient::new(
        &args.base_url,
        args.api_key.clone(),
        Duration::from_millis(args.timeout_ms),
        policy(args),
    )?;
    let mut sampler = HostSampler::new();
    let mut mode = SendMode::Batch;
    let mut failed = 0;
    for n in 1..=args.samples {
        if n > 1 {
            tokio::time::sleep(args.interval()).await;
        }
        if !send_one(&client, &mut sampler, &mut mode, n, args.samples).await? {
            failed += 1;
        }
    }
    let summaries = fetch_summaries(&client).await?;
    println!("\nHourly summaries from {}:\n", args.base_url);
    print!("{}", format_table(&summaries));
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

/// Samples once and sends it, printing one line. `Ok(false)` when the sample
/// was not stored but the run can go on; `Err` when the API is unreachable.
async fn send_one(
    client: &ApiClient,
    sampler: &mut HostSampler,
    mode: &mut SendMode,
    n: u32,
    total: u32,
) -> Result<bool, RunError> {
    let reading = match sampler.sample().await {
        Ok(reading) => reading,
        Err(reason) => {
            eprintln!("sample {n}/{total}: cannot read this machine: {reason}");
            return Ok(false);
        }
    };
    match client.send_sample(&reading.metrics(), mode).await {
        Ok(delivery) => {
            println!("{}", describe(n, total, &reading, &delivery));
            Ok(true)
        }
        Err(err @ (ClientError::Unreachable { .. } | ClientError::InvalidBaseUrl(_))) => {
            Err(err.into())
        }
        Err(err) => {
            eprintln!("sample {n}/{total}: not stored: {err}");
            Ok(false)
        }
    }
}

/// The line printed for a stored sample, e.g.
/// `sample 1/5: cpu_usage=12.34% memory_used_percent=56.78% -> 201 (batch)`.
pub fn describe(n: u32, total: u32, reading: &Reading, delivery: &Delivery) -> String {
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
        "sample {n}/{total}: {CPU_TYPE}={:.2}% {MEMORY_TYPE}={:.2}% -> {} ({how})",
        reading.cpu_usage,
        reading.memory_used_percent,
        statuses.join(", ")
    )
}

/// The hourly summary of both metric types.
async fn fetch_summaries(client: &ApiClient) -> Result<Vec<Summary>, ClientError> {
    let mut summaries = Vec::with_capacity(2);
    for kind in [CPU_TYPE, MEMORY_TYPE] {
        summaries.push(client.summary(kind, SUMMARY_PERIOD).await?);
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

    fn reading() -> Reading {
        Reading {
            at: Utc::now(),
            cpu_usage: 12.345,
            memory_used_percent: 56.7,
        }
    }

    #[test]
    fn describes_a_batch() {
        let delivery = Delivery {
            mode: SendMode::Batch,
            answers: vec![answer(201, false, 2)],
        };
        assert_eq!(
            describe(1, 5, &reading(), &delivery),
            "sample 1/5: cpu_usage=12.35% memory_used_percent=56.70% -> 201 after 2 attempts (batch)"
        );
    }

    #[test]
    fn describes_one_by_one_with_a_replay() {
        let delivery = Delivery {
            mode: SendMode::OneByOne,
            answers: vec![answer(201, false, 1), answer(201, true, 1)],
        };
        assert_eq!(
            describe(2, 2, &reading(), &delivery),
            "sample 2/2: cpu_usage=12.35% memory_used_percent=56.70% -> 201, 201 replayed (one by one)"
        );
    }
}
