//! Pages pinned by emulated devices and their reads and writes of guest memory
//! (`vfio_pin_pages`, `vfio_unpin_pages`, `vfio_dma_rw`; in type1 `vfio_iommu_type1_pin_pages`,
//! `vfio_iommu_type1_unpin_pages`, `vfio_iommu_type1_dma_rw`, v6.18).
//!
//! Differences from the kernel, all deliberate:
//! - pins belong to the device that made them; unpinning a page the device does not hold fails
//!   (`EINVAL`) instead of dropping another device's reference (the kernel counts one reference
//!   per page, whoever took it);
//! - `unpin_pages` validates the whole range first and changes nothing on error;
//! - an `iova` not aligned to `PAGE_SIZE` is refused (the kernel keys pins by the raw address);
//! - dirty bits of a pin are set only once the whole call succeeds.

use super::{Type1, Version, PAGE_SIZE};
use crate::api::Perm;
use crate::device::{DeviceEntry, DeviceId};
use crate::dma::Dma;
use crate::error::{Error, Result};
use crate::mm::{Access, PinnedRun};
use crate::pinset::Released;
use crate::release::release_pins;

/// Returns a page whose last device pin went to the address space that pinned it, and uncharges
/// it if device pins of `dma` are accounted (no IOMMU domain: `do_accounting` in
/// `vfio_iommu_type1_pin_pages`).
pub(crate) fn return_pin(dma: &mut Dma, r: &Released, accounting: bool) {
    let run = PinnedRun {
        pa: io_pgtable::PhysAddr(r.pa),
        npages: 1,
        reserved: false,
    };
    let pages = u64::from(accounting);
    release_pins(&r.space, &dma.mm, &[run], pages);
    dma.locked_vm -= pages;
}

/// Pins (or takes another reference to) the page at `at` of `dma` for `dev`. Returns its
/// physical address and whether the page was newly pinned.
fn pin_in(
    dma: &mut Dma,
    dev: DeviceId,
    at: u64,
    prot: Perm,
    accounting: bool,
) -> Result<(u64, bool)> {
    if (prot.contains(Perm::READ) && !dma.prot.read)
        || (prot.contains(Perm::WRITE) && !dma.prot.write)
    {
        return Err(Error::Permission { iova: at });
    }
    if let Some(pa) = dma.pfn_list.add_ref(at, dev) {
        return Ok((pa, false));
    }
    let vaddr = dma.vaddr + (at - dma.iova);
    // `vfio_pin_page_external` (v6.18) pins with the mapping's protection (`dma->prot`), not the
    // device's: a writable mapping's page is pinned for write (`FOLL_WRITE`) even for a read.
    let access = if dma.prot.write {
        Access::Write
    } else {
        Access::Read
    };
    let run = dma
        .mm
        .space()
        .pin_run(vaddr, 1, access)
        .map_err(|vaddr| Error::Fault { vaddr })?;
    if run.reserved {
        dma.mm.space().unpin_run(&run);
        return Err(Error::ReservedPage { iova: at });
    }
    if accounting {
        if let Err(e) = dma.mm.charge(1, dma.lock_cap) {
            dma.mm.space().unpin_run(&run);
            return Err(e);
        }
        dma.locked_vm += 1;
    }
    dma.pfn_list.insert(at, run.pa.raw(), dev, &dma.mm);
    Ok((run.pa.raw(), true))
}

impl Type1 {
    /// `vfio_iommu_type1_pin_pages` after the core's checks. Returns the physical page of each
    /// IOVA page. All or nothing.
    pub(crate) fn pin_pages(
        &mut self,
        dev: &DeviceEntry,
        iova: u64,
        npage: u64,
        prot: Perm,
    ) -> Result<Vec<u64>> {
        if self.version != Version::V2 {
            return Err(Error::NotV2);
        }
        let size = npage * PAGE_SIZE;
        iova.checked_add(size - 1)
            .ok_or(Error::Overflow { start: iova, size })?;
        if self.dmas.vaddr_invalid_count() > 0 {
            return Err(Error::VaddrInvalid);
        }
        if iova % PAGE_SIZE != 0 {
            return Err(Error::Unaligned {
                what: "iova",
                value: iova,
                align: PAGE_SIZE,
            });
        }
        let accounting = self.domains.is_empty();
        let mut pas = Vec::with_capacity(crate::to_usize(npage));
        let mut fresh: Vec<u64> = Vec::new();
        // Page by page in IOVA order, with one tree search per mapping the range crosses.
        let mut i = 0;
        while i < npage {
            let at = iova + i * PAGE_SIZE;
            let r = match self.dmas.containing_mut(at) {
                None => Err(Error::NotMapped { iova: at }),
                Some(dma) => {
                    let in_dma = ((dma.last() - at) / PAGE_SIZE + 1).min(npage - i);
                    let mut r = Ok(());
                    for k in 0..in_dma {
                        let at = at + k * PAGE_SIZE;
                        match pin_in(dma, dev.id, at, prot, accounting) {
                            Ok((pa, new)) => {
                                pas.push(pa);
                                if new {
                                    fresh.push(at);
                                }
                                i += 1;
                            }
                            Err(e) => {
                                r = Err(e);
                                break;
                            }
                        }
                    }
                    r
                }
            };
            if let Err(e) = r {
                // Pages 0..i were pinned by this call: undo them, last first.
                for j in (0..i).rev() {
                    self.unpin_one(dev.id, iova + j * PAGE_SIZE, accounting);
                }
                return Err(e);
            }
        }
        if self.dirty_tracking {
            let shift = self.min_pgsize().trailing_zeros();
            for at in fresh {
                if let Some(dma) = self.dmas.containing_mut(at) {
                    let bit = (at - dma.iova) >> shift;
                    if let Some(bm) = dma.bitmap.as_mut() {
                        let r = bm.set(bit, 1);
                        debug_assert!(r.is_ok(), "{r:?}");
                    }
                }
            }
        }
        self.promote_scope(dev);
        Ok(pas)
    }

