//! The admin listener's routes: `/metrics`, `/healthz`, `/readyz`. They are
//! never served on the public listener (except `/healthz`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{HttpResponse, web};
use gatewayz_adapters::metrics::Metrics;

use crate::overload::Overload;

/// Whether the gateway takes traffic: set once both listeners are up,
/// cleared the moment a shutdown begins.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Registers the admin routes.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(super::health::healthz))
        .route("/readyz", web::get().to(readyz))
        .default_service(web::to(super::not_found));
}

async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

/// Ready while serving and not shedding load for longer than the grace
/// period ([`Overload::sustained`]).
async fn readyz(readiness: web::Data<Readiness>, overload: Option<web::Data<Overload>>) -> HttpResponse {
    if !readiness.is_ready() {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "not ready"}));
    }
    if let Some(shedding) =
        overload.and_then(|overload| overload.sustained().then(|| overload.shedding_for()))
    {
        let seconds = shedding.unwrap_or_default().as_secs_f64();
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "not ready",
            "reason": "overloaded",
            "shedding_seconds": (seconds * 10.0).round() / 10.0,
        }));
    }
    HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
}
