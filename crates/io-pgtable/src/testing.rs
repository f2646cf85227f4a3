//! Test doubles for users of this crate: flush ops that record every call, and a clock moved by
//! hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::addr::Iova;
use crate::tlb::{Clock, FlushOps, Gather};

/// One call a page table made to its flush ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlbEvent {
    /// `tlb_flush_all`.
    FlushAll,
    /// `tlb_flush_walk(iova, size, granule)`.
    FlushWalk {
        /// Start.
        iova: u64,
        /// Size.
        size: u64,
        /// Granule.
        granule: u64,
    },
    /// `iotlb_sync` of a gather covering `[start, end]`.
    Sync {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
        /// Gathered page size.
        pgsize: u64,
    },
    /// `tlb_add_page(iova, size)`.
    AddPage {
        /// Start.
        iova: u64,
        /// Size.
        size: u64,
    },
}

/// Flush ops that log every call.
#[derive(Debug, Default)]
pub struct RecordingFlushOps {
    events: Mutex<Vec<TlbEvent>>,
}

impl RecordingFlushOps {
    fn push(&self, e: TlbEvent) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(e);
    }

    /// Takes the events logged so far.
    pub fn take(&self) -> Vec<TlbEvent> {
        std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl FlushOps for RecordingFlushOps {
    fn tlb_flush_all(&self) {
        self.push(TlbEvent::FlushAll);
    }
    fn tlb_flush_walk(&self, iova: Iova, size: u64, granule: u64) {
        self.push(TlbEvent::FlushWalk {
            iova: iova.raw(),
            size,
            granule,
        });
    }
    fn iotlb_sync(&self, gather: &Gather) {
        if !gather.is_empty() {
            self.push(TlbEvent::Sync {
                start: gather.start,
                end: gather.end,
                pgsize: gather.pgsize,
            });
        }
    }
    fn tlb_add_page(&self, gather: &mut Gather, iova: Iova, granule: u64) {
        self.push(TlbEvent::AddPage {
            iova: iova.raw(),
            size: granule,
        });
        if gather.needs_sync_before(iova, granule) {
            self.iotlb_sync(gather);
            gather.reset();
        }
        gather.add_page(iova, granule);
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(n, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}
