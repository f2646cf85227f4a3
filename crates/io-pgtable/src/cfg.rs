//! Page-table configuration (`struct io_pgtable_cfg`) and the geometry derived from it.
//!
//! Follows `drivers/iommu/io-pgtable-arm.c` and `include/linux/io-pgtable.h` as of v6.18: the
//! `IO_PGTABLE_QUIRK_*` bits, the formats, granule selection (`arm_lpae_restrict_pgsizes`),
//! levels and index decode (`arm_lpae_alloc_pgtable`), stage-2 concatenated tables and VTCR
//! (`arm_64_lpae_alloc_pgtable_s2`, `arm_lpae_concat_mandatory`) and the stage-1 MAIR
//! (`arm_64_lpae_alloc_pgtable_s1`).
//!
//! Levels are numbered as the architecture does: 0..=3, where 3 holds pages.

use crate::error::Error;

/// Largest address size any LPAE granule supports (52 bits, 64K granule only).
pub const MAX_ADDR_BITS: u32 = 52;
/// Largest number of granule pages a concatenated stage-2 PGD may span.
pub const S2_MAX_CONCAT_PAGES: u64 = 16;
/// The MAIR value a stage-1 table reports (`arm_64_lpae_alloc_pgtable_s1`, v6.18): NC, WBRWA,
/// nGnRE, inner-NC/outer-WB.
pub const MAIR_S1: u64 = 0x0000_0000_f404_ff44;
/// MAIR index for Normal non-cacheable memory.
pub const MAIR_IDX_NC: u64 = 0;
/// MAIR index for Normal write-back cacheable memory.
pub const MAIR_IDX_CACHE: u64 = 1;
/// MAIR index for Device-nGnRE memory.
pub const MAIR_IDX_DEV: u64 = 2;

const SZ_4K: u64 = 1 << 12;
const SZ_16K: u64 = 1 << 14;
const SZ_64K: u64 = 1 << 16;
const SZ_2M: u64 = 1 << 21;
const SZ_32M: u64 = 1 << 25;
const SZ_512M: u64 = 1 << 29;
const SZ_1G: u64 = 1 << 30;
const SZ_4T: u64 = 1 << 42;

/// Page-table format (`enum io_pgtable_fmt`, the 64-bit LPAE members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `ARM_64_LPAE_S1`: stage 1 (VA → PA), AP/AttrIndx permissions, optional DBM.
    ArmLpaeS1,
    /// `ARM_64_LPAE_S2`: stage 2 (IPA → PA), HAP/MemAttr permissions, concatenated PGDs.
    ArmLpaeS2,
}

/// Translation granule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB pages; 2M and 1G blocks.
    Size4K,
    /// 16 KiB pages; 32M blocks.
    Size16K,
    /// 64 KiB pages; 512M blocks (and 4T with a 52-bit output).
    Size64K,
}

impl Granule {
    /// The granule in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        match self {
            Granule::Size4K => SZ_4K,
            Granule::Size16K => SZ_16K,
            Granule::Size64K => SZ_64K,
        }
    }

    /// log2 of the granule.
    #[must_use]
    pub const fn shift(self) -> u32 {
        self.bytes().trailing_zeros()
    }

    fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            SZ_4K => Some(Granule::Size4K),
            SZ_16K => Some(Granule::Size16K),
            SZ_64K => Some(Granule::Size64K),
            _ => None,
        }
    }
}

bitflags::bitflags! {
    /// `IO_PGTABLE_QUIRK_*` bits accepted by the LPAE formats (`include/linux/io-pgtable.h`,
    /// v6.18).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Quirks: u32 {
        /// Set NS in leaves and NSTABLE in table descriptors (stage 1).
        const ARM_NS = 1 << 0;
        /// The table serves the upper half of the VA space (stage 1).
        const ARM_TTBR1 = 1 << 5;
        /// Outer write-back walks for a non-coherent walker (stage 1; rejected when coherent).
        const ARM_OUTER_WBWA = 1 << 6;
        /// Hardware dirty tracking: writable stage-1 leaves carry DBM (`arm_lpae_prot_to_pte`,
        /// v6.18).
        const ARM_HD = 1 << 7;
        /// Stage-2 forced write-back (MemAttr 0b0110 for cacheable).
        const ARM_S2FWB = 1 << 8;
        /// Do not warn on -EEXIST or unmapping a hole (no behavioural effect here).
        const NO_WARN = 1 << 9;
    }
}

/// Which stage-2 PGD concatenation rule to apply (`arm_64_lpae_alloc_pgtable_s2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConcatRule {
    /// `arm_lpae_concat_mandatory` (v6.14+): only where Arm DDI0487 requires it.
    #[default]
    Mandatory,
    /// The rule up to v6.13: concatenate whenever the start level is 0 and the PGD has at most 16
    /// entries.
    Legacy,
}

