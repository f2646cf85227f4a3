//! The vocabulary of the typed API, shared by every layer: page-size constants, the IOMMU type,
//! MAP_DMA and UNMAP_DMA requests and their flags, and what GET_INFO reports
//! (`include/uapi/linux/vfio.h` and `drivers/vfio/vfio_iommu_type1.c`, v6.18).
//!
//! This module depends on nothing else in the crate but the UAPI constants ([`crate::uapi`]).

use crate::addr::{Iova, Vaddr};
use crate::uapi::raw;

/// The kernel's `PAGE_SIZE`.
pub const PAGE_SIZE: u64 = 4096;
/// `PAGE_MASK`.
pub const PAGE_MASK: u64 = !(PAGE_SIZE - 1);
/// `DIRTY_BITMAP_SIZE_MAX`: 256 MiB, reported as `max_dirty_bitmap_size`.
pub const DIRTY_BITMAP_SIZE_MAX: u64 = 1 << 28;
/// Default `dma_entry_limit` (`U16_MAX`).
pub const DEFAULT_DMA_ENTRY_LIMIT: u32 = 65535;
/// `VFIO_PIN_PAGES_MAX_ENTRIES`: pages one `pin_pages` call may pin.
pub const PIN_PAGES_MAX: u64 = PAGE_SIZE / 8;

/// The container's IOMMU type (`VFIO_TYPE1_IOMMU` or `VFIO_TYPE1v2_IOMMU`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Type 1: inexact unmaps allowed (the `!iommu->v2` break in `vfio_dma_do_unmap`), no pinning
    /// or dirty tracking.
    V1,
    /// Type 1 v2: exact unmaps.
    V2,
}

impl Version {
    /// The UAPI type number (`VFIO_TYPE1_IOMMU` or `VFIO_TYPE1v2_IOMMU`).
    #[must_use]
    pub fn raw(self) -> u32 {
        match self {
            Version::V1 => raw::VFIO_TYPE1_IOMMU,
            Version::V2 => raw::VFIO_TYPE1v2_IOMMU,
        }
    }
}

bitflags::bitflags! {
    /// `VFIO_DMA_MAP_FLAG_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MapFlags: u32 {
        /// The device may read.
        const READ = raw::VFIO_DMA_MAP_FLAG_READ;
        /// The device may write.
        const WRITE = raw::VFIO_DMA_MAP_FLAG_WRITE;
        /// Update the vaddr of an invalidated mapping.
        const VADDR = raw::VFIO_DMA_MAP_FLAG_VADDR;
    }
}

impl MapFlags {
    /// The permission part of the flags (READ and WRITE; VADDR dropped).
    #[must_use]
    pub fn perm(self) -> Perm {
        Perm::from_bits_truncate(self.bits())
    }
}

impl From<Perm> for MapFlags {
    fn from(p: Perm) -> Self {
        MapFlags::from_bits_truncate(p.bits())
    }
}

bitflags::bitflags! {
    /// What a device may do, or asks to do, with memory: the one permission type of the typed
    /// API. A mapping has one ([`MapFlags::perm`], [`crate::MappingInfo::perm`]), a pin asks for
    /// one ([`crate::Container::pin_pages`], `IOMMU_READ`/`IOMMU_WRITE`), and a single access is
    /// one of its two bits ([`crate::Access`], [`Perm::allows`]). The bit values are the kernel's
    /// (`VFIO_DMA_MAP_FLAG_READ`/`WRITE` and `IOMMU_READ`/`IOMMU_WRITE` are both 1 and 2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Perm: u32 {
        /// The device may read (`IOMMU_READ`).
        const READ = raw::VFIO_DMA_MAP_FLAG_READ;
        /// The device may write (`IOMMU_WRITE`).
        const WRITE = raw::VFIO_DMA_MAP_FLAG_WRITE;
        /// Both.
        const RW = Self::READ.bits() | Self::WRITE.bits();
    }
}

impl Perm {
    /// True if this permission allows `access`.
    #[must_use]
    pub fn allows(self, access: io_pgtable::Access) -> bool {
        self.contains(Perm::from(access))
    }
}

impl From<io_pgtable::Access> for Perm {
    fn from(a: io_pgtable::Access) -> Self {
        match a {
            io_pgtable::Access::Read => Perm::READ,
            io_pgtable::Access::Write => Perm::WRITE,
        }
    }
}

impl From<Perm> for io_pgtable::Prot {
    /// The page-table protection of a mapping with this permission (READ/WRITE only; the
    /// memory attributes are the domain's business).
    fn from(p: Perm) -> Self {
        let mut prot = io_pgtable::Prot::empty();
        prot.set(io_pgtable::Prot::READ, p.contains(Perm::READ));
        prot.set(io_pgtable::Prot::WRITE, p.contains(Perm::WRITE));
        prot
    }
}

bitflags::bitflags! {
    /// `VFIO_DMA_UNMAP_FLAG_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct UnmapFlags: u32 {
        /// Return the dirty bitmap of the unmapped range.
        const GET_DIRTY_BITMAP = raw::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
        /// Unmap everything (iova and size must be 0).
        const ALL = raw::VFIO_DMA_UNMAP_FLAG_ALL;
        /// Invalidate the vaddr instead of unmapping.
        const VADDR = raw::VFIO_DMA_UNMAP_FLAG_VADDR;
    }
}

/// A MAP_DMA request (after the ioctl wrapper's argsz and flag-mask checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapDma {
    /// User address.
    pub vaddr: Vaddr,
    /// IOVA.
    pub iova: Iova,
    /// Bytes.
    pub size: u64,
    /// Flags.
    pub flags: MapFlags,
}

/// An UNMAP_DMA request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnmapDma {
    /// IOVA (0 with ALL).
    pub iova: Iova,
    /// Bytes (0 with ALL).
    pub size: u64,
    /// Flags.
    pub flags: UnmapFlags,
    /// Page size of the requested dirty bitmap (with GET_DIRTY_BITMAP).
    pub bitmap_pgsize: u64,
}

/// How many times the unmap loop notifies devices about one mapping before giving up (the
/// kernel's `BUG_ON(++retries > 10)`: 11 notifications).
pub const UNMAP_RETRIES: u32 = 10;

/// What GET_INFO reports (`vfio_iommu_type1_get_info`, v6.18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// `iova_pgsizes`.
    pub iova_pgsizes: u64,
    /// MIGRATION cap: the single dirty-bitmap page size.
    pub migration_pgsize: u64,
    /// MIGRATION cap: `max_dirty_bitmap_size`.
    pub max_dirty_bitmap_size: u64,
    /// DMA_AVAIL cap.
    pub dma_avail: u32,
    /// IOVA_RANGE cap (absent when empty), inclusive ranges.
    pub iova_ranges: Vec<(u64, u64)>,
}
