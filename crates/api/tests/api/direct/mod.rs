//! Direct upstreams (issue 18), end to end: the real `gatewayz` binary,
//! configured by a catalog file with `[[upstreams]]` and
//! `provider = "openai-compatible"` models, calling `gatewayz-upstream`
//! (`crates/upstream`, OpenAI's and Azure OpenAI's paths, a required key,
//! faults on request) without Portkey.
//!
//! - [`chat`]: chat completions whole and streamed, the cost, the answer's
//!   headers, the access line and metrics, `@<upstream>/<model>`, and what
//!   reaches the upstream;
//! - [`azure`]: an upstream declared with `api_version`: the deployment path
//!   and the `api-key` header;
//! - [`apis`]: embeddings, the Messages API sent as chat completions, and
//!   the Responses API only where the upstream lists it;
//! - [`errors`]: each upstream failure mapped as the Portkey path maps it;
//! - [`fallback`]: from Portkey to a direct target and back, the real Portkey
//!   gateway on the Portkey side where node is installed;
//! - [`secrets`]: no upstream key in a log line or an answer, even echoed;
//! - [`start`]: a key variable named and unset, or an upstream that cannot
//!   be called as declared, stops the start;
//! - [`cancel`]: a client that leaves lets go of the upstream.
//!
//! `gatewayz-upstream` is a library dependency, not a binary of this
//! package (cargo gives no `CARGO_BIN_EXE_` for it): [`LocalUpstream`] runs
//! its server on a thread and a runtime of its own, as its binary would,
//! so the test's own runtime never stalls it.

mod apis;
mod azure;
mod cancel;
mod chat;
mod errors;
mod fallback;
mod secrets;
mod start;

use std::net::SocketAddr;
use std::time::Duration;

use futures::channel::oneshot;
use serde_json::Value;

use crate::binary::{self, Gateway};
use crate::helpers::{KEY, PolicyFile};

/// The variable holding the `vllm` upstream's key, and the key.
pub const VLLM_KEY_ENV: &str = "VLLM_KEY";
pub const VLLM_KEY: &str = "sk-vllm-direct-4f1d9c2b7a63e0";
/// The variable holding the Azure upstream's key, and the key.
pub const AZURE_KEY_ENV: &str = "AZURE_OPENAI_KEY";
pub const AZURE_KEY: &str = "azkey-direct-8e3b5a1f6c0d97";

pub const CHAT: &str = "/v1/chat/completions";

/// What `gatewayz-upstream` answers every chat completion, and its usage.
pub const UPSTREAM_TEXT: &str = "Hello! I am the benchmark upstream. How can I help you today?";
pub const PROMPT_TOKENS: u64 = 9;
pub const COMPLETION_TOKENS: u64 = 14;
/// The model an OpenAI-path answer names, whatever was asked: only an
/// Azure deployment path makes it name something else.
pub const OPENAI_PATH_MODEL: &str = "gpt-4o-mini";
/// Content chunks of a stream from [`keyed`] upstreams (its usage counts one
/// completion token a chunk).
pub const CHUNKS: usize = 3;

/// `gatewayz-upstream` on a free loopback port, served by a thread and a
/// runtime of its own; stopped (its connections dropped) on drop.
pub struct LocalUpstream {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalUpstream {
    pub fn start(config: gatewayz_upstream::Config) -> Self {
        let (bound, address) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the upstream's runtime builds");
            runtime.block_on(async move {
                let upstream = gatewayz_upstream::Upstream::bind(&config)
                    .await
                    .expect("the upstream binds a loopback port");
                bound.send(upstream.local_addr().expect("its address")).unwrap();
                futures::future::select(Box::pin(upstream.run()), stopped).await;
            });
        });
        let address = address
            .recv_timeout(Duration::from_secs(10))
            .expect("the upstream listens within 10 s");
        Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Its OpenAI-style API root, `http://<addr>/v1`.
    pub fn openai_base(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// Its Azure OpenAI resource endpoint, `http://<addr>` (Azure's paths
    /// start with `/openai`).
    pub fn azure_base(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for LocalUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The upstream's settings: `key` required, faults honoured, [`CHUNKS`]
/// content chunks a stream.
pub fn keyed(key: &str) -> gatewayz_upstream::Config {
    gatewayz_upstream::Config {
        require_key: Some(key.parse().expect("a usable key")),
        faults: true,
        chunks: CHUNKS,
        ..gatewayz_upstream::Config::default()
    }
}

/// An `http://127.0.0.1:<port>/v1` nobody listens on: the port was free a
/// moment ago and is closed again.
pub fn closed_base_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/v1")
}

/// One `[[upstreams]]` entry, with `extra` lines (`api_key_env = ...`).
pub fn upstream_entry(name: &str, base_url: &str, extra: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nbase_url = \"{base_url}\"\n{extra}\n\n")
}

/// The real `gatewayz` binary with a catalog file of the test's own, its
/// output collected; killed on drop.
pub struct DirectGateway {
    pub binary: Gateway,
    pub client: reqwest::Client,
    _catalog: PolicyFile,
}

impl DirectGateway {
    /// Starts the binary on loopback with the test key, `catalog` as
    /// `GATEWAYZ_CATALOG`, Portkey at a closed port (a direct request never
    /// goes there), and `vars` over those.
    pub fn start(test: &str, catalog: &str, vars: &[(&str, &str)]) -> Self {
        let catalog = PolicyFile::new(&format!("direct-{test}"), catalog);
        let portkey = closed_base_url();
        let mut all = vec![
            ("GATEWAYZ_BIND", "127.0.0.1:0"),
            ("GATEWAYZ_API_KEYS", KEY),
            ("GATEWAYZ_CATALOG", catalog.path()),
            ("PORTKEY_BASE_URL", portkey.as_str()),
            ("PORTKEY_API_KEY", "pk-direct-tests"),
        ];
        all.extend_from_slice(vars);
        let binary = binary::start(&all);
        Self {
            binary,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            _catalog: catalog,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.binary.address)
    }

    /// Posts `body` to `path` with the test key and `request_id` as its
    /// `x-request-id` (what its access line is found by).
    pub async fn post(&self, path: &str, request_id: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(KEY)
            .header("x-request-id", request_id)
            .json(body)
            .send()
            .await
            .expect("the request is sent")
    }

    /// The access line of the request `request_id`, waited for.
    pub fn access_line(&self, request_id: &str) -> Value {
        let line = self
            .binary
            .wait_for_event(5, &format!("the access line of {request_id}"), |event| {
                event["target"] == "gatewayz::access" && event["fields"]["request_id"] == request_id
            });
        line["fields"].clone()
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.binary.admin))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics read")
    }
}

/// A response header's value, if it has the header.
pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// The chunks of a chat stream that ended with `[DONE]`, parsed; fails on an
/// error event.
pub fn chat_chunks(events: &[String]) -> Vec<Value> {
    let (done, chunks) = events.split_last().expect("a stream has events");
    assert_eq!(done, "[DONE]", "{events:?}");
    chunks
        .iter()
        .map(|event| {
            let chunk: Value = serde_json::from_str(event).unwrap();
            assert!(chunk.get("error").is_none(), "an error event: {event}");
            assert_eq!(chunk["object"], "chat.completion.chunk", "{event}");
            chunk
        })
        .collect()
}

/// The text of a chat stream's deltas.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect()
}
