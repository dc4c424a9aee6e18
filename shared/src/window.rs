//! Summary queries: which metric type, over which time window.
//!
//! Periods are trailing windows ending now, aligned to whole minutes: `to` is
//! the end of the current minute and `from = to − period`. An explicit
//! `from`/`to` pair (RFC 3339) selects another window, rounded outward to whole
//! minutes. Windows are half-open, `[from, to)`, in UTC.
//!
//! Tags select and group: `tag.<key>=<value>` filters (several are ANDed),
//! `group_by=<key>` and, with it, `limit=` (default 100, at most 1,000
//! groups), parsed into a [`TagSelection`].
//!
//! The parsed [`SummaryQuery`] — never the raw query string — is what the
//! cache keys on, so parameter order and unknown parameters do not matter.

pub mod quantiles;
pub mod step;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::metric::{
    parse_rfc3339, quote_input, serialize_timestamp, FieldError, Invalid, MetricType,
};
use crate::tags::{TagKey, TagSelection, Tags, MAX_GROUP_LIMIT, MAX_TAGS};
use quantiles::Quantiles;

/// A trailing summary period, as accepted in the `period` query parameter.
/// Trailing windows end at the end of the current UTC minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The last 60 minutes.
    Hourly,
    /// The last 24 hours.
    Daily,
    /// The last 7 days.
    Weekly,
    /// The last 30 days.
    Monthly,
}

impl Period {
    /// Every period, in the order listed to clients.
    pub const ALL: [Period; 4] = [Self::Hourly, Self::Daily, Self::Weekly, Self::Monthly];

    /// The name used in the query string and the response.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    /// The length of the period.
    pub fn duration(self) -> ChronoDuration {
        match self {
            Self::Hourly => ChronoDuration::minutes(60),
            Self::Daily => ChronoDuration::hours(24),
            Self::Weekly => ChronoDuration::days(7),
            Self::Monthly => ChronoDuration::days(30),
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }
}

/// The period reported in a summary: the one asked for, or `custom` for an
/// explicit `from`/`to` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeriodLabel {
    /// The last 60 minutes.
    Hourly,
    /// The last 24 hours.
    Daily,
    /// The last 7 days.
    Weekly,
    /// The last 30 days.
    Monthly,
    /// An explicit `from`/`to` window.
    Custom,
}

impl PeriodLabel {
    /// `"hourly"`…`"monthly"`, or `"custom"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Custom => "custom",
        }
    }
}

impl From<Option<Period>> for PeriodLabel {
    fn from(period: Option<Period>) -> Self {
        match period {
            Some(Period::Hourly) => Self::Hourly,
            Some(Period::Daily) => Self::Daily,
            Some(Period::Weekly) => Self::Weekly,
            Some(Period::Monthly) => Self::Monthly,
            None => Self::Custom,
        }
    }
}

/// The half-open UTC window `[from, to)` actually summarised; both bounds
/// are whole minutes (an explicit window is rounded outward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SummaryWindow)]
pub struct Window {
    /// Inclusive start, UTC.
    #[serde(serialize_with = "serialize_timestamp")]
    #[schema(value_type = String, format = DateTime, examples("2026-02-18T11:01:00Z"))]
    pub from: DateTime<Utc>,
    /// Exclusive end, UTC.
    #[serde(serialize_with = "serialize_timestamp")]
    #[schema(value_type = String, format = DateTime, examples("2026-02-18T12:01:00Z"))]
    pub to: DateTime<Utc>,
}

impl Window {
    /// The trailing window of `period` ending at the end of `now`'s minute.
    pub fn trailing(period: Period, now: DateTime<Utc>) -> Self {
        let to = ceil_minute(now + ChronoDuration::nanoseconds(1));
        Self {
            from: to - period.duration(),
            to,
        }
    }
}

