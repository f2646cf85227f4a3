//! The fast paths of the common geometry (4K granule, four levels, 48-bit input: `map_pages`
//! and `unmap_pages` of one 4K page walk with constant shifts and fall back to the general walk
//! for anything but table descriptors down to level 3; `iova_to_phys` walks with constant
//! shifts) against the general walk.
//!
//! The reference is the same page table with a 47-bit input: its PGD has 256 entries, so it
//! never takes the fast paths, and below 2^47 it means exactly the same. Every operation must
//! return the same result (bytes, error and gathered range) and leave the same leaves, with
//! table memory on the heap and on transparent huge pages.

use std::sync::Arc;

use io_pgtable::tlb::NoFlush;
use io_pgtable::{Config, Format, Gather, IoPageTable, Iova, PhysAddr, Prot, TableMemory};
use proptest::prelude::*;

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const SZ_1G: u64 = 1 << 30;
const B4K: u64 = SZ_4K | SZ_2M | SZ_1G;
/// Four 2M blocks, at 64 GiB: small enough that operations collide often.
const BASE: u64 = 64 * SZ_1G;
const WINDOW_PAGES: u64 = 4 * 512;

#[derive(Debug, Clone)]
enum Op {
    Map {
        page: u64,
        offset: u64,
        pa_page: u64,
        pgsize: u64,
        pgcount: u64,
        prot: u32,
    },
    Unmap {
        page: u64,
        pgsize: u64,
        pgcount: u64,
        gather: bool,
        dirty: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pgsize = prop_oneof![6 => Just(SZ_4K), 1 => Just(SZ_2M)];
    let count = prop_oneof![6 => Just(1u64), 1 => 0u64..4];
    let map = (
        0..WINDOW_PAGES,
        prop_oneof![9 => Just(0u64), 1 => Just(0x10u64)],
        0u64..1 << 20,
        pgsize.clone(),
        count.clone(),
        prop_oneof![9 => Just(3u32), 1 => 0u32..8],
    )
        .prop_map(|(page, offset, pa_page, pgsize, pgcount, prot)| Op::Map {
            page,
            offset,
            pa_page,
            pgsize,
            pgcount,
            prot,
        });
    let unmap = (0..WINDOW_PAGES, pgsize, count, any::<bool>(), any::<bool>()).prop_map(
        |(page, pgsize, pgcount, gather, dirty)| Op::Unmap {
            page,
            pgsize,
            pgcount,
            gather,
            dirty,
        },
    );
    prop_oneof![1 => map, 1 => unmap]
}

fn table(ias: u32, memory: TableMemory) -> IoPageTable {
    let cfg = Config {
        table_memory: memory,
        ..Config::new(Format::ArmLpaeS1, B4K, ias, 48)
    };
    IoPageTable::new(&cfg, Arc::new(NoFlush)).unwrap()
}

/// What one operation returned, comparable across tables.
fn apply(pt: &IoPageTable, op: &Op) -> String {
    match *op {
        Op::Map {
            page,
            offset,
            pa_page,
            pgsize,
            pgcount,
            prot,
        } => {
            let iova = BASE + page * SZ_4K + offset;
            let pa = SZ_1G + pa_page * SZ_4K;
            let prot = Prot::from_bits_truncate(prot);
            format!(
                "{:?}",
                pt.map_pages(Iova(iova), PhysAddr(pa), pgsize, pgcount, prot)
            )
        }
        Op::Unmap {
            page,
            pgsize,
            pgcount,
            gather,
            dirty,
        } => {
            let iova = Iova(BASE + page * SZ_4K);
            let mut g = Gather::new();
            let mut reported = Vec::new();
            let mut sink = |i: Iova, l: u64| reported.push((i, l));
            let n = pt.unmap_pages_dirty(
                iova,
                pgsize,
                pgcount,
                gather.then_some(&mut g),
                if dirty { Some(&mut sink) } else { None },
            );
            format!("{n:#x} {g:?} {reported:?}")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn one_page_fast_paths_match_the_general_walk(ops in proptest::collection::vec(op(), 1..60)) {
        for memory in [TableMemory::Heap, TableMemory::HugePages] {
            let fast = table(48, memory);
            let general = table(47, TableMemory::Heap);
            for op in &ops {
                prop_assert_eq!(apply(&fast, op), apply(&general, op), "{:?}", op);
                prop_assert_eq!(fast.leaves(), general.leaves(), "after {:?}", op);
            }
            for p in 0..WINDOW_PAGES {
                let iova = Iova(BASE + p * SZ_4K + 0x10);
                prop_assert_eq!(fast.iova_to_phys(iova), general.iova_to_phys(iova));
            }
        }
    }
}

#[test]
fn a_page_over_a_block_or_a_page_is_refused_with_the_block_or_page_address() {
    let rw = Prot::READ | Prot::WRITE;
    let pt = table(48, TableMemory::HugePages);
    pt.map_pages(Iova(BASE), PhysAddr(SZ_1G), SZ_2M, 1, rw)
        .unwrap();
    let err = pt
        .map_pages(Iova(BASE + 5 * SZ_4K), PhysAddr(0), SZ_4K, 1, rw)
        .unwrap_err();
    assert_eq!(err, io_pgtable::Error::Exists { iova: Iova(BASE) });
    // A 4K unmap inside the block splits it, and the page is then a hole to map into.
    assert_eq!(
        pt.unmap_pages(Iova(BASE + 5 * SZ_4K), SZ_4K, 1, None),
        SZ_4K
    );
    assert_eq!(
        pt.map_pages(Iova(BASE + 5 * SZ_4K), PhysAddr(0), SZ_4K, 1, rw),
        Ok(SZ_4K)
    );
    let err = pt
        .map_pages(Iova(BASE + 5 * SZ_4K), PhysAddr(0), SZ_4K, 1, rw)
        .unwrap_err();
    assert_eq!(
        err,
        io_pgtable::Error::Exists {
            iova: Iova(BASE + 5 * SZ_4K)
        }
    );
    assert_eq!(
        pt.unmap_pages(Iova(BASE + 5 * SZ_4K), SZ_4K, 1, None),
        SZ_4K
    );
    assert_eq!(
        pt.unmap_pages(Iova(BASE + 5 * SZ_4K), SZ_4K, 1, None),
        0,
        "a hole unmaps nothing"
    );
}
