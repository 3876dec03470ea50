//! The memory budget: how many bytes the gateway may hold at once in the
//! buffers it fills on behalf of requests (request bodies, whole answers,
//! stream events being assembled). A buffer takes its bytes from the budget
//! before it grows; when the budget cannot give them, the request is refused
//! with [`ChatError::Overloaded`](crate::ChatError::Overloaded) instead of
//! the process growing until it is killed.
//!
//! The bytes go back to the budget when the buffer is freed: a
//! [`BudgetedBuffer`] frozen into [`Bytes`] carries its [`Lease`] inside, so
//! the lease ends with the last handle on those bytes, however far they
//! travel (into an answer, out to the client).

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The budget is counted in units of this many bytes, rounded up.
const UNIT: usize = 1024;

/// How long a refused client is asked to wait before it tries again.
pub const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A buffer could not grow: the budget has no room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway's memory budget of {budget} bytes cannot hold {wanted} more bytes")]
pub struct OverBudget {
    /// The whole budget, in bytes.
    pub budget: usize,
    /// The bytes asked for.
    pub wanted: usize,
}

/// The budget shared by every request of the process. Cloning shares it.
#[derive(Clone)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total_units: usize,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("bytes", &self.bytes())
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl Default for MemoryBudget {
    /// No practical limit, shared by every user of the default: for tests
    /// and tools that do not size one.
    fn default() -> Self {
        static UNLIMITED: LazyLock<Arc<Semaphore>> =
            LazyLock::new(|| Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)));
        Self {
            units: Arc::clone(&UNLIMITED),
            total_units: Semaphore::MAX_PERMITS,
        }
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded up to a whole KiB).
    pub fn new(bytes: usize) -> Self {
        let total_units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// The whole budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.total_units.saturating_mul(UNIT)
    }

    /// The bytes held by leases now.
    pub fn in_use(&self) -> usize {
        self.total_units
            .saturating_sub(self.units.available_permits())
            .saturating_mul(UNIT)
    }

    /// A lease holding nothing yet.
    pub fn lease(&self) -> Lease {
        Lease {
            budget: self.clone(),
            held: None,
        }
    }
}

/// Bytes taken from a [`MemoryBudget`], given back when dropped.
pub struct Lease {
    budget: MemoryBudget,
    held: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("bytes", &self.bytes()).finish()
    }
}

impl Lease {
    /// The bytes this lease holds.
    pub fn bytes(&self) -> usize {
        self.units().saturating_mul(UNIT)
    }

