//! A Rust VFIO user driving `/dev/vfio/*` through plain libc calls, as rust-vmm's vfio-ioctls
//! does: run it under the preload (`type1 run --group 7:iommu -- vfio-probe 7`) to check that
//! Rust programs work unmodified. Prints `PASS` and exits 0 when every step behaves.

use std::ffi::CString;
use std::mem::size_of;

use vfio_bindings::bindings::vfio::{
    vfio_group_status, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, VFIO_TYPE1v2_IOMMU,
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_GROUP_FLAGS_VIABLE,
};

const fn io(n: u64) -> u64 {
    (0x3b << 8) | (100 + n)
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn run(group: &str) -> Result<(), String> {
    let path = |p: &str| CString::new(p).map_err(|e| e.to_string());
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let c = unsafe { libc::open(path("/dev/vfio/vfio")?.as_ptr(), libc::O_RDWR) };
    check(c >= 0, "open container")?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let g = unsafe { libc::open(path(&format!("/dev/vfio/{group}"))?.as_ptr(), libc::O_RDWR) };
    check(g >= 0, "open group")?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let v = unsafe { libc::ioctl(c, io(0)) };
    check(v == 0, "VFIO_GET_API_VERSION")?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let e = unsafe { libc::ioctl(c, io(1), u64::from(VFIO_TYPE1v2_IOMMU)) };
    check(e == 1, "VFIO_CHECK_EXTENSION")?;
    let mut status = vfio_group_status {
        argsz: u32::try_from(size_of::<vfio_group_status>()).unwrap_or(0),
        flags: 0,
    };
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::ioctl(g, io(3), &mut status) };
    check(
        r == 0 && status.flags & VFIO_GROUP_FLAGS_VIABLE != 0,
        "VFIO_GROUP_GET_STATUS",
    )?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::ioctl(g, io(4), &c) };
    check(r == 0, "VFIO_GROUP_SET_CONTAINER")?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::ioctl(c, io(2), u64::from(VFIO_TYPE1v2_IOMMU)) };
    check(r == 0, "VFIO_SET_IOMMU")?;
    let ram = vec![0u8; 1 << 20];
    let base = (ram.as_ptr() as u64 + 4095) & !4095;
    let map = vfio_iommu_type1_dma_map {
        argsz: u32::try_from(size_of::<vfio_iommu_type1_dma_map>()).unwrap_or(0),
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: base,
        iova: 1 << 32,
        size: 64 << 10,
    };
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::ioctl(c, io(13), &map) };
    check(r == 0, "VFIO_IOMMU_MAP_DMA")?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::ioctl(c, io(13), &map) };
    check(
        r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST),
        "EEXIST",
    )?;
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: u32::try_from(size_of::<vfio_iommu_type1_dma_unmap>()).unwrap_or(0),
        flags: 0,
        iova: 1 << 32,
        size: 64 << 10,
        ..Default::default()
    };
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::ioctl(c, io(14), &mut unmap) };
    check(r == 0 && unmap.size == 64 << 10, "VFIO_IOMMU_UNMAP_DMA")?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::ioctl(g, io(5)) };
    check(r == 0, "VFIO_GROUP_UNSET_CONTAINER")?;
    // SAFETY: a libc call with a NUL-terminated path or a pointer to a live, correctly sized VFIO struct.
    let r = unsafe { libc::close(g) + libc::close(c) };
    check(r == 0, "close")?;
    Ok(())
}

fn main() {
    let group = std::env::args().nth(1).unwrap_or_else(|| "7".to_string());
    match run(&group) {
        Ok(()) => println!("PASS"),
        Err(e) => {
            eprintln!("vfio-probe: {e}");
            std::process::exit(1);
        }
    }
}
