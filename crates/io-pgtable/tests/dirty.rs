//! Hardware dirty tracking: `arm_lpae_read_and_clear_dirty` (`drivers/iommu/io-pgtable-arm.c`,
//! v6.18) and our differences from it (docs/SEMANTICS.md, "The page table").

use std::collections::BTreeSet;
use std::sync::Arc;

use io_pgtable::testing::ManualClock;
use io_pgtable::tlb::NoFlush;
use io_pgtable::{
    pte, Access, Config, DirtyFlags, Domain, DomainConfig, Error, Format, Gather,
    InvalidationPolicy, IoPageTable, IotlbConfig, Iova, PhysAddr, Prot, Quirks,
};
use proptest::prelude::*;

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const B4K: u64 = SZ_4K | SZ_2M | (1 << 30);
const RW: Prot = Prot::READ.union(Prot::WRITE);

fn hd_table() -> IoPageTable {
    let cfg = Config::new(Format::ArmLpaeS1, B4K, 48, 48).with_quirks(Quirks::ARM_HD);
    IoPageTable::new(&cfg, Arc::new(NoFlush)).unwrap()
}

fn hd_domain() -> Domain {
    let cfg = DomainConfig {
        table: Config::new(Format::ArmLpaeS1, B4K, 48, 48).with_quirks(Quirks::ARM_HD),
        policy: InvalidationPolicy::Strict,
        iotlb: IotlbConfig::default(),
    };
    Domain::new(&cfg, Arc::new(ManualClock::default())).unwrap()
}

fn harvest(
    pt: &IoPageTable,
    iova: u64,
    size: u64,
    flags: DirtyFlags,
) -> Result<Vec<(u64, u64)>, Error> {
    let mut out = Vec::new();
    let mut g = Gather::new();
    pt.read_and_clear_dirty(Iova(iova), size, flags, &mut g, &mut |i, l| {
        out.push((i.raw(), l))
    })?;
    Ok(out)
}

#[test]
fn harvest_records_and_cleans_once_no_clear_keeps_and_a_hole_is_einval() {
    let pt = hd_table();
    pt.map(Iova(0), PhysAddr(0), 4 * SZ_4K, RW).unwrap();
    // Starts dirty; a harvest records and cleans to DBM|AP[2].
    assert_eq!(
        harvest(&pt, 0, SZ_4K, DirtyFlags::empty()),
        Ok(vec![(0, SZ_4K)])
    );
    let p = pt.walk(Iova(0)).ptes[3];
    assert_eq!(p & (pte::DBM | pte::AP_RDONLY), pte::DBM | pte::AP_RDONLY);
    // A second call records nothing.
    assert_eq!(harvest(&pt, 0, SZ_4K, DirtyFlags::empty()), Ok(vec![]));
    // NO_CLEAR records and leaves the bit clear.
    assert_eq!(
        harvest(&pt, SZ_4K, SZ_4K, DirtyFlags::NO_CLEAR),
        Ok(vec![(SZ_4K, SZ_4K)])
    );
    assert_eq!(
        harvest(&pt, SZ_4K, SZ_4K, DirtyFlags::NO_CLEAR),
        Ok(vec![(SZ_4K, SZ_4K)])
    );
    // A hole → EINVAL, after reporting what came before it.
    assert_eq!(
        harvest(&pt, 0, 8 * SZ_4K, DirtyFlags::NO_CLEAR),
        Err(Error::Hole {
            iova: Iova(4 * SZ_4K)
        })
    );
    assert_eq!(
        harvest(&pt, 0, 0, DirtyFlags::empty()),
        Err(Error::EmptyRange)
    );
    assert!(matches!(
        harvest(&pt, u64::MAX - 0xfff, 0x2000, DirtyFlags::empty()),
        Err(Error::DirtyOutOfRange { .. })
    ));
    assert!(matches!(
        harvest(&pt, 1 << 48, 0x1000, DirtyFlags::empty()),
        Err(Error::DirtyOutOfRange { .. })
    ));
    // A 2M block reports 2M.
    pt.map(Iova(SZ_2M), PhysAddr(SZ_2M), SZ_2M, RW).unwrap();
    assert_eq!(
        harvest(&pt, SZ_2M, SZ_2M, DirtyFlags::empty()),
        Ok(vec![(SZ_2M, SZ_2M)])
    );
    // Read-only mappings never become dirty.
    pt.map(Iova(8 * SZ_2M), PhysAddr(0), SZ_4K, Prot::READ)
        .unwrap();
    assert!(!pte::is_writable_dirty(pt.walk(Iova(8 * SZ_2M)).ptes[3]));
    // Stage 2 → EINVAL.
    let s2 = IoPageTable::new(
        &Config::new(Format::ArmLpaeS2, B4K, 48, 48),
        Arc::new(NoFlush),
    )
    .unwrap();
    s2.map(Iova(0), PhysAddr(0), SZ_4K, RW).unwrap();
    assert_eq!(
        harvest(&s2, 0, SZ_4K, DirtyFlags::empty()),
        Err(Error::DirtyUnsupported)
    );
}

