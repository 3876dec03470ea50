//! The upstream over real loopback sockets, one module per API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod azure;
mod chat;
mod embeddings;
mod helpers;
mod keys;
mod messages;
mod responses_api;
