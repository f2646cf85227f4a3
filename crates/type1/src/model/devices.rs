//! The model's devices: `vfio_pin_pages`, `vfio_unpin_pages`, `vfio_dma_rw` and DMA through a
//! domain (`vfio_iommu_type1_pin_pages`, `vfio_iommu_type1_unpin_pages`,
//! `vfio_iommu_type1_dma_rw`, v6.18).

use super::*;

impl Model {
    // ----- devices -----

    pub(super) fn dev_attached(&self, dev: ModelDevice) -> bool {
        match dev {
            ModelDevice::Emulated => self.emulated_attached,
            ModelDevice::Iommu(d) => self.attached(d),
        }
    }

    /// `vfio_pin_pages` of one device.
    ///
    /// # Errors
    /// The errno of `vfio_pin_pages` / `vfio_iommu_type1_pin_pages` (v6.18).
    #[allow(clippy::fn_params_excessive_bools)]
    pub fn pin(
        &mut self,
        dev: ModelDevice,
        iova: u64,
        npage: u64,
        read: bool,
        write: bool,
        mem: &dyn ModelMemory,
    ) -> Result<u64, i32> {
        use libc::{E2BIG, EACCES, EBUSY, EFAULT, EINVAL, ENOMEM, EOVERFLOW, EPERM};
        if npage == 0 || !self.dev_attached(dev) {
            return Err(EINVAL);
        }
        if npage > MAX_PIN {
            return Err(E2BIG);
        }
        if self.cfg.version != Version::V2 {
            return Err(EACCES);
        }
        last(iova, npage * PAGE).ok_or(EOVERFLOW)?;
        if self.maps.values().any(|m| m.vaddr_invalid) {
            return Err(EBUSY);
        }
        if iova % PAGE != 0 {
            return Err(EINVAL);
        }
        // Page by page, as the kernel: mapping, permission, pin, charge (only without an
        // IOMMU domain, `vfio_lock_acct`).
        let mut new_pages = 0;
        for i in 0..npage {
            let at = iova + i * PAGE;
            let Some(k) = self.containing(at) else {
                return Err(EINVAL);
            };
            let m = &self.maps[&k];
            if (read && !m.read) || (write && !m.write) {
                return Err(EPERM);
            }
            if !self.pins.contains_key(&at) {
                // Pinned with the mapping's protection (`vfio_pin_page_external`).
                if !mem.pinnable(m.vaddr + (at - k), m.write) {
                    return Err(EFAULT);
                }
                if !self.iommu() && self.over_limit(self.locked_pages() + new_pages + 1) {
                    return Err(ENOMEM);
                }
                new_pages += 1;
            }
        }
        for i in 0..npage {
            let at = iova + i * PAGE;
            let fresh = !self.pins.contains_key(&at);
            *self.pins.entry(at).or_default().entry(dev).or_insert(0) += 1;
            if fresh && self.tracking {
                self.dirty.insert(at);
            }
        }
        if let ModelDevice::Iommu(d) = dev {
            if let Some(g) = self.groups.get_mut(&d) {
                g.pinned_scope = true;
            }
        }
        Ok(npage)
    }

    /// `vfio_unpin_pages` (checked: the device must hold every page).
    ///
    /// # Errors
    /// `EINVAL` (and no change) if it does not; `EACCES` on v1.
    pub fn unpin(&mut self, dev: ModelDevice, iova: u64, npage: u64) -> Result<u64, i32> {
        if npage == 0 || npage > MAX_PIN {
            return Err(libc::E2BIG);
        }
        if self.cfg.version != Version::V2 {
            return Err(libc::EACCES);
        }
        last(iova, npage * PAGE).ok_or(libc::EOVERFLOW)?;
        for i in 0..npage {
            let at = iova + i * PAGE;
            if !self.pins.get(&at).is_some_and(|d| d.contains_key(&dev)) {
                return Err(libc::EINVAL);
            }
        }
        for i in 0..npage {
            let at = iova + i * PAGE;
            if let Some(devs) = self.pins.get_mut(&at) {
                if let Some(n) = devs.get_mut(&dev) {
                    *n -= 1;
                    if *n == 0 {
                        devs.remove(&dev);
                    }
                }
                if devs.is_empty() {
                    self.pins.remove(&at);
                }
            }
        }
        Ok(npage)
    }

    /// The device unregisters: every pin it holds is released.
    pub fn unregister(&mut self, dev: ModelDevice) {
        for devs in self.pins.values_mut() {
            devs.remove(&dev);
        }
        self.pins.retain(|_, devs| !devs.is_empty());
    }

    /// `vfio_dma_rw` write of `len` bytes.
    ///
    /// # Errors
    /// The errno of `vfio_iommu_type1_dma_rw` (v6.18): `EINVAL` for a gap, `EPERM`, `EBUSY`,
    /// `EFAULT`; chunks before the failure stay written.
    pub fn rw_write(
        &mut self,
        dev: ModelDevice,
        iova: u64,
        len: u64,
        mem: &dyn ModelMemory,
    ) -> Result<u64, i32> {
        if len == 0 || !self.dev_attached(dev) {
            return Err(libc::EINVAL);
        }
        if self.maps.values().any(|m| m.vaddr_invalid) {
            return Err(libc::EBUSY);
        }
        let mut at = iova;
        let end = iova.checked_add(len).ok_or(libc::EINVAL)?;
        while at < end {
            let Some(k) = self.containing(at) else {
                return Err(libc::EINVAL);
            };
            let m = &self.maps[&k];
            if !m.write || !m.read {
                return Err(libc::EPERM);
            }
            let stop = end.min(k + m.size);
            // The copy goes through the owner's memory: any unwritable page faults the chunk.
            let mut p = at & !(PAGE - 1);
            while p < stop {
                if !mem.pinnable(m.vaddr + (p - k), true) {
                    return Err(libc::EFAULT);
                }
                p += PAGE;
            }
            if self.tracking {
                let mut p = at & !(PAGE - 1);
                while p < stop {
                    self.dirty.insert(p);
                    p += PAGE;
                }
            }
            at = stop;
        }
        Ok(len)
    }

    /// A DMA of `len` bytes at `iova` by the device of IOMMU group `d`, through its domain.
    /// In precise mode with tracking on, a write through a domain with dirty bits dirties the
    /// pages it reaches.
    ///
    /// # Errors
    /// The first page the domain does not map, or whose mapping forbids the access (pages
    /// before it were accessed); [`DevFault::Detached`] if the group is not attached.
    pub fn device_dma(&mut self, d: Dom, iova: u64, len: u64, write: bool) -> Result<(), DevFault> {
        if !self.attached(d) {
            return Err(DevFault::Detached);
        }
        let Some(end) = last(iova, len) else {
            return Ok(());
        };
        let mut page = iova & !(PAGE - 1);
        loop {
            let at = page.max(iova);
            let Some(k) = self.containing(page) else {
                return Err(DevFault::NotMapped(at));
            };
            let m = &self.maps[&k];
            let allowed = if write {
                m.write
            } else {
                d.can_read(m.read, m.write)
            };
            if !allowed {
                return Err(DevFault::Permission(at));
            }
            if write && self.tracking && self.cfg.precise && d == Dom::A {
                self.dirty.insert(page);
            }
            match page.checked_add(PAGE) {
                Some(next) if next <= end => page = next,
                _ => return Ok(()),
            }
        }
    }
}
