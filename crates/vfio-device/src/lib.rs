//! Emulated PCI functions served through the vfio-pci device UAPI, with device DMA routed
//! through a `type1` container.
//!
//! The behaviour is vfio-pci's as of Linux v6.18 (`drivers/vfio/pci/vfio_pci_core.c`,
//! `vfio_pci_config.c`, `vfio_pci_intrs.c`, `vfio_pci_rdwr.c`): a program holding a device built
//! here sees what it would see on a device fd of a real function bound to vfio-pci.
//!
//! - [`pci`]: the type-0 header, the capability-list builder and config-space virtualisation;
//! - [`region`]: region indexes and offsets, region info with its capability chain, mmap rules;
//! - [`memfd`]: the device's file, where mmap-able BARs live at their region offsets.

#![warn(missing_docs)]

pub mod error;
pub mod memfd;
pub mod pci;
pub mod region;

pub use error::{Error, Result};

const _: () = assert!(
    usize::BITS == 64,
    "vfio-device supports 64-bit targets only"
);

/// The CPU page size the device layer assumes (x86-64 and 4K-page arm64).
pub const PAGE_SIZE: u64 = 4096;
