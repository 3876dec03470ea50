//! `gateway_usage`: how long a request took, how long the upstream took, and
//! what it cost, added to every successful answer.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::catalog::Pricing;
use crate::limits::{Spend, Ticket, usd_to_micros};
use crate::model::{ChatChunk, ChatResponse, ChunkHead, Usage};
use crate::ports::ChatStream;
use crate::record::CallRecord;

const FIELD: &str = "gateway_usage";

/// Timings of one request and, when it can be known, its cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatewayUsage {
    pub request: Duration,
    pub upstream: Duration,
    /// Only when the catalog prices the model and the upstream reported
    /// usage: never a guess.
    pub cost_usd: Option<f64>,
    /// Served from the cache: no upstream call, no cost.
    pub cached: bool,
}

impl GatewayUsage {
    fn measure(
        received: Instant,
        upstream: Duration,
        pricing: Option<Pricing>,
        usage: Option<&Usage>,
    ) -> Self {
        let cost_usd = pricing.zip(usage).map(|(pricing, usage)| pricing.cost(usage));
        Self {
            request: received.elapsed(),
            upstream,
            cost_usd,
            cached: false,
        }
    }

    /// An answer served from the cache: it cost nothing.
    fn cached(received: Instant) -> Self {
        Self {
            request: received.elapsed(),
            upstream: Duration::ZERO,
            cost_usd: Some(0.0),
            cached: true,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut value = json!({"request_ms": millis(self.request), "upstream_ms": millis(self.upstream)});
        if let Some(cost) = self.cost_usd {
            value["cost_usd"] = json!(cost);
        }
        if self.cached {
            value["cached"] = json!(true);
        }
        value
    }

    /// The JSON text of [`Self::to_json`].
    fn to_bytes(self) -> Vec<u8> {
        // Serializing numbers into memory cannot fail.
        serde_json::to_vec(&self.to_json()).unwrap_or_default()
    }
}

/// Two parts of one request's usage (each count the larger: a later part
/// repeats or completes an earlier one).
fn merged(earlier: Option<Usage>, later: Usage) -> Usage {
    let Some(earlier) = earlier else {
        return later;
    };
    let prompt = earlier.prompt_tokens.max(later.prompt_tokens);
    let completion = earlier.completion_tokens.max(later.completion_tokens);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: Some(prompt.saturating_add(completion)),
        prompt_tokens_details: later.prompt_tokens_details.or(earlier.prompt_tokens_details),
    }
}

/// Milliseconds with microsecond precision.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Adds `gateway_usage` to a whole answer, after its last member.
pub(crate) fn annotate(
    response: ChatResponse,
    received: Instant,
    upstream: Duration,
    pricing: Option<Pricing>,
) -> (ChatResponse, GatewayUsage) {
    let usage = GatewayUsage::measure(received, upstream, pricing, response.usage());
    (response.with_member(FIELD, &usage.to_bytes()), usage)
}

/// Adds `gateway_usage` to a whole answer served from the cache: `cached`,
/// no cost.
pub(crate) fn annotate_cached(response: ChatResponse, received: Instant) -> ChatResponse {
    response.with_member(FIELD, &GatewayUsage::cached(received).to_bytes())
}

/// The state of a metered stream.
pub(crate) struct Meter {
    received: Instant,
    started: Instant,
    pricing: Option<Pricing>,
    client_wants_usage: bool,
    record: CallRecord,
    /// The first chunk's id, creation time and model, for a closing chunk.
    first: Option<ChunkHead>,
    started_stream: bool,
    reported: bool,
    ended: bool,
    /// The key's admission, settled when the stream ends or is dropped.
    ticket: Option<Ticket>,
    /// What the upstream reported the stream used.
    used: Option<Spend>,
    /// The stream ended on an error.
    failed: bool,
    /// Usage reported in parts, merged until the final part.
    partial: Option<Usage>,
    /// A replay from the cache: it costs and spends nothing.
    cached: bool,
}

impl Meter {
    pub(crate) fn new(
        received: Instant,
        started: Instant,
        pricing: Option<Pricing>,
        client_wants_usage: bool,
        record: CallRecord,
    ) -> Self {
        Self {
            received,
            started,
            pricing,
            client_wants_usage,
            record,
            first: None,
            started_stream: false,
            reported: false,
            ended: false,
            ticket: None,
            used: None,
            failed: false,
            partial: None,
            cached: false,
        }
    }

    /// Meters a replay from the cache: its usage chunk says `cached` and
    /// costs nothing, its key is charged nothing, and no tokens are noted.
    pub(crate) fn cached(mut self) -> Self {
        self.cached = true;
        self.used = Some(Spend::default());
        self
    }

    /// Settles `ticket` when the stream ends: with the usage the upstream
    /// reported, else with an estimate from what was relayed.
    pub(crate) fn with_ticket(mut self, ticket: Option<Ticket>) -> Self {
        self.ticket = ticket;
        self
    }

