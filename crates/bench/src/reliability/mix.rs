//! The soak's traffic: seven kinds of request in a fixed rotation, each with
//! its body and the one answer it must get, and the judge of an answer.
//!
//! The upstream fails on request: a body that sets `"upstream_fault"` (which
//! the gateway forwards, as it forwards every field it does not know) gets
//! that status, or a stream cut halfway (`gatewayz-upstream --faults`).

use std::time::Duration;

use crate::sse::Event;

/// Content chunks of every stream the upstream sends.
pub const CONTENT_CHUNKS: usize = 16;
/// Between two content chunks: a stream lasts about 300 ms.
pub const CHUNK_GAP: Duration = Duration::from_millis(20);
/// Content chunks a client that leaves reads before it closes its socket.
pub const LEAVE_AFTER: usize = 3;

/// What a request asks for, and what it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A whole answer: 200 and a `chat.completion`.
    Completion,
    /// A stream read to the end: 200, every content chunk, the usage chunk,
    /// no error event, `[DONE]` last.
    Stream,
    /// A stream whose client closes its socket after [`LEAVE_AFTER`] content
    /// chunks: 200 and those chunks.
    StreamLeft,
    /// The upstream answers 500: the gateway's 502 and an error body.
    Completion500,
    /// The upstream answers 429: a 429 and an error body.
    Completion429,
    /// A stream the upstream answers with a 500 before any event: 502 and an
    /// error body.
    Stream500,
    /// A stream the upstream cuts halfway: 200, some content chunks, then
    /// one error event and `[DONE]`, last.
    StreamCut,
}

/// Request `n` is of kind `ROTATION[n % 20]`: 35 % whole answers, 30 %
/// streams, 10 % clients that leave, 10 % cut streams, 5 % each injected
/// 500 (whole, stream) and 429, spread over the rotation.
const ROTATION: [Kind; 20] = {
    use Kind::{Completion as C, Stream as S, StreamCut as X, StreamLeft as L};
    [
        C,
        S,
        C,
        S,
        L,
        C,
        Kind::Completion500,
        S,
        C,
        X,
        S,
        C,
        L,
        S,
        Kind::Completion429,
        C,
        S,
        X,
        C,
        Kind::Stream500,
    ]
};

const COMPLETION: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;
const COMPLETION_500: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}],"upstream_fault":"500"}"#;
const COMPLETION_429: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}],"upstream_fault":"429"}"#;
const STREAM_500: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true},"upstream_fault":"500"}"#;
const STREAM_CUT: &str = r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true},"upstream_fault":"cut"}"#;

impl Kind {
    pub const ALL: [Self; 7] = [
        Self::Completion,
        Self::Stream,
        Self::StreamLeft,
        Self::Completion500,
        Self::Completion429,
        Self::Stream500,
        Self::StreamCut,
    ];

    /// The kind of the `index`-th request.
    pub fn of(index: u64) -> Self {
        ROTATION[(index % ROTATION.len() as u64) as usize]
    }

    /// Its share of the rotation, in percent.
    pub fn percent(self) -> usize {
        ROTATION.iter().filter(|kind| **kind == self).count() * 100 / ROTATION.len()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Completion => "completion",
            Self::Stream => "stream",
            Self::StreamLeft => "stream, client leaves",
            Self::Completion500 => "completion, upstream 500",
            Self::Completion429 => "completion, upstream 429",
            Self::Stream500 => "stream, upstream 500",
            Self::StreamCut => "stream, upstream cuts it",
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Self::Completion => COMPLETION,
            Self::Stream | Self::StreamLeft => STREAM,
            Self::Completion500 => COMPLETION_500,
            Self::Completion429 => COMPLETION_429,
            Self::Stream500 => STREAM_500,
            Self::StreamCut => STREAM_CUT,
        }
    }

    /// Whether a 200 answer is read as SSE events.
    pub fn is_stream(self) -> bool {
        matches!(self, Self::Stream | Self::StreamLeft | Self::StreamCut)
    }

    /// The status the gateway must answer.
    pub fn status(self) -> u16 {
        match self {
            Self::Completion | Self::Stream | Self::StreamLeft | Self::StreamCut => 200,
            Self::Completion500 | Self::Stream500 => 502,
            Self::Completion429 => 429,
        }
    }

    /// The rule [`judge`] applies, for the report.
    pub fn expected(self) -> &'static str {
        match self {
            Self::Completion => "200, a `chat.completion`",
            Self::Stream => "200, 16 content chunks, usage, no error, `[DONE]` last",
            Self::StreamLeft => "200, 3 content chunks and no error, then the client closes",
            Self::Completion500 | Self::Stream500 => "502, an error body",
            Self::Completion429 => "429, an error body",
            Self::StreamCut => "200, 1–15 content chunks, no usage, an error event then `[DONE]`, last",
        }
    }
}

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `None` when no status came (refused, reset, or no answer in time).
    pub status: Option<u16>,
    pub body: Body,
}

