//! The direct adapter ([`gatewayz_adapters::direct::DirectClient`]) against
//! real local HTTP servers: wiremock, and a raw TCP server where an answer
//! must stall or break half-way.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod apis;
mod azure;
mod budget;
mod calls;
mod error_table;
mod helpers;
mod raw;
mod scrubbing;
mod streaming;
