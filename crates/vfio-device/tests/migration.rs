//! Device migration driven as VMMs drive it, through the byte-level device UAPI: the v2
//! `VFIO_DEVICE_FEATURE` migration features and their data fds (QEMU ≥ 8.0), the deprecated v1
//! migration region in QEMU 7.2's exact order, device DMA logging, and bad state streams on
//! the destination. Each source and destination device sits in its own live type1 container
//! over fake guest memory. Each test names the kernel rule it checks.

use std::mem::{offset_of, size_of};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use type1::mm::{AddressSpace, FakeMemory, LockCapability, Mm};
use type1::{
    Container, ContainerConfig, DirtyMode, GroupId, GroupSpec, MapDma, MapFlags, UserBuffer,
};
use type1::{Iova, Vaddr};
use vfio_bindings::bindings::vfio::{
    vfio_device_feature_dma_logging_control, vfio_device_feature_dma_logging_report,
    vfio_device_feature_mig_state, vfio_precopy_info, vfio_region_info, vfio_region_info_cap_type,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_MIGRATION,
    VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET, VFIO_MIGRATION_P2P,
    VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY, VFIO_REGION_INFO_FLAG_CAPS,
};
use vfio_device::ioctl::{
    VFIO_DEVICE_FEATURE, VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET,
    VFIO_MIG_GET_PRECOPY_INFO,
};
use vfio_device::migration::stream::{self, FrameKind, StreamIdentity};
use vfio_device::migration::{v1, MigState, ALL_STATES};
use vfio_device::testdev::{self, reg};
use vfio_device::{DataFdMode, Device, Dma, Location, MapSharing, MigrationSpec, NoGroupFds};

const RAM: u64 = 0x7f00_0000_0000;
const RAM_LEN: u64 = 64 << 20;
const MAPPED: u64 = 16 << 20;
const ARG: u64 = 0x10_0000;
const BAR2: u64 = 2 << 40;
const V1: u64 = (v1::INDEX as u64) << 40;
const GROUP: u32 = 5;

const STOP: u32 = 1;
const RUNNING: u32 = 2;
const STOP_COPY: u32 = 3;
const RESUMING: u32 = 4;
const PRE_COPY: u32 = 6;

struct Rig {
    mem: Arc<FakeMemory>,
    /// Keeps the container (and the device's domain) alive.
    _c: Arc<Container>,
    dev: Arc<Device>,
}

fn rig_with(migration: MigrationSpec) -> Rig {
    let mem = Arc::new(FakeMemory::new());
    mem.add_ram(RAM, RAM_LEN, 1 << 32);
    let mm = Arc::new(Mm::new(
        Box::new(mem.clone()),
        None,
        LockCapability::Unlimited,
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
        size: MAPPED,
        flags: MapFlags::READ | MapFlags::WRITE,
    })
    .unwrap();
    let dma = Dma::attach(&c, GroupId(GROUP)).unwrap();
    let dev = testdev::create_with(Location::new(GROUP, 0, 0, 4), dma, migration).unwrap();
    // Memory decode and bus master on (the VMM restores config space itself).
    dev.write((7 << 40) + 4, &6u16.to_le_bytes()).unwrap();
    Rig { mem, _c: c, dev }
}

fn rig() -> Rig {
    rig_with(MigrationSpec::full(false))
}

impl Rig {
    fn w64(&self, off: u64, v: u64) {
        assert_eq!(self.dev.write(off, &v.to_le_bytes()).unwrap(), 8);
    }
    fn w32(&self, off: u64, v: u32) {
        assert_eq!(self.dev.write(off, &v.to_le_bytes()).unwrap(), 4);
    }
    fn r32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn r64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.dev.read(off, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
    fn guest(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read(RAM + iova, &mut b).unwrap();
        b
    }
    fn bar2(&self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        assert_eq!(self.dev.read(BAR2 + off, &mut b).unwrap(), len);
        b
    }
    /// Every BAR0 register of the map.
    fn regs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = [reg::LIVENESS, reg::STATUS, reg::IRQ_STATUS]
            .iter()
            .map(|&o| u64::from(self.r32(o)))
            .collect();
        for o in [
            reg::DMA_SRC,
            reg::DMA_DST,
            reg::DMA_COUNT,
            reg::DMA_CMD,
            reg::WRITER_BASE,
            reg::WRITER_SIZE,
            reg::WRITER_SEED,
            reg::WRITER_PAGES,
            reg::WRITER_FAULTS,
        ] {
            v.push(self.r64(o));
        }
        v.push(u64::from(self.r32(reg::WRITER_RATE)));
        v.push(u64::from(self.r32(reg::WRITER_CTRL)));
        v
    }

    /// `VFIO_DEVICE_FEATURE` with `payload`; returns the result and the payload after.
    fn feature(&self, flags: u32, payload: &[u8]) -> (Result<i64, i32>, Vec<u8>) {
        self.feature_in(&mut UserBuffer::new(ARG, 1 << 16), flags, payload)
    }
    fn feature_in(
        &self,
        u: &mut UserBuffer,
        flags: u32,
        payload: &[u8],
    ) -> (Result<i64, i32>, Vec<u8>) {
        let argsz = u32::try_from(8 + payload.len()).unwrap();
        u.bytes[0..4].copy_from_slice(&argsz.to_ne_bytes());
        u.bytes[4..8].copy_from_slice(&flags.to_ne_bytes());
        u.bytes[8..8 + payload.len()].copy_from_slice(payload);
        let r = self
            .dev
            .ioctl(VFIO_DEVICE_FEATURE, ARG, u, &NoGroupFds)
            .map_err(|e| e.errno());
        (r, u.bytes[8..8 + payload.len()].to_vec())
    }
    /// `MIG_DEVICE_STATE` SET: (result, copied-back state, data_fd).
    fn set_state(&self, target: u32) -> (Result<i64, i32>, u32, i32) {
        let mut p = [0u8; size_of::<vfio_device_feature_mig_state>()];
        p[0..4].copy_from_slice(&target.to_ne_bytes());
        p[4..8].copy_from_slice(&7i32.to_ne_bytes());
        let (r, out) = self.feature(
            VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
            &p,
        );
        let st = u32::from_ne_bytes(out[0..4].try_into().unwrap());
        let fd = i32::from_ne_bytes(out[4..8].try_into().unwrap());
        (r, st, fd)
    }
    /// `MIG_DEVICE_STATE` GET: (state, data_fd).
    fn get_state(&self) -> (u32, i32) {
        let (r, out) = self.feature(
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
            &[0u8; 8],
        );
        r.unwrap();
        (
            u32::from_ne_bytes(out[0..4].try_into().unwrap()),
            i32::from_ne_bytes(out[4..8].try_into().unwrap()),
        )
    }
    fn reset(&self) {
        let mut u = UserBuffer::new(ARG, 16);
        self.dev
            .ioctl(VFIO_DEVICE_RESET, ARG, &mut u, &NoGroupFds)
            .unwrap();
    }
    /// The whole v2 save: SET STOP_COPY (from wherever), read the fd to EOF, SET STOP.
    fn save_v2(&self) -> Vec<u8> {
        let (r, _, fd) = self.set_state(STOP_COPY);
        r.unwrap();
        assert!(fd >= 0);
        let s = read_to_eof(fd);
        close(fd);
        assert_eq!(self.set_state(STOP).0, Ok(0));
        s
    }
    /// The whole v2 resume: SET RESUMING, write the stream, SET `then`.
    fn resume_v2(&self, bytes: &[u8], then: u32) -> Result<i64, i32> {
        let (r, _, fd) = self.set_state(RESUMING);
        r.unwrap();
        write_all(fd, bytes);
        close(fd);
        self.set_state(then).0
    }
}

