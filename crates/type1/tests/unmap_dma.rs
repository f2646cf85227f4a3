//! VFIO_IOMMU_UNMAP_DMA: `vfio_iommu_type1_unmap_dma` and `vfio_dma_do_unmap`, v6.18.

mod common;
use common::*;
use libc::{EBUSY, EINVAL, EOVERFLOW};
use type1::{Error, GroupSpec, Iova, MapFlags, UnmapFlags};

const NONE: UnmapFlags = UnmapFlags::empty();

/// Mappings A = [0, 16K), B = [16K, 32K), C = [64K, 80K).
fn three(ty: u64) -> H {
    let h = H::iommu(ty);
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.map(4 * SZ_4K, RAM + SZ_2M, 4 * SZ_4K, RW).unwrap();
    h.map(16 * SZ_4K, RAM + 2 * SZ_2M, 4 * SZ_4K, RW).unwrap();
    h
}

#[test]
fn exact_cover_with_gaps_removes_whole_mappings_v1_and_v2() {
    for ty in [V1, V2] {
        let h = three(ty);
        assert_eq!(h.unmap(0, 32 * SZ_4K, NONE), Ok(12 * SZ_4K));
        assert!(h.iovas().is_empty());
        assert_eq!(h.mem.pinned_pages(), 0);
    }
}

#[test]
fn interior_start_v2_einval_v1_size_zero() {
    let h = three(V2);
    assert_eq!(
        err(h.unmap(SZ_4K, 32 * SZ_4K, NONE)),
        Error::Bisects { iova: SZ_4K }
    );
    let h = three(V1);
    // v1: success with size 0, nothing removed, even though B and C lie inside the range.
    assert_eq!(h.unmap(SZ_4K, 32 * SZ_4K, NONE), Ok(0));
    assert_eq!(h.iovas().len(), 3);
}

#[test]
fn end_inside_a_mapping_v2_einval_v1_removes_whole_mappings() {
    let h = three(V2);
    assert_eq!(
        err(h.unmap(0, 6 * SZ_4K, NONE)),
        Error::Bisects { iova: 6 * SZ_4K }
    );
    let h = three(V1);
    // v1: every mapping whose first iova is in the range goes whole: more than requested.
    assert_eq!(h.unmap(0, 6 * SZ_4K, NONE), Ok(8 * SZ_4K));
    assert_eq!(h.iovas(), vec![(16 * SZ_4K, 4 * SZ_4K)]);
    // Starting at a mapping's first iova but ending inside it.
    assert_eq!(h.unmap(16 * SZ_4K, SZ_4K, NONE), Ok(4 * SZ_4K));
}

#[test]
fn no_mapping_in_range_is_success_size_zero() {
    for ty in [V1, V2] {
        let h = three(ty);
        assert_eq!(h.unmap(SZ_1G, SZ_4K, NONE), Ok(0));
    }
}

/// `VFIO_DMA_UNMAP_FLAG_ALL` in `vfio_dma_do_unmap`, v6.18.
#[test]
fn unmap_all_needs_zero_iova_and_size_and_removes_everything() {
    for ty in [V1, V2] {
        let h = three(ty);
        assert_eq!(errno(h.unmap(SZ_4K, 0, UnmapFlags::ALL)), EINVAL);
        assert_eq!(errno(h.unmap(0, SZ_4K, UnmapFlags::ALL)), EINVAL);
        assert_eq!(h.unmap(0, 0, UnmapFlags::ALL), Ok(12 * SZ_4K));
        assert_eq!(h.c.info().unwrap().dma_avail, 65535);
    }
}

/// The argument checks of `vfio_dma_do_unmap` in its order (v6.18: `EOVERFLOW` for a wrap).
#[test]
fn argument_checks_in_order() {
    let h = three(V2);
    assert_eq!(
        errno(h.unmap(0x800, 0, NONE)),
        EINVAL,
        "iova alignment first"
    );
    assert_eq!(err(h.unmap(0, 0, NONE)), Error::ZeroSize);
    assert_eq!(errno(h.unmap(0, 0x1800, NONE)), EINVAL);
    assert_eq!(errno(h.unmap(u64::MAX - 0xfff, 0x2000, NONE)), EOVERFLOW);
    // The largest expressible non-ALL unmap is fine.
    assert_eq!(h.unmap(0, u64::MAX - 0xfff, NONE), Ok(12 * SZ_4K));
}

/// `vfio_dma_do_unmap`, v6.18: GET_DIRTY_BITMAP needs dirty tracking started.
#[test]
fn get_dirty_bitmap_without_tracking_is_einval() {
    let h = three(V2);
    assert_eq!(
        h.c.unmap_dma_dirty(Iova(0), 4 * SZ_4K, SZ_4K)
            .map(|(n, _)| n),
        Err(Error::NotTracking)
    );
}

