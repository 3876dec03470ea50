//! The HTTP routes.

pub mod admin;
pub mod apis;
pub mod chat;
pub mod health;
pub mod models;

use actix_web::{HttpRequest, HttpResponse, web};

use gatewayz_domain::text::quote;

use crate::error::ApiError;

/// Registers every route, with OpenAI-shaped answers for unknown paths and
/// wrong methods instead of actix's empty defaults.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/chat/completions")
                .route(web::post().to(chat::chat_completions))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/embeddings")
                .route(web::post().to(apis::embeddings))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/messages")
                .route(web::post().to(apis::messages))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/messages/count_tokens")
                .route(web::post().to(apis::count_tokens))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/responses")
                .route(web::post().to(apis::responses))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/responses/{id}")
                .route(web::get().to(apis::retrieve_response))
                .route(web::delete().to(apis::delete_response))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/responses/{id}/cancel")
                .route(web::post().to(apis::cancel_response))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/responses/{id}/input_items")
                .route(web::get().to(apis::response_input_items))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v1/models")
                .route(web::get().to(models::list_models))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            // Model ids may contain slashes (`meta-llama/Meta-Llama-3.1-8B-Instruct`).
            web::resource("/v1/models/{id:.+}")
                .route(web::get().to(models::get_model))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/healthz")
                .route(web::get().to(health::healthz))
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(not_found));
}

pub(crate) async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "Unknown path `{}`",
        quote(request.path())
    )))
}

async fn method_not_allowed(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(format!(
        "Method {} is not allowed on `{}`",
        quote(request.method().as_str()),
        quote(request.path())
    )))
}
