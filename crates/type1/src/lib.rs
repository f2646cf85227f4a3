//! The Linux VFIO type1 IOMMU container, kernel-exact, in userspace.
//!
//! This crate implements `drivers/vfio/vfio_iommu_type1.c` and the container glue it depends on
//! (`drivers/vfio/container.c`), as of Linux v6.18; our rules and deliberate differences are in
//! docs/SEMANTICS.md, "The container". Each IOMMU-backed group's domain is an
//! [`io_pgtable::Domain`]: an ARM LPAE page table with an IOTLB, so devices can translate and DMA
//! through it.
//!
//! - [`Container`]: groups, `VFIO_SET_IOMMU`, CHECK_EXTENSION, MAP/UNMAP/GET_INFO as a typed API,
//!   and [`Container::ioctl`] taking request numbers and user memory exactly as the kernel does;
//! - [`mm`]: the user address space behind `vaddr` (this process, or a deterministic fake) and
//!   locked-memory accounting;
//! - [`group`]: group and IOMMU-domain descriptions (aperture, reserved regions, MSI);
//! - [`Error`]: one variant per failure, with the kernel errno.
//!
//! # Layers
//!
//! Modules depend one way only, each on modules of lower rows, never on its own row or above;
//! nothing imports the ioctl byte layer back:
//!
//! ```text
//! 8  ioctl, guest_dma       request numbers and argument bytes -> the typed API; guest-physical
//!                           DMA mapping for a VMM's virtual IOMMU
//! 7  Container              one lock, groups, devices, the typed API (container/dirty.rs: its
//!                           dirty-tracking part)
//! 6  engine                 DMA of IOMMU-backed devices through a domain
//! 5  type1 (Type1)          the backend: MAP/UNMAP, domains, device pins, dirty tracking,
//!                           invariants
//! 4  dma                    one mapping and the mapping tree
//! 3  pinset, release,       device pins of one mapping; the one release of pins and charges
//!    config                 (strict and lazy); container options
//! 2  api, dirty, mm,        typed vocabulary; dirty bitmaps; address spaces and locked-memory
//!    uaccess, group,        accounting; copy_from_user/copy_to_user; group, device and
//!    device, iova_list      IOVA-list descriptions
//! 1  uapi, usercopy,       UAPI constants and layouts; copies of this process's memory; errors;
//!    error, addr            typed addresses (`Iova`, `Vaddr`, `PhysAddr`)
//! ```
//!
//! (Row 2 has one exception: `device` names the `group` it belongs to.) The reference model
//! (`model`, feature `test-support`) sits above everything and is imported by tests only.
//!
//! ```
//! use std::sync::Arc;
//! use type1::mm::{FakeMemory, LockCapability, Mm};
//! use type1::{
//!     Container, ContainerConfig, GroupSpec, Iova, MapDma, MapFlags, PhysAddr, UnmapDma,
//!     UnmapFlags, Vaddr,
//! };
//!
//! let mem = FakeMemory::new();
//! mem.add_ram(0x7f00_0000_0000, 1 << 30, 0x1_0000_0000);
//! let mm = Arc::new(Mm::new(Box::new(mem), None, LockCapability::Limited));
//! let c = Container::new(ContainerConfig::default(), mm);
//! c.set_group(GroupSpec::iommu(7)).unwrap();
//! c.set_iommu(type1::Version::V2).unwrap();
//! c.map_dma(&MapDma { vaddr: Vaddr(0x7f00_0000_0000), iova: Iova(0), size: 1 << 30,
//!                     flags: MapFlags::READ | MapFlags::WRITE }).unwrap();
//! assert_eq!(c.iova_to_phys(Iova(0x1234)), Some(PhysAddr(0x1_0000_1234)));
//! let n = c.unmap_dma(&UnmapDma { iova: Iova(0), size: 1 << 30, flags: UnmapFlags::empty(),
//!                                 bitmap_pgsize: 0 }).unwrap();
//! assert_eq!(n, 1 << 30);
//! c.check_invariants().unwrap();
//! ```

#![warn(missing_docs)]

mod addr;
mod api;
mod config;
mod container;
pub mod device;
pub mod dirty;
mod dma;
mod engine;
pub mod error;
pub mod group;
pub mod guest_dma;
mod ioctl;
mod iova_list;
pub mod mm;
#[cfg(feature = "test-support")]
pub mod model;
mod pinset;
mod release;
mod type1;
mod uaccess;
pub mod uapi;
pub mod usercopy;

pub use container::{Container, MappingInfo, Snapshot};

const _: () = assert!(usize::BITS == 64, "type1 supports 64-bit targets only");

/// `u64` → `usize`, lossless on the 64-bit targets this crate builds for.
#[inline]
#[allow(clippy::cast_possible_truncation)]
pub(crate) const fn to_usize(v: u64) -> usize {
    v as usize
}
pub use addr::{Iova, PhysAddr, Vaddr};
pub use api::{
    Info, MapDma, MapFlags, Perm, UnmapDma, UnmapFlags, Version, DEFAULT_DMA_ENTRY_LIMIT,
    DIRTY_BITMAP_SIZE_MAX, PAGE_MASK, PAGE_SIZE, PIN_PAGES_MAX, UNMAP_RETRIES,
};
#[cfg(feature = "test-support")]
pub use config::FaultPlan;
pub use config::{ContainerConfig, Interrupts};
pub use device::{DeviceId, DmaUnmapHandler};
pub use dirty::dirty_bitmap_bytes;
pub use dirty::DirtyMode;
pub use engine::{DmaEngine, DmaError};
pub use error::{Error, Result};
pub use group::{GroupId, GroupKind, GroupSpec, IommuDesc};
pub use guest_dma::{GuestDmaMapping, GuestToHost};
pub use io_pgtable::Access;
pub use uaccess::{access_ok, ProcessUserMemory, UserBuffer, UserMemory, TASK_SIZE_MAX};
