//! Keys listed without a policy: `GATEWAYZ_API_KEYS` (comma-separated) and
//! a plain keys file (one a line, `#` comments). Each is a key or
//! `sha256:<64 hex>` of one.

use super::entry::{KeyDigest, digest, parse_hex};
use super::error::KeySetupError;

/// Parses key entries; blank ones are skipped.
pub(super) fn parse_entries<'a>(
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

/// The keys of a plain keys file's text.
pub(super) fn parse_lines(file: &str, text: &str) -> Result<Vec<KeyDigest>, KeySetupError> {
    let lines = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default());
    parse_entries(lines, file)
}
