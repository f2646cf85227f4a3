//! VFIO_IOMMU_MAP_DMA (`vfio_iommu_type1_map_dma`, `vfio_dma_do_map`) and locked-memory
//! accounting (`vfio_pin_pages_remote`, `vfio_lock_acct`), v6.18.

mod common;
use common::*;
use libc::{EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM, ENOSPC, EOVERFLOW};
use type1::{
    ContainerConfig, Error, GroupSpec, Iova, MapFlags, PhysAddr, UnmapFlags, Vaddr, Version,
};

#[test]
fn map_then_translate_through_the_domain() {
    let h = H::iommu(V2);
    h.map(0x10_0000, RAM, 16 * SZ_4K, RW).unwrap();
    assert_eq!(
        h.c.iova_to_phys(Iova(0x10_0123)),
        Some(PhysAddr(RAM_PA + 0x123))
    );
    assert_eq!(h.mm.locked_pages(), 16);
    assert_eq!(h.c.info().unwrap().dma_avail, 65534);
}

/// `vfio_dma_do_map`, v6.18.
#[test]
fn size_zero_is_einval_before_overflow() {
    let h = H::iommu(V2);
    assert_eq!(errno(h.map(u64::MAX, RAM, 0, RW)), EINVAL);
    assert_eq!(err(h.map(0, RAM, 0, RW)), Error::ZeroSize);
}

/// `vfio_dma_do_map`, v6.18 (`EINVAL`, after the alignment check, before v6.18).
#[test]
fn overflow_is_eoverflow_before_alignment() {
    let h = H::iommu(V2);
    // Misaligned *and* wrapping: v6.18 checks the wrap first.
    assert_eq!(errno(h.map(u64::MAX - 0x7ff, RAM, 0x1800, RW)), EOVERFLOW);
    assert_eq!(errno(h.map(0, u64::MAX - 0xfff, 0x2000, RW)), EOVERFLOW);
}

/// `vfio_dma_do_map`, v6.18: protection from the READ and WRITE flags; none without VADDR is
/// `EINVAL`.
#[test]
fn read_only_and_write_only_are_legal_no_access_is_einval() {
    let h = H::iommu(V2);
    assert_eq!(
        err(h.map(0, RAM, SZ_4K, MapFlags::empty())),
        Error::InvalidProtection
    );
    assert_eq!(
        err(h.map(0, RAM, SZ_4K, MapFlags::READ | MapFlags::VADDR)),
        Error::InvalidProtection
    );
    // Write-only and read-only are both legal.
    h.map(0, RAM, SZ_4K, MapFlags::WRITE).unwrap();
    h.map(SZ_4K, RAM, SZ_4K, MapFlags::READ).unwrap();
}

/// `vfio_dma_do_map`, v6.18: size, iova and vaddr aligned to the smallest IOMMU page size.
#[test]
fn alignment_to_the_minimum_page_size() {
    let h = H::iommu(V2);
    for (iova, vaddr, size) in [(0x800, RAM, SZ_4K), (0, RAM + 8, SZ_4K), (0, RAM, 0x1800)] {
        assert_eq!(errno(h.map(iova, vaddr, size, RW)), EINVAL);
    }
}

/// `vfio_dma_do_map`, v6.18: overlap, then the mapping limit (`dma_entry_limit`), then the IOVA
/// list.
#[test]
fn eexist_before_enospc_before_iova_range() {
    let cfg = ContainerConfig {
        dma_entry_limit: 2,
        ..ContainerConfig::default()
    };
    let h = H::with(vec![GroupSpec::iommu(1)], V2, None, cfg);
    h.map(0, RAM, SZ_4K, RW).unwrap();
    h.map(SZ_2M, RAM, SZ_4K, RW).unwrap();
    // Exact duplicate and partial overlap: EEXIST, even with no slot left.
    assert_eq!(errno(h.map(0, RAM, SZ_4K, RW)), EEXIST);
    assert_eq!(errno(h.map(SZ_2M - SZ_4K, RAM, 2 * SZ_4K, RW)), EEXIST);
    // Touching neighbours are fine, but the limit is reached: ENOSPC.
    assert_eq!(errno(h.map(SZ_4K, RAM, SZ_4K, RW)), ENOSPC);
    // ENOSPC comes before the IOVA-range check (the MSI window is reserved).
    assert_eq!(errno(h.map(0xfee0_0000, RAM, SZ_4K, RW)), ENOSPC);
    h.unmap(0, SZ_4K, UnmapFlags::empty()).unwrap();
    assert_eq!(
        err(h.map(0xfee0_0000, RAM, SZ_4K, RW)),
        Error::OutsideIovaRange {
            iova: 0xfee0_0000,
            size: SZ_4K
        }
    );
}

