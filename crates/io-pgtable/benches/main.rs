//! io-pgtable benchmarks (issue 2): ns per operation for the hot paths.
//!
//! `cargo bench -p io-pgtable` — figures and machine in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use io_pgtable::testing::ManualClock;
use io_pgtable::tlb::NoFlush;
use io_pgtable::{
    Access, Config, Domain, DomainConfig, FlushQueueConfig, Format, Gather, InvalidationPolicy,
    IoPageTable, IotlbConfig, Iova, PhysAddr, Prot, TableMemory,
};

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const SZ_1G: u64 = 1 << 30;
const B4K: u64 = SZ_4K | SZ_2M | SZ_1G;
const RW: Prot = Prot::READ.union(Prot::WRITE);

fn cfg() -> Config {
    Config::new(Format::ArmLpaeS1, B4K, 48, 48)
}

fn domain(policy: InvalidationPolicy) -> Domain<()> {
    let c = DomainConfig {
        table: cfg(),
        policy,
        iotlb: IotlbConfig::default(),
    };
    Domain::new(&c, Arc::new(ManualClock::default())).unwrap()
}

fn map_unmap_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_unmap_4k");
    let pt = IoPageTable::new(&cfg(), Arc::new(NoFlush)).unwrap();
    // Tables already present (the kernel anchor's setup).
    pt.map_pages(Iova(0), PhysAddr(0), SZ_4K, 1, RW).unwrap();
    g.bench_function("pgtable", |b| {
        b.iter(|| {
            pt.map_pages(Iova(0x1000), PhysAddr(0x5000), SZ_4K, 1, RW)
                .unwrap();
            let mut gather = Gather::new();
            black_box(pt.unmap_pages(Iova(0x1000), SZ_4K, 1, Some(&mut gather)));
        });
    });
    for (name, policy) in [
        ("domain_strict", InvalidationPolicy::Strict),
        (
            "domain_lazy",
            InvalidationPolicy::Lazy(FlushQueueConfig::default()),
        ),
    ] {
        let d = domain(policy);
        d.map(Iova(0), PhysAddr(0), SZ_4K, RW).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                d.map(Iova(0x1000), PhysAddr(0x5000), SZ_4K, RW).unwrap();
                black_box(d.unmap(Iova(0x1000), SZ_4K, ()));
            });
        });
    }
    g.finish();
}

