//! Random state streams into a destination device in RESUMING: whatever arrives, the device
//! never panics; the transition out of RESUMING either restores the stream or fails with
//! `EINVAL` leaving the device in RESUMING (as `vfio_mig_get_next_state` callers see a driver's
//! failed load, e.g. mtty's `mtty_load_state`); a device reset then always brings it back to
//! RUNNING, and a known-good stream restores afterwards. The device is the built-in test device
//! in a live type1 container (IOMMU-backed group, precise dirty tracking) over fake guest
//! memory; a restored stream may start its writer or a DMA transfer, which must stay inside
//! what the container allows.
//!
//! Input: a flags byte, a chunk byte, then the stream material:
//!
//! - flags bits 0–1, the face the stream goes through: the `Transfer` of
//!   `Device::set_migration_state` (0, 1), the deprecated v1 region in QEMU 7.2's order
//!   (`device_state` RESUMING, per chunk `data_offset`, the data, a `data_size` write; 2), or
//!   `VFIO_DEVICE_FEATURE` MIG_DEVICE_STATE with a routed data fd (3);
//! - bits 2–3, the framing: the bytes as they are (0); one final frame of the test device's
//!   identity around them, so the checksum passes and the payload decoder sees the bytes (1);
//!   a pre-copy frame of the first `chunk` bytes and a final frame of the rest (2); a
//!   known-good stream XORed with the bytes as (position u16, mask) pairs (3);
//! - bits 4–6, the state asked for at the end (STOP, RUNNING, STOP_COPY, RESUMING,
//!   RUNNING_P2P, PRE_COPY, and the invalid ERROR and 99); bit 7: whether the device's memory
//!   and bus master are on;
//! - the chunk byte sizes the writes (1 + byte × 61 bytes).
//!
//! Work per input is bounded: at most `MAX_STREAM` bytes of material, 16 MiB of guest RAM.
#![cfg_attr(fuzzing, no_main)]

use std::sync::{Arc, OnceLock};

use type1::mm::{FakeMemory, LockCapability, Mm};
use type1::{
    Container, ContainerConfig, DirtyMode, GroupId, GroupSpec, MapDma, MapFlags, UnmapDma,
    UnmapFlags, UserBuffer,
};
use type1::{Iova, Vaddr};
use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, VFIO_DEVICE_FEATURE_SET, VFIO_DEVICE_STATE_V1_RESUMING,
};
use vfio_device::ioctl::{VFIO_DEVICE_FEATURE, VFIO_DEVICE_RESET};
use vfio_device::migration::stream::{self, FrameKind};
use vfio_device::migration::{v1, MigState};
use vfio_device::testdev::{self, reg};
use vfio_device::{DataFdMode, Device, Dma, Location, NoGroupFds, RegionIndex};

const RAM: u64 = 0x7f00_0000_0000;
const RAM_SIZE: u64 = 16 << 20;
const GROUP: u32 = 1;
const ARG: u64 = 0x10_0000;
/// Most stream bytes one input writes.
const MAX_STREAM: usize = 64 << 10;
const V1: u64 = (v1::INDEX as u64) << 40;
const BAR0: u64 = 0;
/// The liveness value the known-good stream carries (reads back inverted).
const GOOD_LIVENESS: u32 = 0x5a5a_0001;

/// The final states asked for (raw `vfio_device_mig_state` values; ERROR and 99 invalid).
const TARGETS: [u32; 8] = [1, 2, 3, 4, 5, 6, 0, 99];

/// A device in its own container over fake RAM (the container is kept alive with it).
struct Rig {
    c: Arc<Container>,
    dev: Arc<Device>,
}

