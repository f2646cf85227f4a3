//! Groups on a [`Type1`] backend: attach (`vfio_iommu_type1_attach_group`, v6.18: a new IOMMU
//! domain or an existing compatible one, the IOVA aperture and reserved regions), replay of
//! every mapping into a new domain (`vfio_iommu_replay`), detach (`vfio_iommu_type1_detach_group`,
//! with the full-dirty population of d0a78f91761f) and release of the whole backend.

use super::*;

impl Type1 {
    pub(crate) fn has_group(&self, id: GroupId) -> bool {
        self.emulated.iter().any(|g| g.id == id)
            || self
                .domains
                .iter()
                .any(|d| d.groups.iter().any(|g| g.id == id))
    }

    /// `vfio_iommu_aper_conflict`.
    pub(super) fn aper_conflict(&self, start: u64, end: u64) -> bool {
        let Some((first, last)) = self.iova_list.bounds() else {
            return false;
        };
        if start > last || end < first {
            return true;
        }
        if start > first && self.dmas.find(first, start - 1).is_some() {
            return true;
        }
        if end < last && self.dmas.find(end + 1, last).is_some() {
            return true;
        }
        false
    }

    /// `vfio_iommu_type1_attach_group` (v6.18).
    pub(crate) fn attach_group(&mut self, spec: &GroupSpec) -> Result<()> {
        if self.dmas.vaddr_invalid_count() > 0 {
            return Err(Error::VaddrInvalid);
        }
        if self.has_group(spec.id) {
            return Err(Error::GroupAttached { group: spec.id.0 });
        }
        let desc = match &spec.kind {
            GroupKind::Emulated => {
                self.emulated.push(GroupState {
                    id: spec.id,
                    pinned_page_dirty_scope: true,
                    desc: None,
                    attached: Arc::new(AtomicBool::new(true)),
                });
                return Ok(());
            }
            GroupKind::Iommu(desc) => desc,
        };
        let domain_cfg = DomainConfig {
            table: desc.table,
            policy: self.cfg.invalidation,
            iotlb: self.cfg.iotlb,
        };
        let domain = Domain::new(&domain_cfg, self.cfg.clock.clone()).map_err(|source| {
            Error::InvalidDomain {
                group: spec.id.0,
                source,
            }
        })?;
        domain.table().set_table_alloc_budget(self.faults.tables);
        let ap = desc.aperture;
        if ap.end < ap.start || self.aper_conflict(ap.start, ap.end) {
            return Err(Error::ApertureConflict {
                start: ap.start,
                end: ap.end,
            });
        }
        let mut resv = Vec::new();
        for r in &desc.reserved {
            let last = r.last().ok_or(Error::InvalidReservedRegion {
                start: r.start,
                len: r.len,
            })?;
            if r.kind != ResvKind::DirectRelaxable {
                resv.push((r.start, last));
            }
        }
        for &(s, e) in &resv {
            if self.dmas.find(s, e).is_some() {
                return Err(Error::ReservedConflict { start: s, end: e });
            }
        }
        let mut list = self.iova_list.clone();
        list.resize(ap.start, ap.end);
        for &(s, e) in &resv {
            list.exclude(s, e);
        }
        if list.is_empty() {
            return Err(Error::NoIovaLeft);
        }
        if self.cfg.interrupts == Interrupts::RequireIsolated
            && desc.msi == crate::group::MsiIsolation::NotIsolated
        {
            return Err(Error::UnsafeInterrupts { group: spec.id.0 });
        }
        let group = GroupState {
            id: spec.id,
            pinned_page_dirty_scope: false,
            desc: Some(desc.clone()),
            attached: Arc::new(AtomicBool::new(true)),
        };
        if let Some(existing) = self
            .domains
            .iter_mut()
            .find(|d| d.desc.domain_compatible(desc))
        {
            // Reuse: the existing domain already maps everything; no replay.
            drop(domain);
            existing.groups.push(group);
        } else {
            if self.dirty_tracking && self.cfg.dirty_mode == DirtyMode::Precise {
                domain.start_dirty_tracking();
            }
            self.replay(&domain)?;
            self.domains.push(DomainEntry {
                desc: desc.clone(),
                domain: Arc::new(domain),
                groups: vec![group],
            });
            self.update_pgsize_bitmap();
        }
        self.iova_list = list;
        self.num_non_pinned_groups += 1;
        Ok(())
    }

