//! Device figures of `type1 bench` (issue 12), each beside a baseline measured in the same run:
//!
//! - a BAR0 register read and write through the drop-in (`pread`/`pwrite` of 4 bytes on a
//!   device fd) beside a plain `pread` of 4 bytes from a memfd. Like [`crate::fd_cost`], this
//!   runs the `type1` executable itself as a child (`type1 bench --device-call-cost KIND`):
//!   with `LD_PRELOAD` naming the drop-in it opens the container, group 5 and the test device
//!   the way a VMM does and loops the register accesses; without it, it loops the memfd
//!   `pread`. Three interleaved rounds, ratio median with min–max.
//! - interrupt delivery (device signal → eventfd read) beside a bare eventfd write + read;
//! - a 1 MiB DMA transfer by the test device through an IOMMU domain, in each direction,
//!   beside `memcpy` of the same 1 MiB;
//! - the autonomous writer's page-write rate with no rate limit (one writer thread), per
//!   second of the CPU time it used (one core's worth, whatever else the machine runs; the
//!   wall-clock rate and the share of a core it got are printed beside it), beside the same
//!   page writes stored directly by the CPU.
//!
//! The in-process figures drive `vfio_device` directly: the test device in IOMMU group 5 of a
//! container over this process's memory (`ProcessMemory`), guest RAM a real anonymous mapping
//! MAP_DMA'd at IOVA 0.

use std::ffi::CString;
use std::hint::black_box;
use std::mem::size_of;
#[cfg(feature = "bench-baselines")]
use std::path::Path;
#[cfg(feature = "bench-baselines")]
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use type1::uapi::{self, raw};
#[cfg(feature = "bench-baselines")]
use type1::{Iova, Vaddr};
use vfio_device::testdev::reg;

#[cfg(feature = "bench-baselines")]
use crate::figure::Figure;

#[cfg(feature = "bench-baselines")]
/// Rounds of (drop-in child, memfd child) pairs.
const ROUNDS: usize = 3;
/// Calls between two clock reads in the child.
const CHUNK: u64 = 1000;
#[cfg(feature = "bench-baselines")]
/// The bound on a BAR0 register access through the drop-in, against a memfd `pread`.
const BAR_TARGET: f64 = 2.0;
#[cfg(feature = "bench-baselines")]
/// The bound on a 1 MiB device DMA, as a share of `memcpy` bandwidth.
const DMA_TARGET: f64 = 0.5;
#[cfg(feature = "bench-baselines")]
/// The bound on the autonomous writer, pages per second on one core.
const WRITER_TARGET: f64 = 1e6;

const GROUP: u32 = 5;
const BDF: &str = "0000:00:1f.0";
#[cfg(feature = "bench-baselines")]
const SZ_2M: u64 = 1 << 21;
#[cfg(feature = "bench-baselines")]
const MIB: usize = 1 << 20;
#[cfg(feature = "bench-baselines")]
/// Guest RAM mapped for DMA at IOVA 0 (two 2M blocks).
const GUEST: u64 = 2 * SZ_2M;
#[cfg(feature = "bench-baselines")]
/// Where the byte-level ioctl argument sits in the fake user buffer.
const ARG: u64 = 0x10_0000;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_err(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error())
}

/// Runs `one` in chunks until `budget` has passed; ns per call.
fn time_calls(budget: Duration, mut one: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..CHUNK / 10 {
        one()?;
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget {
        for _ in 0..CHUNK {
            one()?;
        }
        n += CHUNK;
    }
    Ok(t.elapsed().as_nanos() as f64 / n as f64)
}

#[cfg(feature = "bench-baselines")]
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(feature = "bench-baselines")]
fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

// ----- the child: BAR0 through the drop-in, or a memfd without it -----

/// `ioctl(fd, req, arg)` with the kernel's request number.
fn ioctl(fd: i32, req: u64, arg: libc::c_ulong) -> i32 {
    // SAFETY: every caller passes either an integer argument or a pointer to a live,
    // correctly sized UAPI struct (or a NUL-terminated string) for `req`.
    unsafe { libc::ioctl(fd, req as libc::Ioctl, arg) }
}

