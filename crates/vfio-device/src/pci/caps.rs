//! The capability-list builder: PM, MSI, MSI-X, PCI Express and extended capabilities.
//!
//! [`CapabilityList`] lists capabilities in chain order; `CapabilityList::install` places them
//! dword-aligned from 0x40 (extended ones from 0x100), links `next` pointers, and sets each
//! byte's write mask the way vfio-pci's permission tables do (`vfio_pm_init_perm`,
//! `vfio_msi_init_perm`, `init_pci_cap_msix_perm` (all read-only), `init_pci_cap_exp_perm`,
//! v6.18 `drivers/vfio/pci/vfio_pci_config.c`). Capability lengths are the kernel's
//! (`vfio_cap_len`: MSI 10 + 4 for 64-bit + 10 for per-vector masking; MSI-X 12; PM 8; PCIe
//! v2 endpoint 60). Offsets inside a capability are bytes from its first byte.

use crate::error::{Error, Result};
use crate::pci::image::ConfigImage;
use crate::pci::regs::*;

/// MSI message address width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiAddress {
    /// 32-bit message address.
    Bits32,
    /// 64-bit message address.
    Bits64,
}

/// Whether an MSI capability has per-vector mask and pending bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerVectorMask {
    /// No mask bits.
    Absent,
    /// Mask and pending registers present.
    Present,
}

/// An MSI capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiCap {
    /// Vectors the function can request (Multiple Message Capable): 1, 2, 4, 8, 16 or 32.
    pub vectors: u8,
    /// Address width.
    pub address: MsiAddress,
    /// Per-vector masking.
    pub masking: PerVectorMask,
}

impl MsiCap {
    /// Capability length in bytes (`vfio_msi_cap_len`).
    #[must_use]
    pub fn cap_len(&self) -> usize {
        let mut len = MSI_DATA_32 + 2;
        if self.address == MsiAddress::Bits64 {
            len += 4;
        }
        if self.masking == PerVectorMask::Present {
            len += 10;
        }
        len
    }

    /// Multiple Message Capable: log2 of `vectors`.
    #[must_use]
    pub fn mmc(&self) -> u16 {
        u16::try_from(self.vectors.trailing_zeros()).unwrap_or(0)
    }

    /// Offset of the mask bits register, if present.
    #[must_use]
    pub fn mask_offset(&self) -> Option<usize> {
        match (self.masking, self.address) {
            (PerVectorMask::Absent, _) => None,
            (PerVectorMask::Present, MsiAddress::Bits32) => Some(MSI_MASK_32),
            (PerVectorMask::Present, MsiAddress::Bits64) => Some(MSI_MASK_64),
        }
    }
}

/// Where in which BAR a structure lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarOffset {
    /// BAR slot (BIR), 0..=5.
    pub bar: u8,
    /// Byte offset in the BAR (a multiple of 8).
    pub offset: u32,
}

/// An MSI-X capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCap {
    /// Table entries, 1..=2048.
    pub table_size: u16,
    /// Where the table lives.
    pub table: BarOffset,
    /// Where the pending-bit array lives.
    pub pba: BarOffset,
}

impl MsixCap {
    /// Bytes of the table.
    #[must_use]
    pub fn table_bytes(&self) -> u64 {
        u64::from(self.table_size) * MSIX_ENTRY_SIZE
    }

    /// Bytes of the PBA (whole u64 words).
    #[must_use]
    pub fn pba_bytes(&self) -> u64 {
        u64::from(self.table_size).div_ceil(64) * 8
    }
}

/// Function-level reset support of a PCI Express capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flr {
    /// DEVCAP.FLR clear.
    Unsupported,
    /// DEVCAP.FLR set; writing DEVCTL bit 15 resets the function.
    Supported,
}

/// A PCI Express endpoint capability (version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcieCap {
    /// FLR support.
    pub flr: Flr,
}

/// An extended capability with a read-only body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtCap {
    /// Capability ID.
    pub id: u16,
    /// Capability version (4 bits).
    pub version: u8,
    /// Bytes after the 4-byte header.
    pub body: Vec<u8>,
}

/// One standard capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Power management (PM 1.2, `NO_SOFT_RESET`).
    PowerManagement,
    /// MSI.
    Msi(MsiCap),
    /// MSI-X.
    Msix(MsixCap),
    /// PCI Express endpoint; makes config space 4 KiB.
    PciExpress(PcieCap),
}

impl Capability {
    fn id(&self) -> u8 {
        match self {
            Capability::PowerManagement => CAP_ID_PM,
            Capability::Msi(_) => CAP_ID_MSI,
            Capability::Msix(_) => CAP_ID_MSIX,
            Capability::PciExpress(_) => CAP_ID_EXP,
        }
    }

