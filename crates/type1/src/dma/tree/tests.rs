//! The mapping tree against a `BTreeMap` reference and its own invariants.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::dma::DmaProt;
use crate::mm::{FakeMemory, LockCapability, Mm};

const PROT: DmaProt = DmaProt {
    read: true,
    write: true,
};

fn mm() -> Arc<Mm> {
    Arc::new(Mm::new(
        Box::new(FakeMemory::new()),
        None,
        LockCapability::Limited,
    ))
}

fn dma(mm: &Arc<Mm>, iova: u64, size: u64) -> Dma {
    let mut d = Dma::new(iova, 0x1000, PROT, mm);
    d.size = size;
    d
}

fn map(t: &mut DmaTree, mm: &Arc<Mm>, iova: u64, size: u64) -> Result<()> {
    let v = t.vacancy(iova, iova + size - 1)?;
    match t.insert(v, dma(mm, iova, size)) {
        None => Ok(()),
        Some(_) => Err(Error::Exists { iova, size }),
    }
}

/// A deterministic sequence (splitmix64).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn random_maps_and_unmaps_agree_with_an_ordered_map_through_splits_and_merges() {
    let mm = mm();
    let mut t = DmaTree::new(5_000);
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let mut st = 1u64;
    for step in 0..40_000u64 {
        // Grow to a few thousand mappings (many splits), then shrink (merges).
        let grow = (step / 10_000) % 2 == 0;
        let page = next(&mut st) % 8_192;
        let (iova, size) = (page * 0x1000, (1 + next(&mut st) % 3) * 0x1000);
        let last = iova + size - 1;
        if grow || next(&mut st) % 4 == 0 {
            let overlaps = model
                .range(..=last)
                .next_back()
                .is_some_and(|(_, &l)| l >= iova);
            let r = map(&mut t, &mm, iova, size);
            if overlaps {
                assert!(matches!(r, Err(Error::Exists { .. })), "{iova:#x}");
            } else if model.len() == 5_000 {
                assert!(matches!(r, Err(Error::NoSlots { .. })), "{iova:#x}");
            } else {
                assert!(r.is_ok(), "{iova:#x}: {r:?}");
                model.insert(iova, last);
            }
        } else {
            let key = model.range(iova..).next().map(|(&k, _)| k);
            if let Some(k) = key {
                let d = t.remove(k).expect("a mapping the model holds");
                assert_eq!((d.iova, d.last()), (k, model[&k]));
                model.remove(&k);
            }
            assert!(t.remove(iova + 0x800).is_none());
        }
        // Queries against the model at a random address.
        let at = next(&mut st) % (8_200 * 0x1000);
        let want = model
            .range(..=at)
            .next_back()
            .filter(|(_, &l)| l >= at)
            .map(|(&k, _)| k);
        assert_eq!(t.containing(at).map(|d| d.iova), want);
        let want_first = model.range(at..=at + 0x5000).next().map(|(&k, _)| k);
        assert_eq!(
            t.first_starting_in(at, at + 0x5000).map(|d| d.iova),
            want_first
        );
        if step % 1_000 == 0 {
            t.check().unwrap();
            assert_eq!(t.keys(), model.keys().copied().collect::<Vec<_>>());
            assert_eq!(t.len(), model.len());
            assert_eq!(t.avail() as usize, 5_000 - model.len());
        }
    }
    t.check().unwrap();
}

#[test]
fn overlapping_keys_covers_a_mapping_that_starts_below_the_range() {
    let mm = mm();
    let mut t = DmaTree::new(100);
    for i in 0..10u64 {
        map(&mut t, &mm, i * 0x4000, 0x2000).unwrap();
    }
    assert_eq!(
        t.overlapping_keys(0x5000, 0xc000),
        vec![0x4000, 0x8000, 0xc000]
    );
    assert_eq!(t.overlapping_keys(0x2000, 0x3fff), Vec::<u64>::new());
    assert_eq!(t.find(0x1000, 0x1000).map(|d| d.iova), Some(0));
}

#[test]
fn the_tree_counts_invalid_vaddrs_and_a_removal_takes_its_mapping_off_the_count() {
    let mm = mm();
    let mut t = DmaTree::new(10);
    map(&mut t, &mm, 0, 0x1000).unwrap();
    map(&mut t, &mm, 0x1000, 0x1000).unwrap();
    assert_eq!(t.set_vaddr_invalid(0, true), Some(false));
    assert_eq!(t.set_vaddr_invalid(0, true), Some(true));
    assert_eq!(t.set_vaddr_invalid(0x1000, true), Some(false));
    assert_eq!(t.vaddr_invalid_count(), 2);
    assert_eq!(t.set_vaddr_invalid(0x800, true), None);
    let d = t.remove(0).unwrap();
    assert!(d.vaddr_invalid());
    assert_eq!(t.vaddr_invalid_count(), 1);
    assert_eq!(t.avail(), 9);
    // Put back, it counts again.
    assert!(t.reinsert(d).is_none());
    assert_eq!((t.vaddr_invalid_count(), t.avail()), (2, 8));
    t.check().unwrap();
}

#[test]
fn a_vacancy_made_stale_by_another_insert_is_searched_again() {
    let mm = mm();
    let mut t = DmaTree::new(10);
    let v = t.vacancy(0x2000, 0x2fff).unwrap();
    map(&mut t, &mm, 0x1000, 0x1000).unwrap();
    assert!(t.insert(v, dma(&mm, 0x2000, 0x1000)).is_none());
    let w = t.vacancy(0x3000, 0x3fff).unwrap();
    map(&mut t, &mm, 0x3000, 0x1000).unwrap();
    assert!(t.insert(w, dma(&mm, 0x3000, 0x1000)).is_some());
    assert_eq!(t.keys(), vec![0x1000, 0x2000, 0x3000]);
    t.check().unwrap();
}
