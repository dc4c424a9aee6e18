//! Tags (dimensions) of a metric — `{"host": "web-7", "region": "eu-west-1"}`
//! — their validation, their canonical form, and the caps on their
//! cardinality.
//!
//! A metric carries at most [`MAX_TAGS`] tags. A key matches
//! `[a-z][a-z0-9_]{0,31}`; a value is 1–64 characters from
//! `A-Z a-z 0-9 _ . - /`. Both become parts of Redis key names
//! ([`crate::keys::SeriesKey`]), so anything else is refused, never escaped
//! or truncated: neither can hold a key separator (`:`), a hash-tag brace
//! (`{`, `}`), the `=` between a key and its value, the `,` between two
//! tags, or a glob character. That makes the canonical text of a set of
//! tags, `key=value` pairs sorted by key and joined by `,`
//! ([`Tags::canonical`]), unambiguous: two different sets never have the
//! same text, and the text parses back ([`Tags::parse_canonical`]).
//!
//! The same names (label names and values) are what Prometheus calls
//! labels and CloudWatch dimensions; like them, every distinct combination
//! of tags is a series of its own, so their number is capped
//! ([`TagLimits`]).

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::settings::{ConfigError, Env};

/// The most tags one metric may carry.
pub const MAX_TAGS: usize = 8;
/// Longest tag key, characters.
pub const MAX_KEY_LEN: usize = 32;
/// Longest tag value, characters.
pub const MAX_VALUE_LEN: usize = 64;

/// The characters a tag value may hold, as a client reads them.
pub const VALUE_CHARSET: &str = "A-Z a-z 0-9 _ . - /";

/// A validated tag key: `[a-z][a-z0-9_]{0,31}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagKey(String);

