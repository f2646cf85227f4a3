//! What a VMM does with a container, over this process's real memory: map guest RAM, let an
//! IOMMU-backed device write into it from its own thread while dirty tracking is on, collect the
//! dirty bitmap, and let an emulated device pin pages and give them back when the mapping goes.
//!
//! Run it with `cargo run -p type1 --example vmm`.
//!
//! # The threading contract
//!
//! - Every [`Container`] method may be called from any thread; one lock serialises them (the
//!   kernel's `iommu->lock`), so a MAP and a GET_BITMAP from two threads never interleave.
//! - A [`DmaEngine`] (a device behind an IOMMU domain) never takes the container's lock: it
//!   translates through the domain's IOTLB and page table like hardware, concurrently with
//!   MAP, UNMAP and GET_BITMAP. Once `unmap_dma` returns, none of its writes lands in the
//!   unmapped range, and a write made while tracking is on is in the next bitmap.
//! - [`DmaUnmapHandler::dma_unmap`] (an emulated device told that a mapping is going away) runs
//!   on the thread doing the UNMAP *without* the container's lock, so it can — and must — call
//!   [`Container::unpin_pages`] for what it pinned there. The UNMAP then retries, as
//!   `vfio_dma_do_unmap` (v6.18) does after `vfio_notify_dma_unmap`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{ensure, Context, Result};
use type1::mm::{LockCapability, MlockPolicy, Mm, ProcessMemory};
use type1::{
    Container, ContainerConfig, DeviceId, DirtyMode, DmaEngine, DmaUnmapHandler, GroupSpec, Iova,
    MapDma, MapFlags, Perm, UnmapDma, UnmapFlags, Vaddr, Version,
};

const PAGE: u64 = 4096;
/// Guest RAM of this example: 64 pages at guest-physical (IOVA) 1 MiB.
const IOVA: u64 = 1 << 20;
const PAGES: u64 = 64;

/// An emulated device's pins, released when the container says their mapping goes away.
#[derive(Debug, Default)]
struct Pins {
    container: OnceLock<Arc<Container>>,
    device: OnceLock<DeviceId>,
    pinned: Mutex<Vec<Iova>>,
    told: AtomicBool,
}

impl DmaUnmapHandler for Pins {
    fn dma_unmap(&self, iova: Iova, length: u64) {
        // Runs without the container's lock: calling back into the container is allowed.
        self.told.store(true, Ordering::Relaxed);
        let (Some(c), Some(&dev)) = (self.container.get(), self.device.get()) else {
            return;
        };
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        pinned.retain(|&p| {
            let inside = p >= iova && p.raw() - iova.raw() < length;
            if inside {
                c.unpin_pages(dev, p, 1).expect("a page this device pinned");
            }
            !inside
        });
    }
}

/// Guest RAM: an anonymous private mapping of this process.
struct Ram {
    addr: *mut libc::c_void,
    len: usize,
}

impl Ram {
    fn new(pages: u64) -> Result<Ram> {
        let len = usize::try_from(pages * PAGE)?;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        ensure!(
            addr != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Ok(Ram { addr, len })
    }

    fn vaddr(&self) -> u64 {
        self.addr as u64
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `addr` is our live, readable mapping of `len` bytes. Devices write to it
        // through the container (process_vm_writev) only while `run` waits for them.
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn device_writes(engine: &DmaEngine, pages: &[u64]) -> Result<()> {
    for &p in pages {
        let payload = [0xa5u8; 8];
        engine
            .write(Iova(IOVA + p * PAGE + 16), &payload)
            .with_context(|| format!("DMA write to page {p}"))?;
    }
    Ok(())
}

fn run() -> Result<()> {
    let ram = Ram::new(PAGES)?;
    let mm = Arc::new(Mm::new(
        Box::new(ProcessMemory::new(MlockPolicy::CheckOnly)),
        None,
        LockCapability::Limited,
    ));
    // Precise mode reports exactly the pages devices wrote (the page table's dirty bits); the
    // default, kernel-exact, reports every pinned page of an IOMMU-backed group, as the kernel
    // does without hardware dirty tracking.
    let cfg = ContainerConfig {
        dirty_mode: DirtyMode::Precise,
        ..ContainerConfig::default()
    };
    let c = Arc::new(Container::new(cfg, mm));
    // Group 1 sits behind an IOMMU (its devices DMA through a page table); group 2 is an
    // emulated (mdev-style) group whose device pins pages.
    c.set_group(GroupSpec::iommu(1))?;
    c.set_group(GroupSpec::emulated(2))?;
    c.set_iommu(Version::V2)?;
    c.map_dma(&MapDma {
        vaddr: Vaddr(ram.vaddr()),
        iova: Iova(IOVA),
        size: PAGES * PAGE,
        flags: MapFlags::READ | MapFlags::WRITE,
    })?;

    // An IOMMU-backed device writes from its own thread while tracking is on.
    c.dirty_start()?;
    let engine = c.dma_engine(type1::GroupId(1))?;
    let written = [3u64, 17, 40];
    std::thread::scope(|s| s.spawn(|| device_writes(&engine, &written)).join())
        .map_err(|_| anyhow::anyhow!("the device thread panicked"))??;
    let words = c.dirty_bitmap(Iova(IOVA), PAGES * PAGE, PAGE)?;
    let dirty: Vec<u64> = (0..PAGES)
        .filter(|&p| {
            words
                .get((p / 64) as usize)
                .is_some_and(|w| w >> (p % 64) & 1 == 1)
        })
        .collect();
    ensure!(
        dirty == written,
        "wrote {written:?}, GET_BITMAP reported {dirty:?}"
    );
    for p in written {
        ensure!(
            ram.bytes()[usize::try_from(p * PAGE + 16)?] == 0xa5,
            "page {p} not written"
        );
    }
    println!(
        "device wrote pages {written:?}; GET_BITMAP reported {} dirty pages",
        dirty.len()
    );
    c.dirty_stop()?;

    // An emulated device pins two pages; unmapping asks it to give them back first.
    let pins = Arc::new(Pins::default());
    let dev = c.register_device(type1::GroupId(2), Some(pins.clone()))?;
    let _ = pins.container.set(c.clone());
    let _ = pins.device.set(dev);
    for p in [5u64, 6] {
        let iova = Iova(IOVA + p * PAGE);
        let pa = c.pin_pages(dev, iova, 1, Perm::RW)?;
        pins.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(iova);
        println!("pinned iova {iova} -> {}", pa[0]);
    }
    let unmapped = c.unmap_dma(&UnmapDma {
        iova: Iova(IOVA),
        size: PAGES * PAGE,
        flags: UnmapFlags::empty(),
        bitmap_pgsize: 0,
    })?;
    ensure!(
        pins.told.load(Ordering::Relaxed),
        "the device was not told of the unmap"
    );
    ensure!(unmapped == PAGES * PAGE, "unmapped {unmapped:#x} bytes");
    println!("unmapped {unmapped:#x} bytes; the device unpinned its pages when told");
    c.unregister_device(dev)?;
    c.check_invariants().map_err(anyhow::Error::msg)?;
    Ok(())
}

fn main() -> Result<()> {
    run()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs_over_real_process_memory() {
        super::run().unwrap();
    }
}