#[test]
fn query_starting_inside_a_block_reports_it_and_the_next_ones() {
    // The kernel's walker (`__arm_lpae_iopte_walk`) keeps an unaligned cursor and can skip the
    // tail; ours does not.
    let pt = hd_table();
    pt.map(Iova(0), PhysAddr(0), 4 * SZ_2M, RW).unwrap();
    let got = harvest(&pt, SZ_2M / 2, 3 * SZ_2M, DirtyFlags::empty()).unwrap();
    assert_eq!(
        got,
        vec![
            (0, SZ_2M),
            (SZ_2M, SZ_2M),
            (2 * SZ_2M, SZ_2M),
            (3 * SZ_2M, SZ_2M)
        ]
    );
}

#[test]
fn device_writes_are_reported_exactly_once() {
    let d = hd_domain();
    d.map(Iova(0), PhysAddr(0x100_0000), 16 * SZ_4K, RW)
        .unwrap();
    d.start_dirty_tracking();
    let collect = |flags| {
        let mut v = Vec::new();
        d.read_and_clear_dirty(Iova(0), 16 * SZ_4K, flags, &mut |i, l| v.push((i.raw(), l)))
            .unwrap();
        v
    };
    assert_eq!(
        collect(DirtyFlags::empty()),
        vec![],
        "tracking starts clean"
    );
    d.translate(Iova(3 * SZ_4K + 8), Access::Write).unwrap();
    d.translate(Iova(3 * SZ_4K + 16), Access::Write).unwrap(); // IOTLB hit, already dirty
    d.translate(Iova(5 * SZ_4K), Access::Read).unwrap();
    assert_eq!(collect(DirtyFlags::NO_CLEAR), vec![(3 * SZ_4K, SZ_4K)]);
    assert_eq!(collect(DirtyFlags::empty()), vec![(3 * SZ_4K, SZ_4K)]);
    assert_eq!(collect(DirtyFlags::empty()), vec![]);
    // After the harvest synced the IOTLB, a new write through the cached entry is seen again.
    d.translate(Iova(3 * SZ_4K), Access::Write).unwrap();
    assert_eq!(collect(DirtyFlags::empty()), vec![(3 * SZ_4K, SZ_4K)]);
    // A read that cached a clean entry does not let a later write slip by.
    d.translate(Iova(5 * SZ_4K), Access::Read).unwrap();
    d.translate(Iova(5 * SZ_4K), Access::Write).unwrap();
    assert_eq!(collect(DirtyFlags::empty()), vec![(5 * SZ_4K, SZ_4K)]);
}

/// Cleans dirty state without the eager block split of `start_dirty_tracking`, so tests can
/// exercise blocks under tracking.
fn clean_keep_blocks(d: &Domain) {
    d.table().set_clean_start(true);
    d.table().clear_all_dirty();
    d.iotlb().invalidate_all();
}

