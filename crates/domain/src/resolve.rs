//! Which route a request takes, by this precedence:
//!
//! 1. explicit body fields (`provider`, `portkey_provider`; a
//!    `portkey_provider` alone means `provider: portkey`);
//! 2. the `@<portkey_provider>/<model>` model syntax, or
//!    `@<upstream>/<model>` for a direct upstream the catalog names;
//! 3. the catalog entry for `model`;
//! 4. the gateway's default route (`GATEWAYZ_DEFAULT_PROVIDER`).
//!
//! A `portkey_virtual_key` in the body applies to whichever Portkey route
//! wins. A model that matches nothing is [`ChatError::ModelNotFound`].

use crate::catalog::Catalog;
use crate::error::{ChatError, ValidationError};
use crate::provider::UpstreamProvider;
use crate::route::{Overrides, Route, RoutingFields};
use crate::text::quote;

/// The route a request takes, and the catalog's output limit for it.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// For a catalog model, the route of its first target: each target it
    /// tries puts its own on the call.
    pub route: Route,
    pub max_tokens: Option<u32>,
    /// The catalog entry the model id names, when the catalog routes it.
    pub entry: Option<usize>,
    /// Whether the model id is a catalog id.
    pub from_catalog: bool,
    /// The client's virtual key and Portkey config.
    pub overrides: Overrides,
    /// The model the upstream knows (for a catalog model, its first
    /// target's; each target it tries sends its own).
    pub model: String,
}

/// Resolves the route and the upstream model.
pub(crate) fn resolve(
    client_model: &str,
    routing: RoutingFields,
    catalog: &Catalog,
    default: Option<&Route>,
) -> Result<Resolved, ChatError> {
    let RoutingFields {
        provider,
        portkey_provider,
        portkey_virtual_key,
        portkey_config,
    } = routing;
    let overrides = Overrides {
        virtual_key: portkey_virtual_key,
        config: portkey_config,
    };
    let direct = |route: Route, overrides: Overrides, from_catalog: bool, model: String| Resolved {
        route: route.overridden(&overrides),
        max_tokens: None,
        entry: None,
        from_catalog,
        overrides,
        model,
    };
    if provider.is_some() || portkey_provider.is_some() {
        let fields = RoutingFields {
            provider: provider.or_else(|| Some("portkey".to_owned())),
            portkey_provider,
            ..RoutingFields::default()
        };
        let from_catalog = catalog.get(client_model).is_some();
        return Ok(direct(
            Route::from_fields(fields)?,
            overrides,
            from_catalog,
            client_model.to_owned(),
        ));
    }
    if let Some(spec) = client_model.strip_prefix('@') {
        let (route, model) = split_provider_model(spec, catalog)?;
        return Ok(direct(route, overrides, false, model));
    }
    if let Some(index) = catalog.index_of(client_model) {
        let entry = &catalog.models()[index];
        if let Some(primary) = entry.primary() {
            return Ok(Resolved {
                route: primary.route().overridden(&overrides),
                max_tokens: entry.max_tokens,
                entry: Some(index),
                from_catalog: true,
                overrides,
                model: primary.upstream_model().to_owned(),
            });
        }
    }
    match default {
        Some(route) => Ok(direct(route.clone(), overrides, false, client_model.to_owned())),
        None => Err(ChatError::ModelNotFound(quote(client_model).into_owned())),
    }
}

