//! Traces over OTLP, end to end. The tracing subscriber is process-global,
//! so each test runs the real `gatewayz` binary, in front of a stand-in
//! Portkey, exporting to an OTLP receiver inside the test; the spans' tree,
//! names, attributes and events are read from the decoded protobuf.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::{self, Gateway};
use crate::helpers::KEY;

mod collector;
mod config;
mod content;
mod export;
mod failures;
mod stream;
mod tree;
mod upstream;

/// The gateway in front of Portkey at `portkey` (`.../v1`), with `vars`
/// over the test's defaults (loopback, the test key, Portkey's keys).
fn gateway(portkey: &str, vars: &[(&str, &str)]) -> Gateway {
    let mut all = vec![
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("GATEWAYZ_SHUTDOWN_TIMEOUT", "2"),
        ("PORTKEY_BASE_URL", portkey),
        ("PORTKEY_API_KEY", "pk-traces"),
        ("PROVIDER_OPENAI_API_KEY", "sk-openai-traces"),
    ];
    all.extend_from_slice(vars);
    binary::start(&all)
}

/// A client that keeps no idle connection, so that a gateway told to stop
/// has none to wait for.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A chat request to `gateway` with the test key, continuing the client's
/// trace when `traceparent` is given.
async fn chat(gateway: &Gateway, body: &Value, traceparent: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/v1/chat/completions", gateway.address))
        .bearer_auth(KEY)
        .json(body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().await.unwrap()
}

/// A chat request that names its upstream itself: OpenAI through Portkey,
/// `model`, no catalog, no retry.
fn direct(model: &str, content: &str) -> Value {
    json!({"provider": "portkey", "portkey_provider": "openai", "model": model,
        "messages": [{"role": "user", "content": content}]})
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// Stops `gateway` as an orchestrator does (SIGTERM) and waits, at most
/// 10 s, for it to exit cleanly: its queued spans are sent before it does.
async fn stop(gateway: &mut Gateway) {
    let status = Command::new("kill")
        .args(["-TERM", &gateway.pid()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = gateway.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}:\n{:#?}", gateway.lines());
}

/// The log lines that warn of a failed export.
fn export_warnings(gateway: &Gateway) -> Vec<String> {
    gateway
        .lines()
        .into_iter()
        .filter(|line| line.contains("traces could not be exported"))
        .collect()
}
