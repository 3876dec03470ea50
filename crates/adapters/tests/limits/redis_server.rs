//! A real `redis-server` for tests: a child process on a free loopback port,
//! with no persistence, killed when dropped.
//!
//! Std only, so that any test crate can copy this file as it is. Where
//! `redis-server` is not installed, [`RedisServer::start`] prints a loud
//! notice and returns `None` (the test passes without running), unless
//! `GATEWAYZ_REQUIRE_REDIS` is set (CI sets it): then it panics.

// A test binary that copies this file may use only part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// A fresh server for `test`, or `None` when `redis-server` is missing
    /// (see the module doc).
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[])
    }

    /// A fresh server started with `args` besides its port (TLS ports and
    /// certificates, say); it still listens in plain text on
    /// [`RedisServer::port`], where it is pinged.
    pub fn start_with(test: &str, args: &[String]) -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            assert!(
                std::env::var_os("GATEWAYZ_REQUIRE_REDIS").is_none(),
                "redis-server is required for {test} (GATEWAYZ_REQUIRE_REDIS is set)"
            );
            eprintln!("\n*** SKIPPED: {test} needs redis-server, which is not installed ***\n");
            return None;
        }
        // Another process may take the free port before the server binds it:
        // then it exits, and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, args) {
                return Some(Self {
                    child: Some(child),
                    port,
                    args: args.to_vec(),
                });
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (it never persisted anything).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = spawn(self.port, &self.args) {
                self.child = Some(child);
                return;
            }
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Stops the server without closing its connections (SIGSTOP): a wedged
    /// Redis, whose clients wait for answers that do not come.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`RedisServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        self.kill();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// The server on `port` once it answers PING, or `None` if it exited first.
fn spawn(port: u16, args: &[String]) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--dir", &std::env::temp_dir().display().to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if ping(port) {
            return Some(child);
        }
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
