//! The one place that builds Redis key names.
//!
//! Every key starts with the configured `REDIS_KEY_PREFIX`, so several
//! deployments or test runs share one Redis without touching each other's
//! data. Where a group of keys must be reachable by one script, the group's
//! Redis Cluster hash tag (`{…}`) comes right after the prefix:
//!
//! | key | shape | holds |
//! |---|---|---|
//! | minute buckets of one hour | `{p}:{<type>}:m:<hour start, unix s>` | hash: minute start → bucket |
//! | hour buckets of one day | `{p}:{<type>}:h:<day start, unix s>` | hash: hour start → bucket |
//! | day buckets of one 32-day era | `{p}:{<type>}:d:<era start, unix s>` | hash: day start → bucket |
//! | buckets of one tag value's series | `{p}:{<type>}:t:<key>=<value>:m|h|d:<start>` | as above |
//! | buckets of one tag combination's series | `{p}:{<type>}:c:<digest>:m|h|d:<start>` | as above |
//! | the values of one tag key of a type | `{p}:{<type>}:tv:<key>` | zset: value → latest timestamp |
//! | the tag combinations of a type | `{p}:{<type>}:tc` | zset: canonical tags → latest timestamp |
//! | rate limit of one client | `{p}:rl:{<client>}:<algorithm>` | zset, hash or string |
//! | cached summary | `{p}:cache:{<query digest>}:v2` | string: body (JSON), then `\n<stored at, ms> <expires at, ms> <owner token>` |
//! | single-flight lock | `{p}:cache:{<query digest>}:v2:lock` | string (owner token) |
//! | circuit breaker | `{p}:cb:{<dependency>}` | hash |
//! | idempotency record (the request's claim in cluster mode) | `{p}:idem:{<client digest>}:<key digest>` | hash: fp, body |
//! | idempotency record of one metric type (cluster mode) | `{p}:{<type>}:idem:<client digest>:<key digest>` | hash: fp, body |
//! | registry of live metric types | `{p}:types:{registry}` | zset: type → unix s it counts until |
//! | new types one client created in the last hour | `{p}:types:{registry}:new:<client digest>` | zset: type → creation, unix ms |
//!
//! User-controlled parts are validated before they reach this module: the
//! metric type against `[A-Za-z0-9_.-]{1,64}`, tag keys against
//! `[a-z][a-z0-9_]{0,31}` and tag values against `[A-Za-z0-9_./-]{1,64}`
//! ([`crate::tags`]), so none can hold `:`, `=`, `{` or `}`: the segment
//! after the type's hash tag (`m`, `h`, `d`, `idem`, `t`, `c`, `tv`, `tc`)
//! says what follows, and a tag value's series, `t:<key>=<value>:`, cannot
//! be read as any other key. No key pattern (`SCAN MATCH`, `KEYS`) is ever
//! built from them.

/// Which series of a metric type a bucket container belongs to: every
/// metric updates the type's own series ([`SeriesKey::All`]); a tagged one
/// also the series of each of its tag values and of its whole set of tags.
/// Keys and values are validated ([`crate::tags`]) before they get here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey<'a> {
    /// Every metric of the type, tagged or not.
    All,
    /// The metrics tagged `key=value` (whatever their other tags).
    TagValue {
        /// The tag key.
        key: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// The metrics whose whole set of tags is one combination, named by
    /// the digest of its canonical text (`Tags::digest`).
    Combination {
        /// 32 hex digits.
        digest: &'a str,
    },
}

