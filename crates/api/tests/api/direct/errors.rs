//! A direct upstream's failures are mapped by the table the Portkey path
//! uses: each failure is asked of a direct upstream and, the same failure,
//! of a Portkey stand-in (`gatewayz-upstream` again, playing Portkey), and
//! the client must see the same status, type, code and `Retry-After`,
//! blamed on the provider.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    CHAT, DirectGateway, LocalUpstream, VLLM_KEY, VLLM_KEY_ENV, closed_base_url, header, keyed,
    upstream_entry,
};
use crate::helpers::assert_openai_error;

/// The provider key the Portkey stand-in requires, and a wrong one.
const OPENAI_KEY: &str = "sk-openai-errors-3a7c19";
const WRONG_KEY: &str = "sk-wrong-errors-b62e0f";
/// How long the gateway waits for a whole answer, and how long the slow
/// upstream takes: three times that.
const TIMEOUT_MS: u64 = 1000;

/// What a client sees of a failure.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    kind: String,
    code: String,
    retry_after: Option<String>,
    /// The message up to its first `:`, which the gateway writes.
    heading: String,
}

/// The failure a client saw, and the error's `source`.
async fn seen(response: reqwest::Response) -> (Seen, String) {
    let status = response.status().as_u16();
    let retry_after = header(&response, "retry-after");
    let body: Value = response.json().await.unwrap();
    let error = assert_openai_error(&body);
    let text = |value: &Value| value.as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    let message = text(&error["message"]);
    let seen = Seen {
        status,
        kind: text(&error["type"]),
        code: text(&error["code"]),
        retry_after,
        heading: message.split(':').next().unwrap().to_owned(),
    };
    (seen, text(&error["source"]))
}

fn ask(model: &str, fault: Option<&str>, stream: bool) -> Value {
    let mut body =
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]});
    if let Some(fault) = fault {
        body["upstream_fault"] = json!(fault);
    }
    body
}

/// The gateway with the direct upstreams `vllm` (its key), `vllm-wrong`
/// (the same server, a wrong key), `dead` (nobody listening) and `sleepy`
/// (slower than the gateway waits), and `portkey` as its Portkey.
fn gateway(test: &str, direct: &LocalUpstream, sleepy: &LocalUpstream, portkey: &str) -> DirectGateway {
    let base = direct.openai_base();
    let catalog = [
        upstream_entry("vllm", &base, &format!("api_key_env = \"{VLLM_KEY_ENV}\"")),
        upstream_entry("vllm-wrong", &base, "api_key_env = \"WRONG_KEY\""),
        upstream_entry("dead", &closed_base_url(), ""),
        upstream_entry("sleepy", &sleepy.openai_base(), ""),
    ]
    .concat();
    let timeout = TIMEOUT_MS.to_string();
    DirectGateway::start(
        test,
        &catalog,
        &[
            (VLLM_KEY_ENV, VLLM_KEY),
            ("WRONG_KEY", WRONG_KEY),
            ("PORTKEY_BASE_URL", portkey),
            ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
            ("PROVIDER_GROQ_API_KEY", WRONG_KEY),
            ("GATEWAYZ_UPSTREAM_REQUEST_TIMEOUT_MS", &timeout),
            ("GATEWAYZ_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", &timeout),
        ],
    )
}

fn sleepy_upstream() -> LocalUpstream {
    LocalUpstream::start(gatewayz_upstream::Config {
        delay: Duration::from_millis(3 * TIMEOUT_MS),
        ..gatewayz_upstream::Config::default()
    })
}

