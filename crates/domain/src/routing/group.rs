//! A group of targets tried one after the other: in order (`fallback`) or in
//! a weighted random order (`loadbalance`). A member whose failure another
//! member may fix ([`ChatError::falls_back`]) hands the request on; any other
//! failure is the answer.

use std::sync::Arc;

use super::answer::{Answer, decorator};
use crate::error::ChatError;
use crate::policy::Strategy;
use crate::ports::{ChatProvider, ProviderCall, RoutingEvents};

pub(crate) struct Group {
    model: Arc<str>,
    strategy: Strategy,
    members: Vec<Member>,
    events: Arc<dyn RoutingEvents>,
}

struct Member {
    weight: u32,
    name: Arc<str>,
    provider: Arc<dyn ChatProvider>,
}

impl Group {
    pub(crate) fn new(
        model: Arc<str>,
        strategy: Strategy,
        members: Vec<(u32, Arc<str>, Arc<dyn ChatProvider>)>,
        events: Arc<dyn RoutingEvents>,
    ) -> Self {
        Self {
            model,
            strategy,
            members: members
                .into_iter()
                .map(|(weight, name, provider)| Member {
                    weight,
                    name,
                    provider,
                })
                .collect(),
            events,
        }
    }

    async fn run<A: Answer>(&self, call: ProviderCall) -> Result<A, ChatError> {
        let order = match self.strategy {
            Strategy::Fallback => (0..self.members.len()).collect(),
            Strategy::LoadBalance => {
                weighted_order(self.members.iter().map(|member| member.weight), fastrand::f64)
            }
        };
        let deadline = call.context.deadline;
        let mut call = Some(call);
        let mut found: Option<ChatError> = None;
        for (position, index) in order.iter().enumerate() {
            let member = &self.members[*index];
            let this = if position + 1 == order.len() {
                call.take()
            } else {
                call.clone()
            };
            let Some(this) = this else { break };
            match A::from(member.provider.as_ref(), this).await {
                Ok(answer) => return Ok(answer),
                Err(error)
                    if error.falls_back()
                        && position + 1 < order.len()
                        && deadline.is_none_or(|deadline| tokio::time::Instant::now() < deadline) =>
                {
                    self.events.falling_back(&self.model, &member.name, &error);
                    found = Some(worth_telling(found, error));
                }
                Err(error) => return Err(worth_telling(found, error)),
            }
        }
        Err(found.unwrap_or(ChatError::CircuitOpen {
            target: self.model.to_string(),
            retry_in: std::time::Duration::from_secs(1),
        }))
    }
}

/// Of two failures, the one to tell the client: the latest, unless it only
/// says a target was skipped (open circuit, no credentials) and an earlier
/// one says what an upstream actually did.
fn worth_telling(earlier: Option<ChatError>, latest: ChatError) -> ChatError {
    match earlier {
        Some(earlier)
            if matches!(latest, ChatError::CircuitOpen { .. } | ChatError::Keys(_))
                && !matches!(earlier, ChatError::CircuitOpen { .. } | ChatError::Keys(_)) =>
        {
            earlier
        }
        _ => latest,
    }
}

/// A weighted random order of members (Efraimidis–Spirakis): each member
/// comes first with probability weight / total, and so on for the rest.
/// `draw` gives uniform numbers in 0..1. A weight of 0 comes last.
pub(crate) fn weighted_order(
    weights: impl Iterator<Item = u32>,
    mut draw: impl FnMut() -> f64,
) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = weights
        .enumerate()
        .map(|(index, weight)| {
            let key = if weight == 0 {
                f64::NEG_INFINITY
            } else {
                // The largest u^(1/w) wins; compared as logarithms.
                draw().max(f64::MIN_POSITIVE).ln() / f64::from(weight)
            };
            (key, index)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, index)| index).collect()
}

decorator!(Group);

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("strategy", &self.strategy)
            .field(
                "members",
                &self.members.iter().map(|member| &member.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_weighted_order_follows_the_weights() {
        let mut rng = fastrand::Rng::with_seed(7);
        let rounds = 100_000;
        let mut first = [0_u32; 3];
        for _ in 0..rounds {
            let order = weighted_order([60, 30, 10].into_iter(), || rng.f64());
            assert_eq!(order.len(), 3);
            first[order[0]] += 1;
        }
        for (count, weight) in first.iter().zip([0.6, 0.3, 0.1]) {
            let share = f64::from(*count) / f64::from(rounds);
            assert!((share - weight).abs() < 0.01, "{first:?}");
        }
    }

    #[test]
    fn a_zero_weight_comes_last() {
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..1_000 {
            assert_eq!(weighted_order([0, 1].into_iter(), || rng.f64())[1], 0);
        }
    }
}
