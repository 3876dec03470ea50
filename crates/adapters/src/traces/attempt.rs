//! One client span per upstream attempt, with the OpenTelemetry GenAI
//! conventions (`gen_ai.*`) and the gateway's own facts (`gatewayz.*`).
//! The span's context is what the upstream receives as its `traceparent`.
//!
//! Spans are made under [`SPAN_TARGET`]: with no exporter installed, no
//! subscriber layer is interested in that target and each span costs a
//! disabled callsite's check, nothing more.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use gatewayz_domain::{
    ChatChunk, ChatError, ChatResponse, ChatStream, Endpoint, ProviderCall, Route, UpstreamProvider,
};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{KeyValue, Value};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the spans and events that are exported.
pub const SPAN_TARGET: &str = "gatewayz::otel";

/// The most bytes of a model name recorded (as the access log keeps).
const NAME_MAX: usize = 256;

/// The most bytes of a prompt or a completion recorded when content is
/// captured.
const CONTENT_MAX: usize = 16 * 1024;

static CAPTURE_CONTENT: AtomicBool = AtomicBool::new(false);

/// Records prompts and completions on the spans from now on
/// (`GATEWAYZ_OTEL_CAPTURE_CONTENT=true`): never by default.
pub fn capture_content(capture: bool) {
    CAPTURE_CONTENT.store(capture, Ordering::Relaxed);
}

/// The GenAI operation of an API.
const fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat | Endpoint::Messages | Endpoint::Responses => "chat",
        Endpoint::Embeddings => "embeddings",
        Endpoint::CountTokens => "count_tokens",
    }
}

/// `gen_ai.provider.name`: the convention's names where it has one.
fn provider_name(route: &Route) -> &'static str {
    match route.portkey_provider() {
        None if route.direct_upstream().is_some() => "gatewayz.openai_compatible",
        None => "gatewayz.demo",
        Some(UpstreamProvider::OpenAi) => "openai",
        Some(UpstreamProvider::Anthropic) => "anthropic",
        Some(UpstreamProvider::GoogleAi) => "gcp.gemini",
        Some(UpstreamProvider::MistralAi) => "mistral_ai",
        Some(UpstreamProvider::PerplexityAi) => "perplexity",
        Some(UpstreamProvider::Groq) => "groq",
        Some(UpstreamProvider::Cohere) => "cohere",
        Some(provider) => provider.name(),
    }
}

/// The members of a body or an answer a span reads, and nothing else.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Read<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    choices: Option<Vec<Choice<'a>>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    delta: Option<Delta<'a>>,
    message: Option<Box<Read<'a>>>,
    response: Option<Box<Read<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Choice<'a> {
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(rename = "delta")]
    _delta: IgnoredAny,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta<'a> {
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

impl Read<'_> {
    fn of(json: &[u8]) -> Read<'_> {
        serde_json::from_slice(json).unwrap_or_default()
    }

    /// The model that answered (chat, messages' start event, responses).
    fn model(&self) -> Option<&str> {
        self.model
            .as_deref()
            .or_else(|| self.message.as_ref().and_then(|message| message.model.as_deref()))
            .or_else(|| {
                self.response
                    .as_ref()
                    .and_then(|response| response.model.as_deref())
            })
    }

    /// Why the answer ended: each choice's reason, a message's stop
    /// reason, a response's status when it is done.
    fn finish_reasons(&self) -> Vec<String> {
        let mut reasons: Vec<String> = self
            .choices
            .iter()
            .flatten()
            .filter_map(|choice| choice.finish_reason.as_deref().map(str::to_owned))
            .collect();
        let message_end = self
            .stop_reason
            .as_deref()
            .or_else(|| self.delta.as_ref().and_then(|delta| delta.stop_reason.as_deref()));
        reasons.extend(message_end.map(str::to_owned));
        let done = matches!(
            self.kind.as_deref(),
            Some("response") | Some("response.completed")
        );
        let status = self.status.as_deref().filter(|_| done).or_else(|| {
            self.response
                .as_ref()
                .filter(|_| self.kind.as_deref() == Some("response.completed"))
                .and_then(|response| response.status.as_deref())
        });
        reasons.extend(status.map(str::to_owned));
        reasons
    }
}

/// A client span for one upstream attempt.
#[derive(Debug)]
pub struct Attempt {
    span: Span,
    /// The price of the target, for the attempt's cost.
    pricing: Option<gatewayz_domain::Pricing>,
}

