//! A [`CachedAnswer`] as bytes, for a store outside the process:
//!
//! ```text
//! "gzc1"  stored_at: u64 LE  kind: u8
//!   kind 0 (whole):  length: u32 LE, bytes
//!   kind 1 (chunks): count: u32 LE, then each: length: u32 LE, bytes
//! ```
//!
//! What is read back comes from a store others can write to, so reading
//! never panics and never trusts a count or a length: anything malformed,
//! cut short or followed by more bytes is no answer.

use bytes::Bytes;
use gatewayz_domain::cache::{CachedAnswer, CachedBody};

/// The format and its version: a change of the layout changes it, and
/// values of another version are misses.
const MAGIC: &[u8; 4] = b"gzc1";

const WHOLE: u8 = 0;
const CHUNKS: u8 = 1;

/// The bytes of a length or a count.
const LENGTH_BYTES: usize = 4;

/// `answer` as bytes, or `None` when a part or the number of chunks does
/// not fit the format's 32-bit lengths (4 GiB: far past any stored answer).
pub(super) fn encode(answer: &CachedAnswer) -> Option<Vec<u8>> {
    let parts: &[Bytes] = match &answer.body {
        CachedBody::Whole(json) => std::slice::from_ref(json),
        CachedBody::Chunks(chunks) => chunks,
    };
    let size = MAGIC.len() + 8 + 1 + LENGTH_BYTES + parts.len() * LENGTH_BYTES + answer.body.len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&answer.stored_at.to_le_bytes());
    match &answer.body {
        CachedBody::Whole(_) => out.push(WHOLE),
        CachedBody::Chunks(chunks) => {
            out.push(CHUNKS);
            out.extend_from_slice(&u32::try_from(chunks.len()).ok()?.to_le_bytes());
        }
    }
    for part in parts {
        out.extend_from_slice(&u32::try_from(part.len()).ok()?.to_le_bytes());
        out.extend_from_slice(part);
    }
    Some(out)
}

/// The answer `value` holds, or `None` when it is not one this gateway
/// wrote. The parts are slices of `value`, not copies.
pub(super) fn decode(value: &Bytes) -> Option<CachedAnswer> {
    let mut reader = Reader { value, at: 0 };
    if reader.take(MAGIC.len())? != MAGIC.as_slice() {
        return None;
    }
    let stored_at = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let body = match reader.take(1)? {
        [WHOLE] => CachedBody::Whole(reader.part()?),
        [CHUNKS] => {
            let count = reader.length()?;
            // Each chunk takes at least its length's bytes: a larger count
            // is a lie, and must not size an allocation.
            if count > reader.remaining() / LENGTH_BYTES {
                return None;
            }
            let chunks = (0..count).map(|_| reader.part()).collect::<Option<Vec<_>>>()?;
            CachedBody::Chunks(chunks)
        }
        _ => return None,
    };
    (reader.remaining() == 0).then_some(CachedAnswer { stored_at, body })
}

/// Reads `value` from the front, each read checked against what is left.
struct Reader<'a> {
    value: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.value.len().saturating_sub(self.at)
    }

    fn take(&mut self, length: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(length)?;
        let taken = self.value.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn length(&mut self) -> Option<usize> {
        let bytes: [u8; LENGTH_BYTES] = self.take(LENGTH_BYTES)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    }

    /// A length, then that many bytes.
    fn part(&mut self) -> Option<Bytes> {
        let length = self.length()?;
        let start = self.at;
        self.take(length)?;
        Some(self.value.slice(start..self.at))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn answer(body: CachedBody) -> CachedAnswer {
        CachedAnswer {
            stored_at: 1_906_545_600,
            body,
        }
    }

    fn round_trip(answer: &CachedAnswer) -> Option<CachedAnswer> {
        decode(&Bytes::from(encode(answer)?))
    }

    fn any_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn any_answer() -> impl Strategy<Value = CachedAnswer> {
        let body = prop_oneof![
            any_bytes(512).prop_map(CachedBody::Whole),
            proptest::collection::vec(any_bytes(64), 0..16).prop_map(CachedBody::Chunks),
        ];
        (any::<u64>(), body).prop_map(|(stored_at, body)| CachedAnswer { stored_at, body })
    }

    #[test]
    fn both_kinds_of_body_and_empty_ones_come_back_equal() {
        for body in [
            CachedBody::Whole(Bytes::from_static(br#"{"id":"chatcmpl-1"}"#)),
            CachedBody::Whole(Bytes::new()),
            CachedBody::Chunks(vec![
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::new(),
                Bytes::from_static(b"x"),
            ]),
            CachedBody::Chunks(Vec::new()),
        ] {
            let answer = answer(body);
            assert_eq!(round_trip(&answer), Some(answer));
        }
    }

    #[test]
    fn another_version_a_cut_value_or_trailing_bytes_are_no_answer() {
        let whole = encode(&answer(CachedBody::Whole(Bytes::from_static(b"hello")))).unwrap();
        let chunks = encode(&answer(CachedBody::Chunks(vec![Bytes::from_static(b"ab"); 3]))).unwrap();
        for value in [&whole, &chunks] {
            for cut in 0..value.len() {
                assert_eq!(
                    decode(&Bytes::copy_from_slice(&value[..cut])),
                    None,
                    "cut at {cut}"
                );
            }
            let mut longer = value.clone();
            longer.push(0);
            assert_eq!(decode(&Bytes::from(longer)), None);
            let mut other_version = value.clone();
            other_version[3] = b'2';
            assert_eq!(decode(&Bytes::from(other_version)), None);
        }
        let mut other_kind = whole;
        other_kind[12] = 2;
        assert_eq!(decode(&Bytes::from(other_kind)), None);
    }

    #[test]
    fn a_count_or_a_length_past_the_value_is_no_answer() {
        let mut huge_count = b"gzc1".to_vec();
        huge_count.extend_from_slice(&0_u64.to_le_bytes());
        huge_count.push(CHUNKS);
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&Bytes::from(huge_count)), None);

        let mut huge_length = b"gzc1".to_vec();
        huge_length.extend_from_slice(&0_u64.to_le_bytes());
        huge_length.push(WHOLE);
        huge_length.extend_from_slice(&u32::MAX.to_le_bytes());
        huge_length.extend_from_slice(b"short");
        assert_eq!(decode(&Bytes::from(huge_length)), None);
    }

    proptest! {
        #[test]
        fn any_answer_comes_back_equal(answer in any_answer()) {
            prop_assert_eq!(round_trip(&answer), Some(answer));
        }

        #[test]
        fn any_bytes_decode_without_panicking(value in any_bytes(256)) {
            let _ = decode(&value);
        }

        #[test]
        fn a_corrupted_answer_decodes_without_panicking(
            answer in any_answer(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<Option<prop::sample::Index>>(),
        ) {
            let mut value = encode(&answer).unwrap();
            let at = at.index(value.len());
            value[at] = byte;
            if let Some(cut) = cut {
                value.truncate(cut.index(value.len()));
            }
            let _ = decode(&Bytes::from(value));
        }

        #[test]
        fn any_bytes_after_the_magic_decode_without_panicking(value in any_bytes(256)) {
            let mut prefixed = MAGIC.to_vec();
            prefixed.extend_from_slice(&value);
            if let Some(answer) = decode(&Bytes::from(prefixed.clone())) {
                // What decodes was written in the format: it encodes back the same.
                prop_assert_eq!(encode(&answer), Some(prefixed));
            }
        }
    }
}
