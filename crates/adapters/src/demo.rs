//! A deterministic in-process provider: it answers every API the gateway
//! serves with no network and no account, by echoing the last user message
//! ("You said: ..."), with token counts and, when streaming, the events a
//! real upstream sends, word by word.
//!
//! - `chat`: chat completions.
//! - `embeddings`: unit vectors derived from each input's content.
//! - `messages`: Anthropic's Messages, and its token count.
//! - `responses`: OpenAI's Responses, remembered for their by-id calls
//!   (`stored`).
//! - `echo`, `hashing`, `wire`: what they share.
//!
//! The same request gets the same answer, but for the ids and times an API
//! needs unique.

mod chat;
mod echo;
mod embeddings;
mod hashing;
mod messages;
mod responses;
mod stored;
mod wire;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use gatewayz_domain::{
    ChatError, ChatProvider, ChatResponse, ChatStream, Endpoint, ProviderCall, ResponseCall, ValidationError,
};

pub use self::echo::MAX_ANSWER_BYTES;

/// The `demo` provider. Needs no account and no network.
///
/// It remembers the Responses API responses it made in the process (the
/// last 1024, within 64 MiB), as an upstream account does: every
/// `DemoProvider` value shares them, so that it stays a plain value.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoProvider;

#[async_trait]
impl ChatProvider for DemoProvider {
    async fn complete(&self, call: ProviderCall) -> Result<ChatResponse, ChatError> {
        match call.request.endpoint() {
            Endpoint::Chat => chat::complete(&call),
            Endpoint::Embeddings => embeddings::complete(&call),
            Endpoint::Messages => messages::complete(&call),
            Endpoint::CountTokens => messages::count_tokens(&call),
            Endpoint::Responses => responses::create(&call, stored::process_memory()),
        }
    }

    async fn stream(&self, call: ProviderCall) -> Result<ChatStream, ChatError> {
        match call.request.endpoint() {
            Endpoint::Chat => Ok(futures::stream::iter(chat::stream(&call)?).boxed()),
            Endpoint::Messages => Ok(futures::stream::iter(messages::stream(&call)?).boxed()),
            Endpoint::Responses => {
                let events = responses::stream(&call, stored::process_memory())?;
                Ok(futures::stream::iter(events).boxed())
            }
            endpoint @ (Endpoint::Embeddings | Endpoint::CountTokens) => {
                Err(ChatError::Invalid(ValidationError::new(
                    "stream",
                    format!("`/v1{}` answers are not streamed", endpoint.path()),
                )))
            }
        }
    }

    async fn respond_by_id(&self, call: ResponseCall) -> Result<Bytes, ChatError> {
        stored::respond_by_id(stored::process_memory(), &call)
    }
}

#[cfg(test)]
mod testing {
    //! Calls as the domain makes them, for the tests of every API.

    use gatewayz_domain::{ChatChunk, ChatRequest, Credentials, RequestContext, Route, UpstreamEdits};
    use serde_json::Value;

    use super::wire::to_bytes;
    use super::*;

    /// A call to `endpoint` as the domain makes it: the upstream body.
    pub fn call_to(endpoint: Endpoint, body: &Value) -> ProviderCall {
        let request = ChatRequest::parse_for(endpoint, to_bytes(body)).unwrap();
        let body = request.upstream_body(UpstreamEdits {
            model: request.model(),
            max_tokens: None,
            stream_usage: false,
        });
        ProviderCall {
            request,
            body,
            route: Route::Demo,
            credentials: Credentials::None,
            context: RequestContext::new("req-1"),
        }
    }

    pub fn value(json: &Bytes) -> Value {
        serde_json::from_slice(json).unwrap()
    }

    /// Every event of a stream, as JSON, once each was read as its API's.
    pub fn events(chunks: impl Iterator<Item = Result<ChatChunk, ChatError>>) -> Vec<Value> {
        chunks.map(|chunk| value(chunk.unwrap().json())).collect()
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use serde_json::{Value, json};

    use super::testing::{call_to, value};
    use super::*;

    #[tokio::test]
    async fn each_endpoint_is_answered_as_its_api_answers() {
        let cases = [
            (
                Endpoint::Chat,
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                "choices",
            ),
            (Endpoint::Embeddings, json!({"model": "m", "input": "hi"}), "data"),
            (
                Endpoint::Messages,
                json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}),
                "content",
            ),
            (
                Endpoint::CountTokens,
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                "input_tokens",
            ),
            (
                Endpoint::Responses,
                json!({"model": "m", "input": "hi"}),
                "output",
            ),
        ];
        for (endpoint, body, member) in cases {
            let answer = DemoProvider.complete(call_to(endpoint, &body)).await.unwrap();
            assert!(value(&answer.json()).get(member).is_some(), "{endpoint}");
        }
    }

    #[tokio::test]
    async fn embeddings_and_token_counts_are_not_streamed() {
        for (endpoint, body) in [
            (Endpoint::Embeddings, json!({"model": "m", "input": "hi"})),
            (
                Endpoint::CountTokens,
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            ),
        ] {
            let error = DemoProvider.stream(call_to(endpoint, &body)).await.err().unwrap();
            assert!(
                matches!(error, ChatError::Invalid(ref invalid) if invalid.param.as_deref() == Some("stream"))
            );
        }
    }

    #[tokio::test]
    async fn a_streamed_response_is_remembered_for_its_calls_by_id() {
        let body = json!({"model": "m", "input": "hi", "stream": true});
        let events: Vec<Value> = DemoProvider
            .stream(call_to(Endpoint::Responses, &body))
            .await
            .unwrap()
            .map_ok(|chunk| value(chunk.json()))
            .try_collect()
            .await
            .unwrap();
        let completed = events.last().unwrap()["response"].clone();
        let call = ResponseCall {
            action: gatewayz_domain::ResponseAction::Retrieve,
            id: completed["id"].as_str().unwrap().to_owned(),
            query: None,
            route: gatewayz_domain::Route::Demo,
            credentials: gatewayz_domain::Credentials::None,
            context: gatewayz_domain::RequestContext::new("req-2"),
        };
        let stored = DemoProvider.respond_by_id(call).await.unwrap();
        assert_eq!(value(&stored), completed);
    }
}
