//! ARM LPAE I/O page tables, an IOTLB model with strict and lazy invalidation, and hardware dirty
//! bits: the IOMMU-domain layer under `type1`.
//!
//! The behaviour follows Linux `drivers/iommu/io-pgtable-arm.c` and the iommu core, as written
//! down in the project's `shared/spec/io-pgtable.md` (section numbers in the docs refer to it):
//!
//! - [`Config`] / [`Geometry`]: formats (stage 1 and 2), granules 4K/16K/64K, ias/oas up to 52
//!   bits, `pgsize_bitmap` restriction, start level and stage-2 concatenation (§1);
//! - [`pte`]: bit-exact descriptors (§2);
//! - [`IoPageTable`]: `map_pages`, `unmap_pages` with block splitting (§3.7, kept although the
//!   kernel dropped it in v6.13), `iova_to_phys` returning `Option`, the walker, and the core's
//!   block-size choice in [`IoPageTable::map`] / [`IoPageTable::unmap`] (§3.1);
//! - [`tlb`]: `iommu_flush_ops`, the gather, an [`Iotlb`] model and the lazy [`FlushQueue`] (§4);
//! - [`IoPageTable::read_and_clear_dirty`]: DBM dirty tracking (§5);
//! - [`Domain`]: table + IOTLB + [`InvalidationPolicy`], and the device's
//!   [`Domain::translate`].
//!
//! Only 64-bit targets are supported (addresses are `u64` and table indices `usize`).
//!
//! ```
//! use io_pgtable::{Config, Format, Iova, PhysAddr, Prot, IoPageTable, tlb::NoFlush};
//! use std::sync::Arc;
//!
//! let cfg = Config::new(Format::ArmLpaeS1, (1 << 12) | (1 << 21) | (1 << 30), 48, 48);
//! let pt = IoPageTable::new(&cfg, Arc::new(NoFlush)).unwrap();
//! pt.map(Iova(0x4000_0000), PhysAddr(0x8000_0000), 8 << 20, Prot::READ | Prot::WRITE).unwrap();
//! // Unmap 3M out of the middle of a 2M block: the block is split, the rest stays mapped.
//! assert_eq!(pt.unmap(Iova(0x4000_0000 + (5 << 20)), 3 << 20, None), 3 << 20);
//! assert_eq!(pt.iova_to_phys(Iova(0x4000_0000 + (5 << 20) - 1)), Some(PhysAddr(0x8000_0000 + (5 << 20) - 1)));
//! assert_eq!(pt.iova_to_phys(Iova(0x4000_0000 + (5 << 20))), None);
//! ```

#![warn(missing_docs)]

pub mod addr;
pub mod cfg;
mod dirty;
mod domain;
pub mod error;
mod iommu;
mod memory;
mod prot;
pub mod pte;
mod table;
pub mod testing;
pub mod tlb;

pub use addr::{Iova, PhysAddr};
pub use cfg::{ConcatRule, Config, Format, Geometry, Granule, Quirks, Registers};
pub use dirty::DirtyFlags;
pub use domain::{Domain, DomainConfig, Fault, InvalidationPolicy, Translation, Unmapped};
pub use error::Error;
pub use iommu::iommu_pgsize;
pub use memory::{TableArena, POISON_BLOCK, POISON_PA, POISON_PTE};
pub use prot::{Access, Prot};
pub use table::{DirtySink, IoPageTable, Stats, WalkData};
pub use tlb::{FlushOps, FlushQueue, FlushQueueConfig, Gather, Iotlb, IotlbConfig};

const _: () = assert!(usize::BITS == 64, "io-pgtable supports 64-bit targets only");

/// `u64` → `usize`, lossless on the 64-bit targets this crate builds for.
#[inline]
#[allow(clippy::cast_possible_truncation)]
pub(crate) const fn to_usize(v: u64) -> usize {
    v as usize
}
