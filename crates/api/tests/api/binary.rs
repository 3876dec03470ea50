//! The real `gatewayz` binary, configured only through its environment.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::chat_body;

/// A running `gatewayz` process, killed on drop, whose output is collected.
pub struct Gateway {
    pub child: Child,
    pub address: String,
    pub admin: String,
    /// Every line it wrote, stdout and stderr, as it wrote them.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Every line written so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The JSON log events written so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits (polling, with a deadline) for a log event that `matches`.
    pub fn wait_for_event(&self, seconds: u64, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(event) = self.events().into_iter().find(&matches) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no log event {what} within {seconds} s:\n{:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

pub fn command(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatewayz"));
    command
        .env_clear()
        .env("GATEWAYZ_LOG_FORMAT", "json")
        .env("GATEWAYZ_ADMIN_BIND", "127.0.0.1:0")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn collect(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
}

/// Starts the binary and waits (with a deadline) for its "listening" line.
pub fn start(vars: &[(&str, &str)]) -> Gateway {
    let mut child = command(vars).spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    collect(child.stdout.take().unwrap(), lines.clone());
    collect(child.stderr.take().unwrap(), lines.clone());
    let mut gateway = Gateway {
        child,
        address: String::new(),
        admin: String::new(),
        lines,
    };
    let listening = gateway.wait_for_event(10, "gatewayz listening", |event| {
        event["fields"]["message"] == "gatewayz listening"
    });
    gateway.address = format!("http://{}", listening["fields"]["address"].as_str().unwrap());
    gateway.admin = format!(
        "http://{}",
        listening["fields"]["admin_address"].as_str().unwrap()
    );
    gateway
}

#[tokio::test]
async fn the_binary_serves_the_demo_provider_with_configured_keys() {
    let gateway = start(&[("GATEWAYZ_BIND", "127.0.0.1:0"), ("GATEWAYZ_API_KEYS", "k1,k2")]);

    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth("k2")
        .json(&chat_body())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
}

#[tokio::test]
async fn without_keys_the_binary_accepts_the_local_dev_key_on_loopback_and_warns() {
    let gateway = start(&[("GATEWAYZ_BIND", "127.0.0.1:0")]);

    let logs = gateway.events();
    let warnings: Vec<&str> = logs
        .iter()
        .filter(|event| event["level"] == "WARN")
        .filter_map(|event| event["fields"]["message"].as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|message| message.contains("GATEWAYZ_API_KEYS is unset") && message.contains("loopback")),
        "{warnings:?}"
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth(gatewayz_api::auth::LOCAL_DEV_KEY)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn without_keys_the_binary_refuses_a_public_address() {
    let output = command(&[("GATEWAYZ_BIND", "0.0.0.0:0")]).output().unwrap();

    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("GATEWAYZ_API_KEYS"), "{stdout}");
}

#[test]
fn a_malformed_variable_stops_the_binary_with_its_name() {
    let output = command(&[("GATEWAYZ_BIND", "not-an-address")]).output().unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GATEWAYZ_BIND"), "{stderr}");
}
