//! A Portkey config: routing that Portkey applies itself, for users who keep
//! their routing in Portkey. The gateway carries it to the Portkey adapter,
//! reading of it only whether it retries and which credentials it holds.

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use crate::error::ValidationError;
use crate::text::json_type;

/// A Portkey config: a saved config's id (`pc-...`) or an inline JSON
/// object. An inline config may hold provider keys: its `Debug` shows only
/// its size.
#[derive(Clone)]
pub struct PortkeyRouting {
    /// The id, or the object as compact JSON.
    text: Arc<str>,
    /// The credentials an inline config holds, to scrub from what an
    /// upstream echoes.
    secrets: Arc<[SecretString]>,
    /// Whether Portkey retries under this config (see [`Self::retries_upstream`]).
    retries: bool,
}

impl PortkeyRouting {
    /// Reads a config from a request field or a catalog entry: an object, an
    /// object's JSON text, or a saved config's id.
    ///
    /// What the Portkey adapter can send of a config (its size, its
    /// characters) is the adapter's to check: see
    /// [`RoutingFieldRules`](crate::ports::RoutingFieldRules).
    ///
    /// # Errors
    /// A [`ValidationError`] on `param` for anything else.
    pub fn from_value(param: &str, value: Value) -> Result<Self, ValidationError> {
        let invalid =
            |message: String| ValidationError::new(param, message).with_code("invalid_portkey_config");
        let object = match value {
            Value::Object(object) => object,
            Value::String(text) if text.trim_start().starts_with('{') => {
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => object,
                    _ => {
                        return Err(invalid(format!(
                            "`{param}` looks like JSON but is not a JSON object"
                        )));
                    }
                }
            }
            Value::String(id) => return Self::saved(param, &id),
            other => {
                return Err(invalid(format!(
                    "`{param}` must be a JSON object or a saved config id (`pc-...`), got {}",
                    json_type(&other)
                )));
            }
        };
        let retries = object.get("retry").is_some_and(retries_in) || targets_retry(&object);
        let mut secrets = Vec::new();
        credentials_in(&object, &mut secrets);
        Ok(Self {
            text: Value::Object(object).to_string().into(),
            secrets: secrets.into(),
            retries,
        })
    }

    fn saved(param: &str, id: &str) -> Result<Self, ValidationError> {
        let id = id.trim();
        // An id is a name: not a number, a boolean or an array in disguise.
        if id.is_empty()
            || id.len() > 256
            || !id.bytes().all(|byte| byte.is_ascii_graphic())
            || serde_json::from_str::<Value>(id).is_ok()
        {
            return Err(ValidationError::new(
                param,
                format!("`{param}` must be a JSON object or a saved config id (`pc-...`)"),
            )
            .with_code("invalid_portkey_config"));
        }
        Ok(Self {
            text: id.into(),
            secrets: Arc::new([]),
            // A saved config's content is not known here: it may hold retries,
            // so Portkey is left to do them (one layer of retries only).
            retries: true,
        })
    }

    /// The credentials an inline config holds (the string values of its
    /// fields named like `api_key`, `virtual_key`, `token`, `secret`).
    pub fn secrets(&self) -> &[SecretString] {
        &self.secrets
    }

    /// The config as Portkey reads it: the id, or the object as compact
    /// JSON.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether Portkey may retry under this config: an inline config with a
    /// `retry` of one attempt or more (at its top or in a target), or any
    /// saved config (whose content the gateway cannot see). Gatewayz then
    /// does not retry the target itself.
    pub const fn retries_upstream(&self) -> bool {
        self.retries
    }
}

