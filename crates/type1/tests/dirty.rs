//! Dirty tracking: DIRTY_PAGES, GET_BITMAP, unmap with a bitmap, dirty scope
//! (`vfio_iommu_type1_dirty_pages`, `vfio_iova_dirty_bitmap`, `update_user_bitmap`,
//! `vfio_dma_do_unmap`, `vfio_iommu_type1_detach_group`, v6.18).

mod common;
use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use libc::{EACCES, EFAULT, EINVAL, EOVERFLOW};
use type1::dirty::test_bit;
use type1::uapi::{self, off, raw};
use type1::{
    Access, ContainerConfig, DirtyMode, DmaUnmapHandler, GroupId, GroupSpec, Iova, Perm,
    UnmapFlags, UserBuffer,
};

#[derive(Debug)]
struct Quiet;
impl DmaUnmapHandler for Quiet {
    fn dma_unmap(&self, _iova: Iova, _length: u64) {}
}

fn set_of(bm: &[u64], n: u64) -> BTreeSet<u64> {
    (0..n).filter(|&i| test_bit(bm, i)).collect()
}

fn tracked(groups: Vec<GroupSpec>, mode: DirtyMode) -> H {
    let cfg = ContainerConfig {
        dirty_mode: mode,
        ..ContainerConfig::default()
    };
    H::with(groups, V2, None, cfg)
}

const ARG: u64 = 0x10_0000;

fn dirty_ioctl(
    h: &H,
    argsz: u32,
    flags: u32,
    get: Option<(u64, u64, u64, u64, u64)>,
    len: usize,
) -> (type1::Result<i64>, UserBuffer) {
    let mut u = UserBuffer::new(ARG, len.max(8));
    u.bytes[0..4].copy_from_slice(&argsz.to_ne_bytes());
    u.bytes[4..8].copy_from_slice(&flags.to_ne_bytes());
    if let Some((iova, size, pgsize, bsize, data)) = get {
        for (i, v) in [iova, size, pgsize, bsize, data].iter().enumerate() {
            u.bytes[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_ne_bytes());
        }
    }
    let r = h.c.ioctl(uapi::VFIO_IOMMU_DIRTY_PAGES, ARG, &mut u);
    (r, u)
}

const START: u32 = raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_START;
const STOP: u32 = raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP;
const GET: u32 = raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;

