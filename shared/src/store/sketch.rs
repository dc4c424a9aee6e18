//! A mergeable relative-error quantile sketch: DDSketch (Masson, Rim and
//! Lee, "DDSketch: a fast and fully-mergeable quantile sketch with
//! relative-error guarantees", VLDB 2019), decoded from the text each bucket
//! stores and merged exactly.
//!
//! **Mapping.** A value `x ≠ 0` falls in bin `i = ⌈log_γ |x|⌉` of the positive
//! store (`x > 0`) or of the negative store (`x < 0`), with
//! `γ = (1 + α) / (1 − α)`; zeros are counted apart. Bin `i` holds
//! `(γ^(i−1), γ^i]` and is reported as `2γ^i / (γ + 1)`, which is within a
//! relative error α of every value in the bin (the paper's Lemma 2).
//! [`RELATIVE_ACCURACY`] is α = 1 %, so γ ≈ 1.0202 and a decade of values
//! spans about 115 bins.
//!
//! **Stored bins** (written by `ingest.lua`, in the binary bucket format of
//! [`super::buckets::StoredBucket`]): each nonempty bin as a key and a
//! count, where the key is [`bin_key`]: `index + KEY_BASE` for the positive
//! store, `-(index + KEY_BASE)` for the negative store, 0 for zeros, so one
//! signed 24-bit integer names every bin and sorting keys sorts each store.
//! Buckets written before that format hold text tokens ([`Sketch::add_stored`]):
//! ` <key>` or ` <key>:<count>`, the index in base 62 (digits `0-9 A-Z a-z`,
//! `-` in front when negative), `~` in front for the negative store, `.` for
//! zeros; e.g. ` 3j -C:3 ~5 .:2` holds bin 231 of the positive store, three
//! values in bin −12, one in bin 5 of the negative store and two zeros.
//!
//! **Merging** adds bin counts, so the sketch of a window is exactly the
//! sketch of all its points, whatever the buckets it is made of.
//!
//! **Bounded size.** A store keeps at most [`MAX_STORE_BINS`] bins: when a
//! bucket's sketch holds more than `2 ×` that, the script collapses the
//! lowest bins of a store that exceeds it into one (the paper's
//! "collapsing lowest" store) and records the index below which new values
//! of that store land in that floor bin. Quantiles whose values lie within
//! `MAX_STORE_BINS` bins of the store's largest magnitude (≈ 17.8 decades at
//! α = 1 %) keep the α guarantee.
//!
//! **Quantiles** are rank-based as in the paper: the q-quantile of `n`
//! values is the value of rank `⌊q (n − 1)⌋` (0-based) in sorted order; the
//! sketch reports the representative of that value's bin, clamped to the
//! exact minimum and maximum kept beside it.

/// α, the relative accuracy of every reported quantile (1 %).
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// The most bins a store keeps before its lowest ones are collapsed (as in
/// the paper's evaluation, 2 048: ≈ 17.8 decades of values at α = 1 %).
pub const MAX_STORE_BINS: usize = 2_048;

/// `γ = (1 + α) / (1 − α)`.
pub fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// The bin index of `|x|` for `x ≠ 0`: `⌈ln |x| / ln γ⌉` (the same arithmetic
/// as `ingest.lua`). Finite nonzero doubles map to about ±37 300.
pub fn index_of(x: f64) -> i32 {
    (x.abs().ln() / gamma().ln()).ceil() as i32
}

/// The value reported for bin `index` of the positive store:
/// `2γ^index / (γ + 1)`, within α of every value of the bin.
pub fn value_of(index: i32) -> f64 {
    let g = gamma();
    // γ^(i−1) · 2γ/(γ+1): γ^(i−1) is below every value of the bin, so it
    // stays finite for the top bin of f64::MAX; exp(k · ln γ) rather than
    // powi: one rounding whatever the index.
    (f64::from(index - 1) * g.ln()).exp() * (2.0 * g / (g + 1.0))
}

