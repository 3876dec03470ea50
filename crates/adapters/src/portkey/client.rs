//! [`PortkeyClient`]: one pooled HTTP client per thread, and the calls.

use std::future::ready;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use gatewayz_domain::model::translate;
use gatewayz_domain::{
    ChatError, ChatProvider, ChatRequest, ChatResponse, ChatStream, Endpoint, Lease, ProviderCall,
    ResponseAction, ResponseCall, Route, Service, UpstreamProvider, ValidationError,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Url};
use thread_local::ThreadLocal;
use tokio::time::{Instant, timeout_at};

use tracing::Instrument;

use super::errors::ReadError;
use super::secrets::Secrets;
use super::settings::{PortkeySettings, Timeouts};
use super::{errors, headers, stream};
use crate::traces::Attempt;

/// Why the adapter cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PortkeySetupError {
    #[error("PORTKEY_BASE_URL `{0}` cannot be a base for /chat/completions")]
    BaseUrl(String),
    #[error("PORTKEY_CUSTOM_HOST contains characters not allowed in an HTTP header")]
    CustomHost,
    #[error("{name} must be between 1 and {MAX_TIMEOUT_MS} ms, got {value}")]
    Timeout { name: &'static str, value: u64 },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The longest timeout accepted: a day.
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
/// The largest answer read: a chat completion is far smaller.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// A [`ChatProvider`] that calls Portkey's `/chat/completions`.
#[derive(Debug, Clone)]
pub struct PortkeyClient {
    /// One client per thread that calls it: a pooled connection's task runs
    /// on the thread that opened it, so a request served by one actix worker
    /// never waits on another worker's thread.
    clients: Arc<ThreadLocal<Client>>,
    /// Portkey's base URL, ending without `/`.
    base: Arc<str>,
    /// Each endpoint's URL, in [`Endpoint::ALL`]'s order.
    endpoints: Arc<[Url]>,
    custom_host: Option<HeaderValue>,
    timeouts: Timeouts,
}

impl PortkeyClient {
    /// Builds the adapter and its connection pool.
    ///
    /// # Errors
    /// A [`PortkeySetupError`] naming the setting that is unusable.
    pub fn new(settings: &PortkeySettings) -> Result<Self, PortkeySetupError> {
        let base = settings.portkey_base_url.as_str().trim_end_matches('/');
        let endpoints = Endpoint::ALL
            .iter()
            .map(|endpoint| Url::parse(&format!("{base}{}", endpoint.path())))
            .collect::<Result<Arc<[Url]>, _>>()
            .map_err(|_| PortkeySetupError::BaseUrl(settings.portkey_base_url.to_string()))?;
        let custom_host = settings
            .portkey_custom_host
            .as_deref()
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| PortkeySetupError::CustomHost)?;
        for (name, value) in [
            (
                "GATEWAYZ_UPSTREAM_CONNECT_TIMEOUT_MS",
                settings.gatewayz_upstream_connect_timeout_ms,
            ),
            (
                "GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS",
                settings.gatewayz_upstream_request_timeout_ms,
            ),
            (
                "GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS",
                settings.gatewayz_upstream_first_byte_timeout_ms,
            ),
            (
                "GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS",
                settings.gatewayz_upstream_idle_timeout_ms,
            ),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&value) {
                return Err(PortkeySetupError::Timeout { name, value });
            }
        }
        let timeouts = settings.timeouts();
        let client = build_client(timeouts)?;
        let clients = Arc::new(ThreadLocal::new());
        // The first client proves the settings; the others are built alike.
        clients.get_or(|| client);
        Ok(Self {
            clients,
            base: base.into(),
            endpoints,
            custom_host,
            timeouts,
        })
    }

    /// This thread's client.
    fn client(&self) -> Result<&Client, ChatError> {
        self.clients
            .get_or_try(|| build_client(self.timeouts))
            .map_err(|error| {
                ChatError::Unavailable(gatewayz_domain::UpstreamError::new(
                    gatewayz_domain::ErrorSource::Gateway,
                    None,
                    error.to_string(),
                ))
            })
    }

    /// The URL of `call`'s endpoint, once it is known that Portkey serves
    /// that API for the call's provider.
    fn url(&self, call: &ProviderCall) -> Result<Url, ChatError> {
        let endpoint = call.request.endpoint();
        served(endpoint, &call.route)?;
        // `endpoints` is built in `Endpoint::ALL`'s order, the variants'.
        Ok(self.endpoints[endpoint as usize].clone())
    }

    async fn call_complete(
        &self,
        call: &ProviderCall,
        traceparent: Option<&str>,
    ) -> Result<ChatResponse, ChatError> {
        let timeout = self.timeouts.request;
        let url = self.url(call)?;
        let mut headers = headers::of_call(call, self.custom_host.as_ref(), timeout.as_millis())?;
        headers::set_traceparent(&mut headers, traceparent);
        let request = self
            .client()?
            .post(url)
            .headers(headers)
            .body(call.body.clone())
            .timeout(timeout);
        let body = whole_answer(request, timeout, &call.context).await?;
        let endpoint = call.request.endpoint();
        ChatResponse::parse(endpoint, body).map_err(|shape| {
            errors::invalid_response(format!("the answer is not {}: {shape}", answer_name(endpoint)))
        })
    }

    /// A Responses API call by id, at the route's provider.
    async fn call_by_id(&self, call: &ResponseCall) -> Result<Bytes, ChatError> {
        if !matches!(
            call.route,
            Route::Portkey {
                provider: UpstreamProvider::OpenAi,
                ..
            }
        ) {
            return Err(not_served("the Responses API", &call.route));
        }
        let timeout = self.timeouts.request;
        let mut url = format!("{}/responses/{}", self.base, call.id);
        match call.action {
            ResponseAction::Retrieve | ResponseAction::Delete => {}
            ResponseAction::Cancel => url.push_str("/cancel"),
            ResponseAction::InputItems => url.push_str("/input_items"),
        }
        if let Some(query) = &call.query {
            url.push('?');
            url.push_str(query);
        }
        let url = Url::parse(&url).map_err(|_| {
            ChatError::Invalid(ValidationError::new(
                "response_id",
                "The response id cannot be part of a URL",
            ))
        })?;
        let method = match call.action {
            ResponseAction::Retrieve | ResponseAction::InputItems => reqwest::Method::GET,
            ResponseAction::Delete => reqwest::Method::DELETE,
            ResponseAction::Cancel => reqwest::Method::POST,
        };
        let headers = headers::of(
            &call.credentials,
            &call.route,
            &call.context,
            self.custom_host.as_ref(),
            timeout.as_millis(),
        )?;
        let mut request = self
            .client()?
            .request(method, url)
            .headers(headers)
            .timeout(timeout);
        if call.action == ResponseAction::Cancel {
            request = request.body("{}");
        }
        let body = whole_answer(request, timeout, &call.context).await?;
        // Checked whole, never built as a tree: it is passed on as it came.
        let object = body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
        if !object || serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(errors::invalid_response("the answer is not a JSON object"));
        }
        Ok(body)
    }

    /// The stream of chunks, once Portkey answered with an event stream.
    async fn call_stream(
        &self,
        call: &ProviderCall,
        traceparent: Option<&str>,
    ) -> Result<ChatStream, ChatError> {
        let Timeouts { first_byte, idle, .. } = self.timeouts;
        let deadline = Instant::now() + first_byte;
        let url = self.url(call)?;
        let mut headers = headers::of_call(call, self.custom_host.as_ref(), first_byte.as_millis())?;
        headers::set_traceparent(&mut headers, traceparent);
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let send = self
            .client()?
            .post(url)
            .headers(headers)
            .body(call.body.clone())
            .send();
        let response = match timeout_at(deadline, send).await {
            Err(_) => return Err(errors::timeout(first_byte)),
            Ok(Err(error)) => return Err(errors::from_transport(&error, first_byte)),
            Ok(Ok(response)) => response,
        };
        headers::note_passed_on_to(&call.context, response.headers());
        if !response.status().is_success() {
            return Err(timeout_at(deadline, errors::from_status(response))
                .await
                .unwrap_or_else(|_| errors::timeout(first_byte)));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            return Err(errors::invalid_response(format!(
                "a streaming request was answered with `{}`, not an event stream",
                gatewayz_domain::text::quote(content_type)
            )));
        }
        Ok(stream::chunks(
            response.bytes_stream(),
            deadline,
            idle,
            call.context.budget.lease(),
            call.request.endpoint(),
        ))
    }
}

