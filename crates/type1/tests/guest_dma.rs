//! `GuestDmaMapping`: guest-physical DMA mapping in the shape of Cloud Hypervisor's
//! `ExternalDmaMapping`, over a container; errors carry the errno `vfio_dma_do_map` and
//! `vfio_dma_do_unmap` (v6.18) return.

mod common;

use common::*;
use libc::{EEXIST, EINVAL};
use type1::{GroupSpec, GuestDmaMapping, Vaddr};

/// Guest RAM: 64 MiB at guest-physical 0, the fake memory's RAM at `RAM`.
fn guest(gpa: u64, size: u64) -> Option<Vaddr> {
    (gpa.checked_add(size)? <= RAM_LEN).then_some(Vaddr(RAM + gpa))
}

#[test]
fn guest_ranges_map_at_their_host_address_and_unmap() {
    let h = H::iommu(V2);
    let m = GuestDmaMapping::new(h.c.clone(), guest);
    m.map(SZ_1G, 2 * SZ_2M, SZ_2M).unwrap();
    let maps = h.c.mappings();
    assert_eq!(maps.len(), 1);
    assert_eq!(
        (maps[0].iova.raw(), maps[0].vaddr.raw(), maps[0].size),
        (SZ_1G, RAM + 2 * SZ_2M, SZ_2M)
    );
    assert_eq!(
        h.c.iova_to_phys(type1::Iova(SZ_1G + 8)).map(|p| p.raw()),
        Some(RAM_PA + 2 * SZ_2M + 8)
    );
    h.check();
    m.unmap(SZ_1G, SZ_2M).unwrap();
    assert!(h.c.mappings().is_empty());
    h.check();
}

#[test]
fn errors_carry_the_kernels_errno_and_change_nothing() {
    let h = H::iommu(V2);
    let m = GuestDmaMapping::new(h.c.clone(), guest);
    // Outside guest RAM: no host address.
    assert_eq!(
        m.map(0, RAM_LEN, SZ_4K).unwrap_err().raw_os_error(),
        Some(EINVAL)
    );
    m.map(0, 0, SZ_2M).unwrap();
    // vfio_dma_do_map: an overlapping IOVA range is EEXIST.
    assert_eq!(
        m.map(SZ_4K, 0, SZ_4K).unwrap_err().raw_os_error(),
        Some(EEXIST)
    );
    // Unaligned size: EINVAL.
    assert_eq!(
        m.map(SZ_1G, 0, 100).unwrap_err().raw_os_error(),
        Some(EINVAL)
    );
    // v2 unmap that bisects a mapping: EINVAL, the mapping stays.
    assert_eq!(m.unmap(0, SZ_4K).unwrap_err().raw_os_error(), Some(EINVAL));
    assert_eq!(h.iovas(), vec![(0, SZ_2M)]);
    h.check();
}

#[test]
fn a_container_of_emulated_groups_maps_through_it_too() {
    let h = H::with(
        vec![GroupSpec::emulated(2)],
        V2,
        None,
        type1::ContainerConfig::default(),
    );
    let m = GuestDmaMapping::new(h.c.clone(), guest);
    m.map(0, 0, SZ_2M).unwrap();
    assert_eq!(h.iovas(), vec![(0, SZ_2M)]);
    m.unmap(0, SZ_2M).unwrap();
    h.check();
}
