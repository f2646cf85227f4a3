//! Behaviour of [`PinSet`](super::PinSet): references per device, spilling, counting, and a
//! random sequence against a plain map.

use super::*;
use crate::mm::{FakeMemory, LockCapability};

fn space() -> Arc<Mm> {
    Arc::new(Mm::new(
        Box::new(FakeMemory::new()),
        None,
        LockCapability::Limited,
    ))
}

const A: DeviceId = DeviceId(1);
const B: DeviceId = DeviceId(2);

#[test]
fn a_page_pinned_twice_by_one_device_is_released_by_its_second_unpin() {
    let mm = space();
    let mut s = PinSet::new();
    s.insert(0x5000, 0xa000, A, &mm);
    assert_eq!(s.add_ref(0x5000, A), Some(0xa000));
    assert_eq!(s.refs(0x5000), 2);
    assert!(s.drop_ref(0x5000, A).is_none());
    let r = s.drop_ref(0x5000, A).expect("last pin releases");
    assert_eq!((r.iova, r.pa), (0x5000, 0xa000));
    assert!(Arc::ptr_eq(&r.space, &mm));
    assert!(s.is_empty());
    assert!(s.inner.is_none(), "an empty set frees its storage");
}

#[test]
fn a_second_device_spills_the_page_and_each_device_drops_only_its_own_pins() {
    let mm = space();
    let mut s = PinSet::new();
    s.insert(0x1000, 0xb000, A, &mm);
    assert_eq!(s.add_ref(0x1000, B), Some(0xb000));
    assert_eq!(s.refs(0x1000), 2);
    assert!(s.holds(0x1000, A) && s.holds(0x1000, B));
    assert!(s.drop_ref(0x1000, DeviceId(3)).is_none());
    assert!(s.drop_ref(0x1000, A).is_none());
    assert!(!s.holds(0x1000, A));
    assert!(s.drop_ref(0x1000, A).is_none(), "A holds nothing any more");
    assert!(s.drop_ref(0x1000, B).is_some());
    assert!(s.is_empty());
}

#[test]
fn another_device_cannot_drop_a_packed_pin() {
    let mm = space();
    let mut s = PinSet::new();
    s.insert(0x1000, 0xb000, A, &mm);
    assert!(s.drop_ref(0x1000, B).is_none());
    assert_eq!(s.refs(0x1000), 1);
    assert!(s.holds(0x1000, A) && !s.holds(0x1000, B));
}

#[test]
fn pins_beyond_the_packed_count_spill_without_losing_any() {
    let mm = space();
    let mut s = PinSet::new();
    s.insert(0, 0x1000, A, &mm);
    let total = u64::from(MAX_PACKED_REFS) + 10;
    for _ in 1..total {
        assert_eq!(s.add_ref(0, A), Some(0x1000));
    }
    assert_eq!(s.refs(0), total);
    for _ in 1..total {
        assert!(s.drop_ref(0, A).is_none());
    }
    assert!(s.drop_ref(0, A).is_some());
    assert!(s.is_empty());
}

#[test]
fn device_ids_beyond_sixteen_bits_and_many_spaces_are_kept_exactly() {
    let mut s = PinSet::new();
    let big = DeviceId(1 << 20);
    let mm = space();
    s.insert(0x2000, 0xc000, big, &mm);
    assert!(s.holds(0x2000, big) && !s.holds(0x2000, DeviceId(0)));
    let spaces: Vec<Arc<Mm>> = (0..MAX_SPACES + 3).map(|_| space()).collect();
    for (k, mm) in spaces.iter().enumerate() {
        s.insert(0x10_0000 + k as u64 * PAGE_SIZE, k as u64, A, mm);
    }
    let mut released = s.drain();
    released.sort_by_key(|r| r.iova);
    assert_eq!(released.len(), MAX_SPACES + 4);
    for (k, mm) in spaces.iter().enumerate() {
        assert!(Arc::ptr_eq(&released[k + 1].space, mm), "page {k}");
    }
    assert!(s.is_empty() && s.inner.is_none());
}

