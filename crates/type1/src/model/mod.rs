//! A deliberately simple reference model of the container, for differential tests and fuzzing.
//!
//! Everything is per 4K page in ordered maps: no page tables, no physical runs, no domains, no
//! release tokens, no bitmaps shifted into words. It restates the rules of spec type1.md §4–§8
//! for one fixed setup (one IOMMU-backed group with the x86 default description, one emulated
//! group, one device per group, a fake address space described by a predicate) so that an
//! engine result can be checked against an obviously right one. Results are `Ok(value)` or
//! `Err(errno)`.

use std::collections::{BTreeMap, BTreeSet};

use crate::type1::Version;

const PAGE: u64 = 4096;
const MSI: (u64, u64) = (0xfee0_0000, 0xfeef_ffff);
const APERTURE_END: u64 = (1 << 48) - 1;
const MAX_PIN: u64 = 512;

/// Who asks for a pin or dma_rw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModelDevice {
    /// The emulated group's device.
    Emulated,
    /// The IOMMU-backed group's device.
    Iommu,
}

#[derive(Debug, Clone)]
struct Mapping {
    size: u64,
    vaddr: u64,
    read: bool,
    write: bool,
    vaddr_invalid: bool,
}

/// The model.
#[derive(Debug, Clone)]
pub struct Model {
    version: Version,
    limit: u64,
    locked_limit: Option<u64>,
    maps: BTreeMap<u64, Mapping>,
    iommu_attached: bool,
    iommu_ever: bool,
    emulated_attached: bool,
    iommu_pinned_scope: bool,
    /// Pinned pages: iova page → device → count.
    pins: BTreeMap<u64, BTreeMap<ModelDevice, u32>>,
    tracking: bool,
    /// Pages dirtied since their mapping was last reported (iova pages).
    dirty: BTreeSet<u64>,
}

fn last(start: u64, size: u64) -> Option<u64> {
    start.checked_add(size.checked_sub(1)?)
}

impl Model {
    /// A container after `VFIO_SET_IOMMU(version)` with the IOMMU group attached or not and the
    /// emulated group attached or not.
    #[must_use]
    pub fn new(
        version: Version,
        limit: u32,
        locked_limit_pages: Option<u64>,
        iommu: bool,
        emulated: bool,
    ) -> Self {
        Model {
            version,
            limit: u64::from(limit),
            locked_limit: locked_limit_pages,
            maps: BTreeMap::new(),
            iommu_attached: iommu,
            iommu_ever: iommu,
            emulated_attached: emulated,
            iommu_pinned_scope: false,
            pins: BTreeMap::new(),
            tracking: false,
            dirty: BTreeSet::new(),
        }
    }

    fn find(&self, start: u64, end: u64) -> Option<u64> {
        self.maps
            .range(..=end)
            .next_back()
            .filter(|(&k, m)| k + (m.size - 1) >= start)
            .map(|(&k, _)| k)
    }

    fn containing(&self, iova: u64) -> Option<u64> {
        self.find(iova, iova)
    }

    fn valid_iova(&self, start: u64, end: u64) -> bool {
        if !self.iommu_ever {
            return true;
        }
        if !self.iommu_attached {
            return true; // [0, U64_MAX] after the last IOMMU group left
        }
        end <= APERTURE_END && (end < MSI.0 || start > MSI.1)
    }

    /// Pages charged now: IOMMU-pinned pages of every mapping with a domain, else device pins.
    #[must_use]
    pub fn locked_pages(&self) -> u64 {
        if self.iommu_attached {
            self.maps.values().map(|m| m.size / PAGE).sum()
        } else {
            self.pins.len() as u64
        }
    }

    /// `dma_avail`.
    #[must_use]
    pub fn dma_avail(&self) -> u64 {
        self.limit - self.maps.len() as u64
    }

    /// Mappings as (iova, size), ascending.
    #[must_use]
    pub fn mappings(&self) -> Vec<(u64, u64)> {
        self.maps.iter().map(|(&k, m)| (k, m.size)).collect()
    }

