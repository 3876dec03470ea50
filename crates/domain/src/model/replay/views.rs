//! What both APIs' replays share: borrowed views of the stored JSON texts,
//! read without copying what they do not change, and JSON texts written
//! back with only the gateway's changes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{ReplayError, malformed};
use crate::json::{Edit, JsonObject};

/// `T` read from `bytes`, which must be one JSON object (serde would read
/// a struct from an array too).
pub(super) fn read<'a, T: Deserialize<'a>>(
    place: impl fmt::Display + Copy,
    bytes: &'a [u8],
) -> Result<T, ReplayError> {
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(malformed(place, "not a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|error| malformed(place, crate::json::describe(&error)))
}

pub(super) fn read_raw<'a, T: Deserialize<'a>>(
    place: impl fmt::Display + Copy,
    value: &'a RawValue,
) -> Result<T, ReplayError> {
    read(place, value.get().as_bytes())
}

/// A member's value as `T`, `None` for `null` (as for a member not given).
pub(super) fn value_of<'a, T: Deserialize<'a>>(
    place: impl fmt::Display + Copy,
    value: &'a RawValue,
) -> Result<Option<T>, ReplayError> {
    if is_null(value) {
        return Ok(None);
    }
    serde_json::from_str(value.get())
        .map(Some)
        .map_err(|error| malformed(place, crate::json::describe(&error)))
}

pub(super) fn to_bytes(value: &impl Serialize) -> Result<Bytes, ReplayError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| malformed("writing", crate::json::describe(&error)))
}

/// JSON text the gateway wrote, as a value to embed.
pub(super) fn raw(bytes: &[u8]) -> Result<&RawValue, ReplayError> {
    serde_json::from_slice(bytes).map_err(|error| malformed("writing", crate::json::describe(&error)))
}

/// A member read when present, `null` included (`Some(null)`), where
/// `Option` alone would read `null` as absent.
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

pub(super) fn json_text(value: &RawValue) -> &[u8] {
    value.get().as_bytes()
}

pub(super) fn is_null(value: &RawValue) -> bool {
    value.get() == "null"
}

pub(super) fn is_string(value: &RawValue) -> bool {
    value.get().starts_with('"')
}

/// Keeps the first value given, a non-null one over a `null`.
pub(super) fn keep<'a>(slot: &mut Option<&'a RawValue>, value: Option<&'a RawValue>) {
    let Some(value) = value else { return };
    if slot.is_none_or(|kept| is_null(kept) && !is_null(value)) {
        *slot = Some(value);
    }
}

/// `object` (a JSON object's text) with members set (`Some`: replaced, or
/// added at its end) or left out (`None`); the others as they came. Each
/// name is set once.
pub(super) fn edited(
    place: impl fmt::Display + Copy,
    object: &[u8],
    set: &[(&str, Option<&[u8]>)],
) -> Result<Bytes, ReplayError> {
    let object = JsonObject::parse(Bytes::copy_from_slice(object))
        .map_err(|error| malformed(place, crate::json::describe(&error)))?;
    // Looked up by name: a usage may have many members, and none of this
    // may cost the product of two counts.
    let by_name: BTreeMap<&str, Option<&[u8]>> = set.iter().copied().collect();
    let had: BTreeSet<&str> = object.members().map(|(name, _)| name).collect();
    let added: Vec<(&str, &[u8])> = set
        .iter()
        .filter(|(name, _)| !had.contains(name))
        .filter_map(|(name, value)| value.map(|value| (*name, value)))
        .collect();
    Ok(object.rewrite(
        |name| {
            by_name
                .get(name)
                .map(|value| value.map_or(Edit::Drop, Edit::Replace))
        },
        &added,
    ))
}

/// One member of an object: its name (borrowed when it has no escapes) and
/// its value as it came.
pub(super) type Member<'a> = (Cow<'a, str>, &'a RawValue);

/// An object's members, in order, each value as it came: what a view reads
/// when it must keep the members it does not know.
#[derive(Default)]
pub(super) struct Members<'a>(pub(super) Vec<Member<'a>>);

impl<'de> View<'de> for Members<'de> {
    fn member<A: MapAccess<'de>>(&mut self, name: Cow<'de, str>, map: &mut A) -> Result<(), A::Error> {
        self.0.push((name, map.next_value()?));
        Ok(())
    }
}

/// The members of `value`, which must be a JSON object.
pub(super) fn members<'a>(
    place: impl fmt::Display + Copy,
    value: &'a RawValue,
) -> Result<Vec<Member<'a>>, ReplayError> {
    read_raw::<Viewed<Members<'a>>>(place, value).map(|Viewed(Members(members))| members)
}

/// A view of a JSON object read member by member, in one pass: each member
/// it knows into its own type, the others kept as they came.
pub(super) trait View<'de>: Default {
    /// Reads the value of the member `name` from `map`.
    fn member<A: MapAccess<'de>>(&mut self, name: Cow<'de, str>, map: &mut A) -> Result<(), A::Error>;
}

/// A [`View`], read from a JSON object (and nothing else).
pub(super) struct Viewed<T>(pub(super) T);

impl<'de, T: View<'de>> Deserialize<'de> for Viewed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ViewVisitor(PhantomData))
    }
}

struct ViewVisitor<T>(PhantomData<T>);

impl<'de, T: View<'de>> Visitor<'de> for ViewVisitor<T> {
    type Value = Viewed<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut view = T::default();
        while let Some(JsonStr(name)) = map.next_key()? {
            view.member(name, &mut map)?;
        }
        Ok(Viewed(view))
    }
}

/// A JSON string, borrowed from the input when it has no escapes (serde
/// reads a `Cow` alone as owned).
#[derive(Deserialize)]
pub(super) struct JsonStr<'a>(#[serde(borrow)] pub(super) Cow<'a, str>);

/// Members given as they came, written as the members of the object they
/// are put in.
#[derive(Clone, Copy, Default)]
pub(super) struct Given<'v>(pub(super) &'v [Member<'v>]);

impl Serialize for Given<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}
