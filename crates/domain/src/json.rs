//! A JSON object as the bytes a peer sent: its top-level members, in order,
//! as spans of those bytes. The gateway reads the few members it needs and
//! writes the object back with only its own changes: members dropped,
//! replaced or added. Everything else — unknown members, their order, their
//! spacing and number formatting — passes through as it came.

use std::fmt;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One top-level member: its name and where its value lies in the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: Name,
    value: Range<usize>,
}

/// A member's name: where it lies in the bytes when it has no escapes, or
/// its text when it had to be unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Span(Range<usize>),
    Owned(Box<str>),
}

/// A JSON object's bytes and the spans of its top-level members.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonObject {
    bytes: Bytes,
    members: Vec<Member>,
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes may be a prompt: only their size is shown.
        f.debug_struct("JsonObject")
            .field("bytes", &self.bytes.len())
            .field("members", &self.members.len())
            .finish()
    }
}

/// An edit of a written object.
#[derive(Debug, Clone, Copy)]
pub enum Edit<'a> {
    /// The member is left out.
    Drop,
    /// The member's value is this JSON text instead.
    Replace(&'a [u8]),
}

impl JsonObject {
    /// Reads `bytes` as one JSON object.
    ///
    /// # Errors
    /// serde_json's error when `bytes` is not one JSON object.
    pub fn parse(bytes: Bytes) -> Result<Self, serde_json::Error> {
        let members = {
            let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
            let members = deserializer.deserialize_map(MembersVisitor { base: &bytes })?;
            deserializer.end()?;
            members
        };
        Ok(Self { bytes, members })
    }

    /// The whole object, as it came.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The members' names and values, in order.
    pub fn members(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.members
            .iter()
            .map(|member| (self.name(member), &self.bytes[member.value.clone()]))
    }

    /// The value of the last member named `name` (as a JSON parser keeps the
    /// last of duplicates).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .rev()
            .find(|member| self.name_bytes(member) == name.as_bytes())
            .map(|member| &self.bytes[member.value.clone()])
    }

    /// The names given more than once, each once.
    pub fn duplicates(&self) -> Vec<&str> {
        if !self.has_duplicates() {
            return Vec::new();
        }
        let mut names: Vec<&str> = self.members().map(|(name, _)| name).collect();
        names.sort_unstable();
        let mut duplicates: Vec<&str> = names
            .windows(2)
            .filter(|pair| pair[0] == pair[1])
            .map(|pair| pair[0])
            .collect();
        duplicates.dedup();
        duplicates
    }

    /// Whether a name is given twice: compared as bytes, without sorting or
    /// collecting, since the answer is almost always no.
    fn has_duplicates(&self) -> bool {
        self.members.iter().enumerate().any(|(index, member)| {
            let name = self.name_bytes(member);
            self.members[index + 1..]
                .iter()
                .any(|other| self.name_bytes(other) == name)
        })
    }

    fn name<'a>(&'a self, member: &'a Member) -> &'a str {
        match &member.name {
            // A span came from a borrowed `&str` of these bytes: it is UTF-8.
            Name::Span(span) => std::str::from_utf8(&self.bytes[span.clone()]).unwrap_or_default(),
            Name::Owned(name) => name,
        }
    }

    /// A member's name as bytes, compared without checking again that it is
    /// UTF-8 (the parser did).
    fn name_bytes<'a>(&'a self, member: &'a Member) -> &'a [u8] {
        match &member.name {
            Name::Span(span) => &self.bytes[span.clone()],
            Name::Owned(name) => name.as_bytes(),
        }
    }

    /// The object with `edit`'s changes to its members, then `added`
    /// (name, JSON text) members at its end. Members `edit` leaves alone are
    /// written as they came; the object's own spacing between members is
    /// not kept.
    pub fn rewrite<'e>(
        &self,
        mut edit: impl FnMut(&str) -> Option<Edit<'e>>,
        added: &[(&str, &[u8])],
    ) -> Bytes {
        let extra: usize = added
            .iter()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum();
        let mut out = BytesMut::with_capacity(self.bytes.len() + extra + 16);
        out.put_u8(b'{');
        let mut first = true;
        let mut member = |out: &mut BytesMut, name: &str, value: &[u8]| {
            if !std::mem::take(&mut first) {
                out.put_u8(b',');
            }
            write_name(out, name);
            out.put_u8(b':');
            out.put_slice(value);
        };
        for (name, value) in self.members() {
            match edit(name) {
                None => member(&mut out, name, value),
                Some(Edit::Replace(value)) => member(&mut out, name, value),
                Some(Edit::Drop) => {}
            }
        }
        for (name, value) in added {
            member(&mut out, name, value);
        }
        out.put_u8(b'}');
        out.freeze()
    }
}

