//! A throwaway `redis-server` on loopback for the key limits phase: nothing
//! kept on disk, killed with the run. Without one installed the phase
//! measures what it can and says why the rest is missing.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::procs::{Proc, free_port};

/// How long `redis-server` may take to answer its first `PING`.
const READY_LIMIT: Duration = Duration::from_secs(5);

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    pub proc: Proc,
    /// `redis://127.0.0.1:PORT`, for `GATEWAYZ_REDIS_URL`.
    pub url: String,
    /// As `redis-server --version` says it (`7.0.15`).
    pub version: String,
}

/// Starts `redis-server` on a free loopback port and waits until it answers
/// `PING`.
///
/// # Errors
/// Why there is no Redis to measure, as the report says it: `redis-server
/// not installed`, or how it failed to start.
pub async fn start() -> Result<Redis, String> {
    let version = match Command::new("redis-server").arg("--version").output() {
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err("redis-server not installed".to_owned());
        }
        Err(error) => return Err(format!("redis-server --version failed: {error}")),
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .find_map(|word| word.strip_prefix("v="))
            .unwrap_or("?")
            .to_owned(),
    };
    let address = free_port().map_err(|error| format!("no free port for redis-server: {error}"))?;
    let mut proc = Proc::spawn(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", &address.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .map_err(|error| format!("redis-server did not start: {error}"))?;
    let started = Instant::now();
    loop {
        proc.check_alive().map_err(|error| format!("{error:#}"))?;
        if ping(address) {
            break;
        }
        if started.elapsed() > READY_LIMIT {
            return Err(format!(
                "redis-server did not answer PING on {address} within {READY_LIMIT:?}"
            ));
        }
        sleep(Duration::from_millis(20)).await;
    }
    Ok(Redis {
        proc,
        url: format!("redis://{address}"),
        version,
    })
}

/// Whether Redis at `address` answers `PING` with `+PONG`. Blocking, but on
/// loopback and with a short deadline: it only runs before measuring.
fn ping(address: SocketAddr) -> bool {
    let deadline = Duration::from_millis(200);
    let Ok(mut stream) = TcpStream::connect_timeout(&address, deadline) else {
        return false;
    };
    let mut answer = [0_u8; 16];
    stream.set_read_timeout(Some(deadline)).is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream
            .read(&mut answer)
            .is_ok_and(|read| answer[..read].starts_with(b"+PONG"))
}
