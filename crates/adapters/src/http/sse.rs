//! Server-sent events framing, bounded: bytes in, whole events out.
//!
//! Lines end with `\n`, `\r\n` or `\r` (a pair split across two reads is
//! still one line end); `data:` lines of one event are joined with `\n`; a
//! blank line ends the event; comments (`:`), `id:`, `retry:` and unknown
//! fields are skipped. One event — its unfinished line, its data and its
//! type — may hold at most the decoder's limit: an upstream that never ends a
//! line or an event cannot grow the gateway's memory past it.
//!
//! Written here rather than taken from `eventsource-stream`, which buffers
//! without bound on a byte that is not UTF-8, quotes the upstream's bytes in
//! its parse errors, and copies its buffer once per line.

use std::collections::VecDeque;

use bytes::Bytes;

/// One event: its type (`message` unless an `event:` field said otherwise)
/// and its data, UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub kind: String,
    pub data: Bytes,
}

/// Why the bytes are not an event stream the gateway accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SseError {
    #[error("an event is larger than {0} bytes")]
    TooLarge(usize),
    #[error("an event is not UTF-8")]
    NotUtf8,
}

/// The decoder's state between two reads.
#[derive(Debug)]
pub(crate) struct Decoder {
    limit: usize,
    /// The line not yet ended.
    line: Vec<u8>,
    /// The event's data so far, each `data:` line followed by `\n`.
    data: Vec<u8>,
    /// The event's `event:` field, if any.
    kind: Vec<u8>,
    /// The last byte read was a `\r`: a `\n` right after it ends no line.
    after_cr: bool,
    /// Events complete and not yet taken.
    ready: VecDeque<Event>,
}

/// Buffers that grew past this are released once their event is out, so a
/// large event does not keep its memory for the rest of the stream.
const KEEP_CAPACITY: usize = 64 * 1024;

