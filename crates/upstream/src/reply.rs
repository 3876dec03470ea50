//! Response bodies: a whole JSON answer, or SSE events paced and flushed one
//! by one (and, on request, cut off halfway).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::time::{Instant, Sleep, sleep_until};

/// The error a cut stream ends with: hyper then closes the connection
/// without ending the chunked body, as an upstream that dies mid-stream
/// would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCut;

impl fmt::Display for StreamCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the stream was cut on request")
    }
}

impl std::error::Error for StreamCut {}

/// The body of any answer.
#[derive(Debug)]
pub enum Reply {
    /// A whole body, sent with a `content-length`.
    Full(Option<Bytes>),
    Sse(SseBody),
}

impl Reply {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::Sse(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Sse(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
            Self::Sse(body) => body.size_hint(),
        }
    }
}

/// A whole `application/json` answer.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Reply> {
    let mut response = Response::new(Reply::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A `200 text/event-stream` answer.
pub fn sse_response(body: SseBody) -> Response<Reply> {
    let mut response = Response::new(Reply::Sse(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A named SSE event, `event: <name>\ndata: <data>\n\n`, as Anthropic and
/// OpenAI's Responses API send them.
pub fn named_event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// SSE events sent one per write: event `k` with `first_paced < k < gapped`
/// is due `(k - first_paced) × gap` after the stream starts, the others go
/// at once (`first_paced` is 0 unless [`SseBody::paced_from`] says).
///
/// hyper batches every frame a body has ready into one write; after each
/// event the body therefore hands control back once (waking itself at once),
/// which makes hyper flush that event before asking for the next.
#[derive(Debug)]
pub struct SseBody {
    events: Arc<[Bytes]>,
    gapped: usize,
    gap: Duration,
    start: Instant,
    next: usize,
    /// Whether hyper has flushed since the last event went out.
    yielded: bool,
    /// The timer, and the event it is armed for.
    sleep: Option<(usize, Pin<Box<Sleep>>)>,
    /// The event in place of which the stream is cut, if it is.
    cut: Option<usize>,
    first_paced: usize,
}

impl SseBody {
    /// A stream of `events` whose first `gapped` are `gap` apart, starting now.
    pub fn new(events: Arc<[Bytes]>, gapped: usize, gap: Duration) -> Self {
        Self {
            events,
            gapped,
            gap,
            start: Instant::now(),
            next: 0,
            yielded: false,
            sleep: None,
            cut: None,
            first_paced: 0,
        }
    }

    /// Paces the events from `first` on (the content of a stream whose
    /// opening events go at once): event `first` leaves at once, `first + j`
    /// is due `j × gap` after the start.
    #[must_use]
    pub fn paced_from(mut self, first: usize) -> Self {
        self.first_paced = first;
        self
    }

    /// Cuts the stream when event `index` is due, instead of sending it.
    #[must_use]
    pub fn cut_at(mut self, index: usize) -> Self {
        self.cut = Some(index);
        self
    }

    fn due(&self, index: usize) -> Option<Instant> {
        if index <= self.first_paced || index >= self.gapped || self.gap.is_zero() {
            return None;
        }
        let index = u32::try_from(index - self.first_paced).unwrap_or(u32::MAX);
        Some(self.start + self.gap.saturating_mul(index))
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = self.get_mut();
        let Some(event) = this.events.get(this.next).cloned() else {
            return Poll::Ready(None);
        };
        if this.next > 0 && !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(deadline) = this.due(this.next) {
            let index = this.next;
            let sleep = match &mut this.sleep {
                Some((armed, sleep)) => {
                    if *armed != index {
                        sleep.as_mut().reset(deadline);
                        *armed = index;
                    }
                    sleep
                }
                none => &mut none.insert((index, Box::pin(sleep_until(deadline)))).1,
            };
            ready!(sleep.as_mut().poll(cx));
        }
        if this.cut == Some(this.next) {
            this.next = this.events.len();
            return Poll::Ready(Some(Err(StreamCut)));
        }
        this.next += 1;
        this.yielded = false;
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.events.len()
    }
}
