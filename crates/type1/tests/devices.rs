//! Emulated devices: pin/unpin, dma_rw, the unmap notification loop (`vfio_iommu_type1_pin_pages`,
//! `vfio_iommu_type1_unpin_pages`, `vfio_iommu_type1_dma_rw`, `vfio_notify_dma_unmap`, v6.18).

mod common;
use std::sync::{Arc, Mutex, Weak};

use common::*;
use libc::{E2BIG, EACCES, EBUSY, EFAULT, EINVAL, ENOMEM, EOVERFLOW, EPERM};
use type1::{
    Access, Container, ContainerConfig, DeviceId, DmaUnmapHandler, Error, GroupId, GroupSpec, Iova,
    MapFlags, Perm, PhysAddr, UnmapFlags, Vaddr, UNMAP_RETRIES,
};

/// An mdev-style device: records notifications and, if `cooperative`, unpins what it pinned in
/// the range (re-entering the container, which must not deadlock).
#[derive(Debug, Default)]
struct Mdev {
    c: Mutex<Option<Weak<Container>>>,
    id: Mutex<Option<DeviceId>>,
    pinned: Mutex<Vec<u64>>,
    calls: Mutex<Vec<(u64, u64)>>,
    cooperative: bool,
    reenter: bool,
}

impl DmaUnmapHandler for Mdev {
    fn dma_unmap(&self, iova: Iova, length: u64) {
        let iova = iova.raw();
        self.calls.lock().unwrap().push((iova, length));
        if !self.cooperative {
            return;
        }
        let c = self
            .c
            .lock()
            .unwrap()
            .as_ref()
            .and_then(Weak::upgrade)
            .unwrap();
        let id = self.id.lock().unwrap().unwrap();
        let mut pinned = self.pinned.lock().unwrap();
        let (inside, outside): (Vec<u64>, Vec<u64>) = pinned
            .iter()
            .partition(|&&p| p >= iova && p < iova + length);
        for p in inside {
            c.unpin_pages(id, Iova(p), 1).unwrap();
        }
        *pinned = outside;
        if self.reenter {
            let mut b = [0u8; 8];
            c.dma_rw(id, Iova(SZ_1G), &mut b, Access::Read).unwrap();
            c.map_dma(&type1::MapDma {
                vaddr: Vaddr(RAM),
                iova: Iova(0x5000_0000),
                size: SZ_4K,
                flags: RW,
            })
            .unwrap();
            c.unmap_dma(&type1::UnmapDma {
                iova: Iova(0x5000_0000),
                size: SZ_4K,
                flags: UnmapFlags::empty(),
                bitmap_pgsize: 0,
            })
            .unwrap();
        }
    }
}

impl Mdev {
    fn pin(&self, c: &Container, iova: u64, n: u64, prot: Perm) -> type1::Result<Vec<PhysAddr>> {
        let id = self.id.lock().unwrap().unwrap();
        let r = c.pin_pages(id, Iova(iova), n, prot)?;
        for i in 0..n {
            self.pinned.lock().unwrap().push(iova + i * SZ_4K);
        }
        Ok(r)
    }
}

/// A container with the given groups plus emulated group 9 holding one mdev.
fn setup(
    mut groups: Vec<GroupSpec>,
    ty: u64,
    limit: Option<u64>,
    mdev: Mdev,
) -> (H, DeviceId, Arc<Mdev>) {
    groups.push(GroupSpec::emulated(9));
    let h = H::with(groups, ty, limit, ContainerConfig::default());
    let mdev = Arc::new(mdev);
    *mdev.c.lock().unwrap() = Some(Arc::downgrade(&h.c));
    let dev = h.c.register_device(GroupId(9), Some(mdev.clone())).unwrap();
    *mdev.id.lock().unwrap() = Some(dev);
    (h, dev, mdev)
}

fn coop() -> Mdev {
    Mdev {
        cooperative: true,
        ..Mdev::default()
    }
}

