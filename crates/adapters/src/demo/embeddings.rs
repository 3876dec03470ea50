//! Embeddings: for each input a unit vector derived from its content alone,
//! the same on every run, as floats or as base64 of little-endian `f32`s.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatewayz_domain::{ChatError, ChatResponse, Endpoint, ProviderCall, ValidationError};
use serde::{Deserialize, Serialize};

use super::echo::word_tokens;
use super::hashing::{FNV_OFFSET, SplitMix64, fnv1a, fnv1a_more};
use super::wire::{refused, to_bytes, unreadable};

/// The length of a vector when the request names none.
const DEFAULT_DIMENSIONS: usize = 64;

/// The longest vector the demo makes.
const MAX_DIMENSIONS: usize = 4096;

/// The most inputs one request may embed.
const MAX_INPUTS: usize = 2048;

/// The most values (inputs times dimensions) one answer may hold: about
/// 3.5 MiB of JSON floats, 1.4 MiB of base64.
const MAX_VALUES: usize = 1 << 18;

/// The answer to an embeddings request.
pub(super) fn complete(call: &ProviderCall) -> Result<ChatResponse, ChatError> {
    let request: Request = serde_json::from_slice(&call.body).map_err(|_| unreadable())?;
    let inputs = request.input.pieces()?;
    let dimensions = dimensions(request.dimensions)?;
    if inputs.len() > MAX_INPUTS {
        return Err(too_many(format!(
            "The demo provider embeds at most {MAX_INPUTS} inputs a request, got {}",
            inputs.len()
        )));
    }
    if inputs.len().saturating_mul(dimensions) > MAX_VALUES {
        return Err(too_many(format!(
            "The demo provider makes at most {MAX_VALUES} values a request (inputs times dimensions), \
             got {} inputs of {dimensions}",
            inputs.len()
        )));
    }
    let base64 = request.encoding_format.as_deref() == Some("base64");
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = unit_vector(input.seed(), dimensions);
            EmbeddingOut {
                object: "embedding",
                index,
                embedding: if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|value| value.to_le_bytes()).collect();
                    Vector::Base64(STANDARD.encode(bytes))
                } else {
                    Vector::Floats(vector)
                },
            }
        })
        .collect();
    let tokens = inputs.iter().map(Piece::tokens).sum();
    let answer = Out {
        object: "list",
        data,
        model: &request.model,
        usage: UsageOut {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    ChatResponse::parse(Endpoint::Embeddings, to_bytes(&answer)).map_err(refused)
}

/// What the demo reads of the body.
#[derive(Deserialize)]
struct Request {
    model: String,
    input: Input,
    #[serde(default)]
    dimensions: Option<i64>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// `input`: a string, an array of strings, one array of token ids, or an
/// array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Item>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item {
    Text(String),
    Token(u64),
    Tokens(Vec<u64>),
}

/// One input to embed.
enum Piece<'a> {
    Text(&'a str),
    Tokens(Cow<'a, [u64]>),
}

impl Input {
    fn pieces(&self) -> Result<Vec<Piece<'_>>, ChatError> {
        let items = match self {
            Self::Text(text) => return Ok(vec![Piece::Text(text)]),
            Self::Items(items) => items,
        };
        let tokens = items.iter().filter(|item| matches!(item, Item::Token(_))).count();
        if tokens == 0 {
            return Ok(items
                .iter()
                .filter_map(|item| match item {
                    Item::Text(text) => Some(Piece::Text(text)),
                    Item::Tokens(ids) => Some(Piece::Tokens(Cow::Borrowed(ids))),
                    Item::Token(_) => None,
                })
                .collect());
        }
        if tokens < items.len() {
            return Err(ChatError::Invalid(ValidationError::new(
                "input",
                "`input` must be a string, an array of strings, an array of token ids, or an array of them: \
                 token ids and other inputs cannot be mixed",
            )));
        }
        // One array of token ids is one input.
        let ids = items
            .iter()
            .filter_map(|item| match item {
                Item::Token(id) => Some(*id),
                _ => None,
            })
            .collect();
        Ok(vec![Piece::Tokens(Cow::Owned(ids))])
    }
}

impl Piece<'_> {
    /// The seed of the input's vector: a hash of its content, token ids
    /// hashed apart from text (`0xff` never occurs in UTF-8).
    fn seed(&self) -> u64 {
        match self {
            Self::Text(text) => fnv1a(text.as_bytes()),
            Self::Tokens(ids) => ids.iter().fold(fnv1a_more(FNV_OFFSET, &[0xff]), |hash, id| {
                fnv1a_more(hash, &id.to_le_bytes())
            }),
        }
    }

    /// Its prompt tokens: a word or a token id each.
    fn tokens(&self) -> u64 {
        match self {
            Self::Text(text) => word_tokens(text),
            Self::Tokens(ids) => ids.len() as u64,
        }
    }
}

/// `dimensions`, or the default; past [`MAX_DIMENSIONS`] refused.
fn dimensions(asked: Option<i64>) -> Result<usize, ChatError> {
    let Some(asked) = asked else {
        return Ok(DEFAULT_DIMENSIONS);
    };
    usize::try_from(asked)
        .ok()
        .filter(|dimensions| (1..=MAX_DIMENSIONS).contains(dimensions))
        .ok_or_else(|| {
            ChatError::Invalid(ValidationError::new(
                "dimensions",
                format!("The demo provider makes vectors of 1 to {MAX_DIMENSIONS} dimensions, got {asked}"),
            ))
        })
}

fn too_many(message: String) -> ChatError {
    ChatError::Invalid(ValidationError::new("input", message))
}