/// `vfio_iommu_type1_dirty_pages`, v6.18: the checks of START, STOP and GET_BITMAP in order.
#[test]
fn dirty_pages_checks_in_order() {
    // v1: EACCES before the argument is even read.
    let v1 = H::iommu(V1);
    let mut empty = UserBuffer::new(0, 0);
    assert_eq!(
        v1.c.ioctl(uapi::VFIO_IOMMU_DIRTY_PAGES, ARG, &mut empty)
            .unwrap_err()
            .errno(),
        EACCES
    );
    let h = H::iommu(V2);
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_DIRTY_PAGES, ARG, &mut empty)
            .unwrap_err()
            .errno(),
        EFAULT
    );
    assert_eq!(
        dirty_ioctl(&h, 7, START, None, 8).0.unwrap_err().errno(),
        EINVAL
    );
    assert_eq!(
        dirty_ioctl(&h, 8, 8, None, 8).0.unwrap_err().errno(),
        EINVAL
    );
    assert_eq!(
        dirty_ioctl(&h, 8, 0, None, 8).0.unwrap_err().errno(),
        EINVAL
    );
    assert_eq!(
        dirty_ioctl(&h, 8, START | STOP, None, 8)
            .0
            .unwrap_err()
            .errno(),
        EINVAL
    );
    // GET_BITMAP without tracking.
    h.map(0, RAM, 64 * SZ_4K, RW).unwrap();
    let get = |argsz, iova, size, pgsize, bsize, data, len| {
        dirty_ioctl(&h, argsz, GET, Some((iova, size, pgsize, bsize, data)), len)
            .0
            .map_err(|e| e.errno())
    };
    assert_eq!(
        get(48, 0, 64 * SZ_4K, SZ_4K, 8, ARG + 64, 128),
        Err(EINVAL),
        "not tracking"
    );
    // START and STOP are idempotent.
    assert_eq!(dirty_ioctl(&h, 8, START, None, 8).0, Ok(0));
    assert_eq!(dirty_ioctl(&h, 8, START, None, 8).0, Ok(0));
    assert_eq!(
        get(47, 0, 64 * SZ_4K, SZ_4K, 8, ARG + 64, 128),
        Err(EINVAL),
        "argsz"
    );
    assert_eq!(
        get(48, 0, 0, SZ_4K, 8, ARG + 64, 128),
        Err(EINVAL),
        "size 0"
    );
    assert_eq!(
        get(48, u64::MAX - 0xfff, 0x2000, SZ_4K, 8, ARG + 64, 128),
        Err(EOVERFLOW)
    );
    assert_eq!(
        get(48, 0, 64 * SZ_4K, SZ_4K, 8, u64::MAX - 4, 128),
        Err(EINVAL),
        "access_ok"
    );
    assert_eq!(
        get(48, 0, 128 * SZ_4K, SZ_4K, 8, ARG + 64, 128),
        Err(EINVAL),
        "bitmap too small"
    );
    assert_eq!(
        get(48, 0, 64 * SZ_4K, SZ_4K, (1 << 28) + 8, ARG + 64, 128),
        Err(EINVAL),
        "> 256 MiB"
    );
    assert_eq!(
        get(48, 0, 64 * SZ_4K, SZ_2M, 8, ARG + 64, 128),
        Err(EINVAL),
        "pgsize"
    );
    assert_eq!(
        get(48, SZ_4K, 63 * SZ_4K, SZ_4K, 8, ARG + 64, 128),
        Err(EINVAL),
        "bisects"
    );
    assert_eq!(
        get(48, 0, 64 * SZ_4K, SZ_4K, 8, ARG + 64, 70),
        Err(EFAULT),
        "unwritable data"
    );
    assert_eq!(get(48, 0, 64 * SZ_4K, SZ_4K, 8, ARG + 64, 128), Ok(0));
    // A range with no mappings: success, the buffer is not even read.
    assert_eq!(
        get(48, SZ_1G, SZ_4K, SZ_4K, 8, 0x7000_0000_0000, 128),
        Ok(0)
    );
    assert_eq!(dirty_ioctl(&h, 8, STOP, None, 8).0, Ok(0));
    assert_eq!(dirty_ioctl(&h, 8, STOP, None, 8).0, Ok(0));
    assert!(!h.c.dirty_tracking());
}

/// `vfio_iova_dirty_bitmap` clears each bitmap after a report and fills it again from the pinned
/// pages (`vfio_dma_populate_bitmap`), v6.18.
#[test]
fn pinned_pages_stay_dirty_and_unpinned_ones_are_reported_once() {
    let h = tracked(vec![GroupSpec::emulated(9)], DirtyMode::KernelExact);
    let dev =
        h.c.register_device(GroupId(9), Some(Arc::new(Quiet)))
            .unwrap();
    h.map(0, RAM, 64 * SZ_4K, RW).unwrap();
    h.c.pin_pages(dev, Iova(3 * SZ_4K), 1, Perm::READ).unwrap();
    h.c.dirty_start().unwrap();
    // Pins made before START are populated.
    let bm = |h: &H| set_of(&h.c.dirty_bitmap(Iova(0), 64 * SZ_4K, SZ_4K).unwrap(), 64);
    assert_eq!(bm(&h), BTreeSet::from([3]));
    assert_eq!(bm(&h), BTreeSet::from([3]), "pinned: dirty in every report");
    h.c.pin_pages(dev, Iova(10 * SZ_4K), 2, Perm::WRITE)
        .unwrap();
    h.c.unpin_pages(dev, Iova(10 * SZ_4K), 2).unwrap();
    assert_eq!(
        bm(&h),
        BTreeSet::from([3, 10, 11]),
        "unpinned: reported once more"
    );
    assert_eq!(bm(&h), BTreeSet::from([3]));
    // dma_rw write of 2 bytes across a page boundary dirties both pages (v5.10 fix).
    h.c.dma_rw(dev, Iova(20 * SZ_4K - 1), &mut [1, 2], Access::Write)
        .unwrap();
    let mut r = [0u8; 8];
    h.c.dma_rw(dev, Iova(30 * SZ_4K), &mut r, Access::Read)
        .unwrap();
    assert_eq!(bm(&h), BTreeSet::from([3, 19, 20]));
    h.check();
}

