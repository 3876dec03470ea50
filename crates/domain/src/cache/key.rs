//! A cache key: SHA-256 over a canonical form of everything that decides an
//! answer, so that the same request gives the same key in every process
//! and any difference that matters gives another.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use secrecy::ExposeSecret;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::model::ChatRequest;
use crate::route::Route;

/// The version of the canonical form: a change of it makes every key new.
const FORM: &[u8] = b"gatewayz-cache-v1";

/// Body members that do not decide the answer: how it is delivered, and who
/// the client says its end user is.
const UNDECIDING: [&str; 3] = ["stream", "stream_options", "user"];

/// Body members that route the request: the upstream they pick is part of
/// the key instead ([`UpstreamPart`]).
const ROUTING: [&str; 4] = [
    "provider",
    "portkey_provider",
    "portkey_virtual_key",
    "portkey_config",
];

/// A cache key: 32 bytes, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// One upstream a request may be answered by: the route (provider, and the
/// Portkey credentials and config that pick an account or a model), the
/// model the upstream is asked for, and the output limit the gateway adds
/// when the client sets none.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPart<'a> {
    pub route: &'a Route,
    pub model: &'a str,
    pub default_max_tokens: Option<i64>,
}

/// What a request's key is made of.
#[derive(Debug)]
pub struct KeyParts<'a> {
    pub request: &'a ChatRequest,
    /// The catalog model, when one routes the request.
    pub catalog_model: Option<&'a str>,
    /// Every upstream that may answer: the one of a direct route, or each
    /// target of a catalog model, in the catalog's order.
    pub upstreams: &'a [UpstreamPart<'a>],
    /// The gateway key's id; `None` for a model whose answers every key
    /// shares.
    pub scope: Option<&'a str>,
    /// Headers passed on upstream (Anthropic's version and betas).
    pub headers: &'a [(&'static str, String)],
}

impl KeyParts<'_> {
    /// The key: SHA-256 of the canonical form of the parts.
    pub fn key(&self) -> CacheKey {
        let mut hash = Sha256::new();
        field(&mut hash, FORM);
        field(&mut hash, self.request.endpoint().as_str().as_bytes());
        optional(&mut hash, self.catalog_model.map(str::as_bytes));
        field(&mut hash, &self.upstreams.len().to_le_bytes());
        for upstream in self.upstreams {
            upstream_part(&mut hash, upstream);
        }
        optional(&mut hash, self.scope.map(str::as_bytes));
        field(&mut hash, &self.headers.len().to_le_bytes());
        for (name, value) in self.headers {
            field(&mut hash, name.as_bytes());
            field(&mut hash, value.as_bytes());
        }
        // The body's members, by name, each value in canonical form.
        let members: BTreeMap<&str, &[u8]> = self
            .request
            .members()
            .filter(|(name, _)| !UNDECIDING.contains(name) && !ROUTING.contains(name))
            .collect();
        field(&mut hash, &members.len().to_le_bytes());
        for (name, value) in members {
            field(&mut hash, name.as_bytes());
            // Hashed as it is written, never held: a JSON value delimits
            // itself.
            canonical_json(value, &mut hash);
        }
        CacheKey(hash.finalize().into())
    }
}

/// Feeds `bytes` with its length first, so that no two sequences of fields
/// feed the same bytes.
fn field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

fn optional(hash: &mut Sha256, bytes: Option<&[u8]>) {
    match bytes {
        None => hash.update([0]),
        Some(bytes) => {
            hash.update([1]);
            field(hash, bytes);
        }
    }
}

fn upstream_part(hash: &mut Sha256, upstream: &UpstreamPart<'_>) {
    field(hash, upstream.route.kind().as_str().as_bytes());
    // The Portkey provider, or the direct upstream's name.
    optional(hash, upstream.route.upstream_name().map(str::as_bytes));
    if let Route::Portkey {
        virtual_key, config, ..
    } = upstream.route
    {
        // Only their digest is kept: the key is a hash.
        optional(
            hash,
            virtual_key.as_ref().map(|key| key.expose_secret().as_bytes()),
        );
        optional(hash, config.as_ref().map(|config| config.as_str().as_bytes()));
    }
    field(hash, upstream.model.as_bytes());
    optional(
        hash,
        upstream
            .default_max_tokens
            .map(i64::to_le_bytes)
            .as_ref()
            .map(<[u8; 8]>::as_slice),
    );
}

/// Writes the JSON text `value` in canonical form: objects' members sorted
/// by name, no insignificant whitespace. Strings and numbers are kept as
/// written (a number written two ways is two keys: a miss, never a wrong
/// answer). Text that is not JSON is written as it is.
///
/// Each level is read as borrowed slices of the one below, so no tree of
/// the value is built; below [`CANONICAL_DEPTH`] levels a value is written
/// as it came (a client that writes one request two ways that deep gets a
/// miss), so that a deeply nested body costs its size, not its size times
/// its depth.
pub(crate) fn canonical_json(value: &[u8], out: &mut impl Write) {
    canonical(value, out, 0);
}

/// How deep a value is put in canonical form: a message's members, and a
/// content part's.
const CANONICAL_DEPTH: usize = 4;

