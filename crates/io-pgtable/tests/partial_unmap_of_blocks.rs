//! A caller of the IOMMU API maps 8M at 2M-aligned addresses, which lays down four 2M blocks,
//! then unmaps the last 3M starting 5M in: one block goes whole and the one that holds the 5M
//! boundary must be split. Robin Murphy gave this example in the August 2018 review of
//! "iommu/io-pgtable-arm: add support for non-strict mode", to show that `iommu_unmap` callers
//! other than the DMA API may unmap part of a block. We split as `arm_lpae_split_blk_unmap` did
//! up to v6.12 (the kernel refuses since v6.13, 33729a5fc0ca; docs/SEMANTICS.md, "The page
//! table").

use std::sync::Arc;

use io_pgtable::testing::{RecordingFlushOps, TlbEvent};
use io_pgtable::{Config, Format, Gather, IoPageTable, Iova, PhysAddr, Prot};

const SZ_1M: u64 = 1 << 20;
const SZ_2M: u64 = 1 << 21;
const SZ_4K: u64 = 1 << 12;
const B4K: u64 = SZ_4K | SZ_2M | (1 << 30);

#[test]
fn map_8m_unmap_3m_at_5m_splits_one_block() {
    let ops = Arc::new(RecordingFlushOps::default());
    let pt = IoPageTable::new(&Config::new(Format::ArmLpaeS1, B4K, 48, 48), ops.clone()).unwrap();
    let iova = 0x40_0000_0000u64; // 1G-aligned, but 8M < 1G: 2M blocks
    let pa = 0x8000_0000u64;
    let prot = Prot::READ | Prot::WRITE | Prot::CACHE;
    pt.map(Iova(iova), PhysAddr(pa), 8 * SZ_1M, prot).unwrap();
    let s = pt.stats();
    assert_eq!(s.leaves, [0, 0, 4, 0], "four 2M blocks");
    let attrs_before = pt.walk(Iova(iova)).ptes[2] & io_pgtable::pte::LEAF_ATTR_MASK;

    ops.take();
    let mut g = Gather::new();
    assert_eq!(
        pt.unmap(Iova(iova + 5 * SZ_1M), 3 * SZ_1M, Some(&mut g)),
        3 * SZ_1M
    );
    pt.flush_ops().iotlb_sync(&g);

    // The first 5M still translate to the same physical addresses.
    for off in (0..5 * SZ_1M).step_by(4096) {
        assert_eq!(
            pt.iova_to_phys(Iova(iova + off + 7)),
            Some(PhysAddr(pa + off + 7))
        );
    }
    // The last 3M fault.
    for off in (5 * SZ_1M..8 * SZ_1M).step_by(4096) {
        assert_eq!(pt.iova_to_phys(Iova(iova + off)), None);
    }
    // Entry counts: blocks at 0 and 2M, a table at 4M holding 256 pages (4M..5M), 6M gone.
    let s = pt.stats();
    assert_eq!(s.leaves, [0, 0, 2, 256]);
    assert_eq!(s.tables, [1, 1, 1, 0]);
    // Split pages keep the block's attributes exactly.
    let page = pt.walk(Iova(iova + 4 * SZ_1M)).ptes[3];
    assert_eq!(page & io_pgtable::pte::LEAF_ATTR_MASK, attrs_before);
    // The TLB was told to drop the 1M hole of the split block (as 256 pages) and the 2M block.
    let events = ops.take();
    let adds: Vec<_> = events
        .iter()
        .filter_map(|e| match *e {
            TlbEvent::AddPage { iova, size } => Some((iova, size)),
            _ => None,
        })
        .collect();
    let mut expected: Vec<_> = (0..256)
        .map(|i| (iova + 5 * SZ_1M + i * SZ_4K, SZ_4K))
        .collect();
    expected.push((iova + 6 * SZ_1M, SZ_2M));
    assert_eq!(adds, expected);
    // Every invalidated byte is covered by a sync (the page-size change forced one midway).
    let syncs: Vec<_> = events
        .iter()
        .filter_map(|e| match *e {
            TlbEvent::Sync { start, end, .. } => Some((start, end)),
            _ => None,
        })
        .collect();
    assert_eq!(
        syncs,
        vec![
            (iova + 5 * SZ_1M, iova + 6 * SZ_1M - 1),
            (iova + 6 * SZ_1M, iova + 8 * SZ_1M - 1)
        ]
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, TlbEvent::FlushWalk { .. })),
        "no table freed"
    );
}
