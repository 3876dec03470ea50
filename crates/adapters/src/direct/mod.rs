//! The direct adapter: OpenAI-compatible servers called without Portkey
//! (vLLM, Ollama, llama.cpp's server, TGI, OpenAI itself, Azure OpenAI), on
//! the same HTTP client, calls, error table and stream reader as Portkey
//! ([`crate::http`]). This module is their wire: each upstream's URLs, its
//! key and its static headers, as the catalog declares them.

mod upstream;

use std::sync::Arc;
use std::time::Duration;

use gatewayz_domain::{
    ChatError, Credentials, Endpoint, ErrorSource, ProviderCall, ResponseCall, Route, UpstreamError,
    ValidationError,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use crate::http::secrets::Secrets;
use crate::http::{HttpClient, HttpProvider, Peer, Wire};
pub use upstream::{DirectUpstream, UpstreamSpec};

/// Calls OpenAI-compatible servers directly, on the shared HTTP client.
pub type DirectClient = HttpProvider<DirectWire>;

/// The direct upstreams' wire: each upstream the catalog declares, by name.
#[derive(Debug, Clone, Default)]
pub struct DirectWire {
    upstreams: Arc<[DirectUpstream]>,
}

impl DirectClient {
    /// Calls `upstreams` on `http`, the client every upstream shares.
    pub fn new(http: HttpClient, upstreams: Vec<DirectUpstream>) -> Self {
        Self::from_parts(
            http,
            DirectWire {
                upstreams: upstreams.into(),
            },
        )
    }
}

impl DirectWire {
    /// The upstream `route` names.
    fn upstream(&self, route: &Route) -> Result<&DirectUpstream, ChatError> {
        let name = route.direct_upstream().map_or("", |name| &**name);
        self.upstreams
            .iter()
            .find(|upstream| &**upstream.name() == name)
            .ok_or_else(|| {
                // The catalog names every upstream it routes to: only a
                // gateway wired wrong gets here.
                ChatError::Unavailable(UpstreamError::new(
                    ErrorSource::Gateway,
                    None,
                    format!("no direct upstream is named `{name}`"),
                ))
            })
    }
}

impl Wire for DirectWire {
    fn peer(&self, route: &Route) -> Peer {
        Peer::Direct(route.direct_upstream().cloned().unwrap_or_else(|| "".into()))
    }

    fn served(&self, endpoint: Endpoint, route: &Route) -> Result<(), ChatError> {
        let upstream = self.upstream(route)?;
        if endpoint != Endpoint::CountTokens && upstream.serves(endpoint.service()) {
            return Ok(());
        }
        let api = match endpoint {
            Endpoint::CountTokens => "Anthropic's token count",
            Endpoint::Responses => "the Responses API",
            other => other.service().path(),
        };
        Err(ChatError::Invalid(
            ValidationError::new(
                "model",
                format!(
                    "The gateway does not serve {api} for upstream `{}`: route this model to one that has it",
                    upstream.name()
                ),
            )
            .with_code("endpoint_not_supported"),
        ))
    }

    /// An OpenAI-compatible server has no Messages API: a Messages call goes
    /// as a chat completion.
    fn messages_via_chat(&self, _: &Route) -> bool {
        true
    }

    fn post(&self, call: &ProviderCall, _: Duration) -> Result<(Url, HeaderMap), ChatError> {
        let upstream = self.upstream(&call.route)?;
        let url = upstream.url(call)?;
        Ok((url, upstream.headers(&call.context)))
    }

    fn by_id(&self, call: &ResponseCall, _: Duration) -> Result<(Method, Url, HeaderMap), ChatError> {
        let upstream = self.upstream(&call.route)?;
        let url = upstream.by_id_url(call)?;
        Ok((
            crate::http::by_id_method(call.action),
            url,
            upstream.headers(&call.context),
        ))
    }

    fn secrets(&self, credentials: &Credentials, route: &Route) -> Secrets {
        let key = self.upstream(route).ok().and_then(DirectUpstream::key);
        Secrets::new(credentials, route).and(key)
    }
}
