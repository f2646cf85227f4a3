//! Raw ioctl bytes and region offsets into a device: every device request, argsz, index,
//! start/count, flag, offset and size the input can spell, against the byte-level entries
//! `Device::ioctl`, `Device::read` and `Device::write` of the built-in test device, in an
//! IOMMU-backed group of a live container. Nothing may panic, and the container's invariants
//! must hold after every call.
//!
//! Input: records `[kind][len][len bytes]`. For ioctls the bytes become the argument structure
//! in a 4 KiB window of user memory; for region access the first 8 bytes are the file offset
//! (the region index in bits 40..44), the rest the data.
#![cfg_attr(fuzzing, no_main)]

use std::sync::Arc;

use type1::mm::{FakeMemory, LockCapability, Mm};
use type1::uapi::raw;
use type1::{Container, ContainerConfig, GroupId, GroupSpec, MapDma, MapFlags, UserBuffer};
use vfio_device::ioctl::{
    VFIO_DEVICE_FEATURE, VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO,
    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_PCI_HOT_RESET,
    VFIO_DEVICE_RESET, VFIO_DEVICE_SET_IRQS,
};
use vfio_device::{testdev, Dma, Location, NoGroupFds};

const BASE: u64 = 0x10_0000;
const RAM: u64 = 0x7f00_0000_0000;

fn run(data: &[u8]) {
    let mem = FakeMemory::new();
    mem.add_ram(RAM, 16 << 20, 1 << 32);
    let mm = Arc::new(Mm::new(Box::new(mem), Some(32 << 20), LockCapability::Limited));
    let c = Arc::new(Container::new(ContainerConfig::default(), mm));
    c.set_group(GroupSpec::iommu(1)).unwrap();
    c.set_iommu(u64::from(raw::VFIO_TYPE1v2_IOMMU)).unwrap();
    c.map_dma(&MapDma {
        vaddr: RAM,
        iova: 0,
        size: 16 << 20,
        flags: MapFlags::READ | MapFlags::WRITE,
    })
    .unwrap();
    let dma = Dma::attach(&c, GroupId(1)).unwrap();
    let dev = testdev::create(Location::new(1, 0, 0, 4), dma).unwrap();
    let mut rest = data;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        let first8 = u64::from_ne_bytes(body.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
        match kind % 12 {
            k @ 0..=7 => {
                let request = [
                    VFIO_DEVICE_GET_INFO,
                    VFIO_DEVICE_GET_REGION_INFO,
                    VFIO_DEVICE_GET_IRQ_INFO,
                    VFIO_DEVICE_SET_IRQS,
                    VFIO_DEVICE_RESET,
                    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
                    VFIO_DEVICE_PCI_HOT_RESET,
                    VFIO_DEVICE_FEATURE,
                ][usize::from(k)];
                let mut user = UserBuffer::new(BASE, 4096);
                user.bytes[..body.len()].copy_from_slice(body);
                // Keep eventfd numbers of SET_IRQS away from fds the harness owns.
                let _ = dev.ioctl(request, BASE + u64::from(kind >> 4) * 8, &mut user, &NoGroupFds);
            }
            8 => {
                let _ = dev.ioctl(first8, BASE, &mut UserBuffer::new(BASE, 64), &NoGroupFds);
            }
            9 => {
                let off = first8 & ((0xf << 40) | 0xf_ffff);
                let n = body.len().saturating_sub(8).min(64);
                let mut buf = vec![0u8; n];
                let _ = dev.read(off, &mut buf);
            }
            _ => {
                let off = first8 & ((0xf << 40) | 0xf_ffff);
                let payload = body.get(8..).unwrap_or(&[]);
                let _ = dev.write(off, payload);
            }
        }
        if let Err(e) = c.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
    drop(dev);
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// Stable build: replays every file given on the command line.
#[cfg(not(fuzzing))]
fn main() {
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(data) => {
                run(&data);
                println!("{path}: ok");
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