fn read_to_eof(fd: RawFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    let t0 = Instant::now();
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n >= 0, "read: {}", std::io::Error::last_os_error());
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n.unsigned_abs()]);
        assert!(t0.elapsed() < Duration::from_secs(20), "no EOF");
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: `data` is valid for its length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        data = &data[n.unsigned_abs()..];
    }
}

fn close(fd: RawFd) {
    // SAFETY: a data fd these tests own.
    unsafe { libc::close(fd) };
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// The test device's writer generator (xorshift64, the register map's rule).
fn xorshift(mut x: u64) -> u64 {
    if x == 0 {
        x = 0x9e37_79b9_7f4a_7c15;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// For writes `from..=to` of a writer (seed, pages): page → the last seq written there.
fn expected_pages(seed: u64, npages: u64, from: u64, to: u64) -> Vec<u64> {
    let mut last = vec![0u64; usize::try_from(npages).unwrap()];
    let mut state = seed;
    for seq in 1..=to {
        state = xorshift(state);
        if seq >= from {
            last[usize::try_from(state % npages).unwrap()] = seq;
        }
    }
    last
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

const WIN_PAGES: u64 = 64;
const SEED: u64 = 0x5eed;

/// Writer over the first 64 pages of IOVA at 4000 pages/s.
fn start_writer(r: &Rig) {
    r.w64(reg::WRITER_BASE, 0);
    r.w64(reg::WRITER_SIZE, WIN_PAGES * 4096);
    r.w32(reg::WRITER_RATE, 4000);
    r.w64(reg::WRITER_SEED, SEED);
    r.w32(reg::WRITER_CTRL, 1);
}

/// Seq of every page of the writer window in guest memory.
fn window_seqs(r: &Rig) -> Vec<u64> {
    (0..WIN_PAGES)
        .map(|p| u64::from_le_bytes(r.guest(p * 4096, 8).try_into().unwrap()))
        .collect()
}

mod save_restore {
    use super::*;

    /// The device state moves whole: registers, device memory and the writer's position in
    /// its sequence; the destination's writer continues with write `seq + 1` where the
    /// source stopped (the v2 STOP_COPY stream restored through RESUMING → RUNNING).
    #[test]
    fn registers_memory_and_writer_position_arrive_and_the_writer_continues() {
        let src = rig();
        src.w32(reg::LIVENESS, 0x1234_5678);
        src.w64(reg::DMA_SRC, 0x4000);
        src.w64(reg::DMA_DST, 0x9000);
        src.w64(reg::DMA_COUNT, 77);
        src.dev.write(BAR2 + 0x1000, &[0xab; 4096]).unwrap();
        src.dev.write(BAR2 + 0xff_f000, b"last page").unwrap();
        start_writer(&src);
        wait_until("source writes", || src.r64(reg::WRITER_PAGES) >= 20);

        let stream = src.save_v2();
        let s = src.r64(reg::WRITER_PAGES);
        assert_eq!(src.r64(reg::WRITER_FAULTS), 0);
        let before = src.regs();
        // Stopped: the source writes nothing more.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(src.r64(reg::WRITER_PAGES), s);
        assert_eq!(
            window_seqs(&src),
            expected_pages(SEED, WIN_PAGES, 1, s),
            "source memory holds exactly writes 1..={s}"
        );

        let dst = rig();
        assert_eq!(dst.resume_v2(&stream, STOP), Ok(0));
        assert_eq!(dst.regs(), before, "registers arrive");
        assert_eq!(dst.bar2(0x1000, 4096), vec![0xab; 4096]);
        assert_eq!(&dst.bar2(0xff_f000, 9), b"last page");
        assert_eq!(dst.bar2(0, 4096), vec![0; 4096]);
        assert!(window_seqs(&dst).iter().all(|&q| q == 0), "no DMA yet");

        assert_eq!(dst.set_state(RUNNING).0, Ok(0));
        wait_until("destination writes", || {
            dst.r64(reg::WRITER_PAGES) >= s + 20
        });
        let (r, _, fd) = dst.set_state(STOP_COPY);
        r.unwrap();
        close(fd);
        let e = dst.r64(reg::WRITER_PAGES);
        assert_eq!(
            window_seqs(&dst),
            expected_pages(SEED, WIN_PAGES, s + 1, e),
            "the destination wrote exactly writes {}..={e}",
            s + 1
        );
    }

    /// STOP (and every state but RUNNING and PRE_COPY) allows no device DMA and no
    /// interrupt: a DMA started in STOP changes no guest memory until RUNNING
    /// (`enum vfio_device_mig_state`: "no DMA" in STOP, P2P quiescing in RUNNING_P2P).
    #[test]
    fn stopped_devices_do_no_dma_until_running() {
        let r = rig();
        start_writer(&r);
        wait_until("writes", || r.r64(reg::WRITER_PAGES) >= 5);
        assert_eq!(r.set_state(STOP).0, Ok(0));
        let frozen = window_seqs(&r);
        r.dev.write(BAR2, &[0x5a; 64]).unwrap();
        r.w64(reg::DMA_SRC, 0);
        r.w64(reg::DMA_DST, 0x80_0000);
        r.w64(reg::DMA_COUNT, 64);
        r.w64(reg::DMA_CMD, reg::CMD_START | reg::CMD_TO_RAM);
        r.w32(reg::IRQ_RAISE, 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(window_seqs(&r), frozen);
        assert_eq!(r.guest(0x80_0000, 64), vec![0; 64]);
        assert_eq!(r.r32(reg::STATUS), reg::STATUS_BUSY);
        assert!(r.dev.dma().is_paused());
        assert_eq!(r.set_state(RUNNING).0, Ok(0));
        assert_eq!(r.guest(0x80_0000, 64), vec![0x5a; 64]);
        assert_eq!(r.r32(reg::STATUS), reg::STATUS_DONE);
        wait_until("writer again", || window_seqs(&r) != frozen);
    }

    /// A reset in STOP_COPY ends the transfer and brings the device back to RUNNING
    /// (`vfio_pci_core` reset + mlx5's deferred reset: state RUNNING, files disabled).
    #[test]
    fn reset_in_stop_copy_returns_to_running_and_ends_the_transfer() {
        let r = rig();
        r.dev.set_data_fd_mode(DataFdMode::Routed);
        let (res, _, fd) = r.set_state(STOP_COPY);
        res.unwrap();
        let file = r.dev.data_file(fd).unwrap();
        r.reset();
        assert_eq!(r.get_state(), (RUNNING, -1));
        assert_eq!(file.read(&mut [0u8; 8]).unwrap_err().errno(), libc::ENODEV);
        close(fd);
        r.w32(reg::LIVENESS, 3);
        assert_eq!(r.r32(reg::LIVENESS), !3);
    }
}

mod bad_streams {
    use super::*;

    fn good() -> Vec<u8> {
        let src = rig();
        src.w32(reg::LIVENESS, 42);
        src.dev.write(BAR2, &[1; 4096]).unwrap();
        src.save_v2()
    }

    /// A truncated, corrupted or foreign stream fails RESUMING → STOP with EINVAL, the state
    /// stays RESUMING and the device is untouched (mtty's `mtty_load_state` failure path);
    /// a reset brings it back to RUNNING, and a good stream then restores.
    #[test]
    fn truncated_corrupted_and_foreign_streams_fail_with_einval_and_reset_recovers() {
        let g = good();
        let mut flipped = g.clone();
        let mid = g.len() / 2;
        flipped[mid] ^= 0x40;
        let foreign_id = StreamIdentity {
            vendor: 0x8086,
            device: 0x1234,
            subsystem_vendor: 0,
            subsystem: 0,
        };
        let foreign = stream::encode(FrameKind::Final, foreign_id, b"state");
        let mut wrong_model = stream::encode(
            FrameKind::Final,
            rig().dev.stream_identity(),
            b"not the test device's state",
        );
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("header cut", g[..20].to_vec()),
            ("payload cut", g[..g.len() - 1].to_vec()),
            ("bit flip", flipped),
            ("foreign device", foreign),
            ("garbage", vec![0xee; 4096]),
            ("model payload", std::mem::take(&mut wrong_model)),
        ];
        for (what, bytes) in cases {
            let dst = rig();
            dst.w32(reg::LIVENESS, 9);
            dst.dev.write(BAR2, &[7; 16]).unwrap();
            let (r, st, fd) = dst.set_state(RESUMING);
            r.unwrap();
            assert_eq!(st, RESUMING);
            write_all(fd, &bytes);
            let (r, st, fd2) = dst.set_state(RUNNING);
            assert_eq!(r, Err(libc::EINVAL), "{what}");
            assert_eq!(
                (st, fd2),
                (RUNNING, -1),
                "{what}: the requested state is copied back"
            );
            assert_eq!(dst.get_state(), (RESUMING, -1), "{what}");
            assert_eq!(dst.r32(reg::LIVENESS), !9, "{what}: registers untouched");
            assert_eq!(dst.bar2(0, 16), vec![7; 16], "{what}: memory untouched");
            close(fd);
            dst.reset();
            assert_eq!(dst.get_state(), (RUNNING, -1), "{what}");
            assert_eq!(dst.resume_v2(&g, RUNNING), Ok(0), "{what}");
            assert_eq!(dst.r32(reg::LIVENESS), !42);
            assert_eq!(dst.bar2(0, 4096), vec![1; 4096]);
        }
    }
}

mod routed_resume {
    use super::*;

    /// Routed mode: the program writes the stream through the drop-in's routed `write` and
    /// leaves RESUMING with the data fd still open, as QEMU does (it closes the fd only after
    /// the state change, `vfio_load_cleanup`). The transition must not wait for bytes on the
    /// pipe, which in routed mode never come (it blocked forever until the pipe end was made
    /// non-blocking; found by the migration_stream fuzz target). Bounded: fails after 10 s.
    #[test]
    fn leaving_resuming_with_the_routed_fd_open_restores_without_waiting() {
        let g = {
            let s = rig();
            s.w32(reg::LIVENESS, 77);
            s.save_v2()
        };
        let dst = Arc::new(rig());
        dst.dev.set_data_fd_mode(DataFdMode::Routed);
        let (r, _, fd) = dst.set_state(RESUMING);
        r.unwrap();
        let file = dst.dev.data_file(fd).unwrap();
        assert_eq!(file.write(&g).unwrap(), g.len());
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dst.clone();
        std::thread::spawn(move || {
            let _ = tx.send(d.set_state(RUNNING).0);
        });
        let res = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("RESUMING -> RUNNING still blocked after 10 s");
        assert_eq!(res, Ok(0));
        close(fd);
        assert_eq!(dst.r32(reg::LIVENESS), !77);
    }
}

mod random_streams {
    use super::*;

    /// Random and mutated streams (cuts, bit flips, splices, valid frames around random or
    /// mutated payloads) never panic the device: each RESUMING → STOP is `Ok` or `EINVAL`,
    /// a refused one leaves RESUMING, and a reset always recovers (the fuzz rule for state
    /// streams, bounded here: 300 deterministic cases).
    #[test]
    fn random_streams_fail_cleanly_or_restore() {
        let g = {
            let s = rig();
            s.w32(reg::LIVENESS, 1);
            s.dev.write(BAR2 + 0x3000, &[2; 4096]).unwrap();
            s.save_v2()
        };
        let payload = &g[stream::HEADER_LEN..];
        let dst = rig();
        dst.dev.set_data_fd_mode(DataFdMode::Routed);
        let id = dst.dev.stream_identity();
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move |n: usize| {
            x = xorshift(x);
            usize::try_from(x % n.max(1) as u64).unwrap()
        };
        let (mut ok, mut refused) = (0, 0);
        for case in 0..300 {
            let bytes: Vec<u8> = match case % 5 {
                0 => g[..next(g.len() + 1)].to_vec(),
                1 => {
                    let mut b = g.clone();
                    for _ in 0..=next(4) {
                        let i = next(b.len());
                        b[i] ^= 1 << next(8);
                    }
                    b
                }
                2 => {
                    let mut p = payload.to_vec();
                    let i = next(p.len());
                    p[i] = u8::try_from(next(256)).unwrap();
                    p.truncate(p.len() - next(8));
                    stream::encode(FrameKind::Final, id, &p)
                }
                3 => {
                    let n = next(300);
                    let p: Vec<u8> = (0..n).map(|_| u8::try_from(next(256)).unwrap()).collect();
                    stream::encode(FrameKind::Final, id, &p)
                }
                _ => {
                    let mut b = stream::encode(FrameKind::PreCopy, id, &payload[..next(64)]);
                    b.extend_from_slice(&g[next(g.len())..]);
                    b
                }
            };
            dst.reset();
            let t = dst.dev.set_migration_state(RESUMING).unwrap().unwrap();
            for chunk in bytes.chunks(1 + next(5000)) {
                t.write(chunk).unwrap();
            }
            match dst.dev.set_migration_state(RUNNING) {
                Ok(_) => {
                    ok += 1;
                    assert_eq!(dst.dev.migration_state(), MigState::Running);
                }
                Err(e) => {
                    refused += 1;
                    assert_eq!(e.errno(), libc::EINVAL, "case {case}");
                    assert_eq!(dst.dev.migration_state(), MigState::Resuming);
                }
            }
        }
        assert!(
            refused > 200,
            "most random streams are refused ({ok} restored)"
        );
        dst.reset();
        assert_eq!(dst.resume_v2(&g, RUNNING), Ok(0));
        assert_eq!(dst.r32(reg::LIVENESS), !1);
        assert_eq!(dst.bar2(0x3000, 4096), vec![2; 4096]);
    }
}

mod v2 {
    use super::*;

    const ALL: u32 = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;

    /// `vfio_ioctl_device_feature_migration`: GET only, 8 bytes; PROBE → 0.
    #[test]
    fn migration_feature_reports_stop_copy_p2p_pre_copy() {
        let r = rig();
        let (res, out) = r.feature(
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
            &[0; 8],
        );
        assert_eq!(res, Ok(0));
        assert_eq!(u64::from_ne_bytes(out.try_into().unwrap()), u64::from(ALL));
        let probe = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET;
        assert_eq!(
            r.feature(probe | VFIO_DEVICE_FEATURE_MIGRATION, &[]).0,
            Ok(0)
        );
        let set = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIGRATION;
        assert_eq!(r.feature(set, &[0; 8]).0, Err(libc::EINVAL));
        let get = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION;
        assert_eq!(r.feature(get, &[0; 4]).0, Err(libc::EINVAL));
        assert_eq!(
            r.feature(VFIO_DEVICE_FEATURE_MIGRATION, &[0; 8]).0,
            Err(libc::EINVAL)
        );
        let (res, out) = r.feature(
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
            &[0; 8],
        );
        assert_eq!(res, Ok(0));
        assert!(u64::from_ne_bytes(out.try_into().unwrap()) >= stream::HEADER_LEN as u64);
    }

    /// Without migration (`!device->mig_ops`, `!device->log_ops`): every migration and
    /// logging feature is ENOTTY, PROBE included, before `vfio_check_feature`.
    #[test]
    fn a_device_without_migration_answers_enotty_even_to_probe() {
        let r = rig_with(MigrationSpec::none());
        for f in [
            VFIO_DEVICE_FEATURE_MIGRATION,
            VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
            VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
            VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
            VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
            VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
        ] {
            let probe = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET;
            assert_eq!(r.feature(probe | f, &[0; 32]).0, Err(libc::ENOTTY), "{f}");
        }
    }

    /// Reset, then go from RUNNING to `s`; in RESUMING a valid stream is written, so the
    /// arcs out of RESUMING succeed.
    fn reach(r: &Rig, s: MigState, good: &[u8]) {
        r.reset();
        if s == MigState::Running {
            return;
        }
        let (res, _, fd) = r.set_state(s.raw());
        res.unwrap();
        if fd >= 0 {
            if s == MigState::Resuming {
                write_all(fd, good);
            }
            close(fd);
        }
        assert_eq!(r.get_state().0, s.raw());
    }

    /// Every (current, target) pair of `vfio_mig_get_next_state` on a STOP_COPY|P2P|PRE_COPY
    /// device: ERROR, values past PRE_COPY_P2P and STOP_COPY → PRE_COPY(_P2P) are EINVAL with
    /// the state unchanged; every other target is reached, with a new data fd exactly when the
    /// last arc is STOP→STOP_COPY, STOP→RESUMING, RUNNING→PRE_COPY or
    /// RUNNING_P2P→PRE_COPY_P2P (PRE_COPY_P2P→STOP_COPY keeps the pre-copy fd: −1).
    #[test]
    fn every_arc_and_every_invalid_transition() {
        use MigState::*;
        let good = {
            let s = rig();
            s.save_v2()
        };
        let r = rig();
        for cur in ALL_STATES.into_iter().filter(|&s| s != Error) {
            for tgt in 0..=9u32 {
                reach(&r, cur, &good);
                let (res, st, fd) = r.set_state(tgt);
                let t = MigState::from_raw(tgt);
                let invalid = t.is_none_or(|t| t == Error)
                    || (cur == StopCopy && matches!(t, Some(PreCopy | PreCopyP2p)));
                let what = format!("{cur:?} -> {tgt}");
                assert_eq!(st, tgt, "{what}: the requested state is copied back");
                if invalid {
                    assert_eq!(res, Err(libc::EINVAL), "{what}");
                    assert_eq!(fd, -1, "{what}");
                    assert_eq!(r.get_state(), (cur.raw(), -1), "{what}: unchanged");
                    continue;
                }
                assert_eq!(res, Ok(0), "{what}");
                assert_eq!(r.get_state(), (tgt, -1), "{what}");
                let t = t.unwrap();
                let new_fd = match t {
                    StopCopy => !matches!(cur, StopCopy | PreCopy | PreCopyP2p),
                    Resuming => cur != Resuming,
                    PreCopy => !matches!(cur, PreCopy | PreCopyP2p),
                    PreCopyP2p => !matches!(cur, PreCopy | PreCopyP2p),
                    _ => false,
                };
                if new_fd {
                    assert!(fd >= 0, "{what}: a data fd");
                    // SAFETY: F_GETFD on the fd just returned.
                    let fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                    assert_eq!(fl & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "{what}: O_CLOEXEC");
                    close(fd);
                } else {
                    assert_eq!(fd, -1, "{what}: no data fd");
                }
            }
        }
    }

    /// The STOP_COPY fd is a read-only stream: `pread` is ESPIPE, a write fails, the bytes end
    /// with EOF after at most `MIG_DATA_SIZE` bytes (`mtty_save_read`, `stream_open`).
    #[test]
    fn stop_copy_fd_is_a_stream_ending_in_eof() {
        let r = rig();
        r.dev.write(BAR2 + 0x2000, &[3; 100]).unwrap();
        let (_, out) = r.feature(
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
            &[0; 8],
        );
        let size = u64::from_ne_bytes(out.try_into().unwrap());
        let (res, _, fd) = r.set_state(STOP_COPY);
        res.unwrap();
        let mut b = [0u8; 8];
        // SAFETY: `b` is valid for 8 bytes.
        let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), 8, 0) };
        assert_eq!((n, errno()), (-1, libc::ESPIPE));
        // SAFETY: as above.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), 8) };
        assert_eq!((n, errno()), (-1, libc::EBADF));
        let s = read_to_eof(fd);
        assert!(s.len() as u64 <= size && !s.is_empty());
        assert_eq!(r.set_state(STOP).0, Ok(0));
        close(fd);
    }

    /// Routed data fds follow the kernel exactly: PRE_COPY reads give the pre-copy bytes,
    /// then ENOMSG at the temporary end; PRECOPY_INFO reports the bytes left (ENOTTY for other
    /// requests, EINVAL for a short argsz or outside PRE_COPY); STOP_COPY continues on the
    /// same fd to EOF; after STOP_COPY → STOP reads are ENODEV (mtty, mlx5).
    #[test]
    fn routed_fds_give_enomsg_precopy_info_eof_and_enodev() {
        let r = rig();
        r.dev.set_data_fd_mode(DataFdMode::Routed);
        let (res, _, fd) = r.set_state(PRE_COPY);
        res.unwrap();
        let f = r.dev.data_file(fd).unwrap();
        let mut u = UserBuffer::new(ARG, 64);
        u.bytes[0..4].copy_from_slice(&24u32.to_ne_bytes());
        let info = |u: &mut UserBuffer| {
            r.dev
                .data_file_ioctl(&f, VFIO_MIG_GET_PRECOPY_INFO, ARG, u)
                .map_err(|e| e.errno())
        };
        assert_eq!(info(&mut u), Ok(0));
        let initial = u64::from_ne_bytes(
            u.bytes[offset_of!(vfio_precopy_info, initial_bytes)..][..8]
                .try_into()
                .unwrap(),
        );
        assert!(initial > stream::HEADER_LEN as u64);
        let mut first = vec![0u8; usize::try_from(initial).unwrap() + 100];
        assert_eq!(f.read(&mut first).unwrap() as u64, initial);
        assert_eq!(f.read(&mut first).unwrap_err().errno(), libc::ENOMSG);
        assert_eq!(info(&mut u), Ok(0));
        assert_eq!(u.bytes[8..16], [0; 8], "nothing left");
        assert_eq!(
            r.dev
                .data_file_ioctl(&f, 0x3b7a, ARG, &mut u)
                .unwrap_err()
                .errno(),
            libc::ENOTTY
        );
        u.bytes[0..4].copy_from_slice(&23u32.to_ne_bytes());
        assert_eq!(info(&mut u), Err(libc::EINVAL));
        u.bytes[0..4].copy_from_slice(&24u32.to_ne_bytes());
        assert_eq!(f.positional().unwrap_err().errno(), libc::ESPIPE);

        let (res, _, fd2) = r.set_state(STOP_COPY);
        assert_eq!(
            (res, fd2),
            (Ok(0), -1),
            "PRE_COPY_P2P -> STOP_COPY keeps the fd"
        );
        assert_eq!(info(&mut u), Err(libc::EINVAL), "not in PRE_COPY");
        let mut rest = Vec::new();
        let mut b = [0u8; 1000];
        loop {
            let n = f.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&b[..n]);
        }
        first.truncate(usize::try_from(initial).unwrap());
        first.extend_from_slice(&rest);
        assert_eq!(r.set_state(STOP).0, Ok(0));
        assert_eq!(f.read(&mut b).unwrap_err().errno(), libc::ENODEV);
        close(fd);
        // The whole (pre-copy + final) stream restores.
        let dst = rig();
        assert_eq!(dst.resume_v2(&first, RUNNING), Ok(0));
    }

    /// Pipe-mode fds carry the same bytes with nothing routed: the pre-copy fd yields the
    /// pre-copy frame, and after PRE_COPY → STOP_COPY the final frame, then EOF.
    #[test]
    fn pipe_fds_carry_pre_copy_then_final_frames() {
        let r = rig();
        r.w32(reg::LIVENESS, 5);
        let (res, _, fd) = r.set_state(PRE_COPY);
        res.unwrap();
        assert_eq!(r.set_state(STOP_COPY).0, Ok(0));
        let s = read_to_eof(fd);
        close(fd);
        assert_eq!(r.set_state(STOP).0, Ok(0));
        let dst = rig();
        assert_eq!(dst.resume_v2(&s, RUNNING), Ok(0));
        assert_eq!(dst.r32(reg::LIVENESS), !5);
    }
}