#[test]
fn split_block_keeps_dbm_and_dirty_state() {
    // The v6.12 split (`arm_lpae_split_blk_unmap`) dropped DBM; a split here keeps tracking the
    // pieces.
    let d = hd_domain();
    d.map(Iova(0), PhysAddr(0), SZ_2M, RW).unwrap();
    clean_keep_blocks(&d);
    d.translate(Iova(0x1000), Access::Write).unwrap();
    d.unmap(Iova(0x10_0000), SZ_4K, ());
    let p = d.table().walk(Iova(0)).ptes[3];
    assert_ne!(p & pte::DBM, 0);
    let mut v = 0;
    d.read_and_clear_dirty(Iova(0), SZ_2M, DirtyFlags::empty(), &mut |_, l| v += l)
        .unwrap_err();
    assert_eq!(
        v, 0x10_0000,
        "every piece of the dirty block up to the hole is dirty"
    );
    d.translate(Iova(0x3000), Access::Write).unwrap();
    let mut got = Vec::new();
    d.read_and_clear_dirty(Iova(0), 0x10_0000, DirtyFlags::empty(), &mut |i, l| {
        got.push((i.raw(), l))
    })
    .unwrap();
    assert_eq!(got, vec![(0x3000, SZ_4K)]);
}

proptest! {
    /// Every write through translate shows up in exactly one harvest (without NO_CLEAR).
    #[test]
    fn every_write_is_harvested_exactly_once(ops in proptest::collection::vec((0u64..64, any::<bool>()), 1..200)) {
        let d = hd_domain();
        d.map(Iova(0), PhysAddr(0x4000_0000), 64 * SZ_4K, RW).unwrap();
        d.start_dirty_tracking();
        let mut written = BTreeSet::new();
        for (page, harvest_now) in ops {
            d.translate(Iova(page * SZ_4K + 5), Access::Write).unwrap();
            written.insert(page);
            if harvest_now {
                let mut got = BTreeSet::new();
                d.read_and_clear_dirty(Iova(0), 64 * SZ_4K, DirtyFlags::empty(), &mut |i, _| { got.insert(i.raw() / SZ_4K); }).unwrap();
                prop_assert_eq!(&got, &written);
                written.clear();
            }
        }
        let mut got = BTreeSet::new();
        d.read_and_clear_dirty(Iova(0), 64 * SZ_4K, DirtyFlags::empty(), &mut |i, _| { got.insert(i.raw() / SZ_4K); }).unwrap();
        prop_assert_eq!(got, written);
    }
}

fn unmap_dirty(d: &Domain, iova: u64, size: u64) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    let mut sink = |i: Iova, l: u64| v.push((i.raw(), l));
    let u = d.unmap_read_dirty(Iova(iova), size, (), Some(&mut sink));
    assert_eq!(u.bytes, size);
    v
}

#[test]
fn unmap_reports_the_dirty_leaves_it_removes() {
    let d = hd_domain();
    d.map(Iova(0), PhysAddr(0), 8 * SZ_4K, RW).unwrap();
    d.map(Iova(SZ_2M), PhysAddr(SZ_2M), SZ_2M, RW).unwrap();
    clean_keep_blocks(&d);
    d.translate(Iova(SZ_4K), Access::Write).unwrap();
    d.translate(Iova(3 * SZ_4K), Access::Read).unwrap();
    // Page-level unmap: only the written page.
    assert_eq!(unmap_dirty(&d, 0, 4 * SZ_4K), vec![(SZ_4K, SZ_4K)]);
    // A 2M unmap over an L3 table: the table is removed whole, its dirty leaves reported.
    d.translate(Iova(6 * SZ_4K), Access::Write).unwrap();
    assert_eq!(unmap_dirty(&d, 0, SZ_2M), vec![(6 * SZ_4K, SZ_4K)]);
    // A split of a dirty 2M block: the hole is reported as dirty, the rest stays mapped.
    d.translate(Iova(SZ_2M + 5), Access::Write).unwrap();
    assert_eq!(
        unmap_dirty(&d, SZ_2M + 8 * SZ_4K, SZ_4K),
        vec![(SZ_2M + 8 * SZ_4K, SZ_4K)]
    );
    // A clean block reports nothing.
    d.read_and_clear_dirty(Iova(SZ_2M), SZ_4K, DirtyFlags::empty(), &mut |_, _| {})
        .unwrap();
    assert_eq!(unmap_dirty(&d, SZ_2M, SZ_4K), vec![]);
}

