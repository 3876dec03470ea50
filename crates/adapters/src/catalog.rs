//! The model catalog, read from a TOML file at start and checked with errors
//! that name the file, the line and the field.

use std::fmt;
use std::path::Path;

use gatewayz_domain::{Catalog, ModelEntry, PortkeyProvider, Pricing, Target};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

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

/// Loads the catalog from `path`, or the built-in one. `env` looks up the
/// variables that entries name in `virtual_key_env`.
///
/// # Errors
/// A [`CatalogError`] naming the file, and the line and field at fault.
pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Catalog, CatalogError> {
    match path {
        None => parse(DEFAULT_CATALOG_NAME, DEFAULT_CATALOG, env),
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
                file: file.clone(),
                source,
            })?;
            parse(&file, &text, env)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    models: Vec<Spanned<RawModel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: Spanned<String>,
    provider: ProviderName,
    #[serde(default)]
    portkey_provider: Option<Spanned<ProviderSlug>>,
    #[serde(default)]
    upstream_model: Option<String>,
    #[serde(default)]
    virtual_key_env: Option<Spanned<String>>,
    #[serde(default)]
    input_usd_per_million: Option<Price>,
    #[serde(default)]
    output_usd_per_million: Option<Price>,
    #[serde(default)]
    max_tokens: Option<MaxTokens>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ProviderName {
    Portkey,
    Demo,
}

/// A `portkey_provider` name, checked as it is read.
struct ProviderSlug(PortkeyProvider);

impl<'de> Deserialize<'de> for ProviderSlug {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        PortkeyProvider::parse(&name).map(Self).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown portkey_provider `{name}`; supported: {}",
                PortkeyProvider::ALL.map(PortkeyProvider::name).join(", ")
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

/// Parses and checks a catalog's text.
///
/// # Errors
/// As [`load`].
pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Catalog, CatalogError> {
    let invalid = |offset: usize, message: String| CatalogError::Invalid {
        file: file.to_owned(),
        line: line_of(text, offset),
        message,
    };
    let raw: RawCatalog = toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        invalid(offset, error.message().trim().to_owned())
    })?;

    let mut entries = Vec::with_capacity(raw.models.len());
    for (index, spanned) in raw.models.into_iter().enumerate() {
        let at = spanned.span().start;
        let raw = spanned.into_inner();
        let field = |name: &str| format!("models[{index}].{name}");
        let id = raw.id.get_ref().trim().to_owned();
        if id.is_empty() {
            return Err(invalid(
                raw.id.span().start,
                format!("{}: must not be empty", field("id")),
            ));
        }
        if id.starts_with('@') {
            return Err(invalid(
                raw.id.span().start,
                format!(
                    "{}: `{id}` starts with `@`, which always means `@<portkey_provider>/<model>`",
                    field("id")
                ),
            ));
        }
        if let Some(previous) = entries.iter().position(|entry: &ModelEntry| entry.id == id) {
            return Err(invalid(
                raw.id.span().start,
                format!("{}: `{id}` is already the id of models[{previous}]", field("id")),
            ));
        }
        let model = raw.upstream_model.unwrap_or_else(|| id.clone());
        let target = match (raw.provider, raw.portkey_provider) {
            (ProviderName::Portkey, Some(slug)) => Target::Portkey {
                provider: slug.into_inner().0,
                model,
                virtual_key: virtual_key(raw.virtual_key_env, &env).map_err(|(offset, message)| {
                    invalid(offset, format!("{}: {message}", field("virtual_key_env")))
                })?,
            },
            (ProviderName::Portkey, None) => {
                return Err(invalid(
                    at,
                    format!(
                        "{}: required when provider = \"portkey\"",
                        field("portkey_provider")
                    ),
                ));
            }
            (ProviderName::Demo, Some(slug)) => {
                return Err(invalid(
                    slug.span().start,
                    format!(
                        "{}: only applies to provider = \"portkey\"",
                        field("portkey_provider")
                    ),
                ));
            }
            (ProviderName::Demo, None) => Target::Demo { model },
        };
        let pricing = match (raw.input_usd_per_million, raw.output_usd_per_million) {
            (Some(Price(input)), Some(Price(output))) => Some(Pricing {
                input_per_million: input,
                output_per_million: output,
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    at,
                    format!(
                        "{}: input_usd_per_million and output_usd_per_million go together",
                        field("input_usd_per_million")
                    ),
                ));
            }
        };
        entries.push(ModelEntry {
            id,
            target,
            pricing,
            max_tokens: raw.max_tokens.map(|MaxTokens(limit)| limit),
        });
    }
    Catalog::new(entries).map_err(|error| invalid(0, error.to_string()))
}

/// The virtual key an entry names, read now so a missing one stops the start.
fn virtual_key(
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
    fn the_built_in_catalog_loads_and_covers_the_demo_and_all_nine_portkey_providers() {
        let catalog = load(None, no_env).unwrap();
        assert!(matches!(
            catalog.get("demo-1").map(|entry| &entry.target),
            Some(Target::Demo { .. })
        ));
        for provider in PortkeyProvider::ALL {
            assert!(
                catalog.models().iter().any(
                    |entry| matches!(entry.target, Target::Portkey { provider: p, .. } if p == provider)
                ),
                "{provider} is missing"
            );
        }
        let route = Route::Portkey {
            provider: PortkeyProvider::OpenAi,
            virtual_key: None,
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
        assert!(
            matches!(&entry.target, Target::Portkey { provider: PortkeyProvider::GoogleAi, model, virtual_key: Some(_) } if model == "gemini-1.5-pro")
        );
        assert_eq!(entry.max_tokens, Some(300));
        assert_eq!(
            entry.pricing.map(|p| (p.input_per_million, p.output_per_million)),
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
    fn an_unreadable_file_is_named() {
        let err = load(Some(Path::new("/nonexistent/catalog.toml")), no_env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the catalog /nonexistent/catalog.toml"),
            "{err}"
        );
    }
}