const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A bin index in base 62 as the script writes it.
fn base62(index: i32) -> String {
    let mut digits = Vec::new();
    let mut rest = index.unsigned_abs();
    loop {
        digits.push(DIGITS[(rest % 62) as usize]);
        rest /= 62;
        if rest == 0 {
            break;
        }
    }
    if index < 0 {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Reads a base-62 bin index (`None` when empty, malformed or beyond i32).
fn parse_base62(text: &str) -> Option<i32> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    let mut value: i64 = 0;
    for byte in digits.bytes() {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'A'..=b'Z' => byte - b'A' + 10,
            b'a'..=b'z' => byte - b'a' + 36,
            _ => return None,
        };
        value = value * 62 + i64::from(digit);
    }
    i32::try_from(if negative { -value } else { value }).ok()
}

/// The key of bin 0 of the positive store, less one: bin `i` of the
/// positive store has the stored key `i + KEY_BASE`, bin `i` of the negative
/// store `-(i + KEY_BASE)`, zero the key 0. Every finite nonzero double has
/// `|i| < 40 000`, so keys of the positive store are positive, those of the
/// negative store negative, and all fit in 24 bits.
pub const KEY_BASE: i32 = 40_001;

/// The stored key of `x`'s bin in the binary bucket format (module docs):
/// `index_of(x) + KEY_BASE` for `x > 0`, `-(index_of(x) + KEY_BASE)` for
/// `x < 0`, 0 for zero (and `-0`). The caller of `ingest.lua` sends it with
/// each value, so the script takes no logarithm and Rust alone defines the
/// mapping.
pub fn bin_key(x: f64) -> i32 {
    if x > 0.0 {
        index_of(x) + KEY_BASE
    } else if x < 0.0 {
        -(index_of(x) + KEY_BASE)
    } else {
        0
    }
}

/// Why a stored sketch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable sketch token {token:?}")]
pub struct SketchParseError {
    /// The offending token (at most 32 bytes of it).
    pub token: String,
}

/// The count of `W` little-endian bytes.
#[inline(always)]
fn count_of<const W: usize>(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw[..W].copy_from_slice(&bytes[..W]);
    u64::from_le_bytes(raw)
}

/// Adds a dense run of `W`-byte counts to `slots` (one count per slot) of a
/// store holding `total` values; returns the run's sum (saturating).
///
/// Every slot holds at most the store's total, so when `total` plus the
/// run's sum fits in a u64 no slot can overflow and plain additions give
/// exactly what saturating ones would (and vectorise); otherwise each slot
/// saturates as it would alone.
fn add_run<const W: usize>(slots: &mut [u64], counts: &[u8], total: u64) -> u64 {
    let sum = counts
        .chunks_exact(W)
        .try_fold(0u64, |sum, c| sum.checked_add(count_of::<W>(c)));
    match sum.filter(|sum| total.checked_add(*sum).is_some()) {
        Some(sum) => {
            for (slot, c) in slots.iter_mut().zip(counts.chunks_exact(W)) {
                *slot += count_of::<W>(c);
            }
            sum
        }
        None => {
            let mut added = 0u64;
            for (slot, c) in slots.iter_mut().zip(counts.chunks_exact(W)) {
                let count = count_of::<W>(c);
                *slot = slot.saturating_add(count);
                added = added.saturating_add(count);
            }
            added
        }
    }
}

/// The stored key (i24, little-endian) at the start of `bytes`.
#[inline(always)]
fn key_of(bytes: &[u8]) -> i32 {
    let raw = i32::from(bytes[0]) | (i32::from(bytes[1]) << 8) | (i32::from(bytes[2]) << 16);
    (raw << 8) >> 8
}

/// The bins of one binary bucket ([`Sketch::add_binary`]'s layouts), read
/// where they are stored: a window made of one bucket answers its
/// quantiles from them in one pass of cumulative counts, in ascending key
/// order (the negative store from its largest magnitude, zeros, then the
/// positive store), without building a dense [`Sketch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBins<'a> {
    pub(super) body: &'a [u8],
    pub(super) width: usize,
    pub(super) dense: bool,
}

