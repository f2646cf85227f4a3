//! The VFIO regions of a PCI function: indexes, file offsets, `VFIO_DEVICE_GET_REGION_INFO`
//! contents with its capability chain, and the `mmap` rules.
//!
//! Region `index` starts at file offset `index << 40` (`VFIO_PCI_INDEX_TO_OFFSET`,
//! `VFIO_PCI_OFFSET_SHIFT`); an offset inside a region is `pos`, and ranges are `(pos, len)`
//! with an exclusive end. Indexes 0–5 are the BARs (size 0 and flags 0 when unimplemented), 6
//! the ROM, 7 config space, 8 VGA (absent: `EINVAL`, as for a non-VGA function). The info and
//! the mmap checks are `vfio_pci_ioctl_get_region_info` and `vfio_pci_core_mmap` (v6.18,
//! `drivers/vfio/pci/vfio_pci_core.c`). An mmap-able BAR holding the MSI-X table carries
//! `MSIX_MAPPABLE` (v4.16+) by default, or, with [`MsixMmap::Sparse`], a `SPARSE_MMAP` list of
//! the BAR minus the page-rounded table and an mmap refusal over the table (v4.7–v4.15,
//! `msix_sparse_mmap_cap`).

use std::mem::{offset_of, size_of};

use vfio_bindings::bindings::vfio::{
    vfio_info_cap_header, vfio_region_info, vfio_region_info_cap_sparse_mmap,
    vfio_region_info_cap_type, vfio_region_sparse_mmap_area, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_NUM_REGIONS, VFIO_PCI_ROM_REGION_INDEX,
    VFIO_PCI_VGA_REGION_INDEX, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
    VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_CAP_TYPE, VFIO_REGION_INFO_FLAG_CAPS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
    VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED, VFIO_REGION_TYPE_MIGRATION_DEPRECATED,
};

use crate::error::{Error, Result};
use crate::pci::{BarBacking, FunctionSpec, NUM_BARS};
use crate::PAGE_SIZE;

/// `VFIO_PCI_OFFSET_SHIFT`.
pub const OFFSET_SHIFT: u32 = 40;
/// `VFIO_PCI_OFFSET_MASK`.
pub const OFFSET_MASK: u64 = (1 << OFFSET_SHIFT) - 1;
/// `VFIO_PCI_NUM_REGIONS`: the first device-specific index (the v1 migration region, when
/// present, is the only one).
pub const NUM_REGIONS: u32 = VFIO_PCI_NUM_REGIONS;

/// A VFIO region index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionIndex(pub u32);

impl RegionIndex {
    /// BAR 0.
    pub const BAR0: RegionIndex = RegionIndex(VFIO_PCI_BAR0_REGION_INDEX);
    /// The expansion ROM.
    pub const ROM: RegionIndex = RegionIndex(VFIO_PCI_ROM_REGION_INDEX);
    /// Config space.
    pub const CONFIG: RegionIndex = RegionIndex(VFIO_PCI_CONFIG_REGION_INDEX);
    /// Legacy VGA.
    pub const VGA: RegionIndex = RegionIndex(VFIO_PCI_VGA_REGION_INDEX);

    /// BAR `n` (0..=5).
    #[must_use]
    pub fn bar(n: usize) -> RegionIndex {
        RegionIndex(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The BAR slot, if this is a BAR.
    #[must_use]
    pub fn as_bar(self) -> Option<usize> {
        let n = usize::try_from(self.0).ok()?;
        (n < NUM_BARS).then_some(n)
    }

    /// `VFIO_PCI_INDEX_TO_OFFSET`.
    #[must_use]
    pub fn offset(self) -> u64 {
        u64::from(self.0) << OFFSET_SHIFT
    }

    /// `VFIO_PCI_OFFSET_TO_INDEX` and the position inside the region.
    #[must_use]
    pub fn split(file_offset: u64) -> (RegionIndex, u64) {
        let index = u32::try_from(file_offset >> OFFSET_SHIFT).unwrap_or(u32::MAX);
        (RegionIndex(index), file_offset & OFFSET_MASK)
    }
}

/// How an mmap-able BAR holding the MSI-X table is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MsixMmap {
    /// The whole BAR maps; `MSIX_MAPPABLE` capability (v4.16+).
    #[default]
    Mappable,
    /// `SPARSE_MMAP` around the page-rounded table, which cannot be mapped (v4.7–v4.15).
    Sparse,
}

/// Whether a mapping is shared (`VM_SHARED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSharing {
    /// `MAP_SHARED`.
    Shared,
    /// `MAP_PRIVATE`.
    Private,
}

