//! type1 container benchmarks (issue 3).
//!
//! `cargo bench -p type1` — figures in docs/PERFORMANCE.md. Engine figures use the deterministic
//! fake address space, so no system call is counted; the 1 TiB figures use real process memory.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use type1::mm::{FakeMemory, LockCapability, MlockPolicy, Mm, ProcessMemory};
use type1::{
    Container, ContainerConfig, GroupSpec, Iova, MapDma, MapFlags, UnmapDma, UnmapFlags, Vaddr,
};

const SZ_4K: u64 = 1 << 12;
const SZ_1G: u64 = 1 << 30;
const RAM: u64 = 0x7f00_0000_0000;
const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);

fn container(group: GroupSpec, mm: Arc<Mm>) -> Container {
    let cfg = ContainerConfig {
        dma_entry_limit: 70_000,
        ..ContainerConfig::default()
    };
    let c = Container::new(cfg, mm);
    c.set_group(group).unwrap();
    c.set_iommu(type1::Version::V2).unwrap();
    c
}

fn fake_container(group: GroupSpec) -> Container {
    let mem = FakeMemory::new();
    mem.add_ram(RAM, 1 << 30, 1 << 32);
    container(
        group,
        Arc::new(Mm::new(Box::new(mem), None, LockCapability::Limited)),
    )
}

fn map_unmap_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_unmap_4k");
    for (name, group) in [
        ("no_domain", GroupSpec::emulated(1)),
        ("iommu_domain", GroupSpec::iommu(1)),
    ] {
        for live in [1u64, 1000, 65535] {
            let c = fake_container(group.clone());
            // live - 1 background mappings, scattered over the IOVA space, every other page.
            for i in 1..live {
                c.map_dma(&MapDma {
                    vaddr: Vaddr(RAM + (i % 1024) * SZ_4K),
                    iova: Iova(i * 2 * SZ_4K),
                    size: SZ_4K,
                    flags: RW,
                })
                .unwrap();
            }
            let iova = 2 * SZ_4K * 70_000 + SZ_4K;
            g.bench_function(format!("{name}/{live}_live"), |b| {
                b.iter(|| {
                    c.map_dma(&MapDma {
                        vaddr: Vaddr(RAM),
                        iova: Iova(iova),
                        size: SZ_4K,
                        flags: RW,
                    })
                    .unwrap();
                    black_box(
                        c.unmap_dma(&UnmapDma {
                            iova: Iova(iova),
                            size: SZ_4K,
                            flags: UnmapFlags::empty(),
                            bitmap_pgsize: 0,
                        })
                        .unwrap(),
                    )
                });
            });
        }
    }
    g.finish();
}

/// A 1 TiB `MAP_NORESERVE` region aligned to 1 GiB (never touched).
struct Region {
    base: u64,
    raw: *mut libc::c_void,
    len: usize,
}

impl Region {
    fn new(size: u64) -> Option<Region> {
        let len = usize::try_from(size + SZ_1G).ok()?;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let base = (raw as u64 + SZ_1G - 1) & !(SZ_1G - 1);
        Some(Region { base, raw, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.raw, self.len) };
    }
}

