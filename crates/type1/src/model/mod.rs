//! A deliberately simple reference model of the container, for differential tests and fuzzing.
//!
//! Only built with the `test-support` feature (the differential test and the `ops_vs_model`
//! fuzz target turn it on): it is a test oracle, not part of the library's API.
//!
//! Everything is per 4K page in ordered maps and sets: no page tables, no IOTLB, no physical
//! runs beyond "does this page continue the previous one", no release tokens, no bitmaps
//! shifted into words. It restates the kernel's rules (`vfio_dma_do_map`, `vfio_dma_do_unmap`,
//! `vfio_pin_pages_remote`, `vfio_lock_acct`, `vfio_iommu_type1_pin_pages`,
//! `vfio_iommu_type1_dma_rw`, `vfio_iova_dirty_bitmap`, `vfio_iommu_type1_attach_group`,
//! `vfio_iommu_replay`, `vfio_iommu_type1_detach_group`; v6.18) and the project's extensions
//! (precise dirty mode, lazy invalidation; docs/SEMANTICS.md) for one family of setups:
//!
//! - IOMMU group A: the x86 description, a stage-1 table with hardware dirty bits;
//! - optionally IOMMU group B: the MSI window, a 39-bit aperture and a stage-2 table (no
//!   hardware dirty bits, and "write without read" is expressible), so it gets its own domain;
//! - optionally one emulated group, whose device may ignore unmap notifications; one device
//!   per group;
//! - optionally a locked-memory limit, precise dirty mode, lazy invalidation with a flush ring
//!   of `capacity` entries and a timer of `timeout` ticks of a manual clock.
//!
//! Results are `Ok(value)` or `Err(errno)`.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::Version;

pub mod diff;

const PAGE: u64 = 4096;
const MSI: (u64, u64) = (0xfee0_0000, 0xfeef_ffff);
const MAX_PIN: u64 = 512;

/// An IOMMU-backed group of the model (each has a domain of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dom {
    /// Stage 1 with hardware dirty bits: in precise mode its devices' writes are reported.
    A,
    /// Stage 2, no hardware dirty bits: in precise mode it falls back to the kernel's rule.
    B,
}

impl Dom {
    /// Last IOVA of the group's aperture: 48 bits for A (the x86 description), 39 for B.
    #[must_use]
    pub fn aperture_end(self) -> u64 {
        match self {
            Dom::A => (1 << 48) - 1,
            Dom::B => (1 << 39) - 1,
        }
    }

    /// Whether a device of this group may read a mapping with `read`/`write`: a stage-1 leaf
    /// always reads (`arm_lpae_prot_to_pte`, v6.18), a stage-2 leaf as mapped.
    fn can_read(self, read: bool, write: bool) -> bool {
        match self {
            Dom::A => read || write,
            Dom::B => read,
        }
    }
}

/// Who asks for a pin, a `dma_rw` or a DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModelDevice {
    /// The emulated group's device.
    Emulated,
    /// An IOMMU-backed group's device.
    Iommu(Dom),
}

/// Why a device DMA through an IOMMU domain failed (the model's view of
/// [`crate::DmaError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevFault {
    /// Nothing mapped at this IOVA.
    NotMapped(u64),
    /// The mapping does not allow the access at this IOVA.
    Permission(u64),
    /// The device's group is not attached.
    Detached,
}

/// What the model needs to know about the owner's address space.
pub trait ModelMemory {
    /// Whether the page at `vaddr` can be pinned (for writing if `write`).
    fn pinnable(&self, vaddr: u64, write: bool) -> bool;
    /// Whether the page at `vaddr` is backed and physically follows the page before it, so one
    /// pin covers both (`vaddr_get_pfns` batches contiguous pages).
    fn continues_run(&self, vaddr: u64) -> bool;
}