impl Attempt {
    /// Opens the span of an attempt at `call` (a disabled span when traces
    /// are off: then nothing else is done).
    pub fn start(call: &ProviderCall) -> Self {
        let endpoint = call.request.endpoint();
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "upstream",
            otel.kind = "client",
            otel.name = tracing::field::Empty,
            gen_ai.operation.name = operation(endpoint),
            gen_ai.provider.name = provider_name(&call.route),
        );
        if span.is_disabled() {
            return Self { span, pricing: None };
        }
        let model = Read::of(&call.body).model().map(str::to_owned);
        // A client's (or an upstream's) model name is cut short on a span.
        let model = cut(model.as_deref().unwrap_or_else(|| call.request.model()), NAME_MAX);
        span.record("otel.name", format!("{} {model}", operation(endpoint)));
        span.set_attribute("gen_ai.request.model", model);
        let fields = call.request.fields();
        if let Some(limit) = call.request.output_token_limit() {
            span.set_attribute("gen_ai.request.max_tokens", limit);
        }
        if let Some(temperature) = fields.temperature {
            span.set_attribute("gen_ai.request.temperature", temperature);
        }
        let pricing = call.context.record.read(|facts| {
            if let Some(model) = facts.model.as_deref().filter(|_| facts.catalog_model) {
                span.set_attribute("gatewayz.catalog_model", model.to_owned());
            }
            if let Some(target) = facts.target.as_deref() {
                span.set_attribute("gatewayz.target", target.to_owned());
            }
            if let Some(key) = facts.key_id.as_deref() {
                span.set_attribute("gatewayz.key_id", key.to_owned());
            }
            span.set_attribute("gatewayz.attempt", i64::from(facts.attempts.max(1)));
            facts.pricing
        });
        span.set_attribute("gatewayz.request_id", call.context.request_id.clone());
        if let Some(upstream) = call.route.direct_upstream() {
            span.set_attribute("gatewayz.upstream", upstream.to_string());
        }
        if CAPTURE_CONTENT.load(Ordering::Relaxed) {
            let prompt: Vec<(&str, &[u8])> = call
                .request
                .prompt_members()
                .iter()
                .filter_map(|name| call.request.member(name).map(|value| (*name, value)))
                .collect();
            let text = prompt
                .iter()
                .map(|(name, value)| format!("\"{name}\":{}", String::from_utf8_lossy(value)))
                .collect::<Vec<_>>()
                .join(",");
            span.set_attribute("gen_ai.input.messages", bounded(format!("{{{text}}}")));
        }
        Self { span, pricing }
    }

    /// The span, to run the attempt in.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The `traceparent` the upstream is sent: this attempt's span, when it
    /// is exported.
    pub fn traceparent(&self) -> Option<String> {
        traceparent_of(&self.span)
    }

    /// Notes a whole answer and ends the span.
    pub fn answered(self, response: &ChatResponse) {
        if self.span.is_disabled() {
            return;
        }
        let json = response.json();
        let read = Read::of(&json);
        if let Some(model) = read.model() {
            self.span
                .set_attribute("gen_ai.response.model", cut(model, NAME_MAX));
        }
        self.finish_reasons(read.finish_reasons());
        self.usage(response.usage());
        if CAPTURE_CONTENT.load(Ordering::Relaxed) {
            self.span.set_attribute(
                "gen_ai.output.messages",
                bounded(String::from_utf8_lossy(&json).into_owned()),
            );
        }
    }

    /// Notes a failure and ends the span.
    pub fn failed(self, error: &ChatError) {
        if self.span.is_disabled() {
            return;
        }
        self.span.set_attribute("error.type", error.kind());
        self.span.set_status(Status::error(error.kind()));
    }

    /// `chunks`, noting the time to the first, the model, the finish
    /// reasons and the usage as they pass; the span ends with the stream
    /// (or when it is dropped).
    pub fn stream(self, chunks: ChatStream, started: Instant) -> ChatStream {
        if self.span.is_disabled() {
            return chunks;
        }
        let state = Streamed {
            attempt: self,
            started,
            first: true,
            model_noted: false,
            reasons: Vec::new(),
            text: String::new(),
        };
        futures::stream::unfold((chunks, Some(state)), |(mut chunks, mut state)| async move {
            let item = chunks.next().await;
            match (&item, state.as_mut()) {
                (Some(Ok(chunk)), Some(streamed)) => streamed.pass(chunk),
                (Some(Err(error)), Some(_)) => {
                    if let Some(streamed) = state.take() {
                        streamed.attempt.failed(error);
                    }
                }
                (None, Some(_)) => {
                    if let Some(streamed) = state.take() {
                        streamed.end();
                    }
                }
                _ => {}
            }
            item.map(|item| (item, (chunks, state)))
        })
        .boxed()
    }

    fn finish_reasons(&self, reasons: Vec<String>) {
        if !reasons.is_empty() {
            let reasons: Vec<opentelemetry::StringValue> = reasons.into_iter().map(Into::into).collect();
            self.span.set_attribute(
                "gen_ai.response.finish_reasons",
                Value::Array(opentelemetry::Array::String(reasons)),
            );
        }
    }

    fn usage(&self, usage: Option<&gatewayz_domain::Usage>) {
        let Some(usage) = usage else {
            return;
        };
        self.span
            .set_attribute("gen_ai.usage.input_tokens", saturating(usage.prompt_tokens));
        self.span
            .set_attribute("gen_ai.usage.output_tokens", saturating(usage.completion_tokens));
        if let Some(pricing) = self.pricing {
            self.span.set_attribute("gatewayz.cost_usd", pricing.cost(usage));
        }
    }
}

