//! A model whose targets mix Portkey and a direct upstream falls back from
//! one to the other, both ways, and says which target served: the
//! `x-gatewayz-target` and `x-gatewayz-provider` headers, and the access
//! line's target and attempts (each target tried twice: `retries = 1`).
//!
//! The Portkey side is the real Portkey gateway (node; see
//! [`crate::peers`]) in front of `gatewayz-upstream`, except in the first
//! test, where Portkey cannot be reached at all.

use serde_json::{Value, json};

use super::{
    CHAT, DirectGateway, LocalUpstream, UPSTREAM_TEXT, VLLM_KEY, VLLM_KEY_ENV, chat_chunks, closed_base_url,
    header, keyed, streamed_text, upstream_entry,
};
use crate::helpers::{sample, sse_data};
use crate::peers::PortkeyGateway;

/// The provider key behind Portkey, which that upstream requires.
const OPENAI_KEY: &str = "sk-openai-fallback-91d2e4";
const PORTKEY_TARGET: &str = "portkey-openai";
const DIRECT_TARGET: &str = "direct-vllm";

/// `smart`: `first` then `second`, each tried twice, no circuit breaking.
fn catalog(direct: &LocalUpstream, portkey_first: bool) -> String {
    let portkey = format!(
        "[[models.targets]]\nname = \"{PORTKEY_TARGET}\"\nportkey_provider = \"openai\"\nupstream_model = \"gpt-4o-mini\"\n"
    );
    let direct_target = format!(
        "[[models.targets]]\nname = \"{DIRECT_TARGET}\"\nupstream = \"vllm\"\nupstream_model = \"meta-llama/Llama-3.1-8B\"\n"
    );
    let (first, second) = if portkey_first {
        (portkey, direct_target)
    } else {
        (direct_target, portkey)
    };
    format!(
        r#"{}
[[models]]
id = "smart"
strategy = "fallback"
routing = {{ retries = 1, backoff_base_ms = 1, breaker_failures = 0 }}
{first}{second}"#,
        upstream_entry(
            "vllm",
            &direct.openai_base(),
            &format!("api_key_env = \"{VLLM_KEY_ENV}\"")
        ),
    )
}

fn ask(stream: bool, fault: Option<&str>) -> Value {
    let mut body =
        json!({"model": "smart", "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]});
    if let Some(fault) = fault {
        body["upstream_fault"] = json!(fault);
    }
    body
}

/// Asks `smart` whole and streamed and checks that `target` served after
/// `attempts` attempts, as `provider`.
async fn assert_served_by(
    gateway: &DirectGateway,
    fault: Option<&str>,
    target: &str,
    provider: &str,
    attempts: u32,
) {
    for stream in [false, true] {
        let id = format!("fallback-{target}-{stream}-{}", fault.unwrap_or("none"));
        let response = gateway.post(CHAT, &id, &ask(stream, fault)).await;
        let what = format!("stream: {stream}, fault: {fault:?}");
        assert_eq!(response.status(), 200, "{what}");
        assert_eq!(
            header(&response, "x-gatewayz-target").as_deref(),
            Some(target),
            "{what}"
        );
        assert_eq!(
            header(&response, "x-gatewayz-provider").as_deref(),
            Some(provider),
            "{what}"
        );
        if stream {
            let chunks = chat_chunks(&sse_data(response).await);
            assert_eq!(streamed_text(&chunks), "tok0 tok1 tok2 ", "{what}");
        } else {
            let answer: Value = response.json().await.unwrap();
            assert_eq!(
                answer["choices"][0]["message"]["content"], UPSTREAM_TEXT,
                "{what}"
            );
        }
        let access = gateway.access_line(&id);
        assert_eq!(
            (&access["status"], &access["target"], &access["attempts"]),
            (&json!(200), &json!(target), &json!(attempts)),
            "{what}: {access}"
        );
        let direct = provider.starts_with("openai-compatible/");
        assert_eq!(
            access["provider"],
            if direct { "openai-compatible" } else { "portkey" },
            "{access}"
        );
        assert_eq!(access.get("upstream").is_some(), direct, "{access}");
    }
}

#[tokio::test]
async fn a_portkey_target_that_cannot_be_reached_falls_back_to_a_direct_target() {
    let direct = LocalUpstream::start(keyed(VLLM_KEY));
    // Portkey at a closed port (the gateway's default here); the provider
    // key is set, so the Portkey target is really tried.
    let gateway = DirectGateway::start(
        "fallback-unreachable-portkey",
        &catalog(&direct, true),
        &[(VLLM_KEY_ENV, VLLM_KEY), ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY)],
    );

    assert_served_by(&gateway, None, DIRECT_TARGET, "openai-compatible/vllm", 3).await;

    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            &format!(
                r#"gatewayz_fallbacks_total{{from_target="{PORTKEY_TARGET}",model="smart",reason="unavailable"}}"#
            )
        ),
        Some(2.0),
        "one fallback a request: {metrics}"
    );
}

/// The gateway in front of the real Portkey gateway, whose provider calls go
/// to `custom_host`; `None` (after saying so) without node.
fn through_real_portkey(
    test: &str,
    direct: &LocalUpstream,
    portkey_first: bool,
    custom_host: &str,
) -> Option<(PortkeyGateway, DirectGateway)> {
    let portkey = PortkeyGateway::start(test)?;
    let gateway = DirectGateway::start(
        test,
        &catalog(direct, portkey_first),
        &[
            (VLLM_KEY_ENV, VLLM_KEY),
            ("PORTKEY_BASE_URL", &portkey.base_url()),
            ("PORTKEY_CUSTOM_HOST", custom_host),
            ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
        ],
    );
    Some((portkey, gateway))
}

#[tokio::test]
async fn a_portkey_target_whose_provider_fails_behind_the_real_portkey_falls_back_to_a_direct_target() {
    let direct = LocalUpstream::start(keyed(VLLM_KEY));
    // The real Portkey answers 500 when its provider refuses the connection.
    let Some((_portkey, gateway)) = through_real_portkey(
        "direct::fallback (Portkey's provider down)",
        &direct,
        true,
        &closed_base_url(),
    ) else {
        return;
    };

    assert_served_by(&gateway, None, DIRECT_TARGET, "openai-compatible/vllm", 3).await;
}

#[tokio::test]
async fn a_failing_direct_target_falls_back_to_portkey_through_the_real_portkey_gateway() {
    let direct = LocalUpstream::start(keyed(VLLM_KEY));
    // Without faults: Portkey drops `upstream_fault` anyway, and this
    // upstream would not honour it.
    let behind_portkey = LocalUpstream::start(gatewayz_upstream::Config {
        faults: false,
        ..keyed(OPENAI_KEY)
    });
    let Some((_portkey, gateway)) = through_real_portkey(
        "direct::fallback (direct upstream failing)",
        &direct,
        false,
        &behind_portkey.openai_base(),
    ) else {
        return;
    };

    // Healthy, the direct target serves at once.
    assert_served_by(&gateway, None, DIRECT_TARGET, "openai-compatible/vllm", 1).await;
    // Answering 500, it is tried twice, then the Portkey target serves
    // (with the provider key the upstream behind Portkey requires).
    assert_served_by(&gateway, Some("500"), PORTKEY_TARGET, "portkey/openai", 3).await;
    // Likewise a direct upstream that rate-limits.
    assert_served_by(&gateway, Some("429"), PORTKEY_TARGET, "portkey/openai", 3).await;
}
