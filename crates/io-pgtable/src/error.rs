//! Errors of the page-table layer and their kernel errno.
//!
//! Each variant corresponds to one failure of `io-pgtable-arm.c` or the iommu core
//! (`drivers/iommu/iommu.c`), v6.18. [`Error::errno`] is the one exhaustive
//! mapping to the kernel's errno; `tests/errno_table.rs` pins every variant.

use crate::addr::{Iova, PhysAddr};

/// A failure of a page-table operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The configuration cannot be allocated (no usable granule, address sizes out of range,
    /// a quirk the format rejects, an output size with no IPS/PS encoding, ...).
    #[error("invalid page-table configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `pgsize` is not exactly one size of the table's `pgsize_bitmap` (`arm_lpae_map_pages`,
    /// first check).
    #[error("page size {pgsize:#x} is not a single supported size")]
    InvalidPageSize {
        /// The rejected size.
        pgsize: u64,
    },
    /// The input address lies outside the input address size (`arm_lpae_map_pages`, `-ERANGE`).
    #[error("iova {iova} is outside the {ias}-bit input range")]
    IovaOutOfRange {
        /// The first out-of-range address of the request.
        iova: Iova,
        /// The table's input address size.
        ias: u32,
    },
    /// The output address lies outside the output address size (`arm_lpae_map_pages`, `-ERANGE`).
    #[error("physical address {paddr} is outside the {oas}-bit output range")]
    PhysOutOfRange {
        /// The first out-of-range address of the request.
        paddr: PhysAddr,
        /// The table's output address size.
        oas: u32,
    },
    /// The protection has neither READ nor WRITE (`arm_lpae_map_pages`, `-EINVAL`).
    #[error("mapping must be readable or writable")]
    NoAccess,
    /// A leaf already maps part of the range (`__arm_lpae_map`, `arm_lpae_init_pte`: `-EEXIST`).
    #[error("iova {iova} is already mapped")]
    Exists {
        /// The address of the existing leaf that collided.
        iova: Iova,
    },
    /// Table memory could not be allocated (the table-memory limit or an injected fault).
    #[error("out of page-table memory")]
    NoMemory,
    /// An address or size is not aligned to the smallest page size (iommu core `__iommu_map`).
    #[error("{what} {value:#x} is not aligned to the minimum page size {align:#x}")]
    Unaligned {
        /// Which argument: "iova", "paddr" or "size".
        what: &'static str,
        /// Its value.
        value: u64,
        /// The required alignment.
        align: u64,
    },
    /// The range is empty.
    #[error("empty range")]
    EmptyRange,
    /// `start + length - 1` wraps past `u64::MAX`.
    #[error("range {start:#x}+{len:#x} wraps the address space")]
    Overflow {
        /// Start of the range.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// A dirty query hit an address that is neither a leaf nor a table (`io_pgtable_visit` under
    /// `arm_lpae_read_and_clear_dirty`, `-EINVAL`).
    #[error("no mapping at {iova} inside the dirty query")]
    Hole {
        /// The first unmapped address reached.
        iova: Iova,
    },
    /// A dirty query wraps or leaves the input range (`arm_lpae_read_and_clear_dirty`, `-EINVAL`).
    #[error("dirty query {iova}+{size:#x} is outside the input range")]
    DirtyOutOfRange {
        /// Start of the query.
        iova: Iova,
        /// Its size.
        size: u64,
    },
    /// Dirty tracking is only implemented by the stage-1 format (`arm_lpae_read_and_clear_dirty`
    /// rejects every other format; SMMUv3 sets `IO_PGTABLE_QUIRK_ARM_HD` on stage 1 only).
    #[error("dirty tracking needs a stage-1 table")]
    DirtyUnsupported,
}

impl Error {
    /// The kernel errno for this error (positive, as it lands in `errno`).
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidConfig { .. }
            | Error::InvalidPageSize { .. }
            | Error::NoAccess
            | Error::Unaligned { .. }
            | Error::EmptyRange
            | Error::Hole { .. }
            | Error::DirtyOutOfRange { .. }
            | Error::DirtyUnsupported => EINVAL,
            Error::IovaOutOfRange { .. } | Error::PhysOutOfRange { .. } => ERANGE,
            Error::Exists { .. } => EEXIST,
            Error::NoMemory => ENOMEM,
            Error::Overflow { .. } => EOVERFLOW,
        }
    }
}

/// Linux errno values used by this crate (asm-generic numbering, identical on x86-64 and arm64).
pub mod errno {
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Math result not representable.
    pub const ERANGE: i32 = 34;
    /// Value too large for defined data type.
    pub const EOVERFLOW: i32 = 75;
}
use errno::{EEXIST, EINVAL, ENOMEM, EOVERFLOW, ERANGE};
