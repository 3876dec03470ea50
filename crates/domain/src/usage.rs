//! `gateway_usage`: how long a request took, how long the upstream took, and
//! what it cost, added to every successful answer.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::catalog::Pricing;
use crate::model::{ChatChunk, ChatResponse, Extra, Usage};
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
        }
    }

    pub fn to_json(&self) -> Value {
        let mut value = json!({"request_ms": millis(self.request), "upstream_ms": millis(self.upstream)});
        if let Some(cost) = self.cost_usd {
            value["cost_usd"] = json!(cost);
        }
        value
    }
}

/// Milliseconds with microsecond precision.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Adds `gateway_usage` to a whole answer.
pub(crate) fn annotate(
    response: &mut ChatResponse,
    received: Instant,
    upstream: Duration,
    pricing: Option<Pricing>,
) -> GatewayUsage {
    let usage = GatewayUsage::measure(received, upstream, pricing, response.usage.as_ref());
    response.extra.insert(FIELD.into(), usage.to_json());
    usage
}

/// The state of a metered stream.
pub(crate) struct Meter {
    received: Instant,
    started: Instant,
    pricing: Option<Pricing>,
    client_wants_usage: bool,
    record: CallRecord,
    /// The first chunk's id, creation time and model, for a closing chunk.
    first: Option<(String, u64, String)>,
    reported: bool,
    ended: bool,
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
            reported: false,
            ended: false,
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
                meter.record.failed(&error);
                meter.note_end();
                Some((Err(error), (chunks, meter)))
            }
            None => {
                meter.ended = true;
                meter.note_end();
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
    }
}

impl Meter {
    fn note_end(&self) {
        let upstream = self.started.elapsed();
        self.record.update(|facts| facts.upstream = Some(upstream));
    }

    fn pass(&mut self, mut chunk: ChatChunk) -> ChatChunk {
        if self.first.is_none() {
            self.first = Some((chunk.id.clone(), chunk.created, chunk.model.clone()));
            let first_token = self.received.elapsed();
            self.record.update(|facts| facts.first_token = Some(first_token));
        }
        if let Some(tokens) = chunk.usage.as_ref().filter(|_| !self.reported) {
            self.reported = true;
            let usage =
                GatewayUsage::measure(self.received, self.started.elapsed(), self.pricing, Some(tokens));
            self.record.update(|facts| {
                facts.prompt_tokens = Some(tokens.prompt_tokens);
                facts.completion_tokens = Some(tokens.completion_tokens);
                facts.cost_usd = usage.cost_usd;
            });
            chunk.extra.insert(FIELD.into(), usage.to_json());
            if !self.client_wants_usage {
                chunk.usage = None;
            }
        }
        chunk
    }

    fn closing_chunk(&mut self) -> Option<ChatChunk> {
        if self.reported {
            return None;
        }
        let (id, created, model) = self.first.take()?;
        let usage = GatewayUsage::measure(self.received, self.started.elapsed(), self.pricing, None);
        let mut extra = Extra::new();
        extra.insert(FIELD.into(), usage.to_json());
        Some(ChatChunk {
            id,
            object: "chat.completion.chunk".into(),
            created,
            model,
            choices: Vec::new(),
            usage: None,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;
    use crate::model::{ChunkChoice, Delta};

    fn chunk(usage: Option<Usage>) -> ChatChunk {
        ChatChunk {
            id: "c".into(),
            object: "chat.completion.chunk".into(),
            created: 5,
            model: "m".into(),
            choices: if usage.is_some() {
                Vec::new()
            } else {
                vec![ChunkChoice {
                    index: 0,
                    delta: Delta::default(),
                    finish_reason: None,
                    extra: Extra::new(),
                }]
            },
            usage,
            extra: Extra::new(),
        }
    }

    const PRICE: Pricing = Pricing {
        input_per_million: 1.0,
        output_per_million: 2.0,
    };

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
        let last = &out[1];
        assert_eq!(
            last.usage.as_ref().map(|usage| usage.total_tokens),
            Some(Some(150))
        );
        assert_eq!(last.extra[FIELD]["cost_usd"], json!(0.0002));
        assert!(last.extra[FIELD]["request_ms"].is_number() && last.extra[FIELD]["upstream_ms"].is_number());
    }

    #[tokio::test]
    async fn usage_the_client_did_not_ask_for_is_removed_but_the_cost_stays() {
        let out = metered(vec![chunk(None), chunk(Some(Usage::new(100, 50)))], false).await;
        assert_eq!(out[1].usage, None);
        assert_eq!(out[1].extra[FIELD]["cost_usd"], json!(0.0002));
    }

    #[tokio::test]
    async fn without_upstream_usage_a_closing_chunk_reports_timings_and_no_cost() {
        let out = metered(vec![chunk(None), chunk(None)], false).await;
        assert_eq!(out.len(), 3);
        let closing = &out[2];
        assert!(closing.choices.is_empty());
        assert_eq!(closing.id, "c");
        assert!(closing.extra[FIELD].get("cost_usd").is_none());
        assert!(closing.extra[FIELD]["request_ms"].is_number());
    }
}
