//! Concurrency stress (issue 6): device threads (IOMMU DMA writes, pins and pinned-page writes,
//! dma_rw) race a mapper (map/unmap) and a dirty reader (GET_BITMAP).
//!
//! - No deadlock: every thread must finish within a timeout.
//! - No lost dirty page: for every page, some GET that *returned* after the page's last store
//!   reported it (a migration copies reported pages after the GET returns, so that copy sees
//!   the store; the final GET runs after the devices stopped). A store is stamped after it
//!   completed, then the page is dirtied again (the IOMMU device re-translates for write,
//!   `dma_rw` writes the same bytes again; a pinned page stays dirty while pinned), so a GET
//!   that reported the store before the stamp cannot make the check fail falsely.
//! - Strict invalidation: a DMA that starts after its range's unmap returned (and before any
//!   remap) faults.

mod common;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::*;
use type1::dirty::test_bit;
use type1::mm::AddressSpace;
use type1::{
    Access, Container, ContainerConfig, DeviceId, DirtyMode, DmaUnmapHandler, GroupId, GroupSpec,
    Iova, Perm, UnmapFlags, Vaddr,
};

const SLOT: u64 = 16 * SZ_4K;
/// Slots 0..STABLE stay mapped; the rest churn.
const STABLE: u64 = 8;
const SLOTS: u64 = 16;
/// Pages in all slots (SLOTS * 16).
const PAGES: usize = 256;

#[derive(Debug, Default)]
struct Mdev {
    c: Mutex<Option<Weak<Container>>>,
    id: Mutex<Option<DeviceId>>,
}

impl DmaUnmapHandler for Mdev {
    fn dma_unmap(&self, iova: Iova, length: u64) {
        let iova = iova.raw();
        let Some(c) = self.c.lock().unwrap().as_ref().and_then(Weak::upgrade) else {
            return;
        };
        let id = self.id.lock().unwrap().unwrap();
        for p in (iova..iova + length).step_by(4096) {
            while c.unpin_pages(id, Iova(p), 1).is_ok() {}
        }
    }
}

