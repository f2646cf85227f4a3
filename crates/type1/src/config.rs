//! Container options: the type1 module parameters (`dma_entry_limit`,
//! `allow_unsafe_interrupts`, v6.18) and our extensions (IOTLB invalidation and sizing, the lazy
//! flush clock, the dirty reporting mode, fault injection).

use std::sync::Arc;

use io_pgtable::tlb::{Clock, IotlbConfig};
use io_pgtable::InvalidationPolicy;

use crate::api::DEFAULT_DMA_ENTRY_LIMIT;
use crate::dirty::DirtyMode;

/// Whether groups without isolated MSI may attach (`allow_unsafe_interrupts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interrupts {
    /// Refuse them with `EPERM` (the kernel default).
    #[default]
    RequireIsolated,
    /// Accept them.
    AllowUnsafe,
}

/// Allocation failures to inject, for fault-injection tests: after `n` more successful
/// allocations of that kind, every further one fails (`ENOMEM`). `None`: no injection.
/// Public with the `test-support` feature only (`Container::set_fault_plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]
pub struct FaultPlan {
    /// Page-table pages, per IOMMU domain (existing domains and every domain created later).
    pub tables: Option<u64>,
    /// Dirty bitmaps.
    pub bitmaps: Option<u64>,
}

/// Container options (module parameters and our extensions).
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// `dma_entry_limit`, read once when the container's IOMMU is set.
    pub dma_entry_limit: u32,
    /// `allow_unsafe_interrupts`.
    pub interrupts: Interrupts,
    /// IOTLB invalidation of every domain (strict, as VFIO does, or lazy).
    pub invalidation: InvalidationPolicy,
    /// IOTLB sizing of every domain.
    pub iotlb: IotlbConfig,
    /// Time source of lazy flush queues.
    pub clock: Arc<dyn Clock>,
    /// How IOMMU-backed groups' dirty pages are reported.
    pub dirty_mode: DirtyMode,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            dma_entry_limit: DEFAULT_DMA_ENTRY_LIMIT,
            interrupts: Interrupts::default(),
            invalidation: InvalidationPolicy::Strict,
            iotlb: IotlbConfig::default(),
            clock: Arc::new(io_pgtable::tlb::SystemClock::default()),
            dirty_mode: DirtyMode::KernelExact,
        }
    }
}
