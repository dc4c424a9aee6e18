//! When and how long to wait before sending a request again.
//!
//! `Retry-After` is read as RFC 9110 §10.2.3 defines it (delay-seconds or an
//! HTTP-date). 429 waits exactly what the server asks (RFC 6585 §4); 503
//! waits at least what it asks and backs off exponentially between tries,
//! as in the AWS Architecture Blog's "Exponential Backoff and Jitter" (without
//! the jitter: one client alone does not cause a thundering herd). Every wait
//! is clamped to a maximum so a hostile or buggy header cannot stall the run.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parses a `Retry-After` value into a delay from `now`.
///
/// Accepts delay-seconds (`"120"`; values too large for a `u64` saturate) and
/// an HTTP-date (`"Wed, 18 Feb 2026 12:00:00 GMT"`; a date in the past gives a
/// zero delay). Returns `None` for anything else, so the caller falls back to
/// its own backoff.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Bounds on retrying one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt before giving up.
    pub max_retries: u32,
    /// Upper bound of any single wait.
    pub max_wait: Duration,
    /// First backoff step; doubles with each retry.
    pub base_backoff: Duration,
}

/// Why a request may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// `429 Too Many Requests`.
    RateLimited,
    /// `503 Service Unavailable`.
    Unavailable,
    /// The request timed out; its outcome is unknown, which the
    /// `Idempotency-Key` makes safe to retry.
    TimedOut,
}

impl Retryable {
    /// The retryable condition for an HTTP status, if any.
    pub fn from_status(status: u16) -> Option<Self> {
        match status {
            429 => Some(Self::RateLimited),
            503 => Some(Self::Unavailable),
            _ => None,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff for the retry numbered `retry` (0 for the first
    /// retry): `base_backoff · 2^retry`, clamped to `max_wait`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_wait)
            .min(self.max_wait)
    }

    /// How long to wait before retry number `retry` (0-based), or `None` when
    /// the retries are used up.
    ///
    /// 429 waits `Retry-After` (or the backoff when absent); 503 and timeouts
    /// wait the larger of `Retry-After` and the backoff. Always ≤ `max_wait`.
    pub fn delay(
        &self,
        why: Retryable,
        retry_after: Option<Duration>,
        retry: u32,
    ) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        let backoff = self.backoff(retry);
        let wait = match why {
            Retryable::RateLimited => retry_after.unwrap_or(backoff),
            Retryable::Unavailable | Retryable::TimedOut => {
                retry_after.unwrap_or(Duration::ZERO).max(backoff)
            }
        };
        Some(wait.min(self.max_wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, 18, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            max_wait: Duration::from_secs(10),
            base_backoff: Duration::from_millis(500),
        }
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("1", now()), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_huge_number_saturates() {
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_http_date() {
        assert_eq!(
            parse_retry_after("Wed, 18 Feb 2026 12:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn retry_after_date_in_the_past_is_zero() {
        assert_eq!(
            parse_retry_after("Wed, 18 Feb 2026 11:59:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for value in ["", "  ", "-1", "1.5", "soon", "1s", "Wed, 99 Feb 2026"] {
            assert_eq!(parse_retry_after(value, now()), None, "{value:?}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_clamped() {
        let p = policy();
        assert_eq!(p.backoff(0), Duration::from_millis(500));
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(2), Duration::from_secs(2));
        assert_eq!(p.backoff(10), Duration::from_secs(10));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn rate_limited_waits_what_the_server_asks() {
        let p = policy();
        let one = Some(Duration::from_secs(1));
        assert_eq!(
            p.delay(Retryable::RateLimited, one, 2),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.delay(Retryable::RateLimited, None, 0),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn unavailable_waits_at_least_the_backoff() {
        let p = policy();
        let one = Some(Duration::from_secs(1));
        assert_eq!(
            p.delay(Retryable::Unavailable, one, 0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.delay(Retryable::Unavailable, one, 2),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.delay(Retryable::TimedOut, None, 1),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn waits_are_bounded_by_max_wait() {
        let p = policy();
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            p.delay(Retryable::RateLimited, hour, 0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            p.delay(Retryable::Unavailable, hour, 0),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn retries_are_bounded() {
        let p = policy();
        assert!(p.delay(Retryable::Unavailable, None, 2).is_some());
        assert_eq!(p.delay(Retryable::Unavailable, None, 3), None);
        assert_eq!(p.delay(Retryable::RateLimited, None, 3), None);
    }

    #[test]
    fn only_429_and_503_are_retryable_statuses() {
        assert_eq!(Retryable::from_status(429), Some(Retryable::RateLimited));
        assert_eq!(Retryable::from_status(503), Some(Retryable::Unavailable));
        for status in [200, 201, 400, 401, 413, 422, 500, 502, 504] {
            assert_eq!(Retryable::from_status(status), None, "{status}");
        }
    }
}