/// A validated `GET /api/metrics/summary` query, or (with a `step`) a
/// `GET /api/metrics/series` query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SummaryQuery {
    /// The metric type summarised.
    pub metric_type: MetricType,
    /// The period asked for, or `None` for an explicit `from`/`to` window.
    pub period: Option<Period>,
    /// The effective window (a series aligns it outward to its step).
    pub window: Window,
    /// The quantiles to report (`quantiles=`, else p50, p90, p95, p99).
    pub quantiles: Quantiles,
    /// A series' step, s; `None` for a summary.
    pub step: Option<i64>,
    /// Tag filters and grouping (none: every metric of the type).
    pub tags: TagSelection,
}

impl SummaryQuery {
    /// The period as reported: `hourly`…`monthly`, or `custom` for an
    /// explicit window.
    pub fn period_label(&self) -> PeriodLabel {
        self.period.into()
    }

    /// The canonical text that identifies the query for the cache:
    /// `type|period` for a trailing period (the window moves with the clock;
    /// a cached summary is at most its TTL behind it) and
    /// `type|custom|from_s|to_s` for an explicit window; then the tag
    /// selection in canonical order (`|f=host=web-7,region=eu` for filters,
    /// `|g=<key>|l=<limit>` for a group-by; nothing without tags,
    /// [`TagSelection::cache_identity`]), then `|q=…` when the
    /// quantiles are not the default ones, and a series is
    /// `series|<step s>|…`.
    pub fn cache_identity(&self) -> String {
        let mut identity = match self.period {
            Some(period) => format!("{}|{}", self.metric_type, period.as_str()),
            None => format!(
                "{}|custom|{}|{}",
                self.metric_type,
                self.window.from.timestamp(),
                self.window.to.timestamp()
            ),
        };
        identity.push_str(&self.tags.cache_identity());
        if self.quantiles != Quantiles::default() {
            identity.push_str("|q=");
            identity.push_str(&self.quantiles.canonical());
        }
        match self.step {
            Some(step) => format!("series|{step}|{identity}"),
            None => identity,
        }
    }
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(ChronoDuration::minutes(1)).unwrap_or(t)
}

fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_minute(t);
    if floor == t {
        t
    } else {
        floor + ChronoDuration::minutes(1)
    }
}

fn allowed_periods() -> String {
    Period::ALL.map(Period::as_str).join(", ")
}

/// Parses the summary query from `(name, value)` pairs as they appear in the
/// query string (repeated names appear repeatedly).
///
/// # Errors
/// [`Invalid`] listing every problem: a missing or
/// invalid `type`, a missing or unknown `period` (the allowed periods are
/// named), an unparsable `from`/`to`, only one of `from` and `to`, `period`
/// together with `from`/`to`, `from ≥ to`, a `from` outside the retention, a
/// `to` beyond the allowed future skew, or any of these parameters given
/// twice. `detail` joins exactly these problems, each as `<field> <reason>`.
/// `quantiles` too (comma-separated, each in (0, 1), at most 10), and the
/// tag parameters: `tag.<key>` (a valid key and value, each key once, at
/// most 8), `group_by` (a valid key) and `limit` (1 to 1,000, only with
/// `group_by`).
pub fn parse_summary_query<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    now: DateTime<Utc>,
    retention: ChronoDuration,
    max_future_skew: ChronoDuration,
) -> Result<SummaryQuery, Invalid> {
    parse_query(params, now, retention, max_future_skew, false)
}

/// Parses a series query: a summary query ([`parse_summary_query`]) plus a
/// required `step` ([`step::parse_step`]). The window is not yet aligned to
/// the step (the store's series plan does that).
///
/// # Errors
/// [`Invalid`] listing every problem, a missing or invalid `step` among them.
pub fn parse_series_query<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    now: DateTime<Utc>,
    retention: ChronoDuration,
    max_future_skew: ChronoDuration,
) -> Result<SummaryQuery, Invalid> {
    parse_query(params, now, retention, max_future_skew, true)
}