impl Decoder {
    /// A decoder that refuses events larger than `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            line: Vec::new(),
            data: Vec::new(),
            kind: Vec::new(),
            after_cr: false,
            ready: VecDeque::new(),
        }
    }

    /// Reads `bytes`; the events they complete are then returned by
    /// [`Self::next_event`].
    ///
    /// # Errors
    /// [`SseError::TooLarge`] when the event being read passes the limit,
    /// [`SseError::NotUtf8`] when a complete event is not UTF-8. The decoder
    /// must not be fed after an error.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while let Some(end) = bytes.iter().position(|byte| matches!(byte, b'\n' | b'\r')) {
            if self.line.is_empty() {
                self.check(end)?;
                self.line_ended(&bytes[..end])?;
            } else {
                self.check(end)?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                self.line_ended(&line)?;
                line.clear();
                if line.capacity() <= KEEP_CAPACITY {
                    self.line = line;
                }
            }
            let crlf = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if crlf {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.check(bytes.len())?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete event, oldest first.
    pub(crate) fn next_event(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    /// The bytes the event being read holds.
    pub(crate) fn held(&self) -> usize {
        self.line.len() + self.data.len() + self.kind.len()
    }

    /// The bytes the event being read holds, plus `more`, must fit.
    fn check(&self, more: usize) -> Result<(), SseError> {
        if self.held().saturating_add(more) > self.limit {
            return Err(SseError::TooLarge(self.limit));
        }
        Ok(())
    }

    fn line_ended(&mut self, line: &[u8]) -> Result<(), SseError> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|byte| *byte == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            _ => {}
        }
        Ok(())
    }

    /// A blank line: the event is complete, if it has data.
    fn dispatch(&mut self) -> Result<(), SseError> {
        let mut data = std::mem::take(&mut self.data);
        let kind = std::mem::take(&mut self.kind);
        if data.is_empty() {
            return Ok(());
        }
        data.pop();
        if std::str::from_utf8(&data).is_err() {
            return Err(SseError::NotUtf8);
        }
        let data = Bytes::from(data);
        let kind = if kind.is_empty() {
            "message".to_owned()
        } else {
            String::from_utf8(kind).map_err(|_| SseError::NotUtf8)?
        };
        self.ready.push_back(Event { kind, data });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(parts: &[&[u8]]) -> Result<Vec<Event>, SseError> {
        let mut decoder = Decoder::new(1024);
        let mut events = Vec::new();
        for part in parts {
            decoder.feed(part)?;
            events.extend(std::iter::from_fn(|| decoder.next_event()));
        }
        Ok(events)
    }

    fn event(kind: &str, data: &str) -> Event {
        Event {
            kind: kind.to_owned(),
            data: Bytes::copy_from_slice(data.as_bytes()),
        }
    }

    #[test]
    fn the_spec_examples_give_their_events() {
        let events = decode(&[
            b": comment\n\ndata: first\ndata: second\n\nevent: ping\ndata:x\nid: 7\nretry: 9\n\ndata\n\n",
        ])
        .unwrap();
        assert_eq!(
            events,
            [
                event("message", "first\nsecond"),
                event("ping", "x"),
                event("message", "")
            ]
        );
    }

    #[test]
    fn every_line_ending_works_even_split_across_reads() {
        let events = decode(&[b"data: a\r", b"", b"\n\r", b"\ndata: b\r\rdata: c\n", b"\n"]).unwrap();
        assert_eq!(
            events,
            [
                event("message", "a"),
                event("message", "b"),
                event("message", "c")
            ]
        );
    }

    #[test]
    fn an_event_without_a_blank_line_after_it_is_not_given() {
        assert_eq!(decode(&[b"data: a\n"]).unwrap(), []);
    }

    #[test]
    fn an_event_of_many_data_lines_is_bounded_as_a_whole() {
        let line = [b"data: ".as_slice(), &[b'x'; 100], b"\n"].concat();
        let parts: Vec<&[u8]> = std::iter::repeat_n(line.as_slice(), 20).collect();
        assert_eq!(decode(&parts), Err(SseError::TooLarge(1024)));
    }

    #[test]
    fn a_line_that_never_ends_is_bounded() {
        let piece = [b'x'; 300];
        let parts: Vec<&[u8]> = std::iter::repeat_n(piece.as_slice(), 4).collect();
        assert_eq!(decode(&parts), Err(SseError::TooLarge(1024)));
    }

    #[test]
    fn many_small_events_pass_however_much_they_add_up_to() {
        let parts: Vec<&[u8]> = std::iter::repeat_n(b"data: ok\n\n".as_slice(), 1000).collect();
        assert_eq!(decode(&parts).unwrap().len(), 1000);
    }

    #[test]
    fn an_event_that_is_not_utf8_is_refused() {
        assert_eq!(decode(&[b"data: \xff\xfe\n\n"]), Err(SseError::NotUtf8));
    }

    #[test]
    fn a_character_split_across_reads_is_joined() {
        assert_eq!(
            decode(&[b"data: \xc3", b"\xa9\n\n"]).unwrap(),
            [event("message", "é")]
        );
    }

    /// `bytes` fed in pieces cut at `cuts`; the events, or the first error.
    fn decode_split(bytes: &[u8], cuts: &[usize], limit: usize) -> Result<Vec<Event>, SseError> {
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = Decoder::new(limit);
        let mut events = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            decoder.feed(&bytes[from..cut])?;
            assert!(decoder.held() <= limit, "holds {} over {limit}", decoder.held());
            events.extend(std::iter::from_fn(|| decoder.next_event()));
            from = cut;
        }
        Ok(events)
    }

    /// An event stream's text: each event's `event:` line, its data lines,
    /// comments, and a blank line, with any line ending.
    fn stream_text() -> impl Strategy<Value = String> {
        let line_end = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        let event = (
            proptest::option::of("[a-z]{1,8}"),
            proptest::collection::vec("[^\r\n]{0,20}", 1..4),
            proptest::option::of("[^\r\n]{0,10}"),
            line_end,
        );
        proptest::collection::vec(event, 0..8).prop_map(|events| {
            let mut text = String::new();
            for (kind, data, comment, end) in events {
                if let Some(comment) = comment {
                    text += &format!(":{comment}{end}");
                }
                if let Some(kind) = kind {
                    text += &format!("event: {kind}{end}");
                }
                for line in data {
                    text += &format!("data: {line}{end}");
                }
                text += end;
            }
            text
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_split_anywhere_never_panic_nor_pass_the_bound(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            limit in 1_usize..512,
        ) {
            let _ = decode_split(&bytes, &cuts, limit);
        }

        #[test]
        fn a_valid_stream_split_anywhere_gives_the_same_events(
            text in stream_text(),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let whole = decode_split(text.as_bytes(), &[], 1 << 20).unwrap();
            let split = decode_split(text.as_bytes(), &cuts, 1 << 20).unwrap();
            prop_assert_eq!(whole, split);
        }
    }
}
