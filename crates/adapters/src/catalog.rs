//! The model catalog, read from a TOML file at start and checked with errors
//! that name the file, the line and the field.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gatewayz_domain::{
    Catalog, GroupSpec, ModelEntry, Node, PortkeyRouting, Pricing, RoutingPolicy, Service, Strategy, Target,
    TargetSpec, UpstreamProvider,
};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

use crate::direct::{DirectUpstream, UpstreamSpec};

/// The catalog built into the binary, used when no file is named.
pub const DEFAULT_CATALOG: &str = include_str!("../../../deploy/catalog/default.toml");
/// How errors name the built-in catalog.
pub const DEFAULT_CATALOG_NAME: &str = "deploy/catalog/default.toml (built in)";

/// Why the catalog cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the catalog {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
}

/// A catalog as read: the models, and the direct upstreams they (and
/// `@<upstream>/<model>`) may call.
#[derive(Debug)]
pub struct Loaded {
    pub catalog: Catalog,
    /// Every direct upstream: those `[[upstreams]]` declares, then those
    /// targets give inline with their own `base_url`.
    pub upstreams: Vec<DirectUpstream>,
}

/// Loads the catalog from `path`, or the built-in one. `env` looks up the
/// variables that entries name in `virtual_key_env` and `api_key_env`.
///
/// # Errors
/// A [`CatalogError`] naming the file, and the line and field at fault.
pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Loaded, CatalogError> {
    match path {
        None => parse_all(DEFAULT_CATALOG_NAME, DEFAULT_CATALOG, env),
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
                file: file.clone(),
                source,
            })?;
            parse_all(&file, &text, env)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    routing: RawPolicy,
    #[serde(default)]
    upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    models: Vec<Spanned<RawNode>>,
}

/// An `[[upstreams]]` entry: a direct upstream clients and targets name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    base_url: Option<Spanned<String>>,
    #[serde(default)]
    api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    headers: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    endpoints: Option<Spanned<Vec<Spanned<String>>>>,
}

/// How a direct upstream is called: in `[[upstreams]]`, or on a target
/// inline.
#[derive(Default, Clone)]
struct RawWire {
    base_url: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    api_version: Option<Spanned<String>>,
}

impl RawWire {
    /// The fields given, with where each is.
    fn given(&self) -> [(&'static str, Option<usize>); 4] {
        [
            ("base_url", start_of(&self.base_url)),
            ("api_key_env", start_of(&self.api_key_env)),
            ("headers", start_of(&self.headers)),
            ("api_version", start_of(&self.api_version)),
        ]
    }

    /// The same settings, wherever they were written.
    fn same_as(&self, other: &Self) -> bool {
        let text = |value: &Option<Spanned<String>>| value.as_ref().map(|v| v.get_ref().clone());
        text(&self.base_url) == text(&other.base_url)
            && text(&self.api_key_env) == text(&other.api_key_env)
            && text(&self.api_version) == text(&other.api_version)
            && self.headers.as_ref().map(Spanned::get_ref) == other.headers.as_ref().map(Spanned::get_ref)
    }
}

/// Routing settings: the catalog's `[routing]`, or a model's own `routing`
/// (whose settings win over the catalog's).
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    retries: Option<u32>,
    backoff_base_ms: Option<Millis>,
    backoff_max_ms: Option<Millis>,
    retry_after_max_ms: Option<Millis>,
    deadline_ms: Option<Millis>,
    breaker_failures: Option<u32>,
    breaker_cooldown_ms: Option<Millis>,
}

impl RawPolicy {
    fn over(self, base: RoutingPolicy) -> RoutingPolicy {
        let ms = |value: Option<Millis>, default: Duration| {
            value.map_or(default, |Millis(ms)| Duration::from_millis(ms))
        };
        RoutingPolicy {
            retries: self.retries.unwrap_or(base.retries),
            backoff_base: ms(self.backoff_base_ms, base.backoff_base),
            backoff_max: ms(self.backoff_max_ms, base.backoff_max),
            retry_after_max: ms(self.retry_after_max_ms, base.retry_after_max),
            deadline: ms(self.deadline_ms, base.deadline),
            breaker_failures: self.breaker_failures.unwrap_or(base.breaker_failures),
            breaker_cooldown: ms(self.breaker_cooldown_ms, base.breaker_cooldown),
        }
    }
}

/// A duration in milliseconds: 1 ms to a day.
#[derive(Clone, Copy)]
struct Millis(u64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        let value = i64::deserialize(deserializer)?;
        u64::try_from(value)
            .ok()
            .filter(|_| (1..=DAY_MS).contains(&value))
            .map(Self)
            .ok_or_else(|| {
                de::Error::custom(format!("must be between 1 ms and a day ({DAY_MS}), got {value}"))
            })
    }
}

/// The first of `targets` that cannot serve `service` (see
/// [`crate::portkey::serves`] and [`DirectUpstream::serves`]); the demo
/// serves every API.
fn unserved<'a>(targets: &'a Node, service: Service, upstreams: &[UpstreamEntry]) -> Option<&'a TargetSpec> {
    targets.targets().into_iter().find(|spec| match &spec.target {
        Target::Demo { .. } => false,
        Target::Portkey { provider, .. } => !crate::portkey::serves(*provider, service),
        Target::Direct { upstream, .. } => !upstreams
            .iter()
            .any(|entry| entry.upstream.name() == upstream && entry.upstream.serves(service)),
    })
}

/// A `[[models]]` entry or one of its `targets`: a single target (given
/// inline), or a group (`strategy` and `targets`). `id`, `max_tokens` and
/// `routing` belong to models only.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(default)]
    id: Option<Spanned<String>>,
    #[serde(default)]
    max_tokens: Option<Spanned<MaxTokens>>,
    #[serde(default)]
    endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    cache_ttl_s: Option<Spanned<CacheTtl>>,
    #[serde(default)]
    cache_scope: Option<Spanned<CacheScope>>,
    #[serde(default)]
    routing: Option<Spanned<RawPolicy>>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    provider: Option<Spanned<ProviderName>>,
    #[serde(default)]
    portkey_provider: Option<Spanned<ProviderSlug>>,
    #[serde(default)]
    upstream_model: Option<Spanned<String>>,
    #[serde(default)]
    virtual_key_env: Option<Spanned<String>>,
    #[serde(default)]
    portkey_config: Option<Spanned<toml::Value>>,
    #[serde(default)]
    upstream: Option<Spanned<String>>,
    #[serde(default)]
    base_url: Option<Spanned<String>>,
    #[serde(default)]
    api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    headers: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    input_usd_per_million: Option<Spanned<Price>>,
    #[serde(default)]
    output_usd_per_million: Option<Spanned<Price>>,
    #[serde(default)]
    cached_input_usd_per_million: Option<Spanned<Price>>,
    #[serde(default)]
    weight: Option<Spanned<u32>>,
    #[serde(default)]
    retries: Option<Spanned<u32>>,
    #[serde(default)]
    strategy: Option<Spanned<StrategyName>>,
    #[serde(default)]
    targets: Option<Spanned<Vec<Spanned<RawNode>>>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum StrategyName {
    Fallback,
    Loadbalance,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ProviderName {
    Portkey,
    Demo,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

/// A `portkey_provider` name, checked as it is read.
struct ProviderSlug(UpstreamProvider);

impl<'de> Deserialize<'de> for ProviderSlug {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        UpstreamProvider::parse(&name).map(Self).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown portkey_provider `{name}`; supported: {}",
                UpstreamProvider::ALL.map(UpstreamProvider::name).join(", ")
            ))
        })
    }
}

