//! The official SDKs on the APIs beside chat completions: `openai` (Python) for
//! embeddings and Responses, `anthropic` (Python) for Messages, with nothing
//! changed but the base URL and the key. Each script runs against the demo
//! provider, and through the real open-source Portkey gateway (on loopback,
//! as [`crate::chain`] runs it) to `gatewayz-upstream`, by `@provider/model`
//! and by catalog id.
//!
//! Needs python3, and node for Portkey (see [`crate::peers`]).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::helpers::{KEY, TestApp};
use crate::peers::{available, install_once, workspace};

/// How long one script may take; each of its calls is on loopback.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

fn sdk_dir() -> PathBuf {
    workspace().join("crates/api/tests/sdk")
}

/// The venv's python with requirements.txt installed, or `None` (after
/// saying so) where python3 is absent and peers are optional.
///
/// The marker is named for the requirements' content, so a venv made
/// before a package was added or a pin moved is brought up to date.
fn python(test: &str) -> Option<PathBuf> {
    if !available("python3", test) {
        return None;
    }
    let venv = sdk_dir().join(".venv");
    let python = venv.join("bin/python");
    install_once(&python, Command::new("python3").args(["-m", "venv"]).arg(&venv));
    let requirements = std::fs::read(sdk_dir().join("requirements.txt")).expect("requirements.txt is read");
    let digest: String = Sha256::digest(&requirements)
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let marker = venv.join(format!("installed-{digest}"));
    install_once(
        &marker,
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{pip} install -q -r requirements.txt && touch {marker}",
                pip = venv.join("bin/pip").display(),
                marker = marker.display()
            ))
            .current_dir(sdk_dir()),
    );
    Some(python)
}

