//! The APIs the gateway serves, each with its own request and answer shape:
//! OpenAI's chat completions, embeddings and Responses, and Anthropic's
//! Messages (with its token count).

use std::fmt;

/// An API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    #[default]
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages` (Anthropic).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    CountTokens,
    /// `POST /v1/responses`.
    Responses,
}

impl Endpoint {
    pub const ALL: [Self; 5] = [
        Self::Chat,
        Self::Embeddings,
        Self::Messages,
        Self::CountTokens,
        Self::Responses,
    ];

    /// The endpoint's name in logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
            Self::Responses => "responses",
        }
    }

    /// Its path after the API's `/v1` base.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Embeddings => "/embeddings",
            Self::Messages => "/messages",
            Self::CountTokens => "/messages/count_tokens",
            Self::Responses => "/responses",
        }
    }

    /// What a catalog entry says it serves for this endpoint: a model that
    /// serves `messages` also counts its tokens.
    pub const fn service(self) -> Service {
        match self {
            Self::Chat => Service::Chat,
            Self::Embeddings => Service::Embeddings,
            Self::Messages | Self::CountTokens => Service::Messages,
            Self::Responses => Service::Responses,
        }
    }

    /// Whether its answers and errors are in Anthropic's shape.
    pub const fn is_anthropic(self) -> bool {
        matches!(self, Self::Messages | Self::CountTokens)
    }

    /// Whether its streams are typed events (`event: <type>`) ending when
    /// the upstream closes, not `data:` chunks ending with `[DONE]`.
    pub const fn has_typed_events(self) -> bool {
        matches!(self, Self::Messages | Self::Responses)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a catalog model may serve (`endpoints = ["chat", ...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Chat,
    Embeddings,
    Messages,
    Responses,
}

impl Service {
    pub const ALL: [Self; 4] = [Self::Chat, Self::Embeddings, Self::Messages, Self::Responses];

    /// What a catalog entry that names none serves: the generating APIs.
    /// An embeddings model is declared as one.
    pub const DEFAULT: [Self; 3] = [Self::Chat, Self::Messages, Self::Responses];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::Responses => "responses",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|service| service.as_str() == name)
    }

    /// The path a client calls it on.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Messages => "/v1/messages",
            Self::Responses => "/v1/responses",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