/// `<provider>/<model>`: a direct upstream the catalog names, else a
/// Portkey provider.
fn split_provider_model(spec: &str, catalog: &Catalog) -> Result<(Route, String), ValidationError> {
    let (provider, model) = spec
        .split_once('/')
        .filter(|(provider, model)| !provider.is_empty() && !model.is_empty())
        .ok_or_else(|| {
            ValidationError::new(
                "model",
                format!(
                    "`@{}` is not `@<portkey_provider>/<model>`, e.g. `@openai/gpt-4o-mini`",
                    quote(spec)
                ),
            )
        })?;
    if let Some(upstream) = catalog.upstream(provider) {
        let route = Route::Direct {
            upstream: upstream.clone(),
        };
        return Ok((route, model.to_owned()));
    }
    let provider = UpstreamProvider::parse(provider).ok_or_else(|| {
        let mut supported = UpstreamProvider::supported();
        for upstream in catalog.upstreams() {
            supported.push_str(", ");
            supported.push_str(upstream);
        }
        ValidationError::new(
            "model",
            format!(
                "Unsupported provider `{}` in `@{}`. Supported: {supported}.",
                quote(provider),
                quote(spec),
            ),
        )
        .with_code("unsupported_provider")
    })?;
    let route = Route::Portkey {
        provider,
        virtual_key: None,
        config: None,
    };
    Ok((route, model.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};
    use serde_json::json;

    use super::*;
    use crate::catalog::{ModelEntry, Target};
    use crate::model::ChatRequest;
    use crate::provider::ProviderKind;

    fn catalog() -> Catalog {
        let claude = Target::Portkey {
            provider: UpstreamProvider::Anthropic,
            model: "claude-3-5-sonnet-latest".into(),
            virtual_key: Some(SecretString::from("vk-catalog")),
            config: None,
        };
        Catalog::new(vec![
            ModelEntry {
                max_tokens: Some(2048),
                ..ModelEntry::single("claude", claude, None)
            },
            ModelEntry::single(
                "demo-1",
                Target::Demo {
                    model: "demo-1".into(),
                },
                None,
            ),
        ])
        .unwrap()
    }

    fn request(model: &str) -> ChatRequest {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
        ChatRequest::parse(serde_json::to_vec(&body).unwrap().into()).unwrap()
    }

    fn fields(
        provider: Option<&str>,
        portkey_provider: Option<&str>,
        virtual_key: Option<&str>,
    ) -> RoutingFields {
        RoutingFields {
            provider: provider.map(str::to_owned),
            portkey_provider: portkey_provider.map(str::to_owned),
            portkey_virtual_key: virtual_key.map(SecretString::from),
            portkey_config: None,
        }
    }

    type Summary = (ProviderKind, Option<UpstreamProvider>, Option<String>);

    fn summary(route: &Route) -> Summary {
        let virtual_key = match route {
            Route::Portkey { virtual_key, .. } => {
                virtual_key.as_ref().map(|key| key.expose_secret().to_owned())
            }
            Route::Demo | Route::Direct { .. } => None,
        };
        (route.kind(), route.portkey_provider(), virtual_key)
    }

    #[test]
    fn the_precedence_is_fields_then_at_syntax_then_catalog_then_default() {
        let default = Route::Portkey {
            provider: UpstreamProvider::Groq,
            virtual_key: None,
            config: None,
        };
        use ProviderKind::{Demo, Portkey};
        use UpstreamProvider::*;
        let cases: Vec<(&str, RoutingFields, Option<&Route>, Summary, &str)> = vec![
            // Explicit fields win over everything, and keep the model as sent.
            (
                "claude",
                fields(Some("portkey"), Some("openai"), None),
                None,
                (Portkey, Some(OpenAi), None),
                "claude",
            ),
            (
                "@groq/llama",
                fields(Some("demo"), None, None),
                None,
                (Demo, None, None),
                "@groq/llama",
            ),
            (
                "claude",
                fields(None, Some("cohere"), None),
                None,
                (Portkey, Some(Cohere), None),
                "claude",
            ),
            // The @ syntax beats the catalog and the default.
            (
                "@anthropic/claude-3-haiku",
                fields(None, None, None),
                Some(&default),
                (Portkey, Some(Anthropic), None),
                "claude-3-haiku",
            ),
            (
                "@google-ai/gemini-1.5-pro",
                fields(None, None, Some("vk")),
                None,
                (Portkey, Some(GoogleAi), Some("vk".into())),
                "gemini-1.5-pro",
            ),
            // The catalog beats the default; its virtual key yields to the request's.
            (
                "claude",
                fields(None, None, None),
                Some(&default),
                (Portkey, Some(Anthropic), Some("vk-catalog".into())),
                "claude-3-5-sonnet-latest",
            ),
            (
                "claude",
                fields(None, None, Some("vk-request")),
                None,
                (Portkey, Some(Anthropic), Some("vk-request".into())),
                "claude-3-5-sonnet-latest",
            ),
            (
                "demo-1",
                fields(None, None, None),
                None,
                (Demo, None, None),
                "demo-1",
            ),
            // The default takes what nothing else routes.
            (
                "anything",
                fields(None, None, None),
                Some(&default),
                (Portkey, Some(Groq), None),
                "anything",
            ),
        ];

        for (model, routing, default, expected, upstream_model) in cases {
            let request = request(model);
            let resolved = resolve(request.model(), routing, &catalog(), default).unwrap();
            assert_eq!(summary(&resolved.route), expected, "{model}");
            assert_eq!(resolved.model, upstream_model, "{model}");
        }
    }

    #[test]
    fn a_catalog_model_brings_its_max_tokens() {
        let request = request("claude");
        let resolved = resolve(request.model(), fields(None, None, None), &catalog(), None).unwrap();
        assert_eq!(resolved.max_tokens, Some(2048));
    }

    #[test]
    fn a_model_that_matches_nothing_is_not_found() {
        let err = resolve(
            request("gpt-5").model(),
            fields(None, None, None),
            &catalog(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ChatError::ModelNotFound(model) if model == "gpt-5"));
    }

    #[test]
    fn a_malformed_or_unknown_at_model_is_a_400_on_model() {
        for model in ["@openai", "@/gpt", "@openai/", "@acme/model"] {
            let err =
                resolve(request(model).model(), fields(None, None, None), &catalog(), None).unwrap_err();
            assert!(
                matches!(&err, ChatError::Invalid(error) if error.param.as_deref() == Some("model")),
                "{model}: {err:?}"
            );
        }
    }

    fn with_upstreams() -> Catalog {
        catalog().with_upstreams(["vllm".into(), "azure-east".into()])
    }

    #[test]
    fn an_at_model_names_a_catalog_upstream_before_a_portkey_provider() {
        let resolved = resolve(
            request("@vllm/meta-llama/Llama-3.1-8B").model(),
            fields(None, None, None),
            &with_upstreams(),
            None,
        )
        .unwrap();
        assert_eq!(resolved.route.direct_upstream().map(|name| &**name), Some("vllm"));
        assert_eq!(resolved.route.kind(), ProviderKind::Direct);
        assert_eq!(resolved.model, "meta-llama/Llama-3.1-8B");
        assert!(!resolved.from_catalog);
        // A Portkey provider's name still means Portkey.
        let openai = resolve(
            request("@openai/gpt-4o").model(),
            fields(None, None, None),
            &with_upstreams(),
            None,
        )
        .unwrap();
        assert_eq!(openai.route.portkey_provider(), Some(UpstreamProvider::OpenAi));
    }

    #[test]
    fn an_unknown_at_provider_lists_the_catalogs_upstreams_too() {
        let err = resolve(
            request("@acme/model").model(),
            fields(None, None, None),
            &with_upstreams(),
            None,
        )
        .unwrap_err();
        let ChatError::Invalid(error) = err else {
            panic!("{err:?}");
        };
        assert!(
            error.message.ends_with("groq, vllm, azure-east."),
            "{}",
            error.message
        );
    }

    #[test]
    fn the_provider_field_cannot_name_a_direct_upstream() {
        let err = resolve(
            request("m").model(),
            fields(Some("openai-compatible"), None, None),
            &with_upstreams(),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&err, ChatError::Invalid(error) if error.message.contains("@<upstream>/<model>")),
            "{err:?}"
        );
    }
}