    /// MAP_DMA. `mem(vaddr, write)` says whether a page of the address space can be pinned.
    ///
    /// # Errors
    /// The errno of §4.3.
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
    pub fn map(
        &mut self,
        vaddr: u64,
        iova: u64,
        size: u64,
        read: bool,
        write: bool,
        vaddr_flag: bool,
        mem: &dyn Fn(u64, bool) -> bool,
    ) -> Result<u64, i32> {
        use libc::{EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM, ENOSPC, EOVERFLOW};
        if size == 0 {
            return Err(EINVAL);
        }
        let (Some(end), Some(_)) = (last(iova, size), last(vaddr, size)) else {
            return Err(EOVERFLOW);
        };
        if (read || write) == vaddr_flag {
            return Err(EINVAL);
        }
        if (size | iova | vaddr) % PAGE != 0 {
            return Err(EINVAL);
        }
        if vaddr_flag {
            let Some(k) = self.find(iova, end) else {
                return Err(ENOENT);
            };
            let m = self.maps.get_mut(&k).ok_or(ENOENT)?;
            if !m.vaddr_invalid || k != iova || m.size != size {
                return Err(EINVAL);
            }
            m.vaddr = vaddr;
            m.vaddr_invalid = false;
            return Ok(0);
        }
        if self.find(iova, end).is_some() {
            return Err(EEXIST);
        }
        if self.maps.len() as u64 >= self.limit {
            return Err(ENOSPC);
        }
        if !self.valid_iova(iova, end) {
            return Err(EINVAL);
        }
        if self.iommu_attached {
            for p in 0..size / PAGE {
                if !mem(vaddr + p * PAGE, write) {
                    return Err(EFAULT);
                }
            }
            if let Some(l) = self.locked_limit {
                if self.locked_pages() + size / PAGE > l {
                    return Err(ENOMEM);
                }
            }
        }
        self.maps.insert(
            iova,
            Mapping {
                size,
                vaddr,
                read,
                write,
                vaddr_invalid: false,
            },
        );
        Ok(0)
    }

    fn report(&mut self, key: u64, base: u64, bits: &mut BTreeSet<u64>) {
        let Some(m) = self.maps.get(&key) else { return };
        let full = self.iommu_attached && !self.iommu_pinned_scope;
        for p in 0..m.size / PAGE {
            let at = key + p * PAGE;
            let pinned = self.pins.contains_key(&at);
            if full || pinned || self.dirty.contains(&at) {
                bits.insert((at - base) / PAGE);
            }
            // §7: the bitmap is cleared and re-populated from the pinned pages, so a page pinned
            // now is reported once more even if it is unpinned before the next report.
            if pinned {
                self.dirty.insert(at);
            } else {
                self.dirty.remove(&at);
            }
        }
    }

    /// UNMAP_DMA: `all`, `vaddr` and `bitmap` flags. Pins in removed mappings are released (the
    /// devices unpin on notification). Returns the bytes and the dirty pages (relative to `iova`).
    ///
    /// # Errors
    /// The errno of §4.4.
    #[allow(clippy::fn_params_excessive_bools)]
    pub fn unmap(
        &mut self,
        iova: u64,
        size: u64,
        all: bool,
        vaddr: bool,
        bitmap: bool,
    ) -> Result<(u64, BTreeSet<u64>), i32> {
        use libc::{EBUSY, EINVAL, EOVERFLOW};
        let mut bits = BTreeSet::new();
        if bitmap && (all || vaddr) {
            return Err(EINVAL);
        }
        if vaddr && self.emulated_attached {
            return Err(EBUSY);
        }
        if iova % PAGE != 0 {
            return Err(EINVAL);
        }
        let end = if all {
            if iova != 0 || size != 0 {
                return Err(EINVAL);
            }
            u64::MAX
        } else {
            if size == 0 || size % PAGE != 0 {
                return Err(EINVAL);
            }
            last(iova, size).ok_or(EOVERFLOW)?
        };
        if bitmap && !self.tracking {
            return Err(EINVAL);
        }
        if self.version == Version::V2 && !all {
            if let Some(k) = self.containing(iova) {
                if k < iova {
                    return Err(EINVAL);
                }
            }
            if let Some(k) = self.containing(end) {
                if k + (self.maps[&k].size - 1) > end {
                    return Err(EINVAL);
                }
            }
        }
        // From the lowest overlapping mapping upwards.
        let first = self
            .containing(iova)
            .or_else(|| self.maps.range(iova..=end).next().map(|(&k, _)| k));
        let keys: Vec<u64> = match first {
            Some(first) => self.maps.range(first..=end).map(|(&k, _)| k).collect(),
            None => Vec::new(),
        };
        let mut done = 0;
        if vaddr {
            let mut changed = Vec::new();
            for k in keys {
                if self.version == Version::V1 && iova > k {
                    break;
                }
                let m = self.maps.get_mut(&k).ok_or(EINVAL)?;
                if m.vaddr_invalid {
                    for c in changed {
                        if let Some(m) = self.maps.get_mut(&c) {
                            m.vaddr_invalid = false;
                        }
                    }
                    return Err(EINVAL);
                }
                m.vaddr_invalid = true;
                done += m.size;
                changed.push(k);
            }
            return Ok((done, bits));
        }
        for k in keys {
            if self.version == Version::V1 && iova > k {
                break;
            }
            if bitmap {
                self.report(k, iova, &mut bits);
            }
            let m = self.maps.remove(&k).ok_or(EINVAL)?;
            self.pins.retain(|&p, _| p < k || p > k + (m.size - 1));
            self.dirty.retain(|&p| p < k || p > k + (m.size - 1));
            done += m.size;
        }
        Ok((done, bits))
    }

