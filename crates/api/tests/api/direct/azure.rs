//! An upstream declared with `api_version` is Azure OpenAI: each call goes
//! to the deployment the model names (`/openai/deployments/{upstream
//! model}/...?api-version=`), with its key in `api-key`. The local upstream
//! requires the key there (an `Authorization` header does not count on
//! Azure's paths) and answers with the deployment as the model, which no
//! OpenAI path does.

use serde_json::{Value, json};

use super::{
    AZURE_KEY, AZURE_KEY_ENV, CHAT, DirectGateway, LocalUpstream, OPENAI_PATH_MODEL, UPSTREAM_TEXT,
    chat_chunks, header, keyed, streamed_text, upstream_entry,
};
use crate::endpoints::{EMBEDDINGS, MESSAGES, RESPONSES, message_request, response_request, status_and_json};
use crate::helpers::{KEY, assert_openai_error, sse_data};

const DEPLOYMENT: &str = "gpt-4o-prod";
const EMBEDDING_DEPLOYMENT: &str = "ada-east";

/// `azure-east` (chat and embeddings) and `azure-resp` (chat and the
/// Responses API) on the same resource, and a model on each deployment.
fn catalog(resource: &str, key_env: &str) -> String {
    let azure = format!("api_version = \"2024-10-21\"\napi_key_env = \"{key_env}\"");
    format!(
        r#"{}{}
[[models]]
id = "azure-4o"
upstream = "azure-east"
upstream_model = "{DEPLOYMENT}"

[[models]]
id = "azure-ada"
upstream = "azure-east"
upstream_model = "{EMBEDDING_DEPLOYMENT}"
endpoints = ["embeddings"]
"#,
        upstream_entry("azure-east", resource, &azure),
        upstream_entry(
            "azure-resp",
            resource,
            &format!("{azure}\nendpoints = [\"chat\", \"responses\"]")
        ),
    )
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test]
async fn an_azure_upstream_is_called_on_the_deployment_path_with_its_key_in_api_key() {
    let upstream = LocalUpstream::start(keyed(AZURE_KEY));
    let gateway = DirectGateway::start(
        "azure",
        &catalog(&upstream.azure_base(), AZURE_KEY_ENV),
        &[(AZURE_KEY_ENV, AZURE_KEY)],
    );

    let response = gateway.post(CHAT, "azure-json", &ask("azure-4o", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-gatewayz-provider").as_deref(),
        Some("openai-compatible/azure-east")
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["model"], DEPLOYMENT,
        "only the deployment path names the deployment: {answer}"
    );
    assert_eq!(answer["choices"][0]["message"]["content"], UPSTREAM_TEXT);

    let response = gateway.post(CHAT, "azure-stream", &ask("azure-4o", true)).await;
    assert_eq!(response.status(), 200);
    let chunks = chat_chunks(&sse_data(response).await);
    assert_eq!(streamed_text(&chunks), "tok0 tok1 tok2 ");
    assert!(
        chunks.iter().all(|chunk| chunk["model"] == DEPLOYMENT),
        "{chunks:?}"
    );

    // `@<upstream>/<model>` names the deployment too, as one path segment
    // whatever it holds.
    for deployment in ["other-deployment", "team/gpt 4o?x=1"] {
        let response = gateway
            .post(
                CHAT,
                "azure-at",
                &ask(&format!("@azure-east/{deployment}"), false),
            )
            .await;
        assert_eq!(response.status(), 200, "{deployment}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["model"], deployment);
    }

    // A Messages request goes as a chat completion to the deployment.
    let response = gateway
        .post(
            MESSAGES,
            "azure-messages",
            &message_request("azure-4o", "Hello there", false),
        )
        .await;
    let (status, message) = status_and_json(response).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        (&message["type"], &message["model"]),
        (&json!("message"), &json!(DEPLOYMENT)),
        "{message}"
    );

    let response = gateway
        .post(
            EMBEDDINGS,
            "azure-embeddings",
            &json!({"model": "azure-ada", "input": "Hello there"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "list", "{answer}");
    assert_eq!(answer["model"], EMBEDDING_DEPLOYMENT, "{answer}");
    assert_eq!(answer["data"][0]["embedding"].as_array().map(Vec::len), Some(8));

    // The Responses API is Azure's `/openai/responses`, the model in the body.
    let response = gateway
        .post(
            RESPONSES,
            "azure-responses",
            &response_request("@azure-resp/gpt-4o-prod", "hello", false),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "response", "{answer}");
    assert_eq!(answer["output"][0]["content"][0]["text"], "You said: hello");

    // Calls by id go to `/openai/responses/{id}`, with the key and version.
    let id = answer["id"].as_str().unwrap();
    let by_id = |method: reqwest::Method, path: String| {
        gateway
            .client
            .request(method, gateway.url(&path))
            .bearer_auth(KEY)
            .send()
    };
    let (status, stored) = status_and_json(
        by_id(reqwest::Method::GET, format!("{RESPONSES}/{id}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &stored["id"]), (200, &json!(id)), "{stored}");
    assert_eq!(stored["output"][0]["content"][0]["text"], "You said: hello");
    let (status, items) = status_and_json(
        by_id(reqwest::Method::GET, format!("{RESPONSES}/{id}/input_items"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"][0]["content"][0]["text"], "hello", "{items}");
    let (status, deleted) = status_and_json(
        by_id(reqwest::Method::DELETE, format!("{RESPONSES}/{id}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &deleted["deleted"]), (200, &json!(true)), "{deleted}");
}

#[tokio::test]
async fn a_wrong_azure_key_is_refused_by_the_upstream_as_an_upstream_auth_error() {
    let upstream = LocalUpstream::start(keyed(AZURE_KEY));
    let gateway = DirectGateway::start(
        "azure-wrong-key",
        &catalog(&upstream.azure_base(), "WRONG_AZURE_KEY"),
        &[("WRONG_AZURE_KEY", "azkey-not-the-right-one-01")],
    );

    let response = gateway.post(CHAT, "azure-wrong", &ask("azure-4o", false)).await;

    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(
        (&error["type"], &error["code"], &error["source"]),
        (
            &json!("server_error"),
            &json!("invalid_api_key"),
            &json!("provider")
        ),
        "{body}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Upstream authentication error"),
        "{body}"
    );
}

#[tokio::test]
async fn the_same_server_declared_without_api_version_is_called_on_openais_paths() {
    let upstream = LocalUpstream::start(keyed(AZURE_KEY));
    let catalog = upstream_entry(
        "plain",
        &upstream.openai_base(),
        &format!("api_key_env = \"{AZURE_KEY_ENV}\""),
    );
    let gateway = DirectGateway::start("azure-plain", &catalog, &[(AZURE_KEY_ENV, AZURE_KEY)]);

    let response = gateway
        .post(CHAT, "plain-1", &ask("@plain/gpt-4o-prod", false))
        .await;

    // A bearer token on OpenAI's path: the model is not a deployment.
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], OPENAI_PATH_MODEL, "{answer}");
}