fn open(path: &str) -> Result<i32> {
    let c = CString::new(path)?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_err(&format!("open {path}")));
    }
    Ok(fd)
}

/// Opens the test device as a VMM does: container, group, SET_CONTAINER, SET_IOMMU(type1v2),
/// GET_DEVICE_FD; returns the device fd and BAR0's region offset.
fn open_device() -> Result<(i32, u64)> {
    let c = open("/dev/vfio/vfio")?;
    let g = open(&format!("/dev/vfio/{GROUP}"))?;
    let cfd: i32 = c;
    if ioctl(g, uapi::VFIO_GROUP_SET_CONTAINER, &cfd as *const i32 as u64) != 0 {
        return Err(os_err("VFIO_GROUP_SET_CONTAINER"));
    }
    if ioctl(c, uapi::VFIO_SET_IOMMU, u64::from(raw::VFIO_TYPE1v2_IOMMU)) != 0 {
        return Err(os_err("VFIO_SET_IOMMU"));
    }
    let name = CString::new(BDF)?;
    let d = ioctl(g, uapi::VFIO_GROUP_GET_DEVICE_FD, name.as_ptr() as u64);
    if d < 0 {
        return Err(os_err("VFIO_GROUP_GET_DEVICE_FD"));
    }
    let mut info = raw::vfio_region_info {
        argsz: u32::try_from(size_of::<raw::vfio_region_info>())?,
        index: raw::VFIO_PCI_BAR0_REGION_INDEX,
        ..Default::default()
    };
    let p = &mut info as *mut raw::vfio_region_info as u64;
    if ioctl(d, vfio_device::ioctl::VFIO_DEVICE_GET_REGION_INFO, p) != 0 {
        return Err(os_err("VFIO_DEVICE_GET_REGION_INFO"));
    }
    ensure!(
        info.size >= 0x100,
        "BAR0 is {} bytes, not the test device's",
        info.size
    );
    Ok((d, info.offset))
}

fn pread4(fd: i32, off: u64) -> Result<u32> {
    let mut b = [0u8; 4];
    let o = i64::try_from(off)?;
    // SAFETY: reads at most 4 bytes into a live 4-byte buffer.
    let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), 4, o) };
    if n != 4 {
        bail!("pread of 4 bytes returned {n} (errno {})", errno());
    }
    Ok(u32::from_le_bytes(b))
}

fn pwrite4(fd: i32, off: u64, v: u32) -> Result<()> {
    let b = v.to_le_bytes();
    let o = i64::try_from(off)?;
    // SAFETY: writes 4 bytes from a live 4-byte buffer.
    let n = unsafe { libc::pwrite(fd, b.as_ptr().cast(), 4, o) };
    if n != 4 {
        bail!("pwrite of 4 bytes returned {n} (errno {})", errno());
    }
    Ok(())
}

/// A call the child loops (`type1 bench --device-call-cost KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceCall {
    /// A BAR0 register read, then a register write, under the drop-in.
    Bar0,
    /// A 4-byte `pread` of a memfd (the baseline).
    Memfd,
}

/// The child: `bar0` (under the drop-in) loops a BAR0 register read, then a register write,
/// and returns ns per call of each; `memfd` loops a 4-byte `pread` of a memfd.
///
/// # Errors
/// A call that does not give the expected result.
pub fn child(kind: DeviceCall, budget: Duration) -> Result<Vec<f64>> {
    match kind {
        DeviceCall::Bar0 => {
            let (d, bar0) =
                open_device().context("opening the test device (is the drop-in preloaded?)")?;
            let ident = pread4(d, bar0 + reg::IDENT)?;
            ensure!(ident == reg::IDENT_VALUE, "BAR0 ident reads {ident:#x}");
            let read = time_calls(budget, || {
                black_box(pread4(d, bar0 + reg::IDENT)?);
                Ok(())
            })?;
            let mut v = 0u32;
            let write = time_calls(budget, || {
                v = v.wrapping_add(1);
                pwrite4(d, bar0 + reg::LIVENESS, v)
            })?;
            ensure!(
                pread4(d, bar0 + reg::LIVENESS)? == !v,
                "the liveness register does not read back the last write"
            );
            Ok(vec![read, write])
        }
        DeviceCall::Memfd => {
            let name = CString::new("type1-bench")?;
            // SAFETY: a NUL-terminated name and flags.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(os_err("memfd_create"));
            }
            let page = [0x5au8; 4096];
            // SAFETY: writes 4096 bytes from a live buffer.
            if unsafe { libc::pwrite(fd, page.as_ptr().cast(), page.len(), 0) } != 4096 {
                return Err(os_err("filling the memfd"));
            }
            let ns = time_calls(budget, || {
                black_box(pread4(fd, 4)?);
                Ok(())
            })?;
            Ok(vec![ns])
        }
    }
}

