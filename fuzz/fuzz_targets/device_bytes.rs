//! Raw ioctl bytes and region accesses into a device: every device request, argsz, index,
//! start/count, flag, eventfd array, offset and size the input can spell, against the
//! byte-level entries `Device::ioctl`, `Device::read` and `Device::write` of the built-in test
//! device, whose group (IOMMU-backed or emulated) sits in a live type1 container with a few
//! mappings (read-write, read-only, and holes between them). Nothing may panic; after every
//! record the container's invariants hold, every error carries a kernel errno, and a read or
//! write never reports more bytes than it was given; after the device's last close and an
//! unmap of everything, no page stays pinned.
//!
//! Input: one setup byte, then records `[kind][len][len bytes]` (at most `MAX_RECORDS`):
//!
//! - ioctls (GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS, RESET, GET_PCI_HOT_RESET_INFO,
//!   PCI_HOT_RESET, DEVICE_FEATURE): byte 0 places the argument in a 4 KiB window of user
//!   memory (bit 7: that many bytes before the window's end, so copies run off it), bit 6 sets
//!   `argsz` to the length given; the rest is the structure. A SET_IRQS with DATA_EVENTFD gets
//!   its fd array rewritten from the bytes: the harness's eventfds, -1, a memfd (not an
//!   eventfd) or a closed fd. PCI_HOT_RESET's group fds resolve (fd % 4) to not open, not a
//!   group, the device's group, another group.
//! - a SET_IRQS built from small choices (index, data type, action, start, count, argsz exact
//!   or a little off, eventfds picked as above), so the handlers behind the checks are reached;
//! - any request number (or `vfio_io(n)`) with the window;
//! - region read and write: offsets picked from the record (a small offset in one of the 16
//!   region indexes, a position near a region's end, any 40-bit offset, any u64), sizes up to
//!   4 KiB;
//! - BAR0 register writes (the test device's DMA engine and writer), a DMA transfer between
//!   device memory and an IOVA picked near a mapping's edges, a hole or anywhere;
//! - device-side interrupts (`signal`, ERR, REQ, INTx level), draining the eventfds;
//! - container changes under the device: unmap and remap one of the mappings, dirty
//!   tracking start/stop and a bitmap;
//! - `check_mmap` with any offset, length and sharing.
//!
//! Work per input is bounded: `MAX_RECORDS` records, a DMA byte budget, a cap on autonomous
//! writer starts, 16 MiB of guest RAM and 16 MiB of device memory.
#![cfg_attr(fuzzing, no_main)]

use std::mem::offset_of;
use std::sync::{Arc, OnceLock};

use type1::mm::{FakeMemory, LockCapability, Mm};
use type1::uapi::vfio_io;
use type1::{
    Container, ContainerConfig, DirtyMode, GroupId, GroupSpec, MapDma, MapFlags, UnmapDma,
    UnmapFlags, UserBuffer,
};
use type1::{Iova, Vaddr};
use vfio_bindings::bindings::vfio::{
    vfio_irq_set, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE,
};
use vfio_device::ioctl::{
    FdKind, GroupFds, VFIO_DEVICE_FEATURE, VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO,
    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_PCI_HOT_RESET,
    VFIO_DEVICE_RESET, VFIO_DEVICE_SET_IRQS,
};
use vfio_device::irq::EventFd;
use vfio_device::region::{OFFSET_MASK, OFFSET_SHIFT};
use vfio_device::testdev::{reg, MEM_SIZE};
use vfio_device::{testdev, Device, Dma, Level, Location, MapSharing, RegionIndex};

/// The user-memory window ioctl arguments live in.
const BASE: u64 = 0x10_0000;
const WINDOW: usize = 4096;
/// Guest RAM (process virtual addresses).
const RAM: u64 = 0x7f00_0000_0000;
const RAM_SIZE: u64 = 16 << 20;
const GROUP: u32 = 1;

/// The container's mappings: (iova, offset into RAM, size, writable).
const MAPPINGS: [(u64, u64, u64, bool); 3] = [
    (0, 0, 4 << 20, true),
    (0x100_0000, 4 << 20, 1 << 20, false),
    (0x1_0000_0000, 8 << 20, 2 << 20, true),
];

