//! [`HttpProvider`]: a [`ChatProvider`] over HTTP, for any [`Wire`]. The
//! calls, their deadlines and memory budget, the error table, the stream
//! contract (the first chunk awaited, so an early failure is a real HTTP
//! error), each attempt's span, the Messages API sent as a chat completion
//! where the upstream has no Messages API, and the scrubbing of keys from
//! whatever the upstream says back are written once, here.

use std::future::ready;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use gatewayz_domain::model::translate;
use gatewayz_domain::{
    ChatError, ChatProvider, ChatRequest, ChatResponse, ChatStream, Credentials, Endpoint, Lease,
    ProviderCall, RequestContext, ResponseAction, ResponseCall, Route, ValidationError,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use super::client::HttpClient;
use super::errors::{self, Peer, ReadError};
use super::secrets::Secrets;
use super::stream;
use crate::traces::Attempt;

/// The largest answer read: a chat completion is far smaller.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What an adapter says of its upstream's wire: where a call goes and with
/// which headers, whom its failures blame, which keys it holds.
pub(crate) trait Wire: Send + Sync + 'static {
    /// Who answers a call on `route`.
    fn peer(&self, route: &Route) -> Peer;

    /// Refuses, before any call, an API the upstream does not serve on
    /// `route`.
    ///
    /// # Errors
    /// A 400 naming the model, with code `endpoint_not_supported`.
    fn served(&self, endpoint: Endpoint, route: &Route) -> Result<(), ChatError>;

    /// Whether a Messages API call on `route` is sent as the chat
    /// completion that asks the same, and its answer written back.
    fn messages_via_chat(&self, route: &Route) -> bool;

    /// The URL and headers of `call` (the body is the call's). `timeout` is
    /// how long the gateway waits, for upstreams that take the hint.
    ///
    /// # Errors
    /// When the call cannot be sent: a credential missing or unsendable.
    fn post(&self, call: &ProviderCall, timeout: Duration) -> Result<(Url, HeaderMap), ChatError>;

    /// The method, URL and headers of a Responses API call by id.
    ///
    /// # Errors
    /// As [`Self::post`], and when the id or the query cannot be in a URL.
    fn by_id(&self, call: &ResponseCall, timeout: Duration) -> Result<(Method, Url, HeaderMap), ChatError>;

    /// The keys a call with `credentials` on `route` carries, to be
    /// scrubbed from anything the upstream says back.
    fn secrets(&self, credentials: &Credentials, route: &Route) -> Secrets;

    /// Notes in the request's record the answer headers the client is to
    /// see.
    fn note_answer(&self, context: &RequestContext, headers: &HeaderMap) {
        let _ = (context, headers);
    }
}

/// A [`ChatProvider`] that calls an upstream over HTTP, as `W` says.
#[derive(Debug, Clone)]
pub struct HttpProvider<W> {
    http: HttpClient,
    wire: W,
}

impl<W> HttpProvider<W> {
    pub(crate) const fn from_parts(http: HttpClient, wire: W) -> Self {
        Self { http, wire }
    }
}

// The wires are this crate's own: the bound is sealed on purpose.
#[allow(private_bounds)]
impl<W: Wire> HttpProvider<W> {
    async fn call_complete(
        &self,
        call: &ProviderCall,
        traceparent: Option<&str>,
    ) -> Result<ChatResponse, ChatError> {
        let endpoint = call.request.endpoint();
        self.wire.served(endpoint, &call.route)?;
        let timeout = self.http.timeouts().request;
        let peer = self.wire.peer(&call.route);
        let (url, mut headers) = self.wire.post(call, timeout)?;
        trace(&mut headers, &call.context, traceparent);
        let request = self
            .http
            .client()?
            .post(url)
            .headers(headers)
            .body(call.body.clone())
            .timeout(timeout);
        let body = self.whole_answer(request, timeout, &call.context, &peer).await?;
        ChatResponse::parse(endpoint, body).map_err(|shape| {
            errors::invalid_response(
                format!("the answer is not {}: {shape}", answer_name(endpoint)),
                &peer,
            )
        })
    }

