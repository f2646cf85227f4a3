//! `type1 migrate`: a live migration of guest memory with real device DMA, verified byte for
//! byte.
//!
//! Guest RAM (real memory) is mapped for DMA into a type1 container with one IOMMU-backed group
//! and one emulated group. Devices write it while pre-copy runs: START dirty tracking, copy all
//! of RAM, then rounds of GET_BITMAP + copy of the dirty pages (plus the pages the vIOMMU's
//! unmap bitmaps reported) until the dirty set falls below a threshold or the round limit; then
//! the devices stop, a final round copies what is left, STOP. The destination must equal the
//! source byte for byte; any difference is reported with the page and the round it was last
//! copied in.

pub mod devices;
pub mod guest;
pub mod report;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use io_pgtable::{FlushQueueConfig, InvalidationPolicy};
use type1::mm::{LockCapability, MlockPolicy, Mm, ProcessMemory};
use type1::{Container, ContainerConfig, DirtyMode, GroupSpec, MapDma, MapFlags};
use type1::{Iova, Vaddr};

use devices::{DeviceConfig, Devices};
use guest::{Region, PAGE};
use report::{Mismatch, Round, RunReport};

/// Where guest memory sits in the IOVA space (GPA 0 = this IOVA).
pub const IOVA_BASE: u64 = 1 << 40;

/// IOTLB invalidation of the IOMMU domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Invalidation {
    /// Invalidate before every unmap returns.
    Strict,
    /// Defer to a flush queue.
    Lazy,
}

/// Which dirty-reporting modes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Modes {
    /// The kernel's reporting: every IOMMU-mapped page dirty while an IOMMU group never pinned.
    KernelExact,
    /// Hardware dirty bits: only pages devices wrote.
    Precise,
    /// Both, one after the other, for comparison.
    Both,
}

/// A migration's parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrateConfig {
    /// Guest memory in bytes (a multiple of 2 MiB).
    pub guest_size: u64,
    /// Devices.
    pub devices: DeviceConfig,
    /// Invalidation policy.
    pub invalidation: Invalidation,
    /// Most pre-copy rounds after the first full copy.
    pub max_rounds: u32,
    /// Stop pre-copy once a round has at most this many dirty pages.
    pub threshold_pages: u64,
    /// Test-only fault: drop one dirty bit in the final round.
    pub drop_dirty_bit: bool,
}

/// Source and destination memory, allocated once and reused by every run (first-touch page
/// allocation is the most expensive part of a migration on small virtual machines).
#[derive(Debug)]
pub struct Memory {
    src: Region,
    dst: Region,
}

impl Memory {
    /// Maps both sides for a guest of `cfg.guest_size` bytes.
    pub fn new(cfg: &MigrateConfig) -> Result<Memory> {
        if cfg.guest_size == 0 || cfg.guest_size % (2 << 20) != 0 {
            bail!("guest size must be a non-zero multiple of 2 MiB");
        }
        if cfg.guest_size > 1 << 40 {
            bail!("guest size is limited to 1 TiB");
        }
        Ok(Memory {
            src: Region::new(cfg.guest_size).context("guest memory")?,
            dst: Region::new(cfg.guest_size).context("destination memory")?,
        })
    }
}

