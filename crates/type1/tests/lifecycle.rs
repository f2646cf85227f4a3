//! Container lifecycle, CHECK_EXTENSION and GET_INFO (`vfio_fops_unl_ioctl`,
//! `vfio_ioctl_set_iommu`, `vfio_iommu_type1_check_extension`, `vfio_iommu_type1_get_info`, v6.18).

mod common;
use std::sync::Arc;

use common::*;
use libc::{EINVAL, ENODEV, ENOTTY};
use type1::group::{CacheCoherency, IommuDesc};
use type1::mm::{LockCapability, Mm};
use type1::uapi::{self, raw};
use type1::{
    Container, ContainerConfig, Error, GroupKind, GroupSpec, UnmapFlags, UserBuffer, Version,
};

fn bare() -> (Container, Arc<type1::mm::FakeMemory>) {
    let mem = fake_memory();
    let mm = Arc::new(Mm::new(
        Box::new(mem.clone()),
        None,
        LockCapability::Limited,
    ));
    (Container::new(ContainerConfig::default(), mm), mem)
}

fn ioctl(c: &Container, req: u64, arg: u64) -> type1::Result<i64> {
    c.ioctl(req, arg, &mut UserBuffer::new(0, 0))
}

/// `vfio_fops_unl_ioctl` (`drivers/vfio/container.c`), v6.18.
#[test]
fn before_set_iommu_only_version_and_extensions_answer() {
    let (c, _) = bare();
    assert_eq!(ioctl(&c, uapi::VFIO_GET_API_VERSION, 0), Ok(0));
    assert_eq!(ioctl(&c, uapi::VFIO_CHECK_EXTENSION, V2), Ok(1));
    // Any other container ioctl: EINVAL (no driver).
    for req in [uapi::VFIO_IOMMU_MAP_DMA, uapi::VFIO_IOMMU_ENABLE, 0x1234] {
        assert_eq!(ioctl(&c, req, 0).unwrap_err().errno(), EINVAL);
    }
    // SET_IOMMU without a group: EINVAL, before the type is looked at (`vfio_ioctl_set_iommu`).
    assert_eq!(c.set_iommu(Version::V2), Err(Error::SetIommuState));
    assert_eq!(
        ioctl(&c, uapi::VFIO_SET_IOMMU, 2).unwrap_err().errno(),
        EINVAL
    );
}

/// `vfio_ioctl_set_iommu` and `vfio_iommu_type1_check_extension`, v6.18 (nesting removed in
/// v6.13).
#[test]
fn set_iommu_accepts_type1_types_only_then_other_requests_are_enotty() {
    let (c, _) = bare();
    c.set_group(GroupSpec::iommu(1)).unwrap();
    for ty in [2, 4, 5, 6, 7, 8, 11] {
        let r = ioctl(&c, uapi::VFIO_SET_IOMMU, ty);
        assert_eq!(r.unwrap_err().errno(), ENODEV, "type {ty}");
    }
    // UNMAP_ALL passes CHECK_EXTENSION but type1's open() refuses it.
    let r = ioctl(&c, uapi::VFIO_SET_IOMMU, raw::VFIO_UNMAP_ALL.into());
    assert_eq!(r.unwrap_err().errno(), EINVAL);
    c.set_iommu(Version::V1).unwrap();
    assert_eq!(c.set_iommu(Version::V2), Err(Error::SetIommuState));
    // After SET_IOMMU: ENABLE, DISABLE and unknown requests are ENOTTY.
    for req in [uapi::VFIO_IOMMU_ENABLE, uapi::VFIO_IOMMU_DISABLE, 0x3b99] {
        assert_eq!(ioctl(&c, req, 0).unwrap_err().errno(), ENOTTY);
    }
}

