//! One direct upstream: where it is, how it is called (OpenAI's paths, or
//! Azure OpenAI's deployment paths and `api-key` header), its key, its
//! static headers and the APIs it offers.

use std::borrow::Cow;
use std::sync::Arc;

use gatewayz_domain::{
    ChatError, Endpoint, ProviderCall, RequestContext, ResponseCall, Service, ValidationError,
};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::http::secrets::{bearer, sensitive};

const API_KEY: HeaderName = HeaderName::from_static("api-key");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers a catalog may not set as static `headers`: credentials travel
/// only from `api_key_env`; the framing and hop-by-hop headers are the HTTP
/// client's, the request id and trace context the gateway's.
const RESERVED: [&str; 18] = [
    "authorization",
    "api-key",
    "x-api-key",
    "proxy-authorization",
    "cookie",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "expect",
    "accept-encoding",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// The APIs an upstream offers unless the catalog says: chat completions
/// (and the Messages API, sent as chat completions) and embeddings. The
/// Responses API only where the server has it, so only when listed.
pub const DEFAULT_SERVICES: [Service; 3] = [Service::Chat, Service::Embeddings, Service::Messages];

/// A direct upstream as the catalog declares it.
#[derive(Default)]
pub struct UpstreamSpec {
    /// Its name: `@<name>/<model>`, logs and metric labels use it.
    pub name: String,
    /// The API's root, e.g. `http://vllm:8000/v1`; for Azure OpenAI, the
    /// resource's endpoint, e.g. `https://my-resource.openai.azure.com`.
    pub base_url: String,
    /// Its key, read at start from the variable `api_key_env` names.
    pub api_key: Option<SecretString>,
    /// Sent with every call, as they are: no secrets.
    pub headers: Vec<(String, String)>,
    /// Azure OpenAI's `api-version`: its presence makes the upstream an
    /// Azure one (deployment paths, `api-key` header).
    pub api_version: Option<String>,
    /// The APIs it offers ([`DEFAULT_SERVICES`] when `None`).
    pub services: Option<Vec<Service>>,
}

impl std::fmt::Debug for UpstreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor the static headers' values.
        f.debug_struct("UpstreamSpec")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

/// A direct upstream, checked and ready to call.
#[derive(Clone)]
pub struct DirectUpstream {
    name: Arc<str>,
    /// The API's root, without a trailing `/`.
    base: Box<str>,
    /// Its path, without a trailing `/` (Azure's paths go below it).
    root: Box<str>,
    /// Each endpoint's URL, in [`Endpoint::ALL`]'s order (OpenAI's paths;
    /// unused for Azure, whose paths name the deployment).
    endpoints: Box<[Url]>,
    azure: Option<Box<str>>,
    key: Option<SecretString>,
    /// The headers every call carries: the content type, the key, the
    /// static ones.
    headers: HeaderMap,
    services: Box<[Service]>,
}

impl std::fmt::Debug for DirectUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor the static headers' values.
        f.debug_struct("DirectUpstream")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("azure", &self.azure.is_some())
            .field("key", &self.key.is_some())
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl DirectUpstream {
    /// Checks `spec`.
    ///
    /// # Errors
    /// What is wrong with it, naming the field (`base_url`, `headers`,
    /// `api_version`) and never a secret.
    pub fn new(spec: UpstreamSpec) -> Result<Self, (&'static str, String)> {
        let base = spec.base_url.trim().trim_end_matches('/');
        // A base is quoted back only once it is known to carry no credential.
        let parsed = Url::parse(base).map_err(|error| ("base_url", format!("is not a URL: {error}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err((
                "base_url",
                "must not carry credentials: give the key in api_key_env".into(),
            ));
        }
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(("base_url", format!("`{base}` is not an http:// or https:// URL")));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err((
                "base_url",
                format!("`{base}` must not carry a query or a fragment"),
            ));
        }
        let endpoints = Endpoint::ALL
            .iter()
            .map(|endpoint| Url::parse(&format!("{base}{}", endpoint.path())))
            .collect::<Result<Box<[Url]>, _>>()
            .map_err(|error| ("base_url", format!("`{base}` cannot be a base: {error}")))?;
        let root = parsed.path().trim_end_matches('/').into();
        let azure = match spec.api_version {
            Some(version) if version.trim().is_empty() => {
                return Err(("api_version", "must not be empty".into()));
            }
            Some(version)
                if !version
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') =>
            {
                return Err((
                    "api_version",
                    format!("`{version}` is not an API version (e.g. 2024-10-21)"),
                ));
            }
            other => other.map(String::into_boxed_str),
        };
        let mut headers = HeaderMap::with_capacity(spec.headers.len() + 3);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in spec.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ("headers", format!("`{name}` is not a header name")))?;
            if RESERVED.contains(&header.as_str()) {
                return Err((
                    "headers",
                    format!(
                        "`{name}` cannot be a static header: the gateway sets it, and a key goes in api_key_env"
                    ),
                ));
            }
            let value = HeaderValue::from_str(&value).map_err(|_| {
                (
                    "headers",
                    format!("the value of `{name}` cannot be sent in a header"),
                )
            })?;
            headers.append(header, value);
        }
        if let Some(key) = &spec.api_key {
            let value = match azure {
                Some(_) => (API_KEY, sensitive(key.expose_secret())),
                None => (AUTHORIZATION, bearer(key)),
            };
            let (name, Ok(value)) = value else {
                return Err((
                    "api_key_env",
                    "the key holds characters that cannot be sent".into(),
                ));
            };
            headers.insert(name, value);
        }
        let services = spec.services.unwrap_or_else(|| DEFAULT_SERVICES.to_vec());
        if services.contains(&Service::Messages) && !services.contains(&Service::Chat) {
            return Err((
                "endpoints",
                "`messages` is sent to the upstream as chat completions: list `chat` too".into(),
            ));
        }
        Ok(Self {
            name: spec.name.into(),
            base: base.into(),
            root,
            endpoints,
            azure,
            key: spec.api_key,
            headers,
            services: services.into_boxed_slice(),
        })
    }

    pub const fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether it offers `service` (the Messages API wherever it offers chat
    /// completions: it is sent as one).
    pub fn serves(&self, service: Service) -> bool {
        let service = match service {
            Service::Messages => Service::Chat,
            other => other,
        };
        self.services.contains(&service)
    }

    pub(super) const fn key(&self) -> Option<&SecretString> {
        self.key.as_ref()
    }

    /// The headers of a call: its own, and the request id.
    pub(super) fn headers(&self, context: &RequestContext) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Ok(id) = HeaderValue::from_str(&context.request_id) {
            headers.insert(REQUEST_ID, id);
        }
        headers
    }

    /// Where `call` goes: OpenAI's path under the base, or Azure's
    /// deployment path for the call's model.
    pub(super) fn url(&self, call: &ProviderCall) -> Result<Url, ChatError> {
        let endpoint = call.request.endpoint();
        let Some(version) = &self.azure else {
            // `endpoints` is built in `Endpoint::ALL`'s order, the variants'.
            return Ok(self.endpoints[endpoint as usize].clone());
        };
        let model = upstream_model(&call.body);
        if endpoint != Endpoint::Responses && matches!(&*model, "" | "." | "..") {
            // Not a deployment's name: a path segment that would vanish.
            return Err(ChatError::Invalid(ValidationError::new(
                "model",
                format!("`{model}` cannot be an Azure OpenAI deployment's name"),
            )));
        }
        let mut url = self.endpoints[Endpoint::Chat as usize].clone();
        url.set_path(&self.root);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("openai");
            match endpoint {
                Endpoint::Responses => {
                    segments.push("responses");
                }
                _ => {
                    // Azure names the deployment in the path: the model the
                    // body names is the deployment's.
                    segments
                        .push("deployments")
                        .push(&model)
                        .extend(endpoint.path().split('/').filter(|part| !part.is_empty()));
                }
            }
        }
        url.query_pairs_mut().append_pair("api-version", version);
        Ok(url)
    }

    /// Where a Responses API call by id goes.
    pub(super) fn by_id_url(&self, call: &ResponseCall) -> Result<Url, ChatError> {
        let Some(version) = &self.azure else {
            return crate::http::by_id_url(&self.base, call);
        };
        let mut url = crate::http::by_id_url(&format!("{}/openai", self.base), call)?;
        // The catalog's `api-version` is the one Azure gets: a client's own,
        // however it is spelt or escaped, is dropped from its query (read
        // decoded, as Azure reads it), the rest passed on.
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| !name.trim().eq_ignore_ascii_case("api-version"))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        url.set_query(None);
        url.query_pairs_mut()
            .extend_pairs(kept)
            .append_pair("api-version", version);
        Ok(url)
    }
}

