//! `struct iommu_iotlb_gather` (`include/linux/iommu.h`, v6.18): the leaf range to invalidate,
//! with an inclusive end.

use crate::addr::Iova;

/// Leaf invalidations collected during an unmap, flushed by [`super::FlushOps::iotlb_sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    /// First byte to invalidate (`u64::MAX` when empty).
    pub start: u64,
    /// Last byte to invalidate, inclusive (0 when empty).
    pub end: u64,
    /// Granule of the gathered leaves (0 when empty).
    pub pgsize: u64,
    /// The invalidation is deferred to a flush queue: the page table adds no pages (lazy mode).
    pub queued: bool,
}

impl Default for Gather {
    fn default() -> Self {
        Self::new()
    }
}

impl Gather {
    /// An empty gather for strict invalidation (`iommu_iotlb_gather_init`).
    #[must_use]
    pub const fn new() -> Self {
        Gather {
            start: u64::MAX,
            end: 0,
            pgsize: 0,
            queued: false,
        }
    }

    /// An empty gather whose leaf invalidations are deferred (`gather->queued = true`).
    #[must_use]
    pub const fn queued() -> Self {
        Gather {
            queued: true,
            ..Self::new()
        }
    }

    /// Empties the gather, keeping `queued`.
    pub fn reset(&mut self) {
        *self = Gather {
            queued: self.queued,
            ..Self::new()
        };
    }

    /// True if nothing has been gathered.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.end == 0 && self.start == u64::MAX
    }

    /// `iommu_iotlb_gather_is_disjoint`.
    #[must_use]
    pub fn is_disjoint(&self, iova: Iova, size: u64) -> bool {
        let iova = iova.raw();
        self.end != 0
            && (iova.saturating_add(size) < self.start || iova > self.end.saturating_add(1))
    }

    /// True if adding a `size` page at `iova` first needs a sync: a different page size or a
    /// disjoint range.
    #[must_use]
    pub fn needs_sync_before(&self, iova: Iova, size: u64) -> bool {
        (self.pgsize != 0 && self.pgsize != size) || self.is_disjoint(iova, size)
    }

    /// `iommu_iotlb_gather_add_range`.
    pub fn add_range(&mut self, iova: Iova, size: u64) {
        if size == 0 {
            return;
        }
        let last = iova.raw().saturating_add(size - 1);
        self.start = self.start.min(iova.raw());
        self.end = self.end.max(last);
    }

    /// Records a page without the sync check (use [`super::FlushOps::tlb_add_page`]).
    pub fn add_page(&mut self, iova: Iova, size: u64) {
        self.pgsize = size;
        self.add_range(iova, size);
    }

    /// The gathered range as `(start, length)`, or `None` when empty.
    #[must_use]
    pub fn range(&self) -> Option<(Iova, u64)> {
        if self.is_empty() {
            None
        } else {
            Some((Iova(self.start), (self.end - self.start).wrapping_add(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_pages_merge_and_disjoint_pages_need_sync() {
        let mut g = Gather::new();
        assert!(g.is_empty());
        g.add_page(Iova(0x1000), 0x1000);
        assert!(!g.needs_sync_before(Iova(0x2000), 0x1000));
        g.add_page(Iova(0x2000), 0x1000);
        assert_eq!(g.range(), Some((Iova(0x1000), 0x2000)));
        assert!(g.needs_sync_before(Iova(0x10_0000), 0x1000), "disjoint");
        assert!(
            g.needs_sync_before(Iova(0x3000), 0x20_0000),
            "other page size"
        );
        g.reset();
        assert!(g.is_empty());
    }
}