fn canonical(value: &[u8], out: &mut impl Write, depth: usize) {
    let trimmed = value.trim_ascii();
    if depth >= CANONICAL_DEPTH {
        write(out, trimmed);
        return;
    }
    match trimmed.first() {
        Some(b'{') => match serde_json::from_slice::<BTreeMap<String, &RawValue>>(trimmed) {
            Ok(members) => {
                write(out, b"{");
                for (index, (name, value)) in members.iter().enumerate() {
                    if index > 0 {
                        write(out, b",");
                    }
                    // A string serializes without fail.
                    let _ = serde_json::to_writer(&mut *out, name);
                    write(out, b":");
                    canonical(value.get().as_bytes(), out, depth + 1);
                }
                write(out, b"}");
            }
            Err(_) => write(out, trimmed),
        },
        Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(trimmed) {
            Ok(items) => {
                write(out, b"[");
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        write(out, b",");
                    }
                    canonical(item.get().as_bytes(), out, depth + 1);
                }
                write(out, b"]");
            }
            Err(_) => write(out, trimmed),
        },
        _ => write(out, trimmed),
    }
}

/// Writes to a hash or a buffer, which never fail.
fn write(out: &mut impl Write, bytes: &[u8]) {
    let _ = out.write_all(bytes);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::model::Endpoint;

    fn canonical(text: &str) -> String {
        let mut out = Vec::new();
        canonical_json(text.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest::parse_for(Endpoint::Chat, Bytes::from(text.to_owned())).unwrap()
    }

    fn key_of(text: &str, scope: Option<&str>) -> CacheKey {
        let request = request(text);
        let route = Route::Demo;
        let upstreams = [UpstreamPart {
            route: &route,
            model: "demo-1",
            default_max_tokens: None,
        }];
        KeyParts {
            request: &request,
            catalog_model: Some("demo-1"),
            upstreams: &upstreams,
            scope,
            headers: &[],
        }
        .key()
    }

    #[test]
    fn objects_are_sorted_and_whitespace_dropped_at_every_depth() {
        assert_eq!(
            canonical(r#" { "b" : [ 1 , { "z": null, "a": "x y" } ], "a": true } "#),
            r#"{"a":true,"b":[1,{"a":"x y","z":null}]}"#
        );
    }

    #[test]
    fn below_its_depth_a_value_is_kept_as_written() {
        assert_eq!(
            canonical(r#"{"m": [{"c": {"b": 1, "a": {"z": 1, "y": 2}}}]}"#),
            r#"{"m":[{"c":{"a":{"z": 1, "y": 2},"b":1}}]}"#
        );
    }

    #[test]
    fn the_same_request_written_differently_has_the_same_key() {
        let one = key_of(
            r#"{"model": "demo-1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}"#,
            Some("k"),
        );
        let two = key_of(
            r#"{"temperature":0.5,"messages":[{"content":"hi","role":"user"}],"model":"demo-1","stream":true,
               "stream_options":{"include_usage":true},"user":"u-1"}"#,
            Some("k"),
        );
        assert_eq!(one, two);
    }

    #[test]
    fn any_field_that_decides_the_answer_changes_the_key() {
        let base = r#"{"model": "demo-1", "messages": [{"role": "user", "content": "hi"}]}"#;
        let key = key_of(base, Some("k"));
        for changed in [
            r#"{"model": "demo-1", "messages": [{"role": "user", "content": "hi!"}]}"#,
            r#"{"model": "demo-1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}"#,
            r#"{"model": "demo-1", "messages": [{"role": "user", "content": "hi"}], "tools": []}"#,
            r#"{"model": "demo-1", "messages": [{"role": "user", "content": "hi"}], "seed": 1}"#,
            r#"{"model": "demo-2", "messages": [{"role": "user", "content": "hi"}]}"#,
        ] {
            assert_ne!(key_of(changed, Some("k")), key, "{changed}");
        }
        assert_ne!(key_of(base, Some("other")), key);
        assert_ne!(key_of(base, None), key);
    }

    #[test]
    fn the_upstream_and_the_api_are_part_of_the_key() {
        let request = request(r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#);
        let demo = Route::Demo;
        let openai = Route::Portkey {
            provider: crate::provider::UpstreamProvider::OpenAi,
            virtual_key: None,
            config: None,
        };
        let anthropic = Route::Portkey {
            provider: crate::provider::UpstreamProvider::Anthropic,
            virtual_key: None,
            config: None,
        };
        let with_key = Route::Portkey {
            provider: crate::provider::UpstreamProvider::OpenAi,
            virtual_key: Some("vk-1".to_owned().into()),
            config: None,
        };
        let vllm = Route::Direct {
            upstream: "vllm".into(),
        };
        let ollama = Route::Direct {
            upstream: "ollama".into(),
        };
        let keys: Vec<CacheKey> = [
            (&demo, "m", None),
            (&vllm, "m", None),
            (&ollama, "m", None),
            (&openai, "m", None),
            (&anthropic, "m", None),
            (&with_key, "m", None),
            (&openai, "m2", None),
            (&openai, "m", Some(100)),
        ]
        .into_iter()
        .map(|(route, model, default_max_tokens)| {
            KeyParts {
                request: &request,
                catalog_model: None,
                upstreams: &[UpstreamPart {
                    route,
                    model,
                    default_max_tokens,
                }],
                scope: None,
                headers: &[],
            }
            .key()
        })
        .collect();
        for (index, key) in keys.iter().enumerate() {
            assert!(!keys[index + 1..].contains(key), "{index}");
        }
        let embeddings = ChatRequest::parse_for(
            Endpoint::Embeddings,
            Bytes::from(r#"{"model": "m", "input": "hi"}"#),
        )
        .unwrap();
        let parts = |request| KeyParts {
            request,
            catalog_model: None,
            upstreams: &[],
            scope: None,
            headers: &[],
        };
        assert_ne!(parts(&embeddings).key(), parts(&request).key());
    }

    #[test]
    fn a_key_shows_as_64_hex_digits() {
        let key = key_of(r#"{"model": "demo-1", "messages": []}"#, None);
        let shown = key.to_string();
        assert_eq!(shown.len(), 64);
        assert!(shown.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }
}