mod v1_region {
    use super::*;

    fn rig_v1() -> Rig {
        rig_with(MigrationSpec::full(true))
    }

    fn state(r: &Rig) -> u32 {
        let mut b = [0u8; 4];
        assert_eq!(r.dev.read(V1, &mut b).unwrap(), 4);
        u32::from_le_bytes(b)
    }
    fn set(r: &Rig, v: u32) -> Result<usize, i32> {
        r.dev.write(V1, &v.to_le_bytes()).map_err(|e| e.errno())
    }
    fn field(r: &Rig, off: u64) -> u64 {
        let mut b = [0u8; 8];
        assert_eq!(r.dev.read(V1 + off, &mut b).unwrap(), 8);
        u64::from_le_bytes(b)
    }
    /// QEMU 7.2's `vfio_migration_set_state`: read `device_state`, write the new value.
    fn qemu_set(r: &Rig, from: u32, to: u32) {
        assert_eq!(state(r), from);
        assert_eq!(set(r, to), Ok(4), "{from} -> {to}");
    }
    /// `vfio_mig_read` of the data: aligned pieces of at most 8 bytes.
    fn read_data(r: &Rig, off: u64, size: u64) -> Vec<u8> {
        let mut out = vec![0u8; usize::try_from(size).unwrap()];
        let mut done = 0usize;
        while done < out.len() {
            let at = off + done as u64;
            let left = out.len() - done;
            let n = [8usize, 4, 2, 1]
                .into_iter()
                .find(|&n| left >= n && at % n as u64 == 0)
                .unwrap();
            assert_eq!(r.dev.read(V1 + at, &mut out[done..done + n]).unwrap(), n);
            done += n;
        }
        out
    }
    /// `vfio_save_buffer` loops: pending, then per chunk offset, size, data, pending.
    fn drain(r: &Rig, out: &mut Vec<u8>) -> usize {
        let mut chunks = 0;
        let mut pending = field(r, 8);
        assert_eq!(field(r, 8), pending, "pending_bytes is stable");
        while pending > 0 {
            let off = field(r, 16);
            let size = field(r, 24);
            assert_eq!(field(r, 16), off, "re-read offset");
            assert_eq!(field(r, 24), size, "re-read size");
            assert!(size > 0 && size <= v1::DATA_SIZE);
            out.extend(read_data(r, off, size));
            chunks += 1;
            let left = field(r, 8);
            assert_eq!(
                left,
                pending - size.min(pending),
                "pending drops by the chunk"
            );
            pending = left;
        }
        chunks
    }