#[test]
fn iommu_group_without_pinned_scope_makes_everything_dirty_rule_5() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::KernelExact);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    for _ in 0..2 {
        assert_eq!(
            set_of(&h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap(), 8).len(),
            8
        );
    }
    // A device of that group pins once: the group gets pinned scope, only pins are dirty now.
    let dev =
        h.c.register_device(GroupId(1), Some(Arc::new(Quiet)))
            .unwrap();
    h.c.pin_pages(dev, Iova(SZ_4K), 1, Perm::READ).unwrap();
    h.c.unpin_pages(dev, Iova(SZ_4K), 1).unwrap();
    assert_eq!(
        set_of(&h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap(), 8),
        BTreeSet::from([1])
    );
    assert!(set_of(&h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap(), 8).is_empty());
}

/// d0a78f91761f "vfio/iommu_type1: Populate full dirty when detach non-pinned group" (v5.12):
/// a detached group's pages must all be reported, since it could have written anywhere.
#[test]
fn detaching_a_non_pinned_group_while_tracking_marks_everything_dirty() {
    let h = tracked(
        vec![GroupSpec::iommu(1), GroupSpec::emulated(9)],
        DirtyMode::KernelExact,
    );
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap();
    // The IOMMU group may have written anywhere; after it leaves, `update_user_bitmap` no
    // longer reports its mappings fully dirty, so the detach itself must record it.
    h.step(|c| c.unset_group(GroupId(1))).unwrap();
    assert_eq!(
        set_of(&h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap(), 8).len(),
        8
    );
    assert!(set_of(&h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap(), 8).is_empty());
}

/// UNMAP_DMA with GET_DIRTY_BITMAP (`vfio_dma_do_unmap` calling `update_user_bitmap` for each
/// mapping, v6.18): pages a device dirtied are reported as they are unmapped.
#[test]
fn unmap_with_bitmap_over_512_mappings_reports_each_written_page() {
    // A vIOMMU maps 4K pages one by one, then a domain-selective invalidation unmaps 2M at
    // once and asks for the dirty bitmap of all of it.
    let h = tracked(vec![GroupSpec::emulated(9)], DirtyMode::KernelExact);
    let dev =
        h.c.register_device(GroupId(9), Some(Arc::new(Quiet)))
            .unwrap();
    let base = SZ_1G;
    for i in 0..512 {
        h.map(base + i * SZ_4K, RAM + i * SZ_4K, SZ_4K, RW).unwrap();
    }
    h.c.dirty_start().unwrap();
    let written = [0u64, 1, 63, 64, 65, 200, 511];
    for &p in &written {
        h.c.dma_rw(dev, Iova(base + p * SZ_4K + 8), &mut [0xab], Access::Write)
            .unwrap();
    }
    let (n, bm) = h.c.unmap_dma_dirty(Iova(base), SZ_2M, SZ_4K).unwrap();
    assert_eq!(n, SZ_2M);
    assert_eq!(bm.len(), 8, "512 bits");
    assert_eq!(set_of(&bm, 512), written.iter().copied().collect());
    assert!(h.iovas().is_empty());
    h.check();
}

