//! Helpers for reading typed settings from environment variables with envy.

use std::fmt::Display;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

/// Parses a variable's text with [`FromStr`], naming the variable when it is
/// malformed (envy's own messages do not). Use it from a
/// `#[serde(deserialize_with = ...)]` function that passes the name.
///
/// # Errors
/// `{name}="{raw}" is invalid: {reason}`.
pub fn parse_var<'de, D, T>(deserializer: D, name: &str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let raw = String::deserialize(deserializer)?;
    raw.trim()
        .parse()
        .map_err(|error| D::Error::custom(format!("{name}={raw:?} is invalid: {error}")))
}

/// Defines `deserialize_with` functions that parse one variable each with
/// [`parse_var`]: `var_parsers! { bind: SocketAddr = "GATEWAYZ_BIND"; }`.
#[macro_export]
macro_rules! var_parsers {
    ($($function:ident: $type:ty = $name:literal;)+) => {
        $(
            fn $function<'de, D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<$type, D::Error> {
                $crate::env::parse_var(deserializer, $name)
            }
        )+
    };
}
