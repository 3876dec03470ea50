//! The admin listener's routes: `/metrics`, `/healthz`, `/readyz`, and
//! `/admin/keys`, each gateway key's policy and where it stands against its
//! limits. They are never served on the public listener (except `/healthz`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{HttpResponse, web};
use gatewayz_adapters::metrics::Metrics;
use gatewayz_domain::LimitsStore;
use gatewayz_domain::limits::{KeyPolicy, Standing, WindowState};
use gatewayz_domain::text::quote;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::GatewayKeys;
use crate::error::ApiError;
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

    /// What `/readyz` answers: `Ok` while serving and not shedding load for
    /// longer than the grace period ([`Overload::sustained`]), else the body
    /// of its 503. The `gatewayz_ready` gauge reads it too.
    pub fn check(&self, overload: Option<&Overload>) -> Result<(), serde_json::Value> {
        if !self.is_ready() {
            return Err(serde_json::json!({"status": "not ready"}));
        }
        if let Some(shedding) =
            overload.and_then(|overload| overload.sustained().then(|| overload.shedding_for()))
        {
            let seconds = shedding.unwrap_or_default().as_secs_f64();
            return Err(serde_json::json!({
                "status": "not ready",
                "reason": "overloaded",
                "shedding_seconds": (seconds * 10.0).round() / 10.0,
            }));
        }
        Ok(())
    }
}

/// Registers the admin routes.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(super::health::healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/admin/keys", web::get().to(list_keys))
        .route("/admin/keys/{id}", web::get().to(get_key))
        .default_service(web::to(super::not_found));
}

async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