    /// `vfio_iommu_replay` (v6.18): maps every mapping into `new`, pinning those that no domain
    /// mapped yet. All or nothing.
    pub(super) fn replay(&mut self, new: &Domain<Token>) -> Result<()> {
        let mut progress: Vec<Replayed> = Vec::new();
        let result = self.replay_into(new, &mut progress);
        if result.is_err() {
            // Unwind: unmap from the new domain; fresh pins are released once it lets go.
            for p in progress {
                let token = match p.fresh {
                    Some((runs, pages)) => {
                        self.dmas.get(p.iova).map_or_else(PinRelease::none, |d| {
                            PinRelease::new(d.mm.clone(), d.mm.clone(), runs, pages)
                        })
                    }
                    None => PinRelease::none(),
                };
                drop(new.unmap(Iova(p.iova), p.mapped, token));
            }
            drop(new.flush());
            return result;
        }
        for p in progress {
            if let (Some((runs, pages)), Some(d)) = (p.fresh, self.dmas.get_mut(p.iova)) {
                d.runs = runs;
                d.locked_vm += pages;
                d.pinned_from_owner();
            }
        }
        for d in self.dmas.iter_mut() {
            d.iommu_mapped = true;
        }
        Ok(())
    }

    pub(super) fn replay_into(
        &self,
        new: &Domain<Token>,
        progress: &mut Vec<Replayed>,
    ) -> Result<()> {
        for dma in self.dmas.iter() {
            let prot = dma_prot(dma.prot);
            progress.push(Replayed {
                iova: dma.iova,
                mapped: 0,
                fresh: (!dma.iommu_mapped).then(|| (Runs::new(), 0)),
            });
            let Some(p) = progress.last_mut() else {
                continue;
            };
            let map_err = |e| match e {
                io_pgtable::Error::NoMemory => Error::NoMemory,
                e => Error::Domain(e),
            };
            if dma.iommu_mapped {
                let mut off = 0;
                for r in &dma.runs {
                    let bytes = r.npages * PAGE_SIZE;
                    new.map(Iova(dma.iova + off), r.pa, bytes, prot)
                        .map_err(map_err)?;
                    off += bytes;
                    p.mapped = off;
                }
                continue;
            }
            let access = if dma.prot.write {
                Access::Write
            } else {
                Access::Read
            };
            let mut off = 0;
            while off < dma.size {
                let run = dma
                    .mm
                    .space()
                    .pin_run(dma.vaddr + off, (dma.size - off) / PAGE_SIZE, access)
                    .map_err(|vaddr| Error::Fault { vaddr })?;
                // Pages devices pinned without a domain are charged already (`vpfn_pages`).
                let pages = if run.reserved {
                    0
                } else {
                    run.npages - dma.device_pinned_in(dma.iova + off, run.npages * PAGE_SIZE)
                };
                if let Err(e) = dma.mm.charge(pages, dma.lock_cap) {
                    dma.mm.space().unpin_run(&run);
                    return Err(e);
                }
                if let Some((runs, charged)) = p.fresh.as_mut() {
                    runs.push(run);
                    *charged += pages;
                }
                let bytes = run.npages * PAGE_SIZE;
                new.map(Iova(dma.iova + off), run.pa, bytes, prot)
                    .map_err(map_err)?;
                off += bytes;
                p.mapped = off;
            }
        }
        Ok(())
    }

