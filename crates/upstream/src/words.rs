//! The upstream's token arithmetic: a token is a word (a run of
//! non-whitespace), so counts are cheap and the same on every run, and a
//! streamed answer is sent one word per delta, as the chat stream is.

/// How many words `text` holds.
pub fn count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// `text` cut into one piece per word, each with the whitespace after it
/// (whitespace before the first word stays with it): the pieces concatenate
/// back to `text`. Text without a word is one piece.
pub fn pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut seen_word = false;
    let mut after_word = false;
    for (at, character) in text.char_indices() {
        if character.is_whitespace() {
            after_word = seen_word;
        } else {
            if after_word {
                pieces.push(&text[start..at]);
                start = at;
                after_word = false;
            }
            seen_word = true;
        }
    }
    if start < text.len() || pieces.is_empty() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::{count, pieces};

    #[test]
    fn counts_runs_of_non_whitespace() {
        assert_eq!(count("You said: hello  world\n"), 4);
        assert_eq!(count("   "), 0);
    }

    #[test]
    fn pieces_are_words_with_their_trailing_space_and_concatenate_back() {
        for text in ["You said: hi", " lead  and\ttrail ", "one", "", "  ", "déjà vu"] {
            let cut = pieces(text);
            assert_eq!(cut.concat(), text);
            assert_eq!(cut.len(), count(text).max(1), "{text:?} → {cut:?}");
        }
        assert_eq!(pieces("You said: hi"), ["You ", "said: ", "hi"]);
    }
}
