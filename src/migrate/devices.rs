//! The devices that write guest memory while it migrates.
//!
//! - An IOMMU-backed device (a DMA engine) writes through its group's IOMMU domain: IOTLB, page
//!   walk, hardware dirty bits.
//! - An emulated (mdev-style) device pins pages and writes through their physical address, and
//!   writes with `dma_rw`; it unpins when told a mapping goes away.
//! - The same emulated device runs a vIOMMU phase (a guest IOMMU driver unmapping while
//!   migration runs, which UNMAP with GET_DIRTY_BITMAP exists for): it maps 512 guest pages one by
//!   one at a second IOVA window, writes some of them, then unmaps the whole 2M window at once with
//!   GET_DIRTY_BITMAP. The pages that bitmap names are dirty guest pages the migration must copy:
//!   they are handed over through `vIOMMU dirty`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use type1::{
    Access, Container, DeviceId, DmaUnmapHandler, GroupId, Iova, MapDma, MapFlags, Perm, Vaddr,
};

use anyhow::{anyhow, Result};

use super::guest::{splitmix, PAGE};

/// IOVA of the vIOMMU window (2M, 512 4K mappings).
pub const VIOMMU_WINDOW: u64 = 1 << 46;
const VIOMMU_PAGES: u64 = 512;

/// Where device writes land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Pattern {
    /// Uniformly random pages of the hot set.
    Hot,
    /// Uniformly random pages of all of guest memory.
    Uniform,
    /// Sweeps the hot set page after page.
    Sequential,
}

/// What the devices do.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DeviceConfig {
    /// IOMMU-backed device writes per second.
    pub iommu_rate: u64,
    /// Emulated device writes per second (pinned-page writes and dma_rw).
    pub emulated_rate: u64,
    /// Bytes of guest memory the hot set covers (from the start).
    pub hot_set: u64,
    /// Where writes land.
    pub pattern: Pattern,
    /// Run the vIOMMU phase.
    pub viommu: bool,
    /// Seed.
    pub seed: u64,
}

/// Counters of what the devices did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DeviceStats {
    /// IOMMU-backed DMA writes.
    pub iommu_writes: u64,
    /// Writes through pinned pages.
    pub pinned_writes: u64,
    /// dma_rw writes.
    pub rw_writes: u64,
    /// vIOMMU cycles (512 maps, writes, one 2M unmap with bitmap).
    pub viommu_cycles: u64,
}

/// The emulated device's unmap handler: releases its pins in the range.
#[derive(Debug, Default)]
struct Mdev {
    container: Mutex<Option<Weak<Container>>>,
    id: Mutex<Option<DeviceId>>,
    pins: Mutex<BTreeMap<u64, u64>>,
}

impl DmaUnmapHandler for Mdev {
    fn dma_unmap(&self, iova: Iova, length: u64) {
        let iova = iova.raw();
        let Some(c) = self
            .container
            .lock()
            .ok()
            .and_then(|g| g.as_ref().and_then(Weak::upgrade))
        else {
            return;
        };
        let Some(id) = self.id.lock().ok().and_then(|g| *g) else {
            return;
        };
        let Ok(mut pins) = self.pins.lock() else {
            return;
        };
        let inside: Vec<u64> = pins.range(iova..iova + length).map(|(&k, _)| k).collect();
        for k in inside {
            if c.unpin_pages(id, Iova(k), 1).is_ok() {
                pins.remove(&k);
            }
        }
    }
}

/// Running device threads.
#[derive(Debug)]
pub struct Devices {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<DeviceStats>>>,
    /// Guest page numbers the vIOMMU's unmap bitmaps reported dirty.
    pub viommu_dirty: Arc<Mutex<Vec<u64>>>,
    /// Writes so far (all devices), for progress display.
    pub writes: Arc<AtomicU64>,
}

