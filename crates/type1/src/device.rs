//! Devices registered on a container (`vfio_iommu_type1_register_device`, v6.18) and their unmap
//! notification (`vfio_notify_dma_unmap`).
//!
//! A device belongs to a group of the container. An emulated (mdev-style) device that pins
//! pages must register a [`DmaUnmapHandler`]: when a mapping holding pins is unmapped, every
//! registered handler is called with the whole mapping's `(iova, length)`, not the range the user
//! asked to unmap (the `dma_unmap` callback of v6.0+, 8cfc5b60751b "vfio: Replace the iommu
//! notifier with a device list"; the v4.10 notifier passed the same range), and must unpin what
//! it pinned there.

use std::fmt::Debug;
use std::sync::Arc;

use crate::addr::Iova;
use crate::group::GroupId;

/// A registered device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `vfio_device_ops.dma_unmap`: told that `[iova, iova + length)` is being unmapped. Called
/// without the container lock held; it may unpin, `dma_rw`, and map or unmap other ranges.
pub trait DmaUnmapHandler: Send + Sync + Debug {
    /// The mapping `[iova, iova + length)` is going away: release every pin in it.
    fn dma_unmap(&self, iova: Iova, length: u64);
}

/// A device as the container keeps it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceEntry {
    pub(crate) id: DeviceId,
    pub(crate) group: GroupId,
    pub(crate) unmap: Option<Arc<dyn DmaUnmapHandler>>,
}