    fn len(&self) -> usize {
        match self {
            Capability::PowerManagement => PM_SIZEOF,
            Capability::Msi(m) => m.cap_len(),
            Capability::Msix(_) => MSIX_SIZEOF,
            Capability::PciExpress(_) => EXP_ENDPOINT_SIZEOF_V2,
        }
    }
}

/// The capability chain, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityList {
    caps: Vec<Capability>,
    ext: Vec<ExtCap>,
}

/// Where `CapabilityList::install` put each capability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapLayout {
    /// PM capability offset.
    pub pm: Option<usize>,
    /// MSI capability offset and description.
    pub msi: Option<(usize, MsiCap)>,
    /// MSI-X capability offset and description.
    pub msix: Option<(usize, MsixCap)>,
    /// PCIe capability offset and description.
    pub pcie: Option<(usize, PcieCap)>,
}

impl CapabilityList {
    /// An empty chain (status CAP_LIST clear).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a power-management capability.
    #[must_use]
    pub fn pm(mut self) -> Self {
        self.caps.push(Capability::PowerManagement);
        self
    }

    /// Appends an MSI capability.
    #[must_use]
    pub fn msi(mut self, cap: MsiCap) -> Self {
        self.caps.push(Capability::Msi(cap));
        self
    }

    /// Appends an MSI-X capability.
    #[must_use]
    pub fn msix(mut self, cap: MsixCap) -> Self {
        self.caps.push(Capability::Msix(cap));
        self
    }

    /// Appends a PCI Express endpoint capability.
    #[must_use]
    pub fn pcie(mut self, cap: PcieCap) -> Self {
        self.caps.push(Capability::PciExpress(cap));
        self
    }

    /// Appends an extended capability (needs a PCI Express capability).
    #[must_use]
    pub fn ext(mut self, cap: ExtCap) -> Self {
        self.ext.push(cap);
        self
    }

    /// The standard capabilities, in order.
    #[must_use]
    pub fn caps(&self) -> &[Capability] {
        &self.caps
    }

    /// True if the chain has a PCI Express capability (config space is then 4 KiB).
    #[must_use]
    pub fn is_pcie(&self) -> bool {
        self.caps
            .iter()
            .any(|c| matches!(c, Capability::PciExpress(_)))
    }

    /// The MSI capability, if any.
    #[must_use]
    pub fn msi_cap(&self) -> Option<MsiCap> {
        self.caps.iter().find_map(|c| match c {
            Capability::Msi(m) => Some(*m),
            _ => None,
        })
    }

    /// The MSI-X capability, if any.
    #[must_use]
    pub fn msix_cap(&self) -> Option<MsixCap> {
        self.caps.iter().find_map(|c| match c {
            Capability::Msix(m) => Some(*m),
            _ => None,
        })
    }

    /// Checks the chain itself: one of each kind, sizes that fit, MSI vector counts, the MSI-X
    /// table size. Where the MSI-X structures sit is checked against the BARs by the
    /// function's own `validate`.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`].
    pub fn validate(&self) -> Result<()> {
        for (i, c) in self.caps.iter().enumerate() {
            if self.caps[..i].iter().any(|d| d.id() == c.id()) {
                return bad("capability listed twice");
            }
        }
        let mut end = STD_HEADER_SIZEOF;
        for c in &self.caps {
            end = end.next_multiple_of(4) + c.len();
        }
        if end > CFG_SPACE_SIZE {
            return bad("capabilities do not fit in 256 bytes");
        }
        let mut ext_end = EXT_CAP_START;
        for e in &self.ext {
            if e.version > 0xf || e.id == 0 {
                return bad("extended capability id 0 or version above 15");
            }
            ext_end = ext_end.next_multiple_of(4) + 4 + e.body.len();
        }
        if !self.ext.is_empty() && (!self.is_pcie() || ext_end > CFG_SPACE_EXP_SIZE) {
            return bad("extended capabilities need PCIe and must fit in 4 KiB");
        }
        if let Some(m) = self.msi_cap() {
            if !m.vectors.is_power_of_two() || m.vectors > 32 {
                return bad("MSI vectors must be 1, 2, 4, 8, 16 or 32");
            }
        }
        if let Some(x) = self.msix_cap() {
            if x.table_size == 0 || x.table_size > 2048 {
                return bad("MSI-X table size must be 1..=2048");
            }
        }
        Ok(())
    }