    /// `vfio_iommu_type1_detach_group` (v6.18).
    pub(crate) fn detach_group(&mut self, id: GroupId) -> Result<()> {
        if let Some(pos) = self.emulated.iter().position(|g| g.id == id) {
            self.emulated.remove(pos);
            if self.emulated.is_empty() && self.domains.is_empty() {
                self.unmap_unpin_all();
            }
            return Ok(());
        }
        let Some((di, gi)) = self
            .domains
            .iter()
            .enumerate()
            .find_map(|(di, d)| d.groups.iter().position(|g| g.id == id).map(|gi| (di, gi)))
        else {
            return Err(Error::GroupNotAttached { group: id.0 });
        };
        let mut list = self.iova_list.clone();
        let group = self.domains[di].groups.remove(gi);
        group.attached.store(false, Ordering::Release);
        // DMA the group's devices began before the detach completes first.
        self.domains[di].domain.drain_transactions();
        let update_dirty_scope = !group.pinned_page_dirty_scope;
        // Did this group's DMA escape dirty tracking? Always in kernel-exact mode; in precise
        // mode only if its domain keeps no hardware dirty state.
        let full_dirty = update_dirty_scope
            && (self.cfg.dirty_mode == DirtyMode::KernelExact
                || !self.domains[di].domain.has_dirty_tracking());
        if self.domains[di].groups.is_empty() {
            if self.domains.len() == 1 {
                if self.emulated.is_empty() {
                    self.unmap_unpin_all();
                } else {
                    self.unmap_unpin_reaccount();
                }
            } else {
                self.retire_domain(di);
            }
            let gone = self.domains.remove(di);
            drop(gone.domain.flush());
            for g in &gone.groups {
                g.attached.store(false, Ordering::Release);
            }
            drop(gone);
            let (start, end) = self.domains.iter().fold((0, u64::MAX), |(s, e), d| {
                (s.max(d.desc.aperture.start), e.min(d.desc.aperture.end))
            });
            list.expand(start, end);
            self.update_pgsize_bitmap();
        }
        // vfio_iommu_resv_refresh
        if let Some((s, e)) = list.bounds() {
            let mut fresh = IovaList::single(s, e);
            for d in &self.domains {
                for g in &d.groups {
                    for r in g.desc.iter().flat_map(|desc| desc.reserved.iter()) {
                        if r.kind != ResvKind::DirectRelaxable {
                            if let Some(last) = r.last() {
                                fresh.exclude(r.start, last);
                            }
                        }
                    }
                }
            }
            if !fresh.is_empty() {
                self.iova_list = fresh;
            }
        }
        if update_dirty_scope {
            self.num_non_pinned_groups -= 1;
            // d0a78f91761f "vfio/iommu_type1: Populate full dirty when detach non-pinned group"
            // (v5.12): the group could have written anywhere.
            if self.dirty_tracking && full_dirty {
                self.populate_bitmap_full();
            }
        }
        Ok(())
    }

    /// Empties a domain that goes while others stay: its mappings' pins belong to the others.
    /// With precise tracking, what its devices dirtied is recorded first, atomically.
    pub(super) fn retire_domain(&mut self, di: usize) {
        let shift = self.min_pgsize().trailing_zeros();
        let precise = self.dirty_tracking && self.cfg.dirty_mode == DirtyMode::Precise;
        let domain = self.domains[di].domain.clone();
        for dma in self.dmas.iter_mut() {
            let (iova, size) = (dma.iova, dma.size);
            let u = match dma.bitmap.as_mut() {
                Some(bm) if precise && domain.has_dirty_tracking() => {
                    let mut sink = |at: Iova, len: u64| bm.set_span(iova, shift, at.raw(), len);
                    domain.unmap_read_dirty(Iova(iova), size, PinRelease::none(), Some(&mut sink))
                }
                _ => domain.unmap(Iova(iova), size, PinRelease::none()),
            };
            drop(u.released);
        }
    }

    /// `vfio_iommu_populate_bitmap_full`: every page of every mapping dirty.
    pub(super) fn populate_bitmap_full(&mut self) {
        for dma in self.dmas.iter_mut() {
            if let Some(bm) = dma.bitmap.as_mut() {
                let n = bm.len();
                let r = bm.set(0, n);
                debug_assert!(r.is_ok(), "{r:?}");
            }
        }
    }

    /// `vfio_iommu_type1_release` (v6.18): everything unmapped, unpinned and uncharged; domains
    /// flushed and freed.
    pub(crate) fn release(&mut self) {
        for g in &self.emulated {
            g.attached.store(false, Ordering::Release);
        }
        self.emulated.clear();
        self.unmap_unpin_all();
        for d in self.domains.drain(..) {
            drop(d.domain.flush());
            for g in &d.groups {
                g.attached.store(false, Ordering::Release);
            }
        }
        self.num_non_pinned_groups = 0;
    }
}
