//! Reading typed settings from environment variables with envy, and naming
//! the variables a settings struct is read from.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::{DeserializeOwned, Deserializer, Error as _, Visitor};
use serde::{Deserialize, forward_to_deserialize_any};

/// Settings that envy reads from environment variables: the field `foo` of
/// an implementor is the variable `{PREFIX}FOO`.
pub trait EnvSettings: DeserializeOwned {
    /// What each variable's name has before its field's name.
    const PREFIX: &'static str;

    /// Reads the settings from `(name, value)` pairs: the process
    /// environment's, or a test's.
    ///
    /// # Errors
    /// When a variable is present but malformed; the message names it.
    fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<Self, envy::Error> {
        envy::prefixed(Self::PREFIX).from_iter(vars)
    }

    /// The variables these settings are read from: the fields serde reads,
    /// each under the name envy matches it with.
    fn variables() -> Vec<String> {
        field_names::<Self>()
            .iter()
            .map(|field| format!("{}{}", Self::PREFIX, field.to_ascii_uppercase()))
            .collect()
    }
}

/// The fields a struct's `Deserialize` asks for (none for a type that is not
/// a struct): serde derive passes them to `deserialize_struct`, and a
/// deserializer that records them and stops there is all it takes.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _stopped = T::deserialize(FieldRecorder { fields: &mut fields });
    fields.unwrap_or_default()
}

/// A deserializer that records the fields of the struct asked for, then
/// fails: no value is ever produced.
struct FieldRecorder<'a> {
    fields: &'a mut Option<&'static [&'static str]>,
}

impl<'de> Deserializer<'de> for FieldRecorder<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(Self::Error::custom("only the fields of a struct are recorded"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.fields = Some(fields);
        Err(Self::Error::custom("fields recorded"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct
        map enum identifier ignored_any
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // Read only for its fields' names.
    struct Sample {
        plain: Option<String>,
        #[serde(rename = "renamed_here")]
        renamed: Option<String>,
        #[serde(default, deserialize_with = "count")]
        count: u32,
    }

    var_parsers! {
        count: u32 = "SAMPLE_COUNT";
    }

    impl EnvSettings for Sample {
        const PREFIX: &'static str = "SAMPLE_";
    }

    #[derive(Debug, Deserialize)]
    #[serde(try_from = "Sample")]
    #[allow(dead_code)]
    struct Checked(Sample);

    impl TryFrom<Sample> for Checked {
        type Error = &'static str;

        fn try_from(sample: Sample) -> Result<Self, Self::Error> {
            Ok(Self(sample))
        }
    }

    #[test]
    fn a_structs_variables_are_its_prefix_and_serde_names_in_upper_case() {
        assert_eq!(
            Sample::variables(),
            ["SAMPLE_PLAIN", "SAMPLE_RENAMED_HERE", "SAMPLE_COUNT"]
        );
    }

    #[test]
    fn a_struct_read_through_another_has_the_others_fields() {
        assert_eq!(field_names::<Checked>(), ["plain", "renamed_here", "count"]);
    }

    #[test]
    fn a_type_that_is_not_a_struct_has_no_fields() {
        assert!(field_names::<String>().is_empty());
        assert!(field_names::<Option<u32>>().is_empty());
    }

    #[test]
    fn the_prefix_is_stripped_and_case_ignored_when_reading() {
        let sample = Sample::from_vars([
            ("SAMPLE_PLAIN".to_owned(), "p".to_owned()),
            ("SAMPLE_COUNT".to_owned(), "3".to_owned()),
            ("PLAIN".to_owned(), "not this one".to_owned()),
        ])
        .unwrap();
        assert_eq!((sample.plain.as_deref(), sample.count), (Some("p"), 3));
    }
}
