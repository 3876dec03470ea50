//! API integration tests: the real service on 127.0.0.1, port 0, with the
//! ports wired to the demo provider or to mocks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod auth;
mod binary;
mod cache;
mod catalog;
mod chain;
mod chat;
mod deploy;
mod direct;
mod endpoints;
mod errors;
mod framing;
mod helpers;
mod hostile_client;
mod hostile_upstream;
mod key_policies;
mod lifecycle;
mod limits;
mod limits_redis;
mod modules;
mod observability;
mod ops;
mod overload;
mod peers;
mod portkey;
#[path = "../../../adapters/tests/limits/redis_server.rs"]
mod redis_server;
mod routing;
mod sdk;
mod sdk_endpoints;
mod send_deadline;
mod streaming;
mod traces;
mod upstream;