fn map_1g(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_1g");
    g.sample_size(10);
    g.bench_function("as_1g_block", |b| {
        b.iter_batched(
            || IoPageTable::new(&cfg(), Arc::new(NoFlush)).unwrap(),
            |pt| {
                pt.map(Iova(SZ_1G), PhysAddr(SZ_1G), SZ_1G, RW).unwrap();
                pt
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("as_2m_blocks", |b| {
        b.iter_batched(
            || IoPageTable::new(&cfg(), Arc::new(NoFlush)).unwrap(),
            |pt| {
                pt.map_pages(Iova(SZ_1G), PhysAddr(SZ_1G), SZ_2M, 512, RW)
                    .unwrap();
                pt
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("as_4k_pages", |b| {
        b.iter_batched(
            || IoPageTable::new(&cfg(), Arc::new(NoFlush)).unwrap(),
            |pt| {
                // Misaligned pa forces 4K pages, as the kernel anchor does.
                pt.map(Iova(SZ_1G), PhysAddr(SZ_1G + SZ_4K), SZ_1G, RW)
                    .unwrap();
                pt
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("unmap_4k_pages", |b| {
        b.iter_batched(
            || {
                let pt = IoPageTable::new(&cfg(), Arc::new(NoFlush)).unwrap();
                pt.map(Iova(SZ_1G), PhysAddr(SZ_1G + SZ_4K), SZ_1G, RW)
                    .unwrap();
                pt
            },
            |pt| {
                let mut iova = SZ_1G;
                while iova < 2 * SZ_1G {
                    pt.unmap_pages(Iova(iova), SZ_4K, 512, None);
                    iova += SZ_2M;
                }
                pt
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("split_2m_block", |b| {
        b.iter_batched(
            || {
                let pt = IoPageTable::new(&cfg(), Arc::new(NoFlush)).unwrap();
                pt.map(Iova(0), PhysAddr(0), SZ_2M, RW).unwrap();
                pt
            },
            |pt| {
                black_box(pt.unmap_pages(Iova(0x5000), SZ_4K, 1, None));
                pt
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    let d = domain(InvalidationPolicy::Strict);
    // 1000 scattered 4K mappings.
    for i in 0..1000u64 {
        d.map(Iova(i * 0x13000), PhysAddr(i * SZ_4K), SZ_4K, RW)
            .unwrap();
    }
    let iovas: Vec<u64> = (0..1000u64).map(|i| i * 0x13000 + 0x10).collect();
    let mut k = 0usize;
    g.bench_function("iova_to_phys", |b| {
        b.iter(|| {
            k = (k + 1) % iovas.len();
            black_box(d.table().iova_to_phys(Iova(iovas[k])))
        });
    });
    g.bench_function("translate_hit", |b| {
        for &i in &iovas {
            d.translate(Iova(i), Access::Read).unwrap();
        }
        b.iter(|| {
            k = (k + 1) % iovas.len();
            black_box(d.translate(Iova(iovas[k]), Access::Read).unwrap())
        });
    });
    g.bench_function("translate_miss", |b| {
        b.iter(|| {
            k = (k + 1) % iovas.len();
            d.iotlb().invalidate_range(iovas[k], iovas[k]);
            black_box(d.translate(Iova(iovas[k]), Access::Read).unwrap())
        });
    });
    g.finish();
}

/// The kernel anchor's workload (`ANCHORS.md`): random 4K IOVAs in a 1 GiB window at 64 GiB,
/// phys = IOVA + 1 TiB, tables present, no-op TLB callbacks. `type1 bench` prints the same
/// figures beside the anchor; this group is for profiling (`--profile-time`). Table memory on
/// transparent huge pages, as `type1 bench` sets it for this workload (the kernel's tables are
/// reached through its linear map, mapped with 1G/2M pages).
fn anchor(c: &mut Criterion) {
    const BASE: u64 = 64 << 30;
    const DELTA: u64 = 1 << 40;
    let mut g = c.benchmark_group("anchor");
    let huge = Config {
        table_memory: TableMemory::HugePages,
        ..cfg()
    };
    let pt = IoPageTable::new(&huge, Arc::new(NoFlush)).unwrap();
    for b in 0..SZ_1G / SZ_2M {
        let iova = BASE + b * SZ_2M;
        pt.map_pages(Iova(iova), PhysAddr(iova + DELTA), SZ_4K, 512, RW)
            .unwrap();
        pt.unmap_pages(Iova(iova), SZ_4K, 512, None);
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let iovas: Vec<u64> = (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            BASE + (x % (SZ_1G / SZ_4K)) * SZ_4K
        })
        .collect();
    let mut k = 0usize;
    g.bench_function("map_unmap_4k_random", |b| {
        b.iter(|| {
            k = (k + 1) & 0xffff;
            let i = iovas[k];
            black_box(pt.map_pages(Iova(i), PhysAddr(i + DELTA), SZ_4K, 1, RW)).unwrap();
            let mut gather = Gather::new();
            black_box(pt.unmap_pages(Iova(i), SZ_4K, 1, Some(&mut gather)));
        });
    });
    for b in 0..SZ_1G / SZ_2M {
        let iova = BASE + b * SZ_2M;
        pt.map_pages(Iova(iova), PhysAddr(iova + DELTA), SZ_4K, 512, RW)
            .unwrap();
    }
    g.bench_function("iova_to_phys_random", |b| {
        b.iter(|| {
            k = (k + 1) & 0xffff;
            black_box(pt.iova_to_phys(Iova(iovas[k] + 0x10)))
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = map_unmap_4k, map_1g, lookups, anchor
}
criterion_main!(benches);
