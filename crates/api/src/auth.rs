//! Gateway keys: who may call the gateway.
//!
//! Keys are kept only as SHA-256 digests and a presented key is compared with
//! every one of them in constant time, so neither a key nor its length leaks
//! through timing, and no key is held in memory in the clear. An entry is a
//! plain key or `sha256:<hex>` of one. Keys come from `GATEWAYZ_API_KEYS` and
//! from `GATEWAYZ_API_KEYS_FILE`, which is re-read when it changes.

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// The key a local quick start uses when no key is configured. It is public
/// (the README prints it), so it is only accepted on a loopback listener.
pub const LOCAL_DEV_KEY: &str = "gwz-local-dev-key";

type KeyDigest = [u8; 32];

/// A key's non-secret name for logs: the first 8 hex digits of its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId(pub String);

impl KeyId {
    fn of(digest: &KeyDigest) -> Self {
        use std::fmt::Write as _;
        let mut id = String::with_capacity(8);
        for byte in &digest[..4] {
            // Writing to a String cannot fail.
            let _ = write!(id, "{byte:02x}");
        }
        Self(id)
    }
}

/// Why a set of key entries cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeySetupError {
    #[error(
        "no gateway key is configured and the gateway binds {0}, which is not a loopback address: \
         set GATEWAYZ_API_KEYS or GATEWAYZ_API_KEYS_FILE"
    )]
    NoKeysOffLoopback(SocketAddr),
    #[error("{source_name}: entry {entry}: `sha256:` must be followed by 64 hex digits")]
    BadDigest { source_name: String, entry: usize },
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0} holds no key (or is not UTF-8)")]
    Empty(String),
}

/// Parses key entries: each plain or `sha256:<64 hex>`; blank ones skipped.
fn parse_entries<'a>(
    entries: impl Iterator<Item = &'a str>,
    source_name: &str,
) -> Result<Vec<KeyDigest>, KeySetupError> {
    entries
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(index, entry)| match entry.strip_prefix("sha256:") {
            Some(hex) => parse_hex(hex).ok_or_else(|| KeySetupError::BadDigest {
                source_name: source_name.to_owned(),
                entry: index + 1,
            }),
            None => Ok(digest(entry)),
        })
        .collect()
}

fn parse_hex(hex: &str) -> Option<KeyDigest> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0_u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

/// The entries of a keys file: one a line, `#` starting a comment.
fn read_file(path: &Path) -> Result<Vec<KeyDigest>, KeySetupError> {
    let bytes = std::fs::read(path).map_err(|error| KeySetupError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse_file(path, &bytes)
}

/// A file with no key at all is refused: more likely caught half-written
/// than meant to lock every client out.
fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<KeyDigest>, KeySetupError> {
    let name = path.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|_| KeySetupError::Empty(name.clone()))?;
    let lines = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default());
    let digests = parse_entries(lines, &name)?;
    if digests.is_empty() {
        return Err(KeySetupError::Empty(name));
    }
    Ok(digests)
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// The set of gateway keys a request may present. Cheap to clone; a reload
/// swaps the set for every clone at once.
#[derive(Clone)]
pub struct GatewayKeys {
    fixed: Arc<[KeyDigest]>,
    current: Arc<ArcSwap<Vec<KeyDigest>>>,
    file: Option<PathBuf>,
    local_dev: bool,
}

impl std::fmt::Debug for GatewayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKeys")
            .field("count", &self.current.load().len())
            .field("file", &self.file)
            .field("local_dev", &self.local_dev)
            .finish()
    }
}