    /// The caller's group now has pinned-page dirty scope (`pinned_page_dirty_scope`, set by
    /// `vfio_iommu_type1_pin_pages` on success).
    fn promote_scope(&mut self, dev: &DeviceEntry) {
        for d in &mut self.domains {
            for g in &mut d.groups {
                if g.id == dev.group && !g.pinned_page_dirty_scope {
                    g.pinned_page_dirty_scope = true;
                    self.num_non_pinned_groups -= 1;
                }
            }
        }
    }

    /// Drops one of `dev`'s references to the page at `at`; the last reference unpins it.
    fn unpin_one(&mut self, dev: DeviceId, at: u64, accounting: bool) {
        let Some(dma) = self.dmas.containing_mut(at) else {
            return;
        };
        if let Some(r) = dma.pfn_list.drop_ref(at, dev) {
            return_pin(dma, &r, accounting);
        }
    }

    /// `vfio_iommu_type1_unpin_pages`, validated first: every page must be pinned by `dev`.
    pub(crate) fn unpin_pages(&mut self, dev: DeviceId, iova: u64, npage: u64) -> Result<()> {
        if self.version != Version::V2 {
            return Err(Error::NotV2);
        }
        let size = npage * PAGE_SIZE;
        iova.checked_add(size - 1)
            .ok_or(Error::Overflow { start: iova, size })?;
        // Both passes search the tree once per mapping the range crosses, not once per page.
        let mut i = 0;
        while i < npage {
            let at = iova + i * PAGE_SIZE;
            let not_held = |at| Error::NotPinnedByDevice {
                device: dev.0,
                iova: at,
            };
            let dma = self.dmas.containing(at).ok_or_else(|| not_held(at))?;
            let in_dma = ((dma.last() - at) / PAGE_SIZE + 1).min(npage - i);
            for k in 0..in_dma {
                let at = at + k * PAGE_SIZE;
                if !dma.pfn_list.holds(at, dev) {
                    return Err(not_held(at));
                }
            }
            i += in_dma;
        }
        let accounting = self.domains.is_empty();
        let mut i = 0;
        while i < npage {
            let at = iova + i * PAGE_SIZE;
            // Every page was found above and nothing changed since.
            let Some(dma) = self.dmas.containing_mut(at) else {
                break;
            };
            let in_dma = ((dma.last() - at) / PAGE_SIZE + 1).min(npage - i);
            for k in 0..in_dma {
                if let Some(r) = dma.pfn_list.drop_ref(at + k * PAGE_SIZE, dev) {
                    return_pin(dma, &r, accounting);
                }
            }
            i += in_dma;
        }
        Ok(())
    }

    /// Releases every pin `dev` holds (when it unregisters).
    pub(crate) fn release_device(&mut self, dev: DeviceId) {
        let accounting = self.domains.is_empty();
        let held: Vec<(u64, u32)> = self
            .dmas
            .iter()
            .flat_map(|d| d.pfn_list.held_by(dev))
            .collect();
        for (at, n) in held {
            for _ in 0..n {
                self.unpin_one(dev, at, accounting);
            }
        }
    }

    /// `vfio_iommu_type1_dma_rw`: copies between `buf` and guest memory at `iova`, across
    /// adjacent mappings. Chunks already copied stay copied on error, as in the kernel.
    pub(crate) fn dma_rw(&mut self, iova: u64, buf: &mut [u8], dir: Access) -> Result<()> {
        if self.dmas.vaddr_invalid_count() > 0 {
            return Err(Error::VaddrInvalid);
        }
        let shift = self.min_pgsize().trailing_zeros();
        let tracking = self.dirty_tracking;
        let mut done = 0usize;
        while done < buf.len() {
            let at = iova
                .checked_add(done as u64)
                .ok_or(Error::NotMapped { iova: u64::MAX })?;
            let Some(dma) = self.dmas.containing_mut(at) else {
                return Err(Error::NotMapped { iova: at });
            };
            if (dir == Access::Write && !dma.prot.write) || !dma.prot.read {
                return Err(Error::Permission { iova: at });
            }
            let offset = at - dma.iova;
            let n = crate::to_usize((dma.size - offset).min((buf.len() - done) as u64));
            let chunk = &mut buf[done..done + n];
            let vaddr = dma.vaddr + offset;
            match dir {
                Access::Read => dma.mm.space().read(vaddr, chunk),
                Access::Write => dma.mm.space().write(vaddr, chunk),
            }
            .map_err(|vaddr| Error::Fault { vaddr })?;
            if dir == Access::Write && tracking {
                if let Some(bm) = dma.bitmap.as_mut() {
                    let first = offset >> shift;
                    let last = (offset + n as u64 - 1) >> shift;
                    let r = bm.set(first, last - first + 1);
                    debug_assert!(r.is_ok(), "{r:?}");
                }
            }
            done += n;
        }
        Ok(())
    }
}
