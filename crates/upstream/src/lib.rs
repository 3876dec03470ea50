//! A fast, predictable stand-in for Portkey (and OpenAI behind it), for
//! benchmarking Gatewayz: `POST /v1/chat/completions` (or `/chat/completions`)
//! answers a `chat.completion` with `usage`, or, when the body asks for
//! `"stream": true`, server-sent `chat.completion.chunk` events with a usage
//! chunk (when `stream_options.include_usage` is true) and `data: [DONE]`.
//!
//! With `--faults`, a request may ask (in its body) for an error status or a
//! stream cut halfway: see [`Fault`].
//!
//! Every answer is built once at start-up, the request body is only scanned
//! for the two flags it needs, and each SSE event is written and flushed on
//! its own, so that the upstream is never what a benchmark measures.

mod args;
mod fault;
mod flags;
mod reply;
mod responses;
mod server;

pub use args::{ArgsError, Command, Config, USAGE};
pub use fault::Fault;
pub use flags::is_true;
pub use reply::{Reply, SseBody, StreamCut};
pub use responses::Responses;
pub use server::Upstream;
