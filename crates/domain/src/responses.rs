//! The Responses API's calls by id: a response lives with the upstream
//! target that made it, so its follow-ups (`previous_response_id`) and its
//! by-id calls (retrieve, delete, cancel, input items) must go there. The
//! gateway remembers, per response id, how to find that target again, for
//! a while ([`ResponseMemory`]).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::limits::StoreError;
use crate::ports::{RequestContext, ResponseAction};

/// How long the gateway remembers where a response was made, by default:
/// as long as OpenAI keeps a stored response.
pub const DEFAULT_RESPONSE_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How to find the target that made a response: what the client asked (its
/// model and explicit routing fields) and which catalog target served. No
/// secret is kept: the credentials are found again as for any request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseTarget {
    /// The model, as the client named it.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portkey_provider: Option<String>,
    /// The catalog target that served it, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The id of the gateway key that made it: no other key may reach it.
    pub owner: String,
    /// Whether it was made with the request's own virtual key or Portkey
    /// config, which are not kept: then it cannot be called by id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_credentials: bool,
}

/// Where response ids and their targets are kept: in the process, or in a
/// store every replica shares.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ResponseMemory: Send + Sync {
    /// Remembers where `id` was made, for the store's time to live.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    async fn remember(&self, id: &str, target: &ResponseTarget) -> Result<(), StoreError>;

    /// Where `id` was made, if it is remembered.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn recall(&self, id: &str) -> Result<Option<ResponseTarget>, StoreError>;

    /// Forgets `id` (once the upstream deleted it).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    async fn forget(&self, id: &str) -> Result<(), StoreError>;
}

/// What a by-id call asks, as the API received it.
#[derive(Debug)]
pub struct ResponseCommand {
    pub action: ResponseAction,
    /// The response's id (checked by [`crate::model::is_response_id`]).
    pub id: String,
    /// The client's query string (`limit`, `order`, `after`, `include[]`),
    /// passed on as it came.
    pub query: Option<String>,
    pub context: RequestContext,
    /// The policy of the gateway key that asks: only the key that made a
    /// response reaches it, within its model list and request rate.
    pub key: Option<std::sync::Arc<crate::limits::KeyPolicy>>,
}
