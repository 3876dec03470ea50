//! The `gatewayz-upstream` binary: parse the knobs, bind, print the bound
//! address on stdout's first line (scripts pass port 0 and read it), serve.

use std::process::ExitCode;

use gatewayz_upstream::{Command, USAGE, Upstream};

fn main() -> ExitCode {
    let config = match Command::parse(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            eprint!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("gatewayz-upstream: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatewayz-upstream: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let upstream = match Upstream::bind(&config).await {
            Ok(upstream) => upstream,
            Err(error) => {
                eprintln!("gatewayz-upstream: cannot listen on {}: {error}", config.bind);
                return ExitCode::FAILURE;
            }
        };
        match upstream.local_addr() {
            Ok(address) => announce(address),
            Err(error) => {
                eprintln!("gatewayz-upstream: cannot read the bound address: {error}");
                return ExitCode::FAILURE;
            }
        }
        upstream.run().await;
        ExitCode::SUCCESS
    })
}

/// The address line is this binary's interface to the scripts that start it.
#[allow(clippy::print_stdout)]
fn announce(address: std::net::SocketAddr) {
    // `println!` flushes at the newline: stdout is line-buffered in Rust.
    println!("{address}");
}
