//! The page table against a reference model: the core's block-size choice (`iommu_pgsize`),
//! `arm_lpae_unmap_pages` (v6.18) and the v6.12 block split (`arm_lpae_split_blk_unmap`, kept:
//! docs/SEMANTICS.md, "The page table").
//!
//! The model is a sorted map of non-overlapping `(iova, len) → pa` intervals. `map` succeeds on
//! free ranges; `unmap` follows the iommu core: it walks the range in the chunks `iommu_pgsize`
//! picks, removes a chunk whole if anything in it is mapped (a table there is freed, a block
//! around it is split) and stops at the first empty chunk. After every step the table's leaves
//! must describe exactly the model's intervals.

use std::collections::BTreeMap;
use std::sync::Arc;

use io_pgtable::tlb::NoFlush;
use io_pgtable::{iommu_pgsize, Config, Format, IoPageTable, Iova, PhysAddr, Prot};
use proptest::prelude::*;

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const SZ_1G: u64 = 1 << 30;
const B4K: u64 = SZ_4K | SZ_2M | SZ_1G;
const SPACE: u64 = 8 * SZ_1G;

#[derive(Debug, Default, Clone)]
struct Model {
    /// start → (len, pa)
    map: BTreeMap<u64, (u64, u64)>,
}

impl Model {
    fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start + len;
        self.map
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &(l, _))| s + l > start)
    }

    fn insert(&mut self, start: u64, len: u64, pa: u64) {
        self.map.insert(start, (len, pa));
    }

    /// Removes `[start, start + len)` from every interval.
    fn remove(&mut self, start: u64, len: u64) {
        let end = start + len;
        let hits: Vec<_> = self
            .map
            .range(..end)
            .filter(|(&s, &(l, _))| s + l > start)
            .map(|(&s, &v)| (s, v))
            .collect();
        for (s, (l, pa)) in hits {
            self.map.remove(&s);
            if s < start {
                self.map.insert(s, (start - s, pa));
            }
            if s + l > end {
                self.map.insert(end, (s + l - end, pa + (end - s)));
            }
        }
    }

    fn unmap(&mut self, iova: u64, size: u64) -> u64 {
        let mut done = 0;
        while done < size {
            let at = iova + done;
            let (pgsize, count) = iommu_pgsize(B4K, at, at, size - done).unwrap();
            // unmap_pages stops at the end of the table page.
            let per_table = 512 - ((at / pgsize) % 512);
            let count = count.min(per_table);
            let mut n = 0;
            while n < count && self.overlaps(at + n * pgsize, pgsize) {
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.remove(at, n * pgsize);
            done += n * pgsize;
        }
        done
    }

    /// Maximal runs that are contiguous in both iova and pa.
    fn runs(intervals: impl Iterator<Item = (u64, u64, u64)>) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        for (s, l, pa) in intervals {
            if let Some(last) = out.last_mut() {
                if last.0 + last.1 == s && last.2 + last.1 == pa {
                    last.1 += l;
                    continue;
                }
            }
            out.push((s, l, pa));
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Op {
    Map { iova: u64, pa: u64, len: u64 },
    Unmap { iova: u64, len: u64 },
}

fn aligned(unit: u64, max_units: u64) -> impl Strategy<Value = u64> {
    (0..max_units).prop_map(move |u| u * unit)
}

fn op() -> impl Strategy<Value = Op> {
    let unit = prop_oneof![4 => Just(SZ_4K), 3 => Just(SZ_2M), 1 => Just(SZ_1G)];
    let map = (unit.clone(), 1u64..600, 0u64..4).prop_flat_map(|(u, n, skew)| {
        let len = (n * SZ_4K).max(u).min(2 * SZ_1G + 3 * SZ_2M);
        (
            aligned(u, SPACE / u),
            aligned(u, SPACE / u),
            Just(len),
            Just(skew),
        )
            .prop_map(|(iova, pa, len, skew)| Op::Map {
                iova,
                pa: pa + skew * SZ_4K * u64::from(skew == 3),
                len,
            })
    });
    let unmap = (unit, 1u64..1200).prop_flat_map(|(u, n)| {
        (
            aligned(u.min(SZ_2M), SPACE / u.min(SZ_2M)),
            Just((n * SZ_4K).max(u)),
        )
            .prop_map(|(iova, len)| Op::Unmap { iova, len })
    });
    prop_oneof![3 => map, 2 => unmap]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let pt = IoPageTable::new(&Config::new(Format::ArmLpaeS1, B4K, 48, 48), Arc::new(NoFlush)).unwrap();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Map { iova, pa, len } => {
                    let len = len.min(SPACE - iova);
                    if model.overlaps(iova, len) {
                        continue;
                    }
                    pt.map(Iova(iova), PhysAddr(pa), len, Prot::READ | Prot::WRITE).unwrap();
                    model.insert(iova, len, pa);
                }
                Op::Unmap { iova, len } => {
                    let len = len.min(SPACE - iova);
                    let expect = model.unmap(iova, len);
                    prop_assert_eq!(pt.unmap(Iova(iova), len, None), expect, "unmap {:#x}+{:#x}", iova, len);
                }
            }
            let got = Model::runs(pt.leaves().into_iter().map(|(i, l, p, _)| (i.raw(), l, p.raw())));
            let want = Model::runs(model.map.iter().map(|(&s, &(l, p))| (s, l, p)));
            prop_assert_eq!(got, want);
        }
        // Spot-check translation against the model.
        for (&s, &(l, pa)) in &model.map {
            prop_assert_eq!(pt.iova_to_phys(Iova(s)), Some(PhysAddr(pa)));
            prop_assert_eq!(pt.iova_to_phys(Iova(s + l - 1)), Some(PhysAddr(pa + l - 1)));
        }
    }
}
