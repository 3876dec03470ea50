//! Token counts: what every API's usage is read into, whatever its names.

use serde::Deserialize;

/// Token counts of one completion. Other members of the upstream's `usage`
/// (`prompt_tokens_details`, ...) reach the client in the upstream's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Some providers leave it out; it is then left out, not invented.
    #[serde(default)]
    pub total_tokens: Option<u64>,
    /// `prompt_tokens_details`, read for its `cached_tokens`.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// The part of `usage.prompt_tokens_details` that prices differ on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the provider's cache.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: Some(prompt_tokens.saturating_add(completion_tokens)),
            prompt_tokens_details: None,
        }
    }

    /// Prompt tokens the provider served from its cache.
    pub fn cached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|details| details.cached_tokens)
            .unwrap_or(0)
    }
}
