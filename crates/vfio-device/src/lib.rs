//! Emulated PCI functions served through the vfio-pci device UAPI, with device DMA routed
//! through a `type1` container.
//!
//! The behaviour is vfio-pci's as of Linux v6.18 (`drivers/vfio/pci/vfio_pci_core.c`,
//! `vfio_pci_config.c`, `vfio_pci_intrs.c`, `vfio_pci_rdwr.c`): a program holding a device built
//! here sees what it would see on a device fd of a real function bound to vfio-pci.
//!
//! - [`pci`]: the type-0 header, the capability-list builder and config-space virtualisation;
//! - [`region`]: region indexes and offsets, region info with its capability chain, mmap rules;
//! - [`memfd`]: the device's file, where mmap-able BARs live at their region offsets;
//! - [`irq`]: INTx, MSI, MSI-X, ERR and REQ, `SET_IRQS` with every kernel check, eventfds;
//! - [`thread`]: device threads, which block every signal;
//! - [`Device`]: one function behind a device fd: region `pread`/`pwrite` ([`Device::read`],
//!   [`Device::write`]), the byte-level ioctls ([`Device::ioctl`]), reset, and the mmap-able
//!   ranges of its file ([`Device::file`], [`Device::mmap_areas`], [`Device::check_mmap`]);
//! - [`DeviceModel`]: the trait for your own device (documented example there), given a
//!   [`Dma`] handle and the [`Interrupts`] at creation;
//! - [`dma`]: device DMA through the group's IOMMU domain or, in an emulated group, by
//!   pinning and `dma_rw`; device DMA logging ([`dma::logging`]);
//! - [`migration`]: one migration state machine with two faces, v2 (`VFIO_DEVICE_FEATURE`
//!   MIGRATION, MIG_DEVICE_STATE, MIG_DATA_SIZE, data fds) and the deprecated v1 region QEMU
//!   5.2–7.2 drives; the versioned, checksummed state stream;
//! - [`ioctl`]: the byte-level device ioctls ([`Device::ioctl`]) over the typed API;
//! - [`testdev`]: the built-in DMA test device (register map there).
//!
//! # Layers
//!
//! Modules depend one way, each only on those below it (nothing imports a layer above it;
//! callbacks upward go through traits: [`DeviceModel`], [`GroupFds`], `type1`'s unmap handler):
//!
//! ```text
//! testdev                       a device model built on the public API
//! ioctl                         the byte layer: argsz/flags decoding, copy to and from the caller
//! device                        Device: regions, reset; device/migration*.rs its migration API
//! model                         the DeviceModel trait and its DeviceContext
//! dma (+ dma::logging)          device DMA through type1, the dirty log
//! region                        region indexes, offsets, info and mmap rules
//! migration                     the state machine, the stream, transfers, the v1 layout
//! irq                           INTx/MSI/MSI-X state, SET_IRQS, eventfds
//! pci, memfd                    config space and capabilities; the device file
//! error, thread, PAGE_SIZE      shared vocabulary
//! ```

#![warn(missing_docs)]

mod device;
pub mod dma;
pub mod error;
pub mod ioctl;
pub mod irq;
pub mod memfd;
pub mod migration;
mod model;
pub mod pci;
pub mod region;
pub mod testdev;
pub mod thread;

pub use device::{Device, DeviceSpec, Location, ResetSupport};
pub use dma::{Dma, DmaError};
pub use ioctl::{FdKind, GroupFds, NoGroupFds};
pub use irq::{Delivery, Interrupts, IrqIndex, Level};
pub use migration::{DataFdMode, DataFile, MigState, MigrationSpec, Transfer};
pub use model::{DeviceContext, DeviceModel};
pub use region::{MapSharing, MmapArea, MsixMmap, RegionIndex, RegionInfo};

pub use error::{Error, Result};

const _: () = assert!(
    usize::BITS == 64,
    "vfio-device supports 64-bit targets only"
);

/// The CPU page size the device layer assumes (x86-64 and 4K-page arm64).
pub const PAGE_SIZE: u64 = 4096;