    fn settle(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            match self.used {
                Some(used) => ticket.settle(used),
                // Failed before any chunk: the upstream billed nothing.
                None if self.failed && !self.started_stream => ticket.release(),
                // Left or cut without usage: settled with its estimate.
                None => drop(ticket),
            }
        }
    }
}

/// Adds `gateway_usage` to the chunk that carries the upstream's usage,
/// removing the usage itself when the client did not ask for it; when no
/// chunk carries usage, adds a closing chunk (empty `choices`) with timings
/// only. Notes time to first token, tokens, cost and upstream time in the
/// call record.
pub(crate) fn meter(chunks: ChatStream, meter: Meter) -> ChatStream {
    futures::stream::unfold((chunks, meter), |(mut chunks, mut meter)| async move {
        if meter.ended {
            return None;
        }
        match chunks.next().await {
            Some(Ok(chunk)) => Some((Ok(meter.pass(chunk)), (chunks, meter))),
            Some(Err(error)) => {
                meter.ended = true;
                meter.failed = true;
                meter.record.failed(&error);
                meter.note_end();
                meter.settle();
                Some((Err(error), (chunks, meter)))
            }
            None => {
                meter.ended = true;
                meter.note_end();
                meter.settle();
                let closing = meter.closing_chunk()?;
                Some((Ok(closing), (chunks, meter)))
            }
        }
    })
    .boxed()
}

impl Drop for Meter {
    fn drop(&mut self) {
        // A stream dropped early (its client left) still ended upstream.
        if !self.ended {
            self.note_end();
        }
        self.settle();
    }
}

impl Meter {
    fn note_end(&self) {
        // A replay waited on no upstream.
        if self.cached {
            return;
        }
        let upstream = self.started.elapsed();
        self.record.update(|facts| facts.upstream = Some(upstream));
    }

    fn pass(&mut self, chunk: ChatChunk) -> ChatChunk {
        if !std::mem::replace(&mut self.started_stream, true) {
            self.first = chunk.kind().is_none().then(|| chunk.head()).flatten();
            let first_token = self.received.elapsed();
            self.record.update(|facts| facts.first_token = Some(first_token));
        }
        if chunk.is_failure() {
            // Passed on as it came; the request is logged and counted as the
            // upstream's failure.
            self.record.failed(&crate::error::ChatError::UpstreamFailed(
                crate::error::UpstreamError::new(
                    crate::error::ErrorSource::Provider,
                    None,
                    "the upstream reported that the response failed",
                ),
            ));
        }
        if let Some(ticket) = &mut self.ticket
            && chunk.has_choices()
        {
            ticket.completion_estimate += 1;
        }
        let Some(tokens) = chunk.usage().copied().filter(|_| !self.reported) else {
            return chunk;
        };
        let tokens = merged(self.partial.take(), tokens);
        if !chunk.usage_is_final() {
            self.partial = Some(tokens);
            return chunk;
        }
        self.reported = true;
        if self.cached {
            self.record.update(|facts| facts.cost_usd = Some(0.0));
            let keep_usage = self.client_wants_usage || chunk.kind().is_some();
            return chunk.with_member(FIELD, &GatewayUsage::cached(self.received).to_bytes(), keep_usage);
        }
        let usage = GatewayUsage::measure(self.received, self.started.elapsed(), self.pricing, Some(&tokens));
        self.used = Some(
            Spend {
                tokens: tokens.prompt_tokens.saturating_add(tokens.completion_tokens),
                usd_micros: usage.cost_usd.map_or(0, usd_to_micros),
            }
            .bounded(),
        );
        self.record.update(|facts| {
            facts.prompt_tokens = Some(tokens.prompt_tokens);
            facts.completion_tokens = Some(tokens.completion_tokens);
            facts.cost_usd = usage.cost_usd;
        });
        // Only a chat completion's usage chunk is the gateway's to ask for
        // (and then to hide); the other APIs' events always carry usage.
        let keep_usage = self.client_wants_usage || chunk.kind().is_some();
        chunk.with_member(FIELD, &usage.to_bytes(), keep_usage)
    }