fn one_tib(c: &mut Criterion) {
    let size = 1u64 << 40;
    let Some(region) = Region::new(size) else {
        eprintln!("cannot reserve 1 TiB of address space; skipping");
        return;
    };
    let mm = || {
        Arc::new(Mm::new(
            Box::new(ProcessMemory::new(MlockPolicy::CheckOnly)),
            None,
            LockCapability::Limited,
        ))
    };
    let mut g = c.benchmark_group("one_tib");
    g.sample_size(10);
    let req = MapDma {
        vaddr: Vaddr(region.base),
        iova: Iova(1 << 40),
        size,
        flags: RW,
    };
    let unmap = UnmapDma {
        iova: Iova(1 << 40),
        size,
        flags: UnmapFlags::empty(),
        bitmap_pgsize: 0,
    };
    g.bench_function("map", |b| {
        b.iter_batched(
            || container(GroupSpec::iommu(1), mm()),
            |c| {
                c.map_dma(&req).unwrap();
                c
            },
            BatchSize::PerIteration,
        );
    });
    g.bench_function("unmap", |b| {
        b.iter_batched(
            || {
                let c = container(GroupSpec::iommu(1), mm());
                c.map_dma(&req).unwrap();
                c
            },
            |c| {
                black_box(c.unmap_dma(&unmap).unwrap());
                c
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

#[derive(Debug)]
struct Quiet;
impl type1::DmaUnmapHandler for Quiet {
    fn dma_unmap(&self, _iova: Iova, _length: u64) {}
}

fn pin_unpin(c: &mut Criterion) {
    let cont = fake_container(GroupSpec::emulated(1));
    let dev = cont
        .register_device(type1::GroupId(1), Some(Arc::new(Quiet)))
        .unwrap();
    cont.map_dma(&MapDma {
        vaddr: Vaddr(RAM),
        iova: Iova(0),
        size: 512 * SZ_4K,
        flags: RW,
    })
    .unwrap();
    c.bench_function("pin_unpin_512_pages", |b| {
        b.iter(|| {
            black_box(cont.pin_pages(dev, Iova(0), 512, type1::Perm::RW).unwrap());
            cont.unpin_pages(dev, Iova(0), 512).unwrap();
        });
    });
}

/// GET_BITMAP over one mapping of `size` at 4K pages (emulated group: a real bitmap, no
/// rule-5 shortcut), beside memcpy+memset of the same number of bitmap bytes.
fn get_bitmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_bitmap");
    g.sample_size(10);
    for (name, size) in [("64GiB", 64u64 << 30), ("1TiB", 1u64 << 40)] {
        let cont = fake_container(GroupSpec::emulated(1));
        cont.map_dma(&MapDma {
            vaddr: Vaddr(RAM),
            iova: Iova(0),
            size,
            flags: RW,
        })
        .unwrap();
        cont.dirty_start().unwrap();
        let bytes = usize::try_from(size / SZ_4K / 8).unwrap();
        let mut words = vec![0u64; bytes / 8];
        g.throughput(criterion::Throughput::Bytes(bytes as u64));
        g.bench_function(format!("type1/{name}"), |b| {
            b.iter(|| {
                cont.dirty_bitmap_into(Iova(0), size, SZ_4K, &mut words)
                    .unwrap();
            });
        });
        let src = vec![0x5au8; bytes];
        let mut src2 = src.clone();
        let mut dst = vec![0u8; bytes];
        g.bench_function(format!("memcpy_memset/{name}"), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src2));
                src2.fill(0);
                black_box(&dst);
            });
        });
        drop(src);
    }
    g.finish();
}

/// Precise mode: GET_BITMAP harvesting hardware dirty bits from 4K leaves.
fn precise_harvest(c: &mut Criterion) {
    let mut g = c.benchmark_group("precise_harvest");
    g.sample_size(10);
    for (name, size) in [("64GiB", 64u64 << 30), ("1TiB", 1u64 << 40)] {
        let mem = FakeMemory::new();
        // Chunks of 511 pages never line up with a 2M block: every leaf is a 4K page.
        mem.add_region(type1::mm::FakeRegion {
            vaddr: RAM,
            len: size,
            pa: 1 << 44,
            layout: type1::mm::Layout::Chunked { pages: 511 },
            backing: type1::mm::Backing::Normal,
            writable: type1::mm::Writable::Yes,
        });
        let mm = Arc::new(Mm::new(Box::new(mem), None, LockCapability::Limited));
        let cfg = ContainerConfig {
            dirty_mode: type1::DirtyMode::Precise,
            ..ContainerConfig::default()
        };
        let cont = Container::new(cfg, mm);
        cont.set_group(GroupSpec::iommu(1)).unwrap();
        cont.set_iommu(type1::Version::V2).unwrap();
        let base = 1u64 << 40;
        cont.map_dma(&MapDma {
            vaddr: Vaddr(RAM),
            iova: Iova(base),
            size,
            flags: RW,
        })
        .unwrap();
        cont.dirty_start().unwrap();
        let dma = cont.dma_engine(type1::GroupId(1)).unwrap();
        let bytes = usize::try_from(size / SZ_4K / 8).unwrap();
        let mut words = vec![0u64; bytes / 8];
        g.throughput(criterion::Throughput::Elements(size / SZ_4K));
        g.bench_function(name, |b| {
            b.iter(|| {
                // One written page per GiB, so the harvest finds something to clean.
                let mut at = 0;
                while at < size {
                    dma.write(Iova(base + at), b"x").unwrap();
                    at += SZ_1G;
                }
                cont.dirty_bitmap_into(Iova(base), size, SZ_4K, &mut words)
                    .unwrap();
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = map_unmap_4k, one_tib, pin_unpin, get_bitmap, precise_harvest
}
criterion_main!(benches);
