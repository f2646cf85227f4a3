//! The model's dirty tracking: DIRTY_PAGES START/STOP, GET_BITMAP and the per-mapping report
//! (`vfio_iommu_type1_dirty_pages`, `vfio_iova_dirty_bitmap`, `update_user_bitmap`, v6.18),
//! as sets of dirty pages.

use super::*;

impl Model {
    // ----- dirty reports -----

    /// Every page of every IOMMU-mapped mapping is dirty: kernel-exact, while an IOMMU group
    /// has never pinned; precise, while such a group's domain has no dirty bits.
    pub(super) fn full(&self) -> bool {
        self.groups
            .iter()
            .any(|(&d, g)| !g.pinned_scope && (!self.cfg.precise || d == Dom::B))
    }

    pub(super) fn report(&mut self, key: u64, base: u64, bits: &mut BTreeSet<u64>) {
        let Some(m) = self.maps.get(&key) else { return };
        let full = self.full();
        for p in 0..m.size / PAGE {
            let at = key + p * PAGE;
            let pinned = self.pins.contains_key(&at);
            if full || pinned || self.dirty.contains(&at) {
                bits.insert((at - base) / PAGE);
            }
            // The bitmap is cleared and re-populated from the pinned pages, so a page pinned
            // now is reported once more even if it is unpinned before the next report.
            if pinned {
                self.dirty.insert(at);
            } else {
                self.dirty.remove(&at);
            }
        }
    }

    // ----- dirty tracking -----

    /// DIRTY_PAGES START / STOP.
    ///
    /// # Errors
    /// `EACCES` on v1.
    pub fn set_tracking(&mut self, on: bool) -> Result<u64, i32> {
        if self.cfg.version != Version::V2 {
            return Err(libc::EACCES);
        }
        if on && !self.tracking {
            // START populates the bitmaps from the pages pinned now (`vfio_dma_populate_bitmap`).
            self.dirty = self.pins.keys().copied().collect();
        }
        if !on {
            self.dirty.clear();
        }
        self.tracking = on;
        Ok(0)
    }

    /// GET_BITMAP over `[iova, iova + size)`.
    ///
    /// # Errors
    /// The errno of `vfio_iommu_type1_dirty_pages` / `vfio_iova_dirty_bitmap` (v6.18).
    pub fn get_bitmap(&mut self, iova: u64, size: u64) -> Result<BTreeSet<u64>, i32> {
        if size == 0 {
            return Err(libc::EINVAL);
        }
        let end = last(iova, size).ok_or(libc::EOVERFLOW)?;
        if iova % PAGE != 0 || size % PAGE != 0 || !self.tracking {
            return Err(libc::EINVAL);
        }
        if let Some(k) = self.containing(iova) {
            if k < iova {
                return Err(libc::EINVAL);
            }
        }
        if let Some(k) = self.containing(end) {
            if k + (self.maps[&k].size - 1) > end {
                return Err(libc::EINVAL);
            }
        }
        let mut bits = BTreeSet::new();
        let keys: Vec<u64> = self.maps.range(iova..=end).map(|(&k, _)| k).collect();
        for k in keys {
            self.report(k, iova, &mut bits);
        }
        Ok(bits)
    }
}
