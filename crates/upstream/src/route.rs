//! Which API a request's path names: OpenAI's (with or without `/v1`),
//! Anthropic's, or Azure OpenAI's (`/openai/deployments/{deployment}/...`
//! and `/openai/responses...`, each with an `api-version` query parameter).

use std::borrow::Cow;

use hyper::Method;

use crate::errors::Dialect;

/// Whose paths a request is on, and so which header carries its key:
/// `Authorization: Bearer` (OpenAI, and Anthropic's paths here) or
/// `api-key` (Azure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Azure,
}

impl Family {
    /// Azure for `/openai` and everything under it.
    pub fn of(path: &str) -> Self {
        match path.strip_prefix("/openai") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => Self::Azure,
            _ => Self::OpenAi,
        }
    }
}

/// An operation, whatever the path that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Chat,
    Embeddings,
    Messages,
    CountTokens,
    CreateResponse,
    /// `GET` or `DELETE /responses/{id}`.
    StoredResponse(&'a str),
    CancelResponse(&'a str),
    InputItems(&'a str),
}

impl<'a> Route<'a> {
    /// A path of OpenAI's or Anthropic's, with or without `/v1`.
    fn of(path: &'a str) -> Option<Self> {
        let path = path
            .strip_prefix("/v1")
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path);
        Some(match path {
            "/chat/completions" => Self::Chat,
            "/embeddings" => Self::Embeddings,
            "/messages" => Self::Messages,
            "/messages/count_tokens" => Self::CountTokens,
            _ => return Self::responses(path),
        })
    }

    /// `/responses` and the paths under it.
    fn responses(path: &'a str) -> Option<Self> {
        if path == "/responses" {
            return Some(Self::CreateResponse);
        }
        let rest = path.strip_prefix("/responses/")?;
        match rest.split_once('/') {
            None if !rest.is_empty() => Some(Self::StoredResponse(rest)),
            Some((id, "cancel")) if !id.is_empty() => Some(Self::CancelResponse(id)),
            Some((id, "input_items")) if !id.is_empty() => Some(Self::InputItems(id)),
            _ => None,
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Self::Messages | Self::CountTokens => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    /// `None` when `method` is allowed, else what to use instead.
    pub fn refuses(self, method: &Method) -> Option<&'static str> {
        match self {
            Self::StoredResponse(_) => {
                (method != Method::GET && method != Method::DELETE).then_some("use GET or DELETE")
            }
            Self::InputItems(_) => (method != Method::GET).then_some("use GET"),
            _ => (method != Method::POST).then_some("use POST"),
        }
    }
}

/// A request's path, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub route: Route<'a>,
    pub family: Family,
    /// The deployment an Azure deployment path names, percent-decoded.
    pub deployment: Option<Cow<'a, str>>,
}

impl<'a> Target<'a> {
    /// The chat completions path of OpenAI's, the hot path.
    pub const CHAT: Target<'static> = Target {
        route: Route::Chat,
        family: Family::OpenAi,
        deployment: None,
    };

    /// What `path` names, if anything. An Azure path without an
    /// `api-version` in `query` names nothing, as on Azure.
    pub fn of(path: &'a str, query: Option<&str>) -> Option<Self> {
        if Family::of(path) == Family::OpenAi {
            return Route::of(path).map(|route| Self {
                route,
                family: Family::OpenAi,
                deployment: None,
            });
        }
        if !has_api_version(query) {
            return None;
        }
        let rest = path.strip_prefix("/openai")?;
        let Some(rest) = rest.strip_prefix("/deployments/") else {
            return Route::responses(rest).map(|route| Self {
                route,
                family: Family::Azure,
                deployment: None,
            });
        };
        let (deployment, operation) = rest.split_once('/')?;
        let route = match operation {
            "chat/completions" => Route::Chat,
            "embeddings" => Route::Embeddings,
            _ => return None,
        };
        let deployment = percent_decoded(deployment).filter(|deployment| !deployment.is_empty())?;
        Some(Self {
            route,
            family: Family::Azure,
            deployment: Some(deployment),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.route.dialect()
    }
}

/// Whether the query has an `api-version` parameter; any value will do.
fn has_api_version(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(name, _)| name) == "api-version")
    })
}