/// Ready as [`Readiness::check`] says.
async fn readyz(readiness: web::Data<Readiness>, overload: Option<web::Data<Overload>>) -> HttpResponse {
    match readiness.check(overload.as_ref().map(|overload| overload.get_ref())) {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(body) => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// The limits store, as the admin app holds it.
type Store = web::Data<Arc<dyn LimitsStore>>;

/// Every key's policy and standing: `{"keys": [...]}`.
async fn list_keys(keys: web::Data<GatewayKeys>, store: Option<Store>) -> HttpResponse {
    let now = Now::read();
    let store = store.as_ref().map(|store| store.get_ref().as_ref());
    let policies = keys.policies();
    let views =
        futures::future::join_all(policies.iter().map(|policy| KeyView::of(policy, store, now))).await;
    HttpResponse::Ok().json(serde_json::json!({ "keys": views }))
}

/// One key's policy and standing, by id.
async fn get_key(
    id: web::Path<String>,
    keys: web::Data<GatewayKeys>,
    store: Option<Store>,
) -> Result<HttpResponse, ApiError> {
    let policy = keys
        .policy(&id)
        .ok_or_else(|| ApiError::not_found(format!("Unknown key id `{}`", quote(&id))))?;
    let store = store.as_ref().map(|store| store.get_ref().as_ref());
    let view = KeyView::of(&policy, store, Now::read()).await;
    Ok(HttpResponse::Ok().json(view))
}

/// The instant a view is taken, in the units the policy and the store use.
#[derive(Clone, Copy)]
struct Now {
    us: u64,
    seconds: i64,
}

impl Now {
    fn read() -> Self {
        let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            seconds: i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A key as the admin API shows it: its policy (never its digest) and
/// where it stands now.
#[derive(Serialize)]
struct KeyView<'a> {
    id: &'a str,
    models: Option<Vec<&'a str>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_parallel: Option<u64>,
    budget_usd: Option<f64>,
    budget_period: Option<&'static str>,
    expires_at: Option<String>,
    expired: bool,
    labels: &'a BTreeMap<String, String>,
    /// `null` when the store could not say (or none is configured).
    standing: Option<StandingView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    standing_error: Option<String>,
}

impl<'a> KeyView<'a> {
    async fn of(policy: &'a KeyPolicy, store: Option<&dyn LimitsStore>, now: Now) -> Self {
        // A key without limits has nothing in the store: no round trip.
        let standing = match store {
            Some(store) if policy.has_limits() => store.standing(policy, now.us).await.map(Some),
            Some(_) => Ok(Some(Standing::default())),
            None => Ok(None),
        };
        let (standing, standing_error) = match standing {
            Ok(standing) => (
                standing.map(|standing| StandingView::of(policy, &standing, now)),
                None,
            ),
            Err(error) => {
                tracing::warn!(key_id = %policy.id, %error, "no standing for the admin API");
                (None, Some(error.to_string()))
            }
        };
        Self {
            id: &policy.id,
            models: policy
                .models
                .as_ref()
                .map(|models| models.iter().map(|model| model.as_str()).collect()),
            rpm: policy.rpm,
            tpm: policy.tpm,
            max_parallel: policy.max_parallel,
            budget_usd: policy.budget.map(|budget| budget.usd),
            budget_period: policy.budget.map(|budget| budget.period.as_str()),
            expires_at: policy.expires_at.and_then(rfc3339),
            expired: policy.expired(now.seconds),
            labels: &policy.labels,
            standing,
            standing_error,
        }
    }
}

/// Where a key stands: its windows, what it has in flight, what it spent
/// in the budget's current period.
#[derive(Serialize)]
struct StandingView {
    requests: Option<WindowView>,
    tokens: Option<WindowView>,
    in_flight: Option<u64>,
    spent_usd: Option<f64>,
    period_start: Option<String>,
    period_end: Option<String>,
    budget_remaining_usd: Option<f64>,
    /// Counted in this process only: the shared store is unreachable and
    /// the gateway admits anyway.
    degraded: bool,
}

impl StandingView {
    fn of(policy: &KeyPolicy, standing: &Standing, now: Now) -> Self {
        let period = policy.budget.map(|budget| budget.period.window(now.seconds));
        Self {
            requests: standing.requests.map(WindowView::from),
            tokens: standing.tokens.map(WindowView::from),
            in_flight: standing.in_flight,
            spent_usd: standing
                .spent_usd_micros
                .map(|micros| micros as f64 / 1_000_000.0),
            period_start: period.and_then(|period| rfc3339(period.start)),
            period_end: period.and_then(|period| period.end).and_then(rfc3339),
            budget_remaining_usd: standing.budget_remaining_usd,
            degraded: standing.degraded,
        }
    }
}

#[derive(Serialize)]
struct WindowView {
    limit: u64,
    remaining: u64,
    /// Until the window is whole again.
    reset_ms: u64,
}

impl From<WindowState> for WindowView {
    fn from(state: WindowState) -> Self {
        Self {
            limit: state.limit,
            remaining: state.remaining,
            reset_ms: state.reset_us.div_ceil(1000),
        }
    }
}

/// Unix seconds as RFC 3339 (`2027-01-01T00:00:00Z`).
fn rfc3339(seconds: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};
    use gatewayz_domain::limits::{MockLimitsStore, StoreError};
    use serde_json::{Value, json};

    use super::*;

    fn sha256_hex(key: &str) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Keys from a policy file of two keys (and one from the environment).
    fn keys(test: &str) -> (GatewayKeys, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("gatewayz-admin-keys-{}-{test}.toml", std::process::id()));
        let text = format!(
            r#"[[keys]]
id = "team-a"
key_sha256 = "{}"
models = ["demo-*"]
rpm = 60
tpm = 1000
max_parallel = 4
budget_usd = 10.0
budget_period = "total"
expires_at = "2027-01-01T00:00:00Z"
labels = {{ team = "search" }}

[[keys]]
id = "team-b"
key_sha256 = "{}"
"#,
            sha256_hex("key-a"),
            sha256_hex("key-b")
        );
        std::fs::write(&path, text).unwrap();
        let keys = GatewayKeys::from_config(
            Some(&"env-key".into()),
            Some(&path),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        (keys, path)
    }

    async fn get(keys: GatewayKeys, store: Option<MockLimitsStore>, path: &str) -> (u16, Value) {
        let mut app = App::new().app_data(web::Data::new(keys)).configure(configure);
        if let Some(store) = store {
            let store: Arc<dyn LimitsStore> = Arc::new(store);
            app = app.app_data(web::Data::new(store));
        }
        let app = test::init_service(app).await;
        let response = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = response.status().as_u16();
        (status, test::read_body_json(response).await)
    }

    #[actix_web::test]
    async fn every_key_is_listed_with_its_policy_and_standing_and_no_digest() {
        let (keys, path) = keys("list");
        let mut store = MockLimitsStore::new();
        store
            .expect_standing()
            .withf(|policy, _| policy.id == "team-a")
            .times(1)
            .returning(|_, _| {
                Ok(Standing {
                    requests: Some(WindowState {
                        limit: 60,
                        remaining: 59,
                        reset_us: 1_000_500,
                    }),
                    tokens: Some(WindowState {
                        limit: 1000,
                        remaining: 700,
                        reset_us: 18_000_000,
                    }),
                    in_flight: Some(1),
                    spent_usd_micros: Some(2_500_000),
                    budget_remaining_usd: Some(7.5),
                    degraded: false,
                })
            });

        let (status, body) = get(keys, Some(store), "/admin/keys").await;

        assert_eq!(status, 200);
        let listed = body["keys"].as_array().unwrap();
        let ids: Vec<&str> = listed.iter().map(|key| key["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [&sha256_hex("env-key")[..8], "team-a", "team-b"]);
        assert_eq!(
            listed[1],
            json!({
                "id": "team-a", "models": ["demo-*"], "rpm": 60, "tpm": 1000, "max_parallel": 4,
                "budget_usd": 10.0, "budget_period": "total", "expires_at": "2027-01-01T00:00:00Z",
                "expired": false, "labels": {"team": "search"},
                "standing": {
                    "requests": {"limit": 60, "remaining": 59, "reset_ms": 1001},
                    "tokens": {"limit": 1000, "remaining": 700, "reset_ms": 18000},
                    "in_flight": 1, "spent_usd": 2.5,
                    "period_start": "1970-01-01T00:00:00Z", "period_end": null,
                    "budget_remaining_usd": 7.5, "degraded": false
                }
            })
        );
        assert_eq!(listed[2]["models"], Value::Null, "no allow list: every model");
        assert_eq!(listed[2]["standing"]["requests"], Value::Null);
        let text = body.to_string();
        for secret in [
            "key-a",
            &sha256_hex("key-a"),
            &sha256_hex("key-a")[8..],
            "env-key",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        std::fs::remove_file(path).unwrap();
    }

    #[actix_web::test]
    async fn one_key_is_shown_by_id_and_an_unknown_id_is_a_json_404() {
        let (keys, path) = keys("one");

        let (status, body) = get(keys.clone(), None, "/admin/keys/team-b").await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], "team-b");
        assert_eq!(body["standing"], Value::Null, "no store, no standing");

        let (status, body) = get(keys, None, "/admin/keys/team-z").await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["message"], "Unknown key id `team-z`");
        std::fs::remove_file(path).unwrap();
    }

    #[actix_web::test]
    async fn a_store_error_shows_the_policy_without_a_standing() {
        let (keys, path) = keys("store-error");
        let mut store = MockLimitsStore::new();
        store
            .expect_standing()
            .returning(|_, _| Err(StoreError("connection refused".to_owned())));

        let (status, body) = get(keys, Some(store), "/admin/keys/team-a").await;

        assert_eq!(status, 200);
        assert_eq!(body["rpm"], 60);
        assert_eq!(body["standing"], Value::Null);
        assert_eq!(
            body["standing_error"],
            "the limits store is unavailable: connection refused"
        );
        std::fs::remove_file(path).unwrap();
    }
}
