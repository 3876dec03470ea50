//! Why a set of gateway keys cannot be used.

use std::net::SocketAddr;

/// Why a set of key entries cannot be used: at start it stops the start, on
/// a reload the previous keys stay.
#[derive(Debug, thiserror::Error)]
pub enum KeySetupError {
    #[error(
        "no gateway key is configured and the gateway binds {0}, which is not a loopback address: \
         set GATEWAYZ_API_KEYS or GATEWAYZ_API_KEYS_FILE"
    )]
    NoKeysOffLoopback(SocketAddr),
    #[error("{source_name}: entry {entry}: `sha256:` must be followed by 64 hex digits")]
    BadDigest { source_name: String, entry: usize },
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0} holds no key (or is not UTF-8)")]
    Empty(String),
    /// A key policy file that is not valid: where, and what is wrong.
    #[error("{file}:{line}: {message}")]
    Policy {
        file: String,
        line: usize,
        message: String,
    },
}
