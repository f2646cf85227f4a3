//! A VFIO container: groups, `VFIO_SET_IOMMU`, and the typed API (`drivers/vfio/container.c` and
//! `drivers/vfio/vfio_iommu_type1.c`, v6.18).
//!
//! The container glue of `drivers/vfio/container.c`: groups are set on the container, then
//! `VFIO_SET_IOMMU` opens the type1 backend and attaches every group; a group set later is
//! attached at once; removing the last group releases the backend (every mapping is lost and the
//! container needs `VFIO_SET_IOMMU` again). One lock serialises every operation, as
//! `iommu->lock` does.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::addr::{Iova, PhysAddr, Vaddr};
use crate::api::{Info, MapDma, Perm, UnmapDma, UnmapFlags, Version, PIN_PAGES_MAX};
use crate::config::ContainerConfig;
#[cfg(feature = "test-support")]
use crate::config::FaultPlan;
use crate::device::{DeviceEntry, DeviceId, DmaUnmapHandler};
use crate::dirty::BitmapSink;
use crate::engine::DmaEngine;
use crate::error::{Error, Result};
use crate::group::{GroupId, GroupSpec};
use crate::mm::{Access, Mm};
use crate::type1::{BitmapDest, Type1, UnmapProgress, UnmapStep};
use crate::uapi::raw;

mod dirty;

/// One mapping as seen from outside (for inspection and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingInfo {
    /// First IOVA.
    pub iova: Iova,
    /// Size in bytes.
    pub size: u64,
    /// User address.
    pub vaddr: Vaddr,
    /// What devices may do (MAP_DMA's READ and WRITE).
    pub perm: Perm,
    /// Pinned and mapped into the IOMMU domains.
    pub iommu_mapped: bool,
    /// Vaddr invalidated by UNMAP_DMA|VADDR.
    pub vaddr_invalid: bool,
    /// Pages charged for it.
    pub locked_pages: u64,
    /// Pages pinned for the IOMMU (0 without a domain). Reserved pages are not pinned.
    pub iommu_pinned_pages: u64,
    /// Pages mapped into the IOMMU without a pin: reserved pages of a `VM_PFNMAP`-like area
    /// (a device BAR mapping), never pinned nor charged (0 without a domain).
    pub iommu_reserved_pages: u64,
    /// Distinct pages pinned by devices.
    pub device_pinned_pages: u64,
}

/// Observable state of a container (see [`Container::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Groups set on the container.
    pub groups: Vec<GroupId>,
    /// GET_INFO contents, if a backend is set.
    pub info: Option<Info>,
    /// Mappings.
    pub mappings: Vec<MappingInfo>,
    /// Every domain's leaves: (iova, len, pa, raw pte).
    pub domains: Vec<Vec<(u64, u64, u64, u64)>>,
    /// The current owner's locked pages.
    pub locked_pages: u64,
    /// Pages waiting for an IOTLB flush.
    pub pending_pages: u64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cfg: ContainerConfig,
    pub(crate) mm: Arc<Mm>,
    pub(crate) groups: Vec<GroupSpec>,
    pub(crate) iommu: Option<Type1>,
    pub(crate) devices: Vec<DeviceEntry>,
    pub(crate) next_device: u32,
}

/// A VFIO container (`/dev/vfio/vfio` after open).
#[derive(Debug)]
pub struct Container {
    inner: Mutex<Inner>,
    /// UNMAP_DMA calls that have returned (see [`Container::unmaps_completed`]).
    unmaps: std::sync::atomic::AtomicU64,
}

