//! `POST /v1/chat/completions`, and what every API that answers a JSON
//! body shares with it ([`serve`]): reading the body within the budget,
//! routing, cancellation when the client leaves, whole and streamed
//! answers.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures::StreamExt;
use gatewayz_domain::text::quote;
use gatewayz_domain::{
    BudgetedBuffer, CacheDirectives, CallRecord, ChatCommand, ChatError, ChatOutcome, ChatRequest,
    ChatResponse, ChatService, Endpoint, KeyPolicy, MemoryBudget, OverBudget, RequestContext, RoutingFields,
};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extensions::{BodyRead, RequestId};
use crate::probe::ClientProbe;
use crate::sse::event_stream;
use crate::trace_context;

/// What the chat and model routes need, shared by every worker.
#[derive(Debug, Clone)]
pub struct ChatState {
    pub service: ChatService,
    pub max_body_bytes: usize,
    /// What request bodies and answers are buffered in.
    pub budget: MemoryBudget,
    /// How long the body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Unix time the gateway started: the `created` of its models.
    pub started_at: u64,
}

pub async fn chat_completions(
    _: Authenticated,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    serve(Endpoint::Chat, &request, payload, &state).await
}

/// The client's headers passed on upstream on Anthropic's paths, and the
/// longest value passed.
const ANTHROPIC_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];
const PASSED_HEADER_MAX: usize = 1024;

/// Serves a request to `endpoint`: its body read and parsed as that API's,
/// then routed, called and answered like a chat completion.
pub(crate) async fn serve(
    endpoint: Endpoint,
    request: &HttpRequest,
    payload: web::Payload,
    state: &ChatState,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    require_json(request)?;
    let record = request
        .extensions()
        .get::<CallRecord>()
        .cloned()
        .unwrap_or_default();
    let overloaded = |over: OverBudget| {
        let error = ChatError::Overloaded(over);
        record.failed(&error);
        ApiError::from(error)
    };
    let body = tokio::time::timeout(
        state.body_timeout,
        read_body(request, payload, state.max_body_bytes, &state.budget),
    )
    .await
    .map_err(|_| ApiError::body_timeout(state.body_timeout))?
    .map_err(|error| match error {
        BodyError::Refused(error) => error,
        BodyError::OverBudget(over) => overloaded(over),
    })?;
    request.extensions_mut().insert(BodyRead);
    // The body sent upstream is a copy of this one (with the gateway's few
    // changes): its room is taken now, and held while the call runs.
    let mut upstream_copy = state.budget.lease();
    upstream_copy.cover(body.len()).map_err(overloaded)?;
    let chat_request = ChatRequest::parse_for(endpoint, body)?;
    let routing = RoutingFields::of(&chat_request)?;
    let passed_headers = if endpoint.is_anthropic() {
        passed_headers(request, &ANTHROPIC_HEADERS)?
    } else {
        Vec::new()
    };
    let context = RequestContext {
        passed_headers,
        received: started,
        record: record.clone(),
        request_id: RequestId::of(request),
        traceparent: trace_context::traceparent(request.headers()),
        tracestate: trace_context::tracestate(request.headers()),
        budget: state.budget.clone(),
        ..RequestContext::default()
    };
    let command = ChatCommand {
        request: chat_request,
        routing,
        context,
        key: request.extensions().get::<Arc<KeyPolicy>>().cloned(),
        cache: cache_directives(request)?,
    };
    let probe = request.conn_data::<ClientProbe>().cloned();
    let outcome = unless_gone(probe.as_ref(), &record, state.service.execute(command)).await??;
    drop(upstream_copy);
    let mut response = HttpResponse::Ok();
    record.read(|facts| {
        if let Some(status) = facts.cache {
            response.insert_header((CACHE_HEADER, status.as_str()));
        }
        if let Some(age) = facts.cache_age {
            response.insert_header((header::AGE, age));
        }
    });
    match outcome {
        ChatOutcome::Complete(answer) => Ok(response
            .content_type(ContentType::json())
            .body(answer_body(answer))),
        ChatOutcome::Stream(chunks) => {
            let events = event_stream(chunks, endpoint);
            response
                .insert_header(header::ContentType(actix_web::mime::TEXT_EVENT_STREAM))
                .insert_header(header::CacheControl(vec![header::CacheDirective::NoCache]))
                .insert_header(("x-accel-buffering", "no"));
            Ok(match probe {
                Some(probe) => {
                    // actix drops a stream only when it next writes to a gone
                    // client; the probe ends it (and the upstream) at once.
                    let gone = async move {
                        probe.gone().await;
                        record.update(|facts| facts.client_gone = true);
                    };
                    response.streaming(until_gone(events, gone))
                }
                None => response.streaming(events),
            })
        }
    }
}

