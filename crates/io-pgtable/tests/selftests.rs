//! The kernel's io-pgtable-arm selftests, ported (`arm_lpae_do_selftests` and
//! `arm_lpae_run_tests` in `drivers/iommu/io-pgtable-arm-selftests.c`, v6.18), the partial-unmap
//! case the selftests had up to v6.12, and further cases the code of `io-pgtable-arm.c` implies
//! but its selftests do not check.

use std::sync::Arc;

use io_pgtable::cfg::{SELFTEST_ADDRESS_SIZES, SELFTEST_PGSIZES};
use io_pgtable::testing::{RecordingFlushOps, TlbEvent};
use io_pgtable::tlb::NoFlush;
use io_pgtable::{Config, Error, Format, Gather, IoPageTable, Iova, PhysAddr, Prot, Quirks};

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const SZ_1G: u64 = 1 << 30;
const B4K: u64 = SZ_4K | SZ_2M | SZ_1G;

fn rw_prot() -> Prot {
    Prot::READ | Prot::WRITE | Prot::NOEXEC | Prot::CACHE
}

fn table(cfg: &Config) -> (IoPageTable, Arc<RecordingFlushOps>) {
    let ops = Arc::new(RecordingFlushOps::default());
    (IoPageTable::new(cfg, ops.clone()).unwrap(), ops)
}

fn sizes(bitmap: u64) -> impl Iterator<Item = u64> {
    (0..64).map(|b| 1u64 << b).filter(move |s| bitmap & s != 0)
}

/// The body of `arm_lpae_run_tests` for one table instance, from the first lookup to the free
/// (the steps are numbered in the order the kernel runs them, allocation being step 1).
fn run_selftest(cfg: &Config) {
    let (ops, tlb) = table(cfg);
    let bitmap = ops.geometry().pgsize_bitmap;
    // Step 2: an empty table translates nothing.
    for iova in [42, SZ_1G + 42, 2 * SZ_1G + 42] {
        assert_eq!(
            ops.iova_to_phys(Iova(iova)),
            None,
            "{cfg:?} empty {iova:#x}"
        );
    }
    // Step 3: distinct mappings, one per page size, 1G apart; overlapping maps fail.
    let mut iova = 0;
    for size in sizes(bitmap) {
        assert_eq!(
            ops.map_pages(Iova(iova), PhysAddr(iova), size, 1, rw_prot()),
            Ok(size),
            "{cfg:?} map {size:#x}"
        );
        assert_eq!(
            ops.map_pages(
                Iova(iova),
                PhysAddr(iova + size),
                size,
                1,
                Prot::READ | Prot::NOEXEC
            ),
            Err(Error::Exists { iova: Iova(iova) }),
            "{cfg:?} overlap {size:#x}"
        );
        assert_eq!(ops.iova_to_phys(Iova(iova + 42)), Some(PhysAddr(iova + 42)));
        iova += SZ_1G;
    }
    // Step 4: full unmap and remap (write-only must be accepted).
    let mut iova = 0;
    for size in sizes(bitmap) {
        assert_eq!(ops.unmap_pages(Iova(iova), size, 1, None), size);
        assert_eq!(ops.iova_to_phys(Iova(iova + 42)), None);
        assert_eq!(
            ops.map_pages(Iova(iova), PhysAddr(iova), size, 1, Prot::WRITE),
            Ok(size)
        );
        assert_eq!(ops.iova_to_phys(Iova(iova + 42)), Some(PhysAddr(iova + 42)));
        iova += SZ_1G;
    }
    // Step 5: the last largest page of the input range.
    let geo = *ops.geometry();
    let size = 1u64 << (63 - bitmap.leading_zeros());
    let iova = (1u64 << geo.ias) - size;
    assert_eq!(
        ops.map_pages(Iova(iova), PhysAddr(iova), size, 1, rw_prot()),
        Ok(size),
        "{cfg:?} last page"
    );
    assert_eq!(ops.iova_to_phys(Iova(iova + 42)), Some(PhysAddr(iova + 42)));
    assert_eq!(ops.unmap_pages(Iova(iova), size, 1, None), size);
    // Walk flushes only with supported sizes (the selftest's dummy flush ops check this).
    for e in tlb.take() {
        if let TlbEvent::FlushWalk { size, .. } = e {
            assert_ne!(size & bitmap, 0, "walk flush of unsupported size {size:#x}");
        }
    }
    // Step 6: free; the step-4 mappings are still there and get freed; flush_all first.
    drop(ops);
    assert_eq!(tlb.take(), vec![TlbEvent::FlushAll]);
}