/// A range of the device file a program may `mmap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmapArea {
    /// The region.
    pub index: RegionIndex,
    /// File offset of the first byte (region offset + area offset).
    pub file_offset: u64,
    /// Bytes.
    pub size: u64,
}

/// What `VFIO_DEVICE_GET_REGION_INFO` reports for one index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// The index.
    pub index: RegionIndex,
    /// `VFIO_REGION_INFO_FLAG_*` (CAPS included when there are caps).
    pub flags: u32,
    /// Size in bytes.
    pub size: u64,
    /// File offset.
    pub offset: u64,
    /// The capability chain as it goes to `arg + sizeof(vfio_region_info)`: `next` fields
    /// already count from the start of the info struct (`vfio_info_cap_shift`).
    pub caps: Vec<u8>,
}

/// `sizeof(struct vfio_region_info)`.
pub const REGION_INFO_SIZE: usize = size_of::<vfio_region_info>();

/// The region layout of a function.
#[derive(Debug, Clone)]
pub struct Regions {
    bar_size: [u64; NUM_BARS],
    bar_mmap: [bool; NUM_BARS],
    rom_size: u64,
    config_size: u64,
    /// The MSI-X table: BAR slot and `[start, end)` in it.
    msix_table: Option<(usize, u64, u64)>,
    policy: MsixMmap,
    /// The deprecated v1 migration region at index 9.
    v1: bool,
}

impl Regions {
    /// The regions of `spec` with config space of `config_size` bytes.
    #[must_use]
    pub fn new(spec: &FunctionSpec, config_size: usize, policy: MsixMmap) -> Self {
        let mut bar_size = [0; NUM_BARS];
        let mut bar_mmap = [false; NUM_BARS];
        for (i, b) in spec.bars.iter().enumerate() {
            if let Some(b) = b {
                bar_size[i] = b.size;
                bar_mmap[i] = b.backing == BarBacking::Memory;
            }
        }
        let msix_table = spec.caps.msix_cap().map(|x| {
            let start = u64::from(x.table.offset);
            (usize::from(x.table.bar), start, start + x.table_bytes())
        });
        Regions {
            bar_size,
            bar_mmap,
            rom_size: spec.rom.as_ref().map_or(0, |r| r.size),
            config_size: config_size as u64,
            msix_table,
            policy,
            v1: false,
        }
    }

    /// Adds (or not) the deprecated v1 migration region at index 9
    /// ([`crate::migration::v1`]).
    #[must_use]
    pub fn with_v1_migration(mut self, on: bool) -> Self {
        self.v1 = on;
        self
    }

    /// True if the v1 migration region is present.
    #[must_use]
    pub fn has_v1_migration(&self) -> bool {
        self.v1
    }

    /// Number of regions (`num_regions` of `VFIO_DEVICE_GET_INFO`): 9, plus the v1 migration
    /// region.
    #[must_use]
    pub fn count(&self) -> u32 {
        NUM_REGIONS + u32::from(self.v1)
    }

    /// Size of BAR `slot` (0 if unimplemented).
    #[must_use]
    pub fn bar_size(&self, slot: usize) -> u64 {
        self.bar_size.get(slot).copied().unwrap_or(0)
    }

    /// ROM BAR size (0 without a ROM).
    #[must_use]
    pub fn rom_size(&self) -> u64 {
        self.rom_size
    }

    /// Config space size.
    #[must_use]
    pub fn config_size(&self) -> u64 {
        self.config_size
    }

    /// The MSI-X table: BAR slot and `[start, end)`.
    #[must_use]
    pub fn msix_table(&self) -> Option<(usize, u64, u64)> {
        self.msix_table
    }

    /// `[start, end)` of the MSI-X table in `slot`, page-rounded outwards.
    fn msix_pages(&self, slot: usize) -> Option<(u64, u64)> {
        let (bar, s, e) = self.msix_table?;
        (bar == slot).then(|| (s & !(PAGE_SIZE - 1), e.next_multiple_of(PAGE_SIZE)))
    }

