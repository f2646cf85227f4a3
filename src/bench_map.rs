//! The drop-in's MAP_DMA from real process memory at three sizes of address space (issue 15):
//! a 4K `VFIO_IOMMU_MAP_DMA` and its `UNMAP_DMA` through `libtype1_preload.so`, in a process
//! with about 50, 2 000 and 60 000 memory areas (VMAs). A MAP checks the pages against the
//! process's areas (the long-term pin rules); its cost must not grow with their number.
//!
//! Like [`crate::fd_cost`], this runs the `type1` executable as a child under `LD_PRELOAD`
//! (`type1 bench --map-cost VMAS`): it creates the areas (alternating protections over one
//! reservation, so none merge), opens a container and group 7 the way a VMM does, and loops
//! MAP+UNMAP of one 4K page of its heap at one IOVA, timing each call. Three rounds per size,
//! interleaved so machine noise hits every size alike; figures are medians with min–max. The
//! baseline of each size is the 50-area figure of the same run.

use std::ffi::CString;
use std::mem::size_of;
#[cfg(feature = "bench-baselines")]
use std::path::Path;
#[cfg(feature = "bench-baselines")]
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
#[cfg(feature = "bench-baselines")]
use anyhow::{bail, Context};
use type1::uapi::{self, raw};

#[cfg(feature = "bench-baselines")]
use crate::figure::Figure;

#[cfg(feature = "bench-baselines")]
/// Rounds per size.
const ROUNDS: usize = 3;
#[cfg(feature = "bench-baselines")]
/// The bound on one 4K MAP_DMA through the drop-in, at any number of areas.
const TARGET_NS: f64 = 2000.0;
#[cfg(feature = "bench-baselines")]
/// Areas in the process (before the program's own ~30–60).
const SIZES: [u64; 3] = [50, 2_000, 60_000];
const GROUP: u32 = 7;
const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;
const IOVA: u64 = 1 << 30;

fn os_err(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error())
}

fn ioctl(fd: i32, req: u64, arg: u64) -> i32 {
    // SAFETY: every caller passes an integer or a pointer to a live, correctly sized UAPI
    // struct for `req`.
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

/// Makes the process hold about `target` areas: one reservation of `target` pages, every
/// other page made readable (each protection change splits the area). Never unmapped: the
/// child exits.
fn make_areas(target: u64) -> Result<()> {
    let len = usize::try_from(target * PAGE)?;
    // SAFETY: a fresh private reservation; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(os_err("mmap of the area reservation"));
    }
    for i in (0..target).step_by(2) {
        let at = base as u64 + i * PAGE;
        // SAFETY: changes the protection of one page of our own reservation.
        if unsafe { libc::mprotect(at as *mut libc::c_void, PAGE_BYTES, libc::PROT_READ) } != 0 {
            return Err(os_err("mprotect (is vm.max_map_count below 65530?)"));
        }
    }
    Ok(())
}