const MAX_RECORDS: usize = 256;
/// Bytes of device DMA one input may start (BAR0 DMA count, summed over starts).
const DMA_BUDGET: u64 = 48 << 20;
const MAX_WRITER_STARTS: u32 = 4;
const MAX_ACCESS: usize = 4096;

/// The harness's eventfds (shared by all inputs; the device keeps its own duplicates).
fn eventfds() -> &'static [EventFd; 4] {
    static E: OnceLock<[EventFd; 4]> = OnceLock::new();
    E.get_or_init(|| {
        let e = || EventFd::new().expect("eventfd");
        [e(), e(), e(), e()]
    })
}

/// `PCI_HOT_RESET`'s group fds, resolved without touching the process's fd table.
struct FuzzGroups;

impl GroupFds for FuzzGroups {
    fn kind(&self, fd: i32) -> FdKind {
        match fd.rem_euclid(4) {
            0 => FdKind::NotOpen,
            1 => FdKind::NotGroup,
            2 => FdKind::Group(GROUP),
            _ => FdKind::Group(GROUP + 1),
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    for (i, v) in x.iter_mut().enumerate() {
        *v = b.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(x)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
    ])
}

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// An IOVA near the interesting places of the container's address space.
fn pick_iova(sel: u8, delta: u64) -> u64 {
    let small = delta & 0x3f_ffff;
    let (iova, _, size, _) = MAPPINGS[usize::from(sel >> 4) % MAPPINGS.len()];
    match sel & 7 {
        0 => iova.wrapping_add(small),
        1 => (iova + size).wrapping_sub(small),
        2 => (iova + size).wrapping_add(small),
        3 => iova.wrapping_sub(small),
        4 => u64::MAX - small,
        5 => 0xfee0_0000 + small,
        _ => delta,
    }
}

/// A DMA count: small, around a page, or anything (the device refuses past its memory).
fn pick_count(sel: u8, raw: u64) -> u64 {
    match sel & 3 {
        0 => raw & 0xff,
        1 => (raw & 0x3fff).wrapping_sub(0x1000) & 0x7fff,
        2 => raw & 0x3f_ffff,
        _ => raw,
    }
}

/// A file offset: region index and position.
fn pick_offset(dev: &Device, b: &[u8]) -> u64 {
    let mode = byte(b, 0);
    let index = u64::from(byte(b, 1) & 0xf);
    let v = u64_at(b, 2);
    match mode & 3 {
        0 => (index << OFFSET_SHIFT) | (v & 0xffff),
        1 => {
            let size = dev
                .region_info(RegionIndex(index as u32))
                .map_or(0, |i| i.size);
            (index << OFFSET_SHIFT) | (size.wrapping_sub(v & 0xfff) & OFFSET_MASK)
        }
        2 => (index << OFFSET_SHIFT) | (v & OFFSET_MASK),
        _ => v,
    }
}

struct Budget {
    dma: u64,
    writer_starts: u32,
}

impl Budget {
    /// Whether a BAR0 write of `data` at BAR0 offset `off` may run; charges what it may start.
    fn allow_bar0_write(&mut self, dev: &Device, off: u64, data: &[u8]) -> bool {
        let covers = |reg: u64| off <= reg && reg - off < data.len() as u64;
        let at = |reg: u64| data[(reg - off) as usize];
        if covers(reg::DMA_CMD) && at(reg::DMA_CMD) & 1 != 0 {
            let charge = if covers(reg::DMA_COUNT) {
                MEM_SIZE
            } else {
                let mut c = [0u8; 8];
                match dev.read(RegionIndex::BAR0.offset() + reg::DMA_COUNT, &mut c) {
                    Ok(8) => u64::from_le_bytes(c).min(MEM_SIZE),
                    _ => MEM_SIZE,
                }
            };
            if charge > self.dma {
                return false;
            }
            self.dma -= charge;
        }
        if covers(reg::WRITER_CTRL) && at(reg::WRITER_CTRL) & 1 != 0 {
            if self.writer_starts == MAX_WRITER_STARTS {
                return false;
            }
            self.writer_starts += 1;
        }
        true
    }
}

fn check_errno(what: &str, e: &vfio_device::Error) {
    let n = e.errno();
    assert!(n > 0 && n < 4096, "{what}: error {e} has errno {n}");
}

fn region_write(dev: &Device, budget: &mut Budget, off: u64, data: &[u8]) {
    let (index, pos) = RegionIndex::split(off);
    if index == RegionIndex::BAR0 && !budget.allow_bar0_write(dev, pos, data) {
        return;
    }
    match dev.write(off, data) {
        Ok(n) => assert!(n <= data.len(), "write of {} reported {n}", data.len()),
        Err(e) => check_errno("write", &e),
    }
}

fn bar0_write(dev: &Device, budget: &mut Budget, reg: u64, v: u64) {
    region_write(
        dev,
        budget,
        RegionIndex::BAR0.offset() + reg,
        &v.to_le_bytes(),
    );
}

fn ioctl(dev: &Device, k: usize, body: &[u8]) {
    let request = [
        VFIO_DEVICE_GET_INFO,
        VFIO_DEVICE_GET_REGION_INFO,
        VFIO_DEVICE_GET_IRQ_INFO,
        VFIO_DEVICE_SET_IRQS,
        VFIO_DEVICE_RESET,
        VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
        VFIO_DEVICE_PCI_HOT_RESET,
        VFIO_DEVICE_FEATURE,
    ][k];
    let place = byte(body, 0);
    let arg_bytes = body.get(1..).unwrap_or(&[]);
    let at = if place & 0x80 != 0 {
        WINDOW - usize::from(place & 0x3f)
    } else {
        usize::from(place & 0x3f) * 8
    };
    let mut user = UserBuffer::new(BASE, WINDOW);
    let n = arg_bytes.len().min(WINDOW - at);
    user.bytes[at..at + n].copy_from_slice(&arg_bytes[..n]);
    if place & 0x40 != 0 && n >= 4 {
        user.bytes[at..at + 4].copy_from_slice(&(arg_bytes.len() as u32).to_ne_bytes());
    }
    if request == VFIO_DEVICE_SET_IRQS {
        fix_eventfds(dev, &mut user.bytes[at..]);
    }
    match dev.ioctl(request, BASE + at as u64, &mut user, &FuzzGroups) {
        Ok(r) => assert_eq!(r, 0, "ioctl {request:#x} returned {r}"),
        Err(e) => check_errno("ioctl", &e),
    }
}

/// Rewrites SET_IRQS's fd array (DATA_EVENTFD) so the fds mean something.
fn fix_eventfds(dev: &Device, s: &mut [u8]) {
    let get = |s: &[u8], at: usize| {
        s.get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(flags) = get(s, offset_of!(vfio_irq_set, flags)) else {
        return;
    };
    if flags & VFIO_IRQ_SET_DATA_EVENTFD == 0 {
        return;
    }
    let count = get(s, offset_of!(vfio_irq_set, count)).unwrap_or(0) as usize;
    let efds = eventfds();
    let data = offset_of!(vfio_irq_set, data);
    for i in 0..count.min(64) {
        let at = data + 4 * i;
        let Some(v) = get(s, at) else { break };
        let fd: i32 = match v & 7 {
            0..=3 => efds[(v & 3) as usize].as_raw(),
            4 => -1,
            5 => std::os::fd::AsRawFd::as_raw_fd(&dev.file().fd()),
            6 => i32::MAX - 1,
            _ => continue,
        };
        s[at..at + 4].copy_from_slice(&fd.to_ne_bytes());
    }
}

/// A well-formed-ish SET_IRQS: index, data type, action, start and count from small ranges,
/// argsz exact or off by a little, the data from the record.
fn set_irqs(dev: &Device, b: &[u8]) {
    let index = u32::from(byte(b, 0) % 6);
    let sel = byte(b, 1);
    // Data type and action by bits; the fourth value of each sets two bits (no handler).
    let ty = [
        VFIO_IRQ_SET_DATA_NONE,
        VFIO_IRQ_SET_DATA_BOOL,
        VFIO_IRQ_SET_DATA_EVENTFD,
        VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD,
    ][usize::from(sel & 3)];
    let action = [
        VFIO_IRQ_SET_ACTION_MASK,
        VFIO_IRQ_SET_ACTION_UNMASK,
        VFIO_IRQ_SET_ACTION_TRIGGER,
        VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER,
    ][usize::from((sel >> 2) & 3)];
    let flags = if sel & 0x80 != 0 {
        u32::from(byte(b, 5))
    } else {
        ty | action
    };
    let start = u32::from(byte(b, 2) % 10);
    let count = u32::from(byte(b, 3) % 10);
    let elem = match flags & (VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD) {
        VFIO_IRQ_SET_DATA_BOOL => 1,
        VFIO_IRQ_SET_DATA_EVENTFD => 4,
        _ => 0,
    };
    let data = offset_of!(vfio_irq_set, data);
    let exact = data + elem * count as usize;
    let argsz = match byte(b, 4) % 4 {
        0 | 1 => exact,
        2 => exact.saturating_sub(1),
        _ => exact + usize::from(byte(b, 4) >> 2),
    };
    let mut user = UserBuffer::new(BASE, WINDOW);
    let words = [argsz as u32, flags, index, start, count];
    for (k, w) in words.iter().enumerate() {
        user.bytes[4 * k..4 * k + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let payload = b.get(6..).unwrap_or(&[]);
    for i in 0..elem * count as usize {
        let v = payload.get(i % payload.len().max(1)).copied().unwrap_or(1);
        user.bytes[data + i] = v;
    }
    if elem == 4 {
        // One fd per element, chosen by its first byte.
        for i in 0..count as usize {
            let v = payload.get(i).copied().unwrap_or(0);
            user.bytes[data + 4 * i..data + 4 * i + 4].copy_from_slice(&u32::from(v).to_ne_bytes());
        }
        fix_eventfds(dev, &mut user.bytes);
    }
    match dev.ioctl(VFIO_DEVICE_SET_IRQS, BASE, &mut user, &FuzzGroups) {
        Ok(r) => assert_eq!(r, 0),
        Err(e) => check_errno("set_irqs", &e),
    }
}

fn setup(flags: u8) -> (Arc<Container>, Arc<Mm>) {
    let mem = FakeMemory::new();
    mem.add_ram(RAM, RAM_SIZE, 1 << 32);
    let mm = Arc::new(Mm::new(
        Box::new(mem),
        Some(32 << 20),
        LockCapability::Limited,
    ));
    let cfg = ContainerConfig {
        dirty_mode: if flags & 4 != 0 {
            DirtyMode::Precise
        } else {
            DirtyMode::KernelExact
        },
        ..ContainerConfig::default()
    };
    let c = Arc::new(Container::new(cfg, mm.clone()));
    let g = if flags & 1 != 0 {
        GroupSpec::emulated(GROUP)
    } else {
        GroupSpec::iommu(GROUP)
    };
    c.set_group(g).unwrap();
    c.set_iommu(type1::Version::V2).unwrap();
    for i in 0..MAPPINGS.len() {
        map(&c, i).unwrap();
    }
    if flags & 8 != 0 {
        c.dirty_start().unwrap();
    }
    (c, mm)
}

fn map(c: &Container, i: usize) -> type1::Result<()> {
    let (iova, off, size, w) = MAPPINGS[i];
    let flags = if w {
        MapFlags::READ | MapFlags::WRITE
    } else {
        MapFlags::READ
    };
    c.map_dma(&MapDma {
        vaddr: Vaddr(RAM + off),
        iova: Iova(iova),
        size,
        flags,
    })
}

fn unmap(c: &Container, iova: u64, size: u64) -> type1::Result<u64> {
    c.unmap_dma(&UnmapDma {
        iova: Iova(iova),
        size,
        flags: UnmapFlags::empty(),
        bitmap_pgsize: 0,
    })
}

fn run(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    // Eventfd counters left by the previous input do not leak into this one.
    for e in eventfds() {
        let _ = e.read();
    }
    let (c, _mm) = setup(flags);
    let dma = Dma::attach(&c, GroupId(GROUP)).unwrap();
    let dev = testdev::create(Location::new(GROUP, 0, 0, 4), dma).unwrap();
    if flags & 2 == 0 {
        // Memory space and bus mastering on, as a driver leaves them (input may clear them).
        dev.write(RegionIndex::CONFIG.offset() + 4, &[0x06, 0x00])
            .unwrap();
    }
    let mut budget = Budget {
        dma: DMA_BUDGET,
        writer_starts: 0,
    };
    let mut records = 0;
    while rest.len() >= 2 && records < MAX_RECORDS {
        records += 1;
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        step(&c, &dev, &mut budget, kind, body);
        if let Err(e) = c.check_invariants() {
            panic!("invariant broken after record kind {kind}: {e}");
        }
    }
    // Last close (what the drop-in does), then the device goes; an unmap of everything must
    // leave nothing pinned.
    dev.release();
    drop(dev);
    let r = c.unmap_dma(&UnmapDma {
        iova: Iova(0),
        size: 0,
        flags: UnmapFlags::ALL,
        bitmap_pgsize: 0,
    });
    assert!(r.is_ok(), "unmap-all after release: {r:?}");
    let s = c.snapshot();
    assert_eq!(
        s.locked_pages, 0,
        "pages still pinned after release and unmap-all"
    );
    if let Err(e) = c.check_invariants() {
        panic!("invariant broken after release: {e}");
    }
}

fn step(c: &Container, dev: &Device, budget: &mut Budget, kind: u8, body: &[u8]) {
    match kind % 21 {
        k @ 0..=7 => ioctl(dev, usize::from(k), body),
        8 => {
            let v = u64_at(body, 0);
            let request = if v >> 32 == 0 {
                vfio_io((v & 0x3f) as u32)
            } else {
                v
            };
            let mut user = UserBuffer::new(BASE, WINDOW);
            let args = body.get(8..).unwrap_or(&[]);
            user.bytes[..args.len()].copy_from_slice(args);
            if let Err(e) = dev.ioctl(request, BASE, &mut user, &FuzzGroups) {
                check_errno("raw ioctl", &e);
            }
        }
        9 => {
            let off = pick_offset(dev, body);
            let n = usize::from(u16_at(body, 10)) % (MAX_ACCESS + 1);
            let mut buf = vec![0u8; n];
            match dev.read(off, &mut buf) {
                Ok(got) => assert!(got <= n, "read of {n} reported {got}"),
                Err(e) => check_errno("read", &e),
            }
        }
        10 => {
            let off = pick_offset(dev, body);
            let payload = body.get(10..).unwrap_or(&[]);
            // Longer than the record: the payload repeated (sizes up to MAX_ACCESS).
            let n = if byte(body, 0) & 0x80 != 0 {
                (usize::from(byte(body, 0) & 0x7f) * 32).min(MAX_ACCESS)
            } else {
                payload.len()
            };
            let data: Vec<u8> = if payload.is_empty() {
                vec![0; n]
            } else {
                payload.iter().copied().cycle().take(n).collect()
            };
            region_write(dev, budget, off, &data);
        }
        11 => {
            // A BAR0 register, 4 or 8 bytes.
            let off = u64::from(byte(body, 0) & 0xfc);
            let v = u64_at(body, 1);
            let data = v.to_le_bytes();
            let n = if byte(body, 0) & 1 != 0 { 8 } else { 4 };
            region_write(dev, budget, RegionIndex::BAR0.offset() + off, &data[..n]);
        }
        12 => {
            // A whole transfer: device memory <-> an interesting IOVA.
            let sel = byte(body, 0);
            let cmd = u64::from(byte(body, 1) & 0xf) | reg::CMD_START;
            let iova = pick_iova(byte(body, 2), u64_at(body, 3));
            let dev_off = u64_at(body, 11) & 0xff_ffff;
            let count = pick_count(sel, u64_at(body, 19));
            let (src, dst) = if cmd & reg::CMD_TO_RAM != 0 {
                (dev_off, iova)
            } else {
                (iova, dev_off)
            };
            bar0_write(dev, budget, reg::DMA_SRC, src);
            bar0_write(dev, budget, reg::DMA_DST, dst);
            bar0_write(dev, budget, reg::DMA_COUNT, count);
            bar0_write(dev, budget, reg::DMA_CMD, cmd);
            let mut st = [0u8; 4];
            if dev
                .read(RegionIndex::BAR0.offset() + reg::STATUS, &mut st)
                .is_ok()
            {
                let st = u32::from_le_bytes(st);
                assert!(
                    st & reg::STATUS_BUSY == 0,
                    "status {st:#x} after a transfer"
                );
            }
        }
        13 => {
            // The autonomous writer over a window picked like a DMA address.
            let base = pick_iova(byte(body, 0), u64_at(body, 1)) & !0xfff;
            bar0_write(dev, budget, reg::WRITER_BASE, base);
            bar0_write(
                dev,
                budget,
                reg::WRITER_SIZE,
                pick_count(byte(body, 9), u64_at(body, 10)),
            );
            bar0_write(dev, budget, reg::WRITER_RATE, u64::from(u16_at(body, 18)));
            bar0_write(dev, budget, reg::WRITER_SEED, u64_at(body, 20));
            let ctrl = u64::from(byte(body, 28) & 1);
            region_write(
                dev,
                budget,
                RegionIndex::BAR0.offset() + reg::WRITER_CTRL,
                &(ctrl as u32).to_le_bytes(),
            );
        }
        14 => {
            // The device side of interrupts.
            let v = u32::from(byte(body, 1));
            match byte(body, 0) % 5 {
                0 => drop(dev.irqs().signal(v)),
                1 => drop(dev.irqs().err()),
                2 => drop(dev.irqs().req()),
                3 => drop(
                    dev.irqs()
                        .set_intx(if v & 1 != 0 { Level::High } else { Level::Low }),
                ),
                _ => dev.irqs().msix_poll(),
            }
        }
        15 => {
            // The program reads its eventfds, or signals one (a resample eventfd unmasks).
            let e = &eventfds()[usize::from(byte(body, 0) & 3)];
            if byte(body, 0) & 4 != 0 {
                e.signal();
            } else {
                let _ = e.read();
            }
        }
        16 => {
            // Unmap (part of) a mapping under the device, or map it back.
            let i = usize::from(byte(body, 0)) % MAPPINGS.len();
            let (iova, _, size, _) = MAPPINGS[i];
            if byte(body, 1) & 1 != 0 {
                let _ = map(c, i);
            } else if byte(body, 1) & 2 != 0 {
                let _ = unmap(c, iova, size);
            } else {
                // Any sub-range: the kernel may refuse to split a mapping (type1v2: EINVAL).
                let off = u64::from(u16_at(body, 2)) << 12;
                let len = u64::from(u16_at(body, 4)) << 12;
                let _ = unmap(c, iova + off % size, len);
            }
        }
        17 => {
            let _ = match byte(body, 0) % 3 {
                0 => c.dirty_start(),
                1 => c.dirty_stop(),
                _ => {
                    let (iova, _, size, _) = MAPPINGS[usize::from(byte(body, 1)) % MAPPINGS.len()];
                    c.dirty_bitmap(Iova(iova), size, 4096).map(drop)
                }
            };
        }
        18 => {
            let off = pick_offset(dev, body);
            let len = match byte(body, 10) & 3 {
                0 => u64::from(u16_at(body, 11)) << 12,
                1 => u64_at(body, 11) & 0xff_ffff,
                _ => u64_at(body, 11),
            };
            let sharing = if byte(body, 10) & 4 != 0 {
                MapSharing::Private
            } else {
                MapSharing::Shared
            };
            if let Err(e) = dev.check_mmap(off, len, sharing) {
                check_errno("check_mmap", &e);
            }
            let _ = dev.mmap_areas();
        }
        19 => set_irqs(dev, body),
        _ => {
            // Reset from the device layer (the drop-in's and QEMU's system_reset path).
            if let Err(e) = dev.reset() {
                check_errno("reset", &e);
            }
        }
    }
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