fn rig(bus_master: bool) -> Rig {
    let mem = FakeMemory::new();
    mem.add_ram(RAM, RAM_SIZE, 1 << 32);
    let mm = Arc::new(Mm::new(
        Box::new(mem),
        Some(32 << 20),
        LockCapability::Limited,
    ));
    let cfg = ContainerConfig {
        dirty_mode: DirtyMode::Precise,
        ..ContainerConfig::default()
    };
    let c = Arc::new(Container::new(cfg, mm));
    c.set_group(GroupSpec::iommu(GROUP)).unwrap();
    c.set_iommu(type1::Version::V2).unwrap();
    c.map_dma(&MapDma {
        vaddr: Vaddr(RAM),
        iova: Iova(0),
        size: RAM_SIZE,
        flags: MapFlags::READ | MapFlags::WRITE,
    })
    .unwrap();
    let dma = Dma::attach(&c, GroupId(GROUP)).unwrap();
    let spec = vfio_device::MigrationSpec::full(true);
    let dev = testdev::create_with(Location::new(GROUP, 0, 0, 4), dma, spec).unwrap();
    if bus_master {
        dev.write(RegionIndex::CONFIG.offset() + 4, &[0x06, 0x00])
            .unwrap();
    }
    Rig { c, dev }
}

/// A stream saved from a source device with a known liveness value and one page of memory.
fn good() -> &'static [u8] {
    static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
    GOOD.get_or_init(|| {
        let r = rig(true);
        r.dev
            .write(BAR0 + reg::LIVENESS, &GOOD_LIVENESS.to_le_bytes())
            .unwrap();
        r.dev
            .write(RegionIndex::bar(2).offset() + 0x2000, &[0xa5; 64])
            .unwrap();
        let t = r
            .dev
            .set_migration_state(MigState::StopCopy.raw())
            .unwrap()
            .expect("STOP_COPY starts a transfer");
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match t.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!("saving the good stream: {e}"),
            }
        }
        r.dev.set_migration_state(MigState::Stop.raw()).unwrap();
        r.dev.release();
        out
    })
}

/// The stream an input spells (see the module docs).
fn material(framing: u8, chunk: usize, bytes: &[u8], dev: &Device) -> Vec<u8> {
    let id = dev.stream_identity();
    match framing {
        0 => bytes.to_vec(),
        1 => stream::encode(FrameKind::Final, id, bytes),
        2 => {
            let k = chunk.min(bytes.len());
            let mut s = stream::encode(FrameKind::PreCopy, id, &bytes[..k]);
            s.extend(stream::encode(FrameKind::Final, id, &bytes[k..]));
            s
        }
        _ => {
            let mut s = good().to_vec();
            for p in bytes.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([p[0], p[1]])) % s.len();
                s[at] ^= p[2];
            }
            s
        }
    }
}

fn errno_of(e: &vfio_device::Error) -> i32 {
    let n = e.errno();
    assert!(n > 0 && n < 4096, "not an errno: {n} ({e})");
    n
}

/// `VFIO_DEVICE_FEATURE` SET MIG_DEVICE_STATE: (result, data_fd).
fn set_state_ioctl(dev: &Device, target: u32) -> (Result<i64, i32>, i32) {
    let mut u = UserBuffer::new(ARG, 64);
    u.bytes[0..4].copy_from_slice(&16u32.to_ne_bytes());
    let flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
    u.bytes[4..8].copy_from_slice(&flags.to_ne_bytes());
    u.bytes[8..12].copy_from_slice(&target.to_ne_bytes());
    u.bytes[12..16].copy_from_slice(&(-1i32).to_ne_bytes());
    let r = dev
        .ioctl(VFIO_DEVICE_FEATURE, ARG, &mut u, &NoGroupFds)
        .map_err(|e| errno_of(&e));
    let fd = i32::from_ne_bytes(u.bytes[12..16].try_into().unwrap());
    (r, fd)
}