#[cfg(feature = "bench-baselines")]
/// One child run of this executable: the numbers it printed.
fn run_child(kind: DeviceCall, budget: Duration, preload: Option<&Path>) -> Result<Vec<f64>> {
    let exe = std::env::current_exe().context("locating the type1 executable")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "bench",
        "--device-call-cost",
        &crate::run::value_name(&kind),
        "--budget-ms",
    ])
    .arg(budget.as_millis().to_string());
    match preload {
        Some(lib) => cmd
            .env("LD_PRELOAD", lib)
            .env("TYPE1_GROUPS", format!("{GROUP}:iommu"))
            .env("TYPE1_DEVICES", format!("{BDF}@{GROUP}")),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .map(|w| {
            w.parse()
                .with_context(|| format!("the child printed {text:?}"))
        })
        .collect()
}

#[cfg(feature = "bench-baselines")]
/// BAR0 read and write through the drop-in beside a memfd `pread` (child processes).
///
/// # Errors
/// A child that fails.
pub fn bar_figures(budget: Duration, lib: &Path) -> Result<Vec<Figure>> {
    let child_budget = (budget / 4).max(Duration::from_millis(40));
    let (mut rd, mut wr, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [None, Some(lib)]
        } else {
            [Some(lib), None]
        };
        for preload in order {
            let kind = if preload.is_some() {
                DeviceCall::Bar0
            } else {
                DeviceCall::Memfd
            };
            let v = run_child(kind, child_budget, preload)
                .with_context(|| format!("measuring {kind:?}"))?;
            match (preload, v.as_slice()) {
                (Some(_), &[r, w]) => {
                    rd.push(r);
                    wr.push(w);
                }
                (None, &[b]) => base.push(b),
                _ => bail!("the {kind:?} child printed {v:?}"),
            }
        }
    }
    let mut out = Vec::new();
    for (name, with) in [
        (
            "BAR0 register read (pread 4 B on the device fd), drop-in",
            &rd,
        ),
        (
            "BAR0 register write (pwrite 4 B on the device fd), drop-in",
            &wr,
        ),
    ] {
        let ratios: Vec<f64> = with.iter().zip(&base).map(|(w, b)| w / b).collect();
        let ratio = median(&ratios);
        let (lo, hi) = spread(&ratios);
        let (wlo, whi) = spread(with);
        let (blo, bhi) = spread(&base);
        out.push(Figure {
            name: name.into(),
            value: median(with),
            unit: "ns",
            baseline: Some(("pread 4 B of a memfd, no preload, ns".into(), median(&base))),
            target: Some((
                format!(
                    "<= {BAR_TARGET}x the memfd pread: {ratio:.2}x (min–max {lo:.2}–{hi:.2}; ns {wlo:.0}–{whi:.0} vs {blo:.0}–{bhi:.0})"
                ),
                ratio <= BAR_TARGET,
            )),
        });
    }
    Ok(out)
}

/// In process: interrupts, DMA, the autonomous writer (the suite's, so only with its feature).
#[cfg(feature = "bench-baselines")]
mod in_process {
    use std::mem::offset_of;
    use std::sync::Arc;