/// A vector of `dimensions` values drawn from `seed`, scaled to length 1.
fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut generator = SplitMix64::new(seed);
    // Uniform in [-1, 1): the top 53 bits as a fraction.
    let values: Vec<f64> = (0..dimensions)
        .map(|_| (generator.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = values.iter().map(|value| value * value).sum::<f64>().sqrt();
    if norm == 0.0 {
        // Never drawn in practice; still a unit vector.
        return (0..dimensions)
            .map(|index| if index == 0 { 1.0 } else { 0.0 })
            .collect();
    }
    values.iter().map(|value| (value / norm) as f32).collect()
}

/// The answer, its members in the order OpenAI's API writes them.
#[derive(Serialize)]
struct Out<'a> {
    object: &'static str,
    data: Vec<EmbeddingOut>,
    model: &'a str,
    usage: UsageOut,
}

#[derive(Serialize)]
struct EmbeddingOut {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use gatewayz_domain::ChatProvider;
    use serde_json::{Value, json};

    use super::super::DemoProvider;
    use super::super::testing::{call_to, value};
    use super::*;

    async fn embed(body: Value) -> Result<Value, ChatError> {
        let answer = DemoProvider
            .complete(call_to(Endpoint::Embeddings, &body))
            .await?;
        Ok(value(&answer.json()))
    }

    fn floats(embedding: &Value) -> Vec<f32> {
        embedding
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap() as f32)
            .collect()
    }

    fn norm(vector: &[f32]) -> f64 {
        vector
            .iter()
            .map(|value| f64::from(*value).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[tokio::test]
    async fn each_input_gets_a_unit_vector_of_its_own_with_usage() {
        let answer = embed(json!({"model": "e", "input": ["hello world", "bye", "hello world"]}))
            .await
            .unwrap();

        assert_eq!(answer["object"], "list");
        assert_eq!(answer["model"], "e");
        assert_eq!(answer["usage"], json!({"prompt_tokens": 5, "total_tokens": 5}));
        let data = answer["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        let vectors: Vec<Vec<f32>> = data.iter().map(|item| floats(&item["embedding"])).collect();
        for (index, (item, vector)) in data.iter().zip(&vectors).enumerate() {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], index);
            assert_eq!(vector.len(), DEFAULT_DIMENSIONS);
            assert!((norm(vector) - 1.0).abs() < 1e-5, "{}", norm(vector));
        }
        assert_eq!(vectors[0], vectors[2]);
        assert_ne!(vectors[0], vectors[1]);
    }

    #[tokio::test]
    async fn the_same_input_gets_the_same_vector_on_every_call() {
        let body = json!({"model": "e", "input": "same", "dimensions": 7});
        let first = embed(body.clone()).await.unwrap();
        let second = embed(body).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(floats(&first["data"][0]["embedding"]).len(), 7);
        // Derived from the content alone: a stable hash, not std's.
        assert_eq!(
            floats(&first["data"][0]["embedding"]),
            unit_vector(fnv1a(b"same"), 7)
        );
    }

    #[tokio::test]
    async fn token_ids_are_one_input_or_one_input_an_array() {
        let one = embed(json!({"model": "e", "input": [1, 2, 3]})).await.unwrap();
        assert_eq!(one["data"].as_array().unwrap().len(), 1);
        assert_eq!(one["usage"]["prompt_tokens"], 3);
        let two = embed(json!({"model": "e", "input": [[1, 2, 3], [4]]}))
            .await
            .unwrap();
        assert_eq!(two["data"].as_array().unwrap().len(), 2);
        assert_eq!(two["data"][0]["embedding"], one["data"][0]["embedding"]);
        assert_eq!(two["usage"]["prompt_tokens"], 4);
    }

    #[tokio::test]
    async fn base64_is_the_little_endian_f32s_of_the_float_vector() {
        let floats_answer = embed(json!({"model": "e", "input": "x", "dimensions": 5}))
            .await
            .unwrap();
        let base64_answer =
            embed(json!({"model": "e", "input": "x", "dimensions": 5, "encoding_format": "base64"}))
                .await
                .unwrap();

        let text = base64_answer["data"][0]["embedding"].as_str().unwrap();
        let decoded: Vec<f32> = STANDARD
            .decode(text)
            .unwrap()
            .chunks_exact(4)
            .map(|bytes| f32::from_le_bytes(bytes.try_into().unwrap()))
            .collect();
        assert_eq!(decoded, floats(&floats_answer["data"][0]["embedding"]));
    }

    #[tokio::test]
    async fn too_many_dimensions_inputs_or_values_are_refused_with_400() {
        let texts = |count: usize| vec!["a"; count];
        for (body, param) in [
            (
                json!({"model": "e", "input": "a", "dimensions": MAX_DIMENSIONS + 1}),
                "dimensions",
            ),
            (
                json!({"model": "e", "input": texts(MAX_INPUTS + 1), "dimensions": 1}),
                "input",
            ),
            (
                json!({"model": "e", "input": texts(65), "dimensions": MAX_DIMENSIONS}),
                "input",
            ),
            (json!({"model": "e", "input": [1, "a"]}), "input"),
        ] {
            let error = embed(body.clone()).await.unwrap_err();
            assert!(
                matches!(&error, ChatError::Invalid(invalid) if invalid.param.as_deref() == Some(param)),
                "{body}: {error:?}"
            );
        }
        assert!(
            embed(json!({"model": "e", "input": texts(64), "dimensions": MAX_DIMENSIONS}))
                .await
                .is_ok()
        );
    }
}