    /// The areas of an mmap-able BAR that may be mapped, as offsets in the BAR.
    fn bar_areas(&self, slot: usize) -> Vec<(u64, u64)> {
        let size = self.bar_size[slot];
        match (self.policy, self.msix_pages(slot)) {
            (MsixMmap::Sparse, Some((s, e))) => {
                let mut v = Vec::new();
                if s > 0 {
                    v.push((0, s));
                }
                if e < size {
                    v.push((e, size - e));
                }
                v
            }
            _ => vec![(0, size)],
        }
    }

    /// `vfio_pci_ioctl_get_region_info` for `index`.
    ///
    /// # Errors
    /// [`Error::NoRegion`] for VGA and indexes past the regions.
    pub fn info(&self, index: RegionIndex) -> Result<RegionInfo> {
        let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        let mut info = RegionInfo {
            index,
            flags: 0,
            size: 0,
            offset: index.offset(),
            caps: Vec::new(),
        };
        if let Some(slot) = index.as_bar() {
            info.size = self.bar_size[slot];
            if info.size == 0 {
                return Ok(info);
            }
            info.flags = rw;
            if self.bar_mmap[slot] {
                info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
                if self.msix_pages(slot).is_some() {
                    info.caps = match self.policy {
                        MsixMmap::Mappable => msix_mappable_cap(),
                        MsixMmap::Sparse => sparse_mmap_cap(&self.bar_areas(slot)),
                    };
                    info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
                }
            }
            return Ok(info);
        }
        match index {
            RegionIndex::ROM => {
                if self.rom_size > 0 {
                    info.flags = VFIO_REGION_INFO_FLAG_READ;
                    info.size = self.rom_size;
                }
                Ok(info)
            }
            RegionIndex::CONFIG => {
                info.flags = rw;
                info.size = self.config_size;
                Ok(info)
            }
            RegionIndex(i) if i == crate::migration::v1::INDEX && self.v1 => {
                info.flags = rw | VFIO_REGION_INFO_FLAG_CAPS;
                info.size = crate::migration::v1::REGION_SIZE;
                info.caps = type_cap(
                    VFIO_REGION_TYPE_MIGRATION_DEPRECATED,
                    VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED,
                );
                Ok(info)
            }
            _ => Err(Error::NoRegion { index: index.0 }),
        }
    }

    /// `vfio_pci_core_mmap`'s checks for a mapping of `len` bytes at `file_offset`, in the
    /// kernel's order.
    ///
    /// # Errors
    /// [`Error::Mmap`] (`EINVAL`).
    pub fn check_mmap(&self, file_offset: u64, len: u64, sharing: MapSharing) -> Result<()> {
        let refuse = |reason| Err(Error::Mmap { reason });
        let (index, pos) = RegionIndex::split(file_offset);
        if index.0 >= self.count() {
            return refuse("index beyond the regions");
        }
        if sharing != MapSharing::Shared {
            return refuse("not MAP_SHARED");
        }
        if index.0 >= NUM_REGIONS {
            return refuse("device-specific region without MMAP");
        }
        let Some(slot) = index.as_bar() else {
            return refuse("ROM, config and VGA cannot be mapped");
        };
        if !self.bar_mmap[slot] {
            return refuse("BAR without MMAP");
        }
        if pos % PAGE_SIZE != 0 {
            return refuse("offset not page aligned");
        }
        let phys_len = self.bar_size[slot].next_multiple_of(PAGE_SIZE);
        match pos.checked_add(len) {
            Some(end) if end <= phys_len && len > 0 => {}
            _ => return refuse("beyond the BAR"),
        }
        if let (MsixMmap::Sparse, Some((s, e))) = (self.policy, self.msix_pages(slot)) {
            if pos < e && s < pos + len {
                return refuse("overlaps the MSI-X table");
            }
        }
        Ok(())
    }

