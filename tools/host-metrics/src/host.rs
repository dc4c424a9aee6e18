//! Reading this machine's CPU utilisation and memory use with `sysinfo`.
//!
//! CPU utilisation is a rate, so `sysinfo` needs two refreshes at least
//! `MINIMUM_CPU_UPDATE_INTERVAL` apart (its documented requirement); every
//! sample does both, so each CPU figure covers that short window.

use chrono::Utc;
use sysinfo::{System, MINIMUM_CPU_UPDATE_INTERVAL};

use crate::payload::Reading;

/// Takes samples of this machine. Keeps one `sysinfo::System` so the CPU
/// and memory tables are allocated once.
pub struct HostSampler {
    system: System,
}

impl Default for HostSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSampler {
    /// A sampler with nothing read yet.
    pub fn new() -> Self {
        Self {
            system: System::new(),
        }
    }

    /// One sample: CPU utilisation over about `MINIMUM_CPU_UPDATE_INTERVAL`
    /// and memory in use, both in percent, stamped with the current UTC time.
    ///
    /// Errors when the system reports no memory at all (nothing to divide by).
    pub async fn sample(&mut self) -> Result<Reading, String> {
        self.system.refresh_cpu_usage();
        tokio::time::sleep(MINIMUM_CPU_UPDATE_INTERVAL).await;
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let memory = memory_used_percent(self.system.used_memory(), self.system.total_memory())
            .ok_or("the system reports a total memory of 0 bytes")?;
        Ok(Reading {
            at: Utc::now(),
            cpu_usage: widen(self.system.global_cpu_usage()),
            memory_used_percent: memory,
        })
    }
}

/// `used` as a percentage of `total` (both in bytes), or `None` when `total`
/// is 0.
pub fn memory_used_percent(used: u64, total: u64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    // u64 → f64 loses precision only above 2^53 bytes (8 PiB), far beyond any host.
    Some(used as f64 / total as f64 * 100.0)
}

/// `value` as the `f64` nearest to its shortest decimal form, so a CPU figure
/// of `55.0_f32` is sent as `55.0`, not as the binary expansion
/// `54.999996185302734` that `f64::from` yields.
pub fn widen(value: f32) -> f64 {
    value
        .to_string()
        .parse()
        .unwrap_or_else(|_| f64::from(value))
}

/// This machine's hostname as the system reports it (empty when it does
/// not).
pub fn hostname() -> String {
    System::host_name().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_percent_of_total() {
        assert_eq!(memory_used_percent(1, 4), Some(25.0));
        assert_eq!(memory_used_percent(0, 4), Some(0.0));
        assert_eq!(memory_used_percent(4, 4), Some(100.0));
    }

    #[test]
    fn widen_keeps_the_decimal_form() {
        assert_eq!(widen(54.999996), 54.999996);
        assert_eq!(widen(55.0), 55.0);
        assert_eq!(widen(0.1), 0.1);
        assert!(widen(f32::NAN).is_nan());
    }

    #[test]
    fn memory_percent_without_total_is_none() {
        assert_eq!(memory_used_percent(0, 0), None);
    }

    #[tokio::test]
    async fn real_sample_is_in_range() {
        let reading = HostSampler::new().sample().await.expect("a sample");
        assert!((0.0..=100.0).contains(&reading.cpu_usage), "{reading:?}");
        assert!(
            reading.memory_used_percent > 0.0 && reading.memory_used_percent <= 100.0,
            "{reading:?}"
        );
    }
}
