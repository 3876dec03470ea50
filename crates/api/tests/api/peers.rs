//! Real external peers the tests drive (the Portkey gateway, the official
//! SDKs): finding their runtimes, installing them once from lock files, and
//! starting them on loopback.
//!
//! Where a runtime (node, python3) is absent the tests say so loudly and
//! pass, unless `GATEWAYZ_REQUIRE_PEERS` is set (CI sets it): then they fail.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::helpers::{KEY, TestApp};

/// How long the Portkey gateway may take to listen.
const PORTKEY_START_DEADLINE: Duration = Duration::from_secs(30);

/// How long one SDK script may take; each of its calls is on loopback.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `program --version` runs; if not, fails under
/// `GATEWAYZ_REQUIRE_PEERS` or prints a loud skip notice.
pub fn available(program: &str, test: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("GATEWAYZ_REQUIRE_PEERS").is_none(),
            "{program} is required for {test} (GATEWAYZ_REQUIRE_PEERS is set)"
        );
        eprintln!("\n*** SKIPPED: {test} needs {program}, which is not installed ***\n");
    }
    found
}

/// Runs `install` unless `marker` exists, once per test process.
pub fn install_once(marker: &Path, install: &mut Command) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if marker.exists() {
        return;
    }
    let status = install.status().expect("the installer runs");
    assert!(
        status.success(),
        "installing {} failed: {install:?}",
        marker.display()
    );
}

/// The real open-source Portkey gateway (npm `@portkey-ai/gateway`, locked
/// in `.ci/portkey`) on a free loopback port, killed on drop.
pub struct PortkeyGateway {
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
    /// Installs it once and starts it, waiting until it listens; `None`
    /// (after saying so) where node is absent and peers are optional.
    pub fn start(test: &str) -> Option<Self> {
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
        // Port 0: the kernel picks the port and loopback.mjs writes it to
        // `port_file`, so no other process can take it between a pick and
        // the listen.
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let port_file = std::env::temp_dir().join(format!(
            "gatewayz-portkey-{}-{}.port",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&port_file);
        // Its start script listens on every interface; loopback.mjs pins it
        // to 127.0.0.1.
        let child = Command::new("node")
            .current_dir(&dir)
            .env("PORTKEY_PORT_FILE", &port_file)
            .args([
                "--import",
                "./loopback.mjs",
                "node_modules/@portkey-ai/gateway/build/start-server.js",
                "--port=0",
                "--headless",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut portkey = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + PORTKEY_START_DEADLINE;
        let port = loop {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                let _ = std::fs::remove_file(&port_file);
                break port.parse::<u16>().expect("loopback.mjs writes a port");
            }
            assert!(
                portkey.child.try_wait().unwrap().is_none(),
                "the Portkey gateway exited at start"
            );
            assert!(
                Instant::now() < deadline,
                "the Portkey gateway did not listen within {PORTKEY_START_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        portkey.address.set_port(port);
        assert!(
            TcpStream::connect(portkey.address).is_ok(),
            "the Portkey gateway said it listens on {port}, but does not"
        );
        Some(portkey)
    }

    /// Its base URL, `http://127.0.0.1:<port>/v1`: the gateway's
    /// `PORTKEY_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }
}

/// The official SDKs' scripts, with their lock files (`requirements.txt`,
/// `package-lock.json`).
pub fn sdk_dir() -> PathBuf {
    workspace().join("crates/api/tests/sdk")
}

/// The python of a venv in [`sdk_dir`] with its `requirements.txt`
/// installed, or `None` (after saying so) where python3 is absent and peers
/// are optional.
///
/// The marker is named for the requirements' content, so a venv made
/// before a package was added or a pin moved is brought up to date.
pub fn sdk_python(test: &str) -> Option<PathBuf> {
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

/// Runs an SDK script (`command`: its runtime and arguments) in [`sdk_dir`]
/// against `app`, and fails with its output if it fails, overruns
/// [`SCRIPT_DEADLINE`] or does not say `all checks passed`.
pub async fn run_sdk_script(mut command: tokio::process::Command, app: &TestApp) {
    command
        .env("GATEWAYZ_URL", &app.address)
        .env("GATEWAYZ_KEY", KEY)
        .current_dir(sdk_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // std's Debug shows the directory, the variables set, the program and its
    // arguments.
    let shown = format!("{:?}", command.as_std());
    let output = tokio::time::timeout(SCRIPT_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{shown} did not finish within {SCRIPT_DEADLINE:?}"))
        .expect("the SDK script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{shown} failed\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
}