impl<'a> StoredBins<'a> {
    /// The bins of `body` as [`Sketch::add_binary`] takes them, and how
    /// many values they hold, when they can be read in place: the layout
    /// fits, every key is in range and the keys ascend strictly. `None`
    /// otherwise (then [`Sketch::add_binary`] must decide).
    pub fn checked(body: &'a [u8], width: usize, dense: bool) -> Option<(Self, u64)> {
        let in_range = |key: i32| key.unsigned_abs() < 2 * KEY_BASE as u32;
        let bins = Self { body, width, dense };
        if !matches!(width, 1 | 2 | 4 | 6) {
            return None;
        }
        if dense {
            if body.len() < 3 || !(body.len() - 3).is_multiple_of(width) {
                return None;
            }
            let n = (body.len() - 3) / width;
            let first = key_of(body);
            if n > 0 && (!in_range(first) || !in_range(first + n as i32 - 1)) {
                return None;
            }
            let counts = &body[3..];
            let total = match width {
                1 => counts.iter().map(|c| u64::from(*c)).sum(),
                2 => counts.chunks_exact(2).map(count_of::<2>).sum(),
                4 => counts.chunks_exact(4).map(count_of::<4>).sum(),
                _ => counts
                    .chunks_exact(6)
                    .fold(0u64, |t, c| t.saturating_add(count_of::<6>(c))),
            };
            return Some((bins, total));
        }
        let size = 3 + width;
        if !body.len().is_multiple_of(size) {
            return None;
        }
        let mut total = 0u64;
        let mut previous = i32::MIN;
        for pair in body.chunks_exact(size) {
            let key = key_of(pair);
            if !in_range(key) || key <= previous {
                return None;
            }
            previous = key;
            total = total.saturating_add(bins.count_at(pair));
        }
        Some((bins, total))
    }

    fn count_at(&self, bytes: &[u8]) -> u64 {
        match self.width {
            1 => u64::from(bytes[3]),
            2 => count_of::<2>(&bytes[3..]),
            4 => count_of::<4>(&bytes[3..]),
            _ => count_of::<6>(&bytes[3..]),
        }
    }

    /// Every bin as (stored key, count), keys ascending, empty ones of the
    /// dense layout included.
    fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        let (first, pairs, step) = if self.dense {
            (key_of(self.body), &self.body[3..], self.width)
        } else {
            (0, self.body, 3 + self.width)
        };
        pairs.chunks_exact(step).enumerate().map(move |(j, c)| {
            if self.dense {
                let count = match self.width {
                    1 => u64::from(c[0]),
                    2 => count_of::<2>(c),
                    4 => count_of::<4>(c),
                    _ => count_of::<6>(c),
                };
                (first + j as i32, count)
            } else {
                (key_of(c), self.count_at(c))
            }
        })
    }

    /// Number of nonempty bins (zeros count as one bin), as
    /// [`Sketch::bins`] would count them.
    pub fn bins(&self) -> usize {
        self.iter().filter(|(_, count)| *count > 0).count()
    }

    /// As [`Sketch::quantile`] of a sketch holding only these bins, which
    /// hold `n` values (as [`StoredBins::checked`] counted them): the same
    /// rank, found in one pass over the stored bins.
    pub fn quantile(&self, n: u64, q: f64) -> Option<f64> {
        if n == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = ((q * (n - 1) as f64).floor() as u64).min(n - 1);
        let mut seen = 0u64;
        for (key, count) in self.iter() {
            seen = seen.saturating_add(count);
            if seen > rank {
                return Some(match key.cmp(&0) {
                    std::cmp::Ordering::Greater => value_of(key - KEY_BASE),
                    std::cmp::Ordering::Less => -value_of(-key - KEY_BASE),
                    std::cmp::Ordering::Equal => 0.0,
                });
            }
        }
        None
    }
}

/// Bins of one sign, densely from `offset` (index → count), grown on demand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
    total: u64,
}