/// `vfio_iommu_type1_check_extension`, v6.18.
#[test]
fn check_extension_answers_before_and_after_set_iommu() {
    let (c, _) = bare();
    let exts = |c: &Container| [1u64, 3, 9, 10, 4, 6, 2, 8].map(|e| c.check_extension(e));
    assert_eq!(exts(&c), [1, 1, 1, 0, 0, 0, 0, 0]);
    c.set_group(GroupSpec::iommu(1)).unwrap();
    c.set_iommu(Version::V1).unwrap();
    assert_eq!(exts(&c), [1, 1, 1, 1, 1, 0, 0, 0]);
    c.set_group(GroupSpec::emulated(2)).unwrap();
    assert_eq!(
        c.check_extension(10),
        0,
        "UPDATE_VADDR off with emulated groups"
    );
    let mut desc = IommuDesc::x86_default();
    desc.coherency = CacheCoherency::NotEnforced;
    c.set_group(GroupSpec {
        id: type1::GroupId(3),
        kind: GroupKind::Iommu(desc),
    })
    .unwrap();
    assert_eq!(c.check_extension(4), 0, "DMA_CC needs every domain");
    let (e, _) = bare();
    e.set_group(GroupSpec::emulated(1)).unwrap();
    e.set_iommu(Version::V2).unwrap();
    assert_eq!(e.check_extension(4), 1, "vacuously true without domains");
}

/// `vfio_group_detach_container` then `vfio_iommu_type1_release`, v6.18.
#[test]
fn removing_the_last_group_releases_everything() {
    let h = H::iommu(V2);
    h.map(0, RAM, 32 * SZ_4K, RW).unwrap();
    h.c.unset_group(type1::GroupId(1)).unwrap();
    assert!(!h.c.has_iommu());
    assert_eq!(h.mem.pinned_pages(), 0);
    assert_eq!(h.mm.locked_pages(), 0);
    assert_eq!(
        h.c.unset_group(type1::GroupId(1)),
        Err(Error::GroupNotAttached { group: 1 })
    );
    // The container needs SET_IOMMU again, and starts empty.
    h.c.set_group(GroupSpec::iommu(1)).unwrap();
    h.c.set_iommu(Version::V2).unwrap();
    assert!(h.c.mappings().is_empty());
}

#[test]
fn failed_set_iommu_leaves_no_backend() {
    let (c, mem) = bare();
    c.set_group(GroupSpec::iommu(1)).unwrap();
    let mut bad = IommuDesc::x86_default();
    bad.msi = type1::group::MsiIsolation::NotIsolated;
    c.set_group(GroupSpec {
        id: type1::GroupId(2),
        kind: GroupKind::Iommu(bad),
    })
    .unwrap();
    assert_eq!(
        c.set_iommu(Version::V2),
        Err(Error::UnsafeInterrupts { group: 2 })
    );
    assert!(!c.has_iommu());
    c.unset_group(type1::GroupId(2)).unwrap();
    c.set_iommu(Version::V2).unwrap();
    assert_eq!(mem.pinned_pages(), 0);
}

