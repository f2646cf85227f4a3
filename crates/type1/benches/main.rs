//! type1 container benchmarks (issue 3).
//!
//! `cargo bench -p type1` — figures in docs/PERFORMANCE.md. Engine figures use the deterministic
//! fake address space, so no system call is counted; the 1 TiB figures use real process memory.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use type1::mm::{FakeMemory, LockCapability, MlockPolicy, Mm, ProcessMemory};
use type1::uapi::raw;
use type1::{Container, ContainerConfig, GroupSpec, MapDma, MapFlags, UnmapDma, UnmapFlags};

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
    c.set_iommu(raw::VFIO_TYPE1v2_IOMMU.into()).unwrap();
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
                    vaddr: RAM + (i % 1024) * SZ_4K,
                    iova: i * 2 * SZ_4K,
                    size: SZ_4K,
                    flags: RW,
                })
                .unwrap();
            }
            let iova = 2 * SZ_4K * 70_000 + SZ_4K;
            g.bench_function(format!("{name}/{live}_live"), |b| {
                b.iter(|| {
                    c.map_dma(&MapDma {
                        vaddr: RAM,
                        iova,
                        size: SZ_4K,
                        flags: RW,
                    })
                    .unwrap();
                    black_box(
                        c.unmap_dma(&UnmapDma {
                            iova,
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
        vaddr: region.base,
        iova: 1 << 40,
        size,
        flags: RW,
    };
    let unmap = UnmapDma {
        iova: 1 << 40,
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = map_unmap_4k, one_tib
}
criterion_main!(benches);