/// `update_user_bitmap`, v6.18: a mapping that starts inside a bitmap word is ORed into it.
#[test]
fn reports_club_mappings_that_share_a_word() {
    // Mappings at page 3 (2 pages) and page 5 (70 pages) relative to the request base.
    let h = tracked(vec![GroupSpec::emulated(9)], DirtyMode::KernelExact);
    let dev =
        h.c.register_device(GroupId(9), Some(Arc::new(Quiet)))
            .unwrap();
    h.map(3 * SZ_4K, RAM, 2 * SZ_4K, RW).unwrap();
    h.map(5 * SZ_4K, RAM, 70 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    for p in [4u64, 5, 74] {
        h.c.dma_rw(dev, Iova(p * SZ_4K), &mut [1], Access::Write)
            .unwrap();
    }
    let bm = h.c.dirty_bitmap(Iova(0), 128 * SZ_4K, SZ_4K).unwrap();
    assert_eq!(set_of(&bm, 128), BTreeSet::from([4, 5, 74]));
}

/// `vfio_iommu_type1_unmap_dma` (`verify_bitmap_size`) and `vfio_dma_do_unmap`, v6.18.
#[test]
fn unmap_bitmap_errors() {
    let h = tracked(vec![GroupSpec::emulated(9)], DirtyMode::KernelExact);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    // Not tracking.
    assert_eq!(
        errno(h.c.unmap_dma_dirty(Iova(0), 8 * SZ_4K, SZ_4K)),
        EINVAL
    );
    h.c.dirty_start().unwrap();
    assert_eq!(
        errno(h.c.unmap_dma_dirty(Iova(0), 8 * SZ_4K, SZ_2M)),
        EINVAL,
        "pgsize"
    );
    // An unwritable bitmap: EFAULT, and the mapping stays.
    let mut u = UserBuffer::new(ARG, 48);
    u.bytes[0..4].copy_from_slice(&48u32.to_ne_bytes());
    u.bytes[4..8].copy_from_slice(&raw::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP.to_ne_bytes());
    u.bytes[16..24].copy_from_slice(&(8 * SZ_4K).to_ne_bytes());
    u.bytes[24..32].copy_from_slice(&SZ_4K.to_ne_bytes());
    u.bytes[32..40].copy_from_slice(&8u64.to_ne_bytes());
    u.bytes[40..48].copy_from_slice(&0x7000_0000u64.to_ne_bytes());
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut u)
            .unwrap_err()
            .errno(),
        EFAULT
    );
    assert_eq!(h.iovas(), vec![(0, 8 * SZ_4K)]);
    h.check();
}

/// An IOMMU-backed device writes a few pages through its domain; kernel-exact mode reports
/// every mapped page, precise mode exactly the written ones.
fn device_dma_report(mode: DirtyMode) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let h = tracked(vec![GroupSpec::iommu(1), GroupSpec::emulated(9)], mode);
    h.map(0, RAM, 64 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    for p in [2u64, 3, 40] {
        dma.write(Iova(p * SZ_4K + 16), b"dma!").unwrap();
    }
    let mut back = [0u8; 4];
    dma.read(Iova(40 * SZ_4K + 16), &mut back).unwrap();
    assert_eq!(&back, b"dma!");
    let first = set_of(&h.c.dirty_bitmap(Iova(0), 64 * SZ_4K, SZ_4K).unwrap(), 64);
    dma.write(Iova(7 * SZ_4K), b"x").unwrap();
    let (_, bm) = h.c.unmap_dma_dirty(Iova(0), 64 * SZ_4K, SZ_4K).unwrap();
    h.check();
    (first, set_of(&bm, 64))
}

#[test]
fn device_dma_kernel_exact_reports_every_mapped_page() {
    let (a, b) = device_dma_report(DirtyMode::KernelExact);
    assert_eq!((a.len(), b.len()), (64, 64));
}

#[test]
fn device_dma_precise_reports_exactly_the_written_pages() {
    let (a, b) = device_dma_report(DirtyMode::Precise);
    assert_eq!(a, BTreeSet::from([2, 3, 40]));
    assert_eq!(b, BTreeSet::from([7]));
}

#[test]
fn precise_detach_keeps_what_the_group_wrote() {
    let h = tracked(
        vec![GroupSpec::iommu(1), GroupSpec::emulated(9)],
        DirtyMode::Precise,
    );
    h.map(0, RAM, 16 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    dma.write(Iova(5 * SZ_4K), b"x").unwrap();
    h.step(|c| c.unset_group(GroupId(1))).unwrap();
    assert_eq!(
        dma.write(Iova(6 * SZ_4K), b"y"),
        Err(type1::DmaError::Detached)
    );
    assert_eq!(
        set_of(&h.c.dirty_bitmap(Iova(0), 16 * SZ_4K, SZ_4K).unwrap(), 16),
        BTreeSet::from([5])
    );
}

#[test]
fn mappings_made_while_tracking_start_clean() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::Precise);
    h.c.dirty_start().unwrap();
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    assert!(set_of(&h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap(), 8).is_empty());
    h.c.dma_engine(GroupId(1))
        .unwrap()
        .write(Iova(SZ_4K), b"z")
        .unwrap();
    assert_eq!(
        set_of(&h.c.dirty_bitmap(Iova(0), 8 * SZ_4K, SZ_4K).unwrap(), 8),
        BTreeSet::from([1])
    );
}