    use type1::mm::{LockCapability, MlockPolicy, Mm, ProcessMemory};
    use type1::{Container, ContainerConfig, GroupId, GroupSpec, MapDma, MapFlags, UserBuffer};
    use vfio_device::ioctl::VFIO_DEVICE_SET_IRQS;
    use vfio_device::irq::EventFd;
    use vfio_device::testdev;
    use vfio_device::{Device, Dma, Location, NoGroupFds, RegionIndex};

    use super::*;
    use crate::migrate::guest::Region;

    /// The test device in IOMMU group 5 of a container over this process's memory, with `GUEST`
    /// bytes of a real anonymous mapping MAP_DMA'd at IOVA 0 (2M-aligned: two 2M blocks).
    struct Rig {
        dev: Arc<Device>,
        _container: Arc<Container>,
        region: Region,
        /// The guest RAM's first byte (2M-aligned inside `region`).
        ram: u64,
    }

    impl Rig {
        fn new() -> Result<Rig> {
            let region = Region::new(GUEST + SZ_2M).context("reserving guest memory")?;
            let ram = (region.addr() + SZ_2M - 1) & !(SZ_2M - 1);
            let mm = Arc::new(Mm::new(
                Box::new(ProcessMemory::new(MlockPolicy::CheckOnly)),
                None,
                LockCapability::Unlimited,
            ));
            let c = Arc::new(Container::new(ContainerConfig::default(), mm));
            c.set_group(GroupSpec::iommu(GROUP))?;
            c.set_iommu(type1::Version::V2)?;
            c.map_dma(&MapDma {
                vaddr: Vaddr(ram),
                iova: Iova(0),
                size: GUEST,
                flags: MapFlags::READ | MapFlags::WRITE,
            })?;
            let dma = Dma::attach(&c, GroupId(GROUP))?;
            let dev = testdev::create(Location::new(GROUP, 0, 0, 0x1f), dma)?;
            let rig = Rig {
                dev,
                _container: c,
                region,
                ram,
            };
            // Command register: memory space and bus master on (the driver's first step).
            rig.dev
                .write(RegionIndex::CONFIG.offset() + 4, &6u16.to_le_bytes())?;
            Ok(rig)
        }

        /// The guest RAM as a slice.
        fn guest(&mut self) -> &mut [u8] {
            let off = usize::try_from(self.ram - self.region.addr()).unwrap_or(0);
            let len = usize::try_from(GUEST).unwrap_or(0);
            &mut self.region.as_mut_slice()[off..off + len]
        }

        fn w64(&self, r: u64, v: u64) -> Result<()> {
            let n = self
                .dev
                .write(RegionIndex::BAR0.offset() + r, &v.to_le_bytes())?;
            ensure!(n == 8, "BAR0 write of 8 bytes at {r:#x} took {n}");
            Ok(())
        }

        fn w32(&self, r: u64, v: u32) -> Result<()> {
            let n = self
                .dev
                .write(RegionIndex::BAR0.offset() + r, &v.to_le_bytes())?;
            ensure!(n == 4, "BAR0 write of 4 bytes at {r:#x} took {n}");
            Ok(())
        }

        fn r32(&self, r: u64) -> Result<u32> {
            let mut b = [0u8; 4];
            self.dev.read(RegionIndex::BAR0.offset() + r, &mut b)?;
            Ok(u32::from_le_bytes(b))
        }

        fn r64(&self, r: u64) -> Result<u64> {
            let mut b = [0u8; 8];
            self.dev.read(RegionIndex::BAR0.offset() + r, &mut b)?;
            Ok(u64::from_le_bytes(b))
        }

        /// `VFIO_DEVICE_SET_IRQS` for MSI-X vector 0 as raw bytes: `flags`, and `fd` for
        /// DATA_EVENTFD.
        fn set_irqs_bytes(flags: u32, fd: Option<i32>) -> Result<UserBuffer> {
            let mut u = UserBuffer::new(ARG, 64);
            let data = offset_of!(raw::vfio_irq_set, data);
            let argsz = u32::try_from(data + if fd.is_some() { 4 } else { 0 })?;
            let words = [argsz, flags, raw::VFIO_PCI_MSIX_IRQ_INDEX, 0, 1];
            for (k, w) in words.iter().enumerate() {
                u.bytes[4 * k..4 * k + 4].copy_from_slice(&w.to_ne_bytes());
            }
            if let Some(fd) = fd {
                u.bytes[data..data + 4].copy_from_slice(&fd.to_ne_bytes());
            }
            Ok(u)
        }
    }