/// Feeds `s` to RESUMING through `face` in `chunk`-byte writes, then asks for `target`.
/// Returns the result of that last transition.
fn feed(dev: &Device, face: u8, s: &[u8], chunk: usize, target: u32) -> Result<(), i32> {
    match face {
        0 | 1 => {
            let t = dev
                .set_migration_state(MigState::Resuming.raw())
                .unwrap()
                .expect("RESUMING starts a transfer");
            for c in s.chunks(chunk) {
                assert_eq!(t.write(c).unwrap(), c.len(), "a resume write takes it all");
            }
            dev.set_migration_state(target)
                .map(|_| ())
                .map_err(|e| errno_of(&e))
        }
        2 => {
            let st = VFIO_DEVICE_STATE_V1_RESUMING.to_le_bytes();
            dev.write(V1, &st).unwrap();
            let area = usize::try_from(v1::DATA_SIZE).unwrap();
            for c in s.chunks(chunk.min(area)) {
                let mut off = [0u8; 8];
                dev.read(V1 + 16, &mut off).unwrap();
                assert_eq!(u64::from_le_bytes(off), v1::DATA_OFFSET);
                dev.write(V1 + v1::DATA_OFFSET, c).unwrap();
                dev.write(V1 + 24, &(c.len() as u64).to_le_bytes()).unwrap();
            }
            // QEMU 7.2 leaves RESUMING with a read-modify-write of `device_state`: the target's
            // v1 bits (RUNNING 1, STOP 0; any other value as written).
            let bits: u32 = match target {
                1 => 0,
                2 => 1,
                t => t,
            };
            dev.write(V1, &bits.to_le_bytes())
                .map(|_| ())
                .map_err(|e| errno_of(&e))
        }
        _ => {
            dev.set_data_fd_mode(DataFdMode::Routed);
            let (r, fd) = set_state_ioctl(dev, MigState::Resuming.raw());
            assert_eq!(r, Ok(0), "RESUMING from RUNNING");
            let file = dev.data_file(fd).expect("the data fd is the device's");
            for c in s.chunks(chunk) {
                assert_eq!(file.write(c).unwrap(), c.len());
            }
            let (r, _) = set_state_ioctl(dev, target);
            // SAFETY: the routed data fd was created for this input and is closed once.
            unsafe { libc::close(fd) };
            r.map(|_| ())
        }
    }
}

fn run(data: &[u8]) {
    let [flags, chunk, rest @ ..] = data else {
        return;
    };
    let rest = &rest[..rest.len().min(MAX_STREAM)];
    let face = flags & 3;
    let framing = (flags >> 2) & 3;
    let target = TARGETS[usize::from((flags >> 4) & 7)];
    let chunk = 1 + usize::from(*chunk) * 61;
    let r = rig(flags & 0x80 != 0);
    let dev = &r.dev;
    let s = material(framing, chunk, rest, dev);
    let before = dev.migration_state();
    assert_eq!(before, MigState::Running);
    match feed(dev, face, &s, chunk, target) {
        Ok(()) => {
            // Restored (or, through v1, any state the bits name): a defined state.
            assert_ne!(dev.migration_state(), MigState::Error);
        }
        Err(errno) => {
            assert_eq!(errno, libc::EINVAL, "a refused stream or state is EINVAL");
            let now = dev.migration_state();
            assert_ne!(now, MigState::Error, "a refused stream never leaves ERROR");
        }
    }
    if let Err(e) = r.c.check_invariants() {
        panic!("container invariant broken after the stream: {e}");
    }
    // A reset always recovers, and a good stream then restores.
    let mut u = UserBuffer::new(ARG, 16);
    dev.ioctl(VFIO_DEVICE_RESET, ARG, &mut u, &NoGroupFds)
        .expect("reset after a stream");
    assert_eq!(dev.migration_state(), MigState::Running, "reset → RUNNING");
    let t = dev
        .set_migration_state(MigState::Resuming.raw())
        .unwrap()
        .unwrap();
    t.write(good()).unwrap();
    dev.set_migration_state(MigState::Stop.raw())
        .expect("a good stream restores after a reset");
    let mut live = [0u8; 4];
    dev.read(BAR0 + reg::LIVENESS, &mut live).unwrap();
    assert_eq!(u32::from_le_bytes(live), !GOOD_LIVENESS);
    dev.release();
    let c = r.c.clone();
    drop(r);
    c.unmap_dma(&UnmapDma {
        iova: Iova(0),
        size: 0,
        flags: UnmapFlags::ALL,
        bitmap_pgsize: 0,
    })
    .expect("unmap-all after release");
    assert_eq!(c.snapshot().locked_pages, 0, "pages pinned after release");
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
