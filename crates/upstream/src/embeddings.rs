//! `POST /v1/embeddings`: OpenAI's embeddings, as deterministic unit vectors
//! derived from each input's content, so a test can tell inputs apart and
//! rely on the same input giving the same vector on every run.

use base64::Engine;
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::errors;
use crate::ids::mix;
use crate::reply::{Reply, json_response};
use crate::words;

/// The length of a vector when the request does not give `dimensions`.
pub const DEFAULT_DIMENSIONS: usize = 8;
/// The largest `dimensions` accepted.
pub const MAX_DIMENSIONS: usize = 4096;
/// The most inputs one request may hold (OpenAI's own limit).
pub const MAX_INPUTS: usize = 2048;

/// One input: a text or one array of token ids.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    Text(&'a str),
    Tokens(Vec<u64>),
}

impl Input<'_> {
    /// Its tokens, at least one.
    fn tokens(&self) -> usize {
        match self {
            Self::Text(text) => words::count(text),
            Self::Tokens(tokens) => tokens.len(),
        }
        .max(1)
    }

    /// A unit vector of `dimensions` floats that depends on the content only.
    fn vector(&self, dimensions: usize) -> Vec<f32> {
        // FNV-1a over a tag and the content: stable across runs and builds,
        // unlike std's hasher, and a text never collides with its token ids.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        match self {
            Self::Text(text) => {
                feed(b"t");
                feed(text.as_bytes());
            }
            Self::Tokens(tokens) => {
                feed(b"i");
                for token in tokens {
                    feed(&token.to_le_bytes());
                }
            }
        }
        let raw: Vec<f64> = (0..dimensions as u64)
            .map(|place| {
                // The top 53 bits as a fraction in [0, 1), moved to [-1, 1).
                #[allow(clippy::cast_precision_loss)]
                let unit = (mix(hash ^ mix(place)) >> 11) as f64 / (1u64 << 53) as f64;
                unit * 2.0 - 1.0
            })
            .collect();
        let norm = raw.iter().map(|value| value * value).sum::<f64>().sqrt();
        if norm == 0.0 {
            let mut axis = vec![0.0; dimensions];
            axis[0] = 1.0;
            return axis;
        }
        #[allow(clippy::cast_possible_truncation)]
        raw.iter().map(|value| (value / norm) as f32).collect()
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

/// Floats are written as `f32`s (shortest round-trip form), so a client
/// reads back exactly the values the base64 form holds.
#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// The answer to a `POST /v1/embeddings` with this body. An Azure
/// deployment's answer names `deployment` as its model, and the body then
/// needs none (Azure's path names it).
pub fn answer(body: &[u8], deployment: Option<&str>) -> Response<Reply> {
    match embed(body, deployment) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err((message, param)) => errors::openai(StatusCode::BAD_REQUEST, &message, param, None),
    }
}

/// The embedding list's JSON, or the message and parameter of a 400.
fn embed(body: &[u8], deployment: Option<&str>) -> Result<String, (String, Option<&'static str>)> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|error| (format!("The body is not valid JSON: {error}"), None))?;
    let model = match (deployment, request.get("model")) {
        (Some(deployment), _) => deployment,
        (None, Some(Value::String(model))) => model.as_str(),
        (None, _) => return Err(("Missing required parameter: 'model'.".to_owned(), Some("model"))),
    };
    let inputs = inputs(request.get("input")).map_err(|message| (message, Some("input")))?;
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(value) => value
            .as_u64()
            .and_then(|dimensions| usize::try_from(dimensions).ok())
            .filter(|dimensions| (1..=MAX_DIMENSIONS).contains(dimensions))
            .ok_or_else(|| {
                (
                    format!("Invalid 'dimensions': {value}; expected an integer from 1 to {MAX_DIMENSIONS}."),
                    Some("dimensions"),
                )
            })?,
    };
    let base64 = match request.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(format)) if format == "float" => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(value) => {
            return Err((
                format!("Invalid 'encoding_format': {value}; expected 'float' or 'base64'."),
                Some("encoding_format"),
            ));
        }
    };
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = input.vector(dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|value| value.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(&bytes))
            } else {
                Vector::Floats(vector)
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let tokens = inputs.iter().map(Input::tokens).sum();
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    serde_json::to_string(&list).map_err(|error| (error.to_string(), None))
}

/// `input`: a string, an array of strings, one array of token ids or an
/// array of token id arrays.
fn inputs(input: Option<&Value>) -> Result<Vec<Input<'_>>, String> {
    let invalid = || {
        "Invalid 'input': expected a string, an array of strings, an array of integers \
         or an array of integer arrays."
            .to_owned()
    };
    let tokens = |values: &[Value]| values.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>();
    let inputs = match input {
        None | Some(Value::Null) => return Err("Missing required parameter: 'input'.".to_owned()),
        Some(Value::String(text)) => vec![Input::Text(text)],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err("Invalid 'input': the array is empty.".to_owned());
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|item| item.as_str().map(Input::Text))
                .collect::<Option<_>>()
                .ok_or_else(invalid)?,
            Value::Number(_) => vec![Input::Tokens(tokens(items).ok_or_else(invalid)?)],
            Value::Array(_) => items
                .iter()
                .map(|item| match item {
                    Value::Array(values) if !values.is_empty() => tokens(values).map(Input::Tokens),
                    _ => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(invalid)?,
            _ => return Err(invalid()),
        },
        Some(_) => return Err(invalid()),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(format!(
            "Invalid 'input': at most {MAX_INPUTS} inputs per request."
        ));
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::{Input, inputs};
    use serde_json::json;

    #[test]
    fn reads_every_input_shape_and_refuses_the_rest() {
        let read = |value: serde_json::Value| inputs(Some(&value)).map(|inputs| inputs.len());
        assert_eq!(read(json!("one")), Ok(1));
        assert_eq!(read(json!(["a", "b"])), Ok(2));
        assert_eq!(read(json!([1, 2, 3])), Ok(1));
        assert_eq!(read(json!([[1, 2], [3]])), Ok(2));
        for bad in [
            json!([]),
            json!(["a", 1]),
            json!([1, "a"]),
            json!([[1], []]),
            json!(3),
            json!([-1]),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        assert!(inputs(None).is_err());
    }

    #[test]
    fn vectors_are_unit_length_and_depend_on_the_content_only() {
        let vector = Input::Text("hello").vector(16);
        let norm: f32 = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(vector, Input::Text("hello").vector(16));
        assert_ne!(vector, Input::Text("hello!").vector(16));
        assert_ne!(Input::Tokens(vec![1]).vector(4), Input::Tokens(vec![2]).vector(4));
    }
}