/// Runs GET_INFO with `argsz` in a buffer of `len` bytes at user address 0x1000.
fn get_info(c: &Container, argsz: u32, len: usize) -> (type1::Result<i64>, Vec<u8>) {
    let mut user = UserBuffer::new(0x1000, len);
    user.bytes[..4].copy_from_slice(&argsz.to_ne_bytes());
    user.bytes[4..8].copy_from_slice(&0xffff_ffffu32.to_ne_bytes());
    let r = c.ioctl(uapi::VFIO_IOMMU_GET_INFO, 0x1000, &mut user);
    (r, user.bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
}

/// `vfio_iommu_type1_get_info` with `vfio_info_cap_add` aligning capabilities (v6.6+).
#[test]
fn get_info_capability_chain_v6_6_layout() {
    let h = H::iommu(V2);
    h.map(0, RAM, SZ_4K, RW).unwrap();
    // x86 default: [0, 0xfedfffff] and [0xfef00000, 2^48-1]: two ranges → 88 + 32 = 120.
    let (r, b) = get_info(&h.c, 120, 256);
    assert_eq!(r, Ok(0));
    assert_eq!(u32_at(&b, 0), 120, "argsz is not reduced");
    assert_eq!(u32_at(&b, 4), 3, "PGSIZES | CAPS; input flags ignored");
    assert_eq!(u64_at(&b, 8), (1 << 12) | (1 << 21) | (1 << 30));
    assert_eq!(u32_at(&b, 16), 24, "cap_offset");
    // MIGRATION @24: id 2 v1 next 56, flags 0, 4 zeroed padding bytes, pgsize 4K, max 256 MiB.
    assert_eq!((u16_at(&b, 24), u16_at(&b, 26), u32_at(&b, 28)), (2, 1, 56));
    assert_eq!(u32_at(&b, 32), 0);
    assert_eq!(u32_at(&b, 36), 0, "padding zeroed since v6.6");
    assert_eq!((u64_at(&b, 40), u64_at(&b, 48)), (4096, 1 << 28));
    // DMA_AVAIL @56 (padded to 16): next 72, avail 65534.
    assert_eq!((u16_at(&b, 56), u16_at(&b, 58), u32_at(&b, 60)), (3, 1, 72));
    assert_eq!(u32_at(&b, 64), 65534);
    // IOVA_RANGE @72: next 0, two inclusive ranges.
    assert_eq!((u16_at(&b, 72), u16_at(&b, 74), u32_at(&b, 76)), (1, 1, 0));
    assert_eq!(u32_at(&b, 80), 2);
    assert_eq!((u64_at(&b, 88), u64_at(&b, 96)), (0, 0xfedf_ffff));
    assert_eq!(
        (u64_at(&b, 104), u64_at(&b, 112)),
        (0xfef0_0000, (1 << 48) - 1)
    );
    assert!(
        b[120..].iter().all(|&x| x == 0),
        "nothing written past argsz"
    );
}

/// `vfio_iommu_type1_get_info`, v6.18.
#[test]
fn get_info_small_argsz_reports_the_needed_size() {
    let h = H::iommu(V2);
    let (r, b) = get_info(&h.c, 24, 24);
    assert_eq!(r, Ok(0));
    assert_eq!(u32_at(&b, 0), 120);
    assert_eq!(u32_at(&b, 16), 0, "no cap_offset");
    // argsz 16: only 16 bytes are written back.
    let (r, b) = get_info(&h.c, 16, 32);
    assert_eq!(r, Ok(0));
    assert_eq!(u32_at(&b, 0), 120);
    assert!(b[16..].iter().all(|&x| x == 0));
    assert_eq!(get_info(&h.c, 15, 32).0.unwrap_err().errno(), EINVAL);
    // An unreadable argument: EFAULT.
    assert_eq!(get_info(&h.c, 120, 8).0.unwrap_err().errno(), libc::EFAULT);
}

/// `vfio_iommu_type1_get_info`, v6.18: no IOVA range capability while the list is empty.
#[test]
fn emulated_only_container_has_no_iova_range_cap() {
    let h = H::emulated(V2);
    let (r, b) = get_info(&h.c, 72, 72);
    assert_eq!(r, Ok(0));
    assert_eq!(u32_at(&b, 60), 0, "DMA_AVAIL is the last link");
    assert_eq!(u64_at(&b, 8), !0xfff, "PAGE_MASK without domains");
}

/// `vfio_iommu_aper_expand` in `vfio_iommu_type1_detach_group`, v6.18.
#[test]
fn detach_of_the_last_iommu_group_reports_the_full_range() {
    let h = H::with(
        vec![GroupSpec::iommu(1), GroupSpec::emulated(2)],
        V2,
        None,
        ContainerConfig::default(),
    );
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.step(|c| c.unset_group(type1::GroupId(1))).unwrap();
    // The mapping survives, unpinned (reaccount), and the IOVA list is [0, U64_MAX].
    let m = h.c.mappings();
    assert_eq!(
        (m.len(), m[0].iommu_mapped, m[0].locked_pages),
        (1, false, 0)
    );
    assert_eq!(h.c.info().unwrap().iova_ranges, vec![(0, u64::MAX)]);
    assert_eq!(h.mem.pinned_pages(), 0);
    assert_eq!(h.unmap(0, 8 * SZ_4K, UnmapFlags::empty()), Ok(8 * SZ_4K));
}