/// `vfio_iommu_iova_dma_valid`, v6.18.
#[test]
fn iova_range_must_lie_in_one_valid_node() {
    let h = H::iommu(V2);
    // Straddling the MSI window, and beyond the 48-bit aperture.
    assert_eq!(
        errno(h.map(0xfed0_0000, RAM, 0x20_0000 + SZ_4K, RW)),
        EINVAL
    );
    assert_eq!(errno(h.map(1 << 48, RAM, SZ_4K, RW)), EINVAL);
    h.map(0xfef0_0000, RAM, SZ_4K, RW).unwrap();
}

/// `vfio_pin_map_dma`, v6.18: a pin error removes the whole mapping (`vfio_remove_dma`).
#[test]
fn pin_faults_are_efault_and_roll_back() {
    let h = H::iommu(V2);
    // Unmapped vaddr.
    assert_eq!(
        err(h.map(0, 0x1000_0000, SZ_4K, RW)),
        Error::Fault { vaddr: 0x1000_0000 }
    );
    // Writable mapping of read-only memory; a read-only mapping of it is fine.
    assert_eq!(errno(h.map(0, RO, SZ_4K, RW)), EFAULT);
    h.map(0, RO, SZ_4K, MapFlags::READ).unwrap();
    // A range running off the end of RAM: the first part is pinned and mapped, then rolled back.
    assert_eq!(
        err(h.map(SZ_1G, RAM + RAM_LEN - 4 * SZ_4K, 8 * SZ_4K, RW)),
        Error::Fault {
            vaddr: RAM + RAM_LEN
        }
    );
}

#[test]
fn failure_injected_at_page_k_rolls_back_everything() {
    let h = H::iommu(V2);
    for k in [0, 1, 7, 255] {
        h.mem.fail_after_pages(Some(k));
        assert_eq!(errno(h.map(0, SCATTERED, 256 * SZ_4K, RW)), EFAULT, "k={k}");
        h.mem.fail_after_pages(None);
    }
    h.map(0, SCATTERED, 256 * SZ_4K, RW).unwrap();
}

/// `vfio_pin_pages_remote` against `RLIMIT_MEMLOCK`, v6.18.
#[test]
fn locked_memory_limit_is_enomem_with_rollback() {
    let h = H::with(
        vec![GroupSpec::iommu(1)],
        V2,
        Some(64 * SZ_4K),
        ContainerConfig::default(),
    );
    h.map(0, RAM, 60 * SZ_4K, RW).unwrap();
    assert!(matches!(
        h.map(SZ_1G, RAM, 8 * SZ_4K, RW),
        Err(Error::LockedMemoryLimit {
            locked: 60,
            more: 8,
            limit: 64
        })
    ));
    // Scattered memory: the limit is hit partway, after some runs were charged: all undone.
    assert_eq!(errno(h.map(SZ_1G, SCATTERED, 8 * SZ_4K, RW)), ENOMEM);
    h.map(SZ_1G, RAM, 4 * SZ_4K, RW).unwrap();
    // Reserved (PFNMAP) pages are never charged.
    h.map(2 * SZ_1G, BAR, 64 * SZ_4K, RW).unwrap();
    assert_eq!(h.mm.locked_pages(), 64);
    // ... nor counted as pinned: the snapshot tells pinned and reserved pages apart.
    let bar =
        h.c.mappings()
            .into_iter()
            .find(|m| m.iova == Iova(2 * SZ_1G))
            .unwrap();
    assert_eq!((bar.iommu_pinned_pages, bar.iommu_reserved_pages), (0, 64));
    let ram =
        h.c.mappings()
            .into_iter()
            .find(|m| m.iova == Iova(SZ_1G))
            .unwrap();
    assert_eq!((ram.iommu_pinned_pages, ram.iommu_reserved_pages), (4, 0));
}

