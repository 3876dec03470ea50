//! OTLP receivers inside the test, each on a wiremock server of its own (not
//! the shared pool: a gateway still exporting must never reach another
//! test's server): HTTP/protobuf (`POST /v1/traces`), and gRPC, the
//! `TraceService/Export` method over HTTP/2 without TLS, answered by hand
//! (opentelemetry-proto generates a tonic server, but tonic's transport is
//! not compiled in and is no dependency of this crate). What they received
//! is decoded with opentelemetry-proto and prost.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// An OTLP trace receiver.
pub struct Collector {
    server: MockServer,
    /// The path exports are sent to.
    at: String,
    grpc: bool,
}

impl Collector {
    /// Receives OTLP over HTTP/protobuf at `/v1/traces`.
    pub async fn http() -> Self {
        Self::http_at("/v1/traces").await
    }

    /// Receives OTLP over HTTP/protobuf at `at`.
    pub async fn http_at(at: &str) -> Self {
        let server = MockServer::builder().start().await;
        Mock::given(method("POST"))
            .and(path(at))
            .respond_with(ResponseTemplate::new(200).set_body_raw(Vec::new(), "application/x-protobuf"))
            .mount(&server)
            .await;
        Self {
            server,
            at: at.to_owned(),
            grpc: false,
        }
    }

    /// Receives OTLP over gRPC (HTTP/2 with prior knowledge).
    pub async fn grpc() -> Self {
        let server = MockServer::builder().start().await;
        // An empty `ExportTraceServiceResponse` in its gRPC frame (not
        // compressed, 0 bytes long), the status in the headers.
        Mock::given(method("POST"))
            .and(path(GRPC_EXPORT))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("grpc-status", "0")
                    .set_body_raw(vec![0_u8; 5], "application/grpc"),
            )
            .mount(&server)
            .await;
        Self {
            server,
            at: GRPC_EXPORT.to_owned(),
            grpc: true,
        }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.server.uri()
    }

    /// The whole URL exports are sent to.
    pub fn url(&self) -> String {
        format!("{}{}", self.server.uri(), self.at)
    }

    /// Every export received so far, as protobuf bytes (a gRPC message
    /// unframed), each checked to have come where and as exports must.
    pub async fn bodies(&self) -> Vec<Vec<u8>> {
        let requests = self.server.received_requests().await.unwrap();
        requests
            .into_iter()
            .map(|request| {
                assert_eq!(request.method.as_str(), "POST");
                assert_eq!(request.url.path(), self.at, "an export sent elsewhere");
                let content_type = request
                    .headers
                    .get("content-type")
                    .map(|value| value.to_str().unwrap().to_owned());
                if self.grpc {
                    assert_eq!(content_type.as_deref(), Some("application/grpc"));
                    unframe(&request.body)
                } else {
                    assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
                    request.body
                }
            })
            .collect()
    }

    /// Every span received so far, with its resource.
    pub async fn spans(&self) -> Vec<Exported> {
        self.bodies()
            .await
            .iter()
            .flat_map(|body| {
                let export =
                    ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP export decodes");
                export.resource_spans.into_iter().flat_map(|resource_spans| {
                    let resource = resource_spans.resource.unwrap_or_default().attributes;
                    resource_spans
                        .scope_spans
                        .into_iter()
                        .flat_map(|scope| scope.spans)
                        .map(move |span| Exported {
                            resource: resource.clone(),
                            span,
                        })
                })
            })
            .collect()
    }

    /// The spans received once `done` holds of them, waiting at most 10 s
    /// (the gateway exports every 2 s).
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Exported]) -> bool) -> Vec<Exported> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans().await;
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "not received within 10 s: {what}; received {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server span of `trace` and its client spans (in the order they
    /// started), once the server span and `clients` client spans arrived.
    pub async fn trace(&self, trace: &str, clients: usize) -> (Exported, Vec<Exported>) {
        let spans = self
            .wait_for(
                &format!("trace {trace}: a server span, {clients} client span(s)"),
                |spans| {
                    let (servers, found) = split(spans, trace);
                    servers.len() == 1 && found.len() >= clients
                },
            )
            .await;
        let (mut servers, clients) = split_owned(spans, trace);
        (servers.remove(0), clients)
    }
}

/// A received span and the resource it came with.
#[derive(Debug, Clone)]
pub struct Exported {
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

impl Exported {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    pub fn is(&self, kind: SpanKind) -> bool {
        self.span.kind == kind as i32
    }

    /// How long it lasted, end to start.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.span.end_time_unix_nano - self.span.start_time_unix_nano)
    }