#[test]
fn kernel_selftest_sweep_all_126_instances() {
    let mut instances = 0;
    for bitmap in SELFTEST_PGSIZES {
        // oas = as[j], ias = as[k] for k <= j: so ias <= oas.
        for (j, &oas) in SELFTEST_ADDRESS_SIZES.iter().enumerate() {
            for &ias in &SELFTEST_ADDRESS_SIZES[..=j] {
                for format in [Format::ArmLpaeS1, Format::ArmLpaeS2] {
                    let cfg = Config::new(format, bitmap, ias, oas).with_quirks(Quirks::NO_WARN);
                    run_selftest(&cfg);
                    instances += 1;
                }
            }
        }
    }
    assert_eq!(instances, 126);
}

#[test]
fn partial_unmap_splits_the_2m_block_as_selftests_did_up_to_v6_12() {
    for bitmap in SELFTEST_PGSIZES {
        let cfg = Config::new(Format::ArmLpaeS1, bitmap, 48, 48);
        let (ops, _) = table(&cfg);
        let bitmap = ops.geometry().pgsize_bitmap;
        let mut iova = 0;
        for size in sizes(bitmap) {
            ops.map_pages(Iova(iova), PhysAddr(iova), size, 1, rw_prot())
                .unwrap();
            iova += SZ_1G;
        }
        let size = bitmap & bitmap.wrapping_neg();
        assert_eq!(ops.unmap_pages(Iova(SZ_1G + size), size, 1, None), size);
        assert_eq!(
            ops.map_pages(Iova(SZ_1G + size), PhysAddr(size), size, 1, Prot::READ),
            Ok(size)
        );
        assert_eq!(
            ops.iova_to_phys(Iova(SZ_1G + size + 42)),
            Some(PhysAddr(size + 42))
        );
        // The rest of the split block is untouched.
        assert_eq!(
            ops.iova_to_phys(Iova(SZ_1G + 42)),
            Some(PhysAddr(SZ_1G + 42))
        );
        assert_eq!(
            ops.iova_to_phys(Iova(SZ_1G + 2 * size + 42)),
            Some(PhysAddr(SZ_1G + 2 * size + 42))
        );
    }
}

fn s1_4k() -> Config {
    Config::new(Format::ArmLpaeS1, B4K, 48, 48)
}

#[test]
fn map_pages_rejects_bad_page_size_protection_and_out_of_range_addresses() {
    let (ops, _) = table(&s1_4k());
    let p = Prot::READ;
    assert_eq!(
        ops.map_pages(Iova(0), PhysAddr(0), 1 << 13, 1, p),
        Err(Error::InvalidPageSize { pgsize: 1 << 13 })
    );
    assert_eq!(
        ops.map_pages(Iova(0), PhysAddr(0), SZ_4K | SZ_2M, 1, p),
        Err(Error::InvalidPageSize {
            pgsize: SZ_4K | SZ_2M
        })
    );
    assert_eq!(
        ops.map_pages(Iova(0), PhysAddr(0), SZ_4K, 1, Prot::CACHE),
        Err(Error::NoAccess)
    );
    assert_eq!(
        ops.map_pages(Iova(1 << 48), PhysAddr(0), SZ_4K, 1, p),
        Err(Error::IovaOutOfRange {
            iova: Iova(1 << 48),
            ias: 48
        })
    );
    assert_eq!(
        ops.map_pages(Iova(0), PhysAddr(1 << 48), SZ_4K, 1, p),
        Err(Error::PhysOutOfRange {
            paddr: PhysAddr(1 << 48),
            oas: 48
        })
    );
    // Stricter than the kernel: the *end* of the run must be in range too.
    let last = (1u64 << 48) - SZ_4K;
    assert_eq!(
        ops.map_pages(Iova(last), PhysAddr(0), SZ_4K, 2, p),
        Err(Error::IovaOutOfRange {
            iova: Iova((1 << 48) + SZ_4K - 1),
            ias: 48
        })
    );
    // TTBR1: only sign-extended (upper half) addresses are in range.
    let cfg = s1_4k().with_quirks(Quirks::ARM_TTBR1);
    let (ttbr1, _) = table(&cfg);
    assert!(matches!(
        ttbr1.map_pages(Iova(0x1000), PhysAddr(0), SZ_4K, 1, p),
        Err(Error::IovaOutOfRange { .. })
    ));
    let hi = 0xffff_ffff_ffff_f000;
    assert_eq!(
        ttbr1.map_pages(Iova(hi), PhysAddr(0x5000), SZ_4K, 1, p),
        Ok(SZ_4K)
    );
    assert_eq!(ttbr1.iova_to_phys(Iova(hi + 0x10)), Some(PhysAddr(0x5010)));
    assert_eq!(ttbr1.leaves().len(), 1);
    // Nothing was mapped by any failed call.
    assert!(ops.leaves().is_empty());
}

