//! Gateway keys: who may call the gateway, and under which policy.
//!
//! Keys are kept only as SHA-256 digests and a presented key is compared with
//! every one of them in constant time, so neither a key nor its length leaks
//! through timing, and no key is held in memory in the clear. Keys come from
//! `GATEWAYZ_API_KEYS` and from `GATEWAYZ_API_KEYS_FILE`, which is re-read
//! when it changes: a plain list of keys ([`key_list`]), or, named `*.toml`,
//! a key policy file whose keys carry an id and limits ([`policy_file`]).
//! A key listed without a policy has one with no limit, named by its digest.

mod entry;
mod error;
mod key_list;
mod policy_file;

use std::collections::HashSet;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use arc_swap::ArcSwap;
use gatewayz_domain::{ChatError, KeyPolicy};
use secrecy::{ExposeSecret, SecretString};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::error::ApiError;
pub use entry::KeyId;
use entry::{KeyDigest, KeyEntry, digest};
pub use error::KeySetupError;

/// The key a local quick start uses when no key is configured. It is public
/// (the README prints it), so it is only accepted on a loopback listener.
pub const LOCAL_DEV_KEY: &str = "gwz-local-dev-key";

/// The keys of a keys file, and the bytes they were read from.
fn read_file(path: &Path) -> Result<(Vec<KeyEntry>, Vec<u8>), KeySetupError> {
    let bytes = std::fs::read(path).map_err(|error| KeySetupError::Read {
        path: path.display().to_string(),
        error,
    })?;
    Ok((parse_file(path, &bytes)?, bytes))
}

/// A file with no key at all is refused: more likely caught half-written
/// than meant to lock every client out.
fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<KeyEntry>, KeySetupError> {
    let name = path.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|_| KeySetupError::Empty(name.clone()))?;
    if policy_file::is_policy_file(path) {
        return policy_file::parse(&name, text);
    }
    let digests = key_list::parse_lines(&name, text)?;
    if digests.is_empty() {
        return Err(KeySetupError::Empty(name));
    }
    Ok(digests.into_iter().map(KeyEntry::unlimited).collect())
}

/// The keys of the environment and of the file, as one list. A key in both
/// is served under the file's policy.
fn combine(fixed: &[KeyEntry], from_file: Vec<KeyEntry>) -> Vec<KeyEntry> {
    let in_file: HashSet<&KeyDigest> = from_file.iter().map(|entry| &entry.digest).collect();
    let mut all: Vec<KeyEntry> = fixed
        .iter()
        .filter(|entry| !in_file.contains(&entry.digest))
        .cloned()
        .collect();
    all.extend(from_file);
    all
}

/// The set of gateway keys a request may present, each with its policy.
/// Cheap to clone; a reload swaps the set for every clone at once.
#[derive(Clone)]
pub struct GatewayKeys {
    fixed: Arc<[KeyEntry]>,
    current: Arc<ArcSwap<Vec<KeyEntry>>>,
    file: Option<PathBuf>,
    /// What the file held when it was read at start: where [`Self::watch`]
    /// starts comparing, so that a change made before it runs is not missed.
    loaded: Option<Arc<[u8]>>,
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
    /// A malformed entry, an unreadable or invalid file, or no keys off
    /// loopback.
    pub fn from_config(
        keys: Option<&SecretString>,
        file: Option<&Path>,
        bind: SocketAddr,
    ) -> Result<Self, KeySetupError> {
        let fixed = match keys {
            Some(keys) => key_list::parse_entries(keys.expose_secret().split(','), "GATEWAYZ_API_KEYS")?,
            None => Vec::new(),
        };
        let (from_file, loaded) = match file {
            Some(path) => {
                let (entries, bytes) = read_file(path)?;
                (entries, Some(Arc::from(bytes)))
            }
            None => (Vec::new(), None),
        };
        let local_dev = fixed.is_empty() && file.is_none();
        if local_dev && !bind.ip().is_loopback() {
            return Err(KeySetupError::NoKeysOffLoopback(bind));
        }
        let fixed: Arc<[KeyEntry]> = if local_dev {
            vec![KeyEntry::unlimited(digest(LOCAL_DEV_KEY))].into()
        } else {
            fixed.into_iter().map(KeyEntry::unlimited).collect()
        };
        let current = combine(&fixed, from_file);
        Ok(Self {
            fixed,
            current: Arc::new(ArcSwap::from_pointee(current)),
            file: file.map(Path::to_path_buf),
            loaded,
            local_dev,
        })
    }

    /// Whether the gateway runs on the public local development key.
    pub fn is_local_dev(&self) -> bool {
        self.local_dev
    }

