//! `type1 bench`: the fixed performance suite, each figure beside a baseline measured in the
//! same process, and the ratio the performance issue targets.
//!
//! Engine figures use the deterministic fake address space (no system calls); the 1 TiB figures
//! use real process memory. Every loop is bounded by a time budget, so the suite takes about a
//! minute on 2 cores.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use io_pgtable::tlb::NoFlush;
use io_pgtable::{
    Access, Config, Domain, DomainConfig, FlushQueueConfig, Format, Gather, InvalidationPolicy,
    IoPageTable, IotlbConfig, Iova, PhysAddr, Prot,
};
use serde::Serialize;
use type1::mm::{
    AddressSpace, FakeMemory, LockCapability, MlockPolicy, Mm, PinAccess, ProcessMemory,
};
use type1::uapi::raw;
use type1::{
    Container, ContainerConfig, GroupId, GroupSpec, MapDma, MapFlags, UnmapDma, UnmapFlags,
};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::iommu::Iotlb;
use vm_memory::GuestAddress;
use vm_memory::Permissions;

use crate::migrate::guest::Region;

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const SZ_1G: u64 = 1 << 30;
const RAM: u64 = 0x7f00_0000_0000;
const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The baseline, if any.
    pub baseline: Option<(String, f64)>,
    /// The target as text, and whether it holds.
    pub target: Option<(String, bool)>,
}

/// Median of `reps` timings of `f`, each running `iters` iterations: ns per iteration.
fn ns_per(iters: u64, reps: usize, mut f: impl FnMut(u64)) -> f64 {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f(iters);
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Iterations that fit in about `budget` for a function of cost ~`probe` per call.
fn iters_for(budget: Duration, mut f: impl FnMut()) -> u64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget / 10 {
        f();
        n += 1;
    }
    (n * 10 / 5).max(10)
}

/// A scattered index into `n` items for iteration `j`.
fn idx(j: u64, n: usize) -> usize {
    usize::try_from(j.wrapping_mul(7) % n as u64).unwrap_or(0)
}

fn heap_bytes() -> u64 {
    crate::alloc_count::live_bytes()
}

fn fake_container(group: GroupSpec, invalidation: InvalidationPolicy) -> Container {
    let mem = FakeMemory::new();
    mem.add_ram(RAM, 1 << 30, 1 << 32);
    let cfg = ContainerConfig {
        dma_entry_limit: 70_000,
        invalidation,
        ..ContainerConfig::default()
    };
    let c = Container::new(
        cfg,
        Arc::new(Mm::new(Box::new(mem), None, LockCapability::Limited)),
    );
    c.set_group(group).expect("group");
    c.set_iommu(raw::VFIO_TYPE1v2_IOMMU.into())
        .expect("set_iommu");
    c
}

fn populate(c: &Container, live: u64) {
    for i in 1..live {
        c.map_dma(&MapDma {
            vaddr: RAM + (i % 1024) * SZ_4K,
            iova: i * 2 * SZ_4K,
            size: SZ_4K,
            flags: RW,
        })
        .expect("background mapping");
    }
}

fn map_unmap_pair(c: &Container, iova: u64) {
    c.map_dma(&MapDma {
        vaddr: RAM,
        iova,
        size: SZ_4K,
        flags: RW,
    })
    .expect("map");
    black_box(
        c.unmap_dma(&UnmapDma {
            iova,
            size: SZ_4K,
            flags: UnmapFlags::empty(),
            bitmap_pgsize: 0,
        })
        .expect("unmap"),
    );
}

fn pgtable_cfg() -> Config {
    Config::new(Format::ArmLpaeS1, SZ_4K | SZ_2M | SZ_1G, 48, 48)
}

