//! Fault injection at every failure point (issue 6): pin failures and page-table and bitmap
//! allocation failures in MAP, attach (replay) and dirty START. Each must fail with the kernel's
//! errno and leave no trace (the harness compares the full snapshot and the pin ledger).

mod common;
use std::sync::Arc;

use common::*;
use libc::{EFAULT, ENOMEM};
use type1::{DmaUnmapHandler, FaultPlan, GroupId, GroupSpec, Iova, Perm, Vaddr};

/// Runs `op` with failures injected after 0, 1, 2, ... successes until it succeeds; every
/// failure must be `errno` with nothing changed. Returns how many failure points there were.
fn sweep(
    h: &H,
    inject: &dyn Fn(&H, Option<u64>),
    errno_want: i32,
    op: &dyn Fn(&H) -> type1::Result<()>,
) -> u64 {
    for k in 0..10_000 {
        inject(h, Some(k));
        match h.step(|_| op(h)) {
            Ok(()) => {
                inject(h, None);
                return k;
            }
            Err(e) => assert_eq!(e.errno(), errno_want, "failure point {k}: {e}"),
        }
    }
    panic!("never succeeded");
}

fn tables(h: &H, n: Option<u64>) {
    h.c.set_fault_plan(FaultPlan {
        tables: n,
        bitmaps: None,
    });
}

fn bitmaps(h: &H, n: Option<u64>) {
    h.c.set_fault_plan(FaultPlan {
        tables: None,
        bitmaps: n,
    });
}

fn pins(h: &H, n: Option<u64>) {
    h.mem.fail_after_pages(n);
}

#[test]
fn map_page_table_allocation_fails_at_every_point() {
    // 8 MiB of 4K pages (pa one page off 2M) ending at 1G needs an L1, an L2 and four L3
    // tables. A failed attempt leaves empty intermediate tables in place (as the kernel does),
    // so every failure point gets a fresh container.
    let map = |h: &H| {
        h.c.map_dma(&type1::MapDma {
            vaddr: Vaddr(RAM + SZ_4K),
            iova: Iova(SZ_1G - 4 * SZ_2M),
            size: 8 << 20,
            flags: RW,
        })
    };
    let mut k = 0;
    loop {
        let h = H::iommu(V2);
        tables(&h, Some(k));
        match h.step(|_| map(&h)) {
            Ok(()) => break,
            Err(e) => assert_eq!(e.errno(), ENOMEM, "point {k}"),
        }
        k += 1;
    }
    assert_eq!(k, 6, "L1 + L2 + 4 L3 tables");
}

#[test]
fn map_pin_fails_at_every_page() {
    let h = H::iommu(V2);
    let points = sweep(&h, &pins, EFAULT, &|h| {
        h.c.map_dma(&type1::MapDma {
            vaddr: Vaddr(SCATTERED),
            iova: Iova(0),
            size: 64 * SZ_4K,
            flags: RW,
        })
    });
    assert_eq!(points, 64);
}

#[test]
fn replay_fails_at_every_pin_and_table_allocation() {
    let h = H::emulated(V2);
    h.map(0, SCATTERED, 32 * SZ_4K, RW).unwrap();
    h.map(SZ_1G, RAM + SZ_4K, 4 << 20, RW).unwrap();
    let attach = |h: &H| {
        let r = h.c.set_group(GroupSpec::iommu(5));
        if r.is_ok() {
            h.c.unset_group(GroupId(5)).unwrap();
        }
        r
    };
    assert_eq!(sweep(&h, &pins, EFAULT, &attach), 32 + 1024);
    // Table allocation: the new domain gets the plan when it is created.
    let points = sweep(&h, &tables, ENOMEM, &attach);
    assert!(points >= 4, "{points}");
}

#[test]
fn dirty_start_fails_at_every_bitmap_allocation() {
    let h = H::iommu(V2);
    for i in 0..6 {
        h.map(i * SZ_2M, RAM, 4 * SZ_4K, RW).unwrap();
    }
    let start = |h: &H| h.c.dirty_start();
    assert_eq!(sweep(&h, &bitmaps, ENOMEM, &start), 6);
    assert!(h.c.dirty_tracking());
    // Failed STARTs left tracking off: the first START after them found it off.
}

#[test]
fn map_while_tracking_fails_on_bitmap_allocation() {
    let h = H::iommu(V2);
    h.c.dirty_start().unwrap();
    let map = |h: &H| {
        h.c.map_dma(&type1::MapDma {
            vaddr: Vaddr(RAM),
            iova: Iova(0),
            size: 16 * SZ_4K,
            flags: RW,
        })
    };
    assert_eq!(sweep(&h, &bitmaps, ENOMEM, &map), 1);
}

#[derive(Debug)]
struct Quiet;
impl DmaUnmapHandler for Quiet {
    fn dma_unmap(&self, _iova: Iova, _length: u64) {}
}

#[test]
fn pin_pages_fails_at_every_page_without_a_domain() {
    let h = H::emulated(V2);
    let dev =
        h.c.register_device(GroupId(1), Some(Arc::new(Quiet)))
            .unwrap();
    h.map(0, SCATTERED, 32 * SZ_4K, RW).unwrap();
    // Page 3 is already pinned: the sweep must also undo the extra reference on failure.
    h.c.pin_pages(dev, Iova(3 * SZ_4K), 1, Perm::READ).unwrap();
    let pin = |h: &H| h.c.pin_pages(dev, Iova(0), 16, Perm::RW).map(|_| ());
    assert_eq!(sweep(&h, &pins, EFAULT, &pin), 15);
    h.c.unpin_pages(dev, Iova(0), 16).unwrap();
    h.c.unpin_pages(dev, Iova(3 * SZ_4K), 1).unwrap();
    assert_eq!(h.mem.pinned_pages(), 0);
}
