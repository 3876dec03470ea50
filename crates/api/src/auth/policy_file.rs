//! Key policy files: a `GATEWAYZ_API_KEYS_FILE` whose name ends in `.toml`
//! lists each key by the SHA-256 of the key, with its id and its limits.
//!
//! ```toml
//! [[keys]]
//! id = "team-a"
//! key_sha256 = "<64 hex digits>"
//! models = ["gpt-4o-mini", "demo-*"]
//! rpm = 60
//! budget_usd = 10.0
//! budget_period = "day"
//! ```
//!
//! A file is taken whole or not at all: the first fault refuses it, named by
//! file, line and field (`keys.toml:7: keys[1].rpm: must be a positive
//! integer, got 0`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use gatewayz_domain::limits::{BudgetPeriod, KeyPolicy, ModelPattern, SpendLimit};
use gatewayz_domain::text::quote;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::entry::{KeyDigest, KeyEntry, parse_hex};
use super::error::KeySetupError;

/// Whether `path` names a policy file rather than a plain list of keys.
pub(super) fn is_policy_file(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|extension| extension == "toml")
}

/// The keys of a policy file's text; `file` names it in errors.
pub(super) fn parse(file: &str, text: &str) -> Result<Vec<KeyEntry>, KeySetupError> {
    let reader = Reader { file, text };
    let raw: RawFile = toml::Deserializer::parse(text)
        .map_err(|error| reader.fault(error.span(), error.message().trim().to_owned()))
        .and_then(|deserializer| {
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let message = describe(error.path(), error.inner().message().trim());
                reader.fault(error.inner().span(), message)
            })
        })?;
    if raw.keys.is_empty() {
        // More likely caught half-written than meant to lock every client out.
        return Err(KeySetupError::Empty(file.to_owned()));
    }
    let mut entries: Vec<KeyEntry> = Vec::with_capacity(raw.keys.len());
    let mut seen = Seen::default();
    for (index, key) in raw.keys.into_iter().enumerate() {
        let path = format!("keys[{index}]");
        let key = key.into_inner();
        reader.unique(&path, index, &key, &mut seen)?;
        entries.push(reader.entry(&path, key)?);
    }
    Ok(entries)
}

/// The ids and keys of the entries read so far, with their index.
#[derive(Default)]
struct Seen {
    ids: HashMap<String, usize>,
    digests: HashMap<KeyDigest, usize>,
}

/// One policy file's text, with what its errors need to name the place.
struct Reader<'a> {
    file: &'a str,
    text: &'a str,
}

impl Reader<'_> {
    fn fault(&self, span: Option<Range<usize>>, message: String) -> KeySetupError {
        KeySetupError::Policy {
            file: self.file.to_owned(),
            line: line_of(self.text, span.map_or(0, |span| span.start)),
            message,
        }
    }

    fn at(&self, span: Range<usize>, path: &str, field: &str, message: impl Into<String>) -> KeySetupError {
        self.fault(Some(span), format!("{path}.{field}: {}", message.into()))
    }

    /// An id or a key already given by an earlier entry is a fault.
    fn unique(&self, path: &str, index: usize, key: &RawKey, seen: &mut Seen) -> Result<(), KeySetupError> {
        let id = &key.id.get_ref().0;
        if let Some(other) = seen.ids.insert(id.clone(), index) {
            return Err(self.at(
                key.id.span(),
                path,
                "id",
                format!("`{id}` is already the id of keys[{other}]"),
            ));
        }
        if let Some(other) = seen.digests.insert(key.key_sha256.get_ref().0, index) {
            return Err(self.at(
                key.key_sha256.span(),
                path,
                "key_sha256",
                format!("the same key as keys[{other}]"),
            ));
        }
        Ok(())
    }

    /// The checks that span fields: models named, a budget with its period.
    fn entry(&self, path: &str, key: RawKey) -> Result<KeyEntry, KeySetupError> {
        let id = key.id.get_ref().0.clone();
        let digest = key.key_sha256.get_ref().0;
        let models = key.models.map(|models| self.models(path, models)).transpose()?;
        let budget = match (key.budget_usd, key.budget_period) {
            (None, None) => None,
            (Some(usd), Some(period)) => Some(SpendLimit {
                usd: usd.get_ref().0,
                period: period.get_ref().0,
            }),
            (Some(usd), None) => {
                return Err(self.at(
                    usd.span(),
                    path,
                    "budget_period",
                    "required with budget_usd: hour, day, week, month or total",
                ));
            }
            (None, Some(period)) => {
                return Err(self.at(
                    period.span(),
                    path,
                    "budget_period",
                    "applies only with budget_usd",
                ));
            }
        };
        Ok(KeyEntry {
            digest,
            policy: Arc::new(KeyPolicy {
                id,
                models,
                rpm: key.rpm.map(|limit| limit.0),
                tpm: key.tpm.map(|limit| limit.0),
                max_parallel: key.max_parallel.map(|limit| limit.0),
                budget,
                expires_at: key.expires_at.map(|expiry| expiry.0),
                labels: key.labels,
                cache_ttl: key.cache_ttl_s.map(|ttl| std::time::Duration::from_secs(ttl.0)),
            }),
        })
    }

    /// An allow list: at least one model, none empty. (An empty list would
    /// refuse every model; leaving it out allows them all.)
    fn models(
        &self,
        path: &str,
        models: Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<ModelPattern>, KeySetupError> {
        if models.get_ref().is_empty() {
            return Err(self.at(
                models.span(),
                path,
                "models",
                "lists no model; leave it out to allow every model",
            ));
        }
        models
            .into_inner()
            .into_iter()
            .enumerate()
            .map(|(index, model)| {
                if model.get_ref().trim().is_empty() {
                    Err(self.at(
                        model.span(),
                        path,
                        &format!("models[{index}]"),
                        "must not be empty",
                    ))
                } else {
                    Ok(ModelPattern::new(model.into_inner()))
                }
            })
            .collect()
    }
}

