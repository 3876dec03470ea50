//! [`PortkeyClient`]: the Portkey wire ([`PortkeyWire`]) on the shared HTTP
//! client: Portkey's URLs, which APIs it serves for which provider, and its
//! headers.

use std::time::Duration;

use gatewayz_domain::{
    ChatError, Credentials, Endpoint, ProviderCall, ResponseCall, Route, Service, UpstreamProvider,
    ValidationError,
};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};

use super::headers;
use super::settings::PortkeySettings;
use crate::http::secrets::Secrets;
use crate::http::{HttpClient, HttpProvider, Peer, Wire};

/// Why the adapter cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PortkeySetupError {
    #[error("PORTKEY_BASE_URL `{0}` cannot be a base for /chat/completions")]
    BaseUrl(String),
    #[error("PORTKEY_CUSTOM_HOST contains characters not allowed in an HTTP header")]
    CustomHost,
}

/// Calls Portkey's gateway, on the shared HTTP client.
pub type PortkeyClient = HttpProvider<PortkeyWire>;

/// Portkey's wire: its URLs and headers.
#[derive(Debug, Clone)]
pub struct PortkeyWire {
    /// Portkey's base URL, ending without `/`.
    base: Box<str>,
    /// Each endpoint's URL, in [`Endpoint::ALL`]'s order.
    endpoints: Box<[Url]>,
    custom_host: Option<HeaderValue>,
}

impl PortkeyClient {
    /// Builds the adapter on `http`, the client every upstream shares.
    ///
    /// # Errors
    /// A [`PortkeySetupError`] naming the setting that is unusable.
    pub fn new(settings: &PortkeySettings, http: HttpClient) -> Result<Self, PortkeySetupError> {
        let base = settings.portkey_base_url.as_str().trim_end_matches('/');
        let endpoints = Endpoint::ALL
            .iter()
            .map(|endpoint| Url::parse(&format!("{base}{}", endpoint.path())))
            .collect::<Result<Box<[Url]>, _>>()
            .map_err(|_| PortkeySetupError::BaseUrl(settings.portkey_base_url.to_string()))?;
        let custom_host = settings
            .portkey_custom_host
            .as_deref()
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| PortkeySetupError::CustomHost)?;
        let wire = PortkeyWire {
            base: base.into(),
            endpoints,
            custom_host,
        };
        Ok(Self::from_parts(http, wire))
    }
}

impl Wire for PortkeyWire {
    fn peer(&self, _: &Route) -> Peer {
        Peer::Portkey
    }

    fn served(&self, endpoint: Endpoint, route: &Route) -> Result<(), ChatError> {
        served(endpoint, route)
    }

    /// Portkey has the Messages API for Anthropic only.
    fn messages_via_chat(&self, route: &Route) -> bool {
        route.portkey_provider() != Some(UpstreamProvider::Anthropic)
    }

    fn post(&self, call: &ProviderCall, timeout: Duration) -> Result<(Url, HeaderMap), ChatError> {
        // `endpoints` is built in `Endpoint::ALL`'s order, the variants'.
        let url = self.endpoints[call.request.endpoint() as usize].clone();
        let headers = headers::of_call(call, self.custom_host.as_ref(), timeout.as_millis())?;
        Ok((url, headers))
    }

    fn by_id(&self, call: &ResponseCall, timeout: Duration) -> Result<(Method, Url, HeaderMap), ChatError> {
        let url = crate::http::by_id_url(&self.base, call)?;
        let headers = headers::of(
            &call.credentials,
            &call.route,
            &call.context,
            self.custom_host.as_ref(),
            timeout.as_millis(),
        )?;
        Ok((crate::http::by_id_method(call.action), url, headers))
    }

    fn secrets(&self, credentials: &Credentials, route: &Route) -> Secrets {
        Secrets::new(credentials, route)
    }

    fn note_answer(&self, context: &gatewayz_domain::RequestContext, answer: &HeaderMap) {
        headers::note_passed_on_to(context, answer);
    }
}

/// Refuses, before any call, an API that Portkey does not serve for the
/// route's provider: Anthropic's token count is Anthropic's alone (a count
/// is never guessed), the Responses API OpenAI's (Portkey 1.15 answers the
/// others "not supported"). Chat completions and embeddings go to every
/// provider, and the Messages API too: translated to chat completions for
/// any provider but Anthropic.
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