#[test]
fn mappings_made_while_tracking_start_clean() {
    let d = hd_domain();
    d.start_dirty_tracking();
    d.map(Iova(0), PhysAddr(0), 4 * SZ_4K, RW).unwrap();
    let mut n = 0;
    d.read_and_clear_dirty(Iova(0), 4 * SZ_4K, DirtyFlags::empty(), &mut |_, _| n += 1)
        .unwrap();
    assert_eq!(n, 0);
    d.stop_dirty_tracking();
    d.map(Iova(SZ_2M), PhysAddr(0), SZ_4K, RW).unwrap();
    assert!(
        pte::is_writable_dirty(d.table().walk(Iova(SZ_2M)).ptes[3]),
        "kernel default"
    );
}

#[test]
fn concurrent_unmap_never_loses_a_device_write() {
    // A device thread writes pages while the main thread unmaps them with dirty reporting:
    // every write that succeeded (translate returned Ok) must be reported by the unmap.
    for _ in 0..20 {
        let d = Arc::new(hd_domain());
        d.map(Iova(0), PhysAddr(0), 64 * SZ_4K, RW).unwrap();
        d.start_dirty_tracking();
        let dev = {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut ok = BTreeSet::new();
                for round in 0..4 {
                    for p in 0..64u64 {
                        if d.translate(Iova(p * SZ_4K), Access::Write).is_ok() {
                            ok.insert(p);
                        }
                        let _ = round;
                    }
                }
                ok
            })
        };
        let mut reported = BTreeSet::new();
        for p in 0..64u64 {
            let mut sink = |i: Iova, _l: u64| {
                reported.insert(i.raw() / SZ_4K);
            };
            d.unmap_read_dirty(Iova(p * SZ_4K), SZ_4K, (), Some(&mut sink));
        }
        let written = dev.join().unwrap();
        assert!(
            written.is_subset(&reported),
            "lost: {:?}",
            written.difference(&reported)
        );
    }
}

#[test]
fn tracking_splits_blocks_so_dirty_state_is_per_page() {
    let d = hd_domain();
    d.map(Iova(0), PhysAddr(0x4000_0000), SZ_2M, RW).unwrap();
    d.map(Iova(1 << 30), PhysAddr(1 << 31), 1 << 30, RW)
        .unwrap();
    assert_eq!(d.table().stats().leaves, [0, 1, 1, 0]);
    d.start_dirty_tracking();
    assert_eq!(d.table().stats().leaves, [0, 0, 0, 512 + 262_144]);
    // Translations are unchanged.
    assert_eq!(
        d.table().iova_to_phys(Iova(0x12345)),
        Some(PhysAddr(0x4001_2345))
    );
    assert_eq!(
        d.table().iova_to_phys(Iova((1 << 30) + 0x20_3456)),
        Some(PhysAddr((1 << 31) + 0x20_3456))
    );
    d.translate(Iova(0x5000), Access::Write).unwrap();
    let mut got = Vec::new();
    d.read_and_clear_dirty(Iova(0), SZ_2M, DirtyFlags::empty(), &mut |i, l| {
        got.push((i.raw(), l))
    })
    .unwrap();
    assert_eq!(got, vec![(0x5000, SZ_4K)]);
    // New mappings while tracking use pages too.
    d.map(Iova(4 * SZ_2M), PhysAddr(0), SZ_2M, RW).unwrap();
    assert!(d.table().leaves().iter().all(|l| l.1 == SZ_4K));
    d.stop_dirty_tracking();
    d.map(Iova(8 * SZ_2M), PhysAddr(0), SZ_2M, RW).unwrap();
    assert_eq!(d.table().stats().leaves[2], 1);
}

#[test]
fn splitting_stops_cleanly_when_table_memory_runs_out() {
    let d = hd_domain();
    d.map(Iova(0), PhysAddr(0), 4 * SZ_2M, RW).unwrap();
    d.table().set_table_alloc_budget(Some(2));
    assert_eq!(d.table().split_blocks(), 2);
    assert_eq!(d.table().stats().leaves, [0, 0, 2, 1024]);
    for off in (0..4 * SZ_2M).step_by(0x1_0000) {
        assert_eq!(d.table().iova_to_phys(Iova(off)), Some(PhysAddr(off)));
    }
}
