//! Strict and lazy invalidation through a [`Domain`]: strict as `iommu_unmap`, lazy as the flush
//! queue of `drivers/iommu/dma-iommu.c` (`queue_iova`, `fq_ring_free_locked`,
//! `fq_flush_timeout`), v6.18.

use std::sync::Arc;
use std::time::Duration;

use io_pgtable::testing::ManualClock;
use io_pgtable::{
    Access, Config, Domain, DomainConfig, Fault, FlushQueueConfig, Format, InvalidationPolicy,
    IotlbConfig, Iova, PhysAddr, Prot,
};

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const B4K: u64 = SZ_4K | SZ_2M | (1 << 30);

fn domain(policy: InvalidationPolicy) -> (Domain<u64>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let cfg = DomainConfig {
        table: Config::new(Format::ArmLpaeS1, B4K, 48, 48),
        policy,
        iotlb: IotlbConfig::default(),
    };
    (Domain::new(&cfg, clock.clone()).unwrap(), clock)
}

fn lazy(size: usize, ms: u64) -> InvalidationPolicy {
    InvalidationPolicy::Lazy(FlushQueueConfig {
        size,
        timeout: Duration::from_millis(ms),
    })
}

const RW: Prot = Prot::READ.union(Prot::WRITE);

#[test]
fn strict_translate_faults_as_soon_as_unmap_returns() {
    let (d, _) = domain(InvalidationPolicy::Strict);
    d.map(Iova(0x10000), PhysAddr(0x50000), SZ_4K, RW).unwrap();
    // Warm the IOTLB.
    assert_eq!(
        d.translate(Iova(0x10010), Access::Read).unwrap().pa,
        PhysAddr(0x50010)
    );
    assert_eq!(
        d.translate(Iova(0x10010), Access::Read).unwrap().pa,
        PhysAddr(0x50010)
    );
    let u = d.unmap(Iova(0x10000), SZ_4K, 7);
    assert_eq!(u.bytes, SZ_4K);
    assert_eq!(u.released.to_vec(), vec![7], "strict: memory back at once");
    assert_eq!(
        d.translate(Iova(0x10010), Access::Read),
        Err(Fault::NotMapped {
            iova: Iova(0x10010)
        })
    );
}

#[test]
fn strict_split_drops_the_cached_block() {
    let (d, _) = domain(InvalidationPolicy::Strict);
    d.map(Iova(0), PhysAddr(SZ_2M), SZ_2M, RW).unwrap();
    assert_eq!(
        d.translate(Iova(0x5000), Access::Write).unwrap().len,
        SZ_2M - 0x5000
    );
    d.unmap(Iova(0x5000), SZ_4K, 0);
    assert!(matches!(
        d.translate(Iova(0x5000), Access::Read),
        Err(Fault::NotMapped { .. })
    ));
    assert_eq!(
        d.translate(Iova(0x6000), Access::Read).unwrap().pa,
        PhysAddr(SZ_2M + 0x6000)
    );
}