    /// Rounds of an interleaved in-process measurement.
    const REPS: usize = 11;

    /// Times each loop of `loops` for its share of `budget`, interleaved over [`REPS`] rounds (so
    /// machine noise hits baseline and figure alike): ns per iteration of each, per round.
    fn interleaved(
        budget: Duration,
        loops: &mut [&mut dyn FnMut() -> Result<()>],
    ) -> Result<Vec<Vec<f64>>> {
        let share = budget / u32::try_from(loops.len() * REPS)?.max(1);
        // Iterations per round: a probe of a tenth of the share.
        let mut iters = Vec::with_capacity(loops.len());
        for f in loops.iter_mut() {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < share / 10 {
                f()?;
                n += 1;
            }
            iters.push((n * 10).max(3));
        }
        let mut out = vec![Vec::with_capacity(REPS); loops.len()];
        for _ in 0..REPS {
            for (k, f) in loops.iter_mut().enumerate() {
                let t = Instant::now();
                for _ in 0..iters[k] {
                    f()?;
                }
                out[k].push(t.elapsed().as_nanos() as f64 / iters[k] as f64);
            }
        }
        Ok(out)
    }

    /// Per-round ratios `a[i] / b[i]`: (median, min, max).
    fn ratios(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
        let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        let (lo, hi) = spread(&r);
        (median(&r), lo, hi)
    }

    fn interrupt_figures(rig: &Rig, budget: Duration) -> Result<Vec<Figure>> {
        let e = EventFd::new()?;
        let trig = raw::VFIO_IRQ_SET_DATA_EVENTFD | raw::VFIO_IRQ_SET_ACTION_TRIGGER;
        let mut u = Rig::set_irqs_bytes(trig, Some(e.as_raw()))?;
        rig.dev
            .ioctl(VFIO_DEVICE_SET_IRQS, ARG, &mut u, &NoGroupFds)
            .context("enabling MSI-X")?;

        let mut bare = || -> Result<()> {
            e.signal();
            ensure!(e.read() == Some(1), "the eventfd did not count one");
            Ok(())
        };
        let irqs = rig.dev.irqs().clone();
        let mut device = || -> Result<()> {
            black_box(irqs.signal(0));
            ensure!(
                e.read() == Some(1),
                "the MSI-X vector did not reach the eventfd"
            );
            Ok(())
        };
        let loop_flags = raw::VFIO_IRQ_SET_DATA_NONE | raw::VFIO_IRQ_SET_ACTION_TRIGGER;
        let mut lu = Rig::set_irqs_bytes(loop_flags, None)?;
        let mut loopback = || -> Result<()> {
            rig.dev
                .ioctl(VFIO_DEVICE_SET_IRQS, ARG, &mut lu, &NoGroupFds)
                .context("loopback trigger")?;
            ensure!(
                e.read() == Some(1),
                "the loopback did not reach the eventfd"
            );
            Ok(())
        };
        let t = interleaved(budget / 2, &mut [&mut bare, &mut device, &mut loopback])?;

        let mut off = Rig::set_irqs_bytes(loop_flags, None)?;
        // count 0 with DATA_NONE|TRIGGER disables the index (vfio_pci_set_msi_trigger).
        off.bytes[16..20].copy_from_slice(&0u32.to_ne_bytes());
        rig.dev
            .ioctl(VFIO_DEVICE_SET_IRQS, ARG, &mut off, &NoGroupFds)
            .context("disabling MSI-X")?;

        let base = median(&t[0]);
        let fig =
            |name: &str, v: &[f64]| {
                let (r, lo, hi) = ratios(v, &t[0]);
                Figure {
            name: name.into(),
            value: median(v),
            unit: "ns",
            baseline: Some((
                format!("bare eventfd write + read, ns; ratio {r:.2}x (min–max {lo:.2}–{hi:.2})"),
                base,
            )),
            target: None,
        }
            };
        Ok(vec![
            fig("MSI-X: device signal -> eventfd read", &t[1]),
            fig(
                "MSI-X: loopback SET_IRQS(NONE|TRIGGER) -> eventfd read",
                &t[2],
            ),
        ])
    }