/// The caller's configuration, the input half of `struct io_pgtable_cfg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Table format.
    pub format: Format,
    /// Page and block sizes the hardware supports; restricted to one granule at allocation.
    pub pgsize_bitmap: u64,
    /// Input address bits.
    pub ias: u32,
    /// Output address bits.
    pub oas: u32,
    /// Quirks.
    pub quirks: Quirks,
    /// The CPU page size that steers granule selection (`PAGE_SIZE` in the kernel).
    pub cpu_page_size: u64,
    /// Stage-2 concatenation rule.
    pub concat: ConcatRule,
    /// Most non-root table pages this table may ever hold at once (bounds memory; `ENOMEM` past it).
    pub max_tables: u64,
    /// Where table memory comes from: the heap, or 2 MiB-aligned transparent huge pages.
    pub table_memory: crate::memory::TableMemory,
}

impl Config {
    /// A configuration with the defaults of a typical host: 4K CPU pages, no quirks, the current
    /// concatenation rule, and room for 2^24 tables.
    #[must_use]
    pub fn new(format: Format, pgsize_bitmap: u64, ias: u32, oas: u32) -> Self {
        Config {
            format,
            pgsize_bitmap,
            ias,
            oas,
            quirks: Quirks::empty(),
            cpu_page_size: SZ_4K,
            concat: ConcatRule::Mandatory,
            max_tables: 1 << 24,
            table_memory: crate::memory::TableMemory::Heap,
        }
    }

    /// The same configuration with `quirks`.
    #[must_use]
    pub fn with_quirks(mut self, quirks: Quirks) -> Self {
        self.quirks = quirks;
        self
    }
}

/// Stage-1 translation-control outputs (`arm_lpae_s1_cfg.tcr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S1Registers {
    /// Intermediate physical size encoding.
    pub ips: u32,
    /// Granule encoding (TTBR0 or TTBR1 flavour).
    pub tg: u32,
    /// Shareability of walks.
    pub sh: u32,
    /// Outer cacheability of walks.
    pub orgn: u32,
    /// Inner cacheability of walks.
    pub irgn: u32,
    /// 64 - ias.
    pub tsz: u32,
    /// Memory attribute indirection.
    pub mair: u64,
}

/// Stage-2 translation-control outputs (`arm_lpae_s2_cfg.vtcr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2Registers {
    /// Physical size encoding.
    pub ps: u32,
    /// Granule encoding.
    pub tg: u32,
    /// Shareability of walks.
    pub sh: u32,
    /// Outer cacheability of walks.
    pub orgn: u32,
    /// Inner cacheability of walks.
    pub irgn: u32,
    /// Starting level encoding (SL0).
    pub sl: u32,
    /// 64 - ias.
    pub tsz: u32,
}

/// Register outputs of an allocated table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registers {
    /// Stage-1 TCR fields and MAIR.
    S1(S1Registers),
    /// Stage-2 VTCR fields.
    S2(S2Registers),
}

/// Everything derived from a [`Config`] at allocation: the output half of `io_pgtable_cfg` plus
/// the private geometry of `struct arm_lpae_io_pgtable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Format.
    pub format: Format,
    /// Quirks in force.
    pub quirks: Quirks,
    /// The granule chosen.
    pub granule: Granule,
    /// Supported sizes after restriction to the granule.
    pub pgsize_bitmap: u64,
    /// Input address bits after clamping.
    pub ias: u32,
    /// Output address bits after clamping.
    pub oas: u32,
    /// `pg_shift - 3`.
    pub bits_per_level: u32,
    /// First level walked.
    pub start_level: u32,
    /// Index bits of the PGD (after any stage-2 concatenation).
    pub pgd_bits: u32,
    /// Register outputs.
    pub registers: Registers,
}

/// `arm_lpae_restrict_pgsizes` (v6.18): returns (granule, restricted bitmap, ias, oas).
fn restrict_pgsizes(cfg: &Config) -> (Option<Granule>, u64, u32, u32) {
    let page = cfg.cpu_page_size;
    let bitmap = cfg.pgsize_bitmap;
    let below = bitmap & (page.wrapping_sub(1));
    let above = bitmap & !(page.wrapping_sub(1));
    let granule_bytes = if page.is_power_of_two() && bitmap & page != 0 {
        page
    } else if below != 0 {
        1u64 << (63 - below.leading_zeros())
    } else if above != 0 {
        1u64 << above.trailing_zeros()
    } else {
        0
    };
    let granule = Granule::from_bytes(granule_bytes);
    let (sizes, max_bits) = match granule {
        Some(Granule::Size4K) => (SZ_4K | SZ_2M | SZ_1G, 48),
        Some(Granule::Size16K) => (SZ_16K | SZ_32M, 48),
        Some(Granule::Size64K) => {
            let big = if cfg.oas > 48 { SZ_4T } else { 0 };
            (SZ_64K | SZ_512M | big, MAX_ADDR_BITS)
        }
        None => (0, 0),
    };
    (
        granule,
        bitmap & sizes,
        cfg.ias.min(max_bits),
        cfg.oas.min(max_bits),
    )
}