impl Container {
    /// An empty container whose mappings are owned by `mm` (the calling process).
    #[must_use]
    pub fn new(cfg: ContainerConfig, mm: Arc<Mm>) -> Self {
        Container {
            inner: Mutex::new(Inner {
                cfg,
                mm,
                groups: Vec::new(),
                iommu: None,
                devices: Vec::new(),
                next_device: 1,
            }),
            unmaps: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many UNMAP_DMA calls have returned, successfully or not. An emulated device whose
    /// unmap handler was called during an unmap can tell from it when that unmap is over: the
    /// count is higher than when the handler ran. (A device that pins again in the range
    /// before then makes the unmap retry, and after [`crate::UNMAP_RETRIES`] fail with `EBUSY`.)
    #[must_use]
    pub fn unmaps_completed(&self) -> u64 {
        self.unmaps.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the calling owner (another process, or this one after `exec`), for MAP|VADDR.
    pub fn set_current_mm(&self, mm: Arc<Mm>) {
        self.lock().mm = mm;
    }

    /// `VFIO_GET_API_VERSION`.
    #[must_use]
    pub fn api_version(&self) -> u32 {
        raw::VFIO_API_VERSION
    }

    /// `VFIO_CHECK_EXTENSION` (`vfio_iommu_type1_check_extension`, v6.18): before `VFIO_SET_IOMMU`
    /// the answer for no backend.
    #[must_use]
    pub fn check_extension(&self, ext: u64) -> u32 {
        let g = self.lock();
        match &g.iommu {
            Some(t) => t.check_extension(ext),
            None => Type1::check_extension_unset(ext),
        }
    }

    /// `VFIO_GROUP_SET_CONTAINER`: adds a group; with a backend set it is attached at once and a
    /// failure leaves it out.
    ///
    /// # Errors
    /// [`Error::GroupAttached`] if it is already in the container, or the attach errors of
    /// `vfio_iommu_type1_attach_group`.
    pub fn set_group(&self, spec: GroupSpec) -> Result<()> {
        let mut g = self.lock();
        if g.groups.iter().any(|s| s.id == spec.id) {
            return Err(Error::GroupAttached { group: spec.id.0 });
        }
        if let Some(t) = g.iommu.as_mut() {
            t.poll();
            t.attach_group(&spec)?;
        }
        g.groups.push(spec);
        Ok(())
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`: removes a group; the last group releases the backend.
    ///
    /// # Errors
    /// [`Error::GroupNotAttached`] if the group is not in this container.
    pub fn unset_group(&self, id: GroupId) -> Result<()> {
        let mut g = self.lock();
        let Some(pos) = g.groups.iter().position(|s| s.id == id) else {
            return Err(Error::GroupNotAttached { group: id.0 });
        };
        if let Some(t) = g.iommu.as_mut() {
            t.detach_group(id)?;
        }
        g.groups.remove(pos);
        if g.groups.is_empty() {
            if let Some(mut t) = g.iommu.take() {
                t.release();
            }
        }
        Ok(())
    }

    /// Groups set on the container, in order.
    #[must_use]
    pub fn groups(&self) -> Vec<GroupId> {
        self.lock().groups.iter().map(|s| s.id).collect()
    }

    /// True once `VFIO_SET_IOMMU` succeeded (and until the last group leaves).
    #[must_use]
    pub fn has_iommu(&self) -> bool {
        self.lock().iommu.is_some()
    }

    /// `VFIO_SET_IOMMU` (`vfio_ioctl_set_iommu`, v6.18) with a type1 version: opens the backend
    /// and attaches every group.
    ///
    /// # Errors
    /// - [`Error::SetIommuState`] without groups or with a backend already set;
    /// - any attach error of a group (`vfio_iommu_type1_attach_group`); the container is left with
    ///   no backend.
    pub fn set_iommu(&self, version: Version) -> Result<()> {
        self.set_iommu_type(u64::from(version.raw()))
    }

    /// `VFIO_SET_IOMMU` with the type number the ioctl passes, in the kernel's order: the
    /// container's state is checked before the type.
    ///
    /// # Errors
    /// As [`Container::set_iommu`], plus (after the state check) [`Error::NoDriver`] for a type
    /// no driver supports (including the removed nesting type) and `EINVAL`
    /// ([`Error::InvalidFlags`]) for `VFIO_UNMAP_ALL`, which CHECK_EXTENSION accepts but `open`
    /// refuses.
    pub(crate) fn set_iommu_type(&self, ty: u64) -> Result<()> {
        let mut g = self.lock();
        if g.groups.is_empty() || g.iommu.is_some() {
            return Err(Error::SetIommuState);
        }
        if Type1::check_extension_unset(ty) == 0 {
            return Err(Error::NoDriver { ty });
        }
        let version = match u32::try_from(ty) {
            Ok(raw::VFIO_TYPE1_IOMMU) => Version::V1,
            Ok(raw::VFIO_TYPE1v2_IOMMU) => Version::V2,
            // CHECK_EXTENSION(UNMAP_ALL) is positive, but type1's open() rejects the type.
            _ => return Err(Error::InvalidFlags { flags: 0 }),
        };
        let mut t = Type1::new(version, g.cfg.clone());
        for spec in &g.groups {
            if let Err(e) = t.attach_group(spec) {
                t.release();
                return Err(e);
            }
        }
        g.iommu = Some(t);
        Ok(())
    }

    /// Runs `f` on the backend.
    pub(crate) fn with_iommu<T>(
        &self,
        f: impl FnOnce(&mut Type1, &Arc<Mm>) -> Result<T>,
    ) -> Result<T> {
        let mut g = self.lock();
        let inner = &mut *g;
        let t = inner.iommu.as_mut().ok_or(Error::NoIommu)?;
        t.poll();
        f(t, &inner.mm)
    }

    /// `VFIO_IOMMU_MAP_DMA`, from `vfio_dma_do_map` (v6.18) on.
    ///
    /// # Errors
    /// The errors of `vfio_dma_do_map` in the kernel's order; on any error nothing changed.
    pub fn map_dma(&self, req: &MapDma) -> Result<()> {
        self.with_iommu(|t, mm| t.map_dma(req, mm))
    }

    /// `VFIO_IOMMU_UNMAP_DMA`, from `vfio_dma_do_unmap` (v6.18) on. Returns the bytes unmapped.
    /// A GET_DIRTY_BITMAP request needs a bitmap: use [`Container::unmap_dma_dirty`] or
    /// [`Container::ioctl`].
    ///
    /// # Errors
    /// The errors of `vfio_dma_do_unmap` in the kernel's order; on any error nothing changed,
    /// except that mappings removed before devices failed to unpin ([`Error::UnmapBusy`]) stay
    /// removed.
    ///
    /// A request with GET_DIRTY_BITMAP fails with `EINVAL` ([`Error::InvalidBitmap`]) before
    /// anything is checked or removed: without a bitmap the dirty pages of the removed
    /// mappings would be lost.
    pub fn unmap_dma(&self, req: &UnmapDma) -> Result<u64> {
        if req.flags.contains(UnmapFlags::GET_DIRTY_BITMAP) {
            return Err(Error::InvalidBitmap {
                reason: "GET_DIRTY_BITMAP needs a bitmap (Container::unmap_dma_dirty)",
            });
        }
        self.unmap_loop(req, None)
    }

    /// The unmap loop of `vfio_dma_do_unmap` (its `again:` retry after
    /// `vfio_notify_dma_unmap`): passes under the lock, device notifications without it. The
    /// pass that finishes the call, successfully or not, counts it in
    /// [`Container::unmaps_completed`] before it lets the lock go.
    pub(crate) fn unmap_loop(
        &self,
        req: &UnmapDma,
        mut bitmap: Option<&mut dyn BitmapSink>,
    ) -> Result<u64> {
        let mut progress = UnmapProgress::default();
        loop {
            // One lock acquisition per pass: the pass, and the handlers to notify if it asks.
            let (iova, size, handlers) = {
                let mut g = self.lock();
                let inner = &mut *g;
                let step = inner.iommu.as_mut().ok_or(Error::NoIommu).and_then(|t| {
                    t.poll();
                    let mut dest = bitmap.as_deref_mut().map(|sink| BitmapDest {
                        sink,
                        base: req.iova.raw(),
                    });
                    t.unmap_pass(req, dest.as_mut(), &mut progress)
                });
                let (iova, size) = match step {
                    Ok(UnmapStep::Notify { iova, size }) => (Iova(iova), size),
                    Ok(UnmapStep::Done(n)) => {
                        self.count_unmap();
                        return Ok(n);
                    }
                    Err(e) => {
                        self.count_unmap();
                        return Err(e);
                    }
                };
                let handlers: Vec<Arc<dyn DmaUnmapHandler>> = inner
                    .devices
                    .iter()
                    .filter_map(|d| d.unmap.clone())
                    .collect();
                (iova, size, handlers)
            };
            // `vfio_notify_dma_unmap`, without the container lock.
            for h in handlers {
                h.dma_unmap(iova, size);
            }
        }
    }

    /// Counts one returning UNMAP_DMA. Called with the container's lock held, so calls never
    /// race and a load and a store do (no read-modify-write on every UNMAP); readers see the
    /// new count once the lock is released (`Release` here, `Acquire` in
    /// [`Container::unmaps_completed`]).
    fn count_unmap(&self) {
        use std::sync::atomic::Ordering;
        let n = self.unmaps.load(Ordering::Relaxed);
        self.unmaps.store(n + 1, Ordering::Release);
    }

    // ----- devices (`vfio_pin_pages`, `vfio_unpin_pages`, `vfio_dma_rw`) -----

    /// Registers a device of `group` (`vfio_iommu_type1_register_device`). A device that pins
    /// pages must give an unmap handler.
    ///
    /// # Errors
    /// [`Error::GroupNotAttached`] if the group is not in this container.
    pub fn register_device(
        &self,
        group: GroupId,
        unmap: Option<Arc<dyn DmaUnmapHandler>>,
    ) -> Result<DeviceId> {
        let mut g = self.lock();
        if !g.groups.iter().any(|s| s.id == group) {
            return Err(Error::GroupNotAttached { group: group.0 });
        }
        let id = DeviceId(g.next_device);
        g.next_device += 1;
        g.devices.push(DeviceEntry { id, group, unmap });
        Ok(id)
    }

    /// Unregisters a device, releasing every pin it still holds.
    ///
    /// # Errors
    /// [`Error::NoDevice`] if it is not registered.
    pub fn unregister_device(&self, id: DeviceId) -> Result<()> {
        let mut g = self.lock();
        let pos = g
            .devices
            .iter()
            .position(|d| d.id == id)
            .ok_or(Error::NoDevice { device: id.0 })?;
        g.devices.remove(pos);
        if let Some(t) = g.iommu.as_mut() {
            t.release_device(id);
        }
        Ok(())
    }

    fn device(g: &Inner, id: DeviceId) -> Result<DeviceEntry> {
        g.devices
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .ok_or(Error::NoDevice { device: id.0 })
    }

    /// `vfio_pin_pages` (`vfio_iommu_type1_pin_pages`, v6.18): pins `npage` pages from `iova` for
    /// `device` and returns their physical addresses. All or nothing.
    ///
    /// # Errors
    /// In order: `EINVAL` for `npage == 0`, an unknown device, one without an unmap handler, or
    /// one whose group is not in this container; `E2BIG` over 512 pages; then type1's: `EACCES` on
    /// v1, `EOVERFLOW`, `EBUSY` while vaddrs are invalid, `EINVAL` for an unmapped page, `EPERM`
    /// for a forbidden access, `EFAULT`, `ENOMEM`, `EINVAL` for a reserved page.
    pub fn pin_pages(
        &self,
        device: DeviceId,
        iova: Iova,
        npage: u64,
        perm: Perm,
    ) -> Result<Vec<PhysAddr>> {
        let mut g = self.lock();
        if npage == 0 {
            return Err(Error::ZeroSize);
        }
        let dev = Self::device(&g, device)?;
        if dev.unmap.is_none() {
            return Err(Error::NoUnmapHandler { device: device.0 });
        }
        // `vfio_device_has_container`: the device's group must be in this container.
        if !g.groups.iter().any(|s| s.id == dev.group) {
            return Err(Error::GroupNotAttached { group: dev.group.0 });
        }
        if npage > PIN_PAGES_MAX {
            return Err(Error::TooManyPages { npage });
        }
        let t = g.iommu.as_mut().ok_or(Error::NoIommu)?;
        t.poll();
        t.pin_pages(&dev, iova.raw(), npage, perm)
            .map(|pas| pas.into_iter().map(PhysAddr).collect())
    }

    /// `vfio_unpin_pages` (`vfio_iommu_type1_unpin_pages`, v6.18), checked: every page must be
    /// pinned by `device` (docs/SEMANTICS.md, "The container").
    ///
    /// # Errors
    /// `EINVAL` for `npage` 0 ([`Error::ZeroSize`]), an unknown device, or a page the device
    /// does not hold ([`Error::NotPinnedByDevice`]); `E2BIG` over 512 (the kernel's
    /// `vfio_unpin_pages` WARNs and returns for both counts); `EACCES` on v1. Nothing changes on
    /// error.
    pub fn unpin_pages(&self, device: DeviceId, iova: Iova, npage: u64) -> Result<()> {
        let mut g = self.lock();
        if npage == 0 {
            return Err(Error::ZeroSize);
        }
        if npage > PIN_PAGES_MAX {
            return Err(Error::TooManyPages { npage });
        }
        let dev = Self::device(&g, device)?;
        let t = g.iommu.as_mut().ok_or(Error::NoIommu)?;
        t.unpin_pages(dev.id, iova.raw(), npage)
    }

    /// `vfio_dma_rw` (`vfio_iommu_type1_dma_rw`, v6.18): copies between `buf` and guest memory at
    /// `iova`.
    ///
    /// # Errors
    /// `EINVAL` for an empty buffer, an unknown device or an unmapped address; `EBUSY` while
    /// vaddrs are invalid; `EPERM` for a forbidden access (a write-only mapping refuses both);
    /// `EFAULT`. Chunks already copied stay copied.
    pub fn dma_rw(
        &self,
        device: DeviceId,
        iova: Iova,
        buf: &mut [u8],
        access: Access,
    ) -> Result<()> {
        let mut g = self.lock();
        if buf.is_empty() {
            return Err(Error::ZeroSize);
        }
        let dev = Self::device(&g, device)?;
        if !g.groups.iter().any(|s| s.id == dev.group) {
            return Err(Error::GroupNotAttached { group: dev.group.0 });
        }
        let t = g.iommu.as_mut().ok_or(Error::NoIommu)?;
        t.dma_rw(iova.raw(), buf, access)
    }

    /// A DMA engine for a device of the IOMMU-backed `group`: it reads and writes guest memory
    /// through the group's domain (IOTLB, page walk, hardware dirty bits).
    ///
    /// # Errors
    /// [`Error::GroupNotAttached`] unless the group is attached and IOMMU-backed.
    pub fn dma_engine(&self, group: GroupId) -> Result<DmaEngine> {
        let g = self.lock();
        let t = g.iommu.as_ref().ok_or(Error::NoIommu)?;
        for d in &t.domains {
            if let Some(gs) = d.groups.iter().find(|gs| gs.id == group) {
                return Ok(DmaEngine::new(
                    d.domain.clone(),
                    gs.attached.clone(),
                    g.mm.clone(),
                ));
            }
        }
        Err(Error::GroupNotAttached { group: group.0 })
    }

    /// The backend's version, if set.
    #[must_use]
    pub fn version(&self) -> Option<Version> {
        self.lock().iommu.as_ref().map(|t| t.version)
    }

    /// `VFIO_IOMMU_GET_INFO` contents (`vfio_iommu_type1_get_info`, v6.18).
    ///
    /// # Errors
    /// [`Error::NoIommu`] before `VFIO_SET_IOMMU`.
    pub fn info(&self) -> Result<Info> {
        self.with_iommu(|t, _| Ok(t.info()))
    }

    /// The mappings, ascending.
    #[must_use]
    pub fn mappings(&self) -> Vec<MappingInfo> {
        let g = self.lock();
        g.iommu
            .as_ref()
            .map(|t| {
                t.dmas
                    .iter()
                    .map(|d| MappingInfo {
                        iova: Iova(d.iova),
                        size: d.size,
                        vaddr: Vaddr(d.vaddr),
                        perm: d.prot.perm(),
                        iommu_mapped: d.iommu_mapped,
                        vaddr_invalid: d.vaddr_invalid(),
                        locked_pages: d.locked_vm,
                        iommu_pinned_pages: d
                            .runs
                            .iter()
                            .filter(|r| !r.reserved)
                            .map(|r| r.npages)
                            .sum(),
                        iommu_reserved_pages: d
                            .runs
                            .iter()
                            .filter(|r| r.reserved)
                            .map(|r| r.npages)
                            .sum(),
                        device_pinned_pages: d.pfn_list.len(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Injects allocation failures (fault-injection tests, feature `test-support`; see
    /// [`FaultPlan`]).
    #[cfg(feature = "test-support")]
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        let mut g = self.lock();
        if let Some(t) = g.iommu.as_mut() {
            t.set_faults(plan);
        }
    }

    /// Flushes every lazy domain now, releasing pins that wait for it.
    pub fn flush(&self) {
        let g = self.lock();
        if let Some(t) = &g.iommu {
            for d in &t.domains {
                drop(d.domain.flush());
            }
        }
    }

    /// Translates `iova` in the first IOMMU domain, as a device of that domain would see it.
    #[must_use]
    pub fn iova_to_phys(&self, iova: Iova) -> Option<PhysAddr> {
        let g = self.lock();
        let t = g.iommu.as_ref()?;
        let d = t.domains.first()?;
        d.domain.table().iova_to_phys(iova)
    }

    /// Number of IOMMU domains.
    #[must_use]
    pub fn domain_count(&self) -> usize {
        self.lock().iommu.as_ref().map_or(0, |t| t.domains.len())
    }

    /// Everything observable about the container's state, for "failure changes nothing" checks.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let mappings = self.mappings();
        let g = self.lock();
        let (info, domains) = match &g.iommu {
            Some(t) => (
                Some(t.info()),
                t.domains
                    .iter()
                    .map(|d| {
                        d.domain
                            .table()
                            .leaves()
                            .into_iter()
                            .map(|(i, l, p, pte)| (i.raw(), l, p.raw(), pte))
                            .collect()
                    })
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Snapshot {
            groups: g.groups.iter().map(|s| s.id).collect(),
            info,
            mappings,
            domains,
            locked_pages: g.mm.locked_pages(),
            pending_pages: g.mm.pending_pages(),
        }
    }

    /// Checks every invariant of the backend (the counts `struct vfio_iommu` keeps consistent with
    /// its `vfio_dma` tree, and the locked-memory and page-table rules).
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let g = self.lock();
        match &g.iommu {
            Some(t) => t.check_invariants(),
            None => Ok(()),
        }
    }
}