/// What the body was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A whole `chat.completion`.
    Completion,
    /// A whole body `{"error": {"message": …}}`.
    Error,
    /// A whole body that is neither: its first bytes.
    Unexpected(String),
    /// A stream's events, in order, read to its end.
    Events(Vec<Event>),
    /// The events of a stream the client left, up to the moment it left.
    Left(Vec<Event>),
    /// The answer broke off or never came: why.
    Failed(String),
}

impl Observed {
    /// The status as the report counts it.
    pub fn label(&self) -> String {
        match (self.status, &self.body) {
            (None, _) => "no answer".to_owned(),
            (Some(status), Body::Failed(_)) => format!("{status}, broken"),
            (Some(status), _) => status.to_string(),
        }
    }
}

/// `Ok` when `observed` is what `kind` must get, else what differs.
pub fn judge(kind: Kind, observed: &Observed) -> Result<(), String> {
    if observed.status != Some(kind.status()) {
        let detail = match &observed.body {
            Body::Failed(why) | Body::Unexpected(why) => format!(": {why}"),
            _ => String::new(),
        };
        return Err(format!(
            "{} instead of {}{detail}",
            observed.label(),
            kind.status()
        ));
    }
    match (kind, &observed.body) {
        (Kind::Completion, Body::Completion) => Ok(()),
        (Kind::Completion500 | Kind::Completion429 | Kind::Stream500, Body::Error) => Ok(()),
        (Kind::Stream, Body::Events(events)) => whole_stream(events),
        (Kind::StreamCut, Body::Events(events)) => cut_stream(events),
        (Kind::StreamLeft, Body::Left(events)) => left_stream(events),
        (_, body) => Err(format!("{} body: {}", observed.label(), describe(body))),
    }
}

fn whole_stream(events: &[Event]) -> Result<(), String> {
    let seen = StreamCounts::of(events);
    if seen.content == CONTENT_CHUNKS
        && seen.usage == 1
        && seen.errors == 0
        && seen.done == 1
        && events.last() == Some(&Event::Done)
    {
        Ok(())
    } else {
        Err(format!("stream: {seen}"))
    }
}

fn cut_stream(events: &[Event]) -> Result<(), String> {
    let seen = StreamCounts::of(events);
    if (1..CONTENT_CHUNKS).contains(&seen.content)
        && seen.usage == 0
        && seen.errors == 1
        && seen.done == 1
        && events.ends_with(&[Event::Error, Event::Done])
    {
        Ok(())
    } else {
        Err(format!("cut stream: {seen}"))
    }
}

fn left_stream(events: &[Event]) -> Result<(), String> {
    let seen = StreamCounts::of(events);
    if seen.content >= LEAVE_AFTER && seen.errors == 0 && seen.done == 0 {
        Ok(())
    } else {
        Err(format!("left stream: {seen}"))
    }
}

fn describe(body: &Body) -> String {
    match body {
        Body::Completion => "a chat.completion".to_owned(),
        Body::Error => "an error body".to_owned(),
        Body::Unexpected(start) => format!("unexpected `{start}`"),
        Body::Events(events) => StreamCounts::of(events).to_string(),
        Body::Left(events) => format!("left after {}", StreamCounts::of(events)),
        Body::Failed(why) => format!("broke off: {why}"),
    }
}

/// Counts of a stream's events, and which came last.
struct StreamCounts {
    content: usize,
    usage: usize,
    errors: usize,
    done: usize,
    last: Option<Event>,
}

impl StreamCounts {
    fn of(events: &[Event]) -> Self {
        let count = |wanted: Event| events.iter().filter(|event| **event == wanted).count();
        Self {
            content: count(Event::Content),
            usage: count(Event::Usage),
            errors: count(Event::Error),
            done: count(Event::Done),
            last: events.last().copied(),
        }
    }
}