/// `VFIO_DMA_UNMAP_FLAG_VADDR` in `vfio_dma_do_unmap`, v6.18: an already invalid mapping rolls
/// back the ones invalidated before it.
#[test]
fn vaddr_invalidation_and_rollback() {
    let h = three(V2);
    assert_eq!(
        h.unmap(4 * SZ_4K, 4 * SZ_4K, UnmapFlags::VADDR),
        Ok(4 * SZ_4K)
    );
    // Mappings stay in the IOMMU and stay pinned.
    assert_eq!(
        h.c.iova_to_phys(Iova(4 * SZ_4K)),
        Some(type1::PhysAddr(RAM_PA + SZ_2M))
    );
    assert_eq!(h.mem.pinned_pages(), 12);
    // A range reaching the invalid B after A: A's invalidation is rolled back, EINVAL.
    assert_eq!(
        err(h.unmap(0, 32 * SZ_4K, UnmapFlags::VADDR)),
        Error::VaddrAlreadyInvalid { iova: 4 * SZ_4K }
    );
    assert!(!h.c.mappings()[0].vaddr_invalid);
    // ALL|VADDR is allowed.
    h.map(4 * SZ_4K, RAM + SZ_2M, 4 * SZ_4K, MapFlags::VADDR)
        .unwrap();
    assert_eq!(
        h.unmap(0, 0, UnmapFlags::ALL | UnmapFlags::VADDR),
        Ok(12 * SZ_4K)
    );
    assert!(h.c.mappings().iter().all(|m| m.vaddr_invalid));
    // While vaddrs are invalid, attaching a group is EBUSY (the first check of
    // `vfio_iommu_type1_attach_group` since v6.3).
    assert_eq!(errno(h.step(|c| c.set_group(GroupSpec::iommu(2)))), EBUSY);
    // Unmapping invalid mappings is fine.
    assert_eq!(h.unmap(0, 0, UnmapFlags::ALL), Ok(12 * SZ_4K));
}

#[test]
fn v1_vaddr_follows_the_v1_rule() {
    let h = three(V1);
    assert_eq!(h.unmap(SZ_4K, 32 * SZ_4K, UnmapFlags::VADDR), Ok(0));
    assert!(h.c.mappings().iter().all(|m| !m.vaddr_invalid));
}

/// `vfio_dma_do_unmap` since v6.3: the emulated-group check comes before any argument check.
#[test]
fn vaddr_with_emulated_groups_is_ebusy_before_argument_checks() {
    let h = H::with(
        vec![GroupSpec::iommu(1), GroupSpec::emulated(2)],
        V2,
        None,
        type1::ContainerConfig::default(),
    );
    assert_eq!(
        err(h.unmap(0x800, 0, UnmapFlags::VADDR)),
        Error::VaddrWithEmulatedGroups
    );
}

#[test]
fn lazy_invalidation_unpins_only_after_the_flush() {
    use io_pgtable::testing::ManualClock;
    use io_pgtable::{FlushQueueConfig, InvalidationPolicy};
    use std::time::Duration;
    let clock = std::sync::Arc::new(ManualClock::default());
    let cfg = type1::ContainerConfig {
        invalidation: InvalidationPolicy::Lazy(FlushQueueConfig::default()),
        clock: clock.clone(),
        ..type1::ContainerConfig::default()
    };
    let h = H::with(vec![GroupSpec::iommu(1)], V2, None, cfg);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    assert_eq!(h.unmap(0, 8 * SZ_4K, NONE), Ok(8 * SZ_4K));
    assert_eq!(
        h.mem.pinned_pages(),
        8,
        "still pinned: the IOTLB may hold them"
    );
    assert_eq!(h.mm.pending_pages(), 8);
    clock.advance(Duration::from_millis(10));
    // Any later operation runs the flush-queue timer.
    h.map(SZ_1G, RAM, SZ_4K, RW).unwrap();
    assert_eq!(h.mm.pending_pages(), 0);
    assert_eq!(h.mem.pinned_pages(), 1);
    h.unmap(SZ_1G, SZ_4K, NONE).unwrap();
    h.c.flush();
    assert_eq!(h.mem.pinned_pages(), 0);
    h.check();
}

/// The typed `unmap_dma` has no bitmap to fill: a GET_DIRTY_BITMAP request is refused before
/// anything is removed, so no dirty page is lost (the byte-level ioctl and `unmap_dma_dirty`
/// carry the bitmap `vfio_dma_do_unmap`, v6.18, fills).
#[test]
fn typed_unmap_asking_for_a_bitmap_without_one_is_einval_and_keeps_the_mapping() {
    let h = three(V2);
    h.c.dirty_start().unwrap();
    let r = h.c.unmap_dma(&type1::UnmapDma {
        iova: Iova(0),
        size: 4 * SZ_4K,
        flags: UnmapFlags::GET_DIRTY_BITMAP,
        bitmap_pgsize: SZ_4K,
    });
    assert!(matches!(r, Err(Error::InvalidBitmap { .. })), "{r:?}");
    assert_eq!(r.unwrap_err().errno(), EINVAL);
    assert_eq!(h.iovas().len(), 3, "nothing was removed");
    let (n, bm) = h.c.unmap_dma_dirty(Iova(0), 4 * SZ_4K, SZ_4K).unwrap();
    assert_eq!(n, 4 * SZ_4K);
    assert_eq!(
        bm[0] & 0xf,
        0xf,
        "the mapping's pages are reported when a bitmap is given"
    );
}