/// The IPS/PS encoding of an output size, or `None` if the architecture has none.
fn pa_size_encoding(oas: u32) -> Option<u32> {
    Some(match oas {
        32 => 0,
        36 => 1,
        40 => 2,
        42 => 3,
        44 => 4,
        48 => 5,
        52 => 6,
        _ => return None,
    })
}

impl Geometry {
    /// Validates `cfg` and derives the geometry, as `arm_64_lpae_alloc_pgtable_s1/_s2` do.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the kernel's allocator would return NULL.
    pub fn new(cfg: &Config) -> Result<Self, Error> {
        let bad = |reason| Err(Error::InvalidConfig { reason });
        let allowed = match cfg.format {
            Format::ArmLpaeS1 => {
                Quirks::ARM_NS
                    | Quirks::ARM_TTBR1
                    | Quirks::ARM_OUTER_WBWA
                    | Quirks::ARM_HD
                    | Quirks::NO_WARN
            }
            Format::ArmLpaeS2 => Quirks::ARM_S2FWB | Quirks::NO_WARN,
        };
        if !allowed.contains(cfg.quirks) {
            return bad("quirk not supported by this format");
        }
        // Our walker is coherent (it reads memory directly), so OUTER_WBWA is refused as the
        // kernel refuses it for `coherent_walk`.
        if cfg.quirks.contains(Quirks::ARM_OUTER_WBWA) {
            return bad("ARM_OUTER_WBWA needs a non-coherent walker");
        }
        if !cfg.cpu_page_size.is_power_of_two() {
            return bad("cpu page size must be a power of two");
        }
        if cfg.pgsize_bitmap & (SZ_4K | SZ_16K | SZ_64K) == 0 {
            return bad("pgsize_bitmap holds no 4K, 16K or 64K granule");
        }
        if cfg.ias > MAX_ADDR_BITS || cfg.oas > MAX_ADDR_BITS {
            return bad("address size above 52 bits");
        }
        let (granule, pgsize_bitmap, ias, oas) = restrict_pgsizes(cfg);
        let Some(granule) = granule else {
            return bad("no usable granule in pgsize_bitmap");
        };
        if pgsize_bitmap & granule.bytes() == 0 {
            return bad("granule not in the restricted pgsize_bitmap");
        }
        let pg_shift = granule.shift();
        if ias <= pg_shift {
            return bad("input address size smaller than a page");
        }
        let bits_per_level = pg_shift - 3;
        let va_bits = ias - pg_shift;
        let levels = va_bits.div_ceil(bits_per_level);
        if levels > 4 {
            return bad("more than four levels");
        }
        let mut start_level = 4 - levels;
        let mut pgd_bits = va_bits - bits_per_level * (levels - 1);

        let ps = pa_size_encoding(oas);
        let Some(ps) = ps else {
            return bad("output address size has no IPS/PS encoding");
        };
        let registers = match cfg.format {
            Format::ArmLpaeS1 => {
                let tg = if cfg.quirks.contains(Quirks::ARM_TTBR1) {
                    match granule {
                        Granule::Size16K => 1,
                        Granule::Size4K => 2,
                        Granule::Size64K => 3,
                    }
                } else {
                    tg0(granule)
                };
                Registers::S1(S1Registers {
                    ips: ps,
                    tg,
                    sh: 3,
                    orgn: 1,
                    irgn: 1,
                    tsz: 64 - ias,
                    mair: MAIR_S1,
                })
            }
            Format::ArmLpaeS2 => {
                let pgd_entries = 1u64 << pgd_bits;
                let concat = match cfg.concat {
                    ConcatRule::Mandatory => match granule {
                        Granule::Size4K => start_level == 0 && (oas == 40 || oas == 42),
                        Granule::Size16K => {
                            (start_level == 0 && (oas == 48 || ias == 48))
                                || (start_level == 1 && oas == 40)
                        }
                        Granule::Size64K => false,
                    },
                    ConcatRule::Legacy => start_level == 0 && pgd_entries <= S2_MAX_CONCAT_PAGES,
                };
                if concat {
                    if pgd_entries > S2_MAX_CONCAT_PAGES {
                        return bad("stage-2 PGD too large to concatenate");
                    }
                    pgd_bits += bits_per_level;
                    start_level += 1;
                }
                let mut sl = start_level;
                if granule == Granule::Size4K {
                    sl += 1;
                }
                Registers::S2(S2Registers {
                    ps,
                    tg: tg0(granule),
                    sh: 3,
                    orgn: 1,
                    irgn: 1,
                    sl: !sl & 3,
                    tsz: 64 - ias,
                })
            }
        };
        Ok(Geometry {
            format: cfg.format,
            quirks: cfg.quirks,
            granule,
            pgsize_bitmap,
            ias,
            oas,
            bits_per_level,
            start_level,
            pgd_bits,
            registers,
        })
    }

