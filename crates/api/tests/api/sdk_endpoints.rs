//! The official SDKs on the APIs beside chat completions: `openai` (Python) for
//! embeddings and Responses, `anthropic` (Python) for Messages, with nothing
//! changed but the base URL and the key. Each script runs against the demo
//! provider, and through the real open-source Portkey gateway to
//! `gatewayz-upstream` ([`crate::endpoints::portkey_chain`]), by
//! `@provider/model` and by catalog id.
//!
//! Needs python3, and node for Portkey (see [`crate::peers`]).

use std::path::Path;

use crate::endpoints::portkey_chain;
use crate::helpers::TestApp;
use crate::peers::{run_sdk_script, sdk_python};

/// Runs the python `script` against the gateway with `vars` set.
async fn run(python: &Path, app: &TestApp, script: &str, vars: &[(&str, &str)]) {
    let mut command = tokio::process::Command::new(python);
    command.arg(script).envs(vars.iter().copied());
    run_sdk_script(command, app).await;
}

#[tokio::test]
async fn the_official_python_sdks_use_embeddings_responses_and_messages_on_the_demo() {
    let test = "the Python SDKs on the demo";
    let Some(python) = sdk_python(test) else { return };
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

/// Runs both scripts through the real Portkey to `gatewayz-upstream`, asking
/// for `[embedding, responses, messages]` models; `priced` where the gateway
/// knows their prices.
async fn through_portkey(test: &str, [embedding, responses, messages]: [&str; 3], priced: bool) {
    let Some(python) = sdk_python(test) else { return };
    let Some(chain) = portkey_chain(test).await else {
        return;
    };
    let priced = priced.then_some(("PRICED", "1"));

    let openai = [
        ("EMBEDDING_MODEL", embedding),
        ("EXPECT_DIMS", "8"),
        ("RESPONSES_MODEL", responses),
    ];
    let openai = [&openai[..], priced.as_slice()].concat();
    run(&python, &chain.app, "openai_endpoints_sdk.py", &openai).await;
    let anthropic = [("MESSAGES_MODEL", messages), ("EXPECT_UPSTREAM_SAW", "1")];
    let anthropic = [&anthropic[..], priced.as_slice()].concat();
    run(&python, &chain.app, "anthropic_sdk.py", &anthropic).await;
}

#[tokio::test]
async fn the_official_python_sdks_reach_the_upstream_through_the_real_portkey_by_provider_and_model() {
    through_portkey(
        "the Python SDKs through Portkey by @provider/model",
        [
            "@openai/text-embedding-3-small",
            "@openai/gpt-4o-mini",
            "@anthropic/claude-3-5-haiku-latest",
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn the_official_python_sdks_reach_the_upstream_through_the_real_portkey_by_catalog_id_priced() {
    through_portkey(
        "the Python SDKs through Portkey by catalog id",
        ["text-embedding-3-small", "gpt-4o-mini", "claude-3-5-haiku-latest"],
        true,
    )
    .await;
}