impl Store {
    fn add(&mut self, index: i32, count: u64) {
        if count == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0);
        } else if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        } else if (index - self.offset) as usize >= self.counts.len() {
            self.counts.resize((index - self.offset) as usize + 1, 0);
        }
        let slot = &mut self.counts[(index - self.offset) as usize];
        *slot = slot.saturating_add(count);
        self.total = self.total.saturating_add(count);
    }

    /// As [`Store::add`] for an index within the reserved range (else as
    /// `add`).
    #[inline]
    fn add_reserved(&mut self, index: i32, count: u64) {
        let at = index - self.offset;
        match self.counts.get_mut(at.max(0) as usize) {
            Some(slot) if at >= 0 => {
                *slot = slot.saturating_add(count);
                self.total = self.total.saturating_add(count);
            }
            _ => self.add(index, count),
        }
    }

    fn merge(&mut self, other: &Store) {
        if other.total == 0 {
            return;
        }
        // Grow once to the union, then add slot by slot.
        let last = other.offset + other.counts.len() as i32 - 1;
        self.reserve_range(other.offset, last);
        for (i, count) in other.counts.iter().enumerate() {
            if *count > 0 {
                let slot = &mut self.counts[(other.offset - self.offset) as usize + i];
                *slot = slot.saturating_add(*count);
            }
        }
        self.total = self.total.saturating_add(other.total);
    }

    fn reserve_range(&mut self, first: i32, last: i32) {
        if self.counts.is_empty() {
            self.offset = first;
            self.counts.resize((last - first) as usize + 1, 0);
            return;
        }
        if first < self.offset {
            let grow = (self.offset - first) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = first;
        }
        if (last - self.offset) as usize >= self.counts.len() {
            self.counts.resize((last - self.offset) as usize + 1, 0);
        }
    }

    /// The index holding the value of 0-based `rank` counted from the lowest
    /// index (`ascending`) or from the highest.
    fn index_at_rank(&self, rank: u64, ascending: bool) -> Option<i32> {
        let mut seen = 0u64;
        let hit = |(i, count): (usize, &u64)| {
            seen = seen.saturating_add(*count);
            (seen > rank).then_some(self.offset + i as i32)
        };
        if ascending {
            self.counts.iter().enumerate().find_map(hit)
        } else {
            self.counts.iter().enumerate().rev().find_map(hit)
        }
    }

    fn bins(&self) -> usize {
        self.counts.iter().filter(|c| **c > 0).count()
    }
}

