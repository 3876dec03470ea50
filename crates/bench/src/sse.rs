//! Server-sent events read as they arrive: body frames are fed in, each
//! complete event is classified on the spot (no JSON parse: the driver
//! must stay cheap at 100,000 events a second).

/// What one `data:` event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A chunk whose delta carries non-empty content.
    Content,
    /// The chunk carrying `usage`.
    Usage,
    /// `data: {"error": …}`: the stream failed after it began.
    Error,
    Done,
    /// Anything else (the finish chunk, a role-only chunk).
    Other,
}

/// Splits a byte stream into events. Lines may end with `\n` or `\r\n`;
/// comment, `event:` and `id:` lines are skipped.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    data: Vec<u8>,
}

impl Parser {
    /// Feeds one body frame; `on_event` sees every event it completes.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event)) {
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|byte| *byte == b'\n') {
            let line = &self.buffer[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    on_event(classify(&self.data));
                    self.data.clear();
                }
            } else if let Some(data) = line.strip_prefix(b"data:") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data
                    .extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
            }
            start += end + 1;
        }
        self.buffer.drain(..start);
    }
}

fn classify(data: &[u8]) -> Event {
    if data == b"[DONE]" {
        return Event::Done;
    }
    if data.starts_with(b"{\"error\"") {
        return Event::Error;
    }
    if contains(data, b"\"usage\":{") {
        return Event::Usage;
    }
    match find(data, b"\"content\":\"") {
        Some(at) if data.get(at + 11) != Some(&b'"') => Event::Content,
        _ => Event::Other,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::{Event, Parser};

    fn events(frames: &[&[u8]]) -> Vec<Event> {
        let mut parser = Parser::default();
        let mut seen = Vec::new();
        for frame in frames {
            parser.feed(frame, |event| seen.push(event));
        }
        seen
    }

    #[test]
    fn classifies_each_event_of_a_stream() {
        let seen = events(&[
            br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            b"\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(
            seen,
            [
                Event::Other,
                Event::Content,
                Event::Other,
                Event::Usage,
                Event::Done
            ]
        );
    }

    #[test]
    fn an_event_split_across_frames_is_seen_once_it_is_complete() {
        let seen = events(&[
            b"data: {\"choices\":[{\"delta\":{\"cont",
            b"ent\":\"x\"}}]}\r\n",
            b"\r\n",
        ]);
        assert_eq!(seen, [Event::Content]);
    }

    #[test]
    fn an_error_event_and_comments() {
        let seen = events(&[b": keep-alive\n\ndata: {\"error\":{\"message\":\"m\"}}\n\ndata: [DONE]\n\n"]);
        assert_eq!(seen, [Event::Error, Event::Done]);
    }
}
