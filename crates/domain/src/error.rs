//! What can go wrong with a chat completion, typed so that the API layer can
//! give each failure its exact status and the client a precise message.

use std::borrow::Cow;

use crate::route::{PortkeyProvider, ProviderKind};

/// A request the gateway refuses before calling anyone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// The offending field, as a path (`messages[2].role`).
    pub param: Option<String>,
    pub message: String,
    /// A machine-readable code (`missing_provider`, `unsupported_provider`, ...).
    pub code: Option<Cow<'static, str>>,
}

impl ValidationError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            message: message.into(),
            code: None,
        }
    }

    /// A failure that is about the body as a whole rather than one field.
    pub fn body(message: impl Into<String>) -> Self {
        Self {
            param: None,
            message: message.into(),
            code: None,
        }
    }

    #[must_use]
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(Cow::Borrowed(code));
        self
    }
}

/// Credentials that should be configured and are not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The gateway's own Portkey key is missing: an operator's mistake.
    #[error("Portkey API key not configured")]
    PortkeyKeyMissing,
    /// No key for the upstream provider and no virtual key in the request: the
    /// client can fix it by sending one.
    #[error(
        "Provider API key not configured for {provider}: set {env_var} on the gateway, \
         or send a Portkey virtual key in `portkey_virtual_key`"
    )]
    ProviderKeyMissing {
        provider: PortkeyProvider,
        env_var: &'static str,
    },
}

/// Why a chat completion failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The route names an adapter this gateway was started without.
    #[error("Provider `{0}` is not enabled on this gateway")]
    ProviderDisabled(ProviderKind),
}