/// Runs one migration in `mode`, calling `progress` after every round.
pub fn run(
    cfg: &MigrateConfig,
    mode: DirtyMode,
    mem: &mut Memory,
    progress: &mut dyn FnMut(&Round),
) -> Result<RunReport> {
    let t_start = Instant::now();
    let pages = cfg.guest_size / PAGE;
    let Memory { src, dst } = mem;
    guest::fill_pattern(src.as_mut_slice(), cfg.devices.seed);
    dst.as_mut_slice().fill(0);

    let mm = Arc::new(Mm::new(
        Box::new(ProcessMemory::new(MlockPolicy::CheckOnly)),
        None,
        LockCapability::Unlimited,
    ));
    let invalidation = match cfg.invalidation {
        Invalidation::Strict => InvalidationPolicy::Strict,
        Invalidation::Lazy => InvalidationPolicy::Lazy(FlushQueueConfig::default()),
    };
    let ccfg = ContainerConfig {
        invalidation,
        dirty_mode: mode,
        ..ContainerConfig::default()
    };
    let c = Arc::new(Container::new(ccfg, mm.clone()));
    c.set_group(GroupSpec::iommu(1))?;
    c.set_group(GroupSpec::emulated(2))?;
    c.set_iommu(type1::Version::V2)?;
    c.map_dma(&MapDma {
        vaddr: Vaddr(src.addr()),
        iova: Iova(IOVA_BASE),
        size: cfg.guest_size,
        flags: MapFlags::READ | MapFlags::WRITE,
    })
    .context("mapping guest memory for DMA")?;
    c.dirty_start()?;

    let devs = Devices::start(&c, &mm, cfg.devices, IOVA_BASE, src.addr(), pages)?;
    let mut last_copied = vec![0u8; usize::try_from(pages)?];
    let mut rounds = Vec::new();

    // Round 0: everything.
    let t = Instant::now();
    src.copy_ranges_to(dst.as_mut_slice(), &[(0, cfg.guest_size)])?;
    let r0 = Round {
        round: 0,
        reported_pages: pages,
        viommu_pages: 0,
        copied_pages: pages,
        bitmap_read_us: 0,
        copy_us: micros(t),
        device_writes: devs.writes.load(std::sync::atomic::Ordering::Relaxed),
        final_round: false,
    };
    progress(&r0);
    rounds.push(r0);

    let mut round_no = 1u32;
    loop {
        let r = copy_round(
            &c,
            src,
            dst,
            cfg,
            round_no,
            &devs.take_viommu_dirty(),
            &mut last_copied,
            false,
        )?;
        let r = Round {
            device_writes: devs.writes.load(std::sync::atomic::Ordering::Relaxed),
            ..r
        };
        progress(&r);
        let small = r.copied_pages <= cfg.threshold_pages;
        rounds.push(r);
        if small || round_no >= cfg.max_rounds {
            break;
        }
        round_no += 1;
    }

    // Stop the devices; the final round copies what is left.
    let vdirty = devs.viommu_dirty.clone();
    let writes = devs.writes.clone();
    let stats = devs.stop()?;
    let extra = std::mem::take(&mut *vdirty.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    if cfg.drop_dirty_bit {
        stale_page_for_the_fault(&c)?;
    }
    round_no += 1;
    let mut r = copy_round(
        &c,
        src,
        dst,
        cfg,
        round_no,
        &extra,
        &mut last_copied,
        cfg.drop_dirty_bit,
    )?;
    r.final_round = true;
    r.device_writes = writes.load(std::sync::atomic::Ordering::Relaxed);
    progress(&r);
    rounds.push(r);
    c.dirty_stop()?;
    c.unmap_dma(&type1::UnmapDma {
        iova: Iova(0),
        size: 0,
        flags: type1::UnmapFlags::ALL,
        bitmap_pgsize: 0,
    })?;
    c.check_invariants()
        .map_err(|e| anyhow::anyhow!("container invariant broken: {e}"))?;

    // Verify, page by page.
    let t = Instant::now();
    let mut mismatches = Vec::new();
    let (a, b) = (src.as_slice(), dst.as_slice());
    for p in 0..pages {
        let (s, e) = (usize::try_from(p * PAGE)?, usize::try_from((p + 1) * PAGE)?);
        if a[s..e] != b[s..e] {
            mismatches.push(Mismatch {
                page: p,
                gpa: p * PAGE,
                last_copied_round: last_copied[usize::try_from(p)?],
            });
        }
    }
    let verify_us = micros(t);
    Ok(RunReport {
        mode: report::mode_name(mode),
        guest_bytes: cfg.guest_size,
        rounds,
        devices: stats,
        mismatches,
        verify_us,
        total_ms: u64::try_from(t_start.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Test-only fault, part one: after the devices stopped, one more tracked device write (flipping
/// the first 8 bytes of the first mapped page through `dma_rw`), so the final round surely has a
/// dirty page whose copy is stale; `copy_round` then drops a stale page's bit. Without this the
/// fault depended on the devices' timing and could find nothing to drop.
fn stale_page_for_the_fault(c: &Container) -> Result<()> {
    let iova = c
        .mappings()
        .first()
        .map(|m| m.iova)
        .context("no mapping left for the fault")?;
    let dev = c.register_device(type1::GroupId(2), None)?;
    let mut b = [0u8; 8];
    let r = c
        .dma_rw(dev, iova, &mut b, type1::Access::Read)
        .and_then(|()| {
            for x in &mut b {
                *x = !*x;
            }
            c.dma_rw(dev, iova, &mut b, type1::Access::Write)
        });
    c.unregister_device(dev)?;
    r?;
    Ok(())
}

fn micros(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One GET_BITMAP + copy round.
#[allow(clippy::too_many_arguments)]
fn copy_round(
    c: &Container,
    src: &Region,
    dst: &mut Region,
    cfg: &MigrateConfig,
    round: u32,
    viommu_pages: &[u64],
    last_copied: &mut [u8],
    drop_one: bool,
) -> Result<Round> {
    let pages = cfg.guest_size / PAGE;
    let t = Instant::now();
    let bm = c.dirty_bitmap(Iova(IOVA_BASE), cfg.guest_size, PAGE)?;
    let bitmap_read_us = micros(t);
    let mut dirty: BTreeSet<u64> = (0..pages)
        .filter(|&p| type1::dirty::test_bit(&bm, p))
        .collect();
    let reported_pages = dirty.len() as u64;
    let mut viommu_only = 0;
    for &p in viommu_pages {
        if dirty.insert(p) {
            viommu_only += 1;
        }
    }
    if drop_one {
        // Test-only fault: forget the first dirty page whose copy is stale, so verification
        // must fail and name it.
        let stale = dirty.iter().copied().find(|&p| {
            let mut a = vec![0u8; 4096];
            let ok = src.read_at(p * PAGE, &mut a).is_ok();
            let s = usize::try_from(p * PAGE).unwrap_or(usize::MAX);
            ok && dst.as_mut_slice().get(s..s + a.len()) != Some(&a[..])
        });
        if let Some(p) = stale {
            dirty.remove(&p);
        }
    }
    let t = Instant::now();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &p in &dirty {
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 == p * PAGE => last.1 += PAGE,
            _ => ranges.push((p * PAGE, PAGE)),
        }
        if let Some(slot) = last_copied.get_mut(usize::try_from(p)?) {
            *slot = u8::try_from(round).unwrap_or(u8::MAX);
        }
    }
    src.copy_ranges_to(dst.as_mut_slice(), &ranges)?;
    Ok(Round {
        round,
        reported_pages,
        viommu_pages: viommu_only,
        copied_pages: dirty.len() as u64,
        bitmap_read_us,
        copy_us: micros(t),
        device_writes: 0,
        final_round: false,
    })
}