#[test]
fn dma_faults_after_unmap_and_on_permissions() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::Precise);
    h.map(0, RAM, SZ_4K, type1::MapFlags::READ).unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    assert!(matches!(
        dma.write(Iova(0), b"x"),
        Err(type1::DmaError::Fault(_))
    ));
    dma.read(Iova(0), &mut [0u8; 4]).unwrap();
    h.unmap(0, SZ_4K, UnmapFlags::empty()).unwrap();
    assert!(matches!(
        dma.read(Iova(0), &mut [0u8; 4]),
        Err(type1::DmaError::Fault(_))
    ));
}

/// A batch of device writes is one transaction with one store: each write is translated for
/// write access first (marking its leaf dirty, as `DmaEngine::write` does), a write the IOMMU
/// refuses stores nothing and the others land; precise mode reports exactly the written pages.
#[test]
fn device_write_batch_lands_each_translated_write_and_marks_exactly_those_pages() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::Precise);
    h.map(0, RAM, 64 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    let page = [0x5au8; 4096];
    let out = dma.write_batch(&[
        (Iova(2 * SZ_4K), &page[..]),
        (Iova(200 * SZ_4K), &page[..]),
        (Iova(40 * SZ_4K), &page[..]),
        (Iova(3 * SZ_4K + 8), &page[..8]),
    ]);
    assert!(
        out[0].is_ok() && out[2].is_ok() && out[3].is_ok(),
        "{out:?}"
    );
    assert!(matches!(out[1], Err(type1::DmaError::Fault(_))), "{out:?}");
    let mut back = [0u8; 16];
    dma.read(Iova(40 * SZ_4K + 100), &mut back).unwrap();
    assert_eq!(back, [0x5a; 16]);
    dma.read(Iova(3 * SZ_4K), &mut back).unwrap();
    assert_eq!(
        back,
        [0, 0, 0, 0, 0, 0, 0, 0, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a]
    );
    assert_eq!(
        set_of(&h.c.dirty_bitmap(Iova(0), 64 * SZ_4K, SZ_4K).unwrap(), 64),
        BTreeSet::from([2, 3, 40])
    );
    h.check();
}

/// User memory that reads everywhere in its buffer but refuses every write (a read-only page).
struct ReadOnly(UserBuffer);

impl type1::UserMemory for ReadOnly {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), u64> {
        self.0.read(addr, buf)
    }
    fn write(&mut self, addr: u64, _data: &[u8]) -> Result<(), u64> {
        Err(addr)
    }
}

/// A `vfio_iommu_type1_dma_unmap` at `ARG` for `[0, size)` with GET_DIRTY_BITMAP and a
/// `vfio_bitmap` of one 8-byte word (4K pages) right after it, at `ARG + 48`; 64 bytes in all.
fn unmap_with_bitmap_arg(size: u64) -> UserBuffer {
    let mut u = UserBuffer::new(ARG, 64);
    let argsz = off::UNMAP_DATA + std::mem::size_of::<raw::vfio_bitmap>();
    assert_eq!(argsz, 48);
    let b = &mut u.bytes;
    uapi::put_u32(b, off::ARGSZ, u32::try_from(argsz).unwrap());
    uapi::put_u32(b, off::FLAGS, raw::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP);
    uapi::put_u64(b, off::UNMAP_IOVA, 0);
    uapi::put_u64(b, off::UNMAP_SIZE, size);
    uapi::put_u64(b, off::UNMAP_DATA + off::BITMAP_PGSIZE, SZ_4K);
    uapi::put_u64(b, off::UNMAP_DATA + off::BITMAP_SIZE, 8);
    uapi::put_u64(b, off::UNMAP_DATA + off::BITMAP_DATA, ARG + 48);
    u
}

