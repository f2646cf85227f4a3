//! Groups and domains: attach, reuse, replay, detach, IOVA list (`vfio_iommu_type1_attach_group`,
//! `vfio_iommu_replay`, `vfio_iommu_type1_detach_group`, v6.18).

mod common;
use common::*;
use libc::{EINVAL, ENOMEM, EPERM};
use type1::group::{Aperture, IommuDesc, MsiIsolation, ReservedRegion, ResvKind};
use type1::Iova;
use type1::{ContainerConfig, Error, GroupId, GroupKind, GroupSpec, Interrupts, UnmapFlags};

fn iommu_group(id: u32, desc: IommuDesc) -> GroupSpec {
    GroupSpec {
        id: GroupId(id),
        kind: GroupKind::Iommu(desc),
    }
}

fn other_driver() -> IommuDesc {
    IommuDesc {
        ops: 2,
        ..IommuDesc::x86_default()
    }
}

/// `vfio_iommu_type1_attach_group`, v6.18: an emulated group only joins the emulated list.
#[test]
fn emulated_groups_change_nothing() {
    let h = H::emulated(V2);
    h.map(0, RAM, SZ_4K, RW).unwrap();
    let before = h.c.info().unwrap();
    h.step(|c| c.set_group(GroupSpec::emulated(2))).unwrap();
    assert_eq!(h.c.info().unwrap(), before);
    assert_eq!(
        err(h.step(|c| c.set_group(GroupSpec::emulated(2)))),
        Error::GroupAttached { group: 2 }
    );
}

/// `vfio_iommu_type1_attach_group`, v6.18: same ops and coherency reuse an existing domain.
#[test]
fn compatible_groups_share_a_domain() {
    let h = H::iommu(V2);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.step(|c| c.set_group(GroupSpec::iommu(2))).unwrap();
    assert_eq!(h.c.domain_count(), 1);
    assert_eq!(h.mem.pinned_pages(), 8, "no replay, no new pins");
}

/// `vfio_iommu_replay`, v6.18.
#[test]
fn a_new_domain_gets_every_mapping_replayed() {
    let h = H::iommu(V2);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.map(SZ_1G, SCATTERED, 16 * SZ_4K, MapFlags_R).unwrap();
    h.step(|c| c.set_group(iommu_group(2, other_driver())))
        .unwrap();
    assert_eq!(h.c.domain_count(), 2);
    // Invariants (checked by step) compare both page tables with the mappings; pins unchanged.
    assert_eq!(h.mem.pinned_pages(), 24);
    // Removing one domain leaves the other with everything.
    h.step(|c| c.unset_group(GroupId(1))).unwrap();
    assert_eq!(h.c.domain_count(), 1);
    assert_eq!(
        h.c.iova_to_phys(Iova(SZ_4K)),
        Some(type1::PhysAddr(RAM_PA + SZ_4K))
    );
}

#[allow(non_upper_case_globals)]
const MapFlags_R: type1::MapFlags = type1::MapFlags::READ;

/// `vfio_iommu_replay`, v6.18: mappings made without a domain are pinned and charged now.
#[test]
fn first_domain_pins_mappings_made_without_one() {
    let h = H::emulated(V2);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.map(SZ_1G, BAR, 4 * SZ_4K, RW).unwrap();
    assert_eq!(h.mem.pinned_pages(), 0);
    h.step(|c| c.set_group(GroupSpec::iommu(2))).unwrap();
    assert_eq!(h.mem.pinned_pages(), 8);
    assert_eq!(h.mm.locked_pages(), 8, "reserved pages are not charged");
    assert!(h.c.mappings().iter().all(|m| m.iommu_mapped));
}

/// `vfio_iommu_replay` unwinds on error ("vfio/type1: Add proper error unwind for
/// vfio_iommu_replay()", v5.9).
#[test]
fn failed_replay_unwinds_completely() {
    // A mapping whose vaddr was never valid fails the replay with EFAULT...
    let h = H::emulated(V2);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.map(SZ_1G, 0x1000_0000, 4 * SZ_4K, RW).unwrap();
    assert_eq!(
        errno(h.step(|c| c.set_group(GroupSpec::iommu(2)))),
        libc::EFAULT
    );
    assert_eq!(h.c.domain_count(), 0);
    // ... and a locked-memory limit fails it with ENOMEM, after pinning the first mapping.
    let h = H::with(
        vec![GroupSpec::emulated(1)],
        V2,
        Some(10 * SZ_4K),
        ContainerConfig::default(),
    );
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.map(SZ_1G, RAM, 8 * SZ_4K, RW).unwrap();
    assert_eq!(errno(h.step(|c| c.set_group(GroupSpec::iommu(2)))), ENOMEM);
    assert_eq!(h.mm.locked_pages(), 0);
    // And failure injected at every page of a scattered mapping.
    let h = H::emulated(V2);
    h.map(0, SCATTERED, 16 * SZ_4K, RW).unwrap();
    for k in 0..16 {
        h.mem.fail_after_pages(Some(k));
        assert_eq!(
            errno(h.step(|c| c.set_group(GroupSpec::iommu(2)))),
            libc::EFAULT
        );
    }
    h.mem.fail_after_pages(None);
    h.step(|c| c.set_group(GroupSpec::iommu(2))).unwrap();
}

