//! The Portkey adapter against a real local HTTP server (wiremock).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod apis;
mod calls;
mod error_table;
mod helpers;
mod seed;
mod streaming;