impl GatewayKeys {
    /// Builds the key set from `GATEWAYZ_API_KEYS` and the keys file. Without
    /// either, a loopback listener accepts [`LOCAL_DEV_KEY`]; any other
    /// refuses to start.
    ///
    /// # Errors
    /// A malformed entry, an unreadable file, or no keys off loopback.
    pub fn from_config(
        keys: Option<&SecretString>,
        file: Option<&Path>,
        bind: SocketAddr,
    ) -> Result<Self, KeySetupError> {
        let fixed = match keys {
            Some(keys) => parse_entries(keys.expose_secret().split(','), "GATEWAYZ_API_KEYS")?,
            None => Vec::new(),
        };
        let from_file = match file {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        };
        let local_dev = fixed.is_empty() && file.is_none();
        if local_dev && !bind.ip().is_loopback() {
            return Err(KeySetupError::NoKeysOffLoopback(bind));
        }
        let fixed: Arc<[KeyDigest]> = if local_dev {
            vec![digest(LOCAL_DEV_KEY)].into()
        } else {
            fixed.into()
        };
        let current = [&fixed[..], &from_file[..]].concat();
        Ok(Self {
            fixed,
            current: Arc::new(ArcSwap::from_pointee(current)),
            file: file.map(Path::to_path_buf),
            local_dev,
        })
    }

    /// Whether the gateway runs on the public local development key.
    pub fn is_local_dev(&self) -> bool {
        self.local_dev
    }

    /// The id of `presented` if it is one of the keys. Takes the same time
    /// whichever key matches, or none.
    pub fn verify(&self, presented: &str) -> Option<KeyId> {
        let presented = digest(presented);
        let found = self
            .current
            .load()
            .iter()
            .fold(Choice::from(0), |found, known| found | known.ct_eq(&presented));
        bool::from(found).then(|| KeyId::of(&presented))
    }

    /// Re-reads the keys file and swaps in its keys. A file that cannot be
    /// read or parsed leaves the current keys in place.
    ///
    /// # Errors
    /// Why the file was not taken.
    pub fn reload(&self) -> Result<usize, KeySetupError> {
        let Some(path) = &self.file else { return Ok(0) };
        Ok(self.take(&read_file(path)?))
    }

    /// Swaps in the file's keys, beside the environment's.
    fn take(&self, from_file: &[KeyDigest]) -> usize {
        self.current
            .store(Arc::new([&self.fixed[..], from_file].concat()));
        from_file.len()
    }

    /// Checks the keys file every `interval` and reloads it when its content
    /// changed, telling `reloaded` whether the new version was taken, until
    /// the returned task is dropped or aborted.
    pub fn watch<F>(
        &self,
        interval: Duration,
        reloaded: F,
    ) -> Option<impl std::future::Future<Output = ()> + Send + use<F>>
    where
        F: Fn(bool) + Send + 'static,
    {
        let path = self.file.clone()?;
        let keys = self.clone();
        Some(async move {
            let mut seen = std::fs::read(&path).ok();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = std::fs::read(&path).ok();
                if now == seen {
                    continue;
                }
                seen = now;
                // What was just read is what is parsed: no second read.
                let parsed = match &seen {
                    Some(bytes) => parse_file(&path, bytes).map(|digests| keys.take(&digests)),
                    None => keys.reload(),
                };
                match parsed {
                    Ok(count) => {
                        tracing::info!(file = %path.display(), keys = count, "gateway keys reloaded");
                        reloaded(true);
                    }
                    Err(error) => {
                        tracing::error!(%error, "gateway keys file rejected; the previous keys stay");
                        reloaded(false);
                    }
                }
            }
        })
    }
}

/// Proof that the request carried a valid gateway key. Extract it first in a
/// handler so an unauthenticated body is never read.
#[derive(Debug)]
pub struct Authenticated;

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(request))
    }
}