/// Builds the key names of one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` is `REDIS_KEY_PREFIX`, already validated by [`crate::config`].
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The common start of all bucket keys of one metric type, with its hash
    /// tag: `{p}:{cpu_usage}`.
    pub fn metric_base(&self, metric_type: &str) -> String {
        format!("{}:{{{}}}", self.prefix, metric_type)
    }

    /// One container hash of a metric type's buckets: `{p}:{<type>}:<tag>:<start>`,
    /// e.g. `analytics:{cpu_usage}:m:1771416000`, where `tag` is the
    /// granularity's (`m`, `h`, `d`) and `start` the container's start, unix
    /// s. Built three times per ingested metric, so in one allocation of the
    /// exact size, without `format!`.
    pub fn metric_container(&self, metric_type: &str, tag: &str, start: i64) -> String {
        let mut digits = itoa::Buffer::new();
        let start = digits.format(start);
        concat(&[&self.prefix, ":{", metric_type, "}:", tag, ":", start])
    }

    /// One container of one series of a metric type:
    /// `{p}:{<type>}:<series>:<granularity tag>:<start>`, where `<series>`
    /// is nothing for [`SeriesKey::All`] (the key of
    /// [`Keys::metric_container`]), `t:<key>=<value>` for a tag value and
    /// `c:<digest>` for a tag combination.
    pub fn series_container(
        &self,
        metric_type: &str,
        series: SeriesKey<'_>,
        tag: &str,
        start: i64,
    ) -> String {
        let (kind, name, separator, value) = match series {
            SeriesKey::All => return self.metric_container(metric_type, tag, start),
            SeriesKey::TagValue { key, value } => ("}:t:", key, "=", value),
            SeriesKey::Combination { digest } => ("}:c:", digest, "", ""),
        };
        let mut digits = itoa::Buffer::new();
        concat(&[
            &self.prefix,
            ":{",
            metric_type,
            kind,
            name,
            separator,
            value,
            ":",
            tag,
            ":",
            digits.format(start),
        ])
    }

    /// The registry of the values of one tag key within a metric type,
    /// in the type's hash slot: `{p}:{<type>}:tv:<key>`.
    pub fn tag_values(&self, metric_type: &str, key: &str) -> String {
        concat(&[&self.prefix, ":{", metric_type, "}:tv:", key])
    }

    /// The registry of the tag combinations of a metric type, in its hash
    /// slot: `{p}:{<type>}:tc`.
    pub fn tag_combinations(&self, metric_type: &str) -> String {
        concat(&[&self.prefix, ":{", metric_type, "}:tc"])
    }

    /// The rate-limit state of one client for one algorithm. `client` is an IP
    /// address or the hex digest of an API key. Built on every ingest.
    pub fn rate_limit(&self, client: &str, algorithm: &str) -> String {
        concat(&[&self.prefix, ":rl:{", client, "}:", algorithm])
    }

    /// The cached summary for one parsed query; `query_digest` is a hex
    /// digest. `v2` names the entry's format (a string, see
    /// [`crate::cache`]): an instance of an earlier release, whose entries
    /// were hashes under the name without it, never meets a value of the
    /// other type while a deployment replaces it.
    pub fn cache(&self, query_digest: &str) -> String {
        format!("{}:cache:{{{}}}:v2", self.prefix, query_digest)
    }

    /// The single-flight lock of one cached summary: its entry's key plus
    /// `:lock` (same hash slot).
    pub fn cache_lock(&self, query_digest: &str) -> String {
        format!("{}:lock", self.cache(query_digest))
    }

    /// The circuit breaker state of one dependency, e.g. `external_service`.
    pub fn breaker(&self, dependency: &str) -> String {
        format!("{}:cb:{{{}}}", self.prefix, dependency)
    }

    /// The idempotency record of one client's `Idempotency-Key` (both
    /// hashed), in the client's hash slot: on a single node the request's
    /// record, in cluster mode its claim (see [`crate::store::Idempotency`]).
    pub fn idempotency(&self, client: &str, key_digest: &str) -> String {
        format!("{}:idem:{{{}}}:{}", self.prefix, client, key_digest)
    }

    /// The registry of live metric types (`MAX_METRIC_TYPES`): one key, in
    /// one hash slot with every client's [`Keys::type_creations`].
    pub fn type_registry(&self) -> String {
        format!("{}:types:{{registry}}", self.prefix)
    }

    /// The metric types one client (a digest of its identity) created in
    /// the last hour, in the registry's hash slot.
    pub fn type_creations(&self, client: &str) -> String {
        format!("{}:types:{{registry}}:new:{}", self.prefix, client)
    }

    /// The idempotency record of one metric type of a request (cluster
    /// mode), in the type's hash slot beside its buckets:
    /// `{p}:{<type>}:idem:<client digest>:<key digest>`.
    pub fn idempotency_part(&self, metric_type: &str, client: &str, key_digest: &str) -> String {
        concat(&[
            &self.prefix,
            ":{",
            metric_type,
            "}:idem:",
            client,
            ":",
            key_digest,
        ])
    }
}

/// `parts` joined, in one allocation.
fn concat(parts: &[&str]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        joined.push_str(part);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_the_prefix() {
        let k = Keys::new("analytics");
        assert_eq!(k.metric_base("cpu_usage"), "analytics:{cpu_usage}");
        assert_eq!(
            k.rate_limit("127.0.0.1", "sliding_log"),
            "analytics:rl:{127.0.0.1}:sliding_log"
        );
        assert_eq!(
            k.breaker("external_service"),
            "analytics:cb:{external_service}"
        );
        assert!(k.cache_lock("ab").starts_with(&k.cache("ab")));
        assert_eq!(
            k.metric_container("cpu_usage", "m", 1_771_416_000),
            "analytics:{cpu_usage}:m:1771416000"
        );
        assert_eq!(
            k.metric_container("cpu_usage", "d", -2_764_800),
            "analytics:{cpu_usage}:d:-2764800"
        );
        assert_eq!(k.type_registry(), "analytics:types:{registry}");
        assert!(k.type_creations("ab").starts_with(&k.type_registry()));
    }

    #[test]
    fn series_keys_share_the_types_hash_tag() {
        let k = Keys::new("analytics");
        assert_eq!(
            k.series_container("cpu", SeriesKey::All, "h", 86_400),
            k.metric_container("cpu", "h", 86_400)
        );
        assert_eq!(
            k.series_container(
                "cpu",
                SeriesKey::TagValue {
                    key: "host",
                    value: "web-7"
                },
                "m",
                3_600
            ),
            "analytics:{cpu}:t:host=web-7:m:3600"
        );
        assert_eq!(
            k.series_container("cpu", SeriesKey::Combination { digest: "ab12" }, "d", 0),
            "analytics:{cpu}:c:ab12:d:0"
        );
        assert_eq!(k.tag_values("cpu", "host"), "analytics:{cpu}:tv:host");
        assert_eq!(k.tag_combinations("cpu"), "analytics:{cpu}:tc");
    }
}