/// What the response cache did for a request.
const CACHE_HEADER: &str = "x-gatewayz-cache";

/// What the client's `Cache-Control` asks of the response cache:
/// `max-age=N`, `no-cache`, `no-store` (others are ignored, as HTTP
/// caches do). A `max-age` that is not a whole number of seconds is a 400.
fn cache_directives(request: &HttpRequest) -> Result<CacheDirectives, ApiError> {
    let mut directives = CacheDirectives::default();
    for value in request.headers().get_all(header::CACHE_CONTROL) {
        let text = value.to_str().unwrap_or_default();
        for directive in text.split(',').map(str::trim) {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-cache") {
                directives.no_cache = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                directives.no_store = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                let seconds = argument
                    .filter(|seconds| {
                        !seconds.is_empty() && seconds.bytes().all(|byte| byte.is_ascii_digit())
                    })
                    // Past what fits, as long as any answer lives.
                    .map(|seconds| seconds.parse::<u64>().unwrap_or(u64::MAX))
                    .ok_or_else(|| {
                        ApiError::invalid_request(
                            "Cache-Control max-age must be a whole number of seconds, as in `max-age=60`",
                        )
                        .with_param("Cache-Control")
                    })?;
                let max_age = std::time::Duration::from_secs(seconds);
                directives.max_age = Some(directives.max_age.map_or(max_age, |earlier| earlier.min(max_age)));
            }
        }
    }
    Ok(directives)
}

/// `call`'s outcome, unless the client leaves first: then the call (and
/// the upstream's) is dropped, and the request ends as a 499.
pub(crate) async fn unless_gone<T>(
    probe: Option<&ClientProbe>,
    record: &CallRecord,
    call: impl Future<Output = T>,
) -> Result<T, ApiError> {
    let Some(probe) = probe else {
        return Ok(call.await);
    };
    // Biased: the call is polled first, so its route and stream flag are
    // recorded even when the client is already gone.
    tokio::select! {
        biased;
        outcome = call => Ok(outcome),
        () = probe.gone() => {
            record.update(|facts| facts.client_gone = true);
            probe.close();
            Err(ApiError::client_closed())
        }
    }
}

/// `events` until `gone` resolves; then, or when `events` ends, `events`
/// is dropped before the body ends, so that what its drop settles (the
/// key's charge, the upstream time) is in the record when the request is
/// reported. (`take_until` would keep it until the body itself is dropped.)
fn until_gone<S, E>(
    events: S,
    gone: impl Future<Output = ()>,
) -> impl futures::Stream<Item = Result<Bytes, E>>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut events = Some(events);
    let mut gone = Box::pin(gone);
    futures::stream::poll_fn(move |cx| {
        let Some(stream) = events.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        if gone.as_mut().poll(cx).is_ready() {
            events = None;
            return std::task::Poll::Ready(None);
        }
        let polled = stream.poll_next_unpin(cx);
        if let std::task::Poll::Ready(None) = polled {
            events = None;
        }
        polled
    })
}

/// The client's headers among `names`, to pass on upstream: each at most
/// [`PASSED_HEADER_MAX`] bytes of visible ASCII (else a 400 naming it).
fn passed_headers(
    request: &HttpRequest,
    names: &[&'static str],
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut passed = Vec::new();
    for name in names {
        for value in request.headers().get_all(*name) {
            let text = value
                .to_str()
                .ok()
                .filter(|text| {
                    text.len() <= PASSED_HEADER_MAX
                        && text.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ')
                })
                .ok_or_else(|| {
                    ApiError::invalid_request(format!(
                        "The `{name}` header must be at most {PASSED_HEADER_MAX} visible ASCII characters"
                    ))
                    .with_param(*name)
                })?;
            passed.push((*name, text.to_owned()));
        }
    }
    Ok(passed)
}

/// A body declared as anything but JSON is refused; an undeclared one is
/// read as JSON, as OpenAI does.
fn require_json(request: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let declared = value.to_str().unwrap_or_default();
    let essence = declared.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case(ContentType::json().0.essence_str()) {
        return Ok(());
    }
    Err(ApiError::unsupported_media_type(format!(
        "Content-Type must be application/json, got `{}`",
        quote(declared)
    )))
}

/// Why a request body was not read.
enum BodyError {
    /// Refused with this error (too large, broken).
    Refused(ApiError),
    /// The memory budget cannot hold it.
    OverBudget(OverBudget),
}

/// The whole body, in a buffer taken from `budget`: its declared length at
/// once (refused before a byte of it is read when the budget cannot hold
/// it), else as it arrives.
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    budget: &MemoryBudget,
) -> Result<Bytes, BodyError> {
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > limit) {
        return Err(BodyError::Refused(ApiError::payload_too_large(limit)));
    }
    let mut body = BudgetedBuffer::with_capacity(budget, declared_length.unwrap_or(8 * 1024))
        .map_err(BodyError::OverBudget)?;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            BodyError::Refused(ApiError::invalid_request(format!(
                "Could not read the request body: {error}"
            )))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::Refused(ApiError::payload_too_large(limit)));
        }
        body.extend_from_slice(&chunk).map_err(BodyError::OverBudget)?;
    }
    Ok(body.freeze())
}