/// UNMAP_DMA with GET_DIRTY_BITMAP into a bitmap that can be read but not written: `EFAULT`
/// before the mapping is removed (the kernel fails at the first `copy_to_user`, before
/// `vfio_remove_dma`), and what the device wrote is still reported by a later unmap.
#[test]
fn an_unwritable_bitmap_fails_the_unmap_before_anything_is_removed_or_lost() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::Precise);
    h.map(0, RAM, 8 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    dma.write(Iova(5 * SZ_4K), b"x").unwrap();
    let mut ro = ReadOnly(unmap_with_bitmap_arg(8 * SZ_4K));
    let r = h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut ro);
    assert_eq!(r.unwrap_err().errno(), EFAULT);
    assert_eq!(h.iovas(), vec![(0, 8 * SZ_4K)]);
    h.check();
    let (n, bm) = h.c.unmap_dma_dirty(Iova(0), 8 * SZ_4K, SZ_4K).unwrap();
    assert_eq!((n, set_of(&bm, 8)), (8 * SZ_4K, BTreeSet::from([5])));
}

/// The ioctl UNMAP_DMA with a bitmap reports what the device wrote up to the page-table unmap,
/// in one write of the user's bitmap: the words the range covers, and no other byte.
#[test]
fn ioctl_unmap_with_bitmap_reports_device_writes_and_touches_only_the_ranges_words() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::Precise);
    h.map(0, RAM, 64 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    dma.write(Iova(63 * SZ_4K), b"x").unwrap();
    // The argument, then one bitmap word at ARG + 48, then a sentinel word.
    let mut u = unmap_with_bitmap_arg(64 * SZ_4K);
    u.bytes[56..64].copy_from_slice(&u64::MAX.to_ne_bytes());
    assert_eq!(h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut u), Ok(0));
    let word = |at: usize| u64::from_ne_bytes(u.bytes[at..at + 8].try_into().unwrap());
    assert_eq!(word(48), 1 << 63);
    assert_eq!(word(56), u64::MAX, "the sentinel past the bitmap");
    assert!(h.iovas().is_empty());
    h.check();
}