    /// `ARM_LPAE_LVL_SHIFT(lvl)`.
    #[inline]
    #[must_use]
    pub const fn lvl_shift(&self, lvl: u32) -> u32 {
        (4 - lvl) * self.bits_per_level + 3
    }

    /// `ARM_LPAE_BLOCK_SIZE(lvl)`: bytes one entry at `lvl` covers.
    #[inline]
    #[must_use]
    pub const fn block_size(&self, lvl: u32) -> u64 {
        1u64 << self.lvl_shift(lvl)
    }

    /// Entries in a non-root table.
    #[inline]
    #[must_use]
    pub const fn ptes_per_table(&self) -> usize {
        1usize << self.bits_per_level
    }

    /// Entries in the PGD.
    #[inline]
    #[must_use]
    pub const fn pgd_entries(&self) -> usize {
        1usize << self.pgd_bits
    }

    /// Bytes of the PGD (`ARM_LPAE_PGD_SIZE`).
    #[must_use]
    pub const fn pgd_bytes(&self) -> u64 {
        8u64 << self.pgd_bits
    }

    /// `ARM_LPAE_LVL_IDX(addr, lvl)`.
    #[inline]
    #[must_use]
    pub fn lvl_idx(&self, addr: u64, lvl: u32) -> usize {
        let bits = if lvl == self.start_level {
            self.pgd_bits
        } else {
            self.bits_per_level
        };
        crate::to_usize((addr >> self.lvl_shift(lvl)) & ((1u64 << bits) - 1))
    }

    /// `arm_lpae_max_entries`: entries left in the same table page from `idx`.
    #[inline]
    #[must_use]
    pub const fn max_entries(&self, idx: usize) -> usize {
        let ptes = self.ptes_per_table();
        ptes - (idx & (ptes - 1))
    }

    /// True if a leaf may sit at `lvl` (its block size is a supported page size).
    #[inline]
    #[must_use]
    pub const fn leaf_allowed(&self, lvl: u32) -> bool {
        lvl <= 3 && self.pgsize_bitmap & self.block_size(lvl) != 0
    }

    /// The level whose block size is `pgsize`, if any.
    #[must_use]
    pub fn level_of(&self, pgsize: u64) -> Option<u32> {
        (self.start_level..=3).find(|&l| self.block_size(l) == pgsize)
    }

    /// Smallest supported page size.
    #[must_use]
    pub const fn min_pgsize(&self) -> u64 {
        self.granule.bytes()
    }

    /// True if `iova` is inside the input range (sign-extended for TTBR1 tables): the
    /// `iaext` check of `arm_lpae_map_pages`, v6.18.
    #[inline]
    #[must_use]
    pub fn iova_in_range(&self, iova: u64) -> bool {
        // iaext = (s64)iova >> ias, inverted for TTBR1.
        #[allow(clippy::cast_possible_wrap)]
        let iaext = (iova as i64) >> self.ias;
        if self.quirks.contains(Quirks::ARM_TTBR1) {
            !iaext == 0
        } else {
            iaext == 0
        }
    }

    /// True if `paddr` fits the output size.
    #[inline]
    #[must_use]
    pub const fn paddr_in_range(&self, paddr: u64) -> bool {
        self.oas >= 64 || paddr >> self.oas == 0
    }
}

const fn tg0(granule: Granule) -> u32 {
    match granule {
        Granule::Size4K => 0,
        Granule::Size64K => 1,
        Granule::Size16K => 2,
    }
}

/// The page-size sets of the kernel selftest matrix (`arm_lpae_do_selftests` in
/// `drivers/iommu/io-pgtable-arm-selftests.c`, v6.18).
pub const SELFTEST_PGSIZES: [u64; 3] = [SZ_4K | SZ_2M | SZ_1G, SZ_16K | SZ_32M, SZ_64K | SZ_512M];
/// The address sizes of the kernel selftest matrix (`arm_lpae_do_selftests`, v6.18).
pub const SELFTEST_ADDRESS_SIZES: [u32; 6] = [32, 36, 40, 42, 44, 48];
