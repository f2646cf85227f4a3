//! `struct vfio_iommu`: the type1 backend of one container after `VFIO_SET_IOMMU`
//! (`drivers/vfio/vfio_iommu_type1.c`, v6.18). Our rules and deliberate differences are listed in
//! docs/SEMANTICS.md, "The container".
//!
//! Every public operation here runs under the container's lock, in the kernel's check order. The
//! mapping tree is validated before it is mutated, and multi-step operations (MAP pinning run by
//! run, replay into a new domain, VADDR invalidation) unwind completely on failure.
//!
//! Pins of IOMMU-backed mappings are recorded as physical runs at MAP time. Unmapping hands each
//! domain a token owning those runs; the runs are unpinned and uncharged when the last domain
//! releases the token, which under strict invalidation is right after the IOTLB sync, and under
//! lazy invalidation after the flush that covers the range (never before).
//!
//! Differences from the kernel, all deliberate:
//! - replay pins from the mapping's owner (`dma->mm`), not from the attaching task;
//! - a group description with an empty or wrapping reserved region is refused (`EINVAL`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_pgtable::{Domain, DomainConfig, InvalidationPolicy, Iova, Prot};

use crate::dirty::{DirtyBitmap, DirtyMode, DIRTY_BITMAP_PAGES_MAX};
use crate::dma::{Dma, DmaProt, DmaTree};
use crate::error::{Error, Result};
use crate::group::{GroupId, GroupKind, GroupSpec, IommuDesc, ResvKind};
use crate::iova_list::IovaList;
use crate::mm::{Access, Mm, PinnedRun};
use crate::uapi::raw;

pub(crate) use crate::api::{
    Info, MapDma, MapFlags, UnmapDma, UnmapFlags, Version, DIRTY_BITMAP_SIZE_MAX, PAGE_MASK,
    PAGE_SIZE, UNMAP_RETRIES,
};
pub(crate) use crate::config::{ContainerConfig, FaultPlan, Interrupts};
pub(crate) use crate::release::{release_pins, PinRelease, Runs, Token};

mod groups;
mod invariants;
mod pin;
mod tracking;
mod unmap;

pub(crate) use tracking::BitmapDest;

/// State carried across the passes of one unmap.
#[derive(Debug, Default)]
pub(crate) struct UnmapProgress {
    pub(crate) unmapped: u64,
    pub(crate) passes: u32,
    dma_last: Option<u64>,
    retries: u32,
}

/// What one unmap pass asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UnmapStep {
    /// Finished: bytes unmapped.
    Done(u64),
    /// Notify every device that `[iova, iova + size)` is going away, then run another pass.
    Notify { iova: u64, size: u64 },
}

/// Replay progress of one mapping: bytes mapped into the new domain so far, and the runs pinned
/// for it (only for mappings no domain had mapped).
#[derive(Debug)]
struct Replayed {
    iova: u64,
    mapped: u64,
    fresh: Option<(Runs, u64)>,
}

/// A group attached to the backend (`struct vfio_iommu_group`).
#[derive(Debug, Clone)]
pub(crate) struct GroupState {
    pub(crate) id: GroupId,
    pub(crate) pinned_page_dirty_scope: bool,
    pub(crate) desc: Option<IommuDesc>,
    /// Cleared when the group detaches: its devices' DMA engines stop.
    pub(crate) attached: Arc<AtomicBool>,
}

/// `struct vfio_domain`.
#[derive(Debug)]
pub(crate) struct DomainEntry {
    pub(crate) desc: IommuDesc,
    pub(crate) domain: Arc<Domain<Token>>,
    pub(crate) groups: Vec<GroupState>,
}

/// `struct vfio_iommu`.
#[derive(Debug)]
pub(crate) struct Type1 {
    pub(crate) version: Version,
    cfg: ContainerConfig,
    /// The mappings, with the free-slot and invalid-vaddr counts.
    pub(crate) dmas: DmaTree,
    pub(crate) pgsize_bitmap: u64,
    pub(crate) domains: Vec<DomainEntry>,
    pub(crate) emulated: Vec<GroupState>,
    pub(crate) iova_list: IovaList,
    pub(crate) num_non_pinned_groups: u32,
    pub(crate) dirty_tracking: bool,
    faults: FaultPlan,
}

fn dma_prot(p: DmaProt) -> Prot {
    let mut prot = Prot::CACHE;
    if p.read {
        prot |= Prot::READ;
    }
    if p.write {
        prot |= Prot::WRITE;
    }
    prot
}

fn run_pages(runs: &[PinnedRun]) -> u64 {
    runs.iter().filter(|r| !r.reserved).map(|r| r.npages).sum()
}

