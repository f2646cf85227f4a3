//! Device transactions in flight, and the wait an invalidation makes for them.
//!
//! On hardware, an IOTLB invalidation completes (the `CMD_SYNC` of an ARM SMMU, the wait
//! descriptor of VT-d) only once the transactions that used the old translations have
//! drained; after a strict `iommu_unmap` returns, no DMA can land in the unmapped memory, and
//! the memory can be unpinned and reused. A simulated device does its translation and its
//! store as two steps, so it declares each transaction ([`InFlight::enter`]) and an
//! invalidation waits for the transactions that began before it ([`InFlight::drain`]).
//!
//! Two counters, selected by the low bit of an epoch: a transaction counts itself in the
//! current epoch's counter (re-checking the epoch, so it cannot land in a counter a drain has
//! already left behind); a drain advances the epoch, so new transactions go to the other
//! counter, and waits for the previous one to reach zero. Drains are serialised by their
//! callers (the domain's owner holds its lock across an unmap); transactions are short (one
//! translation and one copy), so the wait is a spin, then a yield.
//!
//! Concurrency: lock-free; `enter` is two atomic operations on the uncontended path.

use std::sync::atomic::{AtomicU64, Ordering};

/// The in-flight transaction counters of one domain.
#[derive(Debug, Default)]
pub struct InFlight {
    epoch: AtomicU64,
    active: [AtomicU64; 2],
}

/// One device transaction; ends when dropped.
#[derive(Debug)]
#[must_use = "a transaction ends when the guard is dropped"]
pub struct Transaction<'a> {
    counter: &'a AtomicU64,
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Release);
    }
}

impl InFlight {
    /// Starts a transaction: translations and the memory access made before the guard drops
    /// are waited for by any later [`InFlight::drain`].
    pub fn enter(&self) -> Transaction<'_> {
        loop {
            let e = self.epoch.load(Ordering::Acquire);
            let counter = &self.active[(e & 1) as usize];
            counter.fetch_add(1, Ordering::AcqRel);
            if self.epoch.load(Ordering::Acquire) == e {
                return Transaction { counter };
            }
            // A drain moved on meanwhile: count in the new epoch instead.
            counter.fetch_sub(1, Ordering::Release);
        }
    }

    /// Waits until every transaction that began before this call has ended. Call after the
    /// IOTLB invalidation: transactions that begin later translate afresh.
    pub fn drain(&self) {
        let e = self.epoch.fetch_add(1, Ordering::AcqRel);
        let old = &self.active[(e & 1) as usize];
        let mut spins = 0u32;
        while old.load(Ordering::Acquire) != 0 {
            if spins < 1000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Transactions in flight now (for tests and diagnostics).
    #[must_use]
    pub fn active(&self) -> u64 {
        self.active[0].load(Ordering::Acquire) + self.active[1].load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn drain_without_transactions_returns_at_once() {
        let f = InFlight::default();
        f.drain();
        f.drain();
        assert_eq!(f.active(), 0);
    }

    #[test]
    fn drain_waits_for_a_transaction_begun_before_it_and_not_for_later_ones() {
        let f = Arc::new(InFlight::default());
        let t = f.enter();
        let ended = Arc::new(AtomicBool::new(false));
        let (f2, ended2) = (f.clone(), ended.clone());
        let h = std::thread::spawn(move || {
            f2.drain();
            // The transaction begun before the drain has ended by now.
            assert!(ended2.load(Ordering::Acquire));
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        ended.store(true, Ordering::Release);
        drop(t);
        h.join().unwrap();
        // A transaction begun after a drain is not waited for by it, only by the next one.
        let later = f.enter();
        assert_eq!(f.active(), 1);
        drop(later);
        f.drain();
    }
}
