//! Command-line options of the `host-metrics` client.
//!
//! Every option has a default that works with the local stack the README
//! starts (`http://localhost:8000`), so `cargo run -p host-metrics` needs no
//! arguments.

use std::time::Duration;

use clap::Parser;

/// Options of one run: where to send, how many samples, how patient to be.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "host-metrics",
    version,
    about = "Sample this machine's CPU and memory use, send the samples to the analytics API in as few requests as possible, then print fresh hourly summaries next to what was stored."
)]
pub struct Args {
    /// Base URL of the API; `/api/metrics` and `/api/metrics/summary` are appended.
    #[arg(long, env = "API_BASE_URL", default_value = "http://localhost:8000")]
    pub base_url: String,

    /// API key, sent as the `x-api-key` header when given.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Number of samples to take and send (each sample is one CPU and one memory reading).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub samples: u32,

    /// Pause between two samples, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,

    /// Most metrics in one request; keep it at or below the server's
    /// `MAX_BATCH_SIZE`. The samples of a run go in as few requests as this
    /// allows (each sample is two metrics).
    #[arg(long, default_value_t = 500, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=100_000), |n| n as usize))]
    pub batch_size: usize,

    /// Retries of one request after 429, 503 or a timeout before giving up.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,

    /// Upper bound of a single wait before a retry, in seconds, whatever
    /// `Retry-After` asks for (the default covers a full rate-limit window of
    /// the API's default 60 s, so a 429 is retried when it can succeed).
    #[arg(long, default_value_t = 90)]
    pub max_retry_wait_s: u64,

    /// Timeout of one HTTP request, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,

    /// The `host` tag of every metric sent, and whose summary is printed
    /// (1–64 characters from `A-Z a-z 0-9 _ . - /`). Default: this machine's
    /// hostname, other characters replaced by `-`.
    #[arg(long, env = "HOST_TAG", value_parser = crate::payload::host_tag)]
    pub host: Option<String>,
}

impl Args {
    /// The pause between two samples.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The `host` tag: `--host`, else this machine's hostname as a tag.
    pub fn host_tag(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| crate::payload::hostname_tag(&crate::host::hostname()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_arguments() {
        let args = Args::try_parse_from(["host-metrics"]).expect("defaults parse");
        assert_eq!(args.samples, 5);
        assert_eq!(args.interval_ms, 1000);
        assert_eq!(args.interval(), Duration::from_secs(1));
    }

    #[test]
    fn the_host_tag_defaults_to_the_hostname_and_is_checked() {
        let args = Args::try_parse_from(["host-metrics"]).expect("defaults parse");
        assert!(crate::payload::host_tag(&args.host_tag()).is_ok());
        let args = Args::try_parse_from(["host-metrics", "--host", "web-7"]).expect("parses");
        assert_eq!(args.host_tag(), "web-7");
        assert!(Args::try_parse_from(["host-metrics", "--host", "a b"]).is_err());
    }

    #[test]
    fn zero_samples_is_refused() {
        assert!(Args::try_parse_from(["host-metrics", "--samples", "0"]).is_err());
    }

    #[test]
    fn options_override_defaults() {
        let args = Args::try_parse_from([
            "host-metrics",
            "--base-url",
            "http://127.0.0.1:9000",
            "--api-key",
            "k",
            "--samples",
            "2",
            "--interval-ms",
            "10",
        ])
        .expect("options parse");
        assert_eq!(args.base_url, "http://127.0.0.1:9000");
        assert_eq!(args.api_key.as_deref(), Some("k"));
        assert_eq!(args.samples, 2);
        assert_eq!(args.interval_ms, 10);
    }
}