/// The child: `areas` areas, then MAP+UNMAP of 4K in a loop; prints "map_ns unmap_ns".
///
/// # Errors
/// The container cannot be set up, or a MAP or UNMAP fails.
pub fn child(areas: u64, budget: Duration) -> Result<(f64, f64)> {
    make_areas(areas)?;
    let c = open("/dev/vfio/vfio")?;
    let g = open(&format!("/dev/vfio/{GROUP}"))?;
    if ioctl(g, uapi::VFIO_GROUP_SET_CONTAINER, &raw const c as u64) != 0 {
        return Err(os_err("VFIO_GROUP_SET_CONTAINER"));
    }
    if ioctl(c, uapi::VFIO_SET_IOMMU, u64::from(raw::VFIO_TYPE1v2_IOMMU)) != 0 {
        return Err(os_err("VFIO_SET_IOMMU"));
    }
    let page = vec![0u8; 2 * PAGE_BYTES];
    let vaddr = (page.as_ptr() as u64 + PAGE - 1) & !(PAGE - 1);
    let map = raw::vfio_iommu_type1_dma_map {
        argsz: u32::try_from(size_of::<raw::vfio_iommu_type1_dma_map>())?,
        flags: raw::VFIO_DMA_MAP_FLAG_READ | raw::VFIO_DMA_MAP_FLAG_WRITE,
        vaddr,
        iova: IOVA,
        size: PAGE,
    };
    let mut unmap = raw::vfio_iommu_type1_dma_unmap {
        argsz: u32::try_from(size_of::<raw::vfio_iommu_type1_dma_unmap>())?,
        iova: IOVA,
        size: PAGE,
        ..Default::default()
    };
    let (mut t_map, mut t_unmap, mut n) = (Duration::ZERO, Duration::ZERO, 0u32);
    let start = Instant::now();
    while start.elapsed() < budget || n < 10 {
        let t0 = Instant::now();
        if ioctl(c, uapi::VFIO_IOMMU_MAP_DMA, &raw const map as u64) != 0 {
            return Err(os_err("VFIO_IOMMU_MAP_DMA"));
        }
        let t1 = Instant::now();
        unmap.size = PAGE;
        if ioctl(c, uapi::VFIO_IOMMU_UNMAP_DMA, &raw mut unmap as u64) != 0 || unmap.size != PAGE {
            return Err(os_err("VFIO_IOMMU_UNMAP_DMA"));
        }
        t_map += t1 - t0;
        t_unmap += t1.elapsed();
        n += 1;
    }
    let per = |t: Duration| t.as_nanos() as f64 / f64::from(n);
    Ok((per(t_map), per(t_unmap)))
}

#[cfg(feature = "bench-baselines")]
fn run_child(areas: u64, budget: Duration, lib: &Path) -> Result<(f64, f64)> {
    let exe = std::env::current_exe().context("locating the type1 executable")?;
    let out = Command::new(exe)
        .args(["bench", "--map-cost", &areas.to_string(), "--budget-ms"])
        .arg(budget.as_millis().to_string())
        .env("LD_PRELOAD", lib)
        .env("TYPE1_GROUPS", format!("{GROUP}:iommu"))
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.split_whitespace().map(str::parse::<f64>);
    match (w.next(), w.next()) {
        (Some(Ok(m)), Some(Ok(u))) => Ok((m, u)),
        _ => bail!("the child printed {text:?}"),
    }
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

#[cfg(feature = "bench-baselines")]
/// One figure per size: MAP ns (target ≤ 2 µs) with its UNMAP beside it, and the ratio to the
/// 50-area MAP of the same run.
///
/// # Errors
/// A child that fails.
pub fn figures(budget: Duration, lib: &Path) -> Result<Vec<Figure>> {
    let child_budget = (budget / 3).max(Duration::from_millis(50));
    let mut maps = vec![Vec::new(); SIZES.len()];
    let mut unmaps = vec![Vec::new(); SIZES.len()];
    for round in 0..ROUNDS {
        for k in 0..SIZES.len() {
            // Rotate the order so a drift in machine load favours no size.
            let i = (k + round) % SIZES.len();
            let (m, u) = run_child(SIZES[i], child_budget, lib)
                .with_context(|| format!("MAP_DMA at {} areas", SIZES[i]))?;
            maps[i].push(m);
            unmaps[i].push(u);
        }
    }
    let base = median(&maps[0]);
    let mut out = Vec::new();
    for (i, &areas) in SIZES.iter().enumerate() {
        let m = median(&maps[i]);
        let (lo, hi) = spread(&maps[i]);
        let (ulo, uhi) = spread(&unmaps[i]);
        out.push(Figure {
            name: format!("drop-in 4K MAP_DMA from real memory, {areas} areas"),
            value: m,
            unit: "ns",
            baseline: Some((
                format!(
                    "same MAP at {} areas, ns (this/that {:.2}x; MAP min–max {lo:.0}–{hi:.0}; \
                     UNMAP {:.0}, min–max {ulo:.0}–{uhi:.0})",
                    SIZES[0],
                    m / base,
                    median(&unmaps[i])
                ),
                base,
            )),
            target: Some((format!("<= 2 µs: {m:.0} ns"), m <= TARGET_NS)),
        });
    }
    Ok(out)
}