/// `vfio_pin_pages` then `vfio_iommu_type1_pin_pages`, v6.18: the checks in their order.
#[test]
fn pin_checks_in_order() {
    let (h, dev, _) = setup(vec![], V2, None, coop());
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    let pin = |d, iova, n, p| h.step(|c| c.pin_pages(d, iova, n, p));
    assert_eq!(errno(pin(dev, Iova(0), 0, Perm::READ)), EINVAL);
    assert_eq!(errno(pin(DeviceId(77), Iova(0), 1, Perm::READ)), EINVAL);
    let silent = h.c.register_device(GroupId(9), None).unwrap();
    assert_eq!(
        err(pin(silent, Iova(0), 1, Perm::READ)),
        Error::NoUnmapHandler { device: silent.0 }
    );
    assert_eq!(errno(pin(dev, Iova(0), 513, Perm::READ)), E2BIG);
    assert_eq!(
        errno(pin(dev, Iova(u64::MAX - SZ_4K + 1), 2, Perm::READ)),
        EOVERFLOW
    );
    assert_eq!(
        errno(pin(dev, Iova(SZ_1G), 1, Perm::READ)),
        EINVAL,
        "not mapped"
    );
    // All or nothing: page 8 is past the mapping.
    assert_eq!(errno(pin(dev, Iova(6 * SZ_4K), 3, Perm::READ)), EINVAL);
    assert_eq!(h.c.mappings()[0].device_pinned_pages, 0);
    h.map(SZ_2M, RAM, SZ_4K, MapFlags::READ).unwrap();
    assert_eq!(errno(pin(dev, Iova(SZ_2M), 1, Perm::WRITE)), EPERM);
    h.map(2 * SZ_2M, BAR, SZ_4K, RW).unwrap();
    assert_eq!(
        err(pin(dev, Iova(2 * SZ_2M), 1, Perm::READ)),
        Error::ReservedPage { iova: 2 * SZ_2M }
    );
    // No domain: the vaddr is checked only when pinning.
    h.map(3 * SZ_2M, 0x1000_0000, SZ_4K, RW).unwrap();
    assert_eq!(errno(pin(dev, Iova(3 * SZ_2M), 1, Perm::READ)), EFAULT);
    // `vfio_pin_page_external` pins with the mapping's protection (`dma->prot`), not the one
    // asked for: a read pin of a read-write mapping over read-only memory is a write pin, and
    // faults; over a read-only mapping it is a read pin and succeeds.
    h.map(4 * SZ_2M, RO, SZ_4K, RW).unwrap();
    assert_eq!(errno(pin(dev, Iova(4 * SZ_2M), 1, Perm::READ)), EFAULT);
    h.map(5 * SZ_2M, RO, SZ_4K, MapFlags::READ).unwrap();
    assert_eq!(pin(dev, Iova(5 * SZ_2M), 1, Perm::READ).unwrap().len(), 1);
    // Invalid vaddrs: EBUSY. (Needs no emulated groups for UNMAP|VADDR, so check v1 next.)
    let (v1, dev1, _) = setup(vec![], V1, None, coop());
    v1.map(0, RAM, SZ_4K, RW).unwrap();
    assert_eq!(
        errno(v1.step(|c| c.pin_pages(dev1, Iova(0), 1, Perm::READ))),
        EACCES
    );
}

/// `vfio_unpin_pages` (v6.18) WARNs and does nothing for `npage` 0 or over 512; the typed API
/// says why: zero pages is `EINVAL` (not "too many pages"), over 512 is `E2BIG` as for a pin.
#[test]
fn unpin_of_zero_pages_is_einval_and_of_too_many_is_e2big() {
    let (h, dev, _) = setup(vec![], V2, None, coop());
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.step(|c| c.pin_pages(dev, Iova(0), 1, Perm::READ))
        .unwrap();
    assert_eq!(
        err(h.step(|c| c.unpin_pages(dev, Iova(0), 0))),
        Error::ZeroSize
    );
    assert_eq!(errno(h.step(|c| c.unpin_pages(dev, Iova(0), 513))), E2BIG);
    assert_eq!(
        h.c.mappings()[0].device_pinned_pages,
        1,
        "nothing was unpinned"
    );
    h.step(|c| c.unpin_pages(dev, Iova(0), 1)).unwrap();
}

