//! What a message is made from, read from a chat completion or chunk
//! without building it as a JSON tree: borrowed text, the first choice
//! only, at most [`MAX_TOOL_CALLS`] tool calls. A hostile upstream's
//! answer costs about its own size to read, whatever its shape.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};

/// The most tool calls one message (or one chunk) may carry.
pub(super) const MAX_TOOL_CALLS: usize = 128;

/// A `chat.completion` or a `chat.completion.chunk`.
#[derive(Deserialize)]
pub(super) struct Completion<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub choices: First<Choice<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Choice<'a> {
    /// A completion's `message`, a chunk's `delta`.
    #[serde(default, borrow, alias = "delta")]
    pub message: Said<'a>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
pub(super) struct Said<'a> {
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Bounded<Call<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct Call<'a> {
    /// A chunk's: which call a delta continues.
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub function: Function<'a>,
}

#[derive(Deserialize, Default)]
pub(super) struct Function<'a> {
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub arguments: Option<Cow<'a, str>>,
}

/// An array's first element; the others are read past, not kept.
pub(super) struct First<T>(pub Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for FirstVisitor<T> {
            type Value = First<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }

        deserializer.deserialize_seq(FirstVisitor(PhantomData))
    }
}

/// An array of at most [`MAX_TOOL_CALLS`] elements: more is an error, not
/// a silent cut.
pub(super) struct Bounded<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Bounded<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedVisitor<T> {
            type Value = Bounded<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of at most {MAX_TOOL_CALLS} tool calls")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX_TOOL_CALLS {
                        // Worded as serde words a type mismatch, whose
                        // `expected` part errors may show.
                        return Err(serde::de::Error::custom(format!(
                            "too many tool calls, expected at most {MAX_TOOL_CALLS} tool calls"
                        )));
                    }
                    items.push(item);
                }
                Ok(Bounded(items))
            }
        }

        deserializer.deserialize_seq(BoundedVisitor(PhantomData))
    }
}