/// `dma->lock_cap` in `__account_locked_vm`, v6.18.
#[test]
fn lock_capability_exempts_from_the_limit() {
    use std::sync::Arc;
    use type1::mm::{LockCapability, Mm};
    let mem = fake_memory();
    let mm = Arc::new(Mm::new(
        Box::new(mem.clone()),
        Some(SZ_4K),
        LockCapability::Unlimited,
    ));
    let c = type1::Container::new(ContainerConfig::default(), mm.clone());
    c.set_group(GroupSpec::iommu(1)).unwrap();
    c.set_iommu(Version::V2).unwrap();
    c.map_dma(&type1::MapDma {
        vaddr: Vaddr(RAM),
        iova: Iova(0),
        size: 100 * SZ_4K,
        flags: RW,
    })
    .unwrap();
    assert_eq!(mm.locked_pages(), 100);
    c.check_invariants().unwrap();
}

/// `vfio_dma_do_map`, v6.18: without an IOMMU domain the mapping is only recorded.
#[test]
fn without_a_domain_nothing_is_pinned_or_validated() {
    let h = H::emulated(V2);
    // vaddr 0 is not mapped, but nothing looks at it without an IOMMU domain.
    h.map(0, 0, 16 * SZ_4K, RW).unwrap();
    assert_eq!(h.mm.locked_pages(), 0);
    assert_eq!(h.mem.pinned_pages(), 0);
    assert!(!h.c.mappings()[0].iommu_mapped);
}

/// The v6.18-rc4 overflow series ("vfio/type1: handle DMA map/unmap up to the addressable
/// limit").
#[test]
fn mappings_at_the_top_of_the_address_space() {
    // No IOVA restriction without a domain, so the last page of the space can be mapped.
    let h = H::emulated(V2);
    let top = u64::MAX - SZ_4K + 1;
    h.map(top, RAM, SZ_4K, RW).unwrap();
    assert_eq!(
        errno(h.map(top, RAM, SZ_4K, RW)),
        EEXIST,
        "found despite ending at 2^64-1"
    );
    assert_eq!(errno(h.map(top - SZ_4K, RAM, 2 * SZ_4K, RW)), EEXIST);
    assert_eq!(errno(h.map(top, RAM, 2 * SZ_4K, RW)), EOVERFLOW);
    assert_eq!(h.unmap(top, SZ_4K, UnmapFlags::empty()), Ok(SZ_4K));
}

/// `VFIO_DMA_MAP_FLAG_VADDR` in `vfio_dma_do_map`, v6.18.
#[test]
fn vaddr_update_rules() {
    let h = H::iommu(V2);
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    let v = MapFlags::VADDR;
    assert_eq!(errno(h.map(SZ_1G, RAM, SZ_4K, v)), ENOENT);
    assert_eq!(
        errno(h.map(0, RAM, 4 * SZ_4K, v)),
        EINVAL,
        "vaddr still valid"
    );
    assert_eq!(h.unmap(0, 4 * SZ_4K, UnmapFlags::VADDR), Ok(4 * SZ_4K));
    assert_eq!(
        errno(h.map(0, RAM, 2 * SZ_4K, v)),
        EINVAL,
        "not the whole mapping"
    );
    // Still mapped and pinned while the vaddr is invalid.
    assert_eq!(h.c.iova_to_phys(Iova(0)), Some(PhysAddr(RAM_PA)));
    h.map(0, RAM + SZ_2M, 4 * SZ_4K, v).unwrap();
    let m = h.c.mappings()[0];
    assert_eq!((m.vaddr, m.vaddr_invalid), (Vaddr(RAM + SZ_2M), false));
    // Nothing was re-pinned: the old physical pages stay mapped.
    assert_eq!(h.c.iova_to_phys(Iova(0)), Some(PhysAddr(RAM_PA)));
}

