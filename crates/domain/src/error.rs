//! What can go wrong with a chat completion, typed so that the API layer can
//! give each failure its exact status and the client a precise message.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::budget::{OVERLOADED_RETRY_AFTER, OverBudget};
use crate::limits::headers::openai_duration;
use crate::limits::policy::KeyPolicy;
use crate::limits::store::{LimitKind, Spend, StoreError};
use crate::provider::{ProviderKind, UpstreamProvider};

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
        provider: UpstreamProvider,
        env_var: &'static str,
    },
}

/// Who refused or failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// Gatewayz itself.
    Gateway,
    /// Portkey's own gateway (its `{"status": "failure"}` answers, its timeouts).
    Portkey,
    /// The upstream provider behind Portkey.
    Provider,
}

impl ErrorSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Portkey => "portkey",
            Self::Provider => "provider",
        }
    }
}

impl fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an upstream said when it refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub source: ErrorSource,
    /// The upstream HTTP status, when there was one.
    pub status: Option<u16>,
    /// The upstream's own message, safe to show to the client.
    pub message: String,
    /// The upstream's `param` and `code`, when it gave them.
    pub param: Option<String>,
    pub code: Option<String>,
}

impl UpstreamError {
    pub fn new(source: ErrorSource, status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            source,
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }
}

