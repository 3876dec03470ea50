//! `GET /v1/models` and `GET /v1/models/{id}`: the catalog in OpenAI's list
//! format, each model with the APIs it serves.

use actix_web::{HttpResponse, web};
use gatewayz_domain::ModelEntry;
use gatewayz_domain::text::quote;
use serde::Serialize;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::routes::chat::ChatState;

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
    /// The APIs it serves (`chat`, `embeddings`, `messages`, `responses`).
    endpoints: Vec<&'static str>,
}

impl<'a> Model<'a> {
    fn of(entry: &'a ModelEntry, created: u64) -> Self {
        Self {
            id: &entry.id,
            object: "model",
            created,
            owned_by: entry.primary().map_or("gatewayz", gatewayz_domain::Target::owner),
            endpoints: entry.endpoints.iter().map(|service| service.as_str()).collect(),
        }
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

pub async fn list_models(_: Authenticated, state: web::Data<ChatState>) -> HttpResponse {
    let data = state
        .service
        .catalog()
        .models()
        .iter()
        .map(|entry| Model::of(entry, state.started_at))
        .collect();
    HttpResponse::Ok().json(ModelList { object: "list", data })
}

pub async fn get_model(
    _: Authenticated,
    id: web::Path<String>,
    state: web::Data<ChatState>,
) -> Result<HttpResponse, ApiError> {
    let entry = state.service.catalog().get(&id).ok_or_else(|| {
        ApiError::model_not_found(format!(
            "The model `{}` does not exist on this gateway",
            quote(&id)
        ))
    })?;
    Ok(HttpResponse::Ok().json(Model::of(entry, state.started_at)))
}