/// `vfio_iommu_aper_conflict` in `vfio_iommu_type1_attach_group`, v6.18.
#[test]
fn mappings_outside_a_new_aperture_are_einval() {
    let h = H::iommu(V2);
    h.map(1 << 40, RAM, SZ_4K, RW).unwrap();
    let mut small = other_driver();
    small.aperture = Aperture {
        start: 0,
        end: (1 << 39) - 1,
    };
    assert!(matches!(
        h.step(|c| c.set_group(iommu_group(2, small.clone()))),
        Err(Error::ApertureConflict { .. })
    ));
    // Disjoint from the current list.
    let mut far = other_driver();
    far.aperture = Aperture {
        start: 1 << 50,
        end: (1 << 51) - 1,
    };
    assert_eq!(
        errno(h.step(|c| c.set_group(iommu_group(3, far.clone())))),
        EINVAL
    );
    h.unmap(1 << 40, SZ_4K, UnmapFlags::empty()).unwrap();
    h.step(|c| c.set_group(iommu_group(2, small))).unwrap();
    assert_eq!(
        h.c.info().unwrap().iova_ranges,
        vec![(0, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)]
    );
}

/// `vfio_iommu_resv_conflict` and `vfio_iommu_resv_exclude` in `vfio_iommu_type1_attach_group`,
/// v6.18.
#[test]
fn mappings_over_reserved_regions_are_einval_unless_relaxable() {
    let h = H::iommu(V2);
    h.map(0x1000_0000, RAM, SZ_4K, RW).unwrap();
    let mut d = other_driver();
    d.reserved.push(ReservedRegion {
        start: 0x1000_0000,
        len: SZ_2M,
        kind: ResvKind::Reserved,
    });
    assert!(matches!(
        h.step(|c| c.set_group(iommu_group(2, d))),
        Err(Error::ReservedConflict {
            start: 0x1000_0000,
            ..
        })
    ));
    let mut d = other_driver();
    d.reserved.push(ReservedRegion {
        start: 0x1000_0000,
        len: SZ_2M,
        kind: ResvKind::DirectRelaxable,
    });
    h.step(|c| c.set_group(iommu_group(2, d))).unwrap();
    let mut d = other_driver();
    d.reserved.push(ReservedRegion {
        start: 0,
        len: 0,
        kind: ResvKind::Reserved,
    });
    assert_eq!(errno(h.step(|c| c.set_group(iommu_group(3, d)))), EINVAL);
}

/// `vfio_iommu_type1_attach_group`, v6.18: an empty IOVA list after the exclusions is `EINVAL`.
#[test]
fn no_iova_left_is_einval() {
    let h = H::emulated(V2);
    let mut d = IommuDesc::x86_default();
    d.aperture = Aperture {
        start: 0xfee0_0000,
        end: 0xfeef_ffff,
    };
    assert_eq!(
        err(h.step(|c| c.set_group(iommu_group(2, d)))),
        Error::NoIovaLeft
    );
}

/// `allow_unsafe_interrupts` and `iommu_group_has_isolated_msi` in
/// `vfio_iommu_type1_attach_group`, v6.18.
#[test]
fn group_without_isolated_msi_is_eperm_unless_allowed() {
    let h = H::emulated(V2);
    let d = IommuDesc {
        msi: MsiIsolation::NotIsolated,
        ..IommuDesc::x86_default()
    };
    assert_eq!(
        errno(h.step(|c| c.set_group(iommu_group(2, d.clone())))),
        EPERM
    );
    let cfg = ContainerConfig {
        interrupts: Interrupts::AllowUnsafe,
        ..ContainerConfig::default()
    };
    let h = H::with(vec![GroupSpec::emulated(1)], V2, None, cfg);
    h.step(|c| c.set_group(iommu_group(2, d))).unwrap();
}

/// `vfio_iommu_aper_expand` and `vfio_iommu_resv_refresh` in `vfio_iommu_type1_detach_group`,
/// v6.18.
#[test]
fn detaching_one_of_two_domains_widens_the_iova_list() {
    let h = H::iommu(V2);
    let mut small = other_driver();
    small.aperture = Aperture {
        start: 0,
        end: (1 << 39) - 1,
    };
    small.table.pgsize_bitmap = 1 << 12 | 1 << 21;
    h.step(|c| c.set_group(iommu_group(2, small))).unwrap();
    let info = h.c.info().unwrap();
    assert_eq!(info.iova_ranges.last().unwrap().1, (1 << 39) - 1);
    assert_eq!(info.iova_pgsizes, 1 << 12 | 1 << 21, "AND of the domains");
    h.step(|c| c.unset_group(GroupId(2))).unwrap();
    let info = h.c.info().unwrap();
    assert_eq!(info.iova_ranges.last().unwrap().1, (1 << 48) - 1);
    assert_eq!(info.iova_pgsizes, 1 << 12 | 1 << 21 | 1 << 30);
}

/// `vfio_iommu_unmap_unpin_all` in `vfio_iommu_type1_detach_group`, v6.18.
#[test]
fn last_domain_without_emulated_groups_removes_every_mapping() {
    let h = H::with(
        vec![GroupSpec::iommu(1), GroupSpec::iommu(2)],
        V2,
        None,
        ContainerConfig::default(),
    );
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.step(|c| c.unset_group(GroupId(1))).unwrap();
    assert_eq!(h.iovas().len(), 1, "the shared domain still has a group");
    h.step(|c| c.unset_group(GroupId(2))).unwrap();
    assert_eq!(h.mem.pinned_pages(), 0);
    assert!(!h.c.has_iommu());
}

#[test]
fn a_bad_domain_description_is_refused() {
    let h = H::emulated(V2);
    let mut d = IommuDesc::x86_default();
    d.table.pgsize_bitmap = 1 << 21;
    assert!(matches!(
        h.step(|c| c.set_group(iommu_group(2, d))),
        Err(Error::InvalidDomain { group: 2, .. })
    ));
}