#[test]
fn pins_are_refcounted_and_return_physical_pages() {
    let (h, dev, mdev) = setup(vec![], V2, None, coop());
    h.map(0, SCATTERED, 8 * SZ_4K, RW).unwrap();
    let pas = h.step(|c| mdev.pin(c, 0, 3, Perm::RW)).unwrap();
    assert_eq!(
        pas,
        [0x2_0000_0000, 0x2_0000_2000, 0x2_0000_4000].map(PhysAddr)
    );
    h.step(|c| mdev.pin(c, SZ_4K, 1, Perm::READ)).unwrap();
    assert_eq!(h.c.mappings()[0].device_pinned_pages, 3);
    assert_eq!(h.mm.locked_pages(), 3, "no domain: device pins are charged");
    h.step(|c| c.unpin_pages(dev, Iova(SZ_4K), 1)).unwrap();
    assert_eq!(
        h.c.mappings()[0].device_pinned_pages,
        3,
        "one reference left"
    );
    h.step(|c| c.unpin_pages(dev, Iova(0), 3)).unwrap();
    assert_eq!(h.mem.pinned_pages(), 0);
    // Nothing pinned any more: unpinning again is refused and changes nothing.
    assert_eq!(errno(h.step(|c| c.unpin_pages(dev, Iova(0), 1))), EINVAL);
}

#[test]
fn pins_belong_to_the_device_that_made_them() {
    let (h, a, mdev) = setup(vec![], V2, None, coop());
    let b =
        h.c.register_device(GroupId(9), Some(Arc::new(coop())))
            .unwrap();
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.step(|c| mdev.pin(c, 0, 2, Perm::READ)).unwrap();
    assert_eq!(
        err(h.step(|c| c.unpin_pages(b, Iova(0), 1))),
        Error::NotPinnedByDevice {
            device: b.0,
            iova: 0
        }
    );
    h.step(|c| c.pin_pages(b, Iova(0), 1, Perm::READ)).unwrap();
    h.step(|c| c.unpin_pages(a, Iova(0), 2)).unwrap();
    assert_eq!(
        h.c.mappings()[0].device_pinned_pages,
        1,
        "b's pin keeps page 0"
    );
    // Unregistering a device releases its pins.
    h.step(|c| c.unregister_device(b)).unwrap();
    assert_eq!(h.mem.pinned_pages(), 0);
}

/// `do_accounting` in `vfio_iommu_type1_pin_pages`: with an IOMMU domain MAP already charged the
/// pages.
#[test]
fn with_a_domain_device_pins_are_not_charged_again() {
    let (h, dev, mdev) = setup(vec![GroupSpec::iommu(1)], V2, None, coop());
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.step(|c| mdev.pin(c, 0, 4, Perm::READ)).unwrap();
    assert_eq!(h.mm.locked_pages(), 8);
    // Detaching the only IOMMU group (emulated stays): mappings survive, charged for pins only.
    h.step(|c| c.unset_group(GroupId(1))).unwrap();
    assert_eq!(h.mm.locked_pages(), 4);
    // Re-attaching replays: the 4 pinned pages are not charged twice.
    h.step(|c| c.set_group(GroupSpec::iommu(1))).unwrap();
    assert_eq!(h.mm.locked_pages(), 8);
    h.step(|c| c.unpin_pages(dev, Iova(0), 4)).unwrap();
    assert_eq!(h.mm.locked_pages(), 8);
}

#[test]
fn device_pins_respect_the_limit_without_a_domain() {
    let (h, _, mdev) = setup(vec![], V2, Some(2 * SZ_4K), coop());
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    assert_eq!(errno(h.step(|c| mdev.pin(c, 0, 3, Perm::READ))), ENOMEM);
    h.step(|c| mdev.pin(c, 0, 2, Perm::READ)).unwrap();
}

