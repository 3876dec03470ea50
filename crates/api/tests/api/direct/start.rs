//! A catalog whose direct upstreams cannot be called stops the binary at
//! start, with the file, the line and the field at fault, and never a key:
//! above all a key variable that is named and unset.

use std::time::{Duration, Instant};

use super::{AZURE_KEY, AZURE_KEY_ENV, VLLM_KEY};
use crate::binary;
use crate::helpers::{KEY, PolicyFile};

/// Starts the binary with `catalog` and `vars`, and returns all it wrote
/// once it has exited, which it must within 10 s, and not successfully.
fn refused_start(test: &str, catalog: &str, vars: &[(&str, &str)]) -> (String, String) {
    let file = PolicyFile::new(&format!("direct-start-{test}"), catalog);
    let mut all = vec![
        ("GATEWAYZ_BIND", "127.0.0.1:0"),
        ("GATEWAYZ_API_KEYS", KEY),
        ("GATEWAYZ_CATALOG", file.path()),
        ("PORTKEY_API_KEY", "pk-start-secret-77aa01"),
    ];
    all.extend_from_slice(vars);
    let mut child = binary::command(&all).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{test}: the gateway started:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{test}: {:?}", output.status);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (file.path().to_owned(), text)
}

/// The 1-based line of `catalog` on which `needle` first stands.
fn line_of(catalog: &str, needle: &str) -> usize {
    catalog
        .lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle} is not in the catalog"))
        + 1
}

#[test]
fn an_upstream_key_variable_named_and_unset_stops_the_start_naming_the_file_line_and_field() {
    let catalog = format!(
        r#"[[upstreams]]
name = "azure-east"
base_url = "https://res.openai.azure.com"
api_version = "2024-10-21"
api_key_env = "{AZURE_KEY_ENV}"

[[upstreams]]
name = "vllm"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "VLLM_KEY_UNSET"
"#
    );
    let (file, output) = refused_start(
        "unset",
        &catalog,
        &[(AZURE_KEY_ENV, AZURE_KEY), ("VLLM_KEY", VLLM_KEY)],
    );

    let line = line_of(&catalog, "VLLM_KEY_UNSET");
    let expected = format!("{file}:{line}: upstreams[1].api_key_env: VLLM_KEY_UNSET is not set");
    assert!(output.contains(&expected), "{expected:?} in:\n{output}");
    for secret in [AZURE_KEY, VLLM_KEY, "pk-start-secret-77aa01"] {
        assert!(!output.contains(secret), "{secret} in:\n{output}");
    }
}

#[test]
fn an_inline_upstreams_key_variable_unset_or_unsendable_stops_the_start_without_showing_it() {
    let catalog = r#"
[[models]]
id = "inline"
provider = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "INLINE_KEY"
"#;
    let line = line_of(catalog, "INLINE_KEY");

    let (file, output) = refused_start("inline-unset", catalog, &[]);
    let expected = format!("{file}:{line}: models[0].api_key_env: INLINE_KEY is not set");
    assert!(output.contains(&expected), "{expected:?} in:\n{output}");

    // A key no header can carry is refused, and not repeated.
    let (file, output) = refused_start(
        "inline-unsendable",
        catalog,
        &[("INLINE_KEY", "sk-first-half\nsecond-half-secret")],
    );
    let expected = format!(
        "{file}:{line}: models[0].api_key_env: INLINE_KEY holds characters that cannot be sent in a header"
    );
    assert!(output.contains(&expected), "{expected:?} in:\n{output}");
    for part in ["sk-first-half", "second-half-secret"] {
        assert!(!output.contains(part), "{part} in:\n{output}");
    }
}

#[test]
fn an_upstream_that_cannot_be_called_as_declared_stops_the_start_naming_its_field() {
    let upstream = "[[upstreams]]\nname = \"vllm\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    let cases = [
        (
            "static-key",
            format!("{upstream}headers = {{ \"Authorization\" = \"Bearer sk-static-secret-5e\" }}\n"),
            "headers = ",
            "upstreams[0].headers: `Authorization` cannot be a static header",
        ),
        (
            "provider-name",
            "[[upstreams]]\nname = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n".to_owned(),
            "name = ",
            "upstreams[0].name: `openai` is a provider's name",
        ),
        (
            "unknown-upstream",
            format!("{upstream}\n[[models]]\nid = \"m\"\nupstream = \"nope\"\n"),
            "upstream = ",
            "models[0].upstream: no [[upstreams]] entry is named `nope`; declared: vllm",
        ),
        (
            "unserved-api",
            format!("{upstream}\n[[models]]\nid = \"m\"\nupstream = \"vllm\"\nendpoints = [\"responses\"]\n"),
            "endpoints = ",
            "models[0].endpoints: `responses` is not served for target `vllm/m` (vllm) by that upstream",
        ),
    ];

    for (test, catalog, at, message) in cases {
        let (file, output) = refused_start(test, &catalog, &[]);
        let line = line_of(&catalog, at);
        let expected = format!("{file}:{line}: {message}");
        assert!(output.contains(&expected), "{test}: {expected:?} in:\n{output}");
        assert!(!output.contains("sk-static-secret-5e"), "{test}: {output}");
    }
}