    /// `vfio_pin_pages` of one device.
    ///
    /// # Errors
    /// The errno of §5.1.
    #[allow(clippy::fn_params_excessive_bools)]
    pub fn pin(
        &mut self,
        dev: ModelDevice,
        iova: u64,
        npage: u64,
        read: bool,
        write: bool,
        mem: &dyn Fn(u64, bool) -> bool,
    ) -> Result<u64, i32> {
        use libc::{E2BIG, EACCES, EBUSY, EFAULT, EINVAL, ENOMEM, EOVERFLOW, EPERM};
        if npage == 0 {
            return Err(EINVAL);
        }
        let attached = match dev {
            ModelDevice::Iommu => self.iommu_attached,
            ModelDevice::Emulated => self.emulated_attached,
        };
        if !attached {
            return Err(EINVAL);
        }
        if npage > MAX_PIN {
            return Err(E2BIG);
        }
        if self.version != Version::V2 {
            return Err(EACCES);
        }
        last(iova, npage * PAGE).ok_or(EOVERFLOW)?;
        if self.maps.values().any(|m| m.vaddr_invalid) {
            return Err(EBUSY);
        }
        if iova % PAGE != 0 {
            return Err(EINVAL);
        }
        // Page by page, as the kernel: mapping, permission, pin, charge.
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
                if !mem(m.vaddr + (at - k), write) {
                    return Err(EFAULT);
                }
                if !self.iommu_attached {
                    if let Some(l) = self.locked_limit {
                        if self.locked_pages() + new_pages + 1 > l {
                            return Err(ENOMEM);
                        }
                    }
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
        if dev == ModelDevice::Iommu {
            self.iommu_pinned_scope = true;
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
        if self.version != Version::V2 {
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

    /// `vfio_dma_rw` write of `len` bytes.
    ///
    /// # Errors
    /// The errno of §5.3 (`EINVAL` for a gap, `EPERM`, `EBUSY`); chunks before a gap stay written.
    pub fn rw_write(
        &mut self,
        dev: ModelDevice,
        iova: u64,
        len: u64,
        mem: &dyn Fn(u64, bool) -> bool,
    ) -> Result<u64, i32> {
        if len == 0 {
            return Err(libc::EINVAL);
        }
        let attached = match dev {
            ModelDevice::Iommu => self.iommu_attached,
            ModelDevice::Emulated => self.emulated_attached,
        };
        if !attached {
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
                if !mem(m.vaddr + (p - k), true) {
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

    /// DIRTY_PAGES START / STOP.
    ///
    /// # Errors
    /// `EACCES` on v1.
    pub fn set_tracking(&mut self, on: bool) -> Result<u64, i32> {
        if self.version != Version::V2 {
            return Err(libc::EACCES);
        }
        if on && !self.tracking {
            // START populates the bitmaps from the pages pinned now (§4.5 step 4).
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
    /// The errno of §4.5 steps 4–10.
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

    /// Detaches the IOMMU group (while the emulated group stays).
    pub fn detach_iommu(&mut self) {
        if !self.iommu_attached {
            return;
        }
        let non_pinned = !self.iommu_pinned_scope;
        self.iommu_attached = false;
        self.iommu_pinned_scope = false;
        if !self.emulated_attached {
            self.maps.clear();
            self.pins.clear();
            self.dirty.clear();
        } else if self.tracking && non_pinned {
            for (&k, m) in &self.maps {
                for p in 0..m.size / PAGE {
                    self.dirty.insert(k + p * PAGE);
                }
            }
        }
    }

    /// Attaches the IOMMU group: replay pins every mapping.
    ///
    /// # Errors
    /// `EBUSY` with invalid vaddrs, `EINVAL` for mappings outside the aperture or in the MSI
    /// window, `EFAULT` for an unpinnable page, `ENOMEM` over the limit.
    pub fn attach_iommu(&mut self, mem: &dyn Fn(u64, bool) -> bool) -> Result<u64, i32> {
        if self.iommu_attached {
            return Err(libc::EINVAL);
        }
        if self.maps.values().any(|m| m.vaddr_invalid) {
            return Err(libc::EBUSY);
        }
        for (&k, m) in &self.maps {
            let end = k + (m.size - 1);
            if end > APERTURE_END {
                return Err(libc::EINVAL);
            }
        }
        for (&k, m) in &self.maps {
            let end = k + (m.size - 1);
            if !(end < MSI.0 || k > MSI.1) {
                return Err(libc::EINVAL);
            }
        }
        for m in self.maps.values() {
            for p in 0..m.size / PAGE {
                if !mem(m.vaddr + p * PAGE, m.write) {
                    return Err(libc::EFAULT);
                }
            }
        }
        let total: u64 = self.maps.values().map(|m| m.size / PAGE).sum();
        if let Some(l) = self.locked_limit {
            if total > l {
                return Err(libc::ENOMEM);
            }
        }
        self.iommu_attached = true;
        self.iommu_ever = true;
        self.iommu_pinned_scope = false;
        Ok(0)
    }
}

pub mod diff;
