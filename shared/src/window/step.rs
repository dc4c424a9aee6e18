//! The `step` of a series query: a named step or whole minutes in seconds.

/// The steps clients name, with their length in seconds.
pub const NAMED_STEPS: [(&str, i64); 6] = [
    ("1m", 60),
    ("5m", 300),
    ("15m", 900),
    ("1h", 3_600),
    ("6h", 21_600),
    ("1d", 86_400),
];

/// The longest step accepted, s (a year; larger steps would be one point).
pub const MAX_STEP_S: i64 = 366 * 86_400;

/// Parses a step: a name of [`NAMED_STEPS`] or a number of seconds that is a
/// positive multiple of 60 (at most a year).
///
/// # Errors
/// The reason, for a 422 naming the `step` parameter.
pub fn parse_step(raw: &str) -> Result<i64, String> {
    if let Some((_, s)) = NAMED_STEPS.iter().find(|(name, _)| *name == raw) {
        return Ok(*s);
    }
    let names = NAMED_STEPS.map(|(name, _)| name).join(", ");
    match raw.parse::<i64>() {
        Ok(s) if s > 0 && s % 60 == 0 && s <= MAX_STEP_S => Ok(s),
        _ => Err(format!(
            "must be one of {names}, or a number of seconds that is a positive multiple of 60 (at most {MAX_STEP_S})"
        )),
    }
}

/// Names a step for messages: `1h` for a named one, else `<n>s`.
pub fn step_label(step_s: i64) -> String {
    NAMED_STEPS
        .iter()
        .find(|(_, s)| *s == step_s)
        .map_or_else(|| format!("{step_s}s"), |(name, _)| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_named_or_whole_minutes() {
        assert_eq!(parse_step("1h"), Ok(3_600));
        assert_eq!(parse_step("120"), Ok(120));
        assert_eq!(step_label(120), "120s");
        assert_eq!(step_label(300), "5m");
        assert_eq!(parse_step("90"), Err(parse_step("x").unwrap_err()));
        for bad in ["0", "-60", "1.5", "1w", "", "31622460"] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
    }
}