struct Shared {
    clock: AtomicU64,
    stop: AtomicBool,
    /// Per page: clock value after its last completed write (0: never).
    written: Vec<AtomicU64>,
    /// Per page: the latest end of a GET that reported it.
    reported: Vec<AtomicU64>,
    /// Per churn slot: even = unmapped and its unmap returned; odd = mapped or in transition.
    gen: Vec<AtomicU64>,
    violations: AtomicU64,
    /// Per page: `tick << 2 | writer` of its last store.
    last_writer: Vec<AtomicU64>,
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, SeqCst) + 1
    }
    /// Records a completed store to `page` by writer `who` (1: IOMMU DMA, 2: through a pin,
    /// 3: `dma_rw`), for the failure message.
    fn wrote(&self, page: u64, who: u64) {
        let t = self.tick();
        self.written[usize::try_from(page).unwrap()].fetch_max(t, SeqCst);
        self.last_writer[usize::try_from(page).unwrap()].fetch_max(t << 2 | who, SeqCst);
    }
}

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn run(mode: DirtyMode, duration: Duration) {
    let cfg = ContainerConfig {
        dirty_mode: mode,
        ..ContainerConfig::default()
    };
    let h = H::with(
        vec![GroupSpec::iommu(1), GroupSpec::emulated(2)],
        V2,
        None,
        cfg,
    );
    let mdev = Arc::new(Mdev::default());
    *mdev.c.lock().unwrap() = Some(Arc::downgrade(&h.c));
    let dev = h.c.register_device(GroupId(2), Some(mdev.clone())).unwrap();
    *mdev.id.lock().unwrap() = Some(dev);
    for s in 0..STABLE {
        h.map(s * SLOT, RAM + s * SLOT, SLOT, RW).unwrap();
    }
    h.c.dirty_start().unwrap();
    let sh = Arc::new(Shared {
        clock: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        written: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
        reported: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
        gen: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        violations: AtomicU64::new(0),
        last_writer: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
    });
    let (done_tx, done_rx) = mpsc::channel::<&'static str>();
    let mut threads = Vec::new();

    // IOMMU-backed device: DMA writes anywhere; stable pages must be reported, churn pages
    // must fault once their unmap returned.
    {
        let (sh, tx) = (sh.clone(), done_tx.clone());
        let eng = h.c.dma_engine(GroupId(1)).unwrap();
        let mem = h.mem.clone();
        threads.push(std::thread::spawn(move || {
            let mut x = 0x1234_5678u64;
            while !sh.stop.load(SeqCst) {
                let page = rng(&mut x) % (SLOTS * 16);
                let slot = page / 16;
                let g1 =
                    (slot >= STABLE).then(|| sh.gen[usize::try_from(slot).unwrap()].load(SeqCst));
                // DmaEngine::write, step by step: translate (marks dirty), store, re-translate.
                let iova = page * SZ_4K + 8;
                let ok = match eng.translate(Iova(iova), io_pgtable::Access::Write) {
                    Ok(pa) => {
                        mem.write_phys(pa.raw(), b"dma").unwrap();
                        sh.wrote(page, 1);
                        eng.translate(Iova(iova), io_pgtable::Access::Write).is_ok()
                    }
                    Err(_) => false,
                };
                if let Some(g1) = g1 {
                    let g2 = sh.gen[usize::try_from(slot).unwrap()].load(SeqCst);
                    if ok && g1 % 2 == 0 && g1 == g2 {
                        sh.violations.fetch_add(1, SeqCst);
                    }
                }
            }
            tx.send("iommu device").unwrap();
        }));
    }
    // Emulated device: pin, write through the pinned page, unpin; dma_rw writes.
    {
        let (sh, tx, c, mem) = (sh.clone(), done_tx.clone(), h.c.clone(), h.mem.clone());
        threads.push(std::thread::spawn(move || {
            let mut x = 0x9abc_def0u64;
            while !sh.stop.load(SeqCst) {
                let page = rng(&mut x) % (SLOTS * 16);
                if rng(&mut x) % 2 == 0 {
                    if let Ok(pa) = c.pin_pages(dev, Iova(page * SZ_4K), 1, Perm::RW) {
                        mem.write_phys(pa[0].raw() + 16, b"pin").unwrap();
                        sh.wrote(page, 2);
                        let _ = c.unpin_pages(dev, Iova(page * SZ_4K), 1);
                    }
                } else if c
                    .dma_rw(dev, Iova(page * SZ_4K + 32), &mut [7u8; 40], Access::Write)
                    .is_ok()
                {
                    sh.wrote(page, 3);
                    // The stamp is taken after the call returned, so a GET may have reported
                    // (and cleared) this store between the copy and the stamp. Write the same
                    // bytes again, as the IOMMU device re-translates: the page is dirty again
                    // after the stamp, and some later GET must report it.
                    let _ = c.dma_rw(dev, Iova(page * SZ_4K + 32), &mut [7u8; 40], Access::Write);
                }
            }
            tx.send("emulated device").unwrap();
        }));
    }
    // Mapper: churn slots map and unmap (EBUSY from a device that keeps pinning is fine).
    {
        let (sh, tx, c) = (sh.clone(), done_tx.clone(), h.c.clone());
        threads.push(std::thread::spawn(move || {
            let mut x = 0x0f0f_0f0fu64;
            while !sh.stop.load(SeqCst) {
                let slot = STABLE + rng(&mut x) % (SLOTS - STABLE);
                let g = &sh.gen[usize::try_from(slot).unwrap()];
                if g.load(SeqCst) % 2 == 0 {
                    g.fetch_add(1, SeqCst);
                    if c.map_dma(&type1::MapDma {
                        vaddr: Vaddr(RAM + slot * SLOT),
                        iova: Iova(slot * SLOT),
                        size: SLOT,
                        flags: RW,
                    })
                    .is_err()
                    {
                        g.fetch_add(1, SeqCst);
                    }
                } else {
                    let r = c.unmap_dma(&type1::UnmapDma {
                        iova: Iova(slot * SLOT),
                        size: SLOT,
                        flags: UnmapFlags::empty(),
                        bitmap_pgsize: 0,
                    });
                    if r == Ok(SLOT) {
                        // Written pages of the slot are gone with it: nothing more to report.
                        for p in slot * 16..(slot + 1) * 16 {
                            sh.written[usize::try_from(p).unwrap()].store(0, SeqCst);
                        }
                        g.fetch_add(1, SeqCst);
                    }
                }
            }
            tx.send("mapper").unwrap();
        }));
    }
    // Dirty reader over the stable slots.
    let read = |sh: &Shared, c: &Container| {
        let bm = c.dirty_bitmap(Iova(0), STABLE * SLOT, SZ_4K).unwrap();
        let end = sh.tick();
        for p in 0..STABLE * 16 {
            if test_bit(&bm, p) {
                sh.reported[usize::try_from(p).unwrap()].fetch_max(end, SeqCst);
            }
        }
    };
    let t0 = Instant::now();
    let mut reads = 0;
    // At least 20 GETs however loaded the machine is (bounded: 30 s), so the race is exercised.
    while t0.elapsed() < duration || (reads < 20 && t0.elapsed() < Duration::from_secs(30)) {
        read(&sh, &h.c);
        reads += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    sh.stop.store(true, SeqCst);
    for _ in 0..threads.len() {
        let who = done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a thread deadlocked");
        let _ = who;
    }
    for t in threads {
        t.join().unwrap();
    }
    read(&sh, &h.c);
    let mut lost = Vec::new();
    for p in 0..usize::try_from(STABLE * 16).unwrap() {
        let w = sh.written[p].load(SeqCst);
        if w != 0 && sh.reported[p].load(SeqCst) < w {
            let lw = sh.last_writer[p].load(SeqCst);
            lost.push((p, w, sh.reported[p].load(SeqCst), lw & 3));
        }
    }
    assert!(
        lost.is_empty(),
        "{mode:?}: pages stored to but never reported by a GET that returned later \\
         (page, store tick, last report tick, writer 1 IOMMU/2 pin/3 dma_rw): {lost:?}"
    );
    assert_eq!(
        sh.violations.load(SeqCst),
        0,
        "DMA reached memory after its unmap returned"
    );
    assert!(
        reads >= 20,
        "the dirty reader starved: {reads} GETs in 30 s"
    );
    h.check();
}

#[test]
fn concurrent_devices_mapper_and_reader_precise() {
    run(DirtyMode::Precise, Duration::from_millis(1500));
}

#[test]
fn concurrent_devices_mapper_and_reader_kernel_exact() {
    run(DirtyMode::KernelExact, Duration::from_millis(1500));
}
