//! One gateway key as the gateway holds it: the SHA-256 digest of the key
//! (never the key) and the policy it is served under.

use std::sync::Arc;

use gatewayz_domain::KeyPolicy;
use sha2::{Digest, Sha256};

/// The SHA-256 of a gateway key.
pub(super) type KeyDigest = [u8; 32];

/// A key's non-secret name in logs, metrics and the admin API: its policy's
/// id, which for a key listed without a policy is the first 8 hex digits of
/// its SHA-256.
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

/// A known key: its digest and its policy.
#[derive(Debug, Clone)]
pub(super) struct KeyEntry {
    pub digest: KeyDigest,
    pub policy: Arc<KeyPolicy>,
}

impl KeyEntry {
    /// A key listed without a policy (`GATEWAYZ_API_KEYS`, a line of a plain
    /// keys file): no limit, named by its digest.
    pub fn unlimited(digest: KeyDigest) -> Self {
        Self {
            digest,
            policy: Arc::new(KeyPolicy::unlimited(KeyId::of(&digest).0)),
        }
    }
}

pub(super) fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// 64 hex digits, either case, as a digest.
pub(super) fn parse_hex(hex: &str) -> Option<KeyDigest> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0_u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        // from_str_radix takes a leading `+`, which is no hex digit.
        if !text.bytes().all(|digit| digit.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_64_hex_digits_and_nothing_else() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_hex(&hex), Some([0xab; 32]));
        assert_eq!(parse_hex(&hex.to_uppercase()), Some([0xab; 32]));
        assert_eq!(parse_hex(&hex[..62]), None);
        assert_eq!(parse_hex(&format!("+b{}", &hex[2..])), None);
        assert_eq!(parse_hex(&format!("zz{}", &hex[2..])), None);
    }

    #[test]
    fn a_key_without_a_policy_is_named_by_its_digest() {
        let entry = KeyEntry::unlimited([0x0f; 32]);
        assert_eq!(entry.policy.id, "0f0f0f0f");
        assert!(!entry.policy.has_limits());
    }
}
