//! Quoting what a client or an upstream sent, or naming its JSON type, in an error or a log line,
//! without letting its size through: a value is cut to a bound and marked.

use std::borrow::Cow;

use serde_json::Value;

/// The most characters of one quoted value.
pub const QUOTE_MAX: usize = 100;

/// `text` if it has at most `max` characters, else its first `max`
/// characters followed by `…`.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// A client's value as quoted in an error: at most [`QUOTE_MAX`] characters.
pub fn quote(text: &str) -> Cow<'_, str> {
    clip(text, QUOTE_MAX)
}

/// What kind of JSON value `value` is, for an error that names what was sent
/// without quoting it.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_on_a_character_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(quote(&"x".repeat(1 << 20)).chars().count(), QUOTE_MAX + 1);
    }
}