/// The typed GET_BITMAP fills the caller's words: the words the range needs are overwritten
/// (stale bits cleared), later ones untouched; words too few is `EINVAL` with nothing written
/// and nothing reset.
#[test]
fn typed_get_bitmap_fills_the_callers_words_and_refuses_too_few() {
    let h = tracked(vec![GroupSpec::emulated(9)], DirtyMode::KernelExact);
    h.map(0, RAM, 128 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    let dev =
        h.c.register_device(GroupId(9), Some(Arc::new(Quiet)))
            .unwrap();
    let mut page = [0u8; 1];
    h.c.dma_rw(dev, Iova(70 * SZ_4K), &mut page, Access::Write)
        .unwrap();
    let mut short = [7u64; 1];
    assert_eq!(
        errno(h.c.dirty_bitmap_into(Iova(0), 128 * SZ_4K, SZ_4K, &mut short)),
        EINVAL
    );
    assert_eq!(short, [7]);
    let mut out = [u64::MAX, u64::MAX, 7];
    h.c.dirty_bitmap_into(Iova(0), 128 * SZ_4K, SZ_4K, &mut out)
        .unwrap();
    assert_eq!(out, [0, 1 << 6, 7]);
    // Reported once: the next report is clean.
    h.c.dirty_bitmap_into(Iova(0), 128 * SZ_4K, SZ_4K, &mut out)
        .unwrap();
    assert_eq!(out, [0, 0, 7]);
    // A range with no mapping: clean too, whatever the words held.
    let mut out = [u64::MAX, u64::MAX, 7];
    h.c.dirty_bitmap_into(Iova(SZ_1G), 128 * SZ_4K, SZ_4K, &mut out)
        .unwrap();
    assert_eq!(out, [0, 0, 7]);
}

/// The typed GET_BITMAP into words full of stale ones: two mappings with a gap between them
/// and one word shared by both; only the dirty pages are set afterwards, in the gap, the shared
/// word and the words after the last mapping alike.
#[test]
fn typed_get_bitmap_clears_stale_words_between_and_after_mappings() {
    let h = tracked(vec![GroupSpec::emulated(9)], DirtyMode::KernelExact);
    // Pages [0, 3) and [10, 80): word 0 holds both, word 1 only the second, word 2 neither.
    h.map(0, RAM, 3 * SZ_4K, RW).unwrap();
    h.map(10 * SZ_4K, RAM + 10 * SZ_4K, 70 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    let dev =
        h.c.register_device(GroupId(9), Some(Arc::new(Quiet)))
            .unwrap();
    let mut byte = [0u8; 1];
    for page in [1, 75] {
        h.c.dma_rw(dev, Iova(page * SZ_4K), &mut byte, Access::Write)
            .unwrap();
    }
    let mut out = [u64::MAX; 3];
    h.c.dirty_bitmap_into(Iova(0), 192 * SZ_4K, SZ_4K, &mut out)
        .unwrap();
    assert_eq!(set_of(&out, 192), BTreeSet::from([1, 75]));
}

/// UNMAP_DMA with a bitmap that stops at a mapping whose pins are never released (`EBUSY`
/// after the notifications run out): the mappings removed before it are reported in the user's
/// bitmap all the same, as the kernel writes each report before it removes the next mapping
/// (`vfio_dma_do_unmap`, v6.18).
#[test]
fn an_unmap_that_ends_busy_still_reports_the_mappings_it_removed() {
    let h = tracked(vec![GroupSpec::emulated(9)], DirtyMode::KernelExact);
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.map(4 * SZ_4K, RAM + 4 * SZ_4K, 4 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    // `Quiet` never unpins: the second mapping cannot go.
    let dev =
        h.c.register_device(GroupId(9), Some(Arc::new(Quiet)))
            .unwrap();
    h.c.pin_pages(dev, Iova(5 * SZ_4K), 1, Perm::READ).unwrap();
    let mut byte = [0u8; 1];
    h.c.dma_rw(dev, Iova(SZ_4K), &mut byte, Access::Write)
        .unwrap();
    let mut u = UserBuffer::new(ARG, 56);
    u.bytes[0..4].copy_from_slice(&48u32.to_ne_bytes());
    u.bytes[4..8].copy_from_slice(&raw::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP.to_ne_bytes());
    u.bytes[16..24].copy_from_slice(&(8 * SZ_4K).to_ne_bytes());
    u.bytes[24..32].copy_from_slice(&SZ_4K.to_ne_bytes());
    u.bytes[32..40].copy_from_slice(&8u64.to_ne_bytes());
    u.bytes[40..48].copy_from_slice(&(ARG + 48).to_ne_bytes());
    let r = h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut u);
    assert_eq!(r.unwrap_err().errno(), libc::EBUSY);
    assert_eq!(h.iovas(), vec![(4 * SZ_4K, 4 * SZ_4K)]);
    let word = u64::from_ne_bytes(u.bytes[48..56].try_into().unwrap());
    assert_eq!(word, 1 << 1, "the first mapping's dirty page");
    h.check();
}

/// User memory whose bytes from `limit` on cannot be written (a bitmap straddling a read-only
/// page).
struct WritableBelow(UserBuffer, u64);

impl type1::UserMemory for WritableBelow {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), u64> {
        self.0.read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), u64> {
        if addr + data.len() as u64 > self.1 {
            return Err(addr.max(self.1));
        }
        self.0.write(addr, data)
    }
}

/// A `vfio_iommu_type1_dirty_bitmap` GET_BITMAP request at `ARG` for `[0, size)` at 4K, its
/// bitmap of `words` words at `ARG + 64`.
fn get_bitmap_arg(size: u64, words: u64) -> UserBuffer {
    let mut u = UserBuffer::new(ARG, 64 + 8 * usize::try_from(words).unwrap());
    let get = off::DIRTY_DATA;
    let argsz = get + std::mem::size_of::<raw::vfio_iommu_type1_dirty_bitmap_get>();
    let b = &mut u.bytes;
    uapi::put_u32(b, off::ARGSZ, u32::try_from(argsz).unwrap());
    uapi::put_u32(b, off::FLAGS, GET);
    uapi::put_u64(b, get + off::GET_IOVA, 0);
    uapi::put_u64(b, get + off::GET_SIZE, size);
    uapi::put_u64(b, get + off::GET_BITMAP + off::BITMAP_PGSIZE, SZ_4K);
    uapi::put_u64(b, get + off::GET_BITMAP + off::BITMAP_SIZE, 8 * words);
    uapi::put_u64(b, get + off::GET_BITMAP + off::BITMAP_DATA, ARG + 64);
    u
}

/// `vfio_iova_dirty_bitmap` (v6.18) copies each mapping's report to the user (`update_user_bitmap`)
/// before it clears that mapping's bitmap: with a bitmap whose second word cannot be written, the
/// first mapping's pages are delivered and reset, the call fails with `EFAULT`, and the second
/// mapping's pages are still reported by the next GET_BITMAP. Nothing is lost.
#[test]
fn get_bitmap_delivers_each_mapping_before_resetting_it_so_a_bad_word_loses_nothing() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::Precise);
    h.map(0, RAM, 64 * SZ_4K, RW).unwrap();
    h.map(64 * SZ_4K, RAM + 64 * SZ_4K, 64 * SZ_4K, RW).unwrap();
    h.c.dirty_start().unwrap();
    h.c.dirty_bitmap(Iova(0), 128 * SZ_4K, SZ_4K).unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    dma.write(Iova(3 * SZ_4K), b"x").unwrap();
    dma.write(Iova(70 * SZ_4K), b"x").unwrap();
    let mut u = WritableBelow(get_bitmap_arg(128 * SZ_4K, 2), ARG + 64 + 8);
    let r = h.c.ioctl(uapi::VFIO_IOMMU_DIRTY_PAGES, ARG, &mut u);
    assert_eq!(r.unwrap_err().errno(), EFAULT);
    let word =
        |u: &UserBuffer, at: usize| u64::from_ne_bytes(u.bytes[at..at + 8].try_into().unwrap());
    assert_eq!(
        word(&u.0, 64),
        1 << 3,
        "the first mapping's report was delivered"
    );
    h.check();
    let bm = h.c.dirty_bitmap(Iova(0), 128 * SZ_4K, SZ_4K).unwrap();
    assert_eq!(
        set_of(&bm, 128),
        BTreeSet::from([70]),
        "page 3 was reset, page 70 kept"
    );
}

