//! One mapping (`struct vfio_dma`, v6.18) and the tree of them.
//!
//! Mappings are keyed by their first IOVA in a `BTreeMap` and never merged. Ranges here use an
//! **inclusive** last byte (`iova + size - 1`), so a mapping that ends at `u64::MAX` is found like
//! any other (the v6.18-rc4 overflow series: "vfio/type1: sanitize for overflow using
//! check_*_overflow()" and "vfio/type1: handle DMA map/unmap up to the addressable limit").

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::dirty::DirtyBitmap;
use crate::mm::{LockCapability, Mm};
use crate::pinset::PinSet;

use crate::release::Runs;

/// Device access of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DmaProt {
    /// `IOMMU_READ`: the device may read.
    pub(crate) read: bool,
    /// `IOMMU_WRITE`: the device may write.
    pub(crate) write: bool,
}

/// A mapping.
#[derive(Debug)]
pub(crate) struct Dma {
    /// First IOVA.
    pub(crate) iova: u64,
    /// Bytes mapped (during MAP it grows run by run).
    pub(crate) size: u64,
    /// User address of the first byte.
    pub(crate) vaddr: u64,
    /// Device access.
    pub(crate) prot: DmaProt,
    /// Pinned and mapped into every IOMMU domain.
    pub(crate) iommu_mapped: bool,
    /// The owner's capability at MAP time.
    pub(crate) lock_cap: LockCapability,
    /// `UNMAP_DMA|VADDR` invalidated the vaddr.
    pub(crate) vaddr_invalid: bool,
    /// The owner (v6.3+ `dma->mm`): charges go here, and new pins come from here.
    pub(crate) mm: Arc<Mm>,
    /// The address space that pinned `runs` (differs from `mm` after a vaddr update from
    /// another owner: the pages stay pinned where they were pinned).
    pub(crate) pinned_by: Arc<Mm>,
    /// Runs pinned for the IOMMU domains, in IOVA order, covering `size`.
    pub(crate) runs: Runs,
    /// Pages charged to `mm` on behalf of this mapping (`dma->locked_vm`).
    pub(crate) locked_vm: u64,
    /// Pages pinned by devices (`dma->pfn_list`), stored densely ([`PinSet`]).
    pub(crate) pfn_list: PinSet,
    /// Dirty bitmap (one bit per minimum IOMMU page) while tracking is on.
    pub(crate) bitmap: Option<DirtyBitmap>,
}

impl Dma {
    /// Pages pinned by devices in `[iova, iova + len)` (device pins of reserved pages are
    /// refused, as `vfio_iommu_type1_pin_pages` refuses a `!pfn_valid` page).
    #[must_use]
    pub(crate) fn device_pinned_in(&self, iova: u64, len: u64) -> u64 {
        self.pfn_list.count_in(iova, len)
    }

    /// Inclusive last IOVA (`size > 0` for every linked mapping).
    #[must_use]
    pub(crate) fn last(&self) -> u64 {
        self.iova + (self.size - 1)
    }
}

/// The mapping tree (`iommu->dma_list`).
#[derive(Debug, Default)]
pub(crate) struct DmaTree {
    map: BTreeMap<u64, Dma>,
}

impl DmaTree {
    /// Number of mappings.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Inserts a mapping (the caller checked there is no overlap).
    pub(crate) fn insert(&mut self, dma: Dma) {
        self.map.insert(dma.iova, dma);
    }

    /// Removes the mapping starting at `iova`.
    pub(crate) fn remove(&mut self, iova: u64) -> Option<Dma> {
        self.map.remove(&iova)
    }

    /// The mapping starting at `iova`.
    #[must_use]
    pub(crate) fn get(&self, iova: u64) -> Option<&Dma> {
        self.map.get(&iova)
    }

    /// The mapping starting at `iova`, mutably.
    pub(crate) fn get_mut(&mut self, iova: u64) -> Option<&mut Dma> {
        self.map.get_mut(&iova)
    }

    /// `vfio_find_dma`: some mapping overlapping `[start, last]` (the highest one).
    #[must_use]
    pub(crate) fn find(&self, start: u64, last: u64) -> Option<&Dma> {
        // Mappings do not overlap: the one starting last at or below `last` is the only
        // candidate that can still reach `start`. One tree query.
        self.map
            .range(..=last)
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.last() >= start)
    }

    /// The first mapping starting in `[start, last]`.
    #[must_use]
    pub(crate) fn first_starting_in(&self, start: u64, last: u64) -> Option<&Dma> {
        self.map.range(start..=last).next().map(|(_, d)| d)
    }

    /// `vfio_find_dma_first_node`: the lowest mapping whose end is ≥ `start` and whose start is
    /// ≤ `last`.
    #[must_use]
    pub(crate) fn first_overlapping(&self, start: u64, last: u64) -> Option<&Dma> {
        if let Some((_, d)) = self.map.range(..=start).next_back() {
            if d.last() >= start {
                return Some(d);
            }
        }
        self.map.range(start..=last).next().map(|(_, d)| d)
    }

    /// Starts of every mapping overlapping `[start, last]`, ascending.
    #[must_use]
    pub(crate) fn overlapping_keys(&self, start: u64, last: u64) -> Vec<u64> {
        let first = match self.first_overlapping(start, last) {
            Some(d) => d.iova,
            None => return Vec::new(),
        };
        self.map.range(first..=last).map(|(&k, _)| k).collect()
    }

    /// The mapping containing `iova`.
    #[must_use]
    pub(crate) fn containing(&self, iova: u64) -> Option<&Dma> {
        self.map
            .range(..=iova)
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.last() >= iova)
    }

    /// The mapping containing `iova`, mutably.
    pub(crate) fn containing_mut(&mut self, iova: u64) -> Option<&mut Dma> {
        self.map
            .range_mut(..=iova)
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.last() >= iova)
    }

    /// All mappings, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Dma> {
        self.map.values()
    }

    /// All mappings, ascending, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Dma> {
        self.map.values_mut()
    }

    /// All keys, ascending.
    #[must_use]
    pub(crate) fn keys(&self) -> Vec<u64> {
        self.map.keys().copied().collect()
    }
}