    /// QEMU 7.2 sees a tenth region with the TYPE cap 3/1 (`vfio_get_dev_region_info`),
    /// flags READ|WRITE|CAPS, no mmap (`vfio_pci_core_mmap`: a device-specific region without
    /// MMAP is EINVAL).
    #[test]
    fn the_region_is_advertised_with_its_type_capability() {
        let r = rig_v1();
        let mut u = UserBuffer::new(ARG, 256);
        u.bytes[0..4].copy_from_slice(&16u32.to_ne_bytes());
        r.dev
            .ioctl(VFIO_DEVICE_GET_INFO, ARG, &mut u, &NoGroupFds)
            .unwrap();
        assert_eq!(u32::from_ne_bytes(u.bytes[8..12].try_into().unwrap()), 10);
        let info = |u: &mut UserBuffer, argsz: u32| {
            u.bytes.fill(0);
            u.bytes[0..4].copy_from_slice(&argsz.to_ne_bytes());
            u.bytes[8..12].copy_from_slice(&v1::INDEX.to_ne_bytes());
            r.dev
                .ioctl(VFIO_DEVICE_GET_REGION_INFO, ARG, u, &NoGroupFds)
                .unwrap();
        };
        info(&mut u, 32);
        let get =
            |u: &UserBuffer, at: usize| u32::from_ne_bytes(u.bytes[at..at + 4].try_into().unwrap());
        assert_eq!(get(&u, 0), 48, "argsz grows to hold the TYPE cap");
        assert_eq!(
            get(&u, 4) & VFIO_REGION_INFO_FLAG_CAPS,
            VFIO_REGION_INFO_FLAG_CAPS
        );
        info(&mut u, 48);
        let cap = size_of::<vfio_region_info>();
        assert_eq!(get(&u, offset_of!(vfio_region_info, cap_offset)), 32);
        assert_eq!(
            u16::from_ne_bytes(u.bytes[cap..cap + 2].try_into().unwrap()),
            2
        );
        assert_eq!(
            get(&u, cap + offset_of!(vfio_region_info_cap_type, type_)),
            3
        );
        assert_eq!(
            get(&u, cap + offset_of!(vfio_region_info_cap_type, subtype)),
            1
        );
        assert_eq!(
            u64::from_ne_bytes(u.bytes[16..24].try_into().unwrap()),
            v1::REGION_SIZE
        );
        assert!(r
            .dev
            .check_mmap(V1 + v1::DATA_OFFSET, 4096, MapSharing::Shared)
            .is_err());
        // The plain test device keeps 9 regions.
        assert_eq!(rig().dev.regions().count(), 9);
    }

