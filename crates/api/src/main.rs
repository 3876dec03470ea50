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
    let traces = match telemetry::traces() {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("gatewayz: invalid configuration: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _log = telemetry::init(settings.gateway.log_format, traces.as_ref());
    gatewayz_adapters::traces::capture_content(settings.gateway.otel_capture_content);

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
    let stopped = application.run_until_stopped().await;
    if let Some(traces) = traces {
        // The spans still queued are sent before the process ends.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    match stopped {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "gatewayz stopped on an error");
            ExitCode::FAILURE
        }
    }
}