impl Type1 {
    /// `vfio_iommu_type1_open`.
    pub(crate) fn new(version: Version, cfg: ContainerConfig) -> Self {
        Type1 {
            version,
            dmas: DmaTree::new(cfg.dma_entry_limit),
            cfg,
            pgsize_bitmap: PAGE_MASK,
            domains: Vec::new(),
            emulated: Vec::new(),
            iova_list: IovaList::default(),
            num_non_pinned_groups: 0,
            dirty_tracking: false,
            faults: FaultPlan::default(),
        }
    }

    /// Installs a fault plan (tests only; see [`FaultPlan`]).
    #[cfg(feature = "test-support")]
    pub(crate) fn set_faults(&mut self, plan: FaultPlan) {
        self.faults = plan;
        for d in &self.domains {
            d.domain.table().set_table_alloc_budget(plan.tables);
        }
    }

    /// The dirty reporting mode.
    pub(crate) fn dirty_mode(&self) -> DirtyMode {
        self.cfg.dirty_mode
    }

    /// `1 << __ffs(pgsize_bitmap)`.
    #[must_use]
    pub(crate) fn min_pgsize(&self) -> u64 {
        1u64 << self.pgsize_bitmap.trailing_zeros()
    }

    /// Runs every lazy domain's flush-queue timer, releasing what it covers.
    pub(crate) fn poll(&self) {
        for d in &self.domains {
            drop(d.domain.poll());
        }
    }

    /// `vfio_iommu_type1_check_extension` with a backend (v6.18).
    pub(crate) fn check_extension(&self, ext: u64) -> u32 {
        match u32::try_from(ext) {
            Ok(raw::VFIO_TYPE1_IOMMU | raw::VFIO_TYPE1v2_IOMMU | raw::VFIO_UNMAP_ALL) => 1,
            Ok(raw::VFIO_UPDATE_VADDR) => u32::from(self.emulated.is_empty()),
            Ok(raw::VFIO_DMA_CC_IOMMU) => u32::from(
                self.domains
                    .iter()
                    .all(|d| d.desc.coherency == crate::group::CacheCoherency::Enforced),
            ),
            _ => 0,
        }
    }

    /// `vfio_iommu_type1_check_extension` before `VFIO_SET_IOMMU` (`iommu == NULL`).
    pub(crate) fn check_extension_unset(ext: u64) -> u32 {
        match u32::try_from(ext) {
            Ok(raw::VFIO_TYPE1_IOMMU | raw::VFIO_TYPE1v2_IOMMU | raw::VFIO_UNMAP_ALL) => 1,
            _ => 0,
        }
    }

    /// `vfio_update_pgsize_bitmap`.
    fn update_pgsize_bitmap(&mut self) {
        if self.domains.is_empty() {
            self.pgsize_bitmap = PAGE_MASK;
            return;
        }
        let mut b = u64::MAX;
        for d in &self.domains {
            b &= d.domain.table().geometry().pgsize_bitmap;
        }
        if b & !PAGE_MASK != 0 {
            b &= PAGE_MASK;
            b |= PAGE_SIZE;
        }
        self.pgsize_bitmap = b;
    }

    // ----- MAP_DMA (`vfio_iommu_type1_map_dma`) -----

    /// `vfio_dma_do_map` (v6.18), all of its checks in its order.
    pub(crate) fn map_dma(&mut self, req: &MapDma, mm: &Arc<Mm>) -> Result<()> {
        let MapDma {
            vaddr,
            iova,
            size,
            flags,
        } = *req;
        let (iova, vaddr) = (iova.raw(), vaddr.raw());
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let last = iova.checked_add(size - 1);
        let vlast = vaddr.checked_add(size - 1);
        let (Some(last), Some(_)) = (last, vlast) else {
            let start = if last.is_none() { iova } else { vaddr };
            return Err(Error::Overflow { start, size });
        };
        let prot = DmaProt {
            read: flags.contains(MapFlags::READ),
            write: flags.contains(MapFlags::WRITE),
        };
        let has_prot = prot.read || prot.write;
        let vaddr_update = flags.contains(MapFlags::VADDR);
        if has_prot == vaddr_update {
            return Err(Error::InvalidProtection);
        }
        let pgsize = self.min_pgsize();
        for (what, value) in [("size", size), ("iova", iova), ("vaddr", vaddr)] {
            if value & (pgsize - 1) != 0 {
                return Err(Error::Unaligned {
                    what,
                    value,
                    align: pgsize,
                });
            }
        }
        if vaddr_update {
            return self.update_vaddr(iova, size, last, vaddr, mm);
        }
        // `vfio_find_dma` (EEXIST), then `dma_avail` (ENOSPC), in one search that also finds
        // where the mapping goes.
        let at = self.dmas.vacancy(iova, last)?;
        if !self.iova_list.contains(iova, last) {
            return Err(Error::OutsideIovaRange { iova, size });
        }
        // `dma->lock_cap = capable(CAP_IPC_LOCK)`: read now, at each MAP_DMA, and used by every
        // later charge for this mapping (pins, replay, emulated pins).
        let mut dma = Dma::new(iova, vaddr, prot, mm);
        if self.domains.is_empty() {
            dma.size = size;
        } else if let Err(e) = self.pin_map(&mut dma, size) {
            self.unmap_unpin(&mut dma);
            return Err(e);
        } else {
            dma.iommu_mapped = true;
        }
        if self.dirty_tracking {
            match self.bitmap_for(&dma) {
                Ok(b) => {
                    dma.bitmap = Some(b);
                    self.bitmap_allocated();
                }
                Err(e) => {
                    self.unmap_unpin(&mut dma);
                    return Err(e);
                }
            }
        }
        // Nothing changed the tree since the search (the lock is held), so this cannot fail.
        if let Some(mut dma) = self.dmas.insert(at, dma) {
            self.unmap_unpin(&mut dma);
            self.retire_dma(dma);
            return Err(Error::Exists { iova, size });
        }
        Ok(())
    }

