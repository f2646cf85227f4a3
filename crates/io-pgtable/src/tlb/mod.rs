//! TLB maintenance: the flush-ops interface the page table drives, the gather that batches leaf
//! invalidations, an IOTLB model, the flush queue for lazy invalidation, and the drain of
//! device transactions an invalidation waits for.
//!
//! The page table calls [`FlushOps`] exactly where `io-pgtable-arm.c` (v6.18) calls
//! `io_pgtable_tlb_*`: a synchronous walk flush before any table is freed, a leaf
//! invalidation queued in a [`Gather`] for every cleared leaf (skipped when the gather is
//! `queued`, i.e. lazy), and a flush-all when the table is dropped.

mod flush_queue;
mod gather;
mod inflight;
mod iotlb;
mod ops;

pub use flush_queue::{Clock, FlushQueue, FlushQueueConfig, SystemClock};
pub use gather::Gather;
pub use inflight::{InFlight, Transaction};
pub use iotlb::{Iotlb, IotlbConfig, IotlbStats};
pub use ops::{FlushOps, NoFlush};