/// A price: a finite, non-negative number.
#[derive(Clone, Copy)]
struct Price(f64);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PriceVisitor;
        impl de::Visitor<'_> for PriceVisitor {
            type Value = Price;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number of US dollars per million tokens")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Price, E> {
                if value.is_finite() && value >= 0.0 {
                    Ok(Price(value))
                } else {
                    Err(E::custom(format!(
                        "a price must be a non-negative number, got {value}"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Price, E> {
                self.visit_f64(value as f64)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Price, E> {
                self.visit_f64(value as f64)
            }
        }
        deserializer.deserialize_any(PriceVisitor)
    }
}

/// An output limit: a whole number of at least 1.
#[derive(Clone, Copy)]
struct MaxTokens(u32);

impl<'de> Deserialize<'de> for MaxTokens {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        u32::try_from(value)
            .ok()
            .filter(|value| *value >= 1)
            .map(Self)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "max_tokens must be between 1 and {}, got {value}",
                    u32::MAX
                ))
            })
    }
}

/// How long a model's answers are cached: whole seconds, at most a year
/// (0 turns the cache off, as leaving it out does).
#[derive(Clone, Copy)]
struct CacheTtl(u64);

impl<'de> Deserialize<'de> for CacheTtl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        gatewayz_domain::cache::ttl_from_seconds(i64::deserialize(deserializer)?)
            .map(|ttl| Self(ttl.as_secs()))
            .map_err(|message| de::Error::custom(format!("cache_ttl_s {message}")))
    }
}

/// Who shares a model's cached answers: each key its own (`key`, the
/// default), or every key (`shared`).
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CacheScope {
    Key,
    Shared,
}

/// Parses and checks a catalog's text: the catalog alone (see
/// [`parse_all`] for its direct upstreams too).
///
/// # Errors
/// As [`load`].
pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Catalog, CatalogError> {
    parse_all(file, text, env).map(|loaded| loaded.catalog)
}

/// Parses and checks a catalog's text: its models and its direct upstreams.
///
/// # Errors
/// As [`load`].
pub fn parse_all(
    file: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, CatalogError> {
    let reader = Reader {
        file,
        text,
        env,
        upstreams: RefCell::new(Vec::new()),
    };
    let raw: RawCatalog = toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        reader.error(offset, error.message().trim())
    })?;
    for (index, upstream) in raw.upstreams.into_iter().enumerate() {
        reader.declared(index, upstream)?;
    }
    // Only declared upstreams are routed to by name.
    let routable: Vec<Arc<str>> = reader
        .upstreams
        .borrow()
        .iter()
        .map(|entry| entry.upstream.name().clone())
        .collect();
    let defaults = raw.routing.over(RoutingPolicy::default());
    let mut entries = Vec::with_capacity(raw.models.len());
    for (index, spanned) in raw.models.into_iter().enumerate() {
        let entry = reader.model(index, spanned, defaults, &entries)?;
        entries.push(entry);
    }
    let catalog = Catalog::new(entries)
        .map_err(|error| reader.error(0, error))?
        .with_upstreams(routable);
    let upstreams = reader
        .upstreams
        .into_inner()
        .into_iter()
        .map(|entry| entry.upstream)
        .collect();
    Ok(Loaded { catalog, upstreams })
}

/// Reads one catalog text, with what its errors need to name the place.
struct Reader<'a, E> {
    file: &'a str,
    text: &'a str,
    env: E,
    /// The direct upstreams read so far.
    upstreams: RefCell<Vec<UpstreamEntry>>,
}

/// A direct upstream read: declared in `[[upstreams]]`, or given inline by
/// a target (whose settings another inline target may repeat).
struct UpstreamEntry {
    upstream: DirectUpstream,
    inline: Option<RawWire>,
}

/// Where a node sits: its path for messages, and its parent's strategy.
struct Place<'a> {
    path: String,
    depth: usize,
    parent: Option<Strategy>,
    model: &'a str,
    pricing: Option<Pricing>,
}

