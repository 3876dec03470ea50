//! The `gatewayz` binary: read the configuration, wire the adapters, serve.

use std::process::ExitCode;

use gatewayz_adapters::{EnvKeyResolver, PortkeySettings};
use gatewayz_api::{Application, Config, startup, telemetry};

#[actix_web::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gatewayz: invalid configuration: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _log = telemetry::init(config.log_format);

    let portkey = match PortkeySettings::from_env() {
        Ok(portkey) => portkey,
        Err(error) => {
            tracing::error!(%error, "invalid Portkey configuration");
            return ExitCode::FAILURE;
        }
    };
    let keys = match EnvKeyResolver::from_env() {
        Ok(keys) => keys,
        Err(error) => {
            tracing::error!(%error, "invalid key configuration");
            return ExitCode::FAILURE;
        }
    };
    let service = startup::chat_service(&config, &portkey, keys, |name| std::env::var(name).ok());
    let application = match service.and_then(|service| Application::build(&config, service)) {
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