    /// Every file range that may be mapped (whole mmap-able BARs, or their sparse areas).
    #[must_use]
    pub fn mmap_areas(&self) -> Vec<MmapArea> {
        let mut v = Vec::new();
        for slot in 0..NUM_BARS {
            if !self.bar_mmap[slot] {
                continue;
            }
            let index = RegionIndex::bar(slot);
            for (off, size) in self.bar_areas(slot) {
                v.push(MmapArea {
                    index,
                    file_offset: index.offset() + off,
                    size,
                });
            }
        }
        v
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// One capability header with `next` 0 (the chains here hold a single capability).
fn cap_header(buf: &mut [u8], id: u32) {
    put_u16(
        buf,
        offset_of!(vfio_info_cap_header, id),
        u16::try_from(id).unwrap_or(0),
    );
    put_u16(buf, offset_of!(vfio_info_cap_header, version), 1);
    put_u32(buf, offset_of!(vfio_info_cap_header, next), 0);
}

/// `struct vfio_region_info_cap_type` (a device-specific region's type and subtype).
fn type_cap(ty: u32, subtype: u32) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<vfio_region_info_cap_type>()];
    cap_header(&mut b, VFIO_REGION_INFO_CAP_TYPE);
    put_u32(&mut b, offset_of!(vfio_region_info_cap_type, type_), ty);
    put_u32(
        &mut b,
        offset_of!(vfio_region_info_cap_type, subtype),
        subtype,
    );
    b
}

