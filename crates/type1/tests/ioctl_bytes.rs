//! The ioctl wrappers at byte level: argsz/minsz, flag masks, write-back
//! (`vfio_iommu_type1_map_dma`, `vfio_iommu_type1_unmap_dma`, v6.18).

mod common;
use common::*;
use libc::{EFAULT, EINVAL, EOVERFLOW};
use type1::uapi::{self, raw};
use type1::UserBuffer;

const ARG: u64 = 0x10_0000;

fn map_args(argsz: u32, flags: u32, vaddr: u64, iova: u64, size: u64) -> UserBuffer {
    let mut u = UserBuffer::new(ARG, 64);
    u.bytes[0..4].copy_from_slice(&argsz.to_ne_bytes());
    u.bytes[4..8].copy_from_slice(&flags.to_ne_bytes());
    u.bytes[8..16].copy_from_slice(&vaddr.to_ne_bytes());
    u.bytes[16..24].copy_from_slice(&iova.to_ne_bytes());
    u.bytes[24..32].copy_from_slice(&size.to_ne_bytes());
    u
}

fn unmap_args(argsz: u32, flags: u32, iova: u64, size: u64) -> UserBuffer {
    let mut u = UserBuffer::new(ARG, 128);
    u.bytes[0..4].copy_from_slice(&argsz.to_ne_bytes());
    u.bytes[4..8].copy_from_slice(&flags.to_ne_bytes());
    u.bytes[8..16].copy_from_slice(&iova.to_ne_bytes());
    u.bytes[16..24].copy_from_slice(&size.to_ne_bytes());
    u
}

fn size_field(u: &UserBuffer) -> u64 {
    u64::from_ne_bytes(u.bytes[16..24].try_into().unwrap())
}

const RWF: u32 = raw::VFIO_DMA_MAP_FLAG_READ | raw::VFIO_DMA_MAP_FLAG_WRITE;

#[test]
fn map_wrapper_checks_argsz_then_flags() {
    let h = H::iommu(raw::VFIO_TYPE1v2_IOMMU.into());
    let mut u = map_args(31, RWF, RAM, 0, SZ_4K);
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_MAP_DMA, ARG, &mut u)
            .unwrap_err()
            .errno(),
        EINVAL
    );
    let mut u = map_args(32, RWF | 8, RAM, 0, SZ_4K);
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_MAP_DMA, ARG, &mut u)
            .unwrap_err()
            .errno(),
        EINVAL
    );
    let mut u = map_args(32, RWF, RAM, 0, SZ_4K);
    assert_eq!(h.c.ioctl(uapi::VFIO_IOMMU_MAP_DMA, ARG, &mut u), Ok(0));
    // A bigger argsz is fine; the argument must be readable.
    let mut u = map_args(64, RWF, RAM, SZ_4K, SZ_4K);
    assert_eq!(h.c.ioctl(uapi::VFIO_IOMMU_MAP_DMA, ARG, &mut u), Ok(0));
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_MAP_DMA, ARG + 40, &mut u)
            .unwrap_err()
            .errno(),
        EFAULT
    );
    let mut u = map_args(32, RWF, RAM, u64::MAX - 0xfff, 0x2000);
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_MAP_DMA, ARG, &mut u)
            .unwrap_err()
            .errno(),
        EOVERFLOW
    );
    h.check();
}

#[test]
fn unmap_writes_back_the_size_only_on_success() {
    let h = H::iommu(raw::VFIO_TYPE1v2_IOMMU.into());
    h.map(0, RAM, 4 * SZ_4K, RW).unwrap();
    h.map(SZ_2M, RAM, 4 * SZ_4K, RW).unwrap();
    // A v2 bisection error: nothing written back.
    let mut u = unmap_args(24, 0, SZ_4K, SZ_4K);
    let before = u.clone();
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut u)
            .unwrap_err()
            .errno(),
        EINVAL
    );
    assert_eq!(u, before);
    // Success: size = bytes unmapped (less than requested here: a gap).
    let mut u = unmap_args(24, 0, 0, SZ_1G);
    assert_eq!(h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut u), Ok(0));
    assert_eq!(size_field(&u), 8 * SZ_4K);
    h.check();
}

#[test]
fn unmap_wrapper_checks_in_order() {
    let h = H::iommu(raw::VFIO_TYPE1v2_IOMMU.into());
    let run = |argsz, flags, iova, size| {
        let mut u = unmap_args(argsz, flags, iova, size);
        h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut u)
            .map_err(|e| e.errno())
    };
    let bm = raw::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
    assert_eq!(run(23, 0, 0, SZ_4K), Err(EINVAL));
    assert_eq!(run(24, 8, 0, SZ_4K), Err(EINVAL), "unknown flag");
    assert_eq!(
        run(24, bm | raw::VFIO_DMA_UNMAP_FLAG_ALL, 0, 0),
        Err(EINVAL)
    );
    assert_eq!(
        run(24, bm | raw::VFIO_DMA_UNMAP_FLAG_VADDR, 0, SZ_4K),
        Err(EINVAL)
    );
    assert_eq!(
        run(47, bm, 0, SZ_4K),
        Err(EINVAL),
        "argsz must cover the vfio_bitmap"
    );
    // The bitmap (all zero here): access_ok passes for NULL data, verify_bitmap_size fails.
    assert_eq!(run(48, bm, 0, SZ_4K), Err(EINVAL));
    assert_eq!(
        run(
            24,
            raw::VFIO_DMA_UNMAP_FLAG_ALL | raw::VFIO_DMA_UNMAP_FLAG_VADDR,
            0,
            0
        ),
        Ok(0)
    );
}

#[test]
fn unmap_bitmap_must_be_readable() {
    let h = H::iommu(raw::VFIO_TYPE1v2_IOMMU.into());
    let mut u = unmap_args(48, raw::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, 0, SZ_4K);
    u.bytes.truncate(30);
    assert_eq!(
        h.c.ioctl(uapi::VFIO_IOMMU_UNMAP_DMA, ARG, &mut u)
            .unwrap_err()
            .errno(),
        EFAULT
    );
}