    /// 101, 110 and 111 are EINVAL with the state unchanged; header accesses of another size
    /// are EINVAL (v5.8 `vfio.h`: `device_state` states; QEMU uses the field sizes).
    #[test]
    fn invalid_states_and_accesses_are_einval_and_change_nothing() {
        let r = rig_v1();
        assert_eq!(state(&r), 1);
        for v in [5, 6, 7] {
            assert_eq!(set(&r, v), Err(libc::EINVAL));
            assert_eq!(state(&r), 1);
        }
        assert_eq!(
            r.dev.write(V1 + 8, &[0; 8]).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            r.dev.read(V1, &mut [0; 8]).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            r.dev.read(V1 + 40, &mut [0; 4]).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            r.dev
                .read(V1 + v1::REGION_SIZE - 4, &mut [0; 8])
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
        assert_eq!(
            r.dev.write(V1 + 24, &[0; 8]).unwrap_err().errno(),
            libc::EINVAL,
            "not resuming"
        );
    }

    /// The source and destination sequences QEMU 7.2 issues (`vfio_save_setup`,
    /// `vfio_save_iterate`, `vfio_save_complete_precopy`, `vfio_load_state`,
    /// `vfio_migration_set_state`'s read-modify-write), with the device's writer running
    /// through pre-copy: the destination ends with the source's registers, memory and writer
    /// position, and its writer continues the sequence.
    #[test]
    fn qemu_7_2_order_migrates_the_device() {
        let src = rig_v1();
        src.w32(reg::LIVENESS, 0xfeed);
        // Enough device memory for several chunks.
        for p in 0..80u64 {
            src.dev
                .write(BAR2 + p * 4096, &vec![u8::try_from(p + 1).unwrap(); 4096])
                .unwrap();
        }
        start_writer(&src);
        wait_until("writes", || src.r64(reg::WRITER_PAGES) >= 10);
        // VM start: r1 w1; migrate: r1 w3.
        qemu_set(&src, 1, 1);
        qemu_set(&src, 1, 3);
        let mut precopy = Vec::new();
        assert!(drain(&src, &mut precopy) >= 2, "several pre-copy chunks");
        assert_eq!(field(&src, 8), 0);
        assert!(src.r64(reg::WRITER_PAGES) > 0);
        // VM stop: r3 w2; completion: r2 w2, stop-copy data, r2 w0.
        qemu_set(&src, 3, 2);
        let s = src.r64(reg::WRITER_PAGES);
        qemu_set(&src, 2, 2);
        let mut all = precopy;
        assert!(drain(&src, &mut all) >= 2);
        qemu_set(&src, 2, 0);
        let before = src.regs();

        // Destination: r1 w4, per chunk offset / data / data_size, then r4 w1.
        let dst = rig_v1();
        qemu_set(&dst, 1, 4);
        for chunk in all.chunks(usize::try_from(v1::DATA_SIZE).unwrap() - 1000) {
            let off = field(&dst, 16);
            let mut done = 0;
            while done < chunk.len() {
                let at = off + done as u64;
                let n = [8usize, 4, 2, 1]
                    .into_iter()
                    .find(|&n| chunk.len() - done >= n && at % n as u64 == 0)
                    .unwrap();
                assert_eq!(dst.dev.write(V1 + at, &chunk[done..done + n]).unwrap(), n);
                done += n;
            }
            let size = chunk.len() as u64;
            assert_eq!(dst.dev.write(V1 + 24, &size.to_le_bytes()).unwrap(), 8);
        }
        assert!(window_seqs(&dst).iter().all(|&q| q == 0));
        qemu_set(&dst, 4, 1);
        assert_eq!(state(&dst), 1);
        let mut after = dst.regs();
        // The writer runs again on the destination: compare with its page count frozen.
        let (pages_i, ctrl_i) = (10, 13);
        assert_eq!(after[ctrl_i], 1);
        after[pages_i] = before[pages_i];
        assert_eq!(after, before);
        for p in [0u64, 40, 79] {
            assert_eq!(
                dst.bar2(p * 4096, 4096),
                vec![u8::try_from(p + 1).unwrap(); 4096]
            );
        }
        wait_until("destination writes", || dst.r64(reg::WRITER_PAGES) >= s + 5);
        qemu_set(&dst, 1, 0);
        let e = dst.r64(reg::WRITER_PAGES);
        assert_eq!(window_seqs(&dst), expected_pages(SEED, WIN_PAGES, s + 1, e));
    }

    /// `migrate_cancel` in pre-copy writes 3 → 1: the transfer ends, the device runs on
    /// (QEMU 7.2 `vfio_migration_state_notifier`).
    #[test]
    fn cancel_in_pre_copy_returns_to_running() {
        let r = rig_v1();
        qemu_set(&r, 1, 3);
        assert!(field(&r, 8) > 0);
        qemu_set(&r, 3, 1);
        assert_eq!(field(&r, 8), 0);
        assert!(!r.dev.dma().is_paused());
    }
}

mod dma_logging {
    use super::*;