    /// The event `name`'s attributes and time; fails when there is not
    /// exactly one.
    pub fn event(&self, name: &str) -> (&[KeyValue], u64) {
        let found: Vec<_> = self
            .span
            .events
            .iter()
            .filter(|event| event.name == name)
            .collect();
        assert_eq!(found.len(), 1, "one `{name}` event: {:#?}", self.span.events);
        (&found[0].attributes, found[0].time_unix_nano)
    }

    /// The attribute keys it carries more than once (the OTLP data model
    /// wants each once).
    pub fn repeated_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        keys.sort_unstable();
        let mut repeated: Vec<&str> = keys
            .windows(2)
            .filter(|pair| pair[0] == pair[1])
            .map(|pair| pair[0])
            .collect();
        repeated.dedup();
        repeated
    }

    /// Whether its status is an error.
    pub fn failed(&self) -> bool {
        self.span.status.as_ref().is_some_and(|status| {
            status.code == opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32
        })
    }

    /// Every text it carries: its name, status message, attribute keys and
    /// values, events' names and attributes, its resource's.
    pub fn texts(&self) -> Vec<String> {
        let mut texts = vec![self.span.name.clone(), self.span.trace_state.clone()];
        if let Some(status) = &self.span.status {
            texts.push(status.message.clone());
        }
        collect_texts(&self.span.attributes, &mut texts);
        collect_texts(&self.resource, &mut texts);
        for event in &self.span.events {
            texts.push(event.name.clone());
            collect_texts(&event.attributes, &mut texts);
        }
        texts
    }
}

/// `trace`'s server spans, and its client spans in the order they started.
fn split<'a>(spans: &'a [Exported], trace: &str) -> (Vec<&'a Exported>, Vec<&'a Exported>) {
    let of_trace = spans.iter().filter(|span| span.trace_id() == trace);
    let servers = of_trace
        .clone()
        .filter(|span| span.is(SpanKind::Server))
        .collect();
    let mut clients: Vec<_> = of_trace.filter(|span| span.is(SpanKind::Client)).collect();
    clients.sort_by_key(|span| span.span.start_time_unix_nano);
    (servers, clients)
}

fn split_owned(spans: Vec<Exported>, trace: &str) -> (Vec<Exported>, Vec<Exported>) {
    let (servers, clients) = split(&spans, trace);
    (
        servers.into_iter().cloned().collect(),
        clients.into_iter().cloned().collect(),
    )
}

fn collect_texts(attributes: &[KeyValue], texts: &mut Vec<String>) {
    for attribute in attributes {
        texts.push(attribute.key.clone());
        if let Some(value) = &attribute.value {
            value_texts(value, texts);
        }
    }
}

fn value_texts(value: &AnyValue, texts: &mut Vec<String>) {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => texts.push(text.clone()),
        Some(any_value::Value::BytesValue(bytes)) => texts.push(String::from_utf8_lossy(bytes).into_owned()),
        Some(any_value::Value::ArrayValue(array)) => {
            for value in &array.values {
                value_texts(value, texts);
            }
        }
        Some(any_value::Value::KvlistValue(list)) => collect_texts(&list.values, texts),
        _ => {}
    }
}

/// A gRPC message out of its frame: a compression flag, a 4-byte length.
fn unframe(body: &[u8]) -> Vec<u8> {
    assert!(body.len() >= 5, "a gRPC frame: {body:?}");
    assert_eq!(body[0], 0, "the export is not compressed");
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(body.len(), 5 + length, "one whole gRPC message");
    body[5..].to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Typed reads of OTLP attributes.
pub trait Attributes {
    fn value(&self, key: &str) -> Option<&any_value::Value>;

    fn string(&self, key: &str) -> Option<&str> {
        match self.value(key)? {
            any_value::Value::StringValue(text) => Some(text),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.value(key)? {
            any_value::Value::IntValue(number) => Some(*number),
            _ => None,
        }
    }

    fn double(&self, key: &str) -> Option<f64> {
        match self.value(key)? {
            any_value::Value::DoubleValue(number) => Some(*number),
            _ => None,
        }
    }

    /// An array of strings.
    fn strings(&self, key: &str) -> Option<Vec<&str>> {
        match self.value(key)? {
            any_value::Value::ArrayValue(array) => array
                .values
                .iter()
                .map(|value| match &value.value {
                    Some(any_value::Value::StringValue(text)) => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

impl Attributes for [KeyValue] {
    fn value(&self, key: &str) -> Option<&any_value::Value> {
        self.iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref())
            .and_then(|value| value.value.as_ref())
    }
}

impl Attributes for Exported {
    fn value(&self, key: &str) -> Option<&any_value::Value> {
        self.span.attributes.value(key)
    }
}