fn parse_query<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    now: DateTime<Utc>,
    retention: ChronoDuration,
    max_future_skew: ChronoDuration,
    series: bool,
) -> Result<SummaryQuery, Invalid> {
    let mut seen: [Vec<&str>; 8] = Default::default();
    const NAMES: [&str; 8] = [
        "type",
        "period",
        "from",
        "to",
        "quantiles",
        "step",
        "group_by",
        "limit",
    ];
    let mut filters: Vec<(&str, &str)> = Vec::new();
    for (name, value) in params {
        if let Some(i) = NAMES.iter().position(|n| *n == name) {
            seen[i].push(value);
        } else if let Some(key) = name.strip_prefix("tag.") {
            filters.push((key, value));
        }
    }
    let mut errors = Vec::new();
    let mut single = |i: usize| -> Option<&str> {
        match seen[i].as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => {
                errors.push(FieldError::new(NAMES[i], "may appear only once"));
                None
            }
        }
    };
    let (raw_type, raw_period, raw_from, raw_to) = (single(0), single(1), single(2), single(3));
    let (raw_quantiles, raw_step) = (single(4), if series { single(5) } else { None });
    let (raw_group_by, raw_limit) = (single(6), single(7));

    let metric_type = match raw_type {
        Some(raw) => MetricType::parse(raw)
            .map_err(|reason| errors.push(FieldError::new("type", reason)))
            .ok(),
        None => {
            if seen[0].is_empty() {
                errors.push(FieldError::new("type", "is required"));
            }
            None
        }
    };
    let period = match raw_period {
        Some(raw) => match Period::parse(raw) {
            Some(p) => Some(p),
            None => {
                errors.push(FieldError::new(
                    "period",
                    format!(
                        "must be one of {} (got {})",
                        allowed_periods(),
                        quote_input(raw)
                    ),
                ));
                None
            }
        },
        None => None,
    };
    let mut bound = |name: &'static str, raw: Option<&str>| {
        raw.and_then(|raw| {
            parse_rfc3339(raw)
                .map_err(|reason| errors.push(FieldError::new(name, reason)))
                .ok()
        })
    };
    let (from, to) = (bound("from", raw_from), bound("to", raw_to));

    let window = match (raw_from, raw_to) {
        (Some(_), Some(_)) => match (from, to) {
            (Some(from), Some(to)) => {
                let window = Window {
                    from: floor_minute(from),
                    to: ceil_minute(to),
                };
                if from > to || window.from >= window.to {
                    errors.push(FieldError::new("from", "must be earlier than to"));
                } else if window.from < floor_minute(now - retention) {
                    errors.push(FieldError::new(
                        "from",
                        format!(
                            "must lie inside the retention of {} days",
                            retention.num_days()
                        ),
                    ));
                } else if window.to > ceil_minute(now + max_future_skew) {
                    errors.push(FieldError::new(
                        "to",
                        format!(
                            "must not be more than {} s in the future",
                            max_future_skew.num_seconds()
                        ),
                    ));
                }
                Some(window)
            }
            _ => None,
        },
        (Some(_), None) => {
            errors.push(FieldError::new("to", "is required when from is given"));
            None
        }
        (None, Some(_)) => {
            errors.push(FieldError::new("from", "is required when to is given"));
            None
        }
        (None, None) => {
            if seen[1].is_empty() {
                errors.push(FieldError::new(
                    "period",
                    format!(
                        "is required unless from and to are given; one of {}",
                        allowed_periods()
                    ),
                ));
            }
            period.map(|p| Window::trailing(p, now))
        }
    };

    if !seen[1].is_empty() && (raw_from.is_some() || raw_to.is_some()) {
        // Two windows asked at once: which one the client meant is a guess,
        // so neither is taken.
        errors.push(FieldError::new(
            "period",
            "cannot be combined with from or to; give either period, or from and to",
        ));
    }

    let quantiles = match raw_quantiles {
        Some(raw) => Quantiles::parse(raw)
            .map_err(|reason| errors.push(FieldError::new("quantiles", reason)))
            .ok(),
        None => Some(Quantiles::default()),
    };
    let step = match raw_step {
        Some(raw) => step::parse_step(raw)
            .map_err(|reason| errors.push(FieldError::new("step", reason)))
            .ok(),
        None => {
            if series && seen[5].is_empty() {
                errors.push(FieldError::new(
                    "step",
                    step::parse_step("")
                        .unwrap_err()
                        .replace("must be", "is required:"),
                ));
            }
            None
        }
    };

    let tags = parse_tags(
        &filters,
        raw_group_by,
        raw_limit,
        !seen[6].is_empty(),
        &mut errors,
    );

    match (metric_type, window, quantiles, tags) {
        (Some(metric_type), Some(window), Some(quantiles), Some(tags)) if errors.is_empty() => {
            Ok(SummaryQuery {
                metric_type,
                // An explicit window wins over a period given alongside it.
                period: if raw_from.is_some() { None } else { period },
                window,
                quantiles,
                step,
                tags,
            })
        }
        _ => Err(Invalid {
            detail: format!(
                "invalid {} query: {}",
                if series { "series" } else { "summary" },
                errors
                    .iter()
                    .map(|e| format!("{} {}", e.field, e.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            errors,
        }),
    }
}

/// The tag selection of a query: `filters` as `(key, value)` from the
/// `tag.<key>` parameters, `group_by` and `limit`; every problem is pushed
/// onto `errors` (fields `tag`, `tag.<key>`, `group_by`, `limit`).
fn parse_tags(
    filters: &[(&str, &str)],
    group_by: Option<&str>,
    limit: Option<&str>,
    group_by_asked: bool,
    errors: &mut Vec<FieldError>,
) -> Option<TagSelection> {
    let raw_limit = limit;
    let before = errors.len();
    let filters = if filters.len() > MAX_TAGS {
        errors.push(FieldError::new(
            "tag",
            format!(
                "at most {MAX_TAGS} tag filters (got {}): a metric has at most {MAX_TAGS} tags",
                filters.len()
            ),
        ));
        None
    } else {
        Tags::from_pairs(filters.iter().copied())
            .map_err(|problems| {
                for (field, reason) in problems {
                    // `tags.<key>` of a metric is the parameter `tag.<key>`.
                    let field = match field.strip_prefix("tags") {
                        Some(rest) => format!("tag{rest}"),
                        None => field,
                    };
                    let reason = reason.replace("appears more than once", "may appear only once");
                    errors.push(FieldError::new(field, reason));
                }
            })
            .ok()
    };
    let group_by = group_by.and_then(|raw| {
        TagKey::parse(raw)
            .map_err(|reason| errors.push(FieldError::new("group_by", reason)))
            .ok()
    });
    let limit = match limit {
        None => Some(crate::tags::DEFAULT_GROUP_LIMIT),
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_GROUP_LIMIT).contains(&n) => Some(n),
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!(
                        "must be a whole number from 1 to {MAX_GROUP_LIMIT} (got {})",
                        quote_input(raw)
                    ),
                ));
                None
            }
        },
    };
    if raw_limit.is_some() && !group_by_asked {
        errors.push(FieldError::new("limit", "applies only with group_by"));
    }
    (errors.len() == before).then_some(TagSelection {
        filters: filters?,
        group_by,
        limit: limit?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 2, 18, 12, 0, 30).unwrap()
    }

    fn parse(params: &[(&str, &str)]) -> Result<SummaryQuery, Invalid> {
        parse_summary_query(
            params.iter().copied(),
            now(),
            ChronoDuration::days(35),
            ChronoDuration::seconds(300),
        )
    }

    fn fields(params: &[(&str, &str)]) -> Vec<String> {
        match parse(params) {
            Err(Invalid { errors, .. }) => errors.into_iter().map(|e| e.field).collect(),
            Ok(other) => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn trailing_windows_end_at_the_end_of_the_current_minute() {
        let end = Utc.with_ymd_and_hms(2026, 2, 18, 12, 1, 0).unwrap();
        for period in Period::ALL {
            let q = parse(&[("type", "cpu"), ("period", period.as_str())]).unwrap();
            assert_eq!(q.window.to, end);
            assert_eq!(q.window.to - q.window.from, period.duration());
        }
        // On an exact minute boundary the current minute is the one starting now.
        let on = Utc.with_ymd_and_hms(2026, 2, 18, 12, 0, 0).unwrap();
        assert_eq!(Window::trailing(Period::Hourly, on).to, end);
    }

    #[test]
    fn explicit_windows_are_rounded_outward() {
        let q = parse(&[
            ("type", "cpu"),
            ("from", "2026-02-18T10:15:30Z"),
            ("to", "2026-02-18T11:00:01+00:00"),
        ])
        .unwrap();
        assert_eq!(q.period, None);
        assert_eq!(q.period_label().as_str(), "custom");
        assert_eq!(
            q.window.from,
            Utc.with_ymd_and_hms(2026, 2, 18, 10, 15, 0).unwrap()
        );
        assert_eq!(
            q.window.to,
            Utc.with_ymd_and_hms(2026, 2, 18, 11, 1, 0).unwrap()
        );
    }

    #[test]
    fn bad_queries_are_422_with_every_field() {
        assert_eq!(fields(&[]), ["type", "period"]);
        assert_eq!(fields(&[("type", "cpu"), ("period", "yearly")]), ["period"]);
        assert_eq!(fields(&[("type", "a b"), ("period", "daily")]), ["type"]);
        assert_eq!(
            fields(&[("type", "cpu"), ("period", "daily"), ("period", "daily")]),
            ["period"]
        );
        assert_eq!(
            fields(&[("type", "a"), ("type", "b"), ("period", "daily")]),
            ["type"]
        );
        assert_eq!(
            fields(&[("type", "cpu"), ("from", "2026-02-18T10:00:00Z")]),
            ["to"]
        );
        assert_eq!(
            fields(&[
                ("type", "cpu"),
                ("from", "2026-02-18T11:00:00Z"),
                ("to", "2026-02-18T10:00:00Z")
            ]),
            ["from"]
        );
        assert_eq!(
            fields(&[
                ("type", "cpu"),
                ("from", "2025-01-01T00:00:00Z"),
                ("to", "2026-02-18T10:00:00Z")
            ]),
            ["from"]
        );
        assert_eq!(
            fields(&[
                ("type", "cpu"),
                ("from", "2026-02-18T10:00:00Z"),
                ("to", "2027-01-01T00:00:00Z")
            ]),
            ["to"]
        );
        assert_eq!(
            fields(&[("type", "cpu"), ("from", "x"), ("to", "y")]),
            ["from", "to"]
        );
        match parse(&[("type", "cpu")]) {
            Err(e) => assert!(e.to_string().contains("hourly, daily, weekly, monthly")),
            Ok(q) => panic!("{q:?}"),
        }
        assert_eq!(
            fields(&[
                ("type", "cpu"),
                ("period", "daily"),
                ("from", "2026-02-18T10:00:00Z"),
                ("to", "2026-02-18T11:00:00Z")
            ]),
            ["period"]
        );
        assert_eq!(
            fields(&[
                ("type", "cpu"),
                ("period", "daily"),
                ("to", "2026-02-18T11:00:00Z")
            ]),
            ["from", "period"]
        );
    }

    #[test]
    fn an_instant_is_the_minute_around_it() {
        let q = parse(&[
            ("type", "cpu"),
            ("from", "2026-02-18T11:17:45Z"),
            ("to", "2026-02-18T11:17:45Z"),
        ])
        .unwrap();
        assert_eq!(q.window.to - q.window.from, ChronoDuration::minutes(1));
        // On a minute boundary the rounded window is empty: refused.
        assert_eq!(
            fields(&[
                ("type", "cpu"),
                ("from", "2026-02-18T11:17:00Z"),
                ("to", "2026-02-18T11:17:00Z")
            ]),
            ["from"]
        );
    }

    #[test]
    fn details_name_exactly_what_is_wrong() {
        let detail = |params: &[(&str, &str)]| parse(params).unwrap_err().detail;
        assert_eq!(
            detail(&[("period", "daily")]),
            "invalid summary query: type is required"
        );
        assert_eq!(
            detail(&[("type", "cpu"), ("from", "2026-02-18T10:00:00Z")]),
            "invalid summary query: to is required when from is given"
        );
        assert_eq!(
            detail(&[("type", "cpu"), ("to", "2026-02-18T10:00:00Z")]),
            "invalid summary query: from is required when to is given"
        );
        assert_eq!(
            detail(&[
                ("type", "cpu"),
                ("period", "daily"),
                ("from", "2026-02-18T10:00:00Z"),
                ("to", "2026-02-18T11:00:00Z")
            ]),
            "invalid summary query: period cannot be combined with from or to; \
             give either period, or from and to"
        );
        // The allowed periods are named only where a period is the problem.
        assert!(!detail(&[("period", "daily")]).contains("hourly"));
        assert!(detail(&[("type", "cpu"), ("period", "yearly")]).contains("hourly"));
    }

    #[test]
    fn tag_filters_and_group_by_are_parsed_and_canonical() {
        let a = parse(&[
            ("type", "cpu"),
            ("period", "daily"),
            ("tag.region", "eu-west-1"),
            ("tag.host", "web-7"),
        ])
        .unwrap();
        let b = parse(&[
            ("tag.host", "web-7"),
            ("period", "daily"),
            ("tag.region", "eu-west-1"),
            ("type", "cpu"),
        ])
        .unwrap();
        assert_eq!(a.cache_identity(), b.cache_identity());
        assert_eq!(
            a.cache_identity(),
            "cpu|daily|f=host=web-7,region=eu-west-1"
        );
        let plain = parse(&[("type", "cpu"), ("period", "daily")]).unwrap();
        assert!(plain.tags.is_plain());
        assert_eq!(plain.cache_identity(), "cpu|daily");
        let grouped = parse(&[
            ("type", "cpu"),
            ("period", "daily"),
            ("group_by", "region"),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!(grouped.tags.limit, 5);
        assert_eq!(grouped.cache_identity(), "cpu|daily|g=region|l=5");
        let default_limit = parse(&[("type", "cpu"), ("period", "daily"), ("group_by", "region")]);
        assert_eq!(default_limit.unwrap().tags.limit, 100);
        assert_ne!(grouped.cache_identity(), plain.cache_identity());
    }

    #[test]
    fn bad_tag_parameters_are_named() {
        let base = [("type", "cpu"), ("period", "daily")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            fields(&all)
        };
        assert_eq!(with(&[("tag.Host", "a")]), ["tag"]);
        assert_eq!(with(&[("tag.", "a")]), ["tag"]);
        assert_eq!(with(&[("tag.host", "a b")]), ["tag.host"]);
        assert_eq!(with(&[("tag.host", "")]), ["tag.host"]);
        assert_eq!(with(&[("tag.host", "a"), ("tag.host", "b")]), ["tag.host"]);
        assert_eq!(
            with(&[
                ("tag.a", "1"),
                ("tag.b", "1"),
                ("tag.c", "1"),
                ("tag.d", "1"),
                ("tag.e", "1"),
                ("tag.f", "1"),
                ("tag.g", "1"),
                ("tag.h", "1"),
                ("tag.i", "1"),
            ]),
            ["tag"]
        );
        assert_eq!(with(&[("group_by", "Region")]), ["group_by"]);
        assert_eq!(with(&[("group_by", "a"), ("group_by", "b")]), ["group_by"]);
        for limit in ["0", "1001", "x", "-1"] {
            assert_eq!(
                with(&[("group_by", "region"), ("limit", limit)]),
                ["limit"],
                "{limit}"
            );
        }
        assert_eq!(with(&[("limit", "5")]), ["limit"]);
    }

    #[test]
    fn canonical_form_ignores_parameter_order_and_extras() {
        let a = parse(&[("type", "cpu"), ("period", "daily")]).unwrap();
        let b = parse(&[("x", "1"), ("period", "daily"), ("type", "cpu")]).unwrap();
        assert_eq!(a.cache_identity(), b.cache_identity());
    }
}
