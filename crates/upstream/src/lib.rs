//! A fast, predictable stand-in for Portkey (and OpenAI or Anthropic behind
//! it), for benchmarking and testing Gatewayz. Every path answers with or
//! without its `/v1` prefix (Portkey, given `x-portkey-custom-host:
//! http://host/v1`, calls `http://host/v1/...`).
//!
//! - `POST /v1/chat/completions`, the benchmarks' hot path: a
//!   `chat.completion` with `usage`, or, when the body asks for
//!   `"stream": true`, server-sent `chat.completion.chunk` events with a
//!   usage chunk (when `stream_options.include_usage` is true) and
//!   `data: [DONE]`. Every answer is built once at start-up and the request
//!   body is only scanned for the two flags it needs.
//! - `POST /v1/embeddings`: OpenAI's embedding list; each vector is a unit
//!   vector derived from its input's content (a string, or token ids), of
//!   `dimensions` floats (8 unless asked), as numbers or, with
//!   `encoding_format: "base64"`, as base64 of little-endian `f32`s.
//! - `POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's
//!   Messages API, echoing `You said: <last user text>`, whole or as
//!   Anthropic's named stream events, with Anthropic's error shape; the
//!   message carries `upstream_saw`, the `anthropic-version` and
//!   `anthropic-beta` headers it received.
//! - `POST /v1/responses`, OpenAI's Responses API, echoing the last user text,
//!   whole or as its named stream events; the last 4096 responses created
//!   are remembered for `GET`/`DELETE /v1/responses/{id}`,
//!   `POST /v1/responses/{id}/cancel`, `GET /v1/responses/{id}/input_items`
//!   and `previous_response_id`.
//! - Azure OpenAI's paths, each with an `api-version` query parameter (any
//!   value; without one, Azure's 404 `Resource not found`):
//!   `POST /openai/deployments/{deployment}/chat/completions` and
//!   `.../embeddings`, answered as above but naming the (percent-decoded)
//!   deployment as their model, and `/openai/responses...` as
//!   `/v1/responses...`.
//!
//! With `--require-key KEY`, a request must carry `Authorization: Bearer
//! KEY` (`api-key: KEY` on Azure's paths) or is refused 401
//! `invalid_api_key`. With `--faults`, a request may ask (in its body) for
//! an error status, a stream cut or a 401 echoing its key: see [`Fault`].
//! Bodies are read up to 8 MiB, and each SSE event is written and flushed
//! on its own, so that the upstream is never what a benchmark measures.

mod args;
mod auth;
mod embeddings;
mod errors;
mod fault;
mod flags;
mod ids;
mod messages;
mod reply;
mod response_store;
mod responses;
mod responses_api;
mod route;
mod server;
mod stored_responses;
mod words;

pub use args::{ArgsError, Command, Config, USAGE};
pub use auth::{ApiKey, InvalidKey};
pub use fault::Fault;
pub use flags::is_true;
pub use reply::{Reply, SseBody, StreamCut};
pub use responses::Responses;
pub use server::Upstream;