fn authenticate(request: &HttpRequest) -> Result<Authenticated, ApiError> {
    let keys = request
        .app_data::<web::Data<GatewayKeys>>()
        .ok_or_else(|| ApiError::internal("Gateway keys are not configured"))?;
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "Missing gateway key: send `Authorization: Bearer <gateway key>`",
            "missing_api_key",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(ApiError::unauthorized(
            "Malformed Authorization header: expected `Bearer <gateway key>`",
            "invalid_api_key",
        ));
    };
    let key_id = keys
        .verify(token)
        .ok_or_else(|| ApiError::unauthorized("Invalid gateway key", "invalid_api_key"))?;
    request.extensions_mut().insert(key_id);
    Ok(Authenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    fn sha256_hex(key: &str) -> String {
        digest(key).iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn every_configured_key_verifies_and_nothing_else_does() {
        let keys = GatewayKeys::from_config(Some(&" alpha , beta,,".into()), None, loopback()).unwrap();
        assert!(keys.verify("alpha").is_some());
        assert!(keys.verify("beta").is_some());
        assert!(keys.verify("alph").is_none());
        assert!(keys.verify("").is_none());
        assert!(keys.verify(LOCAL_DEV_KEY).is_none());
        assert!(!keys.is_local_dev());
    }

    #[test]
    fn a_sha256_entry_accepts_the_key_it_hashes() {
        let entry = format!("sha256:{}", sha256_hex("hashed-secret").to_uppercase());
        let keys = GatewayKeys::from_config(Some(&entry.into()), None, loopback()).unwrap();
        assert_eq!(
            keys.verify("hashed-secret"),
            Some(KeyId(sha256_hex("hashed-secret")[..8].to_owned()))
        );
        assert!(
            keys.verify(&format!("sha256:{}", sha256_hex("hashed-secret")))
                .is_none()
        );
    }

    #[test]
    fn a_malformed_digest_is_refused_naming_its_entry() {
        let err = GatewayKeys::from_config(Some(&"ok, sha256:abc".into()), None, loopback()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GATEWAYZ_API_KEYS: entry 2: `sha256:` must be followed by 64 hex digits"
        );
    }

    #[test]
    fn without_keys_a_loopback_listener_accepts_only_the_local_dev_key() {
        let keys = GatewayKeys::from_config(Some(&" , ".into()), None, loopback()).unwrap();
        assert!(keys.is_local_dev());
        assert!(keys.verify(LOCAL_DEV_KEY).is_some());
        assert!(keys.verify("anything").is_none());
    }

    #[test]
    fn without_keys_a_public_listener_refuses_to_start() {
        for bind in ["0.0.0.0:8080", "10.1.2.3:80", "[::]:8080"] {
            let err = GatewayKeys::from_config(None, None, bind.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains("GATEWAYZ_API_KEYS"), "{err}");
        }
    }

    #[test]
    fn the_keys_file_is_read_reloaded_and_a_bad_version_is_ignored() {
        let path = std::env::temp_dir().join(format!("gatewayz-keys-unit-{}", std::process::id()));
        std::fs::write(&path, "# team a\nfirst-key\n\n").unwrap();
        let keys = GatewayKeys::from_config(Some(&"env-key".into()), Some(&path), loopback()).unwrap();
        assert!(keys.verify("first-key").is_some() && keys.verify("env-key").is_some());
        assert!(!keys.is_local_dev());

        std::fs::write(
            &path,
            format!("second-key # rotated\nsha256:{}\n", sha256_hex("third-key")),
        )
        .unwrap();
        assert_eq!(keys.reload().unwrap(), 2);
        assert!(keys.verify("first-key").is_none());
        assert!(keys.verify("second-key").is_some() && keys.verify("third-key").is_some());
        assert!(keys.verify("env-key").is_some(), "environment keys stay");

        std::fs::write(&path, "sha256:not-hex\n").unwrap();
        assert!(keys.reload().is_err());
        std::fs::write(&path, "# emptied\n").unwrap();
        assert!(keys.reload().is_err(), "a file with no key is refused");
        assert!(
            keys.verify("second-key").is_some(),
            "a bad file keeps the previous keys"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let keys = GatewayKeys::from_config(Some(&"alpha".into()), None, loopback()).unwrap();
        assert_eq!(
            format!("{keys:?}"),
            "GatewayKeys { count: 1, file: None, local_dev: false }"
        );
    }
}