/// `object` (a JSON object's text) with the member `name: value` added at
/// its end: every byte of the object as it came, the member spliced in
/// before its closing brace. `None` when `object` does not end with `}`.
pub fn with_member(object: &[u8], name: &str, value: &[u8]) -> Option<Bytes> {
    let (at, member) = member_insertion(object, name, value)?;
    let mut out = BytesMut::with_capacity(object.len() + member.len());
    out.put_slice(&object[..at]);
    out.put_slice(&member);
    out.put_slice(&object[at..]);
    Some(out.freeze())
}

/// Where and what to insert into `object` to add the member `name: value`
/// at its end: the offset of its closing brace, and the member's text (with
/// the comma it needs). `None` when `object` does not end with `}`.
pub fn member_insertion(object: &[u8], name: &str, value: &[u8]) -> Option<(usize, Bytes)> {
    let end = object.iter().rposition(|byte| !byte.is_ascii_whitespace())?;
    if object[end] != b'}' {
        return None;
    }
    let empty = object[..end]
        .iter()
        .rposition(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|before| object[before] == b'{');
    let mut out = BytesMut::with_capacity(name.len() + value.len() + 4);
    if !empty {
        out.put_u8(b',');
    }
    write_name(&mut out, name);
    out.put_u8(b':');
    out.put_slice(value);
    Some((end, out.freeze()))
}

fn write_name(out: &mut BytesMut, name: &str) {
    // A name the gateway writes is one it read or one of its own: serializing
    // a string into memory cannot fail.
    let _ = serde_json::to_writer(out.writer(), name);
}

/// A string whose text is not kept: a member that must be a string, read
/// without copying it.
pub(crate) struct IgnoredString;

impl<'de> de::Deserialize<'de> for IgnoredString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;

        impl Visitor<'_> for StringVisitor {
            type Value = IgnoredString;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(IgnoredString)
            }
        }

        deserializer.deserialize_str(StringVisitor)
    }
}

/// Why a peer's JSON is not what it should be: where, and what was expected
/// there. Never the value found: a peer's value may be a key it echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    /// The path of the value at fault (`choices[0].index`), if not the whole.
    pub at: Option<String>,
    pub problem: String,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "at `{at}`: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

/// `T` read from `bytes`, a JSON object, or where and why it is not one.
///
/// # Errors
/// A [`ShapeError`] naming the path of the value at fault and the type
/// expected there.
pub(crate) fn read_shape<T: de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ShapeError> {
    // serde reads a struct from an array too: an answer must be an object.
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ShapeError {
            at: None,
            problem: "not a JSON object".to_owned(),
        });
    }
    // The fast parser first; only a refused body is read again, tracking
    // the path.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let error = match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => {
            return match deserializer.end() {
                Ok(()) => Ok(value),
                Err(_) => Err(ShapeError {
                    at: None,
                    problem: "not valid JSON: more follows the value".to_owned(),
                }),
            };
        }
        Err(error) => error,
    };
    let mut path = error.path().to_string();
    let inner = error.inner();
    let message = inner.to_string();
    if message.starts_with("missing field") {
        // The path ends at the member read last: the missing one's object is
        // its parent.
        let parent = path.rfind(['.', '[']).unwrap_or(0);
        path.truncate(parent);
        if path.is_empty() {
            path.push('.');
        }
    }
    let problem = match inner.classify() {
        serde_json::error::Category::Data => describe_data_error(&message),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!(
                "not valid JSON (line {}, column {})",
                inner.line(),
                inner.column()
            )
        }
        serde_json::error::Category::Io => "unreadable".to_owned(),
    };
    Err(ShapeError {
        at: (path != ".").then(|| crate::text::quote(&path).into_owned()),
        problem,
    })
}

/// What is wrong with JSON that serde refused, without quoting any of it.
pub(crate) fn describe(error: &serde_json::Error) -> String {
    match error.classify() {
        serde_json::error::Category::Data => describe_data_error(&error.to_string()),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!(
                "not valid JSON (line {}, column {})",
                error.line(),
                error.column()
            )
        }
        serde_json::error::Category::Io => "unreadable".to_owned(),
    }
}

/// serde's description of a value of the wrong type or content, without the
/// value: `invalid type: string "<value>", expected u64 at line 1 column 9`
/// becomes `expected u64`. What follows the last `, expected ` is the
/// gateway's own type description; what precedes it may quote the value.
fn describe_data_error(message: &str) -> String {
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(message, _)| message);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return format!("missing field `{}`", crate::text::quote(field));
    }
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => format!(
            "a value of the wrong type or content, expected {}",
            crate::text::quote(expected)
        ),
        None => "a value of the wrong type or content".to_owned(),
    }
}