    fn dma_figures(rig: &mut Rig, budget: Duration) -> Result<Vec<Figure>> {
        let len = MIB as u64;
        for (i, b) in rig.guest().iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap_or(0);
        }
        // memcpy of the same 1 MiB: guest RAM into a buffer the size of the transfer.
        let mut dst = vec![0u8; MIB];
        let src: Vec<u8> = rig.guest()[..MIB].to_vec();
        let mut copy = || -> Result<()> {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
            Ok(())
        };
        let rig_ref = &*rig;
        let transfer = |src: u64, dst: u64, cmd: u64| -> Result<()> {
            rig_ref.w64(reg::DMA_SRC, src)?;
            rig_ref.w64(reg::DMA_DST, dst)?;
            rig_ref.w64(reg::DMA_CMD, cmd | reg::CMD_START)?;
            let s = rig_ref.r32(reg::STATUS)?;
            ensure!(s == reg::STATUS_DONE, "DMA status {s:#x}");
            Ok(())
        };
        rig.w64(reg::DMA_COUNT, len)?;
        // RAM (IOVA 0) -> device memory 0; device memory 0 -> RAM at IOVA 2 MiB (the second
        // block).
        let mut to_dev = || transfer(0, 0, 0);
        let mut to_ram = || transfer(0, SZ_2M, reg::CMD_TO_RAM);
        let t = interleaved(budget / 2, &mut [&mut copy, &mut to_dev, &mut to_ram])?;
        let g = rig.guest();
        let at = usize::try_from(SZ_2M)?;
        ensure!(
            g[at..at + MIB] == g[..MIB],
            "the round trip through the device did not copy the bytes"
        );