#[test]
fn multi_entry_runs_stop_at_the_table_page_boundary() {
    let (ops, _) = table(&s1_4k());
    // 4 pages starting 2 pages before the end of an L3 table page.
    let iova = SZ_2M - 2 * SZ_4K;
    assert_eq!(
        ops.map_pages(Iova(iova), PhysAddr(iova), SZ_4K, 4, Prot::READ),
        Ok(2 * SZ_4K)
    );
    assert_eq!(
        ops.map_pages(Iova(SZ_2M), PhysAddr(SZ_2M), SZ_4K, 2, Prot::READ),
        Ok(2 * SZ_4K)
    );
    assert_eq!(ops.unmap_pages(Iova(iova), SZ_4K, 4, None), 2 * SZ_4K);
    assert_eq!(ops.unmap_pages(Iova(SZ_2M), SZ_4K, 2, None), 2 * SZ_4K);
    // The iommu core's `map` loops over such boundaries.
    ops.map(Iova(iova), PhysAddr(iova), 4 * SZ_4K, Prot::READ)
        .unwrap();
    assert_eq!(ops.unmap(Iova(iova), 4 * SZ_4K, None), 4 * SZ_4K);
}

#[test]
fn block_over_table_replaces_smaller_mappings() {
    let (ops, tlb) = table(&s1_4k());
    for i in 0..3 {
        ops.map_pages(Iova(i * SZ_4K), PhysAddr(i * SZ_4K), SZ_4K, 1, Prot::READ)
            .unwrap();
    }
    let tables = ops.live_tables();
    tlb.take();
    assert_eq!(
        ops.map_pages(Iova(0), PhysAddr(SZ_1G), SZ_2M, 1, Prot::READ),
        Ok(SZ_2M)
    );
    assert_eq!(
        tlb.take(),
        vec![TlbEvent::FlushWalk {
            iova: 0,
            size: SZ_2M,
            granule: SZ_4K
        }]
    );
    assert_eq!(ops.live_tables(), tables - 1, "the L3 table was freed");
    assert_eq!(
        ops.iova_to_phys(Iova(0x1000)),
        Some(PhysAddr(SZ_1G + 0x1000))
    );
}

#[test]
fn page_under_a_block_is_eexist() {
    let (ops, _) = table(&s1_4k());
    ops.map_pages(Iova(0), PhysAddr(0), SZ_2M, 1, Prot::READ)
        .unwrap();
    let before = ops.leaves();
    assert_eq!(
        ops.map_pages(Iova(0x3000), PhysAddr(0), SZ_4K, 1, Prot::READ),
        Err(Error::Exists { iova: Iova(0) })
    );
    assert_eq!(ops.leaves(), before);
}

#[test]
fn failed_leaf_install_changes_nothing_even_with_tables_in_the_run() {
    // Slot 0 holds a table (4K pages), slot 1 a 2M block: mapping two 2M blocks over both must
    // fail with EEXIST without tearing down slot 0 (the kernel would have).
    let (ops, tlb) = table(&s1_4k());
    ops.map_pages(Iova(0), PhysAddr(0), SZ_4K, 1, Prot::READ)
        .unwrap();
    ops.map_pages(Iova(SZ_2M), PhysAddr(0), SZ_2M, 1, Prot::READ)
        .unwrap();
    let before = ops.leaves();
    tlb.take();
    assert_eq!(
        ops.map_pages(Iova(0), PhysAddr(0), SZ_2M, 2, Prot::READ),
        Err(Error::Exists { iova: Iova(SZ_2M) })
    );
    assert_eq!(ops.leaves(), before);
    assert!(tlb.take().is_empty());
}

#[test]
fn unmap_bigger_than_mapping_removes_the_table() {
    let (ops, tlb) = table(&s1_4k());
    ops.map_pages(Iova(0), PhysAddr(0), SZ_4K, 1, Prot::READ)
        .unwrap();
    let tables = ops.live_tables();
    tlb.take();
    let mut g = Gather::new();
    assert_eq!(ops.unmap_pages(Iova(0), SZ_2M, 1, Some(&mut g)), SZ_2M);
    assert_eq!(
        tlb.take(),
        vec![
            TlbEvent::FlushWalk {
                iova: 0,
                size: SZ_2M,
                granule: SZ_4K
            },
            TlbEvent::AddPage {
                iova: 0,
                size: SZ_2M
            }
        ]
    );
    assert_eq!(ops.live_tables(), tables - 1);
}

