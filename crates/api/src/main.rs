//! The `gatewayz` binary: read the settings, set up the logs, wire the
//! adapters, serve.

use std::process::ExitCode;

use gatewayz_api::{Application, Settings, startup, telemetry};

#[actix_web::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("gatewayz: invalid configuration: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _log = telemetry::init(settings.gateway.log_format);

    let built = startup::chat_service(&settings)
        .await
        .and_then(|service| Application::build(&settings.gateway, service));
    // The environment as read, keys and all, is no longer needed.
    drop(settings);
    let application = match built {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(%error, "gatewayz cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        address = %application.address(),
        admin_address = %application.admin_address(),
        "gatewayz listening"
    );
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gatewayz stopped on an error");
            ExitCode::FAILURE
        }
    }
}
