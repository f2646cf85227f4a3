//! Hardware dirty tracking on stage-1 leaves (`arm_lpae_read_and_clear_dirty`, v6.18; merged in
//! v6.11 by 4fe88fd8b4ae "iommu/io-pgtable-arm: Add read_and_clear_dirty() support").
//!
//! With [`crate::Quirks::ARM_HD`] every writable leaf carries DBM and starts *dirty* (AP\[2\]
//! clear). A device write through a clean leaf clears AP\[2\] atomically (done by the walker in
//! [`crate::Domain::translate`]); [`IoPageTable::read_and_clear_dirty`] reports dirty leaves and
//! sets AP\[2\] again with an atomic OR, never a plain store, because a device may be updating the
//! same word. Cleaning must be followed by an IOTLB sync of the recorded ranges, or writes
//! through a cached dirty translation go unrecorded (iommufd's `iommu_iotlb_sync` after the
//! walk); the gather argument collects them.
//!
//! Differences from `arm_lpae_read_and_clear_dirty`: a query that starts inside a block reports
//! that whole block and carries on at the next, correctly aligned (the kernel's walker keeps the
//! unaligned cursor and can skip the tail); a split block keeps its DBM. Both are listed in
//! docs/SEMANTICS.md, "The page table".

use std::sync::atomic::Ordering;

use crate::addr::{last_of, Iova};
use crate::cfg::Format;
use crate::error::Error;
use crate::pte;
use crate::table::{Holes, IoPageTable};
use crate::tlb::Gather;

bitflags::bitflags! {
    /// Flags of a dirty query (`IOMMU_DIRTY_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct DirtyFlags: u32 {
        /// Report without cleaning (`IOMMU_DIRTY_NO_CLEAR`).
        const NO_CLEAR = 1 << 0;
    }
}

impl IoPageTable {
    /// `arm_lpae_read_and_clear_dirty`: calls `record(iova, len)` for every writable-dirty leaf
    /// overlapping `[iova, iova + size)` (whole leaves: a dirty 2M block reports 2M) and, unless
    /// `NO_CLEAR`, makes it writable-clean. Recorded ranges are added to `gather`, which the
    /// caller must sync (unless `NO_CLEAR`) before relying on new writes being recorded.
    ///
    /// # Errors
    /// - [`Error::EmptyRange`] for `size == 0`;
    /// - [`Error::DirtyOutOfRange`] if the range wraps or leaves the input range;
    /// - [`Error::DirtyUnsupported`] for a stage-2 table;
    /// - [`Error::Hole`] at the first unmapped address. Leaves before it have already been
    ///   reported and cleaned, as in the kernel.
    pub fn read_and_clear_dirty(
        &self,
        iova: Iova,
        size: u64,
        flags: DirtyFlags,
        gather: &mut Gather,
        record: &mut dyn FnMut(Iova, u64),
    ) -> Result<(), Error> {
        if size == 0 {
            return Err(Error::EmptyRange);
        }
        let geo = self.geometry();
        let last = last_of(iova.raw(), size)
            .filter(|&l| geo.iova_in_range(iova.raw()) && geo.iova_in_range(l))
            .ok_or(Error::DirtyOutOfRange { iova, size })?;
        if geo.format != Format::ArmLpaeS1 {
            return Err(Error::DirtyUnsupported);
        }
        let no_clear = flags.contains(DirtyFlags::NO_CLEAR);
        let result =
            self.for_each_leaf(iova.raw(), last, Holes::Fail, &mut |slot, p, base, lvl| {
                if !pte::is_writable_dirty(p) {
                    return;
                }
                let len = geo.block_size(lvl);
                if !no_clear {
                    slot.fetch_or(pte::AP_RDONLY, Ordering::AcqRel);
                }
                record(Iova(base), len);
                gather.add_range(Iova(base), len);
            });
        result.map_err(|at| Error::Hole { iova: Iova(at) })
    }

    /// Cleans every DBM leaf of the table (what enabling dirty tracking does first: with
    /// `IO_PGTABLE_QUIRK_ARM_HD` every writable mapping starts dirty; iommufd's
    /// `iopt_set_dirty_tracking`, v6.18). The caller flushes the TLB afterwards.
    /// Returns the number of leaves that were dirty.
    pub fn clear_all_dirty(&self) -> u64 {
        let geo = self.geometry();
        if geo.format != Format::ArmLpaeS1 {
            return 0;
        }
        let span = 1u64 << geo.ias;
        let (start, last) = if geo.iova_in_range(0) {
            (0, span - 1)
        } else {
            (span.wrapping_neg(), u64::MAX)
        };
        let mut n = 0;
        let _ = self.for_each_leaf(start, last, Holes::Skip, &mut |slot, p, _, _| {
            if pte::is_writable_dirty(p) {
                slot.fetch_or(pte::AP_RDONLY, Ordering::AcqRel);
                n += 1;
            }
        });
        n
    }
}