#[test]
fn lazy_stale_translation_until_the_covering_flush_and_never_after() {
    let (d, clock) = domain(lazy(256, 10));
    d.map(Iova(0x10000), PhysAddr(0x50000), SZ_4K, RW).unwrap();
    d.translate(Iova(0x10000), Access::Write).unwrap();
    let u = d.unmap(Iova(0x10000), SZ_4K, 1);
    assert!(
        u.released.is_empty(),
        "lazy: memory not back before its flush"
    );
    // The cached translation may still be used: this is the documented exposure window.
    assert_eq!(
        d.translate(Iova(0x10000), Access::Write).unwrap().pa,
        PhysAddr(0x50000)
    );
    assert_eq!(d.pending_invalidations(), vec![(Iova(0x10000), SZ_4K)]);
    clock.advance(Duration::from_millis(9));
    assert!(d.poll().is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(d.poll(), vec![1], "timer flush releases the memory");
    assert!(
        matches!(
            d.translate(Iova(0x10000), Access::Read),
            Err(Fault::NotMapped { .. })
        ),
        "never after the flush"
    );
}

#[test]
fn lazy_uncached_translations_fault_at_once() {
    // PTEs are cleared at unmap time; only what the IOTLB holds survives.
    let (d, _) = domain(lazy(256, 10));
    d.map(Iova(0x10000), PhysAddr(0x50000), 2 * SZ_4K, RW)
        .unwrap();
    d.translate(Iova(0x10000), Access::Read).unwrap();
    d.unmap(Iova(0x10000), 2 * SZ_4K, 1);
    assert!(matches!(
        d.translate(Iova(0x11000), Access::Read),
        Err(Fault::NotMapped { .. })
    ));
}

#[test]
fn lazy_exposure_is_bounded_by_queue_size() {
    let (d, _) = domain(lazy(8, 10_000));
    for i in 0..7u64 {
        d.map(Iova(i * SZ_4K), PhysAddr(i * SZ_4K), SZ_4K, RW)
            .unwrap();
        d.translate(Iova(i * SZ_4K), Access::Read).unwrap();
        assert!(d.unmap(Iova(i * SZ_4K), SZ_4K, i).released.is_empty());
    }
    assert_eq!(d.pending_invalidations().len(), 7, "capacity is size - 1");
    d.map(Iova(7 * SZ_4K), PhysAddr(0), SZ_4K, RW).unwrap();
    let u = d.unmap(Iova(7 * SZ_4K), SZ_4K, 7);
    assert_eq!(
        u.released.to_vec(),
        (0..7).collect::<Vec<_>>(),
        "full ring forced a flush"
    );
    for i in 0..7u64 {
        assert!(matches!(
            d.translate(Iova(i * SZ_4K), Access::Read),
            Err(Fault::NotMapped { .. })
        ));
    }
    assert_eq!(d.flush(), vec![7]);
}

#[test]
fn lazy_unmap_of_nothing_releases_at_once() {
    let (d, _) = domain(lazy(256, 10));
    assert_eq!(d.unmap(Iova(0), SZ_4K, 9).released.to_vec(), vec![9]);
}

#[test]
fn lazy_table_frees_still_flush_walk_caches_synchronously() {
    // Unmapping 2M over 4K pages frees an L3 table: its walk flush (and the cached leaves under
    // it) must go at once, even in lazy mode, as `__arm_lpae_unmap` flushes the walk before
    // freeing a table.
    let (d, _) = domain(lazy(256, 10));
    d.map(Iova(0), PhysAddr(0), 4 * SZ_4K, RW).unwrap();
    d.translate(Iova(0x1000), Access::Read).unwrap();
    let tables = d.table().live_tables();
    d.unmap(Iova(0), SZ_2M, 0);
    assert_eq!(d.table().live_tables(), tables - 1);
    assert!(matches!(
        d.translate(Iova(0x1000), Access::Read),
        Err(Fault::NotMapped { .. })
    ));
}

#[test]
fn iotlb_counts_misses_and_hits_do_not_walk() {
    let (d, _) = domain(InvalidationPolicy::Strict);
    d.map(Iova(0), PhysAddr(0), SZ_2M, RW).unwrap();
    for i in 0..100 {
        d.translate(Iova(i * 64), Access::Read).unwrap();
    }
    assert_eq!(d.iotlb().stats().misses, 1);
}

#[test]
fn permission_faults() {
    let (d, _) = domain(InvalidationPolicy::Strict);
    d.map(Iova(0), PhysAddr(0), SZ_4K, Prot::READ).unwrap();
    assert_eq!(
        d.translate(Iova(0), Access::Write),
        Err(Fault::Permission {
            iova: Iova(0),
            access: Access::Write
        })
    );
    d.translate(Iova(0), Access::Read).unwrap();
    assert!(
        matches!(
            d.translate(Iova(0), Access::Write),
            Err(Fault::Permission { .. })
        ),
        "cached entry keeps the permission"
    );
    // Stage 2 can express write-only.
    let clock = Arc::new(ManualClock::default());
    let s2: Domain = Domain::new(
        &DomainConfig {
            table: Config::new(Format::ArmLpaeS2, B4K, 48, 48),
            policy: InvalidationPolicy::Strict,
            iotlb: IotlbConfig::default(),
        },
        clock,
    )
    .unwrap();
    s2.map(Iova(0), PhysAddr(0), SZ_4K, Prot::WRITE).unwrap();
    s2.translate(Iova(0), Access::Write).unwrap();
    assert!(matches!(
        s2.translate(Iova(0), Access::Read),
        Err(Fault::Permission { .. })
    ));
}

/// Flush ops that keep the provided `tlb_add_page` and say so, logging the syncs it causes.
#[derive(Debug, Default)]
struct InlineSyncs(std::sync::Mutex<Vec<(u64, u64, u64)>>);

impl io_pgtable::FlushOps for InlineSyncs {
    fn add_page_is_gather(&self) -> bool {
        true
    }
    fn tlb_flush_all(&self) {}
    fn tlb_flush_walk(&self, _iova: Iova, _size: u64, _granule: u64) {}
    fn iotlb_sync(&self, g: &io_pgtable::Gather) {
        if !g.is_empty() {
            self.0.lock().unwrap().push((g.start, g.end, g.pgsize));
        }
    }
}

/// A run of cleared leaves gathered inline (no call per leaf) syncs and gathers exactly as one
/// `tlb_add_page` per leaf does (`__arm_lpae_unmap` calls `io_pgtable_tlb_add_page` per leaf,
/// v6.18): same syncs in the same order, same final gather.
#[test]
fn an_inline_gather_equals_one_add_page_per_leaf() {
    use io_pgtable::testing::{RecordingFlushOps, TlbEvent};
    use io_pgtable::{Gather, IoPageTable};
    let cfg = Config::new(Format::ArmLpaeS1, B4K, 48, 48);
    let per_leaf = Arc::new(RecordingFlushOps::default());
    let inline = Arc::new(InlineSyncs::default());
    let a = IoPageTable::new(&cfg, per_leaf.clone()).unwrap();
    let b = IoPageTable::new(&cfg, inline.clone()).unwrap();
    // Contiguous, then adjacent, then disjoint runs, then another page size, then a split.
    let unmaps = [
        (0x40_0000u64, SZ_4K, 3u64),
        (0x40_3000, SZ_4K, 509),
        (0x80_0000, SZ_4K, 2),
        (0x100_0000, SZ_2M, 2),
        (0x200_1000, SZ_4K, 4),
    ];
    for pt in [&a, &b] {
        pt.map(Iova(0x40_0000), PhysAddr(0x1000), SZ_2M, RW)
            .unwrap();
        pt.map(Iova(0x80_0000), PhysAddr(0x1000), 2 * SZ_4K, RW)
            .unwrap();
        pt.map(Iova(0x100_0000), PhysAddr(0x100_0000), 2 * SZ_2M, RW)
            .unwrap();
        pt.map(Iova(0x200_0000), PhysAddr(0x200_0000), SZ_2M, RW)
            .unwrap();
    }
    per_leaf.take();
    let (mut ga, mut gb) = (Gather::new(), Gather::new());
    for &(iova, size, n) in &unmaps {
        let ra = a.unmap_pages(Iova(iova), size, n, Some(&mut ga));
        let rb = b.unmap_pages(Iova(iova), size, n, Some(&mut gb));
        assert_eq!(ra, n * size);
        assert_eq!(ra, rb);
    }
    assert_eq!(ga, gb, "same final gather");
    let syncs: Vec<(u64, u64, u64)> = per_leaf
        .take()
        .into_iter()
        .filter_map(|e| match e {
            TlbEvent::Sync { start, end, pgsize } => Some((start, end, pgsize)),
            _ => None,
        })
        .collect();
    assert_eq!(syncs.len(), 3, "disjoint run, other size, disjoint split");
    assert_eq!(*inline.0.lock().unwrap(), syncs);
}
