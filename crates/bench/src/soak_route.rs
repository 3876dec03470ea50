//! `--soak-route`: how the soak's requests reach the local upstream. By
//! Portkey's route (the upstream plays Portkey, as in every other phase),
//! or as a direct upstream the gateway's catalog declares (issue 18), so
//! that the two adapters' costs can be set side by side.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::run::{BODY, STREAM_BODY};

/// The name the direct route's catalog gives the local upstream.
pub const UPSTREAM_NAME: &str = "bench";

/// [`BODY`] for the direct route: `@bench/gpt-4o-mini`, without the
/// Portkey routing members (which would route it to Portkey).
pub const DIRECT_BODY: &str =
    r#"{"model":"@bench/gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

/// [`STREAM_BODY`] for the direct route.
pub const DIRECT_STREAM_BODY: &str = r#"{"model":"@bench/gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;

/// How the soak's gateway reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoakRoute {
    /// `provider: portkey`, the upstream at `PORTKEY_BASE_URL`.
    Portkey,
    /// `@bench/…`, the upstream an `[[upstreams]]` entry of the catalog.
    Direct,
}

impl SoakRoute {
    /// As `--soak-route` names it: `portkey` or `direct`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "portkey" => Ok(Self::Portkey),
            "direct" => Ok(Self::Direct),
            other => anyhow::bail!("--soak-route takes portkey or direct, not `{other}`"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Portkey => "portkey",
            Self::Direct => "direct",
        }
    }

    /// The body of a whole-answer request.
    pub fn body(self) -> &'static str {
        match self {
            Self::Portkey => BODY,
            Self::Direct => DIRECT_BODY,
        }
    }

    /// The body of a streaming request.
    pub fn stream_body(self) -> &'static str {
        match self {
            Self::Portkey => STREAM_BODY,
            Self::Direct => DIRECT_STREAM_BODY,
        }
    }
}

/// The direct route's catalog: the local upstream as `[[upstreams]]`, with
/// no key (the upstream asks for none, and the gateway then sends no
/// `Authorization`) and no models (`@bench/<model>` needs none).
pub fn direct_catalog(upstream: SocketAddr) -> String {
    format!("[[upstreams]]\nname = \"{UPSTREAM_NAME}\"\nbase_url = \"http://{upstream}/v1\"\n")
}

/// A temporary directory holding the direct route's catalog, removed with
/// everything in it when dropped.
#[derive(Debug)]
pub struct CatalogDir {
    dir: PathBuf,
    pub catalog: PathBuf,
}

impl CatalogDir {
    /// Writes [`direct_catalog`] for `upstream` into a new directory under
    /// the system's temporary one.
    ///
    /// # Errors
    /// When the directory or the file cannot be written.
    pub fn write(upstream: SocketAddr) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("gatewayz-bench-{}-direct", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let written = Self {
            catalog: dir.join("catalog.toml"),
            dir,
        };
        std::fs::write(&written.catalog, direct_catalog(upstream))
            .with_context(|| format!("cannot write {}", written.catalog.display()))?;
        Ok(written)
    }

    /// What the gateway needs to read it.
    pub fn env(&self) -> (&'static str, String) {
        ("GATEWAYZ_CATALOG", self.catalog.display().to_string())
    }
}

impl Drop for CatalogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn parsed(body: &str) -> Value {
        serde_json::from_str(body).expect("a body is JSON")
    }

    /// The Portkey body as the direct route must send it.
    fn made_direct(portkey: &str) -> Value {
        let mut value = parsed(portkey);
        let members = value.as_object_mut().expect("a body is an object");
        assert!(members.remove("provider").is_some());
        assert!(members.remove("portkey_provider").is_some());
        members.insert("model".into(), "@bench/gpt-4o-mini".into());
        value
    }

    #[test]
    fn soak_route_parses_portkey_and_direct_and_refuses_anything_else() {
        assert_eq!(SoakRoute::parse("portkey").expect("portkey"), SoakRoute::Portkey);
        assert_eq!(SoakRoute::parse("direct").expect("direct"), SoakRoute::Direct);
        for wrong in ["", "Direct", "openai", "@bench"] {
            let error = SoakRoute::parse(wrong).expect_err(wrong).to_string();
            assert!(error.contains("portkey or direct"), "{error}");
        }
    }

    #[test]
    fn the_portkey_route_sends_the_runs_bodies_byte_for_byte() {
        assert_eq!(
            SoakRoute::Portkey.body(),
            r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}]}"#
        );
        assert_eq!(
            SoakRoute::Portkey.stream_body(),
            r#"{"model":"gpt-4o-mini","provider":"portkey","portkey_provider":"openai","messages":[{"role":"user","content":"hello"}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn the_direct_route_sends_the_portkey_bodies_with_the_upstreams_model_and_no_routing_members() {
        assert_eq!(parsed(SoakRoute::Direct.body()), made_direct(BODY));
        assert_eq!(parsed(SoakRoute::Direct.stream_body()), made_direct(STREAM_BODY));
    }

    #[test]
    fn the_direct_catalog_declares_the_upstream_at_its_address_by_the_name_the_model_names() {
        let catalog = direct_catalog("127.0.0.1:40123".parse().expect("an address"));
        assert_eq!(
            catalog,
            "[[upstreams]]\nname = \"bench\"\nbase_url = \"http://127.0.0.1:40123/v1\"\n"
        );
        let model = parsed(DIRECT_BODY)["model"].as_str().map(str::to_owned);
        assert_eq!(model.as_deref(), Some("@bench/gpt-4o-mini"));
        assert!(DIRECT_BODY.contains(&format!("\"@{UPSTREAM_NAME}/")));
    }

    #[test]
    fn the_catalog_directory_holds_the_catalog_and_is_removed_when_dropped() {
        let upstream = "127.0.0.1:40124".parse().expect("an address");
        let written = CatalogDir::write(upstream).expect("the catalog is written");
        let (name, path) = written.env();
        assert_eq!(name, "GATEWAYZ_CATALOG");
        assert_eq!(
            std::fs::read_to_string(&path).expect("the catalog is there"),
            direct_catalog(upstream)
        );
        let dir = written.dir.clone();
        drop(written);
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}
