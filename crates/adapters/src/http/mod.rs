//! What every adapter that calls an upstream over HTTP shares: one pooled
//! client, the calls and their deadlines, one error table, the event-stream
//! reader and the key scrubber. An adapter ([`crate::portkey`],
//! [`crate::direct`]) brings only its wire: the URL and the headers of a
//! call ([`Wire`]).

mod client;
pub(crate) mod errors;
mod exchange;
pub(crate) mod secrets;
mod settings;
mod sse;
pub(crate) mod stream;

pub use client::HttpClient;
pub(crate) use errors::Peer;
pub use exchange::HttpProvider;
pub(crate) use exchange::{Wire, by_id_method, by_id_url};
pub use settings::{HttpSetupError, Timeouts, UpstreamSettings};