/// `vfio_iommu_type1_dma_rw_chunk`, v6.18: an unmapped address or a gap is `EINVAL`, a write
/// needs READ and WRITE (`EPERM`).
#[test]
fn dma_rw_needs_a_mapping_read_permission_and_no_gap() {
    let (h, dev, _) = setup(vec![], V2, None, coop());
    h.map(0, RAM, 2 * SZ_4K, RW).unwrap();
    h.map(2 * SZ_4K, RAM + SZ_2M, 2 * SZ_4K, RW).unwrap();
    h.map(SZ_2M, RAM, SZ_4K, MapFlags::WRITE).unwrap();
    h.map(2 * SZ_2M, RAM, SZ_4K, MapFlags::READ).unwrap();
    // Across two adjacent mappings.
    let mut data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    h.step(|c| c.dma_rw(dev, Iova(SZ_4K + 100), &mut data, Access::Write))
        .unwrap();
    let mut back = vec![0u8; 6000];
    h.step(|c| c.dma_rw(dev, Iova(SZ_4K + 100), &mut back, Access::Read))
        .unwrap();
    assert_eq!(back, data);
    // Landed in the second mapping's memory.
    let mut b = [0u8; 1];
    use type1::mm::AddressSpace;
    h.mem
        .read(RAM + SZ_2M + (6000 - (SZ_4K - 100)) - 1, &mut b)
        .unwrap();
    assert_eq!(b[0], data[5999]);
    // A write-only mapping refuses both directions; a read-only one refuses writes.
    let mut one = [0u8; 1];
    assert_eq!(
        errno(h.step(|c| c.dma_rw(dev, Iova(SZ_2M), &mut one, Access::Read))),
        EPERM
    );
    assert_eq!(
        errno(h.step(|c| c.dma_rw(dev, Iova(SZ_2M), &mut one, Access::Write))),
        EPERM
    );
    assert_eq!(
        errno(h.step(|c| c.dma_rw(dev, Iova(2 * SZ_2M), &mut one, Access::Write))),
        EPERM
    );
    h.step(|c| c.dma_rw(dev, Iova(2 * SZ_2M), &mut one, Access::Read))
        .unwrap();
    // A gap: EINVAL, after the first chunk was copied (kernel behaviour).
    let mut big = vec![7u8; 8192];
    assert_eq!(
        h.c.dma_rw(dev, Iova(3 * SZ_4K), &mut big, Access::Write)
            .unwrap_err()
            .errno(),
        EINVAL
    );
    assert_eq!(
        errno(h.step(|c| c.dma_rw(dev, Iova(0), &mut [], Access::Read))),
        EINVAL
    );
}

/// `vfio_notify_dma_unmap` and the retry of `vfio_dma_do_unmap`, v6.18.
#[test]
fn unmap_notifies_with_the_whole_mapping_and_waits_for_unpin() {
    let (h, _, mdev) = setup(vec![GroupSpec::iommu(1)], V2, None, coop());
    h.map(0, RAM, 16 * SZ_4K, RW).unwrap();
    h.map(SZ_2M, RAM, 4 * SZ_4K, RW).unwrap();
    h.step(|c| mdev.pin(c, 5 * SZ_4K, 2, Perm::READ)).unwrap();
    assert_eq!(h.unmap(0, SZ_1G, UnmapFlags::empty()), Ok(20 * SZ_4K));
    // The payload is the mapping (iova, size), not the request; one call sufficed.
    assert_eq!(*mdev.calls.lock().unwrap(), vec![(0, 16 * SZ_4K)]);
}

#[test]
fn callbacks_may_reenter_the_container() {
    let mdev = Mdev {
        cooperative: true,
        reenter: true,
        ..Mdev::default()
    };
    let (h, _, mdev) = setup(vec![GroupSpec::iommu(1)], V2, None, mdev);
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.map(SZ_1G, RAM, SZ_4K, RW).unwrap();
    h.step(|c| mdev.pin(c, 0, 1, Perm::READ)).unwrap();
    assert_eq!(h.unmap(0, 4 * SZ_4K, UnmapFlags::empty()), Ok(4 * SZ_4K));
}

#[test]
fn a_device_that_never_unpins_makes_unmap_fail_after_eleven_calls() {
    let (h, _, mdev) = setup(vec![GroupSpec::iommu(1)], V2, None, Mdev::default());
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.map(SZ_2M, RAM, 4 * SZ_4K, RW).unwrap();
    h.step(|c| mdev.pin(c, SZ_2M, 1, Perm::READ)).unwrap();
    let r = h.c.unmap_dma(&type1::UnmapDma {
        iova: Iova(0),
        size: SZ_1G,
        flags: UnmapFlags::empty(),
        bitmap_pgsize: 0,
    });
    assert_eq!(
        r,
        Err(Error::UnmapBusy {
            iova: SZ_2M,
            size: 4 * SZ_4K
        })
    );
    assert_eq!(errno(r), EBUSY);
    assert_eq!(
        u32::try_from(mdev.calls.lock().unwrap().len()).unwrap(),
        UNMAP_RETRIES + 1
    );
    h.check();
    // The first mapping (no pins) was removed before; the pinned one is intact.
    assert_eq!(h.iovas(), vec![(SZ_2M, 4 * SZ_4K)]);
}