struct Pacer {
    rate: u64,
    start: Instant,
    done: u64,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Pacer {
            rate,
            start: Instant::now(),
            done: 0,
        }
    }

    /// Waits until the next operation is due. `false` if the rate is 0 (device idle).
    fn next(&mut self, stop: &AtomicBool) -> bool {
        if self.rate == 0 {
            std::thread::sleep(Duration::from_millis(5));
            return false;
        }
        loop {
            let due = self.start.elapsed().as_secs_f64() * self.rate as f64;
            if (self.done as f64) < due || stop.load(Ordering::Relaxed) {
                self.done += 1;
                return true;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

fn pick(cfg: &DeviceConfig, guest_pages: u64, n: u64) -> u64 {
    let hot = (cfg.hot_set / PAGE).clamp(1, guest_pages);
    match cfg.pattern {
        Pattern::Hot => splitmix(cfg.seed ^ n) % hot,
        Pattern::Uniform => splitmix(cfg.seed ^ n) % guest_pages,
        Pattern::Sequential => n % hot,
    }
}

/// Payload of write `n`: reproducible, never all zero.
fn payload(seed: u64, n: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = seed ^ n.rotate_left(17) ^ 0xa5a5;
    while v.len() < len {
        x = splitmix(x);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

impl Devices {
    /// Starts the devices on `container`, whose guest memory (`guest_pages` pages at host
    /// address `ram`) is mapped at `iova_base`.
    pub fn start(
        container: &Arc<Container>,
        mm: &Arc<type1::mm::Mm>,
        cfg: DeviceConfig,
        iova_base: u64,
        ram: u64,
        guest_pages: u64,
    ) -> Result<Devices> {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let viommu_dirty = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();

        let engine = container.dma_engine(GroupId(1))?;
        {
            let (stop, writes) = (stop.clone(), writes.clone());
            threads.push(std::thread::spawn(move || -> Result<DeviceStats> {
                let mut stats = DeviceStats::default();
                let mut pacer = Pacer::new(cfg.iommu_rate);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if !pacer.next(&stop) {
                        continue;
                    }
                    let page = pick(&cfg, guest_pages, n);
                    let off = splitmix(n ^ 0x1111) % (PAGE - 256);
                    engine
                        .write(
                            Iova(iova_base + page * PAGE + off),
                            &payload(cfg.seed, n, 256),
                        )
                        .map_err(|e| anyhow!("IOMMU device write failed: {e}"))?;
                    stats.iommu_writes += 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok(stats)
            }));
        }

        let mdev = Arc::new(Mdev::default());
        *mdev.container.lock().map_err(|_| anyhow!("poisoned"))? = Some(Arc::downgrade(container));
        let dev = container.register_device(GroupId(2), Some(mdev.clone()))?;
        *mdev.id.lock().map_err(|_| anyhow!("poisoned"))? = Some(dev);
        {
            let (stop, writes, vdirty) = (stop.clone(), writes.clone(), viommu_dirty.clone());
            let c = container.clone();
            let mm = mm.clone();
            threads.push(std::thread::spawn(move || -> Result<DeviceStats> {
                let mut stats = DeviceStats::default();
                let mut pacer = Pacer::new(cfg.emulated_rate);
                let mut n = 1u64 << 40;
                let mut window: Vec<u64> = Vec::new();
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    if cfg.viommu
                        && (window.len() as u64 == VIOMMU_PAGES || (stopping && !window.is_empty()))
                    {
                        // Domain-selective invalidation: one 2M unmap with a dirty bitmap.
                        let (_, bm) =
                            c.unmap_dma_dirty(Iova(VIOMMU_WINDOW), VIOMMU_PAGES * PAGE, PAGE)?;
                        let mut dirty = vdirty.lock().map_err(|_| anyhow!("poisoned"))?;
                        for (i, &gpage) in window.iter().enumerate() {
                            if type1::dirty::test_bit(&bm, i as u64) {
                                dirty.push(gpage);
                            }
                        }
                        window.clear();
                        stats.viommu_cycles += 1;
                    }
                    if stopping {
                        break;
                    }
                    if !pacer.next(&stop) {
                        continue;
                    }
                    let page = pick(&cfg, guest_pages, n);
                    let data = payload(cfg.seed, n, 128);
                    match n % 3 {
                        0 => {
                            // Pin, write through the physical page, keep up to 16 pins.
                            let iova = iova_base + page * PAGE;
                            let mut pins = mdev.pins.lock().map_err(|_| anyhow!("poisoned"))?;
                            if let std::collections::btree_map::Entry::Vacant(e) = pins.entry(iova)
                            {
                                e.insert(c.pin_pages(dev, Iova(iova), 1, Perm::RW)?[0].raw());
                            }
                            let pa = pins[&iova];
                            mm.space()
                                .write_phys(pa + 512, &data)
                                .map_err(|a| anyhow!("pinned write at {a:#x} failed"))?;
                            stats.pinned_writes += 1;
                            while pins.len() > 16 {
                                let Some((&old, _)) = pins.iter().next() else {
                                    break;
                                };
                                c.unpin_pages(dev, Iova(old), 1)?;
                                pins.remove(&old);
                            }
                        }
                        1 => {
                            let mut buf = data;
                            c.dma_rw(
                                dev,
                                Iova(iova_base + page * PAGE + 1024),
                                &mut buf,
                                Access::Write,
                            )?;
                            stats.rw_writes += 1;
                        }
                        _ if cfg.viommu => {
                            // Map one more guest page into the vIOMMU window and write it half
                            // of the time through that mapping.
                            let slot = window.len() as u64;
                            c.map_dma(&MapDma {
                                vaddr: Vaddr(ram + page * PAGE),
                                iova: Iova(VIOMMU_WINDOW + slot * PAGE),
                                size: PAGE,
                                flags: MapFlags::READ | MapFlags::WRITE,
                            })?;
                            window.push(page);
                            if n % 2 == 0 {
                                let mut buf = data;
                                c.dma_rw(
                                    dev,
                                    Iova(VIOMMU_WINDOW + slot * PAGE + 2048),
                                    &mut buf,
                                    Access::Write,
                                )?;
                                stats.rw_writes += 1;
                            }
                        }
                        _ => {}
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                // Release every pin before the device goes.
                let pins: Vec<u64> = mdev
                    .pins
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .keys()
                    .copied()
                    .collect();
                for iova in pins {
                    c.unpin_pages(dev, Iova(iova), 1)?;
                }
                c.unregister_device(dev)?;
                Ok(stats)
            }));
        }
        Ok(Devices {
            stop,
            threads,
            viommu_dirty,
            writes,
        })
    }

    /// Stops every device and waits for it; returns the summed counters.
    pub fn stop(self) -> Result<DeviceStats> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = DeviceStats::default();
        for t in self.threads {
            let s = t
                .join()
                .map_err(|_| anyhow!("a device thread panicked"))??;
            total.iommu_writes += s.iommu_writes;
            total.pinned_writes += s.pinned_writes;
            total.rw_writes += s.rw_writes;
            total.viommu_cycles += s.viommu_cycles;
        }
        Ok(total)
    }

    /// Takes the guest pages the vIOMMU reported dirty so far.
    pub fn take_viommu_dirty(&self) -> Vec<u64> {
        self.viommu_dirty
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}
