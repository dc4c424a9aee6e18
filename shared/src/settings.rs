//! Reading settings from the environment: the one reader every component's
//! settings type uses, and the error that names the offending variable.
//!
//! Each component owns its settings (defaults, units, validation) and reads
//! them with an [`Env`]; [`crate::config::Config`] composes them. An invalid
//! value is a deployment error, not a request error: it becomes a
//! [`ConfigError`] naming the variable, and the function stops at cold start.
//! A variable set to an empty (or blank) value counts as unset.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

/// A configuration variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {variable}: {reason}")]
pub struct ConfigError {
    /// The environment variable's name, e.g. `REDIS_TIMEOUT_MS`.
    pub variable: &'static str,
    /// Why the value was refused, phrased for an operator.
    pub reason: String,
}

impl ConfigError {
    /// A refusal of `variable`'s value for `reason`.
    pub fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

/// The variables of one deployment, looked up by name (the process
/// environment, or explicit pairs in tests), with typed, range-checked
/// readers whose errors name the variable.
pub struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl<'a> Env<'a> {
    /// Reads variables through `lookup`.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self(lookup)
    }

    /// The value of `name`, `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value of `name`, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_string())
    }

    /// The value of `name` parsed as `T` (surrounding blanks ignored), or
    /// `default`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `name` with the parser's message.
    pub fn parse<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::new(name, e.to_string())),
        }
    }

    /// An unsigned integer within `range`, or `default`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `name` when the value is not an integer or
    /// lies outside `range`.
    pub fn int(
        &self,
        name: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let value: u64 = self.parse(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                name,
                format!("{value} is outside {}..={}", range.start(), range.end()),
            ))
        }
    }

    /// A duration given in milliseconds (a `_MS` variable) within `range`.
    ///
    /// # Errors
    /// As [`Env::int`].
    pub fn millis(
        &self,
        name: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.int(name, default, range).map(Duration::from_millis)
    }

    /// A duration given in seconds (a `_SECONDS` variable) within `range`.
    ///
    /// # Errors
    /// As [`Env::int`].
    pub fn seconds(
        &self,
        name: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.int(name, default, range).map(Duration::from_secs)
    }

    /// A probability in `[0, 1]`, or `default`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `name` when the value is not a number in `[0, 1]`.
    pub fn probability(&self, name: &'static str, default: f64) -> Result<f64, ConfigError> {
        let value: f64 = self.parse(name, default)?;
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                name,
                format!("{value} is not a probability between 0 and 1"),
            ))
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