#[test]
fn count_in_counts_partial_chunks_and_spilled_pages() {
    let mm = space();
    let mut s = PinSet::new();
    for p in 0..200u64 {
        s.insert(p * PAGE_SIZE, p, A, &mm);
    }
    s.add_ref(70 * PAGE_SIZE, B); // spills page 70
    assert_eq!(s.count_in(0, 200 * PAGE_SIZE), 200);
    assert_eq!(s.count_in(63 * PAGE_SIZE, 2 * PAGE_SIZE), 2);
    assert_eq!(s.count_in(65 * PAGE_SIZE, 10 * PAGE_SIZE), 10);
    assert_eq!(s.count_in(64 * PAGE_SIZE, 64 * PAGE_SIZE), 64);
    assert_eq!(s.count_in(199 * PAGE_SIZE + 1, u64::MAX), 0);
    assert_eq!(s.count_in(0, 0), 0);
    assert_eq!(
        s.count_in(PAGE_SIZE - 1, 2),
        1,
        "page 1 starts inside the range"
    );
    assert_eq!(s.count_in(u64::MAX, 1), 0);
    assert_eq!(s.count_in(0, u64::MAX), 200);
    assert_eq!(s.len(), 200);
    let held = s.held_by(B);
    assert_eq!(held, vec![(70 * PAGE_SIZE, 1)]);
    assert_eq!(s.held_by(A).len(), 200);
    assert_eq!(s.iter().count(), 200);
}

/// Against a map of per-page, per-device counts: random inserts, refs and drops.
#[test]
fn random_operations_match_a_plain_map() {
    use std::collections::HashMap;
    let spaces = [space(), space()];
    let mut s = PinSet::new();
    let mut model: HashMap<u64, (u64, HashMap<u32, u32>)> = HashMap::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..20_000u64 {
        let page = (next() % 300) * PAGE_SIZE;
        let dev = DeviceId(u32::try_from(next() % 3).unwrap_or(0) * 40_000);
        match next() % 3 {
            0 | 1 => {
                if s.add_ref(page, dev).is_none() {
                    assert!(!model.contains_key(&page));
                    let sp = &spaces[crate::to_usize(next() % 2)];
                    s.insert(page, step, dev, sp);
                    model.insert(page, (step, HashMap::from([(dev.0, 1)])));
                } else {
                    *model
                        .get_mut(&page)
                        .map(|e| e.1.entry(dev.0).or_insert(0))
                        .expect("model has the page") += 1;
                }
            }
            _ => {
                let r = s.drop_ref(page, dev);
                let held = model
                    .get(&page)
                    .and_then(|e| e.1.get(&dev.0))
                    .copied()
                    .unwrap_or(0);
                if held == 0 {
                    assert!(r.is_none());
                    continue;
                }
                let e = model.get_mut(&page).expect("present");
                *e.1.get_mut(&dev.0).expect("held") -= 1;
                e.1.retain(|_, n| *n > 0);
                if e.1.is_empty() {
                    let (pa, _) = model.remove(&page).expect("present");
                    assert_eq!(r.map(|r| r.pa), Some(pa));
                } else {
                    assert!(r.is_none());
                }
            }
        }
        assert_eq!(s.len(), model.len() as u64);
    }
    for _ in 0..2_000 {
        let iova = next() % (310 * PAGE_SIZE);
        let len = next() % (200 * PAGE_SIZE);
        let want = model
            .keys()
            .filter(|&&p| len > 0 && p >= iova && p <= iova + (len - 1))
            .count() as u64;
        assert_eq!(s.count_in(iova, len), want, "count_in({iova:#x}, {len:#x})");
    }
    for (&page, (pa, owners)) in &model {
        let total: u64 = owners.values().map(|&n| u64::from(n)).sum();
        assert_eq!(s.refs(page), total);
        assert!(s
            .iter()
            .any(|p| p.iova == page && p.pa == *pa && p.refs == total));
    }
}
