//! The real `gatewayz` binary, configured only through its environment.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::chat_body;

/// A running `gatewayz` process, killed on drop.
struct Gateway {
    child: Child,
    address: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(vars: &[(&str, &str)]) -> Command {
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

/// Starts the binary and waits (with a deadline) for its "listening" line.
fn start(vars: &[(&str, &str)]) -> (Gateway, Vec<Value>) {
    let mut gateway = Gateway {
        child: command(vars).spawn().unwrap(),
        address: String::new(),
    };
    let stdout = gateway.child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the gateway logs that it listens within 10 s");
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON log line: {line}"));
        seen.push(event.clone());
        if event["fields"]["message"] == "gatewayz listening" {
            gateway.address = format!("http://{}", event["fields"]["address"].as_str().unwrap());
            return (gateway, seen);
        }
    }
}

#[tokio::test]
async fn the_binary_serves_the_demo_provider_with_configured_keys() {
    let (gateway, _) = start(&[("GATEWAYZ_BIND", "127.0.0.1:0"), ("GATEWAYZ_API_KEYS", "k1,k2")]);

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
    let (gateway, logs) = start(&[("GATEWAYZ_BIND", "127.0.0.1:0")]);

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
