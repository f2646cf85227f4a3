//! Strict and lazy invalidation through a [`Domain`] (spec io-pgtable.md §4.4–§4.7, §6.3.15).

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
    assert_eq!(u.released, vec![7], "strict: memory back at once");
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
        u.released,
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
    assert_eq!(d.unmap(Iova(0), SZ_4K, 9).released, vec![9]);
}

#[test]
fn lazy_table_frees_still_flush_walk_caches_synchronously() {
    // Unmapping 2M over 4K pages frees an L3 table: its walk flush (and the cached leaves under
    // it) must go at once, even in lazy mode (§4.1, §8.8).
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