/// A path segment with its `%XX` escapes decoded; `None` when an escape is
/// malformed or the result is not UTF-8. Borrowed when there is none.
fn percent_decoded(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let mut decoded = Vec::with_capacity(segment.len());
    let mut bytes = segment.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            decoded.push(byte);
            continue;
        }
        let high = bytes.next().and_then(hex_digit)?;
        let low = bytes.next().and_then(hex_digit)?;
        decoded.push(high << 4 | low);
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<Route<'_>> {
        Target::of(path, None).map(|target| target.route)
    }

    fn azure(path_and_query: &str) -> Option<Target<'_>> {
        let (path, query) = path_and_query
            .split_once('?')
            .map_or((path_and_query, None), |(path, query)| (path, Some(query)));
        Target::of(path, query)
    }

    #[test]
    fn routes_with_or_without_v1_and_only_known_paths() {
        assert_eq!(route("/v1/chat/completions"), Some(Route::Chat));
        assert_eq!(route("/v1/embeddings"), Some(Route::Embeddings));
        assert_eq!(route("/messages/count_tokens"), Some(Route::CountTokens));
        assert_eq!(
            route("/v1/responses/resp_1"),
            Some(Route::StoredResponse("resp_1"))
        );
        assert_eq!(
            route("/responses/resp_1/cancel"),
            Some(Route::CancelResponse("resp_1"))
        );
        assert_eq!(
            route("/v1/responses/resp_1/input_items"),
            Some(Route::InputItems("resp_1"))
        );
        for path in [
            "/v1",
            "/v1/",
            "/v1embeddings",
            "/v1/responses/",
            "/v1/responses//cancel",
            "/v1/responses/a/b",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn openai_paths_are_azure_and_the_others_openai() {
        assert_eq!(Family::of("/openai"), Family::Azure);
        assert_eq!(Family::of("/openai/responses"), Family::Azure);
        assert_eq!(Family::of("/openaix/responses"), Family::OpenAi);
        assert_eq!(Family::of("/v1/openai/responses"), Family::OpenAi);
        assert_eq!(Family::of("/v1/chat/completions"), Family::OpenAi);
    }

    #[test]
    fn an_azure_deployment_path_names_its_operation_and_deployment() {
        let chat = azure("/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
        let embeddings = azure("/openai/deployments/ada/embeddings?foo=1&api-version=x");

        assert_eq!(
            chat,
            Some(Target {
                route: Route::Chat,
                family: Family::Azure,
                deployment: Some(Cow::Borrowed("gpt-4o-prod")),
            })
        );
        let embeddings = embeddings.unwrap();
        assert_eq!(embeddings.route, Route::Embeddings);
        assert_eq!(embeddings.deployment.as_deref(), Some("ada"));
    }

    #[test]
    fn an_azure_responses_path_names_the_responses_api_without_a_deployment() {
        let create = azure("/openai/responses?api-version=preview").unwrap();
        let cancel = azure("/openai/responses/resp_1/cancel?api-version=preview").unwrap();

        assert_eq!(
            (create.route, create.family),
            (Route::CreateResponse, Family::Azure)
        );
        assert_eq!(create.deployment, None);
        assert_eq!(cancel.route, Route::CancelResponse("resp_1"));
    }

    #[test]
    fn an_azure_path_without_an_api_version_or_unknown_names_nothing() {
        for path in [
            "/openai/deployments/d/chat/completions",
            "/openai/deployments/d/chat/completions?",
            "/openai/deployments/d/chat/completions?api-versions=1",
            "/openai/deployments/d/chat/completions?version=1",
            "/openai/responses",
            "/openai/deployments//chat/completions?api-version=1",
            "/openai/deployments/d/completions?api-version=1",
            "/openai/deployments/d?api-version=1",
            "/openai/messages?api-version=1",
            "/openai/chat/completions?api-version=1",
            "/openai/deployments/%zz/embeddings?api-version=1",
            "/openai/deployments/%ff/embeddings?api-version=1",
        ] {
            assert_eq!(azure(path), None, "{path}");
        }
    }

    #[test]
    fn the_deployment_is_percent_decoded_and_borrowed_when_it_has_no_escape() {
        let escaped = azure("/openai/deployments/my%20model%2Fv%C3%A9/embeddings?api-version=1").unwrap();
        let plain = azure("/openai/deployments/plain/embeddings?api-version").unwrap();

        assert_eq!(escaped.deployment.as_deref(), Some("my model/vé"));
        assert!(matches!(plain.deployment, Some(Cow::Borrowed("plain"))));
    }
}