    type C = vfio_device_feature_dma_logging_control;
    type P = vfio_device_feature_dma_logging_report;
    const RANGES: u64 = ARG + 0x1000;
    const BITMAP: u64 = ARG + 0x2000;

    fn start(
        r: &Rig,
        u: &mut UserBuffer,
        page_size: u64,
        ranges: &[(u64, u64)],
    ) -> (Result<i64, i32>, u64) {
        for (i, &(iova, len)) in ranges.iter().enumerate() {
            let at = usize::try_from(RANGES - ARG).unwrap() + 16 * i;
            u.bytes[at..at + 8].copy_from_slice(&iova.to_ne_bytes());
            u.bytes[at + 8..at + 16].copy_from_slice(&len.to_ne_bytes());
        }
        let mut c = [0u8; size_of::<C>()];
        c[offset_of!(C, page_size)..][..8].copy_from_slice(&page_size.to_ne_bytes());
        let n = u32::try_from(ranges.len()).unwrap();
        c[offset_of!(C, num_ranges)..][..4].copy_from_slice(&n.to_ne_bytes());
        c[offset_of!(C, ranges)..][..8].copy_from_slice(&RANGES.to_ne_bytes());
        let (res, out) = r.feature_in(
            u,
            VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
            &c,
        );
        (res, u64::from_ne_bytes(out[0..8].try_into().unwrap()))
    }