    /// `vfio_dma_bitmap_alloc`: a zeroed bitmap for `dma` at the current page size.
    pub(crate) fn bitmap_for(&self, dma: &Dma) -> Result<DirtyBitmap> {
        let npages = dma.size >> self.min_pgsize().trailing_zeros();
        if npages > DIRTY_BITMAP_PAGES_MAX {
            return Err(Error::TooLargeForBitmap { iova: dma.iova });
        }
        if let Some(n) = self.faults.bitmaps {
            if n == 0 {
                return Err(Error::NoMemory);
            }
        }
        DirtyBitmap::new(npages)
    }

    /// Counts one successful bitmap allocation against the fault plan.
    pub(crate) fn bitmap_allocated(&mut self) {
        if let Some(n) = self.faults.bitmaps.as_mut() {
            *n = n.saturating_sub(1);
        }
    }

    /// The VADDR branch of `vfio_dma_do_map` (`VFIO_DMA_MAP_FLAG_VADDR`, with
    /// `vfio_change_dma_owner` since v6.3).
    fn update_vaddr(
        &mut self,
        iova: u64,
        size: u64,
        last: u64,
        vaddr: u64,
        mm: &Arc<Mm>,
    ) -> Result<()> {
        let Some(found) = self.dmas.find(iova, last) else {
            return Err(Error::NoMapping { iova });
        };
        if !found.vaddr_invalid() || found.iova != iova || found.size != size {
            return Err(Error::VaddrUpdateMismatch { iova });
        }
        let Some(dma) = self.dmas.get_mut(iova) else {
            return Err(Error::NoMapping { iova });
        };
        // vfio_change_dma_owner: move the charge to the new owner first, with the capability
        // the caller has now (`capable(CAP_IPC_LOCK)`), which the mapping keeps from then on.
        if !Arc::ptr_eq(&dma.mm, mm) {
            let lock_cap = mm.capability();
            mm.charge(dma.locked_vm, lock_cap)?;
            dma.mm.uncharge(dma.locked_vm);
            dma.set_owner(mm.clone());
            dma.lock_cap = lock_cap;
        }
        dma.vaddr = vaddr;
        self.dmas.set_vaddr_invalid(iova, false);
        Ok(())
    }

    /// `vfio_pin_map_dma`: pins contiguous runs from the owner and maps each into every domain.
    /// On error `dma` holds what was pinned and mapped so far, for `unmap_unpin`.
    fn pin_map(&self, dma: &mut Dma, size: u64) -> Result<()> {
        let access = if dma.prot.write {
            Access::Write
        } else {
            Access::Read
        };
        let prot = dma_prot(dma.prot);
        while dma.size < size {
            let va = dma.vaddr + dma.size;
            let run = dma
                .mm
                .space()
                .pin_run(va, (size - dma.size) / PAGE_SIZE, access)
                .map_err(|vaddr| Error::Fault { vaddr })?;
            let pages = if run.reserved { 0 } else { run.npages };
            if let Err(e) = dma.mm.charge(pages, dma.lock_cap) {
                dma.mm.space().unpin_run(&run);
                return Err(e);
            }
            let bytes = run.npages * PAGE_SIZE;
            let at = Iova(dma.iova + dma.size);
            for (k, d) in self.domains.iter().enumerate() {
                if let Err(e) = d.domain.map(at, run.pa, bytes, prot) {
                    let token = PinRelease::new(
                        dma.mm.clone(),
                        dma.mm.clone(),
                        smallvec::smallvec![run],
                        pages,
                    );
                    for undo in &self.domains[..k] {
                        drop(undo.domain.unmap(at, bytes, token.clone()));
                    }
                    return Err(match e {
                        io_pgtable::Error::NoMemory => Error::NoMemory,
                        e => Error::Domain(e),
                    });
                }
            }
            dma.runs.push(run);
            dma.locked_vm += pages;
            dma.size += bytes;
        }
        Ok(())
    }

