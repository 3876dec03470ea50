//! Real external peers the tests drive (the Portkey gateway, the OpenAI
//! SDKs): finding their runtimes and installing them once, from lock files.
//!
//! Where a runtime (node, python3) is absent the tests say so loudly and
//! pass, unless `GATEWAYZ_REQUIRE_PEERS` is set (CI sets it): then they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

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
