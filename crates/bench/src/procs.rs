//! The processes under test: starting them, waiting until they serve, and
//! reading their CPU time and memory from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A child process, killed when dropped so that no run leaves one behind.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Spawns `command`, to be known as `name`.
    ///
    /// # Errors
    /// As [`Command::spawn`]: `NotFound` when the program is not installed.
    pub fn spawn(name: &str, command: &mut Command) -> std::io::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            child: command.spawn()?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }

    /// SIGKILL and reap: nothing the driver still measures needs a graceful
    /// stop.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `gatewayz-upstream` with `args` on a free loopback port and reads
/// the address it prints on its first line.
pub fn start_upstream(bin: &Path, name: &str, args: &[&str]) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut child = Command::new(bin)
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("the upstream's stdout is not piped")?;
    let proc = Proc {
        name: name.to_owned(),
        child,
    };
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let address = line
        .trim()
        .parse()
        .with_context(|| format!("{name} printed `{}`, not its address", line.trim()))?;
    // Nothing else is expected there, but a pipe that nobody reads could
    // block the upstream: drain it.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    Ok((proc, address))
}

/// A free loopback port, for the gateway's two listeners (it prints its
/// addresses only in its log, which the driver does not read).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The gateway's listeners and keys.
#[derive(Debug)]
pub struct GatewaySetup<'a> {
    pub bin: &'a Path,
    pub name: &'a str,
    pub bind: SocketAddr,
    pub admin: SocketAddr,
    pub key: &'a str,
    pub upstream: SocketAddr,
}

/// Starts the real `gatewayz` binary in front of `upstream`, as Portkey.
/// Its stdout (the JSON access log, one line a request) goes to /dev/null:
/// the gateway still formats and writes each line, the driver pays nothing
/// to read them.
pub fn start_gateway(setup: &GatewaySetup<'_>) -> anyhow::Result<Proc> {
    start_gateway_with_env(setup, &[])
}

/// [`start_gateway`], with `env` set on top of the benchmark's environment
/// (the overload soak's limits, say).
pub fn start_gateway_with_env(setup: &GatewaySetup<'_>, env: &[(&str, String)]) -> anyhow::Result<Proc> {
    let child = Command::new(setup.bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GATEWAYZ_BIND", setup.bind.to_string())
        .env("GATEWAYZ_ADMIN_BIND", setup.admin.to_string())
        .env("GATEWAYZ_API_KEYS", setup.key)
        .env("GATEWAYZ_LOG_FORMAT", "json")
        .env("GATEWAYZ_SHUTDOWN_TIMEOUT", "1")
        .env("PORTKEY_API_KEY", "pk-bench")
        .env("PROVIDER_OPENAI_API_KEY", "sk-bench")
        .env("PORTKEY_BASE_URL", format!("http://{}/v1", setup.upstream))
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", setup.bin.display()))?;
    Ok(Proc {
        name: setup.name.to_owned(),
        child,
    })
}

/// Waits until `GET http://admin/readyz` answers 200, for at most `limit`.
pub async fn wait_ready(proc: &mut Proc, admin: SocketAddr, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        proc.check_alive()?;
        if readyz(admin).await.unwrap_or(false) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!(
                "{} was not ready at http://{admin}/readyz after {limit:?}",
                proc.name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn readyz(admin: SocketAddr) -> anyhow::Result<bool> {
    let (status, _) = get(admin, "/readyz").await?;
    Ok(status.is_success())
}

/// The most of an answer [`get`] reads: `/metrics` is a few KiB.
const MAX_GET_BODY: usize = 1024 * 1024;

/// `GET http://address/path` on a connection of its own: the status and
/// the body (at most 1 MiB). No deadline: the caller sets one.
pub async fn get(address: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", address.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_GET_BODY)
        .collect()
        .await
        .map_err(|error| anyhow::anyhow!("the body of {path} broke off: {error}"))?
        .to_bytes();
    Ok((status, body))
}

/// User plus system CPU time of a whole process (all its threads), in
/// clock ticks: fields 14 and 15 of `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing one, which is field 3.
    let after = stat.rsplit_once(')').context("malformed /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(number - 3)
            .context("short /proc/<pid>/stat")?
            .parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// [`cpu_ticks`] of each of `pids` now, 0 for one that cannot be read.
pub fn cpu_ticks_of<const N: usize>(pids: &[u32; N]) -> [u64; N] {
    pids.map(|pid| cpu_ticks(pid).unwrap_or(0))
}

/// CPU seconds each of `pids` used since `before`, their
/// [`cpu_ticks_of`] then.
pub fn cpu_seconds_since<const N: usize>(pids: &[u32; N], before: &[u64; N]) -> [f64; N] {
    let per_second = ticks_per_second() as f64;
    let now = cpu_ticks_of(pids);
    std::array::from_fn(|index| now[index].saturating_sub(before[index]) as f64 / per_second)
}

/// Clock ticks a second (`sysconf(_SC_CLK_TCK)`, from the auxiliary vector).
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Resident pages of a process, in KiB, from `/proc/<pid>/statm`: the same
/// counter as `VmRSS`, cheaper to read (the sampler reads it 50 times a
/// second while the gateway is being measured).
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("short /proc/<pid>/statm")?
        .parse()?;
    Ok(pages * rustix::param::page_size() as u64 / 1024)
}

/// Samples a process's RSS every 20 ms on its own thread, keeping the peak.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(resident_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_kib(pid).unwrap_or(0))
        });
        Self { stop, thread }
    }

    /// The peak RSS seen, in KiB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Raises the soft open-files limit to the hard one: 2,000 streams hold
/// 2,000 driver sockets and 4,000 in the gateway, which inherits the limit.
/// Returns the limit before and after.
pub fn raise_fd_limit() -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let before = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok((before.current, getrlimit(Resource::Nofile).current))
}
