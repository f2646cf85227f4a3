//! Errors of the container and their kernel errno (`drivers/vfio/container.c` and
//! `drivers/vfio/vfio_iommu_type1.c`, v6.18).
//!
//! One variant per distinct failure the kernel can report, so callers can match on the cause
//! while [`Error::errno`] gives exactly what the ioctl would put in `errno`. The mapping is one
//! exhaustive match; `tests/errno_table.rs` pins every variant.

/// A failure of a container operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A user pointer could not be read or written (`copy_from_user`/`copy_to_user`).
    #[error("bad address {addr:#x}")]
    BadAddress {
        /// The faulting user address.
        addr: u64,
    },
    /// `argsz` is smaller than the request's minimum size.
    #[error("argsz {argsz} is below the minimum {minsz}")]
    ArgszTooSmall {
        /// The caller's argsz.
        argsz: u32,
        /// The minimum for this request.
        minsz: u32,
    },
    /// Flags outside the request's mask.
    #[error("unknown flags {flags:#x}")]
    UnknownFlags {
        /// The flags given.
        flags: u32,
    },
    /// A combination of flags the request refuses.
    #[error("invalid flag combination {flags:#x}")]
    InvalidFlags {
        /// The flags given.
        flags: u32,
    },
    /// A size of zero.
    #[error("size must not be zero")]
    ZeroSize,
    /// `start + size - 1` wraps past `u64::MAX`.
    #[error("range {start:#x}+{size:#x} overflows")]
    Overflow {
        /// Start of the range.
        start: u64,
        /// Its size.
        size: u64,
    },
    /// A value not aligned to the IOMMU minimum page size.
    #[error("{what} {value:#x} is not aligned to {align:#x}")]
    Unaligned {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The required alignment.
        align: u64,
    },
    /// MAP_DMA without READ/WRITE (and without VADDR), or with them and VADDR.
    #[error("MAP_DMA needs READ or WRITE, or VADDR alone")]
    InvalidProtection,
    /// MAP_DMA|VADDR found no mapping in the range.
    #[error("no mapping at iova {iova:#x} to update")]
    NoMapping {
        /// The requested iova.
        iova: u64,
    },
    /// MAP_DMA|VADDR on a mapping that is not exactly the range, or whose vaddr is valid.
    #[error("vaddr update does not match an invalidated mapping at {iova:#x}")]
    VaddrUpdateMismatch {
        /// The requested iova.
        iova: u64,
    },
    /// The range overlaps an existing mapping.
    #[error("iova range {iova:#x}+{size:#x} overlaps an existing mapping")]
    Exists {
        /// Requested iova.
        iova: u64,
        /// Requested size.
        size: u64,
    },
    /// `dma_entry_limit` mappings exist already.
    #[error("no mapping slots left (dma_entry_limit {limit})")]
    NoSlots {
        /// The container's limit.
        limit: u32,
    },
    /// The range is not inside one valid IOVA range (aperture minus reserved regions).
    #[error("iova range {iova:#x}+{size:#x} is outside the valid IOVA ranges")]
    OutsideIovaRange {
        /// Requested iova.
        iova: u64,
        /// Requested size.
        size: u64,
    },
    /// A user virtual address is not mapped, or not writable for a writable mapping.
    #[error("vaddr {vaddr:#x} is not mapped with the required access")]
    Fault {
        /// The first bad address.
        vaddr: u64,
    },
    /// Pinning would exceed the locked-memory limit (RLIMIT_MEMLOCK) without the lock capability.
    #[error("locked memory limit exceeded: {locked} + {more} pages > {limit} pages")]
    LockedMemoryLimit {
        /// Pages already charged.
        locked: u64,
        /// Pages asked for.
        more: u64,
        /// The limit in pages.
        limit: u64,
    },
    /// An allocation failed (page-table memory, bitmaps).
    #[error("out of memory")]
    NoMemory,
    /// A v2 unmap or dirty query would split a mapping.
    #[error("range boundary {iova:#x} falls inside a mapping")]
    Bisects {
        /// The boundary that bisects.
        iova: u64,
    },
    /// UNMAP_DMA|VADDR reached a mapping whose vaddr is already invalid.
    #[error("vaddr of the mapping at {iova:#x} is already invalid")]
    VaddrAlreadyInvalid {
        /// Start of that mapping.
        iova: u64,
    },
    /// UNMAP_DMA|VADDR while emulated groups are attached (`EBUSY`, the first check of
    /// `vfio_dma_do_unmap` since v6.3).
    #[error("vaddr invalidation is unavailable with emulated groups attached")]
    VaddrWithEmulatedGroups,
    /// An operation that needs valid vaddrs while some are invalidated (`EBUSY` from
    /// `vfio_iommu_type1_pin_pages`, `vfio_iommu_type1_dma_rw` and
    /// `vfio_iommu_type1_attach_group` since v6.3).
    #[error("a mapping's vaddr is invalid; update it first")]
    VaddrInvalid,
    /// The request is not a container ioctl this backend implements.
    #[error("inappropriate ioctl {request:#x}")]
    NotTty {
        /// The request number.
        request: u64,
    },
    /// A container ioctl that needs an IOMMU driver before `VFIO_SET_IOMMU`.
    #[error("no IOMMU driver set on the container")]
    NoIommu,
    /// `VFIO_SET_IOMMU` without groups, or with a driver already set.
    #[error("container has no group or already has an IOMMU driver")]
    SetIommuState,
    /// No driver supports the requested IOMMU type.
    #[error("no IOMMU driver for type {ty}")]
    NoDriver {
        /// The requested type.
        ty: u64,
    },
    /// The group is already attached to this container.
    #[error("group {group} is already attached")]
    GroupAttached {
        /// The group.
        group: u32,
    },
    /// The group is not attached to this container.
    #[error("group {group} is not attached")]
    GroupNotAttached {
        /// The group.
        group: u32,
    },
    /// A new group's aperture excludes existing mappings or the current IOVA ranges.
    #[error("aperture {start:#x}..={end:#x} conflicts with existing mappings")]
    ApertureConflict {
        /// Aperture start.
        start: u64,
        /// Aperture end (inclusive).
        end: u64,
    },
    /// A reserved region of the new group overlaps an existing mapping.
    #[error("reserved region {start:#x}..={end:#x} overlaps an existing mapping")]
    ReservedConflict {
        /// Region start.
        start: u64,
        /// Region end (inclusive).
        end: u64,
    },
    /// Attaching the group would leave no valid IOVA.
    #[error("no valid IOVA range would remain")]
    NoIovaLeft,
    /// The group's MSIs are not isolated and unsafe interrupts are not allowed.
    #[error("group {group} lacks isolated MSI (allow_unsafe_interrupts is off)")]
    UnsafeInterrupts {
        /// The group.
        group: u32,
    },
    /// The group's IOMMU description is unusable.
    #[error("group {group}: invalid IOMMU description")]
    InvalidDomain {
        /// The group.
        group: u32,
        /// Why.
        #[source]
        source: io_pgtable::Error,
    },
    /// A reserved region of a group description is empty or wraps.
    #[error("reserved region {start:#x}+{len:#x} is empty or wraps")]
    InvalidReservedRegion {
        /// Region start.
        start: u64,
        /// Region length.
        len: u64,
    },
    /// A page-table operation failed.
    #[error("IOMMU domain operation failed")]
    Domain(#[source] io_pgtable::Error),
    /// The bitmap arguments are unusable (size, page size, pointer).
    #[error("invalid dirty bitmap: {reason}")]
    InvalidBitmap {
        /// What is wrong.
        reason: &'static str,
    },
    /// Dirty tracking is not active (GET_BITMAP, unmap with bitmap).
    #[error("dirty page tracking is not started")]
    NotTracking,
    /// The request needs a TYPE1v2 container (pinning, dirty tracking).
    #[error("not supported by a type1 (v1) container")]
    NotV2,
    /// More pages than `VFIO_PIN_PAGES_MAX_ENTRIES` (512).
    #[error("{npage} pages exceed the 512-page pin limit")]
    TooManyPages {
        /// Pages asked for.
        npage: u64,
    },
    /// No such registered device.
    #[error("device {device} is not registered")]
    NoDevice {
        /// The device.
        device: u32,
    },
    /// The device registered no `dma_unmap` handler, which pinning requires (v6.6+).
    #[error("device {device} has no dma_unmap handler")]
    NoUnmapHandler {
        /// The device.
        device: u32,
    },
    /// No mapping covers the address (pin, dma_rw).
    #[error("iova {iova:#x} is not mapped")]
    NotMapped {
        /// The address.
        iova: u64,
    },
    /// The mapping does not allow the access (pin, dma_rw).
    #[error("mapping at {iova:#x} does not allow this access")]
    Permission {
        /// The address.
        iova: u64,
    },
    /// The page is reserved (PFNMAP/MMIO) and cannot be pinned by a device (v6.4+).
    #[error("iova {iova:#x} is backed by a reserved page")]
    ReservedPage {
        /// The address.
        iova: u64,
    },
    /// Beyond the kernel: the device unpins a page it does not hold.
    #[error("device {device} holds no pin at iova {iova:#x}")]
    NotPinnedByDevice {
        /// The device.
        device: u32,
        /// The page.
        iova: u64,
    },
    /// Devices still hold pins in a mapping after 11 unmap notifications (the kernel BUGs).
    #[error("devices still hold pins in {iova:#x}+{size:#x} after 11 unmap notifications")]
    UnmapBusy {
        /// The mapping.
        iova: u64,
        /// Its size.
        size: u64,
    },
    /// A mapping has more pages than a dirty bitmap can describe (`INT_MAX`).
    #[error("mapping at {iova:#x} is too large for a dirty bitmap")]
    TooLargeForBitmap {
        /// The mapping.
        iova: u64,
    },
}

