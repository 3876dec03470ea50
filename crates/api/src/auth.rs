//! Gateway keys: who may call the gateway.
//!
//! Keys are kept only as SHA-256 digests and a presented key is compared with
//! every one of them in constant time, so neither a key nor its length leaks
//! through timing, and no key is held in memory in the clear.

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// The key a local quick start uses when `GATEWAYZ_API_KEYS` is unset. It is
/// public (the README prints it), so it is only accepted on a loopback
/// listener.
pub const LOCAL_DEV_KEY: &str = "gwz-local-dev-key";

type KeyDigest = [u8; 32];

/// The set of gateway keys a request may present.
#[derive(Clone)]
pub struct GatewayKeys {
    digests: Arc<[KeyDigest]>,
    local_dev: bool,
}

impl std::fmt::Debug for GatewayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKeys")
            .field("count", &self.digests.len())
            .field("local_dev", &self.local_dev)
            .finish()
    }
}

/// Why the gateway cannot start with the keys it was given.
#[derive(Debug, thiserror::Error)]
pub enum KeySetupError {
    #[error(
        "GATEWAYZ_API_KEYS is empty and the gateway binds {0}, which is not a loopback address: \
         set GATEWAYZ_API_KEYS to a comma-separated list of keys"
    )]
    NoKeysOffLoopback(SocketAddr),
}

impl GatewayKeys {
    /// Builds the key set from `GATEWAYZ_API_KEYS`. Without any key, a
    /// loopback listener accepts [`LOCAL_DEV_KEY`]; any other refuses to start.
    ///
    /// # Errors
    /// [`KeySetupError::NoKeysOffLoopback`] as above.
    pub fn from_config(keys: Option<&SecretString>, bind: SocketAddr) -> Result<Self, KeySetupError> {
        let digests: Vec<KeyDigest> = keys
            .map(|keys| {
                keys.expose_secret()
                    .split(',')
                    .map(str::trim)
                    .filter(|key| !key.is_empty())
                    .map(digest)
                    .collect()
            })
            .unwrap_or_default();
        if !digests.is_empty() {
            return Ok(Self {
                digests: digests.into(),
                local_dev: false,
            });
        }
        if !bind.ip().is_loopback() {
            return Err(KeySetupError::NoKeysOffLoopback(bind));
        }
        Ok(Self {
            digests: vec![digest(LOCAL_DEV_KEY)].into(),
            local_dev: true,
        })
    }

    /// Whether the gateway runs on the public local development key.
    pub fn is_local_dev(&self) -> bool {
        self.local_dev
    }

    /// Whether `presented` is one of the keys. Takes the same time whichever
    /// key matches, or none.
    pub fn verify(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let found = self
            .digests
            .iter()
            .fold(Choice::from(0), |found, known| found | known.ct_eq(&presented));
        found.into()
    }
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
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
    match token {
        Some(token) if keys.verify(token) => Ok(Authenticated),
        Some(_) => Err(ApiError::unauthorized("Invalid gateway key", "invalid_api_key")),
        None => Err(ApiError::unauthorized(
            "Malformed Authorization header: expected `Bearer <gateway key>`",
            "invalid_api_key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn every_configured_key_verifies_and_nothing_else_does() {
        let keys = GatewayKeys::from_config(Some(&" alpha , beta,,".into()), loopback()).unwrap();
        assert!(keys.verify("alpha"));
        assert!(keys.verify("beta"));
        assert!(!keys.verify("alph"));
        assert!(!keys.verify(""));
        assert!(!keys.verify(LOCAL_DEV_KEY));
        assert!(!keys.is_local_dev());
    }

    #[test]
    fn without_keys_a_loopback_listener_accepts_only_the_local_dev_key() {
        let keys = GatewayKeys::from_config(Some(&" , ".into()), loopback()).unwrap();
        assert!(keys.is_local_dev());
        assert!(keys.verify(LOCAL_DEV_KEY));
        assert!(!keys.verify("anything"));
    }

    #[test]
    fn without_keys_a_public_listener_refuses_to_start() {
        for bind in ["0.0.0.0:8080", "10.1.2.3:80", "[::]:8080"] {
            let err = GatewayKeys::from_config(None, bind.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains("GATEWAYZ_API_KEYS"), "{err}");
        }
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let keys = GatewayKeys::from_config(Some(&"alpha".into()), loopback()).unwrap();
        assert_eq!(format!("{keys:?}"), "GatewayKeys { count: 1, local_dev: false }");
    }
}
