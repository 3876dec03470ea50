//! One deadline for every attempt of a request, and every wait between them:
//! the outermost layer of a catalog model's stack, and the net under a
//! request routed to an adapter directly.

use std::sync::Arc;
use std::time::Duration;

use super::answer::{Answer, decorator};
use crate::error::{ChatError, ErrorSource, UpstreamError};
use crate::ports::{ChatProvider, ProviderCall};

/// `provider` with one deadline, named `name` in its error, for the answer or
/// a stream's first chunk: the net under a request routed to an adapter
/// directly, which has no catalog deadline.
pub(crate) fn with_deadline(
    provider: Arc<dyn ChatProvider>,
    deadline: Duration,
    name: &'static str,
) -> Arc<dyn ChatProvider> {
    Arc::new(Deadline {
        inner: provider,
        deadline,
        name,
    })
}

/// The outermost layer: every attempt of a request, and every wait between
/// them, fit in one deadline.
struct Deadline {
    inner: Arc<dyn ChatProvider>,
    deadline: Duration,
    /// What the deadline is called in its error.
    name: &'static str,
}

impl Deadline {
    async fn run<A: Answer>(&self, mut call: ProviderCall) -> Result<A, ChatError> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        call.context.deadline = Some(
            call.context
                .deadline
                .map_or(deadline, |outer| outer.min(deadline)),
        );
        let record = call.context.record.clone();
        // The attempts stop themselves at the deadline; this is the net.
        let answer = tokio::time::timeout_at(deadline, A::from(self.inner.as_ref(), call))
            .await
            .unwrap_or_else(|_| Err(deadline_passed()));
        match answer {
            Err(error) if tokio::time::Instant::now() >= deadline => {
                let last = match &error {
                    ChatError::Timeout(upstream) if upstream.source == ErrorSource::Gateway => String::new(),
                    other => format!("; the last said: {other}"),
                };
                Err(ChatError::Timeout(UpstreamError::new(
                    ErrorSource::Gateway,
                    None,
                    format!(
                        "no target answered within {} of {} ms ({} attempts){last}",
                        self.name,
                        self.deadline.as_millis(),
                        record.read(|facts| facts.attempts)
                    ),
                )))
            }
            answer => answer,
        }
    }
}

/// An attempt stopped by the request's deadline.
pub(crate) fn deadline_passed() -> ChatError {
    ChatError::Timeout(UpstreamError::new(
        ErrorSource::Gateway,
        None,
        "the deadline passed",
    ))
}

decorator!(Deadline);

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