        let gbps = |ns: f64| len as f64 / ns;
        let fig = |name: &str, v: &[f64]| {
            // Share of memcpy bandwidth = memcpy time / transfer time, per round.
            let (share, lo, hi) = ratios(&t[0], v);
            Figure {
                name: name.into(),
                value: gbps(median(v)),
                unit: "GB/s",
                baseline: Some(("memcpy of 1 MiB, GB/s".into(), gbps(median(&t[0])))),
                target: Some((
                    format!(
                        ">= 50% of memcpy: {:.0}% (min–max {:.0}–{:.0}%)",
                        100.0 * share,
                        100.0 * lo,
                        100.0 * hi
                    ),
                    share >= DMA_TARGET,
                )),
            }
        };
        Ok(vec![
            fig("DMA 1 MiB RAM -> device, IOMMU domain (2M blocks)", &t[1]),
            fig("DMA 1 MiB device -> RAM, IOMMU domain (2M blocks)", &t[2]),
        ])
    }

    fn writer_figure(rig: &mut Rig, budget: Duration) -> Result<Figure> {
        const PAGE: usize = 4096;
        let npages = GUEST / PAGE as u64;
        // Baseline: the writer's own work per page (a pseudo-random page, zero-filled, a 16-byte
        // header), stored by the CPU straight into the same guest pages, on this one thread.
        let direct_rate = {
            let mut page = vec![0u8; PAGE];
            let mut state = 42u64;
            let mut seq = 0u64;
            let g = rig.guest();
            let span = budget / 4;
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < span {
                for _ in 0..256 {
                    seq += 1;
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let at = usize::try_from((state % npages) * PAGE as u64)?;
                    page.fill(0);
                    page[..8].copy_from_slice(&seq.to_le_bytes());
                    page[8..16].copy_from_slice(&42u64.to_le_bytes());
                    g[at..at + PAGE].copy_from_slice(black_box(&page));
                }
                n += 256;
            }
            n as f64 / t.elapsed().as_secs_f64()
        };

        // The writer, unthrottled (rate 0), over the same window.
        rig.w64(reg::WRITER_BASE, 0)?;
        rig.w64(reg::WRITER_SIZE, GUEST)?;
        rig.w64(reg::WRITER_SEED, 42)?;
        rig.w32(reg::WRITER_RATE, 0)?;
        let before = rig.r64(reg::WRITER_PAGES)?;
        rig.w32(reg::WRITER_CTRL, 1)?;
        std::thread::sleep(Duration::from_millis(20));
        let (p0, t0, c0) = (rig.r64(reg::WRITER_PAGES)?, Instant::now(), cpu_time()?);
        std::thread::sleep(budget / 2);
        let (p1, dt, c1) = (rig.r64(reg::WRITER_PAGES)?, t0.elapsed(), cpu_time()?);
        rig.w32(reg::WRITER_CTRL, 0)?;
        let faults = rig.r64(reg::WRITER_FAULTS)?;
        ensure!(faults == 0, "the writer faulted {faults} times");
        ensure!(
            p1 > p0 && p0 >= before,
            "the writer did not write (pages {before}, {p0}, {p1})"
        );
        let pages = (p1 - p0) as f64;
        let wall = pages / dt.as_secs_f64();
        // "On one core": pages per second of CPU time this process spent meanwhile (user and
        // system), which is the writer thread's: this thread sleeps. On a loaded machine the
        // writer gets only part of a core, and the wall-clock rate shows that share instead.
        let cpu = (c1 - c0).as_secs_f64();
        ensure!(cpu > 0.0, "the writer used no CPU time");
        let rate = pages / cpu;
        Ok(Figure {
        name: "autonomous writer, unthrottled, 4K pages per CPU-second (one thread)".into(),
        value: rate,
        unit: "pages/s",
        baseline: Some((
            "the same page writes stored by the CPU directly, pages/s".into(),
            direct_rate,
        )),
        target: Some((
            format!(
                ">= 10^6 pages/s on one core: {:.2} M/s ({:.0}% of direct stores; wall clock {:.2} M/s at {:.0}% of a core)",
                rate / 1e6,
                100.0 * rate / direct_rate,
                wall / 1e6,
                100.0 * cpu / dt.as_secs_f64()
            ),
            rate >= WRITER_TARGET,
        )),
    })
    }

    /// CPU time (user and system) this process has used.
    fn cpu_time() -> Result<Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec we own.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) } != 0 {
            return Err(os_err("clock_gettime(CLOCK_PROCESS_CPUTIME_ID)"));
        }
        Ok(Duration::new(
            u64::try_from(ts.tv_sec)?,
            u32::try_from(ts.tv_nsec)?,
        ))
    }

    /// The in-process device figures: interrupt delivery, 1 MiB DMA each way, the writer.
    ///
    /// # Errors
    /// A device or container call that fails, or a transfer that does not copy its bytes.
    pub fn figures(budget: Duration) -> Result<Vec<Figure>> {
        let mut rig = Rig::new().context("creating the test device")?;
        let mut out = interrupt_figures(&rig, budget)?;
        out.extend(dma_figures(&mut rig, budget)?);
        out.push(writer_figure(&mut rig, budget)?);
        Ok(out)
    }
}
#[cfg(feature = "bench-baselines")]
pub use in_process::figures;

#[cfg(all(test, feature = "bench-baselines"))]
mod tests {
    use super::*;

    /// The in-process figures verify what they time: MSI-X reaches the eventfd once per
    /// signal (`vfio_msihandler` → `eventfd_signal`, drivers/vfio/pci/vfio_pci_intrs.c,
    /// v6.18), the DMA round trip copies its bytes, the writer writes without faults.
    #[test]
    fn device_figures_check_delivery_copies_and_the_writer() {
        let f = figures(Duration::from_millis(40)).unwrap();
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(f.len(), 5, "{names:?}");
        assert!(f.iter().all(|f| f.value > 0.0 && f.value.is_finite()));
        assert!(f.iter().all(|f| f.baseline.is_some()));
    }
}