impl TagKey {
    /// Validates `raw`.
    ///
    /// # Errors
    /// A reason for the client when `raw` is not 1–32 characters of
    /// `a-z 0-9 _` starting with a letter.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_KEY_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if valid {
            Ok(Self(raw.to_string()))
        } else {
            Err(format!(
                "tag keys are 1–{MAX_KEY_LEN} characters from a-z 0-9 _, starting with a letter (got {})",
                quoted(raw)
            ))
        }
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag value: 1–64 characters from [`VALUE_CHARSET`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagValue(String);

impl TagValue {
    /// Validates `raw`.
    ///
    /// # Errors
    /// A reason for the client when `raw` is empty, longer than
    /// [`MAX_VALUE_LEN`] characters, or holds a character outside
    /// [`VALUE_CHARSET`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        let chars = raw.chars().count();
        if chars > MAX_VALUE_LEN {
            return Err(format!(
                "must be at most {MAX_VALUE_LEN} characters (got {chars})"
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
        {
            return Err(format!("may only contain {VALUE_CHARSET} (found {bad:?})"));
        }
        Ok(Self(raw.to_string()))
    }

    /// The value as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One offending tag: the field to name (`tags.<key>`, or `tags` when the
/// key itself is the problem) and why.
pub type TagProblem = (String, String);

/// A metric's tags (or a query's tag filters): at most [`MAX_TAGS`], each
/// key once, held sorted by key — the canonical order, so that equal sets
/// compare, hash and print equal whatever order they were sent in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tags(Vec<(TagKey, TagValue)>);

impl Tags {
    /// No tags.
    pub fn none() -> Self {
        Self::default()
    }

    /// Validates `pairs` (key, value) as sent, in any order.
    ///
    /// # Errors
    /// Every offending tag: more than [`MAX_TAGS`], an invalid key or value,
    /// a key given twice.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, Vec<TagProblem>> {
        let mut problems = Vec::new();
        let mut tags: Vec<(TagKey, TagValue)> = Vec::new();
        let mut sent = 0;
        for (key, value) in pairs {
            sent += 1;
            let key = match TagKey::parse(key) {
                Ok(key) => key,
                Err(reason) => {
                    problems.push(("tags".to_string(), reason));
                    continue;
                }
            };
            if tags.iter().any(|(k, _)| *k == key) {
                problems.push((format!("tags.{key}"), "appears more than once".into()));
                continue;
            }
            match TagValue::parse(value) {
                Ok(value) => tags.push((key, value)),
                Err(reason) => problems.push((format!("tags.{key}"), reason)),
            }
        }
        if sent > MAX_TAGS {
            problems.insert(
                0,
                (
                    "tags".to_string(),
                    format!("at most {MAX_TAGS} tags per metric (got {sent})"),
                ),
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        tags.sort();
        Ok(Self(tags))
    }

    /// Parses the `tags` member of a metric as sent (raw JSON text): an
    /// object of tag keys to string values, `{}` or `null` for none.
    ///
    /// # Errors
    /// Every offending tag ([`Tags::from_pairs`]), or the whole member when
    /// it is not an object, or a value that is not a string.
    pub fn from_json(raw: &str) -> Result<Self, Vec<TagProblem>> {
        let raw = raw.trim();
        if raw == "null" {
            return Ok(Self::none());
        }
        let Ok(JsonPairs(pairs)) = serde_json::from_str::<JsonPairs>(raw) else {
            return Err(vec![(
                "tags".to_string(),
                "must be an object of tag keys to string values, e.g. {\"host\": \"web-7\"}"
                    .to_string(),
            )]);
        };
        let mut problems = Vec::new();
        let mut strings: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for (key, value) in &pairs {
            match value {
                Some(value) => strings.push((key, value)),
                None => {
                    let field = match TagKey::parse(key) {
                        Ok(key) => format!("tags.{key}"),
                        Err(_) => "tags".to_string(),
                    };
                    problems.push((
                        field,
                        format!("the value of {} must be a string", quoted(key)),
                    ));
                }
            }
        }
        match Self::from_pairs(strings) {
            Ok(tags) if problems.is_empty() => Ok(tags),
            Ok(_) => Err(problems),
            Err(mut more) => {
                more.extend(problems);
                Err(more)
            }
        }
    }

    /// True without tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The tags, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&TagKey, &TagValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The value of `key`, if tagged.
    pub fn get(&self, key: &TagKey) -> Option<&TagValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// True when every tag of `other` is one of these (same key, same
    /// value).
    pub fn contains_all(&self, other: &Tags) -> bool {
        other.iter().all(|(k, v)| self.get(k) == Some(v))
    }

    /// These tags without `key`.
    pub fn without(&self, key: &TagKey) -> Tags {
        Self(self.0.iter().filter(|(k, _)| k != key).cloned().collect())
    }

    /// The canonical text, `key=value` pairs sorted by key joined by `,`
    /// (`host=web-7,region=eu-west-1`); empty without tags. Unambiguous
    /// (module documentation) and stable: a registry member and a cache
    /// identity.
    pub fn canonical(&self) -> String {
        let mut text = String::new();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(k.as_str());
            text.push('=');
            text.push_str(v.as_str());
        }
        text
    }

    /// Parses a [`Tags::canonical`] text back; `None` when it is not one.
    pub fn parse_canonical(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Self::none());
        }
        let pairs: Vec<(&str, &str)> = text
            .split(',')
            .map(|pair| pair.split_once('='))
            .collect::<Option<_>>()?;
        let tags = Self::from_pairs(pairs).ok()?;
        (tags.canonical() == text).then_some(tags)
    }

    /// 32 hex digits of SHA-256 of [`Tags::canonical`]: the name of a
    /// combination's series in key names, of fixed length however long
    /// its tags are (a collision would need 2⁶⁴ combinations of one type).
    pub fn digest(&self) -> String {
        hex::encode(&Sha256::digest(self.canonical().as_bytes())[..16])
    }
}

impl Serialize for Tags {
    /// A JSON object of keys to values, in key order.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_str(), v.as_str())?;
        }
        map.end()
    }
}

impl utoipa::PartialSchema for Tags {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(format!(
                "Tags (dimensions): at most {MAX_TAGS}, tag keys to values. A key is 1–{MAX_KEY_LEN} \
                 characters from `a-z 0-9 _`, starting with a letter; a value 1–{MAX_VALUE_LEN} \
                 characters from `{VALUE_CHARSET}`."
            )))
            .max_properties(Some(MAX_TAGS))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[a-z][a-z0-9_]{0,31}$")),
            ))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_VALUE_LEN))
                    .pattern(Some("^[A-Za-z0-9_./-]{1,64}$")),
            ))
            .examples([serde_json::json!({"host": "web-7", "region": "eu-west-1"})])
            .into()
    }
}