/// Lazy invalidation: a flush ring of `capacity` entries per domain, flushed when full, when
/// `timeout` ticks have passed since the first entry queued after the last timed flush, or on
/// demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lazy {
    /// Entries a ring holds.
    pub capacity: usize,
    /// Ticks from the first queued entry to the timed flush.
    pub timeout: u64,
}

/// A model setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// Type1 or type1v2.
    pub version: Version,
    /// `dma_entry_limit`.
    pub dma_limit: u32,
    /// Locked-memory limit in pages (`RLIMIT_MEMLOCK`), `None` for unlimited.
    pub locked_limit: Option<u64>,
    /// The emulated group is attached.
    pub emulated: bool,
    /// Group B is attached (group A always is at first).
    pub second_domain: bool,
    /// Precise dirty mode (else kernel-exact).
    pub precise: bool,
    /// Lazy invalidation (else strict).
    pub lazy: Option<Lazy>,
    /// The emulated device ignores unmap notifications and keeps its pins.
    pub stubborn_emulated: bool,
}

#[derive(Debug, Clone)]
struct Mapping {
    size: u64,
    vaddr: u64,
    read: bool,
    write: bool,
    vaddr_invalid: bool,
}

/// An attached IOMMU-backed group and its domain.
#[derive(Debug, Clone, Default)]
struct Group {
    /// The group's device has pinned pages (`pinned_page_dirty_scope`).
    pinned_scope: bool,
    /// When the timer of its flush ring fires, if armed.
    deadline: Option<u64>,
}

/// Pins of unmapped IOMMU mappings waiting for the domains that mapped them to flush.
#[derive(Debug, Clone)]
struct Pending {
    iova: u64,
    size: u64,
    pages: u64,
    /// Domains whose ring still holds the entry.
    holders: BTreeSet<Dom>,
}

/// The model.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    maps: BTreeMap<u64, Mapping>,
    groups: BTreeMap<Dom, Group>,
    emulated_attached: bool,
    /// Pinned pages: iova page → device → count.
    pins: BTreeMap<u64, BTreeMap<ModelDevice, u32>>,
    tracking: bool,
    /// Pages dirtied since their mapping was last reported (iova pages).
    dirty: BTreeSet<u64>,
    pending: Vec<Pending>,
    now: u64,
    /// Unmap notifications sent to the devices (`vfio_notify_dma_unmap`).
    notifications: u64,
}

fn last(start: u64, size: u64) -> Option<u64> {
    start.checked_add(size.checked_sub(1)?)
}

fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