/// Collects the members of the top-level object as spans of `base`.
struct MembersVisitor<'b> {
    base: &'b [u8],
}

impl MembersVisitor<'_> {
    /// Where `part`, a slice of `base`, lies in it.
    fn span(&self, part: &[u8]) -> Range<usize> {
        let start = part.as_ptr() as usize - self.base.as_ptr() as usize;
        start..start + part.len()
    }
}

impl<'de> Visitor<'de> for MembersVisitor<'_> {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(name) = map.next_key::<Key<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            let name = match name {
                Key::Borrowed(name) => Name::Span(self.span(name.as_bytes())),
                Key::Owned(name) => Name::Owned(name.into()),
            };
            members.push(Member {
                name,
                value: self.span(value.get().as_bytes()),
            });
        }
        Ok(members)
    }
}

/// A member name, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(Key::Borrowed(name))
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(Key::Owned(name.to_owned()))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> JsonObject {
        JsonObject::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    #[test]
    fn members_are_read_in_order_with_their_values_as_sent() {
        let parsed = object(r#" { "b" : [1,  2], "a\u0041":{"x":1.50}, "c":null } "#);
        let members: Vec<(&str, &[u8])> = parsed.members().collect();
        assert_eq!(
            members,
            [
                ("b", b"[1,  2]".as_slice()),
                ("aA", br#"{"x":1.50}"#.as_slice()),
                ("c", b"null".as_slice())
            ]
        );
        assert_eq!(parsed.get("c"), Some(b"null".as_slice()));
    }

    #[test]
    fn anything_but_one_object_is_refused() {
        for text in ["[1]", "{\"a\":1} {}", "{\"a\":}", "", "\"x\""] {
            assert!(JsonObject::parse(Bytes::from(text)).is_err(), "{text}");
        }
    }

    #[test]
    fn a_rewrite_drops_replaces_and_adds_only_what_it_is_told() {
        let parsed = object(r#"{"model": "a", "provider": "x", "temperature": 0.50, "z": {"k": [ ]}}"#);
        let written = parsed.rewrite(
            |name| match name {
                "model" => Some(Edit::Replace(br#""b""#)),
                "provider" => Some(Edit::Drop),
                _ => None,
            },
            &[("max_tokens", b"7")],
        );
        assert_eq!(
            std::str::from_utf8(&written).unwrap(),
            r#"{"model":"b","temperature":0.50,"z":{"k": [ ]},"max_tokens":7}"#
        );
    }

    #[test]
    fn duplicates_are_found() {
        assert_eq!(object(r#"{"a":1,"b":2,"a":3,"a":4}"#).duplicates(), ["a"]);
        assert_eq!(object(r#"{"a":1,"a":3}"#).get("a"), Some(b"3".as_slice()));
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Answer {
        created: u64,
        model: String,
    }

    #[test]
    fn a_shape_error_names_the_field_and_the_type_but_never_the_value() {
        let cases: [(&[u8], Option<&str>, &str); 4] = [
            (
                br#"{"created": "pk-secret-value", "model": "m"}"#,
                Some("created"),
                "expected u64",
            ),
            (br#"{"created": 1}"#, None, "missing field `model`"),
            (br#"{"created": "#, Some("created"), "not valid JSON"),
            (br#"["pk-secret-value", "m"]"#, None, "not a JSON object"),
        ];
        for (body, at, expected) in cases {
            let error = read_shape::<Answer>(body).unwrap_err();
            assert_eq!(error.at.as_deref(), at, "{error}");
            assert!(error.problem.contains(expected), "{error}");
            assert!(!error.to_string().contains("pk-secret"), "{error}");
        }
    }

    #[test]
    fn a_value_that_imitates_the_expected_part_is_still_not_quoted() {
        let message = describe_data_error(
            r#"invalid type: string "sk-key, expected x", expected u64 at line 1 column 9"#,
        );
        assert_eq!(message, "a value of the wrong type or content, expected u64");
    }

    #[test]
    fn a_member_is_spliced_before_the_closing_brace_leaving_every_other_byte() {
        let spliced = with_member(b"{\"id\" : 1 ,\n \"x\":[] }\n", "gateway_usage", b"{\"a\":1}").unwrap();
        assert_eq!(
            &spliced[..],
            b"{\"id\" : 1 ,\n \"x\":[] ,\"gateway_usage\":{\"a\":1}}\n"
        );
        assert_eq!(&with_member(b"{ }", "k", b"1").unwrap()[..], b"{ \"k\":1}");
        assert_eq!(with_member(b"[1]", "k", b"1"), None);
    }
}
