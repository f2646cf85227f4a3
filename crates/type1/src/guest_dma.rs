//! Guest-physical DMA mapping over a container, in the shape VMMs use for their virtual IOMMU.
//!
//! Cloud Hypervisor maps guest memory for VFIO devices through a trait of its own `vm-device`
//! crate, `ExternalDmaMapping` (`map(iova, gpa, size)` and `unmap(iova, size)`, errors as
//! [`std::io::Error`]). That crate is Cloud Hypervisor's in-tree one, not the rust-vmm crate of
//! the same name on crates.io, so this library cannot implement the trait itself. A VMM that has
//! the trait implements it in a few lines by delegating to [`GuestDmaMapping`]:
//!
//! ```
//! use std::io;
//! use type1::{GuestDmaMapping, GuestToHost};
//!
//! /// Cloud Hypervisor's trait, as its `vm-device` crate declares it.
//! pub trait ExternalDmaMapping: Send + Sync {
//!     fn map(&self, iova: u64, gpa: u64, size: u64) -> Result<(), io::Error>;
//!     fn unmap(&self, iova: u64, size: u64) -> Result<(), io::Error>;
//! }
//!
//! struct Type1Mapping<G>(GuestDmaMapping<G>);
//!
//! impl<G: GuestToHost> ExternalDmaMapping for Type1Mapping<G> {
//!     fn map(&self, iova: u64, gpa: u64, size: u64) -> Result<(), io::Error> {
//!         self.0.map(iova, gpa, size)
//!     }
//!     fn unmap(&self, iova: u64, size: u64) -> Result<(), io::Error> {
//!         self.0.unmap(iova, size)
//!     }
//! }
//! ```
//!
//! Guest-physical addresses become host virtual addresses through the VMM's own memory map (a
//! [`GuestToHost`]); the container then pins and maps them as `VFIO_IOMMU_MAP_DMA` would. A
//! failure carries the kernel's errno (`raw_os_error`), as the ioctl would have returned it.

use std::io;
use std::sync::Arc;

use crate::addr::{Iova, Vaddr};
use crate::api::{MapDma, MapFlags, UnmapDma, UnmapFlags};
use crate::container::Container;

/// The VMM's guest memory map: the host virtual address of `[gpa, gpa + size)`, or `None` unless
/// that whole range lies in one contiguous host mapping of guest RAM.
pub trait GuestToHost: Send + Sync {
    /// Host virtual address of `gpa`, valid for `size` bytes.
    fn host_address(&self, gpa: u64, size: u64) -> Option<Vaddr>;
}

impl<F: Fn(u64, u64) -> Option<Vaddr> + Send + Sync> GuestToHost for F {
    fn host_address(&self, gpa: u64, size: u64) -> Option<Vaddr> {
        self(gpa, size)
    }
}

/// Maps guest-physical ranges at IOVAs of one container (read and write, as VMMs map guest RAM
/// for devices).
#[derive(Debug)]
pub struct GuestDmaMapping<G> {
    container: Arc<Container>,
    guest: G,
}

impl<G: GuestToHost> GuestDmaMapping<G> {
    /// A mapping backend over `container` (its IOMMU already set) and the VMM's memory map.
    pub fn new(container: Arc<Container>, guest: G) -> Self {
        GuestDmaMapping { container, guest }
    }

    /// Maps `[iova, iova + size)` to the guest memory at `gpa`: `VFIO_IOMMU_MAP_DMA` of its host
    /// address, read and write.
    ///
    /// # Errors
    /// `EINVAL` if the guest range is not one contiguous host mapping; else the container's
    /// error for the MAP (`vfio_dma_do_map`, v6.18: `EEXIST`, `ENOSPC`, `EINVAL`, `ENOMEM`,
    /// `EFAULT`, ...), each as [`io::Error::from_raw_os_error`].
    pub fn map(&self, iova: u64, gpa: u64, size: u64) -> io::Result<()> {
        let vaddr = self
            .guest
            .host_address(gpa, size)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.container
            .map_dma(&MapDma {
                vaddr,
                iova: Iova(iova),
                size,
                flags: MapFlags::READ | MapFlags::WRITE,
            })
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    /// Unmaps `[iova, iova + size)`: `VFIO_IOMMU_UNMAP_DMA` (devices that pinned pages there are
    /// told first, as the kernel tells them).
    ///
    /// # Errors
    /// The container's error for the UNMAP (`vfio_dma_do_unmap`, v6.18), as an errno.
    pub fn unmap(&self, iova: u64, size: u64) -> io::Result<()> {
        self.container
            .unmap_dma(&UnmapDma {
                iova: Iova(iova),
                size,
                flags: UnmapFlags::empty(),
                bitmap_pgsize: 0,
            })
            .map(drop)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    /// The container mapped through.
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }
}