impl Drop for Attempt {
    /// Ends the span now (answered, failed, or its stream ended or was
    /// dropped): an exported span ends when it was last exited, so it is
    /// entered and left once more.
    fn drop(&mut self) {
        if !self.span.is_disabled() {
            drop(self.span.enter());
        }
    }
}

/// A stream's attempt, as its chunks pass.
struct Streamed {
    attempt: Attempt,
    started: Instant,
    first: bool,
    model_noted: bool,
    reasons: Vec<String>,
    /// The completion's JSON events, when content is captured.
    text: String,
}

impl Streamed {
    fn pass(&mut self, chunk: &ChatChunk) {
        let span = &self.attempt.span;
        if std::mem::replace(&mut self.first, false) {
            let millis = self.started.elapsed().as_secs_f64() * 1000.0;
            span.set_attribute("gatewayz.time_to_first_token_ms", millis);
            span.add_event("first_token", Vec::new());
        }
        let read = Read::of(chunk.json());
        // Each attribute once: a span keeps at most 128, duplicates included.
        if !self.model_noted
            && let Some(model) = read.model()
        {
            span.set_attribute("gen_ai.response.model", cut(model, NAME_MAX));
            self.model_noted = true;
        }
        self.reasons.extend(read.finish_reasons());
        if chunk.usage_is_final() {
            self.attempt.usage(chunk.usage());
        }
        if CAPTURE_CONTENT.load(Ordering::Relaxed) && self.text.len() < CONTENT_MAX {
            self.text.push_str(&String::from_utf8_lossy(chunk.json()));
            self.text.push('\n');
        }
    }

    fn end(self) {
        self.attempt.finish_reasons(self.reasons);
        if !self.text.is_empty() {
            self.attempt
                .span
                .set_attribute("gen_ai.output.messages", bounded(self.text));
        }
    }
}

/// A W3C `traceparent` for `span`'s context, when it has a valid one (an
/// exported span); `None` otherwise.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

fn saturating(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// `text` cut to [`CONTENT_MAX`] bytes, on a character boundary.
fn bounded(text: String) -> String {
    if text.len() <= CONTENT_MAX {
        return text;
    }
    cut(&text, CONTENT_MAX)
}

/// `text`'s first `max` bytes at most, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    let end = (0..=max.min(text.len()))
        .rev()
        .find(|end| text.is_char_boundary(*end))
        .unwrap_or(0);
    text[..end].to_owned()
}

/// Adds an event to the request's span (the current one): a retry, a
/// fallback, a breaker's change.
pub fn event(name: &'static str, attributes: Vec<KeyValue>) {
    let span = Span::current();
    if !span.is_disabled() {
        span.add_event(name, attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_are_read_from_each_apis_answer() {
        let reasons = |json: &str| Read::of(json.as_bytes()).finish_reasons();
        assert_eq!(
            reasons(r#"{"choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}]}"#),
            ["stop", "length"]
        );
        assert_eq!(
            reasons(r#"{"type": "message", "stop_reason": "end_turn"}"#),
            ["end_turn"]
        );
        assert_eq!(
            reasons(r#"{"type": "message_delta", "delta": {"stop_reason": "tool_use"}}"#),
            ["tool_use"]
        );
        assert_eq!(
            reasons(r#"{"type": "response", "status": "completed"}"#),
            ["completed"]
        );
        assert_eq!(
            reasons(r#"{"type": "response.completed", "response": {"status": "completed"}}"#),
            ["completed"]
        );
        assert!(reasons(r#"{"choices": [{"delta": {"content": "x"}, "finish_reason": null}]}"#).is_empty());
        assert!(reasons("not json").is_empty());
    }

    #[test]
    fn the_model_is_read_where_each_api_puts_it() {
        let model = |json: &str| Read::of(json.as_bytes()).model().map(str::to_owned);
        assert_eq!(
            model(r#"{"model": "gpt-4o-mini", "messages": []}"#).as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            model(r#"{"type": "message_start", "message": {"model": "claude"}}"#).as_deref(),
            Some("claude")
        );
        assert_eq!(
            model(r#"{"type": "response.created", "response": {"model": "o3"}}"#).as_deref(),
            Some("o3")
        );
    }

    #[test]
    fn a_model_name_is_cut_short_on_a_character_boundary() {
        assert_eq!(cut("gpt-4o", NAME_MAX), "gpt-4o");
        let long = "é".repeat(NAME_MAX);
        let cut = cut(&long, NAME_MAX);
        assert!(cut.len() <= NAME_MAX && cut.len() >= NAME_MAX - 1 && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn captured_content_is_cut_on_a_character_boundary() {
        let text = "é".repeat(CONTENT_MAX);
        let cut = bounded(text);
        assert!(cut.len() <= CONTENT_MAX && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn without_an_exporter_spans_are_disabled_and_give_no_traceparent() {
        let span = tracing::info_span!(target: SPAN_TARGET, "upstream");
        assert!(traceparent_of(&span).is_none());
    }
}