    /// `vfio_unmap_unpin`: removes `dma`'s IOMMU mappings and hands its runs to the domains for
    /// release after invalidation. Pages devices still pin stay charged (the kernel's
    /// `vfio_unpin_pages_remote` netting). With precise dirty tracking, dirty leaves removed are
    /// recorded in the mapping's bitmap as they are cleared.
    pub(crate) fn unmap_unpin(&self, dma: &mut Dma) {
        let runs = std::mem::take(&mut dma.runs);
        let still_charged = if runs.is_empty() {
            0
        } else {
            dma.device_pinned_in(dma.iova, dma.size)
        };
        let pages = run_pages(&runs) - still_charged;
        dma.locked_vm -= pages;
        // One release (`release_pins`), at one of two moments. Strict invalidation: every
        // domain's unmap has synced its IOTLB when it returns, so the pins go right after, with
        // no token to allocate (`None`: no reference count to touch either). Lazy: a token per
        // unmap, released by the last domain's flush.
        let strict = self.cfg.invalidation == InvalidationPolicy::Strict;
        let token = if strict {
            PinRelease::none()
        } else {
            PinRelease::new(dma.pinned_by().clone(), dma.mm.clone(), runs.clone(), pages)
        };
        if dma.size > 0 {
            let shift = self.min_pgsize().trailing_zeros();
            let precise = self.dirty_tracking && self.cfg.dirty_mode == DirtyMode::Precise;
            for d in &self.domains {
                let (iova, size) = (dma.iova, dma.size);
                let u = match dma.bitmap.as_mut() {
                    Some(bm) if precise && d.domain.has_dirty_tracking() => {
                        let mut sink = |at: Iova, len: u64| bm.set_span(iova, shift, at.raw(), len);
                        d.domain
                            .unmap_read_dirty(Iova(iova), size, token.clone(), Some(&mut sink))
                    }
                    _ => d.domain.unmap(Iova(iova), size, token.clone()),
                };
                debug_assert_eq!(u.bytes, size, "domain held a partial mapping");
                drop(u.released);
            }
        }
        if strict {
            release_pins(dma.pinned_by(), &dma.mm, &runs, pages);
        }
        dma.iommu_mapped = false;
    }

    /// `vfio_remove_dma`. Unlike the kernel (which WARNs and leaks them), pins devices still hold
    /// are released here, so nothing stays pinned or charged.
    pub(crate) fn remove_dma(&mut self, key: u64) -> Option<u64> {
        let mut dma = self.dmas.remove(key)?;
        self.unmap_unpin(&mut dma);
        Some(self.retire_dma(dma))
    }

    /// The rest of `vfio_remove_dma` for a mapping already out of the tree (which gave its slot
    /// back and kept its invalid-vaddr count) and through [`Type1::unmap_unpin`]: device pins.
    /// Returns its size.
    pub(crate) fn retire_dma(&self, mut dma: Dma) -> u64 {
        self.release_device_pins(&mut dma);
        dma.size
    }

    /// Drops every device pin of `dma` (only reached when a mapping goes without its devices
    /// having unpinned: release and last-group detach).
    fn release_device_pins(&self, dma: &mut Dma) {
        let accounted = !dma.iommu_mapped;
        for r in dma.pfn_list.drain() {
            pin::return_pin(dma, &r, accounted);
        }
    }

    /// `vfio_iommu_unmap_unpin_all`.
    fn unmap_unpin_all(&mut self) {
        for key in self.dmas.keys() {
            self.remove_dma(key);
        }
    }

    /// `vfio_iommu_unmap_unpin_reaccount`: the last domain goes while emulated groups stay; the
    /// mappings survive unpinned, charged only for externally pinned pages.
    fn unmap_unpin_reaccount(&mut self) {
        for key in self.dmas.keys() {
            let Some(mut dma) = self.dmas.remove(key) else {
                continue;
            };
            self.unmap_unpin(&mut dma);
            // Back where it was: the slot it gave back is free again.
            if let Some(dma) = self.dmas.reinsert(dma) {
                self.retire_dma(dma);
            }
        }
    }

    // ----- GET_INFO (`vfio_iommu_type1_get_info`) -----

    /// The contents of GET_INFO.
    pub(crate) fn info(&self) -> Info {
        Info {
            iova_pgsizes: self.pgsize_bitmap,
            migration_pgsize: self.min_pgsize(),
            max_dirty_bitmap_size: DIRTY_BITMAP_SIZE_MAX,
            dma_avail: self.dmas.avail(),
            iova_ranges: self.iova_list.ranges().to_vec(),
        }
    }
}

impl Drop for Type1 {
    fn drop(&mut self) {
        self.release();
    }
}
