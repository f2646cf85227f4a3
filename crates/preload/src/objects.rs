//! The objects behind fake fds: an open container, an open group with its open devices, and an
//! open device, which keeps its group and container in use (`drivers/vfio/container.c`,
//! `drivers/vfio/group.c`, v6.18).
//!
//! This is the preload's shared vocabulary: the fd table (`files`) and the device layer
//! (`devices`) are built on it, and it imports neither. Dropping the last
//! reference to an object does what the kernel's release does: a group leaves its container,
//! a device stops.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};

use type1::{Container, GroupSpec};
use vfio_device::Device;

/// An open `/dev/vfio/vfio`.
#[derive(Debug)]
pub struct ContainerFile {
    /// The engine (shared with the DMA paths of the devices using it).
    pub c: Arc<Container>,
    /// Set when an operation on it panicked: from then on every request fails with `EIO`.
    pub failed: AtomicBool,
}

/// An open `/dev/vfio/<N>`.
#[derive(Debug)]
pub struct GroupFile {
    /// Its spec.
    pub spec: GroupSpec,
    /// The container it is set to.
    pub container: Mutex<Option<Arc<ContainerFile>>>,
    /// Its open devices.
    pub devices: GroupDevices,
    /// The set of open groups of the fd table that created it (the group leaves it when
    /// dropped).
    pub(crate) opened: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for GroupFile {
    fn drop(&mut self) {
        // `vfio_group_fops_release`: the group leaves its container.
        if let Ok(mut c) = self.container.lock() {
            if let Some(cf) = c.take() {
                let _ = cf.c.unset_group(self.spec.id);
            }
        }
        if let Ok(mut o) = self.opened.lock() {
            o.remove(&self.spec.id.0);
        }
    }
}

/// One open device: the device and the group (and container) it keeps in use.
#[derive(Debug)]
pub struct DeviceHandle {
    /// The device.
    pub dev: Arc<Device>,
    /// Its group (kept open while the device is).
    pub group: Arc<GroupFile>,
    /// The container its DMA goes through (kept alive while the device is).
    pub container: Arc<ContainerFile>,
    /// Its PCI name.
    pub name: String,
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        // `vfio_df_close` → `close_device`: the function stops (DMA, interrupts, threads).
        self.dev.release();
    }
}

/// The devices of one open group, by name.
#[derive(Debug, Default)]
pub struct GroupDevices {
    open: Mutex<HashMap<String, Weak<DeviceHandle>>>,
}

impl GroupDevices {
    /// The map, locked (a poisoned lock is taken over).
    pub(crate) fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<DeviceHandle>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True while any device of the group is open.
    pub fn any_open(&self) -> bool {
        self.map().values().any(|w| w.strong_count() > 0)
    }
}