/// Linux errno values (asm-generic numbering, shared by x86-64 and arm64).
pub mod errno {
    pub use libc::{
        E2BIG, EACCES, EBUSY, EEXIST, EFAULT, EINVAL, ENODEV, ENOENT, ENOMEM, ENOSPC, ENOTTY,
        EOVERFLOW, EPERM, ERANGE,
    };
}

impl Error {
    /// The errno the kernel returns for this failure.
    #[must_use]
    pub fn errno(&self) -> i32 {
        use errno::*;
        match self {
            Error::BadAddress { .. } | Error::Fault { .. } => EFAULT,
            Error::ArgszTooSmall { .. }
            | Error::UnknownFlags { .. }
            | Error::InvalidFlags { .. }
            | Error::ZeroSize
            | Error::Unaligned { .. }
            | Error::InvalidProtection
            | Error::VaddrUpdateMismatch { .. }
            | Error::OutsideIovaRange { .. }
            | Error::Bisects { .. }
            | Error::VaddrAlreadyInvalid { .. }
            | Error::NoIommu
            | Error::SetIommuState
            | Error::GroupAttached { .. }
            | Error::GroupNotAttached { .. }
            | Error::ApertureConflict { .. }
            | Error::ReservedConflict { .. }
            | Error::NoIovaLeft
            | Error::InvalidReservedRegion { .. }
            | Error::InvalidBitmap { .. }
            | Error::NotTracking
            | Error::NoDevice { .. }
            | Error::NoUnmapHandler { .. }
            | Error::NotMapped { .. }
            | Error::ReservedPage { .. }
            | Error::NotPinnedByDevice { .. }
            | Error::TooLargeForBitmap { .. } => EINVAL,
            Error::NotV2 => EACCES,
            Error::TooManyPages { .. } => E2BIG,
            Error::Permission { .. } => EPERM,
            Error::UnmapBusy { .. } => EBUSY,
            Error::Overflow { .. } => EOVERFLOW,
            Error::NoMapping { .. } => ENOENT,
            Error::Exists { .. } => EEXIST,
            Error::NoSlots { .. } => ENOSPC,
            Error::LockedMemoryLimit { .. } | Error::NoMemory => ENOMEM,
            Error::VaddrWithEmulatedGroups | Error::VaddrInvalid => EBUSY,
            Error::NotTty { .. } => ENOTTY,
            Error::NoDriver { .. } => ENODEV,
            Error::UnsafeInterrupts { .. } => EPERM,
            Error::InvalidDomain { source, .. } | Error::Domain(source) => source.errno(),
        }
    }
}

/// Result of container operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