/// A DDSketch: positive and negative stores and a zero count. Built by
/// merging stored bucket sketches ([`Sketch::add_stored`]) or by adding
/// values ([`Sketch::add`], for tests and tools).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    positive: Store,
    negative: Store,
    zero: u64,
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values summarised.
    pub fn count(&self) -> u64 {
        self.positive
            .total
            .saturating_add(self.negative.total)
            .saturating_add(self.zero)
    }

    /// Number of nonempty bins (zeros count as one bin).
    pub fn bins(&self) -> usize {
        self.positive.bins() + self.negative.bins() + usize::from(self.zero > 0)
    }

    /// Adds one value (finite) with the mapping of `ingest.lua`.
    pub fn add(&mut self, x: f64) {
        if x > 0.0 {
            self.positive.add(index_of(x), 1);
        } else if x < 0.0 {
            self.negative.add(index_of(x), 1);
        } else {
            self.zero += 1;
        }
    }

    /// Adds the bins of another sketch: the result summarises the values of
    /// both, exactly as if they had been added to one sketch.
    pub fn merge(&mut self, other: &Sketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero = self.zero.saturating_add(other.zero);
    }

    /// Adds the bins of a stored sketch (the text after the `|` of a bucket,
    /// module docs) and returns how many values they hold.
    ///
    /// # Errors
    /// [`SketchParseError`] for a token that is not `<key>` or
    /// `<key>:<count>`; the bins before it have been added.
    pub fn add_stored(&mut self, text: &str) -> Result<u64, SketchParseError> {
        let mut added = 0u64;
        for token in text.split_ascii_whitespace() {
            let bad = || SketchParseError {
                token: token.chars().take(32).collect(),
            };
            let (key, count) = match token.split_once(':') {
                Some((key, count)) => (key, count.parse::<u64>().map_err(|_| bad())?),
                None => (token, 1),
            };
            match key.as_bytes().first() {
                Some(b'.') if key.len() == 1 => self.zero = self.zero.saturating_add(count),
                Some(b'~') => self
                    .negative
                    .add(parse_base62(&key[1..]).ok_or_else(bad)?, count),
                _ => self.positive.add(parse_base62(key).ok_or_else(bad)?, count),
            }
            added = added.saturating_add(count);
        }
        Ok(added)
    }

    /// Adds `count` values to the bin of the stored key `key` ([`bin_key`]).
    fn add_key(&mut self, key: i32, count: u64) {
        match key.cmp(&0) {
            std::cmp::Ordering::Greater => self.positive.add(key - KEY_BASE, count),
            std::cmp::Ordering::Less => self.negative.add(-key - KEY_BASE, count),
            std::cmp::Ordering::Equal => self.zero = self.zero.saturating_add(count),
        }
    }

    /// Adds the bins of a binary bucket ([`super::buckets::StoredBucket`]):
    /// `body` holds sparse `(key i24, count)` pairs in ascending key order
    /// or, when `dense`, the first key (i24) and one count per key from it
    /// on; counts are `width` bytes (1, 2, 4 or 6), all little-endian.
    /// Returns how many values they hold.
    ///
    /// # Errors
    /// [`SketchParseError`] when the body's length does not fit the layout
    /// or a key is out of range; nothing is added then.
    pub fn add_binary(
        &mut self,
        body: &[u8],
        width: usize,
        dense: bool,
    ) -> Result<u64, SketchParseError> {
        let bad = || SketchParseError {
            token: format!("binary bins of {} bytes", body.len()),
        };
        let key_at = |at: usize| -> i32 {
            let raw = i32::from(body[at])
                | (i32::from(body[at + 1]) << 8)
                | (i32::from(body[at + 2]) << 16);
            (raw << 8) >> 8
        };
        let count_at = |at: usize| -> u64 {
            body[at..at + width]
                .iter()
                .rev()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        };
        let in_range = |key: i32| key.unsigned_abs() < 2 * KEY_BASE as u32;
        let mut added = 0u64;
        if dense {
            if body.len() < 3 || !(body.len() - 3).is_multiple_of(width) {
                return Err(bad());
            }
            let first = key_at(0);
            let n = (body.len() - 3) / width;
            let last = first + n as i32 - 1;
            if n > 0 && (!in_range(first) || !in_range(last)) {
                return Err(bad());
            }
            // Reserve each store's range once, then add slot by slot.
            let pos = (first.max(1), last);
            if pos.0 <= pos.1 {
                self.positive
                    .reserve_range(pos.0 - KEY_BASE, pos.1 - KEY_BASE);
            }
            let neg = (first, last.min(-1));
            if neg.0 <= neg.1 {
                self.negative
                    .reserve_range(-neg.1 - KEY_BASE, -neg.0 - KEY_BASE);
            }
            if first > 0 && n > 0 {
                // Only the positive store (the usual case): add the run
                // straight into its reserved slots.
                let start = (first - KEY_BASE - self.positive.offset) as usize;
                let slots = &mut self.positive.counts[start..start + n];
                let total = self.positive.total;
                let added = match width {
                    1 => add_run::<1>(slots, &body[3..], total),
                    2 => add_run::<2>(slots, &body[3..], total),
                    4 => add_run::<4>(slots, &body[3..], total),
                    _ => add_run::<6>(slots, &body[3..], total),
                };
                self.positive.total = self.positive.total.saturating_add(added);
                return Ok(added);
            }
            for j in 0..n {
                let count = count_at(3 + j * width);
                if count > 0 {
                    self.add_key(first + j as i32, count);
                    added = added.saturating_add(count);
                }
            }
        } else {
            let size = 3 + width;
            if !body.len().is_multiple_of(size) {
                return Err(bad());
            }
            let n = body.len() / size;
            if n == 0 {
                return Ok(0);
            }
            let (first, last) = (key_at(0), key_at((n - 1) * size));
            if !in_range(first) || !in_range(last) || first > last {
                return Err(bad());
            }
            if last > 0 {
                // The positive keys are the last ones, ascending.
                let low = (0..n)
                    .map(|j| key_at(j * size))
                    .find(|k| *k > 0)
                    .unwrap_or(last);
                self.positive.reserve_range(low - KEY_BASE, last - KEY_BASE);
            }
            if first < 0 {
                let high = (0..n)
                    .map(|j| key_at(j * size))
                    .take_while(|k| *k < 0)
                    .last()
                    .unwrap_or(first);
                self.negative
                    .reserve_range(-high - KEY_BASE, -first - KEY_BASE);
            }
            // Every key's slot is reserved: index straight into it.
            added = match width {
                1 => self.add_pairs::<1>(body),
                2 => self.add_pairs::<2>(body),
                4 => self.add_pairs::<4>(body),
                _ => self.add_pairs::<6>(body),
            };
        }
        Ok(added)
    }

    /// Adds sparse `(key i24, count)` pairs of `W`-byte counts whose
    /// stores' ranges are reserved; returns how many values they hold.
    fn add_pairs<const W: usize>(&mut self, body: &[u8]) -> u64 {
        let mut added = 0u64;
        for pair in body.chunks_exact(3 + W) {
            let (key, count) = (key_of(pair), count_of::<W>(&pair[3..]));
            match key.cmp(&0) {
                std::cmp::Ordering::Greater => self.positive.add_reserved(key - KEY_BASE, count),
                std::cmp::Ordering::Less => self.negative.add_reserved(-key - KEY_BASE, count),
                std::cmp::Ordering::Equal => self.zero = self.zero.saturating_add(count),
            }
            added = added.saturating_add(count);
        }
        added
    }

    /// The stored text of this sketch (module docs), bins in index order.
    /// `ingest.lua` writes the same grammar; this is for tests and tools.
    pub fn to_stored(&self) -> String {
        let mut out = String::new();
        let mut token = |key: String, count: u64| {
            out.push(' ');
            out.push_str(&key);
            if count > 1 {
                out.push(':');
                out.push_str(&count.to_string());
            }
        };
        for (i, c) in self.negative.counts.iter().enumerate() {
            if *c > 0 {
                token(format!("~{}", base62(self.negative.offset + i as i32)), *c);
            }
        }
        if self.zero > 0 {
            token(".".to_string(), self.zero);
        }
        for (i, c) in self.positive.counts.iter().enumerate() {
            if *c > 0 {
                token(base62(self.positive.offset + i as i32), *c);
            }
        }
        out
    }

    /// The q-quantile (`0 ≤ q ≤ 1`): the bin representative of the value of
    /// rank `⌊q (n − 1)⌋` in sorted order, within α of it relatively.
    /// `None` when the sketch is empty or `q` is outside `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // Exact for n up to 2^53; beyond, the rank is off by a few in 2^53.
        let rank = ((q * (n - 1) as f64).floor() as u64).min(n - 1);
        if rank < self.negative.total {
            // Most negative first: the negative store from its highest index.
            return self
                .negative
                .index_at_rank(rank, false)
                .map(|i| -value_of(i));
        }
        let rank = rank - self.negative.total;
        if rank < self.zero {
            return Some(0.0);
        }
        self.positive
            .index_at_rank(rank - self.zero, true)
            .map(value_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    fn within(estimate: f64, exact: f64) -> bool {
        (estimate - exact).abs() <= RELATIVE_ACCURACY * exact.abs() * (1.0 + 1e-9)
    }

    #[test]
    fn every_bin_representative_is_within_alpha_of_its_values() {
        for x in [1e-300, 1e-6, 0.5, 1.0, 1.0202, 3.3, 99.99, 1e9, 1.7e308] {
            let i = index_of(x);
            assert!(within(value_of(i), x), "{x}: bin {i} → {}", value_of(i));
        }
        assert_eq!(index_of(1.0), 0);
        assert_eq!(index_of(-1.0), 0);
    }

    #[test]
    fn quantiles_are_rank_based_and_within_alpha() {
        let mut values: Vec<f64> = (0..1000)
            .map(|i| {
                let v = f64::from(i) * 1.37 - 300.0;
                if i % 7 == 0 {
                    0.0
                } else {
                    v * v.abs()
                }
            })
            .collect();
        let mut sketch = Sketch::new();
        values.iter().for_each(|v| sketch.add(*v));
        values.sort_by(f64::total_cmp);
        assert_eq!(sketch.count(), 1000);
        for q in [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let (estimate, exact) = (sketch.quantile(q).unwrap(), exact_quantile(&values, q));
            assert!(within(estimate, exact), "q={q}: {estimate} vs {exact}");
        }
        assert_eq!(Sketch::new().quantile(0.5), None);
        assert_eq!(sketch.quantile(1.5), None);
    }

    #[test]
    fn stored_text_round_trips_and_merges_exactly() {
        let mut a = Sketch::new();
        let mut b = Sketch::new();
        let mut whole = Sketch::new();
        for i in 0..500 {
            let v = (f64::from(i) - 250.0) * 0.731;
            whole.add(v);
            if i % 3 == 0 {
                a.add(v)
            } else {
                b.add(v)
            }
        }
        let mut decoded = Sketch::new();
        assert_eq!(decoded.add_stored(&a.to_stored()), Ok(a.count()));
        assert_eq!(decoded, a);
        decoded.add_stored(&b.to_stored()).unwrap();
        assert_eq!(decoded.count(), whole.count());
        for q in [0.01, 0.5, 0.99] {
            assert_eq!(decoded.quantile(q), whole.quantile(q));
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.to_stored(), whole.to_stored());
    }

    #[test]
    fn bin_keys_name_the_bins_of_single_values() {
        for x in [
            0.0,
            -0.0,
            1.0,
            37.5,
            -37.5,
            1e-300,
            -1e300,
            0.995,
            f64::MAX,
            -5e-324,
        ] {
            let mut one = Sketch::new();
            one.add(x);
            let mut keyed = Sketch::new();
            keyed.add_key(bin_key(x), 1);
            assert_eq!(keyed, one, "{x}");
            assert!(bin_key(x).unsigned_abs() < 2 * KEY_BASE as u32);
        }
        assert_eq!(bin_key(0.995), KEY_BASE);
        assert_eq!(bin_key(-1.0), -KEY_BASE);
        assert_eq!(bin_key(0.0), 0);
    }

    fn pairs(entries: &[(i32, u64)], width: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, count) in entries {
            out.extend_from_slice(&key.to_le_bytes()[..3]);
            out.extend_from_slice(&count.to_le_bytes()[..width]);
        }
        out
    }

    #[test]
    fn binary_bins_decode_in_both_layouts() {
        let entries = [
            (-KEY_BASE - 3, 2),
            (0, 5),
            (KEY_BASE, 1),
            (KEY_BASE + 2, 300),
        ];
        let mut sparse = Sketch::new();
        assert_eq!(sparse.add_binary(&pairs(&entries, 2), 2, false), Ok(308));
        let mut expected = Sketch::new();
        for (key, count) in entries {
            expected.add_key(key, count);
        }
        assert_eq!(sparse, expected);
        // Dense: the first key, then a count per key.
        let mut body = (KEY_BASE - 1).to_le_bytes()[..3].to_vec();
        body.extend_from_slice(&[4, 0, 0, 7]);
        let mut dense = Sketch::new();
        assert_eq!(dense.add_binary(&body, 1, true), Ok(11));
        assert_eq!(dense.quantile(0.0), Some(value_of(-1)));
        assert_eq!(dense.quantile(1.0), Some(value_of(2)));
        // A dense run of 16-bit counts into a sketch already holding bins
        // on both sides of it: the same as adding bin by bin.
        let mut wide = (KEY_BASE + 5).to_le_bytes()[..3].to_vec();
        wide.extend_from_slice(&[1, 1, 0, 0, 44, 1]);
        let mut merged = expected.clone();
        assert_eq!(merged.add_binary(&wide, 2, true), Ok(557));
        let mut by_bin = expected.clone();
        by_bin.add_key(KEY_BASE + 5, 257);
        by_bin.add_key(KEY_BASE + 7, 300);
        assert_eq!(merged.count(), by_bin.count());
        for q in [0.0, 0.3, 0.5, 0.7, 0.9, 1.0] {
            assert_eq!(merged.quantile(q), by_bin.quantile(q), "{q}");
        }
        assert!(Sketch::new().add_binary(&body[..6], 2, true).is_err());
        assert!(Sketch::new()
            .add_binary(&[1, 2, 3, 4, 5], 1, false)
            .is_err());
        assert!(Sketch::new()
            .add_binary(&pairs(&[(8_000_000, 1)], 1), 1, false)
            .is_err());
    }

    #[test]
    fn the_grammar_is_strict() {
        let mut s = Sketch::new();
        assert_eq!(s.add_stored(" C -3:4 ~7:2 .:5 ."), Ok(13));
        assert_eq!(s.quantile(0.0), Some(-value_of(7)));
        assert_eq!(s.quantile(0.2), Some(0.0));
        assert_eq!(s.quantile(1.0), Some(value_of(12)));
        assert_eq!(
            (parse_base62("3j"), parse_base62("-C")),
            (Some(231), Some(-12))
        );
        for i in [-37_300, -62, -61, -1, 0, 1, 61, 62, 231, 37_300] {
            assert_eq!(parse_base62(&base62(i)), Some(i));
        }
        for bad in [
            "x!", "12:", "12:-1", "~", "..", "1.5", "12:1:2", "-", "zzzzzzz",
        ] {
            assert!(Sketch::new().add_stored(bad).is_err(), "{bad}");
        }
        assert_eq!(Sketch::new().add_stored(""), Ok(0));
    }
}