/// `msix_mmappable_cap`: a bare header.
fn msix_mappable_cap() -> Vec<u8> {
    let mut b = vec![0u8; size_of::<vfio_info_cap_header>()];
    cap_header(&mut b, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
    b
}

/// `msix_sparse_mmap_cap`: the areas, padded to 8 bytes (`vfio_info_cap_add`).
fn sparse_mmap_cap(areas: &[(u64, u64)]) -> Vec<u8> {
    let head = size_of::<vfio_region_info_cap_sparse_mmap>();
    let area = size_of::<vfio_region_sparse_mmap_area>();
    let mut b = vec![0u8; (head + area * areas.len()).next_multiple_of(8)];
    cap_header(&mut b, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
    put_u32(
        &mut b,
        offset_of!(vfio_region_info_cap_sparse_mmap, nr_areas),
        u32::try_from(areas.len()).unwrap_or(0),
    );
    let base = offset_of!(vfio_region_info_cap_sparse_mmap, areas);
    for (k, &(off, size)) in areas.iter().enumerate() {
        let at = base + k * area;
        put_u64(
            &mut b,
            at + offset_of!(vfio_region_sparse_mmap_area, offset),
            off,
        );
        put_u64(
            &mut b,
            at + offset_of!(vfio_region_sparse_mmap_area, size),
            size,
        );
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::caps::{BarOffset, CapabilityList, MsixCap};
    use crate::pci::{BarKind, BarSpec, Identity, InterruptPin, Prefetch};

    fn spec() -> FunctionSpec {
        let mut bars = [None; NUM_BARS];
        bars[0] = Some(BarSpec {
            kind: BarKind::Mem32(Prefetch::No),
            size: 1 << 20,
            backing: BarBacking::Mmio,
        });
        bars[2] = Some(BarSpec {
            kind: BarKind::Mem64(Prefetch::Yes),
            size: 16 << 20,
            backing: BarBacking::Memory,
        });
        bars[4] = Some(BarSpec {
            kind: BarKind::Mem32(Prefetch::No),
            size: 16 << 10,
            backing: BarBacking::Memory,
        });
        FunctionSpec {
            identity: Identity {
                vendor_id: 0x1234,
                device_id: 0x11e8,
                revision: 0,
                class_code: 0,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
            },
            bars,
            rom: None,
            pin: InterruptPin::IntA,
            caps: CapabilityList::new().msix(MsixCap {
                table_size: 8,
                table: BarOffset {
                    bar: 4,
                    offset: 0x2000,
                },
                pba: BarOffset {
                    bar: 4,
                    offset: 0x3000,
                },
            }),
        }
    }

    #[test]
    fn offsets_are_index_shifted_by_40() {
        assert_eq!(RegionIndex::CONFIG.offset(), 7 << 40);
        assert_eq!(RegionIndex::split((4 << 40) + 0x10), (RegionIndex(4), 0x10));
    }

    #[test]
    fn absent_bars_have_size_and_flags_zero() {
        let r = Regions::new(&spec(), 256, MsixMmap::Mappable);
        let i = r.info(RegionIndex(1)).unwrap();
        assert_eq!((i.flags, i.size, i.offset), (0, 0, 1 << 40));
        let rom = r.info(RegionIndex::ROM).unwrap();
        assert_eq!((rom.flags, rom.size), (0, 0));
    }

    #[test]
    fn mmio_bar_is_read_write_without_mmap() {
        let r = Regions::new(&spec(), 256, MsixMmap::Mappable);
        let i = r.info(RegionIndex(0)).unwrap();
        assert_eq!(
            i.flags,
            VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
        );
        assert_eq!(i.size, 1 << 20);
    }

    #[test]
    fn msix_bar_carries_msix_mappable() {
        let r = Regions::new(&spec(), 256, MsixMmap::Mappable);
        let i = r.info(RegionIndex(4)).unwrap();
        assert_eq!(i.flags, 0xf);
        assert_eq!(i.caps, vec![3, 0, 1, 0, 0, 0, 0, 0]);
    }

    /// v4.7–v4.15 `msix_sparse_mmap_cap`: a table at 0x2000 of 16 KiB gives two areas.
    #[test]
    fn sparse_policy_lists_the_bar_around_the_table_page() {
        let r = Regions::new(&spec(), 256, MsixMmap::Sparse);
        let i = r.info(RegionIndex(4)).unwrap();
        assert_eq!(i.caps.len(), 16 + 32);
        assert_eq!(u32::from_ne_bytes(i.caps[8..12].try_into().unwrap()), 2);
        assert_eq!(
            u64::from_ne_bytes(i.caps[24..32].try_into().unwrap()),
            0x2000
        );
        assert_eq!(
            u64::from_ne_bytes(i.caps[32..40].try_into().unwrap()),
            0x3000
        );
        assert_eq!(
            u64::from_ne_bytes(i.caps[40..48].try_into().unwrap()),
            0x1000
        );
        r.check_mmap(4 << 40, 0x2000, MapSharing::Shared).unwrap();
        r.check_mmap((4 << 40) + 0x2000, 0x1000, MapSharing::Shared)
            .unwrap_err();
    }

    #[test]
    fn config_is_never_mmap() {
        let r = Regions::new(&spec(), 256, MsixMmap::Mappable);
        let i = r.info(RegionIndex::CONFIG).unwrap();
        assert_eq!((i.flags, i.size), (3, 256));
        r.check_mmap(7 << 40, 4096, MapSharing::Shared).unwrap_err();
    }

    #[test]
    fn vga_and_indexes_past_the_regions_are_einval() {
        let r = Regions::new(&spec(), 256, MsixMmap::Mappable);
        assert_eq!(r.info(RegionIndex::VGA).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(r.info(RegionIndex(9)).unwrap_err().errno(), libc::EINVAL);
    }

    /// `vfio_pci_core_mmap` refusals in order.
    #[test]
    fn mmap_checks_follow_vfio_pci_core_mmap() {
        let r = Regions::new(&spec(), 256, MsixMmap::Mappable);
        let s = MapSharing::Shared;
        r.check_mmap(2 << 40, 16 << 20, s).unwrap();
        r.check_mmap(2 << 40, 4096, MapSharing::Private)
            .unwrap_err();
        r.check_mmap(2 << 40, (16 << 20) + 4096, s).unwrap_err();
        r.check_mmap(0, 4096, s).unwrap_err();
        r.check_mmap(1 << 40, 4096, s).unwrap_err();
        r.check_mmap(6 << 40, 4096, s).unwrap_err();
        r.check_mmap(9 << 40, 4096, s).unwrap_err();
        r.check_mmap(4 << 40, 16 << 10, s).unwrap();
    }

    #[test]
    fn mmap_areas_name_file_offsets() {
        let r = Regions::new(&spec(), 256, MsixMmap::Mappable);
        assert_eq!(
            r.mmap_areas(),
            vec![
                MmapArea {
                    index: RegionIndex(2),
                    file_offset: 2 << 40,
                    size: 16 << 20
                },
                MmapArea {
                    index: RegionIndex(4),
                    file_offset: 4 << 40,
                    size: 16 << 10
                },
            ]
        );
    }
}
