//! The provider adapters a gateway was started with.

use std::sync::Arc;

use crate::ports::ChatProvider;
use crate::provider::ProviderKind;

/// The provider adapters a gateway was started with, one per [`ProviderKind`].
#[derive(Clone, Default)]
pub struct Providers {
    demo: Option<Arc<dyn ChatProvider>>,
    portkey: Option<Arc<dyn ChatProvider>>,
    direct: Option<Arc<dyn ChatProvider>>,
}

impl Providers {
    #[must_use]
    pub fn with(mut self, kind: ProviderKind, provider: Arc<dyn ChatProvider>) -> Self {
        *self.slot(kind) = Some(provider);
        self
    }

    fn slot(&mut self, kind: ProviderKind) -> &mut Option<Arc<dyn ChatProvider>> {
        match kind {
            ProviderKind::Demo => &mut self.demo,
            ProviderKind::Portkey => &mut self.portkey,
            ProviderKind::Direct => &mut self.direct,
        }
    }

    pub(crate) fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn ChatProvider>> {
        match kind {
            ProviderKind::Demo => self.demo.as_ref(),
            ProviderKind::Portkey => self.portkey.as_ref(),
            ProviderKind::Direct => self.direct.as_ref(),
        }
    }

    /// The kinds this gateway can serve.
    pub fn enabled(&self) -> impl Iterator<Item = ProviderKind> + '_ {
        ProviderKind::ALL
            .into_iter()
            .filter(|kind| self.get(*kind).is_some())
    }
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.enabled()).finish()
    }
}