    fn report(
        r: &Rig,
        u: &mut UserBuffer,
        iova: u64,
        len: u64,
        page_size: u64,
    ) -> Result<Vec<u64>, i32> {
        let words = usize::try_from((len / page_size).div_ceil(64)).unwrap();
        let b = usize::try_from(BITMAP - ARG).unwrap();
        u.bytes[b..b + 8 * words].fill(0);
        let mut p = [0u8; size_of::<P>()];
        for (f, v) in [
            (offset_of!(P, iova), iova),
            (offset_of!(P, length), len),
            (offset_of!(P, page_size), page_size),
            (offset_of!(P, bitmap), BITMAP),
        ] {
            p[f..f + 8].copy_from_slice(&v.to_ne_bytes());
        }
        r.feature_in(
            u,
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
            &p,
        )
        .0?;
        Ok((0..words)
            .map(|w| u64::from_ne_bytes(u.bytes[b + 8 * w..b + 8 * w + 8].try_into().unwrap()))
            .collect())
    }

    fn bits(words: &[u64]) -> Vec<u64> {
        let mut v = Vec::new();
        for (w, &x) in words.iter().enumerate() {
            for b in 0..64 {
                if x >> b & 1 == 1 {
                    v.push(w as u64 * 64 + b);
                }
            }
        }
        v
    }

