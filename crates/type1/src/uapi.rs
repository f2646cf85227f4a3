//! The VFIO UAPI as this crate uses it: request numbers, struct sizes and field offsets, all
//! derived from `vfio-bindings` (bindgen output of `<linux/vfio.h>`), never hand-copied.
//!
//! Request numbers are `_IO(VFIO_TYPE, VFIO_BASE + n)`; the `n` of each request is the one in the
//! header's `#define VFIO_... _IO(VFIO_TYPE, VFIO_BASE + n)` (`include/uapi/linux/vfio.h`, v6.18).

// Sizes and offsets of UAPI structs are all below 100 bytes (pinned by the tests below).
#![allow(clippy::cast_possible_truncation)]

use std::mem::{offset_of, size_of};

pub use vfio_bindings::bindings::vfio as raw;
use vfio_bindings::bindings::vfio::{
    vfio_bitmap, vfio_info_cap_header, vfio_iommu_type1_dirty_bitmap,
    vfio_iommu_type1_dirty_bitmap_get, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap,
    vfio_iommu_type1_info, vfio_iommu_type1_info_cap_iova_range,
    vfio_iommu_type1_info_cap_migration, vfio_iommu_type1_info_dma_avail, vfio_iova_range,
    VFIO_BASE, VFIO_TYPE,
};

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`.
#[must_use]
pub const fn vfio_io(n: u32) -> u64 {
    ((VFIO_TYPE as u64) << 8) | (VFIO_BASE + n) as u64
}

/// `VFIO_GET_API_VERSION`.
pub const VFIO_GET_API_VERSION: u64 = vfio_io(0);
/// `VFIO_CHECK_EXTENSION`.
pub const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
/// `VFIO_SET_IOMMU`.
pub const VFIO_SET_IOMMU: u64 = vfio_io(2);
/// `VFIO_GROUP_GET_STATUS`.
pub const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
/// `VFIO_GROUP_SET_CONTAINER`.
pub const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
/// `VFIO_GROUP_UNSET_CONTAINER`.
pub const VFIO_GROUP_UNSET_CONTAINER: u64 = vfio_io(5);
/// `VFIO_GROUP_GET_DEVICE_FD`.
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
/// `VFIO_IOMMU_GET_INFO`.
pub const VFIO_IOMMU_GET_INFO: u64 = vfio_io(12);
/// `VFIO_IOMMU_MAP_DMA`.
pub const VFIO_IOMMU_MAP_DMA: u64 = vfio_io(13);
/// `VFIO_IOMMU_UNMAP_DMA`.
pub const VFIO_IOMMU_UNMAP_DMA: u64 = vfio_io(14);
/// `VFIO_IOMMU_ENABLE` (not a type1 request: ENOTTY).
pub const VFIO_IOMMU_ENABLE: u64 = vfio_io(15);
/// `VFIO_IOMMU_DISABLE` (not a type1 request: ENOTTY).
pub const VFIO_IOMMU_DISABLE: u64 = vfio_io(16);
/// `VFIO_IOMMU_DIRTY_PAGES`.
pub const VFIO_IOMMU_DIRTY_PAGES: u64 = vfio_io(17);

const fn sz<T>() -> u32 {
    size_of::<T>() as u32
}

/// `sizeof(struct vfio_iommu_type1_info)`: 24 since v6.6.
pub const INFO_SIZE: u32 = sz::<vfio_iommu_type1_info>();
/// `offsetofend(struct vfio_iommu_type1_info, iova_pgsizes)`: GET_INFO's minsz.
pub const INFO_MINSZ: u32 = (offset_of!(vfio_iommu_type1_info, iova_pgsizes) + 8) as u32;
/// `offsetofend(struct vfio_iommu_type1_dma_map, size)`: MAP_DMA's minsz.
pub const MAP_MINSZ: u32 = (offset_of!(vfio_iommu_type1_dma_map, size) + 8) as u32;
/// `offsetofend(struct vfio_iommu_type1_dma_unmap, size)`: UNMAP_DMA's minsz.
pub const UNMAP_MINSZ: u32 = (offset_of!(vfio_iommu_type1_dma_unmap, size) + 8) as u32;
/// `sizeof(struct vfio_bitmap)`.
pub const BITMAP_SIZE: u32 = sz::<vfio_bitmap>();
/// `offsetofend(struct vfio_iommu_type1_dirty_bitmap, flags)`: DIRTY_PAGES's minsz.
pub const DIRTY_MINSZ: u32 = (offset_of!(vfio_iommu_type1_dirty_bitmap, flags) + 4) as u32;
/// `sizeof(struct vfio_iommu_type1_dirty_bitmap_get)`.
pub const DIRTY_GET_SIZE: u32 = sz::<vfio_iommu_type1_dirty_bitmap_get>();
/// `sizeof(struct vfio_info_cap_header)`.
pub const CAP_HEADER_SIZE: u32 = sz::<vfio_info_cap_header>();
/// `sizeof(struct vfio_iommu_type1_info_cap_migration)`.
pub const CAP_MIGRATION_SIZE: u32 = sz::<vfio_iommu_type1_info_cap_migration>();
/// `sizeof(struct vfio_iommu_type1_info_dma_avail)` (12; the chain pads it to 16 since v6.6).
pub const CAP_DMA_AVAIL_SIZE: u32 = sz::<vfio_iommu_type1_info_dma_avail>();
/// `sizeof(struct vfio_iommu_type1_info_cap_iova_range)` without its ranges.
pub const CAP_IOVA_RANGE_SIZE: u32 = sz::<vfio_iommu_type1_info_cap_iova_range>();
/// `sizeof(struct vfio_iova_range)`.
pub const IOVA_RANGE_SIZE: u32 = sz::<vfio_iova_range>();

/// Field offsets used when decoding or encoding requests.
pub mod off {
    use super::*;
    /// `argsz` (first field of every argsz-style struct).
    pub const ARGSZ: usize = offset_of!(vfio_iommu_type1_dma_map, argsz);
    /// `flags`.
    pub const FLAGS: usize = offset_of!(vfio_iommu_type1_dma_map, flags);
    /// `dma_map.vaddr`.
    pub const MAP_VADDR: usize = offset_of!(vfio_iommu_type1_dma_map, vaddr);
    /// `dma_map.iova`.
    pub const MAP_IOVA: usize = offset_of!(vfio_iommu_type1_dma_map, iova);
    /// `dma_map.size`.
    pub const MAP_SIZE: usize = offset_of!(vfio_iommu_type1_dma_map, size);
    /// `dma_unmap.iova`.
    pub const UNMAP_IOVA: usize = offset_of!(vfio_iommu_type1_dma_unmap, iova);
    /// `dma_unmap.size`.
    pub const UNMAP_SIZE: usize = offset_of!(vfio_iommu_type1_dma_unmap, size);
    /// `dma_unmap.data` (the `vfio_bitmap`).
    pub const UNMAP_DATA: usize = offset_of!(vfio_iommu_type1_dma_unmap, data);
    /// `vfio_bitmap.pgsize`.
    pub const BITMAP_PGSIZE: usize = offset_of!(vfio_bitmap, pgsize);
    /// `vfio_bitmap.size`.
    pub const BITMAP_SIZE: usize = offset_of!(vfio_bitmap, size);
    /// `vfio_bitmap.data`.
    pub const BITMAP_DATA: usize = offset_of!(vfio_bitmap, data);
    /// `dirty_bitmap.data`.
    pub const DIRTY_DATA: usize = offset_of!(vfio_iommu_type1_dirty_bitmap, data);
    /// `dirty_bitmap_get.iova`.
    pub const GET_IOVA: usize = offset_of!(vfio_iommu_type1_dirty_bitmap_get, iova);
    /// `dirty_bitmap_get.size`.
    pub const GET_SIZE: usize = offset_of!(vfio_iommu_type1_dirty_bitmap_get, size);
    /// `dirty_bitmap_get.bitmap`.
    pub const GET_BITMAP: usize = offset_of!(vfio_iommu_type1_dirty_bitmap_get, bitmap);
    /// `info.iova_pgsizes`.
    pub const INFO_PGSIZES: usize = offset_of!(vfio_iommu_type1_info, iova_pgsizes);
    /// `info.cap_offset`.
    pub const INFO_CAP_OFFSET: usize = offset_of!(vfio_iommu_type1_info, cap_offset);
    /// `cap_header.id`.
    pub const CAP_ID: usize = offset_of!(vfio_info_cap_header, id);
    /// `cap_header.version`.
    pub const CAP_VERSION: usize = offset_of!(vfio_info_cap_header, version);
    /// `cap_header.next`.
    pub const CAP_NEXT: usize = offset_of!(vfio_info_cap_header, next);
    /// `cap_migration.flags`.
    pub const MIG_FLAGS: usize = offset_of!(vfio_iommu_type1_info_cap_migration, flags);
    /// `cap_migration.pgsize_bitmap`.
    pub const MIG_PGSIZE: usize = offset_of!(vfio_iommu_type1_info_cap_migration, pgsize_bitmap);
    /// `cap_migration.max_dirty_bitmap_size`.
    pub const MIG_MAX: usize =
        offset_of!(vfio_iommu_type1_info_cap_migration, max_dirty_bitmap_size);
    /// `dma_avail.avail`.
    pub const AVAIL: usize = offset_of!(vfio_iommu_type1_info_dma_avail, avail);
    /// `cap_iova_range.nr_iovas`.
    pub const NR_IOVAS: usize = offset_of!(vfio_iommu_type1_info_cap_iova_range, nr_iovas);
    /// `cap_iova_range.iova_ranges`.
    pub const IOVA_RANGES: usize = offset_of!(vfio_iommu_type1_info_cap_iova_range, iova_ranges);
    /// `iova_range.start`.
    pub const RANGE_START: usize = offset_of!(vfio_iova_range, start);
    /// `iova_range.end`.
    pub const RANGE_END: usize = offset_of!(vfio_iova_range, end);
}

/// Reads a native-endian `u32` at `at`.
#[must_use]
pub fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

/// Reads a native-endian `u64` at `at`.
#[must_use]
pub fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

/// Writes a native-endian `u16` at `at`.
pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

/// Writes a native-endian `u32` at `at`.
pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Writes a native-endian `u64` at `at`.
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_spec_table() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3B64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3B65);
        assert_eq!(VFIO_SET_IOMMU, 0x3B66);
        assert_eq!(VFIO_IOMMU_GET_INFO, 0x3B70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3B71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3B72);
        assert_eq!(VFIO_IOMMU_ENABLE, 0x3B73);
        assert_eq!(VFIO_IOMMU_DISABLE, 0x3B74);
        assert_eq!(VFIO_IOMMU_DIRTY_PAGES, 0x3B75);
    }

    #[test]
    fn sizes_and_minsz_match_the_uapi_header() {
        assert_eq!(INFO_SIZE, 24);
        assert_eq!(INFO_MINSZ, 16);
        assert_eq!(MAP_MINSZ, 32);
        assert_eq!(UNMAP_MINSZ, 24);
        assert_eq!(BITMAP_SIZE, 24);
        assert_eq!(DIRTY_MINSZ, 8);
        assert_eq!(DIRTY_GET_SIZE, 40);
        assert_eq!(CAP_MIGRATION_SIZE, 32);
        assert_eq!(CAP_DMA_AVAIL_SIZE, 12);
        assert_eq!(CAP_IOVA_RANGE_SIZE, 16);
        assert_eq!(IOVA_RANGE_SIZE, 16);
        assert_eq!(off::MIG_PGSIZE, 16);
        assert_eq!(off::UNMAP_DATA, 24);
    }
}