/// Runs the suite; `progress` gets each figure as it is measured.
pub fn run(budget: Duration, progress: &mut dyn FnMut(&Figure)) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    let mut push = |f: Figure, out: &mut Vec<Figure>| {
        progress(&f);
        out.push(f);
    };

    // The floor: io-pgtable map+unmap of a 4K page alone (tables present, strict gather).
    let pt = IoPageTable::new(&pgtable_cfg(), Arc::new(NoFlush))?;
    pt.map_pages(Iova(0), PhysAddr(0), SZ_4K, 1, Prot::READ | Prot::WRITE)?;
    let pair = || {
        let _ = pt.map_pages(
            Iova(SZ_4K),
            PhysAddr(SZ_4K),
            SZ_4K,
            1,
            Prot::READ | Prot::WRITE,
        );
        let mut g = Gather::new();
        black_box(pt.unmap_pages(Iova(SZ_4K), SZ_4K, 1, Some(&mut g)));
    };
    let floor_iters = iters_for(budget, pair);
    let floor = ns_per(floor_iters, 5, |n| {
        for _ in 0..n {
            pair();
        }
    });
    push(
        Figure {
            name: "io-pgtable map+unmap 4K (the floor)".into(),
            value: floor,
            unit: "ns",
            baseline: Some(("kernel io-pgtable-arm (ANCHORS.md)".into(), 36.6)),
            target: None,
        },
        &mut out,
    );

    // MAP+UNMAP pairs against live mappings.
    for (mode, group, inv) in [
        (
            "no domain",
            GroupSpec::emulated(1),
            InvalidationPolicy::Strict,
        ),
        (
            "IOMMU domain, strict",
            GroupSpec::iommu(1),
            InvalidationPolicy::Strict,
        ),
        (
            "IOMMU domain, lazy",
            GroupSpec::iommu(1),
            InvalidationPolicy::Lazy(FlushQueueConfig::default()),
        ),
    ] {
        let mut at_one = 0.0;
        for live in [1u64, 1000, 65_535] {
            let c = fake_container(group.clone(), inv);
            populate(&c, live);
            let iova = 2 * SZ_4K * 70_000 + SZ_4K;
            let iters = iters_for(budget, || map_unmap_pair(&c, iova));
            let ns = ns_per(iters, 5, |n| {
                for _ in 0..n {
                    map_unmap_pair(&c, iova);
                }
            });
            let per_s = 1e9 / ns;
            if live == 1 {
                at_one = per_s;
            }
            let (baseline, target) = match (live, mode) {
                (1, "IOMMU domain, strict") => (
                    Some(("io-pgtable map+unmap alone, ns".to_string(), floor)),
                    Some((
                        format!("<= 4x the floor: {:.1}x", ns / floor),
                        ns <= 4.0 * floor,
                    )),
                ),
                (65_535, _) => (
                    Some(("pairs/s at 1 live mapping".to_string(), at_one)),
                    Some((
                        format!(">= 70% of 1 live: {:.0}%", 100.0 * per_s / at_one),
                        per_s >= 0.7 * at_one,
                    )),
                ),
                _ => (None, None),
            };
            push(
                Figure {
                    name: format!("4K MAP+UNMAP pairs/s, {mode}, {live} live"),
                    value: per_s,
                    unit: "pairs/s",
                    baseline,
                    target,
                },
                &mut out,
            );
        }
    }

    // Translate: IOTLB hit and miss over 1000 scattered 4K mappings, beside vm-memory's Iotlb.
    let dcfg = DomainConfig {
        table: pgtable_cfg(),
        policy: InvalidationPolicy::Strict,
        iotlb: IotlbConfig::default(),
    };
    let d: Domain<()> = Domain::new(&dcfg, Arc::new(io_pgtable::tlb::SystemClock::default()))?;
    let mut tlb = Iotlb::new();
    let iovas: Vec<u64> = (0..1000u64).map(|i| i * 0x13000).collect();
    for (i, &iova) in iovas.iter().enumerate() {
        d.map(
            Iova(iova),
            PhysAddr(i as u64 * SZ_4K),
            SZ_4K,
            Prot::READ | Prot::WRITE,
        )?;
        tlb.set_mapping(
            GuestAddress(iova),
            GuestAddress(i as u64 * SZ_4K),
            4096,
            Permissions::ReadWrite,
        )
        .map_err(|e| anyhow::anyhow!("vm-memory: {e:?}"))?;
        d.translate(Iova(iova), Access::Read)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let n = iovas.len();
    let hit = ns_per(2_000_000, 5, |k| {
        for j in 0..k {
            let i = iovas[idx(j, n)] + 0x10;
            black_box(d.translate(Iova(i), Access::Read).ok());
        }
    });
    let vmm = ns_per(500_000, 5, |k| {
        for j in 0..k {
            let i = iovas[idx(j, n)] + 0x10;
            let r = Iotlb::lookup(&tlb, GuestAddress(i), 8, Permissions::Read);
            black_box(r.ok().and_then(|mut it| it.next()));
        }
    });
    push(
        Figure {
            name: "translate, IOTLB hit (1000 mappings)".into(),
            value: hit,
            unit: "ns",
            baseline: Some(("vm-memory Iotlb::lookup, same set, ns".into(), vmm)),
            target: Some((format!(">= 3x faster: {:.1}x", vmm / hit), vmm >= 3.0 * hit)),
        },
        &mut out,
    );
    let miss = ns_per(200_000, 5, |k| {
        for j in 0..k {
            let i = iovas[idx(j, n)];
            d.iotlb().invalidate_range(i, i);
            black_box(d.translate(Iova(i + 0x10), Access::Read).ok());
        }
    });
    push(
        Figure {
            name: "translate, IOTLB miss (walk + fill, incl. an invalidation)".into(),
            value: miss,
            unit: "ns",
            baseline: None,
            target: None,
        },
        &mut out,
    );

    // GET_BITMAP harvest over a 64 GiB mapping at 4K, beside memcpy+memset and AtomicBitmap.
    let size = 64u64 << 30;
    let c = fake_container(GroupSpec::emulated(1), InvalidationPolicy::Strict);
    c.map_dma(&MapDma {
        vaddr: RAM,
        iova: 0,
        size,
        flags: RW,
    })?;
    c.dirty_start()?;
    let bytes = usize::try_from(size / SZ_4K / 8)?;
    let mut user = type1::UserBuffer::new(0x1000, bytes);
    let get = ns_per(20, 5, |k| {
        for _ in 0..k {
            c.dirty_bitmap_into(0, size, SZ_4K, &mut user, 0x1000)
                .expect("GET_BITMAP");
        }
    });
    let src = vec![0x5au8; bytes];
    let mut src2 = src.clone();
    let mut dst = vec![0u8; bytes];
    let copy = ns_per(20, 5, |k| {
        for _ in 0..k {
            dst.copy_from_slice(black_box(&src2));
            src2.fill(0);
            black_box(&dst);
        }
    });
    let ab = AtomicBitmap::new(
        usize::try_from(size)?,
        std::num::NonZeroUsize::new(4096).context("page size")?,
    );
    let abt = ns_per(5, 3, |k| {
        for _ in 0..k {
            ab.set_addr_range(0, 64 << 20);
            black_box(ab.get_and_reset());
        }
    });
    let gbps = |ns: f64| bytes as f64 / ns;
    push(
        Figure {
            name: "GET_BITMAP harvest, 64 GiB at 4K (2 MiB of bitmap)".into(),
            value: gbps(get),
            unit: "GB/s",
            baseline: Some(("memcpy+memset of the same bytes, GB/s".into(), gbps(copy))),
            target: Some((
                format!(">= 50% of memcpy+memset: {:.0}%", 100.0 * copy / get),
                get <= 2.0 * copy,
            )),
        },
        &mut out,
    );
    push(
        Figure {
            name: "vm-memory AtomicBitmap get_and_reset, same size".into(),
            value: gbps(abt),
            unit: "GB/s",
            baseline: None,
            target: None,
        },
        &mut out,
    );
    drop(c);

    // 1 TiB MAP and UNMAP of real, 1G-aligned MAP_NORESERVE memory.
    let tib = 1u64 << 40;
    let region = Region::new(tib + SZ_1G).context("reserving 1 TiB of address space")?;
    let base = (region.addr() + SZ_1G - 1) & !(SZ_1G - 1);
    let mk = || {
        let mm = Arc::new(Mm::new(
            Box::new(ProcessMemory::new(MlockPolicy::CheckOnly)),
            None,
            LockCapability::Unlimited,
        ));
        let c = Container::new(ContainerConfig::default(), mm);
        c.set_group(GroupSpec::iommu(1)).expect("group");
        c.set_iommu(raw::VFIO_TYPE1v2_IOMMU.into())
            .expect("set_iommu");
        c
    };
    let mut map_ns = Vec::new();
    let mut unmap_ns = Vec::new();
    for _ in 0..5 {
        let c = mk();
        let t = Instant::now();
        c.map_dma(&MapDma {
            vaddr: base,
            iova: tib,
            size: tib,
            flags: RW,
        })?;
        map_ns.push(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        c.unmap_dma(&UnmapDma {
            iova: tib,
            size: tib,
            flags: UnmapFlags::empty(),
            bitmap_pgsize: 0,
        })?;
        unmap_ns.push(t.elapsed().as_nanos() as f64);
    }
    map_ns.sort_by(f64::total_cmp);
    unmap_ns.sort_by(f64::total_cmp);
    let tbps = |ns: f64| tib as f64 / ns / 1000.0;
    push(
        Figure {
            name: "MAP 1 TiB (4K|2M|1G, contiguous)".into(),
            value: tbps(map_ns[2]),
            unit: "TB/s",
            baseline: Some(("kernel, large folios (ANCHORS.md), TB/s".into(), 0.6)),
            target: Some((
                format!(">= 6 TB/s: {:.0}x the kernel", tbps(map_ns[2]) / 0.6),
                tbps(map_ns[2]) >= 6.0,
            )),
        },
        &mut out,
    );
    push(
        Figure {
            name: "UNMAP 1 TiB".into(),
            value: unmap_ns[2] / 1000.0,
            unit: "µs",
            baseline: None,
            target: None,
        },
        &mut out,
    );
    drop(region);

    // Memory: per mapping and per externally pinned page (live heap bytes).
    let c = fake_container(GroupSpec::iommu(1), InvalidationPolicy::Strict);
    let r0 = heap_bytes();
    populate(&c, 65_535);
    let per_map = (heap_bytes().saturating_sub(r0)) as f64 / 65_534.0;
    push(
        Figure {
            name: "heap per 4K mapping (IOMMU domain, incl. page tables)".into(),
            value: per_map,
            unit: "bytes",
            baseline: None,
            target: None,
        },
        &mut out,
    );
    drop(c);
    let c = fake_container(GroupSpec::emulated(1), InvalidationPolicy::Strict);
    #[derive(Debug)]
    struct Quiet;
    impl type1::DmaUnmapHandler for Quiet {
        fn dma_unmap(&self, _iova: u64, _length: u64) {}
    }
    let dev = c.register_device(GroupId(1), Some(Arc::new(Quiet)))?;
    let pages = 131_072u64;
    c.map_dma(&MapDma {
        vaddr: RAM,
        iova: 0,
        size: pages * SZ_4K,
        flags: RW,
    })?;
    let r0 = heap_bytes();
    for b in 0..pages / 512 {
        c.pin_pages(dev, b * 512 * SZ_4K, 512, type1::PinProt::ReadWrite)?;
    }
    let all = (heap_bytes().saturating_sub(r0)) as f64 / pages as f64;
    drop(c);
    // The fake address space keeps its own ledger of pins (the stand-in for the kernel's page
    // refcounts, not type1's tracking): measured alone on the same pages, then subtracted.
    let mem = FakeMemory::new();
    mem.add_ram(RAM, 1 << 30, 1 << 32);
    let mut runs = Vec::with_capacity(usize::try_from(pages)?);
    let r1 = heap_bytes();
    for p in 0..pages {
        let run = mem
            .pin_run(RAM + p * SZ_4K, 1, PinAccess::Write)
            .map_err(|a| anyhow::anyhow!("fake pin at {a:#x}"))?;
        runs.push(run);
    }
    let ledger = (heap_bytes().saturating_sub(r1)) as f64 / pages as f64;
    for run in &runs {
        mem.unpin_run(run);
    }
    let per_pin = all - ledger;
    push(
        Figure {
            name: "heap per externally pinned page (type1 tracking)".into(),
            value: per_pin,
            unit: "bytes",
            baseline: Some(("incl. the fake address space's pin ledger".into(), all)),
            target: Some((format!("<= 16 bytes: {per_pin:.1}"), per_pin <= 16.0)),
        },
        &mut out,
    );

    // Calls on fds that are not ours, with and without the drop-in (child processes).
    match crate::run::preload_lib() {
        Ok(lib) => {
            for f in crate::fd_cost::figures(budget, &lib)? {
                push(f, &mut out);
            }
            // Device registers through the drop-in (child processes).
            for f in crate::bench_device::bar_figures(budget, &lib)? {
                push(f, &mut out);
            }
        }
        Err(e) => eprintln!("type1 bench: skipping the drop-in's cost: {e:#}"),
    }

    // The test device in process: interrupt delivery, 1 MiB DMA, the autonomous writer.
    for f in crate::bench_device::figures(budget)? {
        push(f, &mut out);
    }
    Ok(out)
}

/// A figure as one text line.
pub fn line(f: &Figure) -> String {
    let base = f
        .baseline
        .as_ref()
        .map(|(n, v)| format!("  [{n}: {v:.2}]"))
        .unwrap_or_default();
    let target = f
        .target
        .as_ref()
        .map(|(t, ok)| format!("  target {t} {}", if *ok { "MET" } else { "NOT MET" }))
        .unwrap_or_default();
    format!(
        "{:<62} {:>14.2} {:<8}{base}{target}",
        f.name, f.value, f.unit
    )
}