    /// START's checks in `vfio_ioctl_device_feature_logging_start`'s order: no ranges EINVAL,
    /// more than LOG_MAX_RANGES E2BIG, unaligned EINVAL, wrapping EOVERFLOW, overlapping
    /// EINVAL; a valid START writes the page size back; a second START is EINVAL.
    #[test]
    fn start_checks_ranges_like_the_kernel() {
        let r = rig();
        let mut u = UserBuffer::new(ARG, 1 << 16);
        assert_eq!(start(&r, &mut u, 4096, &[]).0, Err(libc::EINVAL));
        let many: Vec<(u64, u64)> = (0..257).map(|i| (i * 4096, 4096)).collect();
        assert_eq!(start(&r, &mut u, 4096, &many).0, Err(libc::E2BIG));
        assert_eq!(
            start(&r, &mut u, 4096, &[(0x800, 4096)]).0,
            Err(libc::EINVAL)
        );
        assert_eq!(start(&r, &mut u, 4096, &[(0, 0x1800)]).0, Err(libc::EINVAL));
        assert_eq!(
            start(&r, &mut u, 4096, &[(u64::MAX - 0xfff, 0x2000)]).0,
            Err(libc::EOVERFLOW)
        );
        assert_eq!(
            start(&r, &mut u, 4096, &[(0, 0x4000), (0x3000, 0x1000)]).0,
            Err(libc::EINVAL)
        );
        let (res, ps) = start(&r, &mut u, 4096, &[(0, MAPPED)]);
        assert_eq!((res, ps), (Ok(0), 4096));
        assert_eq!(start(&r, &mut u, 4096, &[(0, MAPPED)]).0, Err(libc::EINVAL));
        let stop = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP;
        assert_eq!(r.feature(stop, &[]).0, Ok(0));
        assert_eq!(r.feature(stop, &[]).0, Ok(0), "STOP when stopped is 0");
        let probe = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET;
        assert_eq!(
            r.feature(probe | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, &[])
                .0,
            Ok(0)
        );
    }

    /// REPORT: page_size below 4 KiB or not a power of two EINVAL, wrapping EOVERFLOW, before
    /// START EINVAL; after START the bitmap holds exactly the pages the device wrote, at
    /// 4 KiB and at 2 MiB report pages, and the next report is empty (read and clear).
    #[test]
    fn report_equals_the_pages_the_device_wrote_in_both_page_sizes() {
        let r = rig();
        let mut u = UserBuffer::new(ARG, 1 << 16);
        assert_eq!(
            report(&r, &mut u, 0, MAPPED, 4096),
            Err(libc::EINVAL),
            "before START"
        );
        let (res, _) = start(&r, &mut u, 4096, &[(0, MAPPED)]);
        res.unwrap();
        assert_eq!(report(&r, &mut u, 0, MAPPED, 2048), Err(libc::EINVAL));
        assert_eq!(report(&r, &mut u, 0, MAPPED, 12288), Err(libc::EINVAL));
        assert_eq!(report(&r, &mut u, u64::MAX, 2, 4096), Err(libc::EOVERFLOW));

        // Device writes: a DMA of 3 pages + 1 byte at 0x5000, and the writer.
        r.dev.write(BAR2, &[9; 0x3001]).unwrap();
        r.w64(reg::DMA_SRC, 0);
        r.w64(reg::DMA_DST, 0x5000);
        r.w64(reg::DMA_COUNT, 0x3001);
        r.w64(reg::DMA_CMD, reg::CMD_START | reg::CMD_TO_RAM);
        assert_eq!(r.r32(reg::STATUS), reg::STATUS_DONE);
        r.w64(reg::WRITER_BASE, 0x40_0000);
        r.w64(reg::WRITER_SIZE, 16 * 4096);
        r.w32(reg::WRITER_RATE, 0);
        r.w64(reg::WRITER_SEED, 3);
        r.w32(reg::WRITER_CTRL, 1);
        wait_until("writer", || r.r64(reg::WRITER_PAGES) >= 40);
        r.w32(reg::WRITER_CTRL, 0);
        let mut written: Vec<u64> = vec![5, 6, 7, 8];
        for p in 0..16u64 {
            if r.guest(0x40_0000 + p * 4096, 8) != [0; 8] {
                written.push(0x400 + p);
            }
        }
        assert_eq!(bits(&report(&r, &mut u, 0, MAPPED, 4096).unwrap()), written);
        assert!(bits(&report(&r, &mut u, 0, MAPPED, 4096).unwrap()).is_empty());

        // 2 MiB report pages: one bit per 2 MiB page touched.
        r.w64(reg::DMA_DST, 0x20_1000);
        r.w64(reg::DMA_COUNT, 16);
        r.w64(reg::DMA_CMD, reg::CMD_START | reg::CMD_TO_RAM);
        r.w64(reg::DMA_DST, 0xa0_0000);
        r.w64(reg::DMA_CMD, reg::CMD_START | reg::CMD_TO_RAM);
        assert_eq!(
            bits(&report(&r, &mut u, 0, MAPPED, 2 << 20).unwrap()),
            vec![1, 5]
        );
        assert!(bits(&report(&r, &mut u, 0, MAPPED, 2 << 20).unwrap()).is_empty());
    }

    /// Writes outside the logged ranges are not reported; a report of a sub-range reports and
    /// clears only that range.
    #[test]
    fn only_logged_ranges_are_reported() {
        let r = rig();
        let mut u = UserBuffer::new(ARG, 1 << 16);
        start(&r, &mut u, 4096, &[(0x10_0000, 0x10_0000)])
            .0
            .unwrap();
        r.dev.write(BAR2, &[1; 16]).unwrap();
        for dst in [0x1000u64, 0x10_2000, 0x18_0000] {
            r.w64(reg::DMA_SRC, 0);
            r.w64(reg::DMA_DST, dst);
            r.w64(reg::DMA_COUNT, 16);
            r.w64(reg::DMA_CMD, reg::CMD_START | reg::CMD_TO_RAM);
        }
        assert_eq!(
            bits(&report(&r, &mut u, 0x10_0000, 0x4_0000, 4096).unwrap()),
            vec![2]
        );
        assert_eq!(
            bits(&report(&r, &mut u, 0, MAPPED, 4096).unwrap()),
            vec![0x180],
            "the sub-range report cleared only its own pages"
        );
    }
}