    fn closing_chunk(&mut self) -> Option<ChatChunk> {
        if self.reported {
            return None;
        }
        let ChunkHead { id, created, model } = self.first.take()?;
        let usage = if self.cached {
            GatewayUsage::cached(self.received)
        } else {
            GatewayUsage::measure(self.received, self.started.elapsed(), self.pricing, None)
        };
        let closing = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], FIELD: usage.to_json()});
        ChatChunk::from_json(serde_json::to_vec(&closing).ok()?.into()).ok()
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;

    fn chunk(usage: Option<Usage>) -> ChatChunk {
        let mut value = json!({"id": "c", "object": "chat.completion.chunk", "created": 5, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": null}]});
        if let Some(usage) = usage {
            value["choices"] = json!([]);
            value["usage"] = json!({"prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens});
        }
        ChatChunk::from_json(serde_json::to_vec(&value).unwrap().into()).unwrap()
    }

    fn value(chunk: &ChatChunk) -> Value {
        serde_json::from_slice(chunk.json()).unwrap()
    }

    const PRICE: Pricing = Pricing::new(1.0, 2.0);

    async fn metered_with(chunks: Vec<ChatChunk>, wants_usage: bool, record: CallRecord) -> Vec<ChatChunk> {
        let now = Instant::now();
        let state = Meter::new(now, now, Some(PRICE), wants_usage, record);
        meter(stream::iter(chunks.into_iter().map(Ok)).boxed(), state)
            .map(Result::unwrap)
            .collect()
            .await
    }

    async fn metered(chunks: Vec<ChatChunk>, wants_usage: bool) -> Vec<ChatChunk> {
        metered_with(chunks, wants_usage, CallRecord::default()).await
    }

    #[tokio::test]
    async fn the_record_gets_first_token_tokens_cost_and_upstream_time() {
        let record = CallRecord::default();
        metered_with(
            vec![chunk(None), chunk(Some(Usage::new(100, 50)))],
            false,
            record.clone(),
        )
        .await;
        let facts = record.snapshot();
        assert!(facts.first_token.is_some() && facts.upstream.is_some());
        assert_eq!(
            (facts.prompt_tokens, facts.completion_tokens),
            (Some(100), Some(50))
        );
        assert_eq!(facts.cost_usd, Some(0.0002));
    }

    #[tokio::test]
    async fn the_usage_chunk_carries_the_cost_and_keeps_usage_when_asked() {
        let out = metered(vec![chunk(None), chunk(Some(Usage::new(100, 50)))], true).await;
        assert_eq!(out.len(), 2);
        let last = value(&out[1]);
        assert_eq!(last["usage"]["total_tokens"], json!(150));
        assert_eq!(last[FIELD]["cost_usd"], json!(0.0002));
        assert!(last[FIELD]["request_ms"].is_number() && last[FIELD]["upstream_ms"].is_number());
    }

    #[tokio::test]
    async fn usage_the_client_did_not_ask_for_is_removed_but_the_cost_stays() {
        let out = metered(vec![chunk(None), chunk(Some(Usage::new(100, 50)))], false).await;
        let last = value(&out[1]);
        assert!(last.get("usage").is_none(), "{last}");
        assert_eq!(last[FIELD]["cost_usd"], json!(0.0002));
    }

    #[tokio::test]
    async fn anthropic_usage_in_two_parts_is_merged_and_reported_once_on_the_final_part() {
        let event = |value: Value| {
            ChatChunk::parse(
                crate::model::Endpoint::Messages,
                serde_json::to_vec(&value).unwrap().into(),
            )
            .unwrap()
        };
        let events = vec![
            event(json!({"type": "message_start", "message": {"id": "m", "usage":
                {"input_tokens": 100, "output_tokens": 1, "cache_read_input_tokens": 20}}})),
            event(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}}),
            ),
            event(json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 50}})),
            event(json!({"type": "message_stop"})),
        ];
        let record = CallRecord::default();

        let out = metered_with(events.clone(), false, record.clone()).await;

        // No closing chunk is invented; only the final part carries the cost.
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].json(), events[0].json());
        assert_eq!(out[3].json(), events[3].json());
        let delta = value(&out[2]);
        assert_eq!(delta["usage"]["output_tokens"], json!(50));
        // 100 uncached and 20 cached prompt tokens at $1/M, 50 output at $2/M.
        assert_eq!(delta[FIELD]["cost_usd"], json!(0.00022));
        let facts = record.snapshot();
        assert_eq!(
            (facts.prompt_tokens, facts.completion_tokens),
            (Some(120), Some(50))
        );
    }

    #[tokio::test]
    async fn a_response_that_failed_upstream_is_passed_on_and_recorded_as_a_failure() {
        let failed = json!({"type": "response.failed", "sequence_number": 3,
            "response": {"id": "resp_1", "status": "failed", "error": {"code": "server_error", "message": "x"}}});
        let event = ChatChunk::parse(
            crate::model::Endpoint::Responses,
            serde_json::to_vec(&failed).unwrap().into(),
        )
        .unwrap();
        let record = CallRecord::default();

        let out = metered_with(vec![event.clone()], true, record.clone()).await;

        assert_eq!(out.len(), 1);
        assert_eq!(out[0].json(), event.json());
        assert_eq!(
            record.snapshot().error,
            Some((crate::error::ErrorSource::Provider, "upstream_failed"))
        );
    }

    #[tokio::test]
    async fn chunks_without_usage_pass_byte_for_byte() {
        let first = chunk(None);
        let out = metered(vec![first.clone(), chunk(Some(Usage::new(1, 1)))], true).await;
        assert_eq!(out[0].json(), first.json());
    }

    #[tokio::test]
    async fn without_upstream_usage_a_closing_chunk_reports_timings_and_no_cost() {
        let out = metered(vec![chunk(None), chunk(None)], false).await;
        assert_eq!(out.len(), 3);
        let closing = value(&out[2]);
        assert_eq!(closing["choices"], json!([]));
        assert_eq!(closing["id"], "c");
        assert!(closing[FIELD].get("cost_usd").is_none());
        assert!(closing[FIELD]["request_ms"].is_number());
    }
}
