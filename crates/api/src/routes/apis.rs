//! The APIs beside chat completions: `POST /v1/embeddings`,
//! `POST /v1/messages` and `POST /v1/messages/count_tokens` (Anthropic's),
//! `POST /v1/responses`, and the Responses API's calls by id. Each is
//! served as chat is ([`serve`]): the same keys, routing, limits, budget and
//! cancellation.

use actix_web::http::header::ContentType;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use gatewayz_domain::model::is_response_id;
use gatewayz_domain::text::quote;
use gatewayz_domain::{CallRecord, Endpoint, RequestContext, ResponseAction, ResponseCommand};

use super::chat::{ChatState, serve, unless_gone};
use crate::auth::{Authenticated, policy_of};
use crate::error::ApiError;
use crate::extensions::RequestId;
use crate::probe::ClientProbe;
use crate::trace_context;

pub async fn embeddings(
    _: Authenticated,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    serve(Endpoint::Embeddings, &request, payload, &state).await
}

pub async fn messages(
    _: Authenticated,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    serve(Endpoint::Messages, &request, payload, &state).await
}

pub async fn count_tokens(
    _: Authenticated,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    serve(Endpoint::CountTokens, &request, payload, &state).await
}

pub async fn responses(
    _: Authenticated,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    serve(Endpoint::Responses, &request, payload, &state).await
}

pub async fn retrieve_response(
    _: Authenticated,
    request: HttpRequest,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    by_id(ResponseAction::Retrieve, &request, &state).await
}

pub async fn delete_response(
    _: Authenticated,
    request: HttpRequest,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    by_id(ResponseAction::Delete, &request, &state).await
}

pub async fn cancel_response(
    _: Authenticated,
    request: HttpRequest,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    by_id(ResponseAction::Cancel, &request, &state).await
}

pub async fn response_input_items(
    _: Authenticated,
    request: HttpRequest,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    by_id(ResponseAction::InputItems, &request, &state).await
}

/// The longest query string passed on (`limit`, `order`, `after`,
/// `include[]`).
const QUERY_MAX: usize = 2048;

/// A Responses API call by id, made at the target that made the response.
async fn by_id(
    action: ResponseAction,
    request: &HttpRequest,
    state: &ChatState,
) -> Result<HttpResponse, ApiError> {
    let id = request.match_info().get("id").unwrap_or_default();
    if !is_response_id(id) {
        return Err(ApiError::invalid_request(format!(
            "`{}` is not a response id: at most 256 letters, digits, `_` or `-`",
            quote(id)
        ))
        .with_param("response_id"));
    }
    let query = match request.query_string() {
        "" => None,
        query if query.len() <= QUERY_MAX && query.bytes().all(is_query_byte) => Some(query.to_owned()),
        _ => {
            return Err(ApiError::invalid_request(format!(
                "The query string must be at most {QUERY_MAX} URL-encoded characters"
            )));
        }
    };
    // Any `stream` but `false` asks an event stream, which is not served.
    if query.as_deref().is_some_and(|query| {
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            name == "stream" && value != "false"
        })
    }) {
        return Err(ApiError::invalid_request(
            "Streaming a stored response (`stream=true`) is not served: retrieve it whole",
        )
        .with_param("stream"));
    }
    let record = request
        .extensions()
        .get::<CallRecord>()
        .cloned()
        .unwrap_or_default();

    let command = ResponseCommand {
        action,
        id: id.to_owned(),
        query,
        key: policy_of(request),
        context: RequestContext {
            record: record.clone(),
            request_id: RequestId::of(request),
            traceparent: trace_context::traceparent(request.headers()),
            tracestate: trace_context::tracestate(request.headers()),
            budget: state.budget.clone(),
            ..RequestContext::default()
        },
    };
    let probe = request.conn_data::<ClientProbe>().cloned();
    let answer = unless_gone(probe.as_ref(), &record, state.service.respond_by_id(command)).await??;
    Ok(HttpResponse::Ok().content_type(ContentType::json()).body(answer))
}

/// What a URL-encoded query may hold, as the gateway passes it on.
fn is_query_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~%=&+[]".contains(&byte)
}