/// `vfio_iommu_type1_pin_pages` and `vfio_iommu_type1_dma_rw` return `EBUSY` while a vaddr is
/// invalid (since v6.3).
#[test]
fn vaddr_invalid_blocks_pin_and_rw_with_ebusy() {
    // UNMAP|VADDR is refused with emulated groups attached, so register the device on an
    // IOMMU group: the pin path is the same.
    let h = H::iommu(V2);
    let mdev = Arc::new(coop());
    let dev = h.c.register_device(GroupId(1), Some(mdev)).unwrap();
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.unmap(0, 4 * SZ_4K, UnmapFlags::VADDR).unwrap();
    assert_eq!(
        errno(h.step(|c| c.pin_pages(dev, Iova(0), 1, Perm::READ))),
        EBUSY
    );
    assert_eq!(
        errno(h.step(|c| c.dma_rw(dev, Iova(0), &mut [0u8; 4], Access::Read))),
        EBUSY
    );
    h.map(0, RAM, 4 * SZ_4K, MapFlags::VADDR).unwrap();
    h.step(|c| c.pin_pages(dev, Iova(0), 1, Perm::READ))
        .unwrap();
    // Pinning from an IOMMU group's device promotes its dirty scope.
    h.step(|c| c.unpin_pages(dev, Iova(0), 1)).unwrap();
}

#[test]
fn release_drops_pins_the_kernel_would_leak() {
    let (h, _, mdev) = setup(vec![GroupSpec::iommu(1)], V2, None, Mdev::default());
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.step(|c| mdev.pin(c, 0, 2, Perm::READ)).unwrap();
    h.step(|c| c.unset_group(GroupId(1))).unwrap();
    h.step(|c| c.unset_group(GroupId(9))).unwrap();
    assert_eq!(h.mem.pinned_pages(), 0);
    assert_eq!(h.mm.locked_pages(), 0);
}

#[test]
fn a_device_whose_group_left_the_container_cannot_pin_or_rw() {
    // Found by the differential test: the kernel refuses vfio_pin_pages (EINVAL) for a device
    // whose group has no container (`vfio_device_has_container`); the engine used to accept it.
    let (h, _, _) = setup(vec![GroupSpec::iommu(1)], V2, None, coop());
    let dev =
        h.c.register_device(GroupId(1), Some(Arc::new(coop())))
            .unwrap();
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.step(|c| c.unset_group(GroupId(1))).unwrap();
    assert_eq!(
        err(h.step(|c| c.pin_pages(dev, Iova(0), 1, Perm::READ))),
        Error::GroupNotAttached { group: 1 }
    );
    assert_eq!(
        errno(h.step(|c| c.dma_rw(dev, Iova(0), &mut [0u8; 4], Access::Read))),
        EINVAL
    );
}