    /// The policy of `presented` if it is one of the keys, expired or not
    /// (refusing an expired key is the chat use case's, with its own code).
    /// Takes the same time whichever key matches, or none: every digest is
    /// compared, and the match is picked without a branch.
    pub fn identify(&self, presented: &str) -> Option<Arc<KeyPolicy>> {
        let presented = digest(presented);
        let entries = self.current.load();
        let mut found = Choice::from(0);
        let mut index = 0_u64;
        for (position, entry) in (0_u64..).zip(entries.iter()) {
            let matches = entry.digest.ct_eq(&presented);
            index.conditional_assign(&position, matches);
            found |= matches;
        }
        if !bool::from(found) {
            return None;
        }
        usize::try_from(index)
            .ok()
            .and_then(|index| entries.get(index))
            .map(|entry| entry.policy.clone())
    }

    /// The id of `presented` if it is one of the keys; as [`Self::identify`].
    pub fn verify(&self, presented: &str) -> Option<KeyId> {
        self.identify(presented).map(|policy| KeyId(policy.id.clone()))
    }

    /// Every key's policy as of now, the environment's first, each id once.
    pub fn policies(&self) -> Vec<Arc<KeyPolicy>> {
        let entries = self.current.load();
        let mut ids = HashSet::with_capacity(entries.len());
        entries
            .iter()
            .filter(|entry| ids.insert(entry.policy.id.as_str()))
            .map(|entry| entry.policy.clone())
            .collect()
    }

    /// The policy of the key named `id`, as of now.
    pub fn policy(&self, id: &str) -> Option<Arc<KeyPolicy>> {
        self.current
            .load()
            .iter()
            .find(|entry| entry.policy.id == id)
            .map(|entry| entry.policy.clone())
    }

    /// Re-reads the keys file and swaps in its keys. A file that cannot be
    /// read or parsed leaves the current keys in place.
    ///
    /// # Errors
    /// Why the file was not taken.
    pub fn reload(&self) -> Result<usize, KeySetupError> {
        let Some(path) = &self.file else { return Ok(0) };
        Ok(self.take(read_file(path)?.0))
    }

    /// Swaps in the file's keys, beside the environment's.
    fn take(&self, from_file: Vec<KeyEntry>) -> usize {
        let count = from_file.len();
        self.current.store(Arc::new(combine(&self.fixed, from_file)));
        count
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
            let mut seen = keys.loaded.as_deref().map(<[u8]>::to_vec);
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
                    Some(bytes) => parse_file(&path, bytes).map(|entries| keys.take(entries)),
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
/// handler so an unauthenticated body is never read. It leaves the key's
/// [`KeyId`] and its `Arc<KeyPolicy>` in the request's extensions
/// ([`policy_of`]).
#[derive(Debug)]
pub struct Authenticated;

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(request))
    }
}

/// The header Anthropic's clients send their key in.
const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

fn authenticate(request: &HttpRequest) -> Result<Authenticated, ApiError> {
    let keys = request
        .app_data::<web::Data<GatewayKeys>>()
        .ok_or_else(|| ApiError::internal("Gateway keys are not configured"))?;
    let headers = request.headers();
    let token = if let Some(value) = headers.get(header::AUTHORIZATION) {
        value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "Malformed Authorization header: expected `Bearer <gateway key>`",
                    "invalid_api_key",
                )
            })?
    } else if let Some(value) = headers.get(X_API_KEY) {
        // Anthropic's SDKs send the key as `x-api-key`.
        value
            .to_str()
            .map(str::trim)
            .map_err(|_| ApiError::unauthorized("Invalid gateway key", "invalid_api_key"))?
    } else {
        return Err(ApiError::unauthorized(
            "Missing gateway key: send `Authorization: Bearer <gateway key>` or `x-api-key: <gateway key>`",
            "missing_api_key",
        ));
    };
    let policy = keys
        .identify(token)
        .ok_or_else(|| ApiError::unauthorized("Invalid gateway key", "invalid_api_key"))?;
    let mut extensions = request.extensions_mut();
    extensions.insert(KeyId(policy.id.clone()));
    let expired = policy.expired(unix_now());
    let id = policy.id.clone();
    extensions.insert(policy);
    if expired {
        // Known, and named in the log, but refused on every endpoint.
        return Err(ChatError::KeyExpired(id).into());
    }
    Ok(Authenticated)
}

/// Unix time in seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

/// The policy of the key `request` was authenticated with, once
/// [`Authenticated`] has been extracted.
pub fn policy_of(request: &HttpRequest) -> Option<Arc<KeyPolicy>> {
    request.extensions().get::<Arc<KeyPolicy>>().cloned()
}

#[cfg(test)]
mod tests;
