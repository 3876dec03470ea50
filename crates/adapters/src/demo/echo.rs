//! The echo every API of the demo answers with, and how the demo counts
//! tokens: a word is a token.

use serde_json::Value;

/// The longest answer, in bytes: like a real model's output limit, it bounds
/// what one request can make the demo produce (times `n`, at most 128).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// An echo cut to the output limits: its words, and whether a limit cut it.
pub(super) struct Echo {
    pub(super) words: Vec<String>,
    pub(super) cut: bool,
}

impl Echo {
    /// The words of `text`'s first [`MAX_ANSWER_BYTES`], at most `limit` of
    /// them (the client's output limit; none when absent or negative).
    pub(super) fn new(text: &str, limit: Option<i64>) -> Self {
        let too_long = text.len() > MAX_ANSWER_BYTES;
        let end = (0..=MAX_ANSWER_BYTES.min(text.len()))
            .rev()
            .find(|end| text.is_char_boundary(*end))
            .unwrap_or(0);
        let limit = limit
            .and_then(|limit| usize::try_from(limit).ok())
            .unwrap_or(usize::MAX);
        // One word past the limit is enough to know the answer was cut.
        let mut words: Vec<String> = text[..end]
            .split_whitespace()
            .take(limit.saturating_add(1))
            .map(str::to_owned)
            .collect();
        let over = words.len() > limit;
        words.truncate(limit);
        Self {
            words,
            cut: too_long || over,
        }
    }

    pub(super) fn text(&self) -> String {
        self.words.join(" ")
    }

    /// Output tokens: one a word.
    pub(super) fn tokens(&self) -> u64 {
        self.words.len() as u64
    }

    /// The `index`th piece of a stream: a word, after a space but the first.
    pub(super) fn piece(&self, index: usize) -> String {
        match (index, self.words.get(index)) {
            (0, Some(word)) => word.clone(),
            (_, Some(word)) => format!(" {word}"),
            (_, None) => String::new(),
        }
    }
}

/// The demo's answer to `last_user`, the last user message's text: echoed;
/// a greeting when there is none.
pub(super) fn reply_text(last_user: Option<String>) -> String {
    match last_user {
        Some(text) if !text.trim().is_empty() => format!("You said: {text}"),
        _ => "Hello from the Gatewayz demo provider.".to_owned(),
    }
}

/// What a message adds to a prompt's token count besides its words, as chat
/// formats add.
pub(super) const PER_MESSAGE: u64 = 4;

/// A rough token count: one a word.
pub(super) fn word_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The text of a message's `content`: the string itself, or the text of the
/// parts whose `type` is one of `part_types`, joined by newlines.
pub(super) fn content_text(content: Option<&Value>, part_types: &[&str]) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|part| {
                part.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|kind| part_types.contains(&kind))
            })
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_is_cut_to_its_limit_and_streams_word_by_word() {
        let echo = Echo::new("You said: a b", Some(3));
        assert_eq!(echo.text(), "You said: a");
        assert!(echo.cut);
        assert_eq!(
            (0..4).map(|index| echo.piece(index)).collect::<Vec<_>>(),
            ["You", " said:", " a", ""]
        );
        assert!(!Echo::new("a b", Some(2)).cut);
        assert!(!Echo::new("a b", Some(-1)).cut);
    }
}
