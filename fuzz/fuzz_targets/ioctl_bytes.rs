//! Raw ioctl bytes into a container: every request number, argsz, flag and pointer the input
//! can spell, against the byte-level entry `Container::ioctl`. Nothing may panic, and the
//! container's invariants must hold after every call.
//!
//! Input: records `[kind][len][len bytes]`. The bytes become the argument structure in a 4 KiB
//! window of user memory; `kind` picks the request (or a raw request number).
#![cfg_attr(fuzzing, no_main)]

use std::sync::Arc;

use type1::mm::{FakeMemory, LockCapability, Mm};
use type1::uapi::{self, raw};
use type1::{Container, ContainerConfig, GroupId, GroupSpec, UserBuffer};

const BASE: u64 = 0x10_0000;
const RAM: u64 = 0x7f00_0000_0000;

fn run(data: &[u8]) {
    let mem = FakeMemory::new();
    mem.add_ram(RAM, 16 << 20, 1 << 32);
    let mm = Arc::new(Mm::new(Box::new(mem), Some(2 << 20), LockCapability::Limited));
    let cfg = ContainerConfig { dma_entry_limit: 16, ..ContainerConfig::default() };
    let c = Container::new(cfg, mm);
    c.set_group(GroupSpec::iommu(1)).unwrap();
    c.set_group(GroupSpec::emulated(2)).unwrap();
    let mut rest = data;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        let mut user = UserBuffer::new(BASE, 4096);
        user.bytes[..body.len()].copy_from_slice(body);
        // Point MAP_DMA's vaddr into RAM when asked (bit 7 of kind), so maps can succeed.
        if kind & 0x80 != 0 && body.len() >= 16 {
            let v = u64::from_ne_bytes(body[8..16].try_into().unwrap_or([0; 8]));
            user.bytes[8..16].copy_from_slice(&(RAM + (v & 0xf_f000)).to_ne_bytes());
        }
        let first = body.first().copied().unwrap_or(0);
        let (request, arg) = match kind & 0x0f {
            0 => (uapi::VFIO_SET_IOMMU, u64::from(first)),
            1 => (uapi::VFIO_CHECK_EXTENSION, u64::from(first)),
            2 => (uapi::VFIO_IOMMU_GET_INFO, BASE),
            3 => (uapi::VFIO_IOMMU_MAP_DMA, BASE),
            4 => (uapi::VFIO_IOMMU_UNMAP_DMA, BASE),
            5 => (uapi::VFIO_IOMMU_DIRTY_PAGES, BASE),
            6 => (uapi::VFIO_GET_API_VERSION, 0),
            7 => (uapi::VFIO_IOMMU_UNMAP_DMA, BASE + u64::from(first) * 64),
            8 => {
                let _ = c.unset_group(GroupId(u32::from(first % 3)));
                continue;
            }
            9 => {
                let g = if first & 1 == 0 { GroupSpec::iommu(1) } else { GroupSpec::emulated(2) };
                let _ = c.set_group(g);
                continue;
            }
            10 => (uapi::vfio_io(u32::from(first)), BASE),
            _ => {
                let n = u64::from_ne_bytes(body.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
                (n, BASE)
            }
        };
        let _ = c.ioctl(request, arg, &mut user);
        if let Err(e) = c.check_invariants() {
            panic!("invariant broken after request {request:#x}: {e}");
        }
    }
    let _ = raw::VFIO_API_VERSION;
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