#[test]
fn partial_block_unmap_splits_instead_of_refusing() {
    // The kernel since v6.13 (33729a5fc0ca) returns 0 and keeps the block; we keep the v6.12
    // split, `arm_lpae_split_blk_unmap` (docs/SEMANTICS.md, "The page table").
    let (ops, tlb) = table(&s1_4k());
    ops.map_pages(Iova(0), PhysAddr(SZ_1G), SZ_2M, 1, Prot::READ)
        .unwrap();
    tlb.take();
    let mut g = Gather::new();
    assert_eq!(ops.unmap_pages(Iova(0x5000), SZ_4K, 1, Some(&mut g)), SZ_4K);
    assert_eq!(
        tlb.take(),
        vec![TlbEvent::AddPage {
            iova: 0x5000,
            size: SZ_4K
        }]
    );
    assert_eq!(ops.iova_to_phys(Iova(0x5000)), None);
    assert_eq!(
        ops.iova_to_phys(Iova(0x4fff)),
        Some(PhysAddr(SZ_1G + 0x4fff))
    );
    assert_eq!(
        ops.iova_to_phys(Iova(0x6000)),
        Some(PhysAddr(SZ_1G + 0x6000))
    );
    let s = ops.stats();
    assert_eq!(s.leaves[2], 0);
    assert_eq!(s.leaves[3], 511);
}

#[test]
fn unmap_stops_at_a_hole() {
    let (ops, _) = table(&s1_4k());
    for i in [0, 1, 3] {
        ops.map_pages(Iova(i * SZ_4K), PhysAddr(i * SZ_4K), SZ_4K, 1, Prot::READ)
            .unwrap();
    }
    assert_eq!(ops.unmap_pages(Iova(0), SZ_4K, 4, None), 2 * SZ_4K);
    assert_eq!(ops.iova_to_phys(Iova(3 * SZ_4K)), Some(PhysAddr(3 * SZ_4K)));
    assert_eq!(ops.unmap_pages(Iova(2 * SZ_4K), SZ_4K, 1, None), 0, "hole");
}