    async fn call_by_id(&self, call: &ResponseCall) -> Result<Bytes, ChatError> {
        self.wire.served(Endpoint::Responses, &call.route)?;
        let timeout = self.http.timeouts().request;
        let peer = self.wire.peer(&call.route);
        let (method, url, mut headers) = self.wire.by_id(call, timeout)?;
        trace(&mut headers, &call.context, None);
        let mut request = self
            .http
            .client()?
            .request(method, url)
            .headers(headers)
            .timeout(timeout);
        if call.action == ResponseAction::Cancel {
            request = request.body("{}");
        }
        let body = self.whole_answer(request, timeout, &call.context, &peer).await?;
        // Checked whole, never built as a tree: it is passed on as it came.
        let object = body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
        if !object || serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(errors::invalid_response("the answer is not a JSON object", &peer));
        }
        Ok(body)
    }

    /// The stream of chunks, once the upstream answered with an event
    /// stream.
    async fn call_stream(
        &self,
        call: &ProviderCall,
        traceparent: Option<&str>,
    ) -> Result<ChatStream, ChatError> {
        let endpoint = call.request.endpoint();
        self.wire.served(endpoint, &call.route)?;
        let super::settings::Timeouts { first_byte, idle, .. } = self.http.timeouts();
        let deadline = Instant::now() + first_byte;
        let peer = self.wire.peer(&call.route);
        let (url, mut headers) = self.wire.post(call, first_byte)?;
        trace(&mut headers, &call.context, traceparent);
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let send = self
            .http
            .client()?
            .post(url)
            .headers(headers)
            .body(call.body.clone())
            .send();
        let response = match timeout_at(deadline, send).await {
            Err(_) => return Err(errors::timeout(first_byte, &peer)),
            Ok(Err(error)) => return Err(errors::from_transport(&error, first_byte, &peer)),
            Ok(Ok(response)) => response,
        };
        self.wire.note_answer(&call.context, response.headers());
        if !response.status().is_success() {
            return Err(timeout_at(deadline, errors::from_status(response, &peer))
                .await
                .unwrap_or_else(|_| errors::timeout(first_byte, &peer)));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            return Err(errors::invalid_response(
                format!(
                    "a streaming request was answered with `{}`, not an event stream",
                    gatewayz_domain::text::quote(content_type)
                ),
                &peer,
            ));
        }
        Ok(stream::chunks(
            response.bytes_stream(),
            deadline,
            idle,
            call.context.budget.lease(),
            endpoint,
            peer,
        ))
    }

    /// Sends `request` and reads its whole answer within the budget: the
    /// upstream's failure, or the body of its success.
    async fn whole_answer(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
        context: &RequestContext,
        peer: &Peer,
    ) -> Result<Bytes, ChatError> {
        let response = request
            .send()
            .await
            .map_err(|error| errors::from_transport(&error, timeout, peer))?;
        self.wire.note_answer(context, response.headers());
        if !response.status().is_success() {
            return Err(errors::from_status(response, peer).await);
        }
        errors::read_within(response, MAX_RESPONSE_BYTES, &context.budget)
            .await
            .map_err(|error| match error {
                ReadError::Transport(error) => errors::from_transport(&error, timeout, peer),
                ReadError::TooLarge => errors::invalid_response(
                    format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
                    peer,
                ),
                ReadError::OverBudget(over) => ChatError::Overloaded(over),
            })
    }

    /// Whether `call` asks the Messages API of an upstream reached only by
    /// chat completions.
    fn via_chat(&self, call: &ProviderCall) -> bool {
        call.request.endpoint() == Endpoint::Messages && self.wire.messages_via_chat(&call.route)
    }
}

/// The trace headers: the attempt span's `traceparent` when traces are
/// exported, else the client's own, with its `tracestate`.
fn trace(headers: &mut HeaderMap, context: &RequestContext, traceparent: Option<&str>) {
    let parent = traceparent.or(context.traceparent.as_deref());
    if let Some(value) = parent.and_then(|value| HeaderValue::from_str(value).ok()) {
        headers.insert(TRACEPARENT, value);
        if let Some(tracestate) = context
            .tracestate
            .as_deref()
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            headers.insert(TRACESTATE, tracestate);
        }
    }
}

/// What an answer of `endpoint` is called in an error.
const fn answer_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat => "a chat.completion",
        Endpoint::Embeddings => "an embeddings list",
        Endpoint::Messages => "an Anthropic message",
        Endpoint::CountTokens => "an Anthropic token count",
        Endpoint::Responses => "a response",
    }
}

/// The URL of a Responses API call by id under `base` (an OpenAI-style
/// API's root, without `/`), its client's query passed on as it came.
pub(crate) fn by_id_url(base: &str, call: &ResponseCall) -> Result<Url, ChatError> {
    let mut url = format!("{base}/responses/{}", call.id);
    match call.action {
        ResponseAction::Retrieve | ResponseAction::Delete => {}
        ResponseAction::Cancel => url.push_str("/cancel"),
        ResponseAction::InputItems => url.push_str("/input_items"),
    }
    if let Some(query) = &call.query {
        url.push('?');
        url.push_str(query);
    }
    Url::parse(&url).map_err(|_| {
        ChatError::Invalid(ValidationError::new(
            "response_id",
            "The response id cannot be part of a URL",
        ))
    })
}