#[tokio::test]
async fn each_upstream_failure_is_mapped_as_on_the_portkey_path_and_blamed_on_the_provider() {
    let direct = LocalUpstream::start(keyed(VLLM_KEY));
    let portkey = LocalUpstream::start(keyed(OPENAI_KEY));
    let sleepy = sleepy_upstream();
    // Portkey at a closed port, and Portkey slower than the gateway waits.
    let unreachable_portkey = gateway("errors-closed", &direct, &sleepy, &closed_base_url());
    let slow_portkey = gateway("errors-slow", &direct, &sleepy, &sleepy.openai_base());
    let gateway = gateway("errors", &direct, &sleepy, &portkey.openai_base());

    struct Case<'a> {
        what: &'a str,
        direct: Value,
        portkey: Value,
        portkey_gateway: &'a DirectGateway,
        expected: (u16, &'a str, &'a str, Option<&'a str>),
    }
    let fault = |status: &'static str, stream: bool| Case {
        what: status,
        direct: ask("@vllm/m", Some(status), stream),
        portkey: ask("@openai/m", Some(status), stream),
        portkey_gateway: &gateway,
        expected: (0, "", "", None),
    };
    let cases = vec![
        Case {
            expected: (429, "rate_limit_error", "rate_limit_exceeded", Some("1")),
            ..fault("429", false)
        },
        Case {
            what: "429 stream",
            expected: (429, "rate_limit_error", "rate_limit_exceeded", Some("1")),
            ..fault("429", true)
        },
        Case {
            expected: (502, "server_error", "upstream_error", None),
            ..fault("500", false)
        },
        Case {
            what: "500 stream",
            expected: (502, "server_error", "upstream_error", None),
            ..fault("500", true)
        },
        Case {
            expected: (502, "server_error", "upstream_error", None),
            ..fault("503", false)
        },
        Case {
            expected: (400, "invalid_request_error", "upstream_rejected", None),
            ..fault("400", false)
        },
        Case {
            what: "400 stream",
            expected: (400, "invalid_request_error", "upstream_rejected", None),
            ..fault("400", true)
        },
        Case {
            expected: (404, "invalid_request_error", "upstream_rejected", None),
            ..fault("404", false)
        },
        Case {
            expected: (422, "invalid_request_error", "upstream_rejected", None),
            ..fault("422", false)
        },
        Case {
            what: "a wrong key",
            direct: ask("@vllm-wrong/m", None, false),
            portkey: ask("@groq/m", None, false),
            portkey_gateway: &gateway,
            expected: (500, "server_error", "invalid_api_key", None),
        },
        Case {
            what: "a refused connection",
            direct: ask("@dead/m", None, false),
            portkey: ask("@openai/m", None, false),
            portkey_gateway: &unreachable_portkey,
            expected: (503, "server_error", "upstream_unavailable", None),
        },
        Case {
            what: "a refused connection, streamed",
            direct: ask("@dead/m", None, true),
            portkey: ask("@openai/m", None, true),
            portkey_gateway: &unreachable_portkey,
            expected: (503, "server_error", "upstream_unavailable", None),
        },
        Case {
            what: "a timeout",
            direct: ask("@sleepy/m", None, false),
            portkey: ask("@openai/m", None, false),
            portkey_gateway: &slow_portkey,
            expected: (504, "timeout_error", "upstream_timeout", None),
        },
        Case {
            what: "a timeout before a stream's first byte",
            direct: ask("@sleepy/m", None, true),
            portkey: ask("@openai/m", None, true),
            portkey_gateway: &slow_portkey,
            expected: (504, "timeout_error", "upstream_timeout", None),
        },
    ];

    for case in cases {
        let what = case.what;
        let response = gateway.post(CHAT, "errors-direct", &case.direct).await;
        assert_eq!(
            header(&response, "x-gatewayz-provider")
                .as_deref()
                .map(|provider| provider.split('/').next()),
            Some(Some("openai-compatible")),
            "{what}"
        );
        let (direct, source) = seen(response).await;
        let (through_portkey, _) = seen(
            case.portkey_gateway
                .post(CHAT, "errors-portkey", &case.portkey)
                .await,
        )
        .await;

        assert_eq!(direct, through_portkey, "{what}: direct, then through Portkey");
        let (status, kind, code, retry_after) = case.expected;
        assert_eq!(
            (
                direct.status,
                direct.kind.as_str(),
                direct.code.as_str(),
                direct.retry_after.as_deref()
            ),
            (status, kind, code, retry_after),
            "{what}: {direct:?}"
        );
        assert_eq!(
            source, "provider",
            "{what}: a direct upstream's failure is the provider's"
        );
    }
}

#[tokio::test]
async fn a_direct_upstreams_failure_is_logged_with_its_source_and_counted_under_its_name() {
    let direct = LocalUpstream::start(keyed(VLLM_KEY));
    let sleepy = sleepy_upstream();
    let gateway = gateway("errors-logged", &direct, &sleepy, &closed_base_url());

    let response = gateway
        .post(CHAT, "errors-429", &ask("@vllm/m", Some("429"), false))
        .await;
    assert_eq!(response.status(), 429);

    let access = gateway.access_line("errors-429");
    assert_eq!(
        (&access["status"], &access["upstream"], &access["error_source"]),
        (&json!(429), &json!("vllm"), &json!("provider")),
        "{access}"
    );
    let metrics = gateway.metrics().await;
    let line = r#"gatewayz_requests_total{model="other",portkey_provider="vllm",provider="openai-compatible",route="/v1/chat/completions",status_class="4xx"}"#;
    assert_eq!(crate::helpers::sample(&metrics, line), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_direct_stream_that_goes_quiet_ends_with_a_timeout_event_as_through_portkey() {
    // A chunk every 3 s; the gateway waits 500 ms between two.
    let quiet = LocalUpstream::start(gatewayz_upstream::Config {
        chunks: 3,
        gap: Duration::from_secs(3),
        ..gatewayz_upstream::Config::default()
    });
    let gateway = DirectGateway::start(
        "errors-quiet",
        &upstream_entry("quiet", &quiet.openai_base(), ""),
        &[
            ("PORTKEY_BASE_URL", &quiet.openai_base()),
            ("PROVIDER_OPENAI_API_KEY", OPENAI_KEY),
            ("GATEWAYZ_UPSTREAM_IDLE_TIMEOUT_MS", "500"),
        ],
    );

    let mut endings = Vec::new();
    for (id, model) in [("quiet-direct", "@quiet/m"), ("quiet-portkey", "@openai/m")] {
        let response = gateway.post(CHAT, id, &ask(model, None, true)).await;
        assert_eq!(response.status(), 200, "{model}");
        let events = crate::helpers::sse_data(response).await;
        assert_eq!(events.len(), 3, "a chunk, an error event, [DONE]: {events:?}");
        assert!(events[0].contains("tok0 "), "{events:?}");
        assert_eq!(events[2], "[DONE]");
        let error: Value = serde_json::from_str(&events[1]).unwrap();
        let error = assert_openai_error(&error).clone();
        endings.push((error["type"].clone(), error["code"].clone()));
        if model.starts_with("@quiet") {
            assert_eq!(error["source"], "provider", "{error}");
            assert!(
                error["message"].as_str().unwrap().contains("`quiet`"),
                "the upstream is named: {error}"
            );
        }
    }
    assert_eq!(endings[0], endings[1], "direct, then through Portkey");
    assert_eq!(endings[0], (json!("timeout_error"), json!("upstream_timeout")));
}