/// The `model` member of an upstream body, read without building the rest.
fn upstream_model(body: &[u8]) -> Cow<'_, str> {
    #[derive(Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: Cow<'a, str>,
    }
    serde_json::from_slice::<Model<'_>>(body).map_or(Cow::Borrowed(""), |read| read.model)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use gatewayz_domain::{ChatRequest, Credentials, Route};

    use super::*;

    fn spec(base_url: &str) -> UpstreamSpec {
        UpstreamSpec {
            name: "up".into(),
            base_url: base_url.into(),
            ..UpstreamSpec::default()
        }
    }

    fn call(endpoint: Endpoint, body: &str) -> ProviderCall {
        let body = Bytes::from(body.to_owned());
        ProviderCall {
            request: ChatRequest::parse_for(endpoint, body.clone()).unwrap(),
            body,
            route: Route::Direct {
                upstream: "up".into(),
            },
            credentials: Credentials::None,
            context: RequestContext::new("req-1"),
        }
    }

    const CHAT: &str = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#;

    #[test]
    fn an_openai_compatible_upstream_is_called_on_openais_paths_under_its_base() {
        let upstream = DirectUpstream::new(spec("http://vllm:8000/v1/")).unwrap();
        let url = upstream.url(&call(Endpoint::Chat, CHAT)).unwrap();
        assert_eq!(url.as_str(), "http://vllm:8000/v1/chat/completions");
        let embeddings = call(Endpoint::Embeddings, r#"{"model": "e", "input": "x"}"#);
        assert_eq!(
            upstream.url(&embeddings).unwrap().as_str(),
            "http://vllm:8000/v1/embeddings"
        );
    }

    #[test]
    fn an_azure_upstream_is_called_on_the_deployments_path_with_its_api_version() {
        let upstream = DirectUpstream::new(UpstreamSpec {
            api_version: Some("2024-10-21".into()),
            api_key: Some("azure-key-123".into()),
            ..spec("https://res.openai.azure.com")
        })
        .unwrap();
        let url = upstream.url(&call(Endpoint::Chat, CHAT)).unwrap();
        assert_eq!(
            url.as_str(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        // A deployment name is one path segment, whatever it holds.
        let odd = call(Endpoint::Embeddings, r#"{"model": "team/emb?x", "input": "x"}"#);
        assert_eq!(
            upstream.url(&odd).unwrap().as_str(),
            "https://res.openai.azure.com/openai/deployments/team%2Femb%3Fx/embeddings?api-version=2024-10-21"
        );
        let headers = upstream.headers(&RequestContext::new("req-1"));
        assert_eq!(headers["api-key"], "azure-key-123");
        assert!(headers["api-key"].is_sensitive());
        assert!(!headers.contains_key(AUTHORIZATION));
    }

    #[test]
    fn a_key_goes_as_a_bearer_token_with_the_static_headers_and_the_request_id() {
        let upstream = DirectUpstream::new(UpstreamSpec {
            api_key: Some("sk-direct-1".into()),
            headers: vec![("x-team".into(), "ml".into())],
            ..spec("http://vllm:8000/v1")
        })
        .unwrap();
        let headers = upstream.headers(&RequestContext::new("req-9"));
        assert_eq!(headers[AUTHORIZATION], "Bearer sk-direct-1");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert_eq!(headers["x-team"], "ml");
        assert_eq!(headers["x-request-id"], "req-9");
        // Neither the key nor a header's value is printed.
        let printed = format!("{upstream:?}");
        assert!(
            !printed.contains("sk-direct-1") && !printed.contains("ml\""),
            "{printed}"
        );
    }

    #[test]
    fn what_cannot_be_a_direct_upstream_is_refused_naming_the_field() {
        let cases = [
            (spec("vllm:8000"), "base_url"),
            (spec("ftp://host/v1"), "base_url"),
            (spec("http://user:pw@host/v1"), "base_url"),
            (spec("http://:s3cret@host/v1"), "base_url"),
            (spec("http://host/v1?x=1"), "base_url"),
            (
                UpstreamSpec {
                    headers: vec![("Authorization".into(), "Bearer x".into())],
                    ..spec("http://host/v1")
                },
                "headers",
            ),
            (
                UpstreamSpec {
                    headers: vec![("bad name".into(), "x".into())],
                    ..spec("http://host/v1")
                },
                "headers",
            ),
            (
                UpstreamSpec {
                    headers: vec![("x-a".into(), "line\nbreak".into())],
                    ..spec("http://host/v1")
                },
                "headers",
            ),
            (
                UpstreamSpec {
                    api_version: Some("2024/10".into()),
                    ..spec("http://host")
                },
                "api_version",
            ),
        ];
        for (spec, field) in cases {
            let base = spec.base_url.clone();
            let error = DirectUpstream::new(spec).unwrap_err();
            assert_eq!(error.0, field, "{base}: {}", error.1);
        }
    }

    #[test]
    fn the_messages_api_is_offered_wherever_chat_is_and_responses_only_when_listed() {
        let default = DirectUpstream::new(spec("http://host/v1")).unwrap();
        assert!(default.serves(Service::Chat) && default.serves(Service::Messages));
        assert!(default.serves(Service::Embeddings));
        assert!(!default.serves(Service::Responses));
        let listed = DirectUpstream::new(UpstreamSpec {
            services: Some(vec![Service::Chat, Service::Responses]),
            ..spec("http://host/v1")
        })
        .unwrap();
        assert!(listed.serves(Service::Responses) && listed.serves(Service::Messages));
        assert!(!listed.serves(Service::Embeddings));
        let error = DirectUpstream::new(UpstreamSpec {
            services: Some(vec![Service::Messages, Service::Embeddings]),
            ..spec("http://host/v1")
        })
        .unwrap_err();
        assert_eq!(error.0, "endpoints", "{}", error.1);
    }
}