    /// Writes the chain into `img`: headers, initial values and write masks. Returns where
    /// each capability went.
    pub(crate) fn install(&self, img: &mut ConfigImage) -> CapLayout {
        let mut layout = CapLayout::default();
        let mut at = STD_HEADER_SIZEOF;
        let mut prev: Option<usize> = None;
        for c in &self.caps {
            let pos = at.next_multiple_of(4);
            match prev {
                Some(p) => img.set_u8(p + CAP_LIST_NEXT, pos_u8(pos)),
                None => img.set_u8(CAPABILITY_LIST, pos_u8(pos)),
            }
            img.set_u8(pos, c.id());
            match *c {
                Capability::PowerManagement => {
                    layout.pm = Some(pos);
                    img.set_u16(pos + PM_PMC, PM_PMC_VERSION_3);
                    img.set_u16(pos + PM_CTRL, PM_CTRL_NO_SOFT_RESET);
                    img.wmask_u16(pos + PM_CTRL, PM_CTRL_STATE_MASK | PM_CTRL_PME_ENABLE);
                    img.w1c_u16(pos + PM_CTRL, PM_CTRL_PME_STATUS);
                }
                Capability::Msi(m) => {
                    layout.msi = Some((pos, m));
                    let mut flags = m.mmc() << 1;
                    if m.address == MsiAddress::Bits64 {
                        flags |= MSI_FLAGS_64BIT;
                    }
                    if m.masking == PerVectorMask::Present {
                        flags |= MSI_FLAGS_MASKBIT;
                    }
                    img.set_u16(pos + MSI_FLAGS, flags);
                    img.wmask_u16(pos + MSI_FLAGS, MSI_FLAGS_ENABLE | MSI_FLAGS_QSIZE);
                    img.wmask_u32(pos + MSI_ADDRESS_LO, 0xffff_fffc);
                    let data = match m.address {
                        MsiAddress::Bits32 => MSI_DATA_32,
                        MsiAddress::Bits64 => {
                            img.wmask_u32(pos + MSI_ADDRESS_LO + 4, 0xffff_ffff);
                            MSI_DATA_64
                        }
                    };
                    img.wmask_u16(pos + data, 0xffff);
                    if let Some(mask) = m.mask_offset() {
                        let bits = if m.vectors >= 32 {
                            u32::MAX
                        } else {
                            (1u32 << m.vectors) - 1
                        };
                        img.wmask_u32(pos + mask, bits);
                    }
                }
                Capability::Msix(x) => {
                    layout.msix = Some((pos, x));
                    img.set_u16(pos + MSIX_FLAGS, x.table_size - 1);
                    img.set_u32(pos + MSIX_TABLE, x.table.offset | u32::from(x.table.bar));
                    img.set_u32(pos + MSIX_PBA, x.pba.offset | u32::from(x.pba.bar));
                }
                Capability::PciExpress(p) => {
                    layout.pcie = Some((pos, p));
                    img.set_u16(pos + EXP_FLAGS, EXP_FLAGS_VERS_2);
                    if p.flr == Flr::Supported {
                        img.set_u32(pos + EXP_DEVCAP, EXP_DEVCAP_FLR);
                    }
                    img.wmask_u16(pos + EXP_DEVCTL, !EXP_DEVCTL_PHANTOM);
                    img.w1c_u16(pos + EXP_DEVSTA, EXP_DEVSTA_ERRORS);
                    img.wmask_u16(pos + EXP_LNKCTL, 0x0fff);
                    img.wmask_u16(pos + EXP_DEVCTL2, 0xffff);
                }
            }
            prev = Some(pos);
            at = pos + c.len();
        }
        let mut at = EXT_CAP_START;
        let mut prev: Option<usize> = None;
        for e in &self.ext {
            let pos = at.next_multiple_of(4);
            if let Some(p) = prev {
                let hdr = img.get_u32(p);
                img.set_u32(p, hdr | (u32::try_from(pos).unwrap_or(0) << 20));
            }
            img.set_u32(pos, u32::from(e.id) | (u32::from(e.version) << 16));
            img.set_bytes(pos + 4, &e.body);
            prev = Some(pos);
            at = pos + 4 + e.body.len();
        }
        layout
    }
}

fn bad<T>(reason: &'static str) -> Result<T> {
    Err(Error::InvalidSpec { reason })
}

fn pos_u8(pos: usize) -> u8 {
    u8::try_from(pos).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_lengths_follow_vfio_msi_cap_len() {
        let m = |address, masking| MsiCap {
            vectors: 4,
            address,
            masking,
        };
        assert_eq!(m(MsiAddress::Bits32, PerVectorMask::Absent).cap_len(), 10);
        assert_eq!(m(MsiAddress::Bits64, PerVectorMask::Absent).cap_len(), 14);
        assert_eq!(m(MsiAddress::Bits64, PerVectorMask::Present).cap_len(), 24);
        assert_eq!(m(MsiAddress::Bits32, PerVectorMask::Present).cap_len(), 20);
    }

    #[test]
    fn msix_pba_is_whole_words() {
        let x = MsixCap {
            table_size: 65,
            table: BarOffset { bar: 0, offset: 0 },
            pba: BarOffset {
                bar: 0,
                offset: 0x800,
            },
        };
        assert_eq!(x.pba_bytes(), 16);
        assert_eq!(x.table_bytes(), 65 * 16);
    }
}