impl<E: Fn(&str) -> Option<String>> Reader<'_, E> {
    fn error(&self, offset: usize, message: impl fmt::Display) -> CatalogError {
        CatalogError::Invalid {
            file: self.file.to_owned(),
            line: line_of(self.text, offset),
            message: message.to_string(),
        }
    }

    fn at(&self, offset: usize, path: &str, field: &str, message: impl fmt::Display) -> CatalogError {
        let separator = if field.is_empty() { "" } else { "." };
        self.error(offset, format!("{path}{separator}{field}: {message}"))
    }

    fn model(
        &self,
        index: usize,
        spanned: Spanned<RawNode>,
        defaults: RoutingPolicy,
        entries: &[ModelEntry],
    ) -> Result<ModelEntry, CatalogError> {
        let at = spanned.span().start;
        let mut raw = spanned.into_inner();
        let path = format!("models[{index}]");
        let Some(id) = raw.id.take() else {
            return Err(self.at(at, &path, "id", "required"));
        };
        let offset = id.span().start;
        let id = id.into_inner().trim().to_owned();
        if id.is_empty() {
            return Err(self.at(offset, &path, "id", "must not be empty"));
        }
        if id.starts_with('@') {
            return Err(self.at(
                offset,
                &path,
                "id",
                format!("`{id}` starts with `@`, which always means `@<portkey_provider>/<model>`"),
            ));
        }
        if let Some(previous) = entries.iter().position(|entry| entry.id == id) {
            return Err(self.at(
                offset,
                &path,
                "id",
                format!("`{id}` is already the id of models[{previous}]"),
            ));
        }
        let max_tokens = raw.max_tokens.take().map(|limit| limit.into_inner().0);
        let cache_ttl = raw
            .cache_ttl_s
            .take()
            .map(|ttl| ttl.into_inner().0)
            .filter(|seconds| *seconds > 0)
            .map(std::time::Duration::from_secs);
        let cache_shared = raw
            .cache_scope
            .take()
            .is_some_and(|scope| scope.into_inner() == CacheScope::Shared);
        let listed = match raw.endpoints.take() {
            None => None,
            Some(listed) => {
                let at = listed.span().start;
                Some((at, self.endpoints(&path, listed)?))
            }
        };
        let policy = raw
            .routing
            .take()
            .map_or(defaults, |routing| routing.into_inner().over(defaults));
        let place = Place {
            path,
            depth: 0,
            parent: None,
            model: &id,
            pricing: None,
        };
        let targets = self.node(at, raw, &place, &mut Vec::new())?;
        let upstreams = self.upstreams.borrow();
        let endpoints = match listed {
            // What every target can serve, of what models serve by default.
            None => {
                let served: Vec<Service> = Service::DEFAULT
                    .into_iter()
                    .filter(|service| unserved(&targets, *service, &upstreams).is_none())
                    .collect();
                if served.is_empty() {
                    // A model every call to would be refused.
                    return Err(self.at(
                        at,
                        &place.path,
                        "endpoints",
                        "its targets serve none of chat, messages and responses together: list the APIs \
                         the model serves (an embedding model: endpoints = [\"embeddings\"])",
                    ));
                }
                served
            }
            Some((at, listed)) => {
                for service in &listed {
                    if let Some(spec) = unserved(&targets, *service, &upstreams) {
                        let via = match spec.target {
                            Target::Direct { .. } => "by that upstream",
                            _ => "through Portkey",
                        };
                        return Err(self.at(
                            at,
                            &place.path,
                            "endpoints",
                            format!(
                                "`{service}` is not served for target `{}` ({}) {via}",
                                spec.name,
                                spec.target.owner()
                            ),
                        ));
                    }
                }
                listed
            }
        };
        Ok(ModelEntry {
            id,
            targets,
            max_tokens,
            policy,
            endpoints,
            cache_ttl,
            cache_shared,
        })
    }

    /// A model's `endpoints`: at least one, each known, none twice.
    fn endpoints(
        &self,
        path: &str,
        listed: Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<Service>, CatalogError> {
        let at = listed.span().start;
        let listed = listed.into_inner();
        if listed.is_empty() {
            return Err(self.at(at, path, "endpoints", "must name at least one endpoint"));
        }
        let mut services = Vec::with_capacity(listed.len());
        for name in listed {
            let offset = name.span().start;
            let Some(service) = Service::parse(name.get_ref()) else {
                let known = Service::ALL.map(Service::as_str).join(", ");
                return Err(self.at(
                    offset,
                    path,
                    "endpoints",
                    format!("unknown endpoint `{}`; known: {known}", name.get_ref()),
                ));
            };
            if services.contains(&service) {
                return Err(self.at(offset, path, "endpoints", format!("`{service}` is listed twice")));
            }
            services.push(service);
        }
        Ok(services)
    }

    /// A model's targets, or one of its members.
    fn node(
        &self,
        at: usize,
        raw: RawNode,
        place: &Place<'_>,
        names: &mut Vec<(String, String)>,
    ) -> Result<Node, CatalogError> {
        let path = &place.path;
        if place.depth > 0 {
            for (field, offset) in [
                ("id", start_of(&raw.id)),
                ("max_tokens", start_of(&raw.max_tokens)),
                ("routing", start_of(&raw.routing)),
                ("endpoints", start_of(&raw.endpoints)),
                ("cache_ttl_s", start_of(&raw.cache_ttl_s)),
                ("cache_scope", start_of(&raw.cache_scope)),
            ] {
                if let Some(offset) = offset {
                    return Err(self.at(offset, path, field, "belongs to the model, not to a target"));
                }
            }
        }
        let weight = match (&raw.weight, place.parent) {
            (Some(weight), Some(Strategy::LoadBalance)) if *weight.get_ref() == 0 => {
                return Err(self.at(weight.span().start, path, "weight", "must be at least 1"));
            }
            (Some(weight), Some(Strategy::LoadBalance)) => *weight.get_ref(),
            (Some(weight), _) => {
                return Err(self.at(
                    weight.span().start,
                    path,
                    "weight",
                    "only applies to the targets of a `loadbalance` group",
                ));
            }
            (None, _) => 1,
        };
        let pricing = self.pricing(at, &raw, path)?.or(place.pricing);
        let target_fields = raw_target_fields(&raw);
        match raw.targets {
            Some(targets) => self.group(
                raw.strategy,
                targets,
                weight,
                pricing,
                target_fields,
                place,
                names,
            ),
            None => {
                if let Some(strategy) = &raw.strategy {
                    return Err(self.at(
                        strategy.span().start,
                        path,
                        "strategy",
                        "needs `targets` to choose among",
                    ));
                }
                let spec = self.target(at, raw, weight, pricing, place)?;
                if let Some((_, other)) = names.iter().find(|(name, _)| *name == spec.name) {
                    return Err(self.at(
                        at,
                        path,
                        "name",
                        format!(
                            "`{}` is already the name of {other}; give one of them a distinct `name`",
                            spec.name
                        ),
                    ));
                }
                names.push((spec.name.clone(), path.clone()));
                Ok(Node::Target(spec))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn group(
        &self,
        strategy: Option<Spanned<StrategyName>>,
        targets: Spanned<Vec<Spanned<RawNode>>>,
        weight: u32,
        pricing: Option<Pricing>,
        target_fields: Option<(&'static str, usize)>,
        place: &Place<'_>,
        names: &mut Vec<(String, String)>,
    ) -> Result<Node, CatalogError> {
        let path = &place.path;
        if let Some((field, offset)) = target_fields {
            return Err(self.at(
                offset,
                path,
                field,
                "belongs to each of `targets`, not to the group",
            ));
        }
        if place.depth >= 2 {
            return Err(self.at(
                targets.span().start,
                path,
                "targets",
                "groups nest one level only (a model's group may have groups of targets)",
            ));
        }
        let strategy = match strategy.map(Spanned::into_inner) {
            None | Some(StrategyName::Fallback) => Strategy::Fallback,
            Some(StrategyName::Loadbalance) => Strategy::LoadBalance,
        };
        let at = targets.span().start;
        let targets = targets.into_inner();
        if targets.is_empty() {
            return Err(self.at(at, path, "targets", "must list at least one target"));
        }
        let mut members = Vec::with_capacity(targets.len());
        for (index, member) in targets.into_iter().enumerate() {
            let at = member.span().start;
            let place = Place {
                path: format!("{path}.targets[{index}]"),
                depth: place.depth + 1,
                parent: Some(strategy),
                model: place.model,
                pricing,
            };
            members.push(self.node(at, member.into_inner(), &place, names)?);
        }
        Ok(Node::Group(GroupSpec {
            strategy,
            weight,
            members,
        }))
    }

    fn target(
        &self,
        at: usize,
        mut raw: RawNode,
        weight: u32,
        pricing: Option<Pricing>,
        place: &Place<'_>,
    ) -> Result<TargetSpec, CatalogError> {
        let path = &place.path;
        let wire = raw.wire();
        let direct = raw.upstream.is_some() || wire.given().iter().any(|(_, offset)| offset.is_some());
        let provider = raw.provider.as_ref().map_or(
            if direct {
                ProviderName::OpenAiCompatible
            } else {
                ProviderName::Portkey
            },
            |provider| *provider.get_ref(),
        );
        let model = raw
            .upstream_model
            .map_or_else(|| place.model.to_owned(), Spanned::into_inner);
        let only = |fields: &[(&'static str, Option<usize>)], provider: &str| match fields
            .iter()
            .find_map(|(field, offset)| offset.map(|offset| (*field, offset)))
        {
            Some((field, offset)) => Err(self.at(
                offset,
                path,
                field,
                format!("only applies to provider = \"{provider}\""),
            )),
            None => Ok(()),
        };
        let portkey_fields = [
            ("portkey_provider", start_of(&raw.portkey_provider)),
            ("virtual_key_env", start_of(&raw.virtual_key_env)),
            ("portkey_config", start_of(&raw.portkey_config)),
        ];
        let mut direct_fields = wire.given().to_vec();
        direct_fields.push(("upstream", start_of(&raw.upstream)));
        let target = match (provider, raw.portkey_provider) {
            (ProviderName::Portkey, Some(slug)) => {
                only(&direct_fields, "openai-compatible")?;
                Target::Portkey {
                    provider: slug.into_inner().0,
                    model,
                    virtual_key: secret_from_env(raw.virtual_key_env, &self.env)
                        .map_err(|(offset, message)| self.at(offset, path, "virtual_key_env", message))?,
                    config: raw
                        .portkey_config
                        .map(|config| {
                            let offset = config.span().start;
                            portkey_config(config.into_inner())
                                .map_err(|message| self.at(offset, path, "portkey_config", message))
                        })
                        .transpose()?,
                }
            }
            (ProviderName::Portkey, None) => {
                return Err(self.at(
                    at,
                    path,
                    "portkey_provider",
                    "required when provider = \"portkey\"",
                ));
            }
            (ProviderName::Demo, _) => {
                only(&portkey_fields, "portkey")?;
                only(&direct_fields, "openai-compatible")?;
                Target::Demo { model }
            }
            (ProviderName::OpenAiCompatible, _) => {
                only(&portkey_fields, "portkey")?;
                let upstream = match raw.upstream {
                    Some(name) => self.named_upstream(name, &wire, path)?,
                    None => self.inline_upstream(at, wire, place.model, path)?,
                };
                Target::Direct { upstream, model }
            }
        };
        let name = match raw.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                return Err(self.at(name.span().start, path, "name", "must not be empty"));
            }
            Some(name) => name.into_inner().trim().to_owned(),
            None => target.default_name(),
        };
        Ok(TargetSpec {
            name,
            target,
            weight,
            retries: raw.retries.map(Spanned::into_inner),
            pricing,
        })
    }

    /// An `[[upstreams]]` entry.
    fn declared(&self, index: usize, spanned: Spanned<RawUpstream>) -> Result<(), CatalogError> {
        let at = spanned.span().start;
        let mut raw = spanned.into_inner();
        let path = format!("upstreams[{index}]");
        let Some(name) = raw.name.take() else {
            return Err(self.at(at, &path, "name", "required"));
        };
        let offset = name.span().start;
        let name = name.into_inner().trim().to_owned();
        if let Err(message) = check_upstream_name(&name) {
            return Err(self.at(offset, &path, "name", message));
        }
        if let Some(previous) = self
            .upstreams
            .borrow()
            .iter()
            .position(|entry| **entry.upstream.name() == *name)
        {
            return Err(self.at(
                offset,
                &path,
                "name",
                format!("`{name}` is already the name of upstreams[{previous}]"),
            ));
        }
        let services = match raw.endpoints.take() {
            None => None,
            Some(listed) => Some(self.endpoints(&path, listed)?),
        };
        let wire = raw.wire();
        let upstream = self.upstream(at, name, &wire, services, &path)?;
        self.upstreams.borrow_mut().push(UpstreamEntry {
            upstream,
            inline: None,
        });
        Ok(())
    }

    /// The declared upstream a target names in `upstream`.
    fn named_upstream(
        &self,
        name: Spanned<String>,
        wire: &RawWire,
        path: &str,
    ) -> Result<Arc<str>, CatalogError> {
        if let Some((field, offset)) = wire
            .given()
            .into_iter()
            .find_map(|(field, offset)| offset.map(|offset| (field, offset)))
        {
            return Err(self.at(
                offset,
                path,
                field,
                "belongs to the [[upstreams]] entry that `upstream` names, not to the target",
            ));
        }
        let offset = name.span().start;
        let name = name.into_inner();
        let upstreams = self.upstreams.borrow();
        let declared = || upstreams.iter().filter(|entry| entry.inline.is_none());
        match declared().find(|entry| **entry.upstream.name() == *name.trim()) {
            Some(entry) => Ok(entry.upstream.name().clone()),
            None => {
                let names: Vec<&str> = declared().map(|entry| &**entry.upstream.name()).collect();
                Err(self.at(
                    offset,
                    path,
                    "upstream",
                    format!(
                        "no [[upstreams]] entry is named `{name}`; declared: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                ))
            }
        }
    }

    /// The upstream a target of `model` gives inline (its own `base_url`):
    /// the inline upstream with the same settings, or a new one named after
    /// the model (`<model>`, else `<model>-2`, ...). Never after its host:
    /// the name reaches clients (`x-gatewayz-provider`, `owned_by`, error
    /// messages), a host of the operator's network should not.
    fn inline_upstream(
        &self,
        at: usize,
        wire: RawWire,
        model: &str,
        path: &str,
    ) -> Result<Arc<str>, CatalogError> {
        if wire.base_url.is_none() {
            return Err(self.at(
                at,
                path,
                "base_url",
                "required with provider = \"openai-compatible\", unless `upstream` names an [[upstreams]] entry",
            ));
        }
        let upstreams = self.upstreams.borrow();
        if let Some(same) = upstreams
            .iter()
            .find(|entry| entry.inline.as_ref().is_some_and(|inline| inline.same_as(&wire)))
        {
            return Ok(same.upstream.name().clone());
        }
        let taken = |name: &str| upstreams.iter().any(|entry| **entry.upstream.name() == *name);
        let name = std::iter::once(model.to_owned())
            .chain((2..).map(|n| format!("{model}-{n}")))
            .find(|name| !taken(name))
            .unwrap_or_default();
        drop(upstreams);
        let upstream = self.upstream(at, name, &wire, None, path)?;
        let name = upstream.name().clone();
        self.upstreams.borrow_mut().push(UpstreamEntry {
            upstream,
            inline: Some(wire),
        });
        Ok(name)
    }

    /// A direct upstream from its settings, its key read now so that a
    /// missing one stops the start.
    fn upstream(
        &self,
        at: usize,
        name: String,
        wire: &RawWire,
        services: Option<Vec<Service>>,
        path: &str,
    ) -> Result<DirectUpstream, CatalogError> {
        let Some(base_url) = &wire.base_url else {
            return Err(self.at(at, path, "base_url", "required"));
        };
        let api_key = secret_from_env(wire.api_key_env.clone(), &self.env)
            .map_err(|(offset, message)| self.at(offset, path, "api_key_env", message))?;
        let spec = UpstreamSpec {
            name,
            base_url: base_url.get_ref().clone(),
            api_key,
            headers: wire
                .headers
                .as_ref()
                .map(|headers| headers.get_ref().clone().into_iter().collect())
                .unwrap_or_default(),
            api_version: wire.api_version.as_ref().map(|version| version.get_ref().clone()),
            services,
        };
        DirectUpstream::new(spec).map_err(|(field, message)| {
            let offset = wire
                .given()
                .into_iter()
                .find(|(given, _)| *given == field)
                .and_then(|(_, offset)| offset)
                .unwrap_or(at);
            self.at(offset, path, field, message)
        })
    }

    fn pricing(&self, at: usize, raw: &RawNode, path: &str) -> Result<Option<Pricing>, CatalogError> {
        match (&raw.input_usd_per_million, &raw.output_usd_per_million) {
            (Some(input), Some(output)) => Ok(Some(Pricing {
                cached_input_per_million: raw
                    .cached_input_usd_per_million
                    .as_ref()
                    .map(|price| price.get_ref().0),
                ..Pricing::new(input.get_ref().0, output.get_ref().0)
            })),
            (None, None) if raw.cached_input_usd_per_million.is_some() => Err(self.at(
                at,
                path,
                "cached_input_usd_per_million",
                "cached_input_usd_per_million needs input_usd_per_million and output_usd_per_million",
            )),
            (None, None) => Ok(None),
            _ => Err(self.at(
                at,
                path,
                "input_usd_per_million",
                "input_usd_per_million and output_usd_per_million go together",
            )),
        }
    }
}

/// The first field of a single target given on a group, if any.
fn raw_target_fields(raw: &RawNode) -> Option<(&'static str, usize)> {
    [
        ("name", start_of(&raw.name)),
        ("provider", start_of(&raw.provider)),
        ("portkey_provider", start_of(&raw.portkey_provider)),
        ("upstream_model", start_of(&raw.upstream_model)),
        ("virtual_key_env", start_of(&raw.virtual_key_env)),
        ("portkey_config", start_of(&raw.portkey_config)),
        ("retries", start_of(&raw.retries)),
        ("upstream", start_of(&raw.upstream)),
        ("base_url", start_of(&raw.base_url)),
        ("api_key_env", start_of(&raw.api_key_env)),
        ("headers", start_of(&raw.headers)),
        ("api_version", start_of(&raw.api_version)),
    ]
    .into_iter()
    .find_map(|(field, offset)| offset.map(|offset| (field, offset)))
}

/// A target's Portkey config: a saved config's id, or a table (or its JSON
/// text), checked as a request's `portkey_config` is.
fn portkey_config(value: toml::Value) -> Result<PortkeyRouting, String> {
    let json = serde_json::to_value(&value).map_err(|error| error.to_string())?;
    PortkeyRouting::from_value("portkey_config", json)
        .and_then(|config| crate::portkey::check_config("portkey_config", &config).map(|()| config))
        .map_err(|error| error.message.replace("`portkey_config` ", ""))
}

/// The secret (a virtual key, an upstream's key) whose variable an entry
/// names, read now so a missing one stops the start.
fn secret_from_env(
    name: Option<Spanned<String>>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, (usize, String)> {
    let Some(name) = name else { return Ok(None) };
    let offset = name.span().start;
    let name = name.into_inner();
    match env(&name) {
        Some(key) if !key.is_empty() && crate::env_keys::is_header_safe(&key) => {
            Ok(Some(SecretString::from(key)))
        }
        Some(key) if !key.is_empty() => Err((
            offset,
            format!("{name} holds characters that cannot be sent in a header"),
        )),
        _ => Err((offset, format!("{name} is not set"))),
    }
}

/// Whether `name` can name a direct upstream in `@<name>/<model>`: not
/// empty, of letters, digits, `.`, `_` and `-`, and not a Portkey
/// provider's name (which `@` already means).
fn check_upstream_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "`{name}` must be letters, digits, `.`, `_` and `-` only: it is written in `@{name}/<model>`"
        ));
    }
    if UpstreamProvider::parse(name).is_some() || name == "demo" {
        return Err(format!(
            "`{name}` is a provider's name: `@{name}/<model>` already routes through Portkey; choose another"
        ));
    }
    Ok(())
}

impl RawNode {
    /// Takes its direct upstream's settings out.
    fn wire(&mut self) -> RawWire {
        RawWire {
            base_url: self.base_url.take(),
            api_key_env: self.api_key_env.take(),
            headers: self.headers.take(),
            api_version: self.api_version.take(),
        }
    }
}

impl RawUpstream {
    /// Takes its settings out.
    fn wire(&mut self) -> RawWire {
        RawWire {
            base_url: self.base_url.take(),
            api_key_env: self.api_key_env.take(),
            headers: self.headers.take(),
            api_version: self.api_version.take(),
        }
    }
}

/// Where a field that was given starts.
fn start_of<T>(field: &Option<Spanned<T>>) -> Option<usize> {
    field.as_ref().map(|field| field.span().start)
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use gatewayz_domain::{Route, Usage};

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn error(text: &str) -> String {
        parse("test.toml", text, no_env).unwrap_err().to_string()
    }

    #[test]
    fn a_model_may_cache_its_answers_per_key_or_shared() {
        let catalog = parse(
            "test.toml",
            r#"
[[models]]
id = "cached"
provider = "demo"
cache_ttl_s = 600

[[models]]
id = "shared"
provider = "demo"
cache_ttl_s = 60
cache_scope = "shared"

[[models]]
id = "off"
provider = "demo"
cache_ttl_s = 0
"#,
            no_env,
        )
        .unwrap();
        let rule = |id: &str| {
            let entry = catalog.get(id).unwrap();
            (entry.cache_ttl.map(|ttl| ttl.as_secs()), entry.cache_shared)
        };
        assert_eq!(rule("cached"), (Some(600), false));
        assert_eq!(rule("shared"), (Some(60), true));
        assert_eq!(rule("off"), (None, false));
        for (line, expected) in [
            (
                "cache_ttl_s = -1",
                "cache_ttl_s must be between 0 and 31536000 seconds, got -1",
            ),
            ("cache_ttl_s = 99999999999", "got 99999999999"),
            ("cache_scope = \"everyone\"", "unknown variant `everyone`"),
        ] {
            let text = format!("[[models]]\nid = \"m\"\nprovider = \"demo\"\n{line}\n");
            let message = error(&text);
            assert!(
                message.contains(expected) && message.contains("test.toml:4"),
                "{line}: {message}"
            );
        }
    }

    #[test]
    fn the_built_in_catalog_loads_and_covers_the_demo_and_all_nine_portkey_providers() {
        let catalog = load(None, no_env).unwrap().catalog;
        assert!(matches!(
            catalog.get("demo-1").and_then(ModelEntry::primary),
            Some(Target::Demo { .. })
        ));
        for provider in UpstreamProvider::ALL {
            assert!(
                catalog.models().iter().any(
                    |entry| matches!(entry.primary(), Some(Target::Portkey { provider: p, .. }) if *p == provider)
                ),
                "{provider} is missing"
            );
        }
        let route = Route::Portkey {
            provider: UpstreamProvider::OpenAi,
            virtual_key: None,
            config: None,
        };
        let pricing = catalog.pricing(&route, "gpt-4o-mini").unwrap();
        assert_eq!(pricing.cost(&Usage::new(1_000_000, 1_000_000)), 0.75);
    }

    #[test]
    fn an_entry_reads_every_field() {
        let catalog = parse(
            "c.toml",
            r#"
[[models]]
id = "team-gpt"
provider = "portkey"
portkey_provider = "google"
upstream_model = "gemini-1.5-pro"
virtual_key_env = "VK_TEAM"
input_usd_per_million = 1
output_usd_per_million = 2.5
max_tokens = 300
"#,
            |name| (name == "VK_TEAM").then(|| "vk-123".to_owned()),
        )
        .unwrap();
        let entry = catalog.get("team-gpt").unwrap();
        let Node::Target(spec) = &entry.targets else {
            panic!("one target: {entry:?}")
        };
        assert!(
            matches!(&spec.target, Target::Portkey { provider: UpstreamProvider::GoogleAi, model, virtual_key: Some(_), config: None } if model == "gemini-1.5-pro")
        );
        assert_eq!(spec.name, "google-ai/gemini-1.5-pro");
        assert_eq!(entry.max_tokens, Some(300));
        assert_eq!(entry.policy, RoutingPolicy::default());
        assert_eq!(
            spec.pricing.map(|p| (p.input_per_million, p.output_per_million)),
            Some((1.0, 2.5))
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let head = "# comment\n[[models]]\nid = \"a\"\n";
        let cases = [
            (
                format!("{head}provider = \"portkey\"\nportkey_provider = \"acme\"\n"),
                "test.toml:5:",
                "unknown portkey_provider `acme`",
            ),
            (
                format!("{head}provider = \"nowhere\"\n"),
                "test.toml:4:",
                "unknown variant `nowhere`",
            ),
            (
                format!("{head}provider = \"demo\"\ncolour = 1\n"),
                "test.toml:5:",
                "unknown field `colour`",
            ),
            (
                format!(
                    "{head}provider = \"demo\"\ninput_usd_per_million = -1\noutput_usd_per_million = 1\n"
                ),
                "test.toml:5:",
                "non-negative",
            ),
            (
                format!("{head}provider = \"demo\"\nmax_tokens = 0\n"),
                "test.toml:5:",
                "max_tokens must be between 1",
            ),
            (
                format!("{head}provider = \"portkey\"\n"),
                "test.toml:2:",
                "models[0].portkey_provider: required",
            ),
            (
                format!("{head}provider = \"demo\"\nportkey_provider = \"openai\"\n"),
                "test.toml:5:",
                "only applies",
            ),
            (
                format!("{head}provider = \"demo\"\ninput_usd_per_million = 1\n"),
                "test.toml:2:",
                "go together",
            ),
            (
                format!(
                    "{head}provider = \"portkey\"\nportkey_provider = \"openai\"\nvirtual_key_env = \"VK_MISSING\"\n"
                ),
                "test.toml:6:",
                "models[0].virtual_key_env: VK_MISSING is not set",
            ),
            (
                format!("{head}provider = \"demo\"\n[[models]]\nid = \"a\"\nprovider = \"demo\"\n"),
                "test.toml:6:",
                "models[1].id: `a` is already the id of models[0]",
            ),
            (
                format!("{head}provider = \"demo\"\nid = \"again\"\n"),
                "test.toml:",
                "duplicate key",
            ),
            ("[[models]\n".to_owned(), "test.toml:1:", ""),
            (
                "\n[[models]]\nid = \"@openai/x\"\nprovider = \"demo\"\n".to_owned(),
                "test.toml:3:",
                "starts with `@`",
            ),
        ];
        for (text, location, needle) in cases {
            let message = error(&text);
            assert!(message.starts_with(location), "{location} in {message}");
            assert!(message.contains(needle), "{needle} in {message}");
        }
    }

    #[test]
    fn a_model_serves_what_all_its_targets_can_unless_it_lists_its_endpoints() {
        let catalog = parse(
            "c.toml",
            r#"
[[models]]
id = "mixed"
strategy = "fallback"
[[models.targets]]
portkey_provider = "openai"
upstream_model = "gpt-4o"
[[models.targets]]
portkey_provider = "anthropic"
upstream_model = "claude"

[[models]]
id = "gpt"
portkey_provider = "openai"

[[models]]
id = "embed"
provider = "demo"
endpoints = ["embeddings"]
"#,
            no_env,
        )
        .unwrap();
        let served = |id: &str| catalog.get(id).unwrap().endpoints.clone();
        // Anthropic has no Responses API: a model that may fall back to it neither.
        assert_eq!(served("mixed"), [Service::Chat, Service::Messages]);
        assert_eq!(
            served("gpt"),
            [Service::Chat, Service::Messages, Service::Responses]
        );
        assert_eq!(served("embed"), [Service::Embeddings]);

        let built_in = load(None, no_env).unwrap().catalog;
        assert!(
            built_in
                .get("demo-embedding-1")
                .unwrap()
                .serves(Service::Embeddings)
        );
        assert!(
            !built_in
                .get("claude-3-5-haiku-latest")
                .unwrap()
                .serves(Service::Responses)
        );
    }

    #[test]
    fn endpoints_that_cannot_be_served_or_are_unknown_stop_the_catalog() {
        let head = "[[models]]\nid = \"a\"\nportkey_provider = \"anthropic\"\n";
        for (text, needle) in [
            (
                format!("{head}endpoints = [\"chat\", \"responses\"]\n"),
                "models[0].endpoints: `responses` is not served for target `anthropic/a` (anthropic)",
            ),
            (
                format!("{head}endpoints = [\"embeddings\"]\n"),
                "`embeddings` is not served",
            ),
            (
                format!("{head}endpoints = []\n"),
                "must name at least one endpoint",
            ),
            (
                format!("{head}endpoints = [\"chat\", \"images\"]\n"),
                "unknown endpoint `images`; known: chat, embeddings, messages, responses",
            ),
            (
                format!("{head}endpoints = [\"chat\", \"chat\"]\n"),
                "`chat` is listed twice",
            ),
        ] {
            let message = error(&text);
            assert!(message.starts_with("test.toml:4:"), "{message}");
            assert!(message.contains(needle), "{needle} in {message}");
        }
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = load(Some(Path::new("/nonexistent/catalog.toml")), no_env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the catalog /nonexistent/catalog.toml"),
            "{err}"
        );
    }

    const ROUTED: &str = r#"
[routing]
retries = 1
deadline_ms = 20000

[[models]]
id = "smart"
strategy = "fallback"
input_usd_per_million = 1
output_usd_per_million = 2
routing = { breaker_failures = 3, backoff_base_ms = 50 }

[[models.targets]]
strategy = "loadbalance"

[[models.targets.targets]]
portkey_provider = "openai"
upstream_model = "gpt-4o"
weight = 80
portkey_config = { retry = { attempts = 3 } }

[[models.targets.targets]]
name = "azure-ish"
portkey_provider = "openai"
upstream_model = "gpt-4o"
weight = 20
retries = 0
input_usd_per_million = 3
output_usd_per_million = 4

[[models.targets]]
portkey_provider = "anthropic"
upstream_model = "claude-3-5-sonnet-latest"
portkey_config = "pc-backup"
virtual_key_env = "VK_ANTHROPIC"

[[models.targets]]
provider = "demo"
"#;

    #[test]
    fn a_model_lists_targets_in_groups_nested_one_level_with_its_own_routing() {
        let catalog = parse("c.toml", ROUTED, |name| {
            (name == "VK_ANTHROPIC").then(|| "vk-a".to_owned())
        })
        .unwrap();
        let entry = catalog.get("smart").unwrap();
        assert_eq!(
            entry.policy,
            RoutingPolicy {
                retries: 1,
                deadline: Duration::from_secs(20),
                breaker_failures: 3,
                backoff_base: Duration::from_millis(50),
                ..RoutingPolicy::default()
            }
        );
        let Node::Group(fallback) = &entry.targets else {
            panic!("a group: {entry:?}")
        };
        assert_eq!(fallback.strategy, Strategy::Fallback);
        let Node::Group(pool) = &fallback.members[0] else {
            panic!("a pool first: {fallback:?}")
        };
        assert_eq!(pool.strategy, Strategy::LoadBalance);
        let summary: Vec<_> = entry
            .targets
            .targets()
            .into_iter()
            .map(|spec| {
                let config = match &spec.target {
                    Target::Portkey { config, .. } => config.as_ref().map(|c| c.as_str().to_owned()),
                    Target::Demo { .. } | Target::Direct { .. } => None,
                };
                (
                    spec.name.clone(),
                    spec.weight,
                    spec.retries,
                    spec.pricing.map(|p| p.input_per_million),
                    config,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "openai/gpt-4o".to_owned(),
                    80,
                    None,
                    Some(1.0),
                    Some(r#"{"retry":{"attempts":3}}"#.to_owned())
                ),
                ("azure-ish".to_owned(), 20, Some(0), Some(3.0), None),
                (
                    "anthropic/claude-3-5-sonnet-latest".to_owned(),
                    1,
                    None,
                    Some(1.0),
                    Some("pc-backup".to_owned())
                ),
                ("demo/smart".to_owned(), 1, None, Some(1.0), None),
            ]
        );
        assert!(matches!(
            entry.primary(),
            Some(Target::Portkey {
                provider: UpstreamProvider::OpenAi,
                ..
            })
        ));
    }

    #[test]
    fn routing_mistakes_are_named_with_their_place() {
        let head = "[[models]]\nid = \"m\"\n";
        let target = "[[models.targets]]\nportkey_provider = \"openai\"\n";
        let cases = [
            (
                format!("{head}{target}weight = 5\n"),
                "test.toml:5:",
                "models[0].targets[0].weight: only applies to the targets of a `loadbalance` group",
            ),
            (
                format!("{head}strategy = \"loadbalance\"\n{target}weight = 0\n"),
                "test.toml:6:",
                "models[0].targets[0].weight: must be at least 1",
            ),
            (
                format!("{head}{target}{target}"),
                "test.toml:5:",
                "models[0].targets[1].name: `openai/m` is already the name of models[0].targets[0]",
            ),
            (
                format!("{head}portkey_provider = \"openai\"\n{target}"),
                "test.toml:3:",
                "models[0].portkey_provider: belongs to each of `targets`",
            ),
            (
                format!("{head}{target}max_tokens = 5\n"),
                "test.toml:5:",
                "models[0].targets[0].max_tokens: belongs to the model",
            ),
            (
                format!("{head}{target}cache_ttl_s = 5\n"),
                "test.toml:5:",
                "models[0].targets[0].cache_ttl_s: belongs to the model",
            ),
            (
                format!("{head}strategy = \"fallback\"\n"),
                "test.toml:3:",
                "models[0].strategy: needs `targets`",
            ),
            (
                format!("{head}targets = []\n"),
                "test.toml:3:",
                "models[0].targets: must list at least one target",
            ),
            (
                format!(
                    "{head}[[models.targets]]\n[[models.targets.targets]]\n[[models.targets.targets.targets]]\nportkey_provider = \"openai\"\n"
                ),
                "test.toml:",
                "groups nest one level only",
            ),
            (
                format!("{head}{target}portkey_config = 7\n"),
                "test.toml:5:",
                "models[0].targets[0].portkey_config: must be a JSON object or a saved config id",
            ),
            (
                format!("{head}provider = \"demo\"\nportkey_config = \"pc-1\"\n"),
                "test.toml:4:",
                "models[0].portkey_config: only applies",
            ),
            (
                "[routing]\ndeadline_ms = 0\n".to_owned(),
                "test.toml:2:",
                "between 1 ms and a day",
            ),
            (
                "[routing]\nretry = 1\n".to_owned(),
                "test.toml:2:",
                "unknown field `retry`",
            ),
        ];
        for (text, location, needle) in cases {
            let message = error(&text);
            assert!(message.starts_with(location), "{location} in {message}");
            assert!(message.contains(needle), "{needle} in {message}");
        }
    }

    fn env_with_keys(name: &str) -> Option<String> {
        match name {
            "VLLM_KEY" => Some("sk-vllm-123".into()),
            "AZURE_KEY" => Some("azure-key-456".into()),
            _ => None,
        }
    }

    const DIRECT: &str = r#"
[[upstreams]]
name = "vllm"
base_url = "http://vllm:8000/v1"
api_key_env = "VLLM_KEY"
headers = { "x-team" = "ml" }

[[upstreams]]
name = "azure-east"
base_url = "https://east.openai.azure.com"
api_key_env = "AZURE_KEY"
api_version = "2024-10-21"
endpoints = ["chat", "embeddings", "responses"]

[[models]]
id = "llama"
upstream = "vllm"
upstream_model = "meta-llama/Llama-3.1-8B"
input_usd_per_million = 0.2
output_usd_per_million = 0.4

[[models]]
id = "local"
provider = "openai-compatible"
base_url = "http://ollama:11434/v1"
upstream_model = "llama3.2"

[[models]]
id = "local-too"
base_url = "http://ollama:11434/v1"

[[models]]
id = "gpt-4o"
strategy = "fallback"
[[models.targets]]
portkey_provider = "openai"
[[models.targets]]
upstream = "azure-east"
"#;

    #[test]
    fn direct_upstreams_are_declared_or_given_inline_and_targets_name_them() {
        let Loaded { catalog, upstreams } = parse_all("test.toml", DIRECT, env_with_keys).unwrap();
        let names: Vec<&str> = upstreams.iter().map(|upstream| &**upstream.name()).collect();
        // Two inline targets with the same settings share one upstream,
        // named after the first model that gave it (never its host).
        assert_eq!(names, ["vllm", "azure-east", "local"]);
        // Only declared upstreams are routed to by `@<name>/<model>`.
        let routable: Vec<&str> = catalog.upstreams().iter().map(|name| &**name).collect();
        assert_eq!(routable, ["vllm", "azure-east"]);
        let llama = catalog.get("llama").unwrap();
        assert!(matches!(
            llama.primary(),
            Some(Target::Direct { upstream, model }) if &**upstream == "vllm" && model == "meta-llama/Llama-3.1-8B"
        ));
        assert_eq!(llama.targets.targets()[0].name, "vllm/meta-llama/Llama-3.1-8B");
        assert_eq!(llama.primary().unwrap().owner(), "vllm");
        // An upstream's default APIs: chat, messages (as chat), embeddings;
        // a model serves the generating ones unless it says.
        assert_eq!(llama.endpoints, [Service::Chat, Service::Messages]);
        let local = catalog.get("local-too").unwrap();
        assert!(matches!(
            local.primary(),
            Some(Target::Direct { upstream, model }) if &**upstream == "local" && model == "local-too"
        ));
        // Portkey and direct targets mix; the model serves what both serve.
        let mixed = catalog.get("gpt-4o").unwrap();
        let kinds: Vec<_> = mixed
            .targets
            .targets()
            .iter()
            .map(|spec| spec.target.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                gatewayz_domain::ProviderKind::Portkey,
                gatewayz_domain::ProviderKind::Direct
            ]
        );
        assert_eq!(
            mixed.endpoints,
            [Service::Chat, Service::Messages, Service::Responses]
        );
        // Prices are found by the direct upstream and its model.
        let route = Route::Direct {
            upstream: "vllm".into(),
        };
        assert_eq!(
            catalog
                .pricing(&route, "meta-llama/Llama-3.1-8B")
                .map(|p| p.input_per_million),
            Some(0.2)
        );
        let other = Route::Direct {
            upstream: "azure-east".into(),
        };
        assert_eq!(catalog.pricing(&other, "meta-llama/Llama-3.1-8B"), None);
        // Keys are read at start, and never printed.
        let printed = format!("{upstreams:?}");
        assert!(
            !printed.contains("sk-vllm-123") && !printed.contains("azure-key-456"),
            "{printed}"
        );
    }

    #[test]
    fn direct_upstream_mistakes_are_named_with_their_place() {
        let declared = "[[upstreams]]\nname = \"vllm\"\nbase_url = \"http://vllm/v1\"\n";
        let model = "[[models]]\nid = \"m\"\n";
        let cases = [
            (
                "[[upstreams]]\nname = \"vllm\"\nbase_url = \"http://vllm/v1\"\napi_key_env = \"MISSING_KEY\"\n".to_owned(),
                "test.toml:4:",
                "upstreams[0].api_key_env: MISSING_KEY is not set",
            ),
            (
                "[[upstreams]]\nbase_url = \"http://vllm/v1\"\n".to_owned(),
                "test.toml:1:",
                "upstreams[0].name: required",
            ),
            (
                "[[upstreams]]\nname = \"openai\"\nbase_url = \"http://vllm/v1\"\n".to_owned(),
                "test.toml:2:",
                "upstreams[0].name: `openai` is a provider's name",
            ),
            (
                "[[upstreams]]\nname = \"my vllm\"\nbase_url = \"http://vllm/v1\"\n".to_owned(),
                "test.toml:2:",
                "upstreams[0].name: `my vllm` must be letters, digits",
            ),
            (
                format!("{declared}{declared}"),
                "test.toml:5:",
                "upstreams[1].name: `vllm` is already the name of upstreams[0]",
            ),
            (
                "[[upstreams]]\nname = \"vllm\"\n".to_owned(),
                "test.toml:1:",
                "upstreams[0].base_url: required",
            ),
            (
                "[[upstreams]]\nname = \"vllm\"\nbase_url = \"vllm:8000\"\n".to_owned(),
                "test.toml:3:",
                "upstreams[0].base_url: `vllm:8000` is not an http:// or https:// URL",
            ),
            (
                format!("{declared}headers = {{ Authorization = \"Bearer sk-1\" }}\n"),
                "test.toml:4:",
                "upstreams[0].headers: `Authorization` cannot be a static header",
            ),
            (
                format!("{declared}api_version = \"2024/10\"\n"),
                "test.toml:4:",
                "upstreams[0].api_version: `2024/10` is not an API version",
            ),
            (
                format!("{declared}endpoints = [\"chat\", \"speech\"]\n"),
                "test.toml:4:",
                "upstreams[0].endpoints: unknown endpoint `speech`",
            ),
            (
                format!("{model}upstream = \"nope\"\n"),
                "test.toml:3:",
                "models[0].upstream: no [[upstreams]] entry is named `nope`; declared: none",
            ),
            (
                format!("{declared}{model}upstream = \"vllm\"\nbase_url = \"http://other/v1\"\n"),
                "test.toml:7:",
                "models[0].base_url: belongs to the [[upstreams]] entry that `upstream` names",
            ),
            (
                format!("{model}provider = \"openai-compatible\"\n"),
                "test.toml:1:",
                "models[0].base_url: required with provider = \"openai-compatible\"",
            ),
            (
                format!("{model}provider = \"openai-compatible\"\nbase_url = \"http://x/v1\"\nportkey_provider = \"openai\"\n"),
                "test.toml:5:",
                "models[0].portkey_provider: only applies to provider = \"portkey\"",
            ),
            (
                format!("{model}portkey_provider = \"openai\"\nprovider = \"portkey\"\nbase_url = \"http://x/v1\"\n"),
                "test.toml:5:",
                "models[0].base_url: only applies to provider = \"openai-compatible\"",
            ),
            (
                format!("{model}provider = \"demo\"\napi_key_env = \"VLLM_KEY\"\n"),
                "test.toml:4:",
                "models[0].api_key_env: only applies to provider = \"openai-compatible\"",
            ),
            (
                format!("{model}base_url = \"http://x/v1\"\nendpoints = [\"responses\"]\n"),
                "test.toml:4:",
                "models[0].endpoints: `responses` is not served for target `m/m` (m) by that upstream",
            ),
            (
                "[[upstreams]]\nname = \"emb\"\nbase_url = \"http://emb/v1\"\nendpoints = [\"embeddings\"]\n\
                 [[models]]\nid = \"e\"\nupstream = \"emb\"\n"
                    .to_owned(),
                "test.toml:5:",
                "models[0].endpoints: its targets serve none of chat, messages and responses",
            ),
            (
                "[[upstreams]]\nname = \"v\"\nbase_url = \"http://:pw-123@v/v1\"\n".to_owned(),
                "test.toml:3:",
                "upstreams[0].base_url: must not carry credentials",
            ),
            (
                format!("{model}base_url = \"http://x/v1\"\n[[models.targets]]\nupstream = \"vllm\"\n"),
                "test.toml:3:",
                "models[0].base_url: belongs to each of `targets`",
            ),
        ];
        for (text, location, needle) in cases {
            let message = parse("test.toml", &text, env_with_keys).unwrap_err().to_string();
            assert!(message.starts_with(location), "{location} in {message}\n{text}");
            assert!(message.contains(needle), "{needle} in {message}\n{text}");
        }
    }

    #[test]
    fn inline_upstreams_of_other_settings_get_names_of_their_own() {
        let text = r#"
[[upstreams]]
name = "m"
base_url = "http://declared/v1"

[[models]]
id = "m"
strategy = "fallback"
[[models.targets]]
base_url = "http://10.0.3.7:8000/v1"
[[models.targets]]
base_url = "http://10.0.3.8:8000/v1"
api_key_env = "VLLM_KEY"
"#;
        let Loaded { catalog, upstreams } = parse_all("test.toml", text, env_with_keys).unwrap();
        let names: Vec<&str> = upstreams.iter().map(|upstream| &**upstream.name()).collect();
        assert_eq!(names, ["m", "m-2", "m-3"]);
        let owners: Vec<&str> = catalog
            .get("m")
            .unwrap()
            .targets
            .targets()
            .iter()
            .map(|spec| spec.target.owner())
            .collect();
        assert_eq!(owners, ["m-2", "m-3"]);
        let printed = format!("{catalog:?}{upstreams:?}");
        assert!(!printed.contains("sk-vllm-123"), "{printed}");
    }

    #[test]
    fn a_key_that_cannot_be_sent_is_refused_without_its_text() {
        let text = "[[upstreams]]\nname = \"vllm\"\nbase_url = \"http://vllm/v1\"\napi_key_env = \"BAD\"\n";
        let message = parse("test.toml", text, |_| Some("sk bad\nkey".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("upstreams[0].api_key_env: BAD holds characters"),
            "{message}"
        );
        assert!(!message.contains("sk bad"), "{message}");
    }
}