/// Sends `request` and reads its whole answer within the budget: the
/// upstream's failure, or the body of its success.
async fn whole_answer(
    request: reqwest::RequestBuilder,
    timeout: std::time::Duration,
    context: &gatewayz_domain::RequestContext,
) -> Result<Bytes, ChatError> {
    let response = request
        .send()
        .await
        .map_err(|error| errors::from_transport(&error, timeout))?;
    headers::note_passed_on_to(context, response.headers());
    if !response.status().is_success() {
        return Err(errors::from_status(response).await);
    }
    errors::read_within(response, MAX_RESPONSE_BYTES, &context.budget)
        .await
        .map_err(|error| match error {
            ReadError::Transport(error) => errors::from_transport(&error, timeout),
            ReadError::TooLarge => {
                errors::invalid_response(format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"))
            }
            ReadError::OverBudget(over) => ChatError::Overloaded(over),
        })
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

/// Refuses, before any call, an API that Portkey does not serve for the
/// route's provider: Anthropic's token count is Anthropic's alone (a count
/// is never guessed), the Responses API OpenAI's (Portkey 1.15 answers the
/// others "not supported"). Chat completions and embeddings go to every
/// provider, and the Messages API too: translated to chat completions for
/// any provider but Anthropic ([`via_chat`]).
fn served(endpoint: Endpoint, route: &Route) -> Result<(), ChatError> {
    let Route::Portkey { provider, .. } = route else {
        return Ok(());
    };
    let service = endpoint.service();
    if serves(*provider, service)
        && (endpoint != Endpoint::CountTokens || *provider == UpstreamProvider::Anthropic)
    {
        return Ok(());
    }
    Err(match endpoint {
        Endpoint::CountTokens => not_served("Anthropic's token count", route),
        Endpoint::Responses => not_served("the Responses API", route),
        _ => not_served(service.path(), route),
    })
}

/// Whether the gateway serves `service` for `provider` through Portkey:
/// the catalog checks its models' `endpoints` against it.
pub fn serves(provider: UpstreamProvider, service: Service) -> bool {
    match service {
        Service::Chat | Service::Messages => true,
        // Anthropic has no embeddings API.
        Service::Embeddings => provider != UpstreamProvider::Anthropic,
        Service::Responses => provider == UpstreamProvider::OpenAi,
    }
}

/// Whether `call` asks the Messages API of a provider Portkey reaches only
/// by chat completions: it is sent as one, and its answer written back.
fn via_chat(call: &ProviderCall) -> bool {
    call.request.endpoint() == Endpoint::Messages
        && !matches!(
            call.route,
            Route::Portkey {
                provider: UpstreamProvider::Anthropic,
                ..
            }
        )
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

fn not_served(api: &str, route: &Route) -> ChatError {
    let provider = route.portkey_provider().map_or("demo", UpstreamProvider::name);
    ChatError::Invalid(
        ValidationError::new(
            "model",
            format!(
                "The gateway does not serve {api} for provider `{provider}` through Portkey: route this model to one that has it"
            ),
        )
        .with_code("endpoint_not_supported"),
    )
}

/// A pooled client with the gateway's timeouts.
fn build_client(timeouts: Timeouts) -> Result<Client, PortkeySetupError> {
    Client::builder()
        .user_agent(concat!("gatewayz/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeouts.connect)
        .tcp_nodelay(true)
        // A redirect would carry the Portkey and virtual keys to another
        // host: a 3xx is answered as the upstream failure it is.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        // Enough idle connections for steady traffic; the rest of a burst's
        // connections are closed when they come back, not kept 90 s.
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|error| {
            // reqwest says only "builder error"; the cause (no trust store,
            // say) is in the chain.
            let mut message = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                message = format!("{message}: {inner}");
                cause = inner.source();
            }
            PortkeySetupError::Client(message)
        })
}

#[async_trait]
impl ChatProvider for PortkeyClient {
    async fn complete(&self, call: ProviderCall) -> Result<ChatResponse, ChatError> {
        if via_chat(&call) {
            let (chat, _held) = as_chat(&call)?;
            let completion = self.complete(chat).await?;
            return translate::message(&completion).map_err(|shape| {
                Secrets::of(&call).scrub(errors::invalid_response(format!(
                    "the chat completion cannot be read as a message: {shape}"
                )))
            });
        }
        let attempt = Attempt::start(&call);
        let traceparent = attempt.traceparent();
        // Every error passes the scrubber: any upstream text in it may hold a key.
        let answer = self
            .call_complete(&call, traceparent.as_deref())
            .instrument(attempt.span().clone())
            .await
            .map_err(|error| Secrets::of(&call).scrub(error));
        match &answer {
            Ok(response) => attempt.answered(response),
            Err(error) => attempt.failed(error),
        }
        answer
    }

    async fn respond_by_id(&self, call: ResponseCall) -> Result<Bytes, ChatError> {
        self.call_by_id(&call)
            .await
            .map_err(|error| Secrets::new(&call.credentials, &call.route).scrub(error))
    }

    async fn stream(&self, call: ProviderCall) -> Result<ChatStream, ChatError> {
        if via_chat(&call) {
            let (chat, _held) = as_chat(&call)?;
            let secrets = Secrets::of(&call);
            let events = translate::message_events(self.stream(chat).await?)
                .map(move |item| item.map_err(|error| secrets.scrub(error)))
                .boxed();
            return Ok(events);
        }
        let secrets = Secrets::of(&call);
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
