//! The model's groups: attach with replay and detach (`vfio_iommu_type1_attach_group`,
//! `vfio_iommu_replay`, `vfio_iommu_type1_detach_group`, v6.18).

use super::*;

impl Model {
    // ----- groups -----

    /// Detaches IOMMU group `d` (the rig keeps another group in the container).
    pub fn detach(&mut self, d: Dom) {
        let Some(g) = self.groups.remove(&d) else {
            return;
        };
        // The domain goes: nothing it held waits for it any more.
        self.flush_domain(d);
        if !self.iommu() && !self.emulated_attached {
            self.maps.clear();
            self.pins.clear();
            self.dirty.clear();
            return;
        }
        // A group that never pinned could have written anywhere (`vfio_iommu_type1_detach_group`,
        // v6.18, since d0a78f91761f); in precise mode only unless its domain had dirty bits.
        if self.tracking && !g.pinned_scope && (!self.cfg.precise || d == Dom::B) {
            for (&k, m) in &self.maps {
                for p in 0..m.size / PAGE {
                    self.dirty.insert(k + p * PAGE);
                }
            }
        }
    }

    /// Attaches IOMMU group `d`: with no other domain the replay pins every mapping, mapping by
    /// mapping and page by page (pages devices pin are charged already); else it only maps.
    ///
    /// # Errors
    /// `EBUSY` with invalid vaddrs; `EINVAL` for mappings outside the group's aperture or in
    /// the MSI window; `EFAULT` for an unpinnable page and `ENOMEM` over the limit, whichever
    /// page comes first. Nothing changes on error.
    pub fn attach(&mut self, d: Dom, mem: &dyn ModelMemory) -> Result<u64, i32> {
        if self.attached(d) {
            return Err(libc::EINVAL);
        }
        if self.maps.values().any(|m| m.vaddr_invalid) {
            return Err(libc::EBUSY);
        }
        if self
            .maps
            .iter()
            .any(|(&k, m)| k + (m.size - 1) > d.aperture_end())
        {
            return Err(libc::EINVAL);
        }
        if self.maps.iter().any(|(&k, m)| {
            let end = k + (m.size - 1);
            !(end < MSI.0 || k > MSI.1)
        }) {
            return Err(libc::EINVAL);
        }
        if !self.iommu() {
            let locked = self.locked_pages();
            let mut acct = 0;
            for (&k, m) in &self.maps {
                for p in 0..m.size / PAGE {
                    if !mem.pinnable(m.vaddr + p * PAGE, m.write) {
                        return Err(libc::EFAULT);
                    }
                    if !self.pins.contains_key(&(k + p * PAGE)) {
                        if self.over_limit(locked + acct + 1) {
                            return Err(libc::ENOMEM);
                        }
                        acct += 1;
                    }
                }
            }
        }
        self.groups.insert(d, Group::default());
        Ok(0)
    }
}