/// `update_user_bitmap` ORs the user's own first word into a report that starts inside it
/// (`bitmap_or` with the `leftover` read by `copy_from_user`), writes only the words of each
/// mapping's report, and leaves the words of a gap alone.
#[test]
fn get_bitmap_ors_a_shared_first_word_and_leaves_gap_words_alone() {
    let h = tracked(vec![GroupSpec::iommu(1)], DirtyMode::Precise);
    // Pages 4..68 and 200..210: word 0's low bits and word 2 are no mapping's.
    h.map(4 * SZ_4K, RAM, 64 * SZ_4K, RW).unwrap();
    h.map(200 * SZ_4K, RAM + 64 * SZ_4K, 10 * SZ_4K, RW)
        .unwrap();
    h.c.dirty_start().unwrap();
    h.c.dirty_bitmap(Iova(0), 256 * SZ_4K, SZ_4K).unwrap();
    let dma = h.c.dma_engine(GroupId(1)).unwrap();
    dma.write(Iova(5 * SZ_4K), b"x").unwrap();
    dma.write(Iova(201 * SZ_4K), b"x").unwrap();
    let mut u = get_bitmap_arg(256 * SZ_4K, 4);
    let garbage = 0b1001u64 | (1 << 40);
    for (i, w) in [garbage, u64::MAX, u64::MAX, 1 << 63].iter().enumerate() {
        u.bytes[64 + 8 * i..72 + 8 * i].copy_from_slice(&w.to_ne_bytes());
    }
    assert_eq!(h.c.ioctl(uapi::VFIO_IOMMU_DIRTY_PAGES, ARG, &mut u), Ok(0));
    let word = |at: usize| u64::from_ne_bytes(u.bytes[at..at + 8].try_into().unwrap());
    // Word 0: the user's word ORed with the report of pages 4..64 (page 5); word 1: pages
    // 64..68 of the first mapping, overwritten (nothing dirty); word 2: no mapping, untouched;
    // word 3: the second mapping (pages 200..210, page 201), starting inside it: ORed.
    assert_eq!(word(64), garbage | 1 << 5);
    assert_eq!(word(72), 0);
    assert_eq!(word(80), u64::MAX);
    assert_eq!(word(88), 1 << 63 | 1 << 9);
    h.check();
}