impl utoipa::ToSchema for Tags {}

/// A JSON object's members in the order sent, repeats kept (so that a key
/// sent twice is reported, not silently overwritten); `None` for a value
/// that is not a string.
struct JsonPairs(Vec<(String, Option<String>)>);

impl<'de> serde::Deserialize<'de> for JsonPairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonPairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<serde_json::Value>()?;
                    let value = match value {
                        serde_json::Value::String(s) => Some(s),
                        _ => None,
                    };
                    pairs.push((key, value));
                    if pairs.len() > 4 * MAX_TAGS {
                        // Far past the limit: no need to read (and report)
                        // the rest.
                        while map
                            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                            .is_some()
                        {}
                        break;
                    }
                }
                Ok(JsonPairs(pairs))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// `text` quoted for an error message, cut after 40 characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(40) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

/// Groups a group-by returns unless the query says `limit=`.
pub const DEFAULT_GROUP_LIMIT: usize = 100;
/// The most groups a group-by may return (`limit=`).
pub const MAX_GROUP_LIMIT: usize = 1_000;

/// What a summary or series query asks of tags: `tag.<key>=<value>` filters
/// (all must hold), an optional `group_by=<key>` and, with it, how many
/// groups to return (`limit=`, the largest groups by count).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagSelection {
    /// The filters; none for every metric of the type.
    pub filters: Tags,
    /// The key whose values make the groups.
    pub group_by: Option<TagKey>,
    /// The most groups returned (1..=[`MAX_GROUP_LIMIT`]); only with
    /// `group_by`.
    pub limit: usize,
}

impl Default for TagSelection {
    fn default() -> Self {
        Self {
            filters: Tags::none(),
            group_by: None,
            limit: DEFAULT_GROUP_LIMIT,
        }
    }
}

impl TagSelection {
    /// True when the query names no tags: every metric of the type, one
    /// result (the query as it was before tags existed).
    pub fn is_plain(&self) -> bool {
        self.filters.is_empty() && self.group_by.is_none()
    }

    /// The canonical text of the selection for a cache identity: empty when
    /// plain, else `|f=<canonical filters>` when filtered, then
    /// `|g=<key>|l=<limit>` when grouped.
    pub fn cache_identity(&self) -> String {
        let mut text = String::new();
        if !self.filters.is_empty() {
            text.push_str("|f=");
            text.push_str(&self.filters.canonical());
        }
        if let Some(key) = &self.group_by {
            text.push_str(&format!("|g={key}|l={}", self.limit));
        }
        text
    }
}

/// The caps on the cardinality of tags, per metric type: how many series
/// tags can create, so that memory and the cost of a group-by stay
/// bounded. Enforced atomically across instances by the store (one script
/// per metric type's hash slot); a metric beyond a cap is refused, nothing
/// of its request stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagLimits {
    /// `MAX_TAG_VALUES_PER_KEY`, default 1000 (1..=100 000): distinct values
    /// of one tag key within one metric type, over the retention.
    pub max_values_per_key: u32,
    /// `MAX_TAG_COMBINATIONS`, default 1000 (1..=100 000): distinct sets of
    /// tags (each metric's whole set) within one metric type, over the
    /// retention.
    pub max_combinations: u32,
}

impl Default for TagLimits {
    fn default() -> Self {
        Self {
            max_values_per_key: 1_000,
            max_combinations: 1_000,
        }
    }
}

