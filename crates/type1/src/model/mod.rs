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

mod devices;
pub mod diff;
mod dirty;
mod groups;
mod lazy;

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
}