impl PartialEq for PortkeyRouting {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PortkeyRouting {}

/// Collects the string values of credential-like fields, at any depth.
fn credentials_in(object: &serde_json::Map<String, Value>, found: &mut Vec<SecretString>) {
    const NAMES: [&str; 5] = ["key", "token", "secret", "authorization", "password"];
    for (name, value) in object {
        let name = name.to_ascii_lowercase();
        match value {
            Value::String(text) if !text.is_empty() && NAMES.iter().any(|part| name.contains(part)) => {
                found.push(SecretString::from(text.clone()));
            }
            Value::Object(inner) => credentials_in(inner, found),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        credentials_in(inner, found);
                    }
                }
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for PortkeyRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.text.starts_with('{') {
            write!(f, "PortkeyRouting(inline, {} bytes)", self.text.len())
        } else {
            write!(f, "PortkeyRouting({:?})", self.text)
        }
    }
}

/// Whether a `retry` block asks for at least one attempt.
fn retries_in(retry: &Value) -> bool {
    match retry.get("attempts") {
        Some(attempts) => attempts.as_f64().is_some_and(|attempts| attempts >= 1.0),
        // `"retry": {}` uses Portkey's default attempts.
        None => retry.is_object(),
    }
}

fn targets_retry(object: &serde_json::Map<String, Value>) -> bool {
    object
        .get("targets")
        .and_then(Value::as_array)
        .is_some_and(|targets| {
            targets
                .iter()
                .filter_map(Value::as_object)
                .any(|target| target.get("retry").is_some_and(retries_in) || targets_retry(target))
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_and_their_json_text_become_compact_json_and_ids_stay_as_sent() {
        let inline = PortkeyRouting::from_value("c", json!({"strategy": {"mode": "fallback"}})).unwrap();
        assert_eq!(inline.as_str(), r#"{"strategy":{"mode":"fallback"}}"#);
        assert!(!inline.retries_upstream());
        let text = PortkeyRouting::from_value("c", json!(r#" {"cache": {"mode": "simple"}}"#)).unwrap();
        assert_eq!(text.as_str(), r#"{"cache":{"mode":"simple"}}"#);
        let saved = PortkeyRouting::from_value("c", json!("pc-abc-123")).unwrap();
        assert_eq!(saved.as_str(), "pc-abc-123");
        assert!(saved.retries_upstream());
    }

    #[test]
    fn a_retry_anywhere_in_an_inline_config_means_portkey_retries() {
        let cases = [
            (json!({"retry": {"attempts": 3}}), true),
            (json!({"retry": {"attempts": 0}}), false),
            (json!({"retry": {}}), true),
            (
                json!({"targets": [{"provider": "openai"}, {"targets": [{"retry": {"attempts": 2}}]}]}),
                true,
            ),
            (json!({"targets": [{"provider": "openai"}]}), false),
        ];
        for (config, retries) in cases {
            let parsed = PortkeyRouting::from_value("c", config.clone()).unwrap();
            assert_eq!(parsed.retries_upstream(), retries, "{config}");
        }
    }

    #[test]
    fn an_inline_config_never_shows_its_content_in_debug() {
        let config =
            PortkeyRouting::from_value("c", json!({"targets": [{"api_key": "sk-secret-in-config"}]}))
                .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        let secrets: Vec<_> = config
            .secrets()
            .iter()
            .map(|secret| secrecy::ExposeSecret::expose_secret(secret).to_owned())
            .collect();
        assert_eq!(secrets, ["sk-secret-in-config"]);
        assert_eq!(shown, "PortkeyRouting(inline, 47 bytes)");
    }

    #[test]
    fn anything_else_is_refused_with_the_field_named() {
        let cases = [
            (json!(7), "got a number"),
            (json!([1]), "got an array"),
            (json!(""), "saved config id"),
            (json!("pc with spaces"), "saved config id"),
            (json!("{not json"), "not a JSON object"),
            (json!("[1, 2]"), "saved config id"),
            (json!("[1,2]"), "saved config id"),
            (json!("7"), "saved config id"),
            (json!("true"), "saved config id"),
        ];
        for (value, needle) in cases {
            let error = PortkeyRouting::from_value("portkey_config", value.clone()).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("portkey_config"));
            assert_eq!(error.code.as_deref(), Some("invalid_portkey_config"));
            assert!(error.message.contains(needle), "{value}: {}", error.message);
        }
    }
}