impl TagLimits {
    /// Reads and validates `MAX_TAG_VALUES_PER_KEY` and
    /// `MAX_TAG_COMBINATIONS`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_values_per_key: env.int("MAX_TAG_VALUES_PER_KEY", 1_000, 1..=100_000)? as u32,
            max_combinations: env.int("MAX_TAG_COMBINATIONS", 1_000, 1..=100_000)? as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<Tags, Vec<TagProblem>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn tags_are_sorted_and_canonical() {
        let tags = Tags::from_json(r#"{"region": "eu-west-1", "host": "web-7"}"#).unwrap();
        assert_eq!(tags.canonical(), "host=web-7,region=eu-west-1");
        assert_eq!(
            serde_json::to_string(&tags).unwrap(),
            r#"{"host":"web-7","region":"eu-west-1"}"#
        );
        assert_eq!(Tags::parse_canonical(&tags.canonical()), Some(tags.clone()));
        assert_eq!(tags.digest().len(), 32);
        assert!(Tags::from_json("null").unwrap().is_empty());
        assert!(Tags::from_json("{}").unwrap().is_empty());
        for bad in ["a", "a=b,", "b=1,a=2", "a=b=c", "A=b", "a=b,a=c", ",a=b"] {
            assert_eq!(Tags::parse_canonical(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_and_values_are_validated_never_escaped() {
        for good in ["a", "host", "a_1", &"k".repeat(32)] {
            assert!(TagKey::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Host",
            "1a",
            "_a",
            "a-b",
            "a.b",
            "a:b",
            "a{b",
            "a=b",
            &"k".repeat(33),
        ] {
            assert!(TagKey::parse(bad).is_err(), "{bad}");
        }
        for good in ["web-7", "eu-west-1", "a/b_c.d", "X", &"v".repeat(64)] {
            assert!(TagValue::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a:b",
            "a{b}",
            "a=b",
            "a,b",
            "a*",
            "é",
            "a\nb",
            &"v".repeat(65),
        ] {
            assert!(TagValue::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_bad_tag_is_named() {
        assert_eq!(fields(Tags::from_json("[]")), ["tags"]);
        assert_eq!(fields(Tags::from_json("\"host\"")), ["tags"]);
        assert_eq!(fields(Tags::from_json(r#"{"host": 7}"#)), ["tags.host"]);
        assert_eq!(fields(Tags::from_json(r#"{"host": null}"#)), ["tags.host"]);
        assert_eq!(fields(Tags::from_json(r#"{"Host": "a"}"#)), ["tags"]);
        assert_eq!(
            fields(Tags::from_json(r#"{"host": "a b", "region": ""}"#)),
            ["tags.host", "tags.region"]
        );
        assert_eq!(
            fields(Tags::from_json(r#"{"host": "a", "host": "b"}"#)),
            ["tags.host"]
        );
        let nine: Vec<String> = (0..9).map(|i| format!("\"k{i}\": \"v\"")).collect();
        assert_eq!(
            fields(Tags::from_json(&format!("{{{}}}", nine.join(",")))),
            ["tags"]
        );
        let eight: Vec<String> = (0..8).map(|i| format!("\"k{i}\": \"v\"")).collect();
        assert_eq!(
            Tags::from_json(&format!("{{{}}}", eight.join(",")))
                .unwrap()
                .len(),
            8
        );
    }

    #[test]
    fn subsets_and_removal() {
        let all = Tags::from_pairs([("host", "a"), ("region", "eu")]).unwrap();
        let host = Tags::from_pairs([("host", "a")]).unwrap();
        assert!(all.contains_all(&host));
        assert!(all.contains_all(&Tags::none()));
        assert!(!host.contains_all(&all));
        assert_eq!(all.without(&TagKey::parse("region").unwrap()), host);
    }

    #[test]
    fn selections_have_a_canonical_identity() {
        assert_eq!(TagSelection::default().cache_identity(), "");
        assert!(TagSelection::default().is_plain());
        let selection = TagSelection {
            filters: Tags::from_pairs([("region", "eu"), ("az", "b")]).unwrap(),
            group_by: Some(TagKey::parse("host").unwrap()),
            limit: 10,
        };
        assert_eq!(selection.cache_identity(), "|f=az=b,region=eu|g=host|l=10");
    }

    #[test]
    fn limits_have_defaults_and_bounds() {
        let lookup = |_: &str| None;
        assert_eq!(
            TagLimits::from_env(&Env::new(&lookup)).unwrap(),
            TagLimits::default()
        );
        let lookup = |name: &str| (name == "MAX_TAG_COMBINATIONS").then(|| "0".to_string());
        assert_eq!(
            TagLimits::from_env(&Env::new(&lookup))
                .unwrap_err()
                .variable,
            "MAX_TAG_COMBINATIONS"
        );
    }
}