/// `vfio_change_dma_owner` (v6.3+).
#[test]
fn vaddr_update_from_another_owner_moves_the_charge() {
    use std::sync::Arc;
    use type1::mm::{LockCapability, Mm};
    let h = H::iommu(V2);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.unmap(0, 8 * SZ_4K, UnmapFlags::VADDR).unwrap();
    let small = Arc::new(Mm::new(
        Box::new(fake_memory()),
        Some(4 * SZ_4K),
        LockCapability::Limited,
    ));
    h.c.set_current_mm(small.clone());
    assert_eq!(errno(h.map(0, RAM, 8 * SZ_4K, MapFlags::VADDR)), ENOMEM);
    assert_eq!(h.mm.locked_pages(), 8);
    let big = Arc::new(Mm::new(
        Box::new(fake_memory()),
        None,
        LockCapability::Limited,
    ));
    h.c.set_current_mm(big.clone());
    h.c.map_dma(&type1::MapDma {
        vaddr: Vaddr(RAM),
        iova: Iova(0),
        size: 8 * SZ_4K,
        flags: MapFlags::VADDR,
    })
    .unwrap();
    assert_eq!((h.mm.locked_pages(), big.locked_pages()), (0, 8));
    h.c.check_invariants().unwrap();
    // The pins still belong to the original address space and come back to it on unmap.
    h.c.unmap_dma(&type1::UnmapDma {
        iova: Iova(0),
        size: 8 * SZ_4K,
        flags: UnmapFlags::empty(),
        bitmap_pgsize: 0,
    })
    .unwrap();
    assert_eq!(big.locked_pages(), 0);
    assert_eq!(h.mem.pinned_pages(), 0);
}

#[test]
fn contiguous_memory_is_pinned_and_mapped_as_runs() {
    // 1 TiB of contiguous memory: one pinned run, 1024 1G blocks, no per-page work.
    let mem = std::sync::Arc::new(type1::mm::FakeMemory::new());
    let va = 0x4000_0000_0000u64;
    mem.add_ram(va, 1 << 40, 1 << 40);
    let mm = std::sync::Arc::new(type1::mm::Mm::new(
        Box::new(mem.clone()),
        None,
        type1::mm::LockCapability::Limited,
    ));
    let c = type1::Container::new(ContainerConfig::default(), mm.clone());
    c.set_group(GroupSpec::iommu(1)).unwrap();
    c.set_iommu(Version::V2).unwrap();
    let t = std::time::Instant::now();
    c.map_dma(&type1::MapDma {
        vaddr: Vaddr(va),
        iova: Iova(1 << 40),
        size: 1 << 40,
        flags: RW,
    })
    .unwrap();
    assert_eq!(mem.pinned_runs(), 1);
    assert_eq!(mm.locked_pages(), (1u64 << 40) / SZ_4K);
    let leaves = &c.snapshot().domains[0];
    assert_eq!(leaves.len(), 1024);
    assert!(leaves.iter().all(|l| l.1 == SZ_1G));
    assert_eq!(
        c.iova_to_phys(Iova((1 << 40) + 0x1234_5678)),
        Some(PhysAddr((1 << 40) + 0x1234_5678))
    );
    c.unmap_dma(&type1::UnmapDma {
        iova: Iova(0),
        size: 0,
        flags: UnmapFlags::ALL,
        bitmap_pgsize: 0,
    })
    .unwrap();
    assert_eq!(mem.pinned_pages(), 0);
    // Not a speed test, only a guard against per-page work: well under a second in debug.
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}
