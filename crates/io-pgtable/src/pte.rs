//! Bit-exact LPAE descriptors (`drivers/iommu/io-pgtable-arm.c`, v6.18: `ARM_LPAE_PTE_*`,
//! `paddr_to_iopte`, `iopte_to_paddr`, `arm_lpae_prot_to_pte`).
//!
//! Source: `io-pgtable-arm.c` (`ARM_LPAE_PTE_*`, `paddr_to_iopte`, `iopte_to_paddr`,
//! `arm_lpae_prot_to_pte`, `iopte_leaf`, `iopte_table`). A raw descriptor is a `u64`; [`Descriptor`]
//! is its decoded form. Zero is always invalid.

use crate::addr::PhysAddr;
use crate::cfg::{Format, Geometry, Granule, Quirks, MAIR_IDX_CACHE, MAIR_IDX_DEV, MAIR_IDX_NC};
use crate::prot::Prot;

/// Bits 1:0: descriptor type.
pub const TYPE_MASK: u64 = 0b11;
/// Type of a block (levels 0-2).
pub const TYPE_BLOCK: u64 = 0b01;
/// Type of a table descriptor (levels 0-2).
pub const TYPE_TABLE: u64 = 0b11;
/// Type of a page (level 3).
pub const TYPE_PAGE: u64 = 0b11;
/// Bit 0: valid.
pub const VALID: u64 = 1 << 0;
/// Bits 4:2: stage-1 AttrIndx.
pub const ATTRINDX_SHIFT: u32 = 2;
/// Bit 5: non-secure (stage-1 leaf).
pub const NS: u64 = 1 << 5;
/// Bit 6: AP\[1\], unprivileged access (stage 1).
pub const AP_UNPRIV: u64 = 1 << 6;
/// Bit 7: AP\[2\], read-only; the hardware "clean" bit under DBM (stage 1).
pub const AP_RDONLY: u64 = 1 << 7;
/// Bit number of [`AP_RDONLY`].
pub const AP_RDONLY_BIT: u32 = 7;
/// Bits 7:6 = 01: stage-2 read permission.
pub const HAP_READ: u64 = 1 << 6;
/// Bits 7:6 = 10: stage-2 write permission.
pub const HAP_WRITE: u64 = 1 << 7;
/// Bits 9:8: shareability.
pub const SH_SHIFT: u32 = 8;
/// Inner shareable.
pub const SH_IS: u64 = 3 << SH_SHIFT;
/// Outer shareable.
pub const SH_OS: u64 = 2 << SH_SHIFT;
/// Bit 10: access flag.
pub const AF: u64 = 1 << 10;
/// Bit 11: not global.
pub const NG: u64 = 1 << 11;
/// Bit 51: dirty bit modifier (hardware dirty tracking).
pub const DBM: u64 = 1 << 51;
/// Bit 52: contiguous hint (never set by this crate).
pub const CONT: u64 = 1 << 52;
/// Bits 54:53: execute never (UXN and PXN).
pub const XN: u64 = 3 << 53;
/// Bit 55: software bit used by non-coherent table publication (never set by this crate).
pub const SW_SYNC: u64 = 1 << 55;
/// Bit 63: NSTABLE in table descriptors.
pub const NSTABLE: u64 = 1 << 63;
/// Stage-2 MemAttr: outer and inner write-back.
pub const MEMATTR_OIWB: u64 = 0xf << 2;
/// Stage-2 MemAttr: non-cacheable.
pub const MEMATTR_NC: u64 = 0x5 << 2;
/// Stage-2 MemAttr: device.
pub const MEMATTR_DEV: u64 = 0x1 << 2;
/// Stage-2 MemAttr with FWB: write-back.
pub const MEMATTR_FWB_WB: u64 = 0x6 << 2;
/// Bits 47:12: output address.
pub const ADDR_MASK: u64 = ((1u64 << 48) - 1) & !((1u64 << 12) - 1);

/// Every bit of a leaf that describes its attributes rather than its type or address: what a
/// block passes on to the pages it is split into. Unlike the kernel's old `iopte_prot()` masks,
/// this keeps DBM (and the dirty state in AP\[2\]), so a split block stays tracked
/// (docs/SEMANTICS.md, "The page table").
pub const LEAF_ATTR_MASK: u64 = !(ADDR_MASK | TYPE_MASK | CONT | SW_SYNC);

/// `paddr_to_iopte`: packs PA\[51:48\] into bits 15:12 for the 64K granule.
#[inline]
#[must_use]
pub const fn paddr_to_iopte(pa: u64) -> u64 {
    (pa | (pa >> 36)) & ADDR_MASK
}

/// `iopte_to_paddr`: the output address of a leaf or table descriptor.
#[inline]
#[must_use]
pub const fn iopte_to_paddr(pte: u64, granule: Granule) -> u64 {
    let x = pte & ADDR_MASK;
    match granule {
        Granule::Size64K => (x | (x << 36)) & (ADDR_MASK << 4),
        Granule::Size4K | Granule::Size16K => x,
    }
}

/// `iopte_leaf`: a block at levels 0-2, a page at level 3.
#[inline]
#[must_use]
pub const fn is_leaf(pte: u64, lvl: u32) -> bool {
    if lvl == 3 {
        pte & TYPE_MASK == TYPE_PAGE
    } else {
        pte & TYPE_MASK == TYPE_BLOCK
    }
}

/// `iopte_table`: a table descriptor (never at level 3).
#[inline]
#[must_use]
pub const fn is_table(pte: u64, lvl: u32) -> bool {
    lvl != 3 && pte & TYPE_MASK == TYPE_TABLE
}

