//! "No lost dirty page" (issue 4): random sequences of maps, unmaps with and without bitmap,
//! pins, pinned-page writes, dma_rw, device DMA, group detach/attach and bitmap reads, in both
//! dirty modes, against a shadow record of every write. Every page written while tracking was on
//! must appear in a bitmap collected before STOP (or in the unmap's bitmap).
//!
//! `TYPE1_LONG=1` runs a long campaign.

mod common;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use type1::dirty::test_bit;
use type1::mm::AddressSpace;
use type1::{
    Access, ContainerConfig, DirtyMode, DmaUnmapHandler, GroupId, GroupSpec, Iova, Perm, UnmapFlags,
};

/// 16 slots of 16 pages each.
const SLOT: u64 = 16 * SZ_4K;
const SLOTS: u64 = 16;
const SPAN: u64 = SLOTS * SLOT;

#[derive(Debug)]
struct Quiet;
impl DmaUnmapHandler for Quiet {
    fn dma_unmap(&self, _iova: Iova, _length: u64) {}
}

#[derive(Debug, Clone)]
enum Op {
    Map(u64),
    Unmap(u64),
    UnmapWithBitmap(u64),
    Pin(u64),
    UnpinAll,
    PinnedWrite(u64),
    RwWrite(u64),
    DeviceWrite(u64),
    Get,
    DetachIommu,
    AttachIommu,
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0..SPAN / SZ_4K;
    prop_oneof![
        3 => (0..SLOTS).prop_map(Op::Map),
        1 => (0..SLOTS).prop_map(Op::Unmap),
        2 => (0..SLOTS).prop_map(Op::UnmapWithBitmap),
        2 => page.clone().prop_map(Op::Pin),
        1 => Just(Op::UnpinAll),
        2 => page.clone().prop_map(Op::PinnedWrite),
        3 => page.clone().prop_map(Op::RwWrite),
        5 => page.prop_map(Op::DeviceWrite),
        2 => Just(Op::Get),
        1 => Just(Op::DetachIommu),
        1 => Just(Op::AttachIommu),
    ]
}

fn run(mode: DirtyMode, ops: &[Op]) {
    let cfg = ContainerConfig {
        dirty_mode: mode,
        ..ContainerConfig::default()
    };
    let h = H::with(
        vec![GroupSpec::iommu(1), GroupSpec::emulated(9)],
        V2,
        None,
        cfg,
    );
    let dev =
        h.c.register_device(GroupId(9), Some(Arc::new(Quiet)))
            .unwrap();
    h.c.dirty_start().unwrap();
    // Pages written since they were last reported (page index → written).
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    // Pages the emulated device holds pinned (page → pa).
    let mut pins: BTreeMap<u64, u64> = BTreeMap::new();
    let mapped = |h: &H, page: u64| {
        h.c.mappings()
            .iter()
            .any(|m| page * SZ_4K >= m.iova.raw() && page * SZ_4K < m.iova.raw() + m.size)
    };
    let check_report =
        |pending: &mut BTreeSet<u64>, bm: &[u64], base_page: u64, npages: u64, what: &str| {
            for p in pending.clone() {
                if p >= base_page && p < base_page + npages {
                    assert!(
                        test_bit(bm, p - base_page),
                        "{what}: page {p} written but not reported ({mode:?})"
                    );
                    pending.remove(&p);
                }
            }
        };
    for op in ops {
        match *op {
            Op::Map(s) => {
                let _ = h.map(s * SLOT, RAM + s * SLOT, SLOT, RW);
            }
            Op::Unmap(s) => {
                // Release our pins in the slot first (as a device would, on notification).
                for (&p, _) in pins.clone().range(s * 16..(s + 1) * 16) {
                    h.c.unpin_pages(dev, Iova(p * SZ_4K), 1).unwrap();
                    pins.remove(&p);
                }
                if h.unmap(s * SLOT, SLOT, UnmapFlags::empty()).unwrap_or(0) > 0 {
                    // Discarded by the user's choice: the mapping is gone.
                    pending.retain(|&p| p / 16 != s);
                }
            }
            Op::UnmapWithBitmap(s) => {
                for (&p, _) in pins.clone().range(s * 16..(s + 1) * 16) {
                    h.c.unpin_pages(dev, Iova(p * SZ_4K), 1).unwrap();
                    pins.remove(&p);
                }
                if let Ok((n, bm)) = h.c.unmap_dma_dirty(Iova(s * SLOT), SLOT, SZ_4K) {
                    if n > 0 {
                        check_report(&mut pending, &bm, s * 16, 16, "unmap bitmap");
                    }
                }
                h.check();
            }
            Op::Pin(p) => {
                if let Ok(pa) = h.c.pin_pages(dev, Iova(p * SZ_4K), 1, Perm::RW) {
                    if pins.insert(p, pa[0].raw()).is_some() {
                        h.c.unpin_pages(dev, Iova(p * SZ_4K), 1).unwrap();
                    }
                }
            }
            Op::UnpinAll => {
                for &p in pins.keys() {
                    h.c.unpin_pages(dev, Iova(p * SZ_4K), 1).unwrap();
                }
                pins.clear();
            }
            Op::PinnedWrite(p) => {
                if let Some(&pa) = pins.get(&p) {
                    h.mem.write_phys(pa + 8, b"pinned").unwrap();
                    pending.insert(p);
                }
            }
            Op::RwWrite(p) => {
                if h.c
                    .dma_rw(dev, Iova(p * SZ_4K + 100), &mut [1, 2, 3], Access::Write)
                    .is_ok()
                {
                    pending.insert(p);
                }
            }
            Op::DeviceWrite(p) => {
                if let Ok(e) = h.c.dma_engine(GroupId(1)) {
                    if e.write(Iova(p * SZ_4K + 64), b"device").is_ok() {
                        assert!(mapped(&h, p));
                        pending.insert(p);
                    }
                }
            }
            Op::Get => {
                let bm = h.c.dirty_bitmap(Iova(0), SPAN, SZ_4K).unwrap();
                check_report(&mut pending, &bm, 0, SPAN / SZ_4K, "GET_BITMAP");
            }
            Op::DetachIommu => {
                if h.c.groups().contains(&GroupId(1)) {
                    h.step(|c| c.unset_group(GroupId(1))).unwrap();
                }
            }
            Op::AttachIommu => {
                let _ = h.step(|c| c.set_group(GroupSpec::iommu(1)));
            }
        }
    }
    let bm = h.c.dirty_bitmap(Iova(0), SPAN, SZ_4K).unwrap();
    check_report(&mut pending, &bm, 0, SPAN / SZ_4K, "final GET_BITMAP");
    assert!(
        pending.is_empty(),
        "written pages never reported: {pending:?}"
    );
    h.c.dirty_stop().unwrap();
    h.check();
}

fn cases() -> u32 {
    if std::env::var_os("TYPE1_LONG").is_some() {
        20_000
    } else {
        96
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
    #[test]
    fn no_lost_dirty_page_kernel_exact(ops in proptest::collection::vec(op(), 1..80)) {
        run(DirtyMode::KernelExact, &ops);
    }

    #[test]
    fn no_lost_dirty_page_precise(ops in proptest::collection::vec(op(), 1..80)) {
        run(DirtyMode::Precise, &ops);
    }
}