impl std::fmt::Display for StreamCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} content, {} usage, {} error, {} [DONE] events, last {:?}",
            self.content, self.usage, self.errors, self.done, self.last
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: Body) -> Observed {
        Observed {
            status: Some(status),
            body,
        }
    }

    fn good_stream() -> Vec<Event> {
        let mut events = vec![Event::Content; CONTENT_CHUNKS];
        events.extend([Event::Other, Event::Usage, Event::Done]);
        events
    }

    fn cut_events() -> Vec<Event> {
        let mut events = vec![Event::Content; CONTENT_CHUNKS / 2];
        events.extend([Event::Error, Event::Done]);
        events
    }

    #[test]
    fn the_rotation_holds_every_kind_in_the_documented_shares() {
        let shares: Vec<usize> = Kind::ALL.iter().map(|kind| kind.percent()).collect();
        assert_eq!(shares, [35, 30, 10, 5, 5, 5, 10]);
        assert_eq!(shares.iter().sum::<usize>(), 100);
        assert_eq!(Kind::of(0), Kind::of(20));
    }

    #[test]
    fn each_fault_body_names_its_fault_and_only_streams_ask_to_stream() {
        for kind in Kind::ALL {
            let body: serde_json::Value = serde_json::from_str(kind.body()).unwrap();
            let asks_stream = body["stream"] == true;
            assert_eq!(
                asks_stream,
                kind.is_stream() || kind == Kind::Stream500,
                "{kind:?}"
            );
            let fault = body["upstream_fault"].as_str();
            let expected = match kind {
                Kind::Completion500 | Kind::Stream500 => Some("500"),
                Kind::Completion429 => Some("429"),
                Kind::StreamCut => Some("cut"),
                _ => None,
            };
            assert_eq!(fault, expected, "{kind:?}");
        }
    }

    #[test]
    fn the_expected_answers_pass() {
        let cases = [
            (Kind::Completion, answered(200, Body::Completion)),
            (Kind::Stream, answered(200, Body::Events(good_stream()))),
            (
                Kind::StreamLeft,
                answered(200, Body::Left(vec![Event::Content; LEAVE_AFTER])),
            ),
            (
                Kind::StreamLeft,
                answered(200, Body::Left(vec![Event::Content; LEAVE_AFTER + 1])),
            ),
            (Kind::Completion500, answered(502, Body::Error)),
            (Kind::Completion429, answered(429, Body::Error)),
            (Kind::Stream500, answered(502, Body::Error)),
            (Kind::StreamCut, answered(200, Body::Events(cut_events()))),
        ];
        for (kind, observed) in cases {
            assert_eq!(judge(kind, &observed), Ok(()), "{kind:?}");
        }
    }

    #[test]
    fn a_wrong_status_fails_and_says_which() {
        let failed = judge(Kind::Completion500, &answered(500, Body::Error));
        assert!(
            matches!(&failed, Err(why) if why.starts_with("500 instead of 502")),
            "{failed:?}"
        );
        let none = Observed {
            status: None,
            body: Body::Failed("connection reset".into()),
        };
        let failed = judge(Kind::Completion, &none);
        assert!(matches!(&failed, Err(why) if why.contains("no answer") && why.contains("reset")));
        assert!(judge(Kind::Completion429, &answered(503, Body::Error)).is_err());
    }

    #[test]
    fn a_good_stream_must_end_with_done_after_all_its_chunks_and_usage() {
        let mut no_done = good_stream();
        no_done.pop();
        let mut done_not_last = good_stream();
        done_not_last.push(Event::Other);
        let mut short = good_stream();
        short.remove(0);
        let mut with_error = good_stream();
        with_error.insert(CONTENT_CHUNKS, Event::Error);
        let no_usage: Vec<Event> = good_stream()
            .into_iter()
            .filter(|event| *event != Event::Usage)
            .collect();
        for events in [no_done, done_not_last, short, with_error, no_usage] {
            assert!(
                judge(Kind::Stream, &answered(200, Body::Events(events.clone()))).is_err(),
                "{events:?}"
            );
        }
    }

    #[test]
    fn a_cut_stream_must_end_with_one_error_then_done() {
        let whole = good_stream();
        let mut no_done = cut_events();
        no_done.pop();
        let no_content = vec![Event::Error, Event::Done];
        let mut done_then_error = cut_events();
        done_then_error.swap(CONTENT_CHUNKS / 2, CONTENT_CHUNKS / 2 + 1);
        for events in [whole, no_done, no_content, done_then_error] {
            assert!(
                judge(Kind::StreamCut, &answered(200, Body::Events(events.clone()))).is_err(),
                "{events:?}"
            );
        }
    }

    #[test]
    fn a_body_of_the_wrong_shape_fails() {
        assert!(judge(Kind::Completion, &answered(200, Body::Error)).is_err());
        assert!(
            judge(
                Kind::Completion500,
                &answered(502, Body::Unexpected("<html>".into()))
            )
            .is_err()
        );
        assert!(judge(Kind::StreamLeft, &answered(200, Body::Events(good_stream()))).is_err());
        assert!(judge(Kind::StreamLeft, &answered(200, Body::Left(vec![Event::Content]))).is_err());
        let error_first = vec![Event::Content, Event::Error, Event::Content, Event::Content];
        assert!(judge(Kind::StreamLeft, &answered(200, Body::Left(error_first))).is_err());
        assert!(judge(Kind::Stream, &answered(200, Body::Failed("reset".into()))).is_err());
    }
}