/// Runs `script` against the gateway with `vars` set, and fails with its
/// output if it fails or overruns [`SCRIPT_DEADLINE`].
async fn run(python: &Path, app: &TestApp, script: &str, vars: &[(&str, &str)]) {
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .env("GATEWAYZ_URL", &app.address)
        .env("GATEWAYZ_KEY", KEY)
        .envs(vars.iter().copied())
        .current_dir(sdk_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} {vars:?} did not finish within {SCRIPT_DEADLINE:?}"))
        .expect("the SDK script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {vars:?} failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
}

/// The Portkey gateway on a free loopback port, killed on drop.
struct PortkeyGateway {
    child: Child,
    address: SocketAddr,
}

impl Drop for PortkeyGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PortkeyGateway {
    /// `None` (after saying so) where node is absent and peers are optional.
    fn start(test: &str) -> Option<Self> {
        if !available("node", test) {
            return None;
        }
        let dir = workspace().join(".ci/portkey");
        install_once(
            &dir.join("node_modules/@portkey-ai/gateway/build/start-server.js"),
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
        );
        let address = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new("node")
            .current_dir(&dir)
            .args([
                "--import",
                "./loopback.mjs",
                "node_modules/@portkey-ai/gateway/build/start-server.js",
                &format!("--port={}", address.port()),
                "--headless",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut portkey = Self { child, address };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(address).is_err() {
            assert!(
                portkey.child.try_wait().unwrap().is_none(),
                "the Portkey gateway exited at start"
            );
            assert!(
                Instant::now() < deadline,
                "the Portkey gateway did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(portkey)
    }
}

/// A running `gatewayz-upstream`, killed on drop. (As
/// `endpoints::upstream_process` starts it; that module is private there.)
struct UpstreamProcess {
    child: Child,
    /// `http://127.0.0.1:<port>/v1`.
    base_url: String,
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl UpstreamProcess {
    /// Starts it on a free loopback port, and waits for the address it prints.
    fn start() -> Self {
        let mut child = Command::new(upstream_binary())
            .args(["--bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gatewayz-upstream starts");
        let stdout = child.stdout.take().expect("its stdout is piped");
        let mut upstream = Self {
            child,
            base_url: String::new(),
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
            // Nothing more is expected, but a pipe nobody reads could block it.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("gatewayz-upstream prints its address within 10 s");
        let address = line.trim();
        assert!(!address.is_empty(), "gatewayz-upstream exited at start");
        upstream.base_url = format!("http://{address}/v1");
        upstream
    }
}

/// The `gatewayz-upstream` binary: this crate does not depend on it, so it
/// is built once per test process, into the target directory the tests run
/// from (cargo knows whether it is fresh); `GATEWAYZ_UPSTREAM_BIN` names a
/// ready one instead.
fn upstream_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("GATEWAYZ_UPSTREAM_BIN") {
                return PathBuf::from(path);
            }
            // This test binary is `<target>/<profile>/deps/api-<hash>`.
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary is in <target>/<profile>/deps");
            let target_dir = profile_dir.parent().expect("a target directory");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "gatewayz-upstream",
                    "--bin",
                    "gatewayz-upstream",
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(workspace());
            match profile_dir.file_name().and_then(|name| name.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    build.arg("--release");
                }
                Some(profile) => {
                    build.args(["--profile", profile]);
                }
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building gatewayz-upstream failed: {build:?}");
            profile_dir.join(format!("gatewayz-upstream{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}

struct Chain {
    app: TestApp,
    _portkey: PortkeyGateway,
    _upstream: UpstreamProcess,
}

/// The gateway (default catalog) → Portkey → `gatewayz-upstream`.
async fn chain(test: &str) -> Option<Chain> {
    let portkey = PortkeyGateway::start(test)?;
    let upstream = UpstreamProcess::start();
    let base = format!("http://{}/v1", portkey.address);
    let app = TestApp::production(&[
        ("PORTKEY_BASE_URL", &base),
        ("PORTKEY_CUSTOM_HOST", &upstream.base_url),
        ("PORTKEY_API_KEY", "pk-sdk-endpoints"),
        ("PROVIDER_OPENAI_API_KEY", "sk-sdk-endpoints"),
        ("PROVIDER_ANTHROPIC_API_KEY", "sk-ant-sdk-endpoints"),
    ])
    .await;
    Some(Chain {
        app,
        _portkey: portkey,
        _upstream: upstream,
    })
}

#[tokio::test]
async fn the_official_python_sdks_use_embeddings_responses_and_messages_on_the_demo() {
    let test = "the Python SDKs on the demo";
    let Some(python) = python(test) else { return };
    let app = TestApp::production(&[]).await;

    run(
        &python,
        &app,
        "openai_endpoints_sdk.py",
        &[
            ("EMBEDDING_MODEL", "demo-embedding-1"),
            ("EXPECT_DIMS", "64"),
            ("RESPONSES_MODEL", "demo-1"),
            ("PRICED", "1"),
        ],
    )
    .await;
    run(
        &python,
        &app,
        "anthropic_sdk.py",
        &[("MESSAGES_MODEL", "demo-1"), ("PRICED", "1")],
    )
    .await;
}

#[tokio::test]
async fn the_official_python_sdks_reach_the_upstream_through_the_real_portkey_by_provider_and_model() {
    let test = "the Python SDKs through Portkey by @provider/model";
    let Some(python) = python(test) else { return };
    let Some(chain) = chain(test).await else { return };

    run(
        &python,
        &chain.app,
        "openai_endpoints_sdk.py",
        &[
            ("EMBEDDING_MODEL", "@openai/text-embedding-3-small"),
            ("EXPECT_DIMS", "8"),
            ("RESPONSES_MODEL", "@openai/gpt-4o-mini"),
        ],
    )
    .await;
    run(
        &python,
        &chain.app,
        "anthropic_sdk.py",
        &[
            ("MESSAGES_MODEL", "@anthropic/claude-3-5-haiku-latest"),
            ("EXPECT_UPSTREAM_SAW", "1"),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_official_python_sdks_reach_the_upstream_through_the_real_portkey_by_catalog_id_priced() {
    let test = "the Python SDKs through Portkey by catalog id";
    let Some(python) = python(test) else { return };
    let Some(chain) = chain(test).await else { return };

    run(
        &python,
        &chain.app,
        "openai_endpoints_sdk.py",
        &[
            ("EMBEDDING_MODEL", "text-embedding-3-small"),
            ("EXPECT_DIMS", "8"),
            ("RESPONSES_MODEL", "gpt-4o-mini"),
            ("PRICED", "1"),
        ],
    )
    .await;
    run(
        &python,
        &chain.app,
        "anthropic_sdk.py",
        &[
            ("MESSAGES_MODEL", "claude-3-5-haiku-latest"),
            ("EXPECT_UPSTREAM_SAW", "1"),
            ("PRICED", "1"),
        ],
    )
    .await;
}
