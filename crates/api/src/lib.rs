//! The Gatewayz HTTP service: actix-web routes over the domain's chat use
//! case, with the adapters wired in [`startup`].

pub mod access_log;
pub mod auth;
pub mod config;
pub mod dialect;
pub mod error;
pub mod extensions;
pub mod http_refusals;
pub mod middleware;
pub mod overload;
pub mod probe;
pub mod routes;
pub mod send_deadline;
pub mod settings;
pub mod sse;
pub mod startup;
pub mod telemetry;
pub mod trace_context;

pub use config::Config;
pub use settings::Settings;
pub use startup::Application;
