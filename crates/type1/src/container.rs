//! A VFIO container: groups, `VFIO_SET_IOMMU`, and the typed API (spec type1.md §3, §4).
//!
//! The container glue of `drivers/vfio/container.c`: groups are set on the container, then
//! `VFIO_SET_IOMMU` opens the type1 backend and attaches every group; a group set later is
//! attached at once; removing the last group releases the backend (every mapping is lost and the
//! container needs `VFIO_SET_IOMMU` again). One lock serialises every operation, as
//! `iommu->lock` does.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::group::{GroupId, GroupSpec};
use crate::mm::Mm;
use crate::type1::{ContainerConfig, Info, MapDma, Type1, UnmapDma, Version};
use crate::uapi::raw;

/// One mapping as seen from outside (for inspection and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingInfo {
    /// First IOVA.
    pub iova: u64,
    /// Size in bytes.
    pub size: u64,
    /// User address.
    pub vaddr: u64,
    /// Device may read.
    pub read: bool,
    /// Device may write.
    pub write: bool,
    /// Pinned and mapped into the IOMMU domains.
    pub iommu_mapped: bool,
    /// Vaddr invalidated by UNMAP_DMA|VADDR.
    pub vaddr_invalid: bool,
    /// Pages charged for it.
    pub locked_pages: u64,
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
}

/// A VFIO container (`/dev/vfio/vfio` after open).
#[derive(Debug)]
pub struct Container {
    inner: Mutex<Inner>,
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
            }),
        }
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

    /// `VFIO_CHECK_EXTENSION` (§4.1): before `VFIO_SET_IOMMU` the answer for no backend.
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
    /// [`Error::GroupAttached`] if it is already in the container, or the attach errors of §6.1.
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

    /// `VFIO_SET_IOMMU` (§3).
    ///
    /// # Errors
    /// - [`Error::SetIommuState`] without groups or with a backend already set;
    /// - [`Error::NoDriver`] for a type no driver supports (including the removed nesting type);
    /// - `EINVAL` ([`Error::InvalidFlags`]) for `VFIO_UNMAP_ALL`, which CHECK_EXTENSION accepts
    ///   but `open` refuses;
    /// - any attach error of a group (§6.1); the container is left with no backend.
    pub fn set_iommu(&self, ty: u64) -> Result<()> {
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

    /// `VFIO_IOMMU_MAP_DMA` (§4.3), from `vfio_dma_do_map` on.
    ///
    /// # Errors
    /// The errors of §4.3 in the kernel's order; on any error nothing changed.
    pub fn map_dma(&self, req: &MapDma) -> Result<()> {
        self.with_iommu(|t, mm| t.map_dma(req, mm))
    }

    /// `VFIO_IOMMU_UNMAP_DMA` (§4.4), from `vfio_dma_do_unmap` on. Returns the bytes unmapped.
    ///
    /// # Errors
    /// The errors of §4.4 in the kernel's order; on any error nothing changed.
    pub fn unmap_dma(&self, req: &UnmapDma) -> Result<u64> {
        self.with_iommu(|t, _| t.unmap_dma(req))
    }

    /// `VFIO_IOMMU_GET_INFO` contents (§4.2).
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
                        iova: d.iova,
                        size: d.size,
                        vaddr: d.vaddr,
                        read: d.prot.read,
                        write: d.prot.write,
                        iommu_mapped: d.iommu_mapped,
                        vaddr_invalid: d.vaddr_invalid,
                        locked_pages: d.locked_vm,
                    })
                    .collect()
            })
            .unwrap_or_default()
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
    pub fn iova_to_phys(&self, iova: u64) -> Option<u64> {
        let g = self.lock();
        let t = g.iommu.as_ref()?;
        let d = t.domains.first()?;
        d.domain
            .table()
            .iova_to_phys(io_pgtable::Iova(iova))
            .map(io_pgtable::PhysAddr::raw)
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

    /// Checks every invariant of the backend (§2.4 and the locked-memory and page-table rules).
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