#[test]
fn leaf_invalidations_are_gathered_unless_queued_and_walk_flushes_are_synchronous() {
    let (ops, tlb) = table(&s1_4k());
    let map3 = || {
        ops.map_pages(Iova(0), PhysAddr(0), SZ_4K, 3, Prot::READ)
            .unwrap();
    };
    map3();
    tlb.take();
    let mut g = Gather::new();
    ops.unmap_pages(Iova(0), SZ_4K, 3, Some(&mut g));
    let adds: Vec<_> = tlb.take();
    assert_eq!(
        adds,
        (0..3)
            .map(|j| TlbEvent::AddPage {
                iova: j * SZ_4K,
                size: SZ_4K
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(g.range(), Some((Iova(0), 3 * SZ_4K)));
    map3();
    tlb.take();
    let mut q = Gather::queued();
    ops.unmap_pages(Iova(0), SZ_4K, 3, Some(&mut q));
    assert!(tlb.take().is_empty(), "queued gather: no add_page");
    map3();
    tlb.take();
    ops.unmap_pages(Iova(0), SZ_4K, 3, None);
    assert!(tlb.take().is_empty(), "no gather: no add_page");
    // Walk flushes happen whatever the gather says.
    map3();
    tlb.take();
    let mut q = Gather::queued();
    ops.unmap_pages(Iova(0), SZ_2M, 1, Some(&mut q));
    assert_eq!(
        tlb.take(),
        vec![TlbEvent::FlushWalk {
            iova: 0,
            size: SZ_2M,
            granule: SZ_4K
        }]
    );
}

#[test]
fn concurrent_mappers_install_exactly_one_table() {
    for _ in 0..50 {
        let ops = Arc::new(IoPageTable::new(&s1_4k(), Arc::new(NoFlush)).unwrap());
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let ops = ops.clone();
                std::thread::spawn(move || {
                    ops.map_pages(Iova(t * SZ_4K), PhysAddr(t * SZ_4K), SZ_4K, 1, Prot::READ)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(
            ops.live_tables(),
            3,
            "L1, L2, L3: one each, the loser's freed"
        );
        assert_eq!(ops.iova_to_phys(Iova(0)), Some(PhysAddr(0)));
        assert_eq!(ops.iova_to_phys(Iova(SZ_4K)), Some(PhysAddr(SZ_4K)));
    }
}

#[test]
fn walker_reports_every_level() {
    let (ops, _) = table(&s1_4k());
    ops.map_pages(Iova(0x1234_5000), PhysAddr(0x8000), SZ_4K, 1, Prot::READ)
        .unwrap();
    let w = ops.walk(Iova(0x1234_5000));
    assert_eq!(w.last_level, 3);
    for lvl in 0..3 {
        assert_eq!(w.ptes[lvl] & 3, 3, "table at level {lvl}");
    }
    assert_eq!(
        io_pgtable::pte::iopte_to_paddr(w.ptes[3], io_pgtable::Granule::Size4K),
        0x8000
    );
    let hole = ops.walk(Iova(0x4000_0000));
    assert_eq!(hole.last_level, 1);
    assert_eq!(hole.ptes[1], 0);
}

#[test]
fn drop_flushes_all_exactly_once_and_frees_tables() {
    let (ops, tlb) = table(&s1_4k());
    ops.map(Iova(0), PhysAddr(0), 64 * SZ_4K, Prot::READ)
        .unwrap();
    tlb.take();
    drop(ops);
    assert_eq!(tlb.take(), vec![TlbEvent::FlushAll]);
}

#[test]
fn table_memory_is_bounded_and_enomem_leaves_mappings_unchanged() {
    let mut cfg = s1_4k();
    cfg.max_tables = 3;
    let (ops, _) = table(&cfg);
    ops.map_pages(Iova(0), PhysAddr(0), SZ_4K, 1, Prot::READ)
        .unwrap();
    assert_eq!(
        ops.map_pages(Iova(SZ_2M), PhysAddr(0), SZ_4K, 1, Prot::READ),
        Err(Error::NoMemory)
    );
    assert_eq!(ops.leaves().len(), 1);
    // The core map rolls back what it mapped before the failure.
    ops.set_table_alloc_budget(Some(0));
    assert_eq!(
        ops.map(Iova(SZ_2M - SZ_4K), PhysAddr(0), 2 * SZ_4K, Prot::READ),
        Err(Error::NoMemory)
    );
    assert_eq!(ops.leaves().len(), 1);
    // A split that cannot allocate unmaps nothing.
    let (ops, _) = table(&s1_4k());
    ops.map_pages(Iova(SZ_1G), PhysAddr(0), SZ_2M, 1, Prot::READ)
        .unwrap();
    ops.set_table_alloc_budget(Some(0));
    assert_eq!(ops.unmap_pages(Iova(SZ_1G), SZ_4K, 1, None), 0);
    assert_eq!(ops.iova_to_phys(Iova(SZ_1G)), Some(PhysAddr(0)));
    assert_eq!(ops.leaves().len(), 1);
}

#[test]
fn core_map_checks_alignment_overflow_and_emptiness_first() {
    let (ops, _) = table(&s1_4k());
    assert_eq!(
        ops.map(Iova(0), PhysAddr(0), 0, Prot::READ),
        Err(Error::EmptyRange)
    );
    assert!(matches!(
        ops.map(Iova(0x800), PhysAddr(0), SZ_4K, Prot::READ),
        Err(Error::Unaligned { what: "iova", .. })
    ));
    assert!(matches!(
        ops.map(Iova(0), PhysAddr(0x800), SZ_4K, Prot::READ),
        Err(Error::Unaligned { what: "paddr", .. })
    ));
    assert!(matches!(
        ops.map(Iova(0), PhysAddr(0), 0x1800, Prot::READ),
        Err(Error::Unaligned { what: "size", .. })
    ));
    assert!(matches!(
        ops.map(Iova(u64::MAX - 0xfff), PhysAddr(0), 2 * SZ_4K, Prot::READ),
        Err(Error::Overflow { .. })
    ));
    // An EEXIST in the middle rolls back the first part.
    ops.map(Iova(3 * SZ_4K), PhysAddr(0), SZ_4K, Prot::READ)
        .unwrap();
    assert_eq!(
        ops.map(Iova(0), PhysAddr(0), 8 * SZ_4K, Prot::READ),
        Err(Error::Exists {
            iova: Iova(3 * SZ_4K)
        })
    );
    assert_eq!(ops.leaves().len(), 1);
}