/// `iopte_writeable_dirty` (v6.18): DBM set and AP\[2\] clear.
#[inline]
#[must_use]
pub const fn is_writable_dirty(pte: u64) -> bool {
    pte & (AP_RDONLY | DBM) == DBM
}

/// `arm_lpae_prot_to_pte` (v6.18): attribute bits for a leaf, without type or address.
#[must_use]
pub fn prot_to_pte(geo: &Geometry, prot: Prot) -> u64 {
    let r = prot.contains(Prot::READ);
    let w = prot.contains(Prot::WRITE);
    let mut pte = match geo.format {
        Format::ArmLpaeS1 => {
            let mut pte = NG;
            if !w && r {
                pte |= AP_RDONLY;
            } else if geo.quirks.contains(Quirks::ARM_HD) {
                pte |= DBM;
            }
            if !prot.contains(Prot::PRIV) {
                pte |= AP_UNPRIV;
            }
            pte
        }
        Format::ArmLpaeS2 => {
            let mut pte = 0;
            if r {
                pte |= HAP_READ;
            }
            if w {
                pte |= HAP_WRITE;
            }
            pte
        }
    };
    pte |= match geo.format {
        Format::ArmLpaeS2 => {
            if prot.contains(Prot::MMIO) {
                MEMATTR_DEV
            } else if prot.contains(Prot::CACHE) {
                if geo.quirks.contains(Quirks::ARM_S2FWB) {
                    MEMATTR_FWB_WB
                } else {
                    MEMATTR_OIWB
                }
            } else {
                MEMATTR_NC
            }
        }
        Format::ArmLpaeS1 => {
            let idx = if prot.contains(Prot::MMIO) {
                MAIR_IDX_DEV
            } else if prot.contains(Prot::CACHE) {
                MAIR_IDX_CACHE
            } else {
                MAIR_IDX_NC
            };
            idx << ATTRINDX_SHIFT
        }
    };
    pte |= if prot.contains(Prot::CACHE) {
        SH_IS
    } else {
        SH_OS
    };
    if prot.contains(Prot::NOEXEC) {
        pte |= XN;
    }
    if geo.quirks.contains(Quirks::ARM_NS) {
        pte |= NS;
    }
    pte | AF
}

/// A leaf descriptor with `attrs` at `lvl` for `pa` (`__arm_lpae_init_pte`).
#[inline]
#[must_use]
pub const fn make_leaf(attrs: u64, lvl: u32, pa: u64) -> u64 {
    let ty = if lvl == 3 { TYPE_PAGE } else { TYPE_BLOCK };
    attrs | ty | paddr_to_iopte(pa)
}

/// A table descriptor pointing at a table at `table_addr` (`arm_lpae_install_table`).
#[inline]
#[must_use]
pub fn make_table(geo: &Geometry, table_addr: u64) -> u64 {
    let ns = if geo.quirks.contains(Quirks::ARM_NS) {
        NSTABLE
    } else {
        0
    };
    paddr_to_iopte(table_addr) | TYPE_TABLE | ns
}

/// What a leaf allows a device to do, decoded from its permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafPerms {
    /// Reads are allowed.
    pub read: bool,
    /// Writes are allowed (possibly after a hardware dirty update).
    pub write: bool,
    /// Writes first need AP\[2\] cleared (DBM set, currently clean).
    pub write_needs_dirty: bool,
}

/// Decodes the permissions of a leaf for `format`.
#[inline]
#[must_use]
pub const fn leaf_perms(format: Format, pte: u64) -> LeafPerms {
    match format {
        Format::ArmLpaeS1 => {
            let rdonly = pte & AP_RDONLY != 0;
            let dbm = pte & DBM != 0;
            LeafPerms {
                read: true,
                write: !rdonly || dbm,
                write_needs_dirty: rdonly && dbm,
            }
        }
        Format::ArmLpaeS2 => LeafPerms {
            read: pte & HAP_READ != 0,
            write: pte & HAP_WRITE != 0,
            write_needs_dirty: false,
        },
    }
}

/// The kind of a decoded descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Neither leaf nor table: a hole (zero is always this).
    Invalid,
    /// A table descriptor, with the address of the next-level table in table memory.
    Table {
        /// Table-memory address of the next level.
        table: u64,
    },
    /// A block (levels 0-2) or page (level 3).
    Leaf {
        /// Output address.
        pa: PhysAddr,
        /// Level it sits at.
        lvl: u32,
        /// Attribute bits ([`LEAF_ATTR_MASK`]).
        attrs: u64,
    },
}

impl Descriptor {
    /// Decodes `pte` found at `lvl` of a table with `granule`.
    #[must_use]
    pub const fn decode(pte: u64, lvl: u32, granule: Granule) -> Descriptor {
        if is_leaf(pte, lvl) {
            Descriptor::Leaf {
                pa: PhysAddr(iopte_to_paddr(pte, granule)),
                lvl,
                attrs: pte & LEAF_ATTR_MASK,
            }
        } else if is_table(pte, lvl) {
            Descriptor::Table {
                table: iopte_to_paddr(pte, granule),
            }
        } else {
            Descriptor::Invalid
        }
    }

    /// Encodes back to the raw descriptor (inverse of [`Descriptor::decode`] for valid input).
    #[must_use]
    pub fn encode(self, geo: &Geometry) -> u64 {
        match self {
            Descriptor::Invalid => 0,
            Descriptor::Table { table } => make_table(geo, table),
            Descriptor::Leaf { pa, lvl, attrs } => make_leaf(attrs, lvl, pa.raw()),
        }
    }
}
