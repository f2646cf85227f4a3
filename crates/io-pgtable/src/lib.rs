//! ARM LPAE I/O page tables, an IOTLB model with strict and lazy invalidation, and hardware dirty
//! bits: the IOMMU-domain layer under `type1`.
//!
//! The behaviour follows Linux v6.18: `drivers/iommu/io-pgtable-arm.c`, the iommu core
//! (`drivers/iommu/iommu.c`) and the flush queue of `drivers/iommu/dma-iommu.c`. Our rules and
//! deliberate differences are listed in docs/SEMANTICS.md, "The page table".
//!
//! - [`Config`] / [`Geometry`]: formats (stage 1 and 2), granules 4K/16K/64K, ias/oas up to 52
//!   bits, `pgsize_bitmap` restriction, start level and stage-2 concatenation
//!   (`arm_lpae_alloc_pgtable`, `arm_lpae_restrict_pgsizes`, `arm_lpae_concat_mandatory`);
//! - [`pte`]: bit-exact descriptors (`arm_lpae_prot_to_pte`, `paddr_to_iopte`);
//! - [`IoPageTable`]: `map_pages`, `unmap_pages` with block splitting (`arm_lpae_split_blk_unmap`
//!   as in v6.12, kept although 33729a5fc0ca removed it in v6.13), `iova_to_phys` returning
//!   `Option`, the walker, and the core's block-size choice in [`IoPageTable::map`] /
//!   [`IoPageTable::unmap`] (`iommu_pgsize`, `__iommu_map`, `__iommu_unmap`);
//! - [`tlb`]: `iommu_flush_ops`, the gather, an [`Iotlb`] model and the lazy [`FlushQueue`]
//!   (`queue_iova` and `fq_flush_timeout` in `dma-iommu.c`);
//! - [`IoPageTable::read_and_clear_dirty`]: DBM dirty tracking (`arm_lpae_read_and_clear_dirty`);
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
pub use domain::{
    Domain, DomainConfig, Fault, InvalidationPolicy, Released, Translation, Unmapped,
};
pub use error::Error;
pub use iommu::iommu_pgsize;
pub use memory::{TableArena, TableMemory, POISON_BLOCK, POISON_PA, POISON_PTE};
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