/// The largest piece of an answer handed to actix at once: actix copies
/// each piece into its connection's write buffer, which would otherwise
/// grow to the whole answer (and keep that size).
const ANSWER_PIECE_BYTES: usize = 64 * 1024;

/// A whole answer's body: in one piece when small, else its parts cut into
/// pieces of at most [`ANSWER_PIECE_BYTES`], none of them copied.
pub(crate) fn answer_body(response: ChatResponse) -> BoxBody {
    if response.len() <= ANSWER_PIECE_BYTES {
        return BoxBody::new(response.json());
    }
    let length = response.len() as u64;
    let pieces = response.into_parts().flat_map(|part| {
        let count = part.len().div_ceil(ANSWER_PIECE_BYTES);
        (0..count).map(move |index| {
            let start = index * ANSWER_PIECE_BYTES;
            Ok::<_, std::convert::Infallible>(part.slice(start..part.len().min(start + ANSWER_PIECE_BYTES)))
        })
    });
    BoxBody::new(SizedStream::new(length, futures::stream::iter(pieces)))
}

/// The request, parsed once: what validation and routing read, and the body
/// the upstream's copy is written from.
#[cfg(test)]
fn parse_request(body: Bytes) -> Result<ChatRequest, ApiError> {
    ChatRequest::parse(body).map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// A refusal is a 400 whose message and `param` stay short, whatever the
    /// client sent.
    fn assert_bounded_refusal(error: &ApiError) {
        assert_eq!(error.status().as_u16(), 400, "{error}");
        let body = error.to_json();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && message.chars().count() <= 1025,
            "{message}"
        );
        let param = body["error"]["param"].as_str().unwrap_or_default();
        assert!(param.chars().count() <= 129, "{param}");
    }

    /// JSON values shaped like a chat request, with wrong types and long
    /// strings where they may do harm.
    fn request_like() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
            (1_usize..3000).prop_map(|len| serde_json::Value::from("r".repeat(len))),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![Just("role".to_owned()), Just("content".to_owned()), ".{0,8}"],
                    inner,
                    0..4
                )
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        });
        (value.clone(), value.clone(), value.clone(), value).prop_map(
            |(model, messages, max_tokens, input)| {
                json!({"model": model, "messages": messages, "max_tokens": max_tokens, "input": input,
                "previous_response_id": input})
            },
        )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_a_request_or_a_bounded_400(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let bytes = Bytes::from(bytes);
            for endpoint in Endpoint::ALL {
                if let Err(error) = ChatRequest::parse_for(endpoint, bytes.clone()) {
                    assert_bounded_refusal(&ApiError::from(error));
                }
            }
        }

        #[test]
        fn request_shaped_json_is_a_request_or_a_bounded_400(body in request_like()) {
            let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
            for endpoint in Endpoint::ALL {
                if let Err(error) = ChatRequest::parse_for(endpoint, bytes.clone()) {
                    assert_bounded_refusal(&ApiError::from(error));
                }
            }
        }
    }

    #[test]
    fn a_duplicate_field_and_a_wrong_typed_role_name_their_param() {
        let cases: [(&[u8], &str); 3] = [
            (br#"{"model": "a", "model": "b", "messages": []}"#, "model"),
            (
                br#"{"model": "a", "messages": [{"role": 5, "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                br#"{"model": "a", "messages": [], "max_tokens": "many"}"#,
                "max_tokens",
            ),
        ];
        for (body, param) in cases {
            let error = parse_request(Bytes::from_static(body)).err().unwrap();
            assert_eq!(error.to_json()["error"]["param"], param, "{error}");
        }
    }
}
