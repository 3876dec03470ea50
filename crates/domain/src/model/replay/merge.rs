//! Members the gateway does not assemble itself, merged across a stream's
//! pieces into the one object of a whole answer, so that none is lost: a
//! provider's reasoning text, web search annotations, audio, a provider's
//! name or citations beside the choices.
//!
//! What a merge does depends on where the members are ([`Rule`]). Whatever
//! the rule, `null` counts only when nothing else was given: streams send
//! `"reasoning_content": null` once the answer's text starts, which must
//! not undo the reasoning before it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::ser::Serializer;
use serde_json::value::RawValue;

use super::error::{ReplayError, malformed};
use super::views::{Member, is_null, members, value_of};

/// How the pieces of one member make its whole value.
#[derive(Clone, Copy)]
pub(super) enum Rule {
    /// A chat message's delta: a string is a piece of text, concatenated
    /// (`reasoning_content` from DeepSeek, `reasoning` from OpenRouter);
    /// `annotations` arrays are concatenated; `audio` objects are merged
    /// by [`Rule::Audio`]; any other value is kept from the last piece that
    /// gave one.
    Delta,
    /// A chat message's `audio`: `transcript` and `data` strings
    /// concatenated, as OpenAI streams them in pieces; `id`, `expires_at`
    /// and any other member kept from the last piece that gave it. `data`
    /// is base64 joined as text, as the OpenAI SDKs join it, not decoded:
    /// a piece padded with `=` before the last would not join into one
    /// valid base64 text.
    Audio,
    /// Members repeated by each piece (a chunk's `provider` or `citations`,
    /// a choice's `native_finish_reason`): the last value given.
    Last,
}

/// Members merged, in the order each was first given.
#[derive(Default)]
pub(super) struct Merged<'a> {
    /// Where each name is in `members`: a stream may give many names, and
    /// finding one may not cost their count.
    at: BTreeMap<Cow<'a, str>, usize>,
    members: Vec<(Cow<'a, str>, Value<'a>)>,
}

/// One member's value, as its pieces make it.
enum Value<'a> {
    /// Only `null` given.
    Null,
    /// Pieces of text, concatenated.
    Text(String),
    /// The items of arrays, concatenated.
    Items(Vec<&'a RawValue>),
    /// Objects, merged member by member.
    Object(Merged<'a>),
    /// The last value given, as it came.
    Last(&'a RawValue),
}

impl<'a> Merged<'a> {
    /// Merges each of `given` by `rule`.
    ///
    /// # Errors
    /// [`ReplayError::Malformed`] when a value that is merged by parts is
    /// not what it looks like (it was read as JSON: in practice never).
    pub(super) fn add_all(
        &mut self,
        place: impl fmt::Display + Copy,
        rule: Rule,
        given: impl IntoIterator<Item = Member<'a>>,
    ) -> Result<(), ReplayError> {
        for (name, value) in given {
            self.add(place, rule, name, value)?;
        }
        Ok(())
    }

    fn add(
        &mut self,
        place: impl fmt::Display + Copy,
        rule: Rule,
        name: Cow<'a, str>,
        value: &'a RawValue,
    ) -> Result<(), ReplayError> {
        let at = match self.at.get(&name) {
            Some(at) => *at,
            None => {
                self.at.insert(name.clone(), self.members.len());
                self.members.push((name.clone(), Value::Null));
                self.members.len() - 1
            }
        };
        let Some((_, kept)) = self.members.get_mut(at) else {
            return Ok(());
        };
        if is_null(value) {
            return Ok(());
        }
        let first = value.get().as_bytes().first().copied();
        match (rule, first, name.as_ref()) {
            (Rule::Delta, Some(b'"'), _) | (Rule::Audio, Some(b'"'), "transcript" | "data") => {
                let text: String = value_of(place, value)?.unwrap_or_default();
                match kept {
                    Value::Text(kept) => kept.push_str(&text),
                    _ => *kept = Value::Text(text),
                }
            }
            (Rule::Delta, Some(b'['), "annotations") => {
                let items: Vec<&'a RawValue> = value_of(place, value)?.unwrap_or_default();
                match kept {
                    Value::Items(kept) => kept.extend(items),
                    _ => *kept = Value::Items(items),
                }
            }
            (Rule::Delta, Some(b'{'), "audio") => {
                if !matches!(kept, Value::Object(_)) {
                    *kept = Value::Object(Merged::default());
                }
                if let Value::Object(kept) = kept {
                    kept.add_all(place, Rule::Audio, members(place, value)?)?;
                }
            }
            _ => *kept = Value::Last(value),
        }
        Ok(())
    }

    /// Each member's name and value as JSON text.
    ///
    /// # Errors
    /// [`ReplayError::Malformed`] if a value cannot be written (never: all
    /// of it was read as JSON).
    pub(super) fn written(&self) -> Result<Vec<(&str, Vec<u8>)>, ReplayError> {
        self.members
            .iter()
            .map(|(name, value)| {
                serde_json::to_vec(value)
                    .map(|text| (name.as_ref(), text))
                    .map_err(|error| malformed("writing", crate::json::describe(&error)))
            })
            .collect()
    }
}

/// Written as the members of the object it is put in.
impl Serialize for Merged<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.members.iter().map(|(name, value)| (name, value)))
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Text(text) => serializer.serialize_str(text),
            Self::Items(items) => items.serialize(serializer),
            Self::Object(members) => members.serialize(serializer),
            Self::Last(value) => value.serialize(serializer),
        }
    }
}