/// `vfio_change_dma_owner` (v6.3+) and `vfio_iommu_type1_pin_pages`: after a VADDR update from
/// another owner (only possible without emulated groups, so the pinning device sits in the IOMMU
/// group), new device pins come from the new owner while the pins taken before go back to the
/// address space that pinned them. Both kinds live side by side in one mapping's pin store.
#[test]
fn pins_taken_before_and_after_an_owner_change_return_to_their_own_address_spaces() {
    let h = H::iommu(V2);
    let dev =
        h.c.register_device(GroupId(1), Some(Arc::new(coop())))
            .unwrap();
    h.map(0, RAM, 128 * SZ_4K, RW).unwrap();
    let mapped = h.mem.pinned_pages();
    // Pages 60..68 straddle a 64-page chunk boundary of the pin store.
    h.step(|c| c.pin_pages(dev, Iova(60 * SZ_4K), 8, Perm::RW))
        .unwrap();
    assert_eq!(h.mem.pinned_pages(), mapped + 8);
    h.unmap(0, 128 * SZ_4K, UnmapFlags::VADDR).unwrap();
    let other_mem = fake_memory();
    let other = Arc::new(type1::mm::Mm::new(
        Box::new(other_mem.clone()),
        None,
        type1::mm::LockCapability::Limited,
    ));
    h.c.set_current_mm(other.clone());
    // Two owners from here on: the harness's one-owner charge check no longer applies, the
    // container's own invariants (charges per owner) do.
    let ok = |r: type1::Result<()>| {
        r.unwrap();
        h.c.check_invariants().unwrap();
    };
    ok(h.c.map_dma(&type1::MapDma {
        vaddr: Vaddr(RAM),
        iova: Iova(0),
        size: 128 * SZ_4K,
        flags: MapFlags::VADDR,
    }));
    assert_eq!((h.mm.locked_pages(), other.locked_pages()), (0, 128));
    // New pins: pages 64..68 take another reference, 68..72 are pinned in the new owner.
    ok(h.c
        .pin_pages(dev, Iova(64 * SZ_4K), 8, Perm::READ)
        .map(drop));
    assert_eq!(h.c.mappings()[0].device_pinned_pages, 12);
    assert_eq!(
        (h.mem.pinned_pages(), other_mem.pinned_pages()),
        (mapped + 8, 4)
    );
    ok(h.c.unpin_pages(dev, Iova(60 * SZ_4K), 8));
    assert_eq!(
        (h.mem.pinned_pages(), other_mem.pinned_pages()),
        (mapped + 4, 4),
        "pages 64..68 still hold their second reference"
    );
    ok(h.c.unpin_pages(dev, Iova(64 * SZ_4K), 8));
    assert_eq!(
        (h.mem.pinned_pages(), other_mem.pinned_pages()),
        (mapped, 0)
    );
    assert_eq!((h.mem.bad_unpins(), other_mem.bad_unpins()), (0, 0));
    assert_eq!(h.c.mappings()[0].device_pinned_pages, 0);
    ok(h.c
        .unmap_dma(&type1::UnmapDma {
            iova: Iova(0),
            size: 128 * SZ_4K,
            flags: UnmapFlags::empty(),
            bitmap_pgsize: 0,
        })
        .map(drop));
    assert_eq!((h.mem.pinned_pages(), other.locked_pages()), (0, 0));
}

/// A pin across two adjacent mappings pins each page from its own mapping's memory; a page the
/// second mapping refuses (write to a read-only mapping) undoes the pages already pinned in the
/// first, charges included (`vfio_iommu_type1_pin_pages`, v6.18: all or nothing); an unpin
/// across both releases each.
#[test]
fn pins_and_unpins_across_adjacent_mappings_and_a_refusal_in_the_second_undoes_the_first() {
    let (h, dev, _) = setup(vec![], V2, None, coop());
    // Pages 0-1 from RAM, pages 2-3 from RAM + 1 MiB, read-write; pages 4-5 read-only.
    h.map(0, RAM, 2 * SZ_4K, RW).unwrap();
    h.map(2 * SZ_4K, RAM + (1 << 20), 2 * SZ_4K, RW).unwrap();
    h.map(4 * SZ_4K, RAM + 2 * (1 << 20), 2 * SZ_4K, MapFlags::READ)
        .unwrap();
    let pas = h.step(|c| c.pin_pages(dev, Iova(SZ_4K), 2, Perm::WRITE));
    assert_eq!(
        pas,
        Ok(vec![PhysAddr(RAM_PA + SZ_4K), PhysAddr(RAM_PA + (1 << 20))])
    );
    let locked = h.mm.locked_pages();
    let r = h.step(|c| c.pin_pages(dev, Iova(2 * SZ_4K), 3, Perm::WRITE));
    assert_eq!(err(r), Error::Permission { iova: 4 * SZ_4K });
    assert_eq!(h.mm.locked_pages(), locked);
    let pinned: Vec<u64> =
        h.c.mappings()
            .iter()
            .map(|m| m.device_pinned_pages)
            .collect();
    assert_eq!(pinned, vec![1, 1, 0]);
    // Unpinning across the two mappings releases both pages and their charges.
    h.step(|c| c.unpin_pages(dev, Iova(SZ_4K), 2)).unwrap();
    assert_eq!(h.mm.locked_pages(), locked - 2);
    assert!(h.c.mappings().iter().all(|m| m.device_pinned_pages == 0));
    h.check();
}