impl Model {
    /// A container after `VFIO_SET_IOMMU` with the configured groups attached.
    #[must_use]
    pub fn new(cfg: ModelConfig) -> Self {
        let mut groups = BTreeMap::new();
        groups.insert(Dom::A, Group::default());
        if cfg.second_domain {
            groups.insert(Dom::B, Group::default());
        }
        Model {
            cfg,
            maps: BTreeMap::new(),
            groups,
            emulated_attached: cfg.emulated,
            pins: BTreeMap::new(),
            tracking: false,
            dirty: BTreeSet::new(),
            pending: Vec::new(),
            now: 0,
            notifications: 0,
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

    fn iommu(&self) -> bool {
        !self.groups.is_empty()
    }

    /// With IOMMU groups the intersection of their apertures minus the MSI window; without
    /// one (after the last left) the whole 64-bit space.
    fn valid_iova(&self, start: u64, end: u64) -> bool {
        self.groups
            .keys()
            .all(|d| end <= d.aperture_end() && (end < MSI.0 || start > MSI.1))
    }

    /// True if the group `d` is attached.
    #[must_use]
    pub fn attached(&self, d: Dom) -> bool {
        self.groups.contains_key(&d)
    }

    /// True if the emulated group is attached.
    #[must_use]
    pub fn emulated_attached(&self) -> bool {
        self.emulated_attached
    }

    /// Number of IOMMU domains.
    #[must_use]
    pub fn domains(&self) -> usize {
        self.groups.len()
    }

    /// Pages charged now: every page of every mapping while an IOMMU domain exists, else the
    /// pages devices pin; plus pages waiting for a flush.
    #[must_use]
    pub fn locked_pages(&self) -> u64 {
        let live = if self.iommu() {
            self.maps.values().map(|m| m.size / PAGE).sum()
        } else {
            self.pins.len() as u64
        };
        live + self.pending_pages()
    }

    /// Unmap notifications sent so far (each to every registered device).
    #[must_use]
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Pages unmapped but waiting for a flush (lazy invalidation).
    #[must_use]
    pub fn pending_pages(&self) -> u64 {
        self.pending.iter().map(|p| p.pages).sum()
    }

    fn over_limit(&self, pages: u64) -> bool {
        self.cfg.locked_limit.is_some_and(|l| pages > l)
    }

    /// `dma_avail`.
    #[must_use]
    pub fn dma_avail(&self) -> u64 {
        u64::from(self.cfg.dma_limit) - self.maps.len() as u64
    }

    /// Mappings as (iova, size), ascending.
    #[must_use]
    pub fn mappings(&self) -> Vec<(u64, u64)> {
        self.maps.iter().map(|(&k, m)| (k, m.size)).collect()
    }

    // ----- lazy invalidation -----

    /// Domain `d` flushes: it lets go of every entry it holds; entries no domain holds are
    /// released (unpinned, uncharged).
    fn flush_domain(&mut self, d: Dom) {
        for p in &mut self.pending {
            p.holders.remove(&d);
        }
        self.pending.retain(|p| !p.holders.is_empty());
    }

    /// The pins of `[iova, iova + size)` (`pages` charged) leave every domain: released now
    /// under strict invalidation, queued in every domain's ring under lazy.
    fn release(&mut self, iova: u64, size: u64, pages: u64) {
        let Some(lazy) = self.cfg.lazy else { return };
        if !self.iommu() || size == 0 {
            return;
        }
        let doms: Vec<Dom> = self.groups.keys().copied().collect();
        for &d in &doms {
            // A full ring is flushed before the entry goes in; the timer stays as it was.
            let queued = self
                .pending
                .iter()
                .filter(|p| p.holders.contains(&d))
                .count();
            if queued >= lazy.capacity {
                self.flush_domain(d);
            }
        }
        self.pending.push(Pending {
            iova,
            size,
            pages,
            holders: doms.iter().copied().collect(),
        });
        let deadline = self.now + lazy.timeout;
        for g in self.groups.values_mut() {
            g.deadline.get_or_insert(deadline);
        }
    }

    /// The clock moves `ticks` on; expired timers flush their domain (every container
    /// operation runs them).
    pub fn tick(&mut self, ticks: u64) {
        self.now += ticks;
        let expired: Vec<Dom> = self
            .groups
            .iter()
            .filter(|(_, g)| g.deadline.is_some_and(|t| self.now >= t))
            .map(|(&d, _)| d)
            .collect();
        for d in expired {
            self.flush_domain(d);
            if let Some(g) = self.groups.get_mut(&d) {
                g.deadline = None;
            }
        }
    }

    /// Every domain flushes now.
    pub fn flush(&mut self) {
        let doms: Vec<Dom> = self.groups.keys().copied().collect();
        for d in doms {
            self.flush_domain(d);
            if let Some(g) = self.groups.get_mut(&d) {
                g.deadline = None;
            }
        }
    }

    /// True if a device of `d` could still reach `[iova, iova + len)` through a translation
    /// whose invalidation is pending (lazy mode's window): what it does there is not specified.
    #[must_use]
    pub fn stale_window(&self, d: Dom, iova: u64, len: u64) -> bool {
        self.pending
            .iter()
            .any(|p| p.holders.contains(&d) && overlaps(p.iova, p.size, iova, len))
    }

    // ----- MAP_DMA -----

    /// MAP_DMA.
    ///
    /// # Errors
    /// The errno of `vfio_dma_do_map` (v6.18) in its order; pinning goes page by page, so the
    /// first page that cannot be pinned (`EFAULT`) or would exceed the locked-memory limit
    /// (`ENOMEM`, `vfio_pin_pages_remote`) decides.
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
    pub fn map(
        &mut self,
        vaddr: u64,
        iova: u64,
        size: u64,
        read: bool,
        write: bool,
        vaddr_flag: bool,
        mem: &dyn ModelMemory,
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
        if self.maps.len() as u64 >= u64::from(self.cfg.dma_limit) {
            return Err(ENOSPC);
        }
        if !self.valid_iova(iova, end) {
            return Err(EINVAL);
        }
        if self.iommu() {
            let locked = self.locked_pages();
            // Pages pinned, charged and mapped run by run: a failure in a run undoes that run
            // at once; the runs before it were mapped, so they leave like an unmap.
            let mut run_start = 0;
            for p in 0..size / PAGE {
                let v = vaddr + p * PAGE;
                if p > 0 && !mem.continues_run(v) {
                    run_start = p;
                }
                let err = if !mem.pinnable(v, write) {
                    Some(EFAULT)
                } else if self.over_limit(locked + p + 1) {
                    Some(ENOMEM)
                } else {
                    None
                };
                if let Some(e) = err {
                    self.release(iova, run_start * PAGE, run_start);
                    return Err(e);
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

    // ----- dirty reports -----

    /// Every page of every IOMMU-mapped mapping is dirty: kernel-exact, while an IOMMU group
    /// has never pinned; precise, while such a group's domain has no dirty bits.
    fn full(&self) -> bool {
        self.groups
            .iter()
            .any(|(&d, g)| !g.pinned_scope && (!self.cfg.precise || d == Dom::B))
    }

    fn report(&mut self, key: u64, base: u64, bits: &mut BTreeSet<u64>) {
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

    // ----- UNMAP_DMA -----

    /// UNMAP_DMA: `all`, `vaddr` and `bitmap` flags. Pins in removed mappings are released (the
    /// devices unpin on notification). Returns the bytes and the dirty pages (relative to `iova`).
    ///
    /// # Errors
    /// The errno of `vfio_dma_do_unmap` (v6.18); `EBUSY` at the first mapping a stubborn device
    /// keeps pinned (the kernel `BUG_ON`s after 10 retries), the mappings before it removed and
    /// the other devices' pins in it released.
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
        if self.cfg.version == Version::V2 && !all {
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
                if self.cfg.version == Version::V1 && iova > k {
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
            if self.cfg.version == Version::V1 && iova > k {
                break;
            }
            let size = self.maps[&k].size;
            let in_k = |p: u64| p >= k && p <= k + (size - 1);
            // Every device is told about the whole mapping; the cooperative ones unpin. A
            // mapping still pinned is announced again, 11 times in all (`vfio_dma_do_unmap`
            // retries 10 times).
            if self.pins.keys().any(|&p| in_k(p)) {
                self.notifications += 1;
                for (_, devs) in self.pins.iter_mut().filter(|(&p, _)| in_k(p)) {
                    devs.retain(|&d, _| d == ModelDevice::Emulated && self.cfg.stubborn_emulated);
                }
                self.pins.retain(|_, devs| !devs.is_empty());
                if self.pins.keys().any(|&p| in_k(p)) {
                    self.notifications += 10;
                    return Err(EBUSY);
                }
            }
            if bitmap {
                self.report(k, iova, &mut bits);
            }
            let m = self.maps.remove(&k).ok_or(EINVAL)?;
            self.pins.retain(|&p, _| p < k || p > k + (m.size - 1));
            self.dirty.retain(|&p| p < k || p > k + (m.size - 1));
            self.release(k, m.size, m.size / PAGE);
            done += m.size;
        }
        Ok((done, bits))
    }

    // ----- devices -----

    fn dev_attached(&self, dev: ModelDevice) -> bool {
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
                if !mem.pinnable(m.vaddr + (at - k), write) {
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
