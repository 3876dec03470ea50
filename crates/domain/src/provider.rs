//! Who serves a request: the kind of adapter the gateway calls, and, behind
//! Portkey, the upstream provider, by the names clients, logs and metrics
//! use.

use std::fmt;

/// The kinds of provider adapter the gateway can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// The deterministic in-process provider, for demos and tests.
    Demo,
    /// Portkey's gateway, which forwards to the upstream [`UpstreamProvider`].
    Portkey,
    /// A server that speaks OpenAI's API (vLLM, Ollama, llama.cpp, OpenAI
    /// itself, Azure OpenAI), called directly: which one, a catalog's
    /// upstream names.
    Direct,
}

impl ProviderKind {
    pub const ALL: [Self; 3] = [Self::Demo, Self::Portkey, Self::Direct];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Demo => "demo",
            Self::Portkey => "portkey",
            Self::Direct => "openai-compatible",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The upstream providers Gatewayz reaches through Portkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProvider {
    OpenAi,
    Anthropic,
    DeepInfra,
    GoogleAi,
    Cohere,
    TogetherAi,
    PerplexityAi,
    MistralAi,
    Groq,
}

impl UpstreamProvider {
    pub const ALL: [Self; 9] = [
        Self::OpenAi,
        Self::Anthropic,
        Self::DeepInfra,
        Self::GoogleAi,
        Self::Cohere,
        Self::TogetherAi,
        Self::PerplexityAi,
        Self::MistralAi,
        Self::Groq,
    ];

    /// The name clients use in `portkey_provider`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::DeepInfra => "deepinfra",
            Self::GoogleAi => "google-ai",
            Self::Cohere => "cohere",
            Self::TogetherAi => "together-ai",
            Self::PerplexityAi => "perplexity-ai",
            Self::MistralAi => "mistral-ai",
            Self::Groq => "groq",
        }
    }

    /// `portkey/<name>`: how the gateway names this upstream to clients.
    pub const fn qualified(self) -> &'static str {
        match self {
            Self::OpenAi => "portkey/openai",
            Self::Anthropic => "portkey/anthropic",
            Self::DeepInfra => "portkey/deepinfra",
            Self::GoogleAi => "portkey/google-ai",
            Self::Cohere => "portkey/cohere",
            Self::TogetherAi => "portkey/together-ai",
            Self::PerplexityAi => "portkey/perplexity-ai",
            Self::MistralAi => "portkey/mistral-ai",
            Self::Groq => "portkey/groq",
        }
    }

    /// Whether the upstream rejects a request without an output token limit
    /// (Anthropic's Messages API requires `max_tokens`).
    pub const fn requires_max_tokens(self) -> bool {
        matches!(self, Self::Anthropic)
    }

    /// Parses a client-facing name; `google` (Portkey's own name for
    /// Gemini) is accepted as an alias of `google-ai`.
    pub fn parse(name: &str) -> Option<Self> {
        if name == "google" {
            return Some(Self::GoogleAi);
        }
        Self::ALL.into_iter().find(|provider| provider.name() == name)
    }

    /// The client-facing names, for error messages.
    pub fn supported() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl fmt::Display for UpstreamProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_portkey_provider_parses_by_its_name() {
        for provider in UpstreamProvider::ALL {
            assert_eq!(UpstreamProvider::parse(provider.name()), Some(provider));
            assert_eq!(provider.qualified(), format!("portkey/{}", provider.name()));
        }
    }
}
