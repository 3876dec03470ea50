//! What every routing decorator is written against: [`Answer`], one of the
//! port's two calls, and `decorator!`, which implements the port for a
//! decorator from its one generic `run`.

use futures::future::BoxFuture;

use crate::error::ChatError;
use crate::model::ChatResponse;
use crate::ports::{ChatProvider, ChatStream, ProviderCall};

/// One of the port's two calls, so that each decorator is written once.
pub(crate) trait Answer: Sized + Send + 'static {
    fn from<'a>(provider: &'a dyn ChatProvider, call: ProviderCall)
    -> BoxFuture<'a, Result<Self, ChatError>>;
}

impl Answer for ChatResponse {
    fn from<'a>(
        provider: &'a dyn ChatProvider,
        call: ProviderCall,
    ) -> BoxFuture<'a, Result<Self, ChatError>> {
        provider.complete(call)
    }
}

impl Answer for ChatStream {
    fn from<'a>(
        provider: &'a dyn ChatProvider,
        call: ProviderCall,
    ) -> BoxFuture<'a, Result<Self, ChatError>> {
        provider.stream(call)
    }
}

/// Implements [`ChatProvider`] for a decorator with an
/// `async fn run<A: Answer>(&self, call: ProviderCall) -> Result<A, ChatError>`.
macro_rules! decorator {
    ($type:ty) => {
        #[async_trait::async_trait]
        impl $crate::ports::ChatProvider for $type {
            async fn complete(
                &self,
                call: $crate::ports::ProviderCall,
            ) -> Result<$crate::model::ChatResponse, $crate::error::ChatError> {
                self.run(call).await
            }

            async fn stream(
                &self,
                call: $crate::ports::ProviderCall,
            ) -> Result<$crate::ports::ChatStream, $crate::error::ChatError> {
                self.run(call).await
            }
        }
    };
}
pub(crate) use decorator;