/// Why a chat completion failed. Each variant has one HTTP status, given in
/// its doc.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// 400: the request breaks the contract.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// 500 for a missing Portkey key, 400 for a missing provider key.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// 404: no route for this model: not `@provider/model`, not in the
    /// catalog, and no default route.
    #[error(
        "The model `{0}` does not exist on this gateway. Use a model id from GET /v1/models, \
         `@<portkey_provider>/<model>` (e.g. `@openai/gpt-4o-mini`), or the fields `provider` and `portkey_provider`"
    )]
    ModelNotFound(#[doc = "the model, as the client sent it"] String),
    /// 400: the route names an adapter this gateway was started without.
    #[error("Provider `{0}` is not enabled on this gateway")]
    ProviderDisabled(ProviderKind),
    /// 500: the upstream refused the gateway's credentials (401, 403).
    #[error("Upstream authentication error: {}", .0.message)]
    UpstreamAuth(UpstreamError),
    /// 429: the upstream is rate limiting; `retry_after` is passed on.
    #[error("Upstream rate limit exceeded: {}", .error.message)]
    RateLimited {
        error: UpstreamError,
        retry_after: Option<Duration>,
    },
    /// 504: the upstream did not answer in time (its 408, or our deadline).
    #[error("Upstream timeout: {}", .0.message)]
    Timeout(UpstreamError),
    /// The upstream's own 4xx status: the upstream refused the request itself.
    #[error("{}", .0.message)]
    UpstreamRejected(UpstreamError),
    /// 502: the upstream failed (5xx).
    #[error("Upstream service error: {}", .0.message)]
    UpstreamFailed(UpstreamError),
    /// 503: the upstream could not be reached (refused, reset, DNS).
    #[error("Upstream service unavailable: {}", .0.message)]
    Unavailable(UpstreamError),
    /// 502: the upstream answered, but not with what the protocol promises.
    #[error("Invalid upstream response: {}", .0.message)]
    InvalidUpstreamResponse(UpstreamError),
    /// 503: the target's circuit breaker is open after repeated failures, and
    /// the model had no other target that could serve.
    #[error(
        "Upstream unavailable: target `{target}` failed repeatedly and is paused; retry in {} s",
        retry_in.as_secs().max(1)
    )]
    CircuitOpen { target: String, retry_in: Duration },
    /// 503: the gateway's memory budget cannot hold this request's buffers
    /// now; the client may try again shortly.
    #[error("The gateway is overloaded: {0}; retry shortly")]
    Overloaded(#[from] OverBudget),
    /// 401: the gateway key's policy has expired.
    #[error("This gateway key (`{0}`) has expired")]
    KeyExpired(#[doc = "the key's id"] String),
    /// 403: the model is outside the gateway key's allow list.
    #[error("The model `{model}` is not allowed for this gateway key (`{key}`)")]
    ModelNotAllowed { model: String, key: String },
    /// 429: a rate limit of the gateway key (requests, tokens or parallel).
    #[error("{message}")]
    LimitExceeded {
        limit: LimitKind,
        retry_after: Duration,
        message: String,
    },
    /// 429 `insufficient_quota`: the gateway key's budget for the period is
    /// spent.
    #[error("{message}")]
    BudgetExceeded { retry_after: Duration, message: String },
    /// 503: the limits store cannot answer and the gateway is set to refuse
    /// then (`GATEWAYZ_LIMITS_ON_STORE_ERROR=closed`).
    #[error("Key limits cannot be checked now ({0}); retry shortly")]
    LimitsUnavailable(StoreError),

    /// A Responses API call names a response this gateway does not know (or
    /// no longer remembers, or that another key made): 404.
    #[error("No response `{id}` is known to this gateway for this key")]
    ResponseNotFound {
        /// The id, as the client sent it (quoted).
        id: String,
        /// Whether a follow-up named it (`previous_response_id`), not a
        /// call by id.
        follow_up: bool,
    },

    /// Where responses were made cannot be looked up or written now: 503.
    #[error("Responses cannot be looked up now ({0}); retry shortly")]
    ResponsesUnavailable(StoreError),
}

impl ChatError {
    /// A short, stable name of the failure, for logs and metric labels.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_request",
            Self::Keys(_) => "credentials",
            Self::ModelNotFound(_) => "model_not_found",
            Self::ProviderDisabled(_) => "provider_disabled",
            Self::UpstreamAuth(_) => "upstream_auth",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout(_) => "timeout",
            Self::UpstreamRejected(_) => "upstream_rejected",
            Self::UpstreamFailed(_) => "upstream_failed",
            Self::Unavailable(_) => "unavailable",
            Self::InvalidUpstreamResponse(_) => "invalid_upstream_response",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Overloaded(_) => "overloaded",
            Self::KeyExpired(_) => "key_expired",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::LimitExceeded { .. } => "limit_exceeded",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::LimitsUnavailable(_) => "limits_unavailable",
            Self::ResponseNotFound { .. } => "response_not_found",
            Self::ResponsesUnavailable(_) => "responses_unavailable",
        }
    }

    /// Whether the same target may well succeed if asked again: a 429, a 500,
    /// 502, 503 or 504, a timeout, a connection failure, or a provider's error
    /// event before a stream's first chunk. Never a 4xx refusal.
    pub const fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Timeout(_) | Self::Unavailable(_) => true,
            Self::UpstreamFailed(error) => matches!(error.status, None | Some(500 | 502 | 503 | 504)),
            _ => false,
        }
    }

    /// Whether another target may serve what this one could not: every
    /// retryable failure, an open circuit, and a target whose credentials
    /// are not configured.
    pub const fn falls_back(&self) -> bool {
        self.is_retryable() || matches!(self, Self::CircuitOpen { .. } | Self::Keys(_))
    }

    /// How long the upstream asked to be left alone, when it said.
    pub const fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::Overloaded(_) | Self::LimitsUnavailable(_) | Self::ResponsesUnavailable(_) => {
                Some(OVERLOADED_RETRY_AFTER)
            }
            Self::LimitExceeded { retry_after, .. } | Self::BudgetExceeded { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// Who failed: the gateway for its own refusals, else the upstream's side.
    pub const fn source(&self) -> ErrorSource {
        match self {
            Self::Invalid(_)
            | Self::Keys(_)
            | Self::ModelNotFound(_)
            | Self::ProviderDisabled(_)
            | Self::CircuitOpen { .. }
            | Self::Overloaded(_)
            | Self::KeyExpired(_)
            | Self::ModelNotAllowed { .. }
            | Self::LimitExceeded { .. }
            | Self::BudgetExceeded { .. }
            | Self::LimitsUnavailable(_)
            | Self::ResponseNotFound { .. }
            | Self::ResponsesUnavailable(_) => ErrorSource::Gateway,
            Self::UpstreamAuth(error)
            | Self::RateLimited { error, .. }
            | Self::Timeout(error)
            | Self::UpstreamRejected(error)
            | Self::UpstreamFailed(error)
            | Self::Unavailable(error)
            | Self::InvalidUpstreamResponse(error) => error.source,
        }
    }

    /// The refusal of a request of `policy` reserving `reserve` by `limit`.
    pub fn refused_by(limit: LimitKind, retry_after: Duration, policy: &KeyPolicy, reserve: Spend) -> Self {
        let key = &policy.id;
        let retry = openai_duration(retry_after);
        let message = match limit {
            LimitKind::Requests => format!(
                "Rate limit reached for gateway key `{key}` on requests per min (RPM): limit {}. \
                 Please try again in {retry}.",
                policy.rpm.unwrap_or_default()
            ),
            LimitKind::Tokens if policy.tpm.is_some_and(|tpm| reserve.tokens > tpm) => {
                // It never fits: no Retry-After, nothing to wait for.
                return Self::LimitExceeded {
                    limit,
                    retry_after: Duration::ZERO,
                    message: format!(
                        "Request too large for gateway key `{key}` on tokens per min (TPM): limit {}, \
                         requested {} (the prompt's estimate and the output limit). Lower `max_tokens` \
                         or the prompt.",
                        policy.tpm.unwrap_or_default(),
                        reserve.tokens
                    ),
                };
            }
            LimitKind::Tokens => format!(
                "Rate limit reached for gateway key `{key}` on tokens per min (TPM): limit {}, \
                 requested {}. Please try again in {retry}.",
                policy.tpm.unwrap_or_default(),
                reserve.tokens
            ),
            LimitKind::Parallel => format!(
                "Rate limit reached for gateway key `{key}` on requests in flight: limit {}. \
                 Please try again in {retry}.",
                policy.max_parallel.unwrap_or_default()
            ),
            LimitKind::Budget => {
                let (usd, period) = policy
                    .budget
                    .map_or((0.0, "total"), |budget| (budget.usd, budget.period.as_str()));
                return Self::BudgetExceeded {
                    retry_after,
                    message: format!(
                        "The budget of gateway key `{key}` (${usd} per {period}) is spent; it renews in {retry}."
                    ),
                };
            }
        };
        Self::LimitExceeded {
            limit,
            retry_after,
            message,
        }
    }

    /// Applies `change` to the upstream's side of the failure, if it has one.
    #[must_use]
    pub fn map_upstream(self, change: impl FnOnce(UpstreamError) -> UpstreamError) -> Self {
        match self {
            Self::UpstreamAuth(error) => Self::UpstreamAuth(change(error)),
            Self::RateLimited { error, retry_after } => Self::RateLimited {
                error: change(error),
                retry_after,
            },
            Self::Timeout(error) => Self::Timeout(change(error)),
            Self::UpstreamRejected(error) => Self::UpstreamRejected(change(error)),
            Self::UpstreamFailed(error) => Self::UpstreamFailed(change(error)),
            Self::Unavailable(error) => Self::Unavailable(change(error)),
            Self::InvalidUpstreamResponse(error) => Self::InvalidUpstreamResponse(change(error)),
            other => other,
        }
    }
}
