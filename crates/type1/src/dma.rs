//! One mapping (`struct vfio_dma`, v6.18) and the tree of them ([`tree`]).
//!
//! Mappings are keyed by their first IOVA and never merged. Ranges here use an
//! **inclusive** last byte (`iova + size - 1`), so a mapping that ends at `u64::MAX` is found like
//! any other (the v6.18-rc4 overflow series: "vfio/type1: sanitize for overflow using
//! check_*_overflow()" and "vfio/type1: handle DMA map/unmap up to the addressable limit").

use std::sync::Arc;

use crate::dirty::DirtyBitmap;
use crate::mm::{LockCapability, Mm};
use crate::pinset::PinSet;

use crate::release::Runs;

mod tree;

pub(crate) use tree::DmaTree;

/// Device access of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DmaProt {
    /// `IOMMU_READ`: the device may read.
    pub(crate) read: bool,
    /// `IOMMU_WRITE`: the device may write.
    pub(crate) write: bool,
}

impl DmaProt {
    /// As the API's permission type.
    pub(crate) fn perm(self) -> crate::api::Perm {
        let mut p = crate::api::Perm::empty();
        p.set(crate::api::Perm::READ, self.read);
        p.set(crate::api::Perm::WRITE, self.write);
        p
    }
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
    /// `UNMAP_DMA|VADDR` invalidated the vaddr. Private: only the tree changes it
    /// ([`DmaTree::set_vaddr_invalid`]), keeping its count.
    vaddr_invalid: bool,
    /// The owner (v6.3+ `dma->mm`): charges go here, and new pins come from here.
    pub(crate) mm: Arc<Mm>,
    /// The address space that pinned `runs` when it is not `mm` (after a vaddr update from
    /// another owner the pages stay pinned where they were pinned); `None` while it is `mm`,
    /// so a MAP takes one reference to its owner, not two. See [`Dma::pinned_by`].
    pinned_by: Option<Arc<Mm>>,
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
    /// A mapping of nothing yet at `iova` (it grows as MAP pins and maps it), owned by `mm`,
    /// pinned from `mm`, with the owner's capability now (`dma->lock_cap =
    /// capable(CAP_IPC_LOCK)` in `vfio_dma_do_map`, v6.18).
    pub(crate) fn new(iova: u64, vaddr: u64, prot: DmaProt, mm: &Arc<Mm>) -> Self {
        Dma {
            iova,
            size: 0,
            vaddr,
            prot,
            iommu_mapped: false,
            lock_cap: mm.capability(),
            vaddr_invalid: false,
            mm: mm.clone(),
            pinned_by: None,
            runs: Runs::new(),
            locked_vm: 0,
            pfn_list: PinSet::new(),
            bitmap: None,
        }
    }

    /// The address space that pinned `runs`.
    #[must_use]
    pub(crate) fn pinned_by(&self) -> &Arc<Mm> {
        self.pinned_by.as_ref().unwrap_or(&self.mm)
    }

    /// Makes `mm` the owner (`vfio_change_dma_owner`): later charges and pins go to it, while the
    /// pages pinned so far stay pinned by the address space that pinned them.
    pub(crate) fn set_owner(&mut self, mm: Arc<Mm>) {
        let old = std::mem::replace(&mut self.mm, mm);
        if self.pinned_by.is_none() {
            self.pinned_by = Some(old);
        }
    }

    /// The runs are now pinned from the owner (replay pinned them afresh from `mm`).
    pub(crate) fn pinned_from_owner(&mut self) {
        self.pinned_by = None;
    }

    /// `UNMAP_DMA|VADDR` invalidated the vaddr (and no MAP|VADDR has given a new one yet).
    #[must_use]
    pub(crate) fn vaddr_invalid(&self) -> bool {
        self.vaddr_invalid
    }

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
