//! `struct iommu_flush_ops` (`include/linux/io-pgtable.h`, v6.18) plus the driver's `iotlb_sync`
//! (`iommu_iotlb_sync` in `include/linux/iommu.h`; SMMUv3's `arm_smmu_iotlb_sync`).

use std::fmt::Debug;

use super::gather::Gather;
use crate::addr::Iova;

/// The TLB callbacks a page table drives. All are synchronous: when one returns, no walker
/// uses the translations or walk-cache entries it covers.
pub trait FlushOps: Send + Sync + Debug {
    /// Invalidates every translation of the context (`tlb_flush_all`).
    fn tlb_flush_all(&self);

    /// Invalidates walk caches (and leaf entries) for `[iova, iova + size)` before the tables
    /// under it are freed (`tlb_flush_walk`).
    fn tlb_flush_walk(&self, iova: Iova, size: u64, granule: u64);

    /// Invalidates the leaf range gathered in `gather` (`iommu_ops.iotlb_sync`).
    fn iotlb_sync(&self, gather: &Gather);

    /// True if [`FlushOps::tlb_add_page`] is the provided one (gather the page, syncing first if
    /// the gather cannot absorb it), so the page table may gather a run of cleared leaves
    /// inline instead of calling it per leaf. Only implementations that keep the provided
    /// `tlb_add_page` may return `true`; the default, `false`, is always correct.
    fn add_page_is_gather(&self) -> bool {
        false
    }

    /// Queues a leaf invalidation of `[iova, iova + granule)` (`tlb_add_page`), syncing first if
    /// the gather cannot absorb it (`iommu_iotlb_gather_add_page`).
    fn tlb_add_page(&self, gather: &mut Gather, iova: Iova, granule: u64) {
        if gather.needs_sync_before(iova, granule) {
            self.iotlb_sync(gather);
            gather.reset();
        }
        gather.add_page(iova, granule);
    }
}

/// Flush ops that do nothing: for a table no walker caches (the kernel selftests' dummies).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFlush;

impl FlushOps for NoFlush {
    fn add_page_is_gather(&self) -> bool {
        true
    }
    fn tlb_flush_all(&self) {}
    fn tlb_flush_walk(&self, _iova: Iova, _size: u64, _granule: u64) {}
    fn iotlb_sync(&self, _gather: &Gather) {}
}