    fn units(&self) -> usize {
        self.held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Makes the lease hold at least `bytes`, taking what is missing from the
    /// budget at once (never waiting).
    ///
    /// # Errors
    /// [`OverBudget`] when the budget has not that much left; the lease then
    /// holds what it held before.
    pub fn cover(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let missing = bytes.div_ceil(UNIT).saturating_sub(self.units());
        if missing == 0 {
            return Ok(());
        }
        let refused = || OverBudget {
            budget: self.budget.bytes(),
            wanted: missing.saturating_mul(UNIT),
        };
        let count = u32::try_from(missing).map_err(|_| refused())?;
        match Arc::clone(&self.budget.units).try_acquire_many_owned(count) {
            Ok(permit) => {
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
                Ok(())
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(refused()),
        }
    }

    /// Gives back what the lease holds beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT);
        if let Some(held) = &mut self.held {
            let extra = held.num_permits().saturating_sub(keep);
            // The split-off part is dropped at once: back to the budget.
            drop(held.split(extra));
        }
    }
}

/// A byte buffer whose capacity is taken from a budget before it grows.
#[derive(Debug)]
pub struct BudgetedBuffer {
    bytes: Vec<u8>,
    lease: Lease,
}

impl BudgetedBuffer {
    /// An empty buffer with room for `capacity` bytes.
    ///
    /// # Errors
    /// [`OverBudget`] when the budget cannot hold `capacity` bytes.
    pub fn with_capacity(budget: &MemoryBudget, capacity: usize) -> Result<Self, OverBudget> {
        let mut lease = budget.lease();
        lease.cover(capacity)?;
        Ok(Self {
            bytes: Vec::with_capacity(capacity),
            lease,
        })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `chunk`, first taking the room it needs from the budget.
    ///
    /// # Errors
    /// [`OverBudget`] when the budget cannot hold the grown buffer; nothing
    /// is appended then.
    pub fn extend_from_slice(&mut self, chunk: &[u8]) -> Result<(), OverBudget> {
        let needed = self.bytes.len().saturating_add(chunk.len());
        if needed > self.bytes.capacity() {
            // Grown as `Vec` would (doubling), but exactly as far as the lease
            // covers, so the buffer never holds more than it was given.
            let capacity = needed.max(self.bytes.capacity().saturating_mul(2));
            let capacity = if self.lease.cover(capacity).is_ok() {
                capacity
            } else {
                self.lease.cover(needed)?;
                needed
            };
            self.bytes.reserve_exact(capacity - self.bytes.len());
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// The bytes, which keep their lease until the last handle on them (or
    /// on a slice of them) is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(Leased {
            bytes: self.bytes,
            _lease: self.lease,
        })
    }
}

/// Bytes and the lease that pays for them.
struct Leased {
    bytes: Vec<u8>,
    _lease: Lease,
}

impl AsRef<[u8]> for Leased {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn a_lease_takes_from_the_budget_and_gives_back_when_dropped() {
        let budget = MemoryBudget::new(10 * KIB);
        let mut first = budget.lease();
        first.cover(6 * KIB).unwrap();
        assert_eq!(budget.in_use(), 6 * KIB);
        let mut second = budget.lease();
        let refused = second.cover(5 * KIB).unwrap_err();
        assert_eq!(refused.budget, 10 * KIB);
        assert_eq!(second.bytes(), 0, "a refused lease holds nothing more");
        second.cover(4 * KIB).unwrap();
        assert_eq!(budget.in_use(), 10 * KIB);
        drop(first);
        assert_eq!(budget.in_use(), 4 * KIB);
        second.shrink_to(KIB + 1);
        assert_eq!(second.bytes(), 2 * KIB, "counted in whole KiB, rounded up");
        assert_eq!(budget.in_use(), 2 * KIB);
    }

    #[test]
    fn covering_what_is_held_takes_nothing_more() {
        let budget = MemoryBudget::new(4 * KIB);
        let mut lease = budget.lease();
        lease.cover(3 * KIB).unwrap();
        lease.cover(KIB).unwrap();
        lease.cover(3 * KIB - 1).unwrap();
        assert_eq!(budget.in_use(), 3 * KIB);
    }

    #[test]
    fn a_buffer_grows_within_its_lease_and_frees_it_with_its_last_bytes() {
        let budget = MemoryBudget::new(64 * KIB);
        let mut buffer = BudgetedBuffer::with_capacity(&budget, KIB).unwrap();
        for _ in 0..40 {
            buffer.extend_from_slice(&[b'x'; KIB]).unwrap();
        }
        assert_eq!(buffer.len(), 40 * KIB);
        // Doubled while it could, then exactly to what it needs.
        assert!(budget.in_use() >= 40 * KIB && budget.in_use() <= 64 * KIB);
        let over = buffer.extend_from_slice(&[b'x'; 30 * KIB]).unwrap_err();
        assert_eq!(over.budget, 64 * KIB);
        assert_eq!(buffer.len(), 40 * KIB, "nothing appended past the budget");
        let bytes = buffer.freeze();
        let tail = bytes.slice(39 * KIB..);
        drop(bytes);
        assert!(budget.in_use() >= 40 * KIB, "a slice keeps the lease");
        assert_eq!(&tail[..], &[b'x'; KIB][..]);
        drop(tail);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_buffer_larger_than_the_budget_is_refused_before_it_is_allocated() {
        let budget = MemoryBudget::new(8 * KIB);
        let refused = BudgetedBuffer::with_capacity(&budget, 9 * KIB).unwrap_err();
        assert_eq!(refused.wanted, 9 * KIB);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_default_budget_holds_any_answer() {
        let budget = MemoryBudget::default();
        let mut lease = budget.lease();
        lease.cover(64 * 1024 * 1024 * 1024).unwrap();
        assert!(budget.bytes() > 1 << 40);
        assert!(
            MemoryBudget::default().in_use() >= 64 * 1024 * 1024 * 1024,
            "one shared budget"
        );
    }
}
