//! IOMMU groups as a container sees them (`struct vfio_iommu_group` and what
//! `vfio_iommu_type1_attach_group` asks of a group, v6.18).
//!
//! An IOMMU-backed group brings an [`IommuDesc`]: what `iommu_paging_domain_alloc` and the
//! group's reserved regions would tell the kernel (page-table format, aperture, reserved regions,
//! MSI isolation, cache coherency). An emulated group (mdev-style) has no domain. Reserved regions
//! are `(start, len)` with an exclusive end, converted to inclusive at the IOVA-list boundary.

use io_pgtable::{Config, Format, Quirks};

/// An IOMMU group number (`/dev/vfio/<N>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `enum iommu_resv_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResvKind {
    /// `IOMMU_RESV_DIRECT`: identity-mapped, must stay out of the IOVA space.
    Direct,
    /// `IOMMU_RESV_DIRECT_RELAXABLE`: identity-mapped but may be reused (ignored by type1).
    DirectRelaxable,
    /// `IOMMU_RESV_RESERVED`.
    Reserved,
    /// `IOMMU_RESV_MSI`: hardware MSI window.
    Msi,
    /// `IOMMU_RESV_SW_MSI`: software-managed MSI window.
    SwMsi,
}

/// A reserved IOVA region of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes (non-zero).
    pub len: u64,
    /// Type.
    pub kind: ResvKind,
}

impl ReservedRegion {
    /// Inclusive end, or `None` if the region is empty or wraps.
    #[must_use]
    pub fn last(&self) -> Option<u64> {
        io_pgtable::addr::last_of(self.start, self.len)
    }
}

/// Whether a group's MSIs are isolated (`iommu_group_has_isolated_msi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiIsolation {
    /// Interrupt remapping or equivalent.
    Isolated,
    /// Not isolated: attaching needs `allow_unsafe_interrupts`.
    NotIsolated,
}

/// Whether the domain enforces cache coherency (`enforce_cache_coherency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheCoherency {
    /// No-snoop is blocked: `VFIO_DMA_CC_IOMMU` holds.
    Enforced,
    /// Not enforced.
    NotEnforced,
}

/// Aperture of a domain, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aperture {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA (inclusive).
    pub end: u64,
}

/// What an IOMMU-backed group's driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuDesc {
    /// Identity of the IOMMU driver (`iommu_ops`); domains are shared only within one.
    pub ops: u32,
    /// The page table of the domain.
    pub table: Config,
    /// Domain aperture.
    pub aperture: Aperture,
    /// Reserved regions of the group.
    pub reserved: Vec<ReservedRegion>,
    /// MSI isolation.
    pub msi: MsiIsolation,
    /// Cache coherency enforcement.
    pub coherency: CacheCoherency,
}

/// The x86 MSI window, reserved on every x86 IOMMU group.
pub const X86_MSI_WINDOW: ReservedRegion = ReservedRegion {
    start: 0xfee0_0000,
    len: 0x10_0000,
    kind: ResvKind::Msi,
};

impl IommuDesc {
    /// A typical x86 host: 4K|2M|1G pages, a 48-bit aperture, the MSI window reserved, isolated
    /// MSI, coherent.
    #[must_use]
    pub fn x86_default() -> Self {
        IommuDesc {
            ops: 1,
            table: Config::new(Format::ArmLpaeS1, (1 << 12) | (1 << 21) | (1 << 30), 48, 48)
                .with_quirks(Quirks::ARM_HD),
            aperture: Aperture {
                start: 0,
                end: (1 << 48) - 1,
            },
            reserved: vec![X86_MSI_WINDOW],
            msi: MsiIsolation::Isolated,
            coherency: CacheCoherency::Enforced,
        }
    }

    /// True if a group with `other` can share this description's domain: same driver, same
    /// coherency (the kernel's test), and the same page-table and aperture (what a real driver's
    /// attach would check).
    #[must_use]
    pub fn domain_compatible(&self, other: &IommuDesc) -> bool {
        self.ops == other.ops
            && self.coherency == other.coherency
            && self.table == other.table
            && self.aperture == other.aperture
    }
}

/// The kind of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKind {
    /// Backed by an IOMMU: mappings are pinned and go into a domain.
    Iommu(IommuDesc),
    /// Emulated (mdev-style): devices pin pages on demand (`VFIO_EMULATED_IOMMU`).
    Emulated,
}

/// A group as added to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Its number.
    pub id: GroupId,
    /// Its kind.
    pub kind: GroupKind,
}

impl GroupSpec {
    /// An IOMMU-backed group with the x86 default description.
    #[must_use]
    pub fn iommu(id: u32) -> Self {
        GroupSpec {
            id: GroupId(id),
            kind: GroupKind::Iommu(IommuDesc::x86_default()),
        }
    }

    /// An emulated group.
    #[must_use]
    pub fn emulated(id: u32) -> Self {
        GroupSpec {
            id: GroupId(id),
            kind: GroupKind::Emulated,
        }
    }
}