/// A deserialization error's message, prefixed with the field it is about
/// (`keys[1].rpm`): serde's "missing field `id`" reads `keys[1].id: required`.
fn describe(path: &serde_path_to_error::Path, message: &str) -> String {
    use serde_path_to_error::Segment;
    let mut field = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            // `Spanned` wraps each value in a private field of its own.
            Segment::Map { key } if key.starts_with("$__serde_spanned_private") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    let (field, message) = match message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        Some(missing) if field.is_empty() => (missing.to_owned(), "required"),
        Some(missing) => (format!("{field}.{missing}"), "required"),
        None => (field, message),
    };
    if field.is_empty() {
        message.to_owned()
    } else {
        format!("{field}: {message}")
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Spanned so that a missing field is reported at its entry's line.
    #[serde(default)]
    keys: Vec<Spanned<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: Spanned<PolicyId>,
    key_sha256: Spanned<Sha256Hex>,
    models: Option<Spanned<Vec<Spanned<String>>>>,
    rpm: Option<Positive>,
    tpm: Option<Positive>,
    max_parallel: Option<Positive>,
    budget_usd: Option<Spanned<Usd>>,
    budget_period: Option<Spanned<Period>>,
    expires_at: Option<Expiry>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    cache_ttl_s: Option<CacheTtl>,
}

/// How long a key's answers are cached, in whole seconds: at most a year,
/// and 0 turns the cache off for the key.
struct CacheTtl(u64);

impl<'de> Deserialize<'de> for CacheTtl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        gatewayz_domain::cache::ttl_from_seconds(i64::deserialize(deserializer)?)
            .map(|ttl| Self(ttl.as_secs()))
            .map_err(de::Error::custom)
    }
}

/// A key's id: it names the key in URLs (`/admin/keys/{id}`), log lines
/// and metric labels, so it is kept to a plain, bounded alphabet.
struct PolicyId(String);

impl<'de> Deserialize<'de> for PolicyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        let plain = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
        if (1..=64).contains(&id.len()) && id.bytes().all(plain) {
            Ok(Self(id))
        } else {
            Err(de::Error::custom(format!(
                "must be 1 to 64 letters, digits, `.`, `_` or `-`, got `{}`",
                quote(&id)
            )))
        }
    }
}

/// The SHA-256 of a key, in hex. Never echoed in an error: a key pasted
/// here by mistake must not reach the log.
struct Sha256Hex(KeyDigest);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        parse_hex(&hex).map(Self).ok_or_else(|| {
            de::Error::custom(
                "must be 64 hex digits, the SHA-256 of the key (`printf %s \"$KEY\" | sha256sum`)",
            )
        })
    }
}

/// A limit: a whole number of at least 1.
struct Positive(u64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PositiveVisitor;
        impl Visitor<'_> for PositiveVisitor {
            type Value = Positive;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Positive, E> {
                if value == 0 {
                    return Err(E::custom("must be a positive integer, got 0"));
                }
                Ok(Positive(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Positive, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::custom(format!("must be a positive integer, got {value}"))),
                }
            }
        }
        deserializer.deserialize_any(PositiveVisitor)
    }
}

/// A budget: a positive, finite number of dollars.
struct Usd(f64);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsdVisitor;
        impl Visitor<'_> for UsdVisitor {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive number of US dollars")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Usd, E> {
                if value.is_finite() && value > 0.0 {
                    Ok(Usd(value))
                } else {
                    Err(E::custom(format!(
                        "must be a positive number of US dollars, got {value}"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Usd, E> {
                self.visit_f64(value as f64)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Usd, E> {
                self.visit_f64(value as f64)
            }
        }
        deserializer.deserialize_any(UsdVisitor)
    }
}

/// A budget's period.
struct Period(BudgetPeriod);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        BudgetPeriod::parse(&name).map(Self).ok_or_else(|| {
            de::Error::custom(format!(
                "must be hour, day, week, month or total, got `{}`",
                quote(&name)
            ))
        })
    }
}

/// When the key expires: an RFC 3339 time with an offset, quoted or as a
/// TOML date-time; kept as Unix seconds.
struct Expiry(i64);

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = match toml::Value::deserialize(deserializer)? {
            toml::Value::String(text) => text,
            toml::Value::Datetime(datetime) => datetime.to_string(),
            other => {
                return Err(de::Error::custom(format!(
                    "must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\", got {}",
                    other.type_str()
                )));
            }
        };
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map(|at| Self(at.unix_timestamp()))
            .map_err(|_| {
                de::Error::custom(format!(
                    "must be an RFC 3339 time with its offset, such as \"2027-01-01T00:00:00Z\", got `{}`",
                    quote(&text)
                ))
            })
    }
}

#[cfg(test)]
mod tests;