/// The method of a Responses API call by id.
pub(crate) const fn by_id_method(action: ResponseAction) -> Method {
    match action {
        ResponseAction::Retrieve | ResponseAction::InputItems => Method::GET,
        ResponseAction::Delete => Method::DELETE,
        ResponseAction::Cancel => Method::POST,
    }
}

/// `call` as the chat completion that asks the same, and the lease that
/// pays for its body while the call runs. The request is read as a JSON
/// tree to be rewritten: room for that tree is taken from the memory budget
/// first ([`translate::translation_cost`]), and given back once the chat
/// body is written.
fn as_chat(call: &ProviderCall) -> Result<(ProviderCall, Lease), ChatError> {
    let mut lease = call.context.budget.lease();
    lease
        .cover(translate::translation_cost(&call.body))
        .map_err(ChatError::Overloaded)?;
    let body = translate::chat_body(&call.body)?;
    // The tree is gone; the chat body is held while the call runs.
    lease.shrink_to(body.len());
    let chat = ProviderCall {
        request: ChatRequest::parse(body.clone())?,
        body,
        route: call.route.clone(),
        credentials: call.credentials.clone(),
        context: call.context.clone(),
    };
    Ok((chat, lease))
}

#[async_trait]
impl<W: Wire> ChatProvider for HttpProvider<W> {
    async fn complete(&self, call: ProviderCall) -> Result<ChatResponse, ChatError> {
        // The keys are gathered only for an error: an answer costs no copy.
        let scrub = |error| self.wire.secrets(&call.credentials, &call.route).scrub(error);
        if self.via_chat(&call) {
            // Refused as the API the client called, before it is translated.
            self.wire.served(Endpoint::Messages, &call.route)?;
            let (chat, _held) = as_chat(&call)?;
            let completion = self.complete(chat).await?;
            return translate::message(&completion).map_err(|shape| {
                scrub(errors::invalid_response(
                    format!("the chat completion cannot be read as a message: {shape}"),
                    &self.wire.peer(&call.route),
                ))
            });
        }
        let attempt = Attempt::start(&call);
        let traceparent = attempt.traceparent();
        // Every error passes the scrubber: any upstream text in it may hold a key.
        let answer = self
            .call_complete(&call, traceparent.as_deref())
            .instrument(attempt.span().clone())
            .await
            .map_err(scrub);
        match &answer {
            Ok(response) => attempt.answered(response),
            Err(error) => attempt.failed(error),
        }
        answer
    }

    async fn respond_by_id(&self, call: ResponseCall) -> Result<Bytes, ChatError> {
        self.call_by_id(&call)
            .await
            .map_err(|error| self.wire.secrets(&call.credentials, &call.route).scrub(error))
    }

    async fn stream(&self, call: ProviderCall) -> Result<ChatStream, ChatError> {
        let secrets = self.wire.secrets(&call.credentials, &call.route);
        if self.via_chat(&call) {
            self.wire.served(Endpoint::Messages, &call.route)?;
            let (chat, _held) = as_chat(&call)?;
            let events = translate::message_events(self.stream(chat).await?)
                .map(move |item| item.map_err(|error| secrets.scrub(error)))
                .boxed();
            return Ok(events);
        }
        let attempt = Attempt::start(&call);
        let traceparent = attempt.traceparent();
        let started = std::time::Instant::now();
        let called = self
            .call_stream(&call, traceparent.as_deref())
            .instrument(attempt.span().clone())
            .await;
        match called {
            Err(error) => {
                let error = secrets.scrub(error);
                attempt.failed(&error);
                Err(error)
            }
            Ok(chunks) => {
                let chunks = chunks
                    .map(move |item| item.map_err(|error| secrets.scrub(error)))
                    .boxed();
                // The span ends with the stream; the first chunk is timed
                // as it arrives.
                let mut chunks = attempt.stream(chunks, started);
                // Wait for the first chunk so that a failure before it is a
                // plain error with a real HTTP status, not an event in a 200
                // stream.
                match chunks.next().await {
                    None => Ok(futures::stream::empty().boxed()),
                    Some(Err(error)) => Err(error),
                    Some(Ok(first)) => Ok(futures::stream::once(ready(Ok(first))).chain(chunks).boxed()),
                }
            }
        }
    }
}
