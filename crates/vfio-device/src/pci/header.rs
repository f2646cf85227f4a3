//! The type-0 header of a function: identity, BARs, expansion ROM and interrupt pin.
//!
//! A [`FunctionSpec`] describes a function as a driver would find it after power-on; the config
//! space ([`crate::pci::ConfigSpace`]) and the VFIO regions are derived from it. BAR sizes are
//! powers of two (memory BARs at least 16 bytes, I/O BARs at least 4), as `__pci_read_base`
//! expects; a 64-bit BAR takes two slots, so the slot after it must be empty.

use crate::error::{Error, Result};
use crate::pci::caps::{BarOffset, CapabilityList};

/// The identity registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Vendor ID (0x00).
    pub vendor_id: u16,
    /// Device ID (0x02).
    pub device_id: u16,
    /// Revision ID (0x08).
    pub revision: u8,
    /// Class code, 24 bits: base class, subclass, programming interface (0x09..0x0C).
    pub class_code: u32,
    /// Subsystem vendor ID (0x2C).
    pub subsystem_vendor_id: u16,
    /// Subsystem ID (0x2E).
    pub subsystem_id: u16,
}

/// Prefetchability of a memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// Bit 3 clear.
    No,
    /// Bit 3 set.
    Yes,
}

/// The address-space type of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Mem32(Prefetch),
    /// 64-bit memory BAR (takes this slot and the next).
    Mem64(Prefetch),
    /// I/O BAR.
    Io,
}

impl BarKind {
    /// The read-only type bits of the BAR register (`vfio_generate_bar_flags`).
    #[must_use]
    pub fn flag_bits(self) -> u32 {
        use crate::pci::regs::{
            BASE_ADDRESS_MEM_PREFETCH as PF, BASE_ADDRESS_MEM_TYPE_64 as M64,
            BASE_ADDRESS_SPACE_IO as IO,
        };
        match self {
            BarKind::Io => IO,
            BarKind::Mem32(Prefetch::No) => 0,
            BarKind::Mem32(Prefetch::Yes) => PF,
            BarKind::Mem64(Prefetch::No) => M64,
            BarKind::Mem64(Prefetch::Yes) => M64 | PF,
        }
    }

    /// True for a memory BAR.
    #[must_use]
    pub fn is_memory(self) -> bool {
        !matches!(self, BarKind::Io)
    }
}

/// Who serves a BAR's accesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarBacking {
    /// The device model handles every access ([`crate::DeviceModel::bar_read`] /
    /// [`crate::DeviceModel::bar_write`]); not mmap-able.
    Mmio,
    /// Plain memory in the device's file (a memfd), shared by the device and whoever maps it;
    /// region `MMAP`. Only for memory BARs of at least one page.
    Memory,
}

/// One BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarSpec {
    /// Address-space type.
    pub kind: BarKind,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Who serves accesses.
    pub backing: BarBacking,
}

/// The expansion ROM: an image inside a power-of-two ROM BAR (reads past the image give 0xFF,
/// as `vfio_pci_bar_rw` fills beyond what `pci_map_rom` returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RomSpec {
    /// ROM BAR size (a power of two, at least 2 KiB).
    pub size: u64,
    /// The image (at most `size` bytes).
    pub image: Vec<u8>,
}

/// The interrupt pin register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptPin {
    /// No INTx (pin 0): the INTx index has count 0.
    None,
    /// INTA#.
    IntA,
    /// INTB#.
    IntB,
    /// INTC#.
    IntC,
    /// INTD#.
    IntD,
}

impl InterruptPin {
    /// The register value.
    #[must_use]
    pub fn raw(self) -> u8 {
        match self {
            InterruptPin::None => 0,
            InterruptPin::IntA => 1,
            InterruptPin::IntB => 2,
            InterruptPin::IntC => 3,
            InterruptPin::IntD => 4,
        }
    }
}

/// Number of standard BARs.
pub const NUM_BARS: usize = 6;

/// Smallest ROM BAR (`PCI_ROM_ADDRESS_MASK` leaves bits 10:1 reserved).
pub const ROM_MIN_SIZE: u64 = 2048;

/// Everything that defines a function at power-on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Identity registers.
    pub identity: Identity,
    /// BAR slots; the slot after a 64-bit BAR must be `None`.
    pub bars: [Option<BarSpec>; NUM_BARS],
    /// Expansion ROM.
    pub rom: Option<RomSpec>,
    /// Interrupt pin.
    pub pin: InterruptPin,
    /// Capabilities.
    pub caps: CapabilityList,
}

impl FunctionSpec {
    /// Checks the BAR and ROM layout.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason| Err(Error::InvalidSpec { reason });
        for (i, bar) in self.bars.iter().enumerate() {
            let Some(b) = bar else { continue };
            let min = if b.kind.is_memory() { 16 } else { 4 };
            if !b.size.is_power_of_two() || b.size < min {
                return bad("BAR size must be a power of two (memory >= 16, I/O >= 4)");
            }
            if matches!(b.kind, BarKind::Io | BarKind::Mem32(_)) && b.size > 1 << 31 {
                return bad("32-bit BAR larger than 2 GiB");
            }
            if b.kind == BarKind::Io && b.size > 256 {
                return bad("I/O BAR larger than 256 bytes");
            }
            if matches!(b.kind, BarKind::Mem64(_))
                && (i + 1 >= NUM_BARS || self.bars[i + 1].is_some())
            {
                return bad("64-bit BAR needs the next slot empty");
            }
            if b.backing == BarBacking::Memory && (!b.kind.is_memory() || b.size < crate::PAGE_SIZE)
            {
                return bad("memory-backed BAR must be a memory BAR of at least a page");
            }
        }
        if let Some(rom) = &self.rom {
            if !rom.size.is_power_of_two() || rom.size < ROM_MIN_SIZE || rom.size > 1 << 31 {
                return bad("ROM size must be a power of two of at least 2 KiB");
            }
            if rom.image.len() as u64 > rom.size {
                return bad("ROM image larger than the ROM BAR");
            }
        }
        self.caps.validate()?;
        if let Some(x) = self.caps.msix_cap() {
            // The MSI-X table and PBA inside implemented memory BARs, not overlapping.
            let place = |at: BarOffset, len: u64| -> Result<(u8, u64, u64)> {
                let Some(b) = self.bar(usize::from(at.bar)) else {
                    return Err(Error::InvalidSpec {
                        reason: "MSI-X structure in an unimplemented BAR",
                    });
                };
                let end = u64::from(at.offset) + len;
                if at.offset % 8 != 0 || !b.kind.is_memory() || end > b.size {
                    return Err(Error::InvalidSpec {
                        reason: "MSI-X structure misaligned or outside a memory BAR",
                    });
                }
                Ok((at.bar, u64::from(at.offset), end))
            };
            let t = place(x.table, x.table_bytes())?;
            let p = place(x.pba, x.pba_bytes())?;
            if t.0 == p.0 && t.1 < p.2 && p.1 < t.2 {
                return bad("MSI-X table and PBA overlap");
            }
        }
        Ok(())
    }

    /// The BAR in `slot`, if implemented.
    #[must_use]
    pub fn bar(&self, slot: usize) -> Option<&BarSpec> {
        self.bars.get(slot).and_then(Option::as_ref)
    }

    /// True if any BAR is an I/O BAR (the command register's IO bit is then writable).
    #[must_use]
    pub fn has_io_bar(&self) -> bool {
        self.bars.iter().flatten().any(|b| b.kind == BarKind::Io)
    }

    /// True if any BAR (or the ROM) decodes memory.
    #[must_use]
    pub fn has_mem_bar(&self) -> bool {
        self.rom.is_some() || self.bars.iter().flatten().any(|b| b.kind.is_memory())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FunctionSpec {
        FunctionSpec {
            identity: Identity {
                vendor_id: 0x1234,
                device_id: 0x11e8,
                revision: 0x10,
                class_code: 0x00ff00,
                subsystem_vendor_id: 0x1af4,
                subsystem_id: 0x1100,
            },
            bars: [None; NUM_BARS],
            rom: None,
            pin: InterruptPin::IntA,
            caps: CapabilityList::new(),
        }
    }

    #[test]
    fn bar_flag_bits_follow_vfio_generate_bar_flags() {
        assert_eq!(BarKind::Mem64(Prefetch::Yes).flag_bits(), 0xc);
        assert_eq!(BarKind::Mem32(Prefetch::No).flag_bits(), 0);
        assert_eq!(BarKind::Io.flag_bits(), 1);
    }

    #[test]
    fn sixty_four_bit_bar_in_the_last_slot_is_rejected() {
        let mut s = spec();
        s.bars[5] = Some(BarSpec {
            kind: BarKind::Mem64(Prefetch::No),
            size: 4096,
            backing: BarBacking::Mmio,
        });
        assert!(matches!(s.validate(), Err(Error::InvalidSpec { .. })));
    }

    #[test]
    fn non_power_of_two_bar_is_rejected() {
        let mut s = spec();
        s.bars[0] = Some(BarSpec {
            kind: BarKind::Mem32(Prefetch::No),
            size: 3 << 12,
            backing: BarBacking::Mmio,
        });
        assert!(matches!(s.validate(), Err(Error::InvalidSpec { .. })));
    }

    #[test]
    fn memory_backing_needs_a_page() {
        let mut s = spec();
        s.bars[0] = Some(BarSpec {
            kind: BarKind::Mem32(Prefetch::No),
            size: 1024,
            backing: BarBacking::Memory,
        });
        assert!(matches!(s.validate(), Err(Error::InvalidSpec { .. })));
        s.bars[0] = Some(BarSpec {
            kind: BarKind::Mem32(Prefetch::No),
            size: 4096,
            backing: BarBacking::Memory,
        });
        assert_eq!(s.validate(), Ok(()));
    }

    /// A function with a 4 KiB memory BAR 0 and MSI-X with 8 vectors (a 128-byte table).
    fn with_msix(table: BarOffset, pba: BarOffset) -> FunctionSpec {
        let mut s = spec();
        s.bars[0] = Some(BarSpec {
            kind: BarKind::Mem32(Prefetch::No),
            size: 4096,
            backing: BarBacking::Mmio,
        });
        s.caps = CapabilityList::new().msix(crate::pci::caps::MsixCap {
            table_size: 8,
            table,
            pba,
        });
        s
    }

    #[test]
    fn msix_structures_must_sit_apart_inside_an_implemented_memory_bar() {
        let at = |bar, offset| BarOffset { bar, offset };
        assert_eq!(with_msix(at(0, 0), at(0, 0x800)).validate(), Ok(()));
        let in_missing_bar = with_msix(at(2, 0), at(0, 0x800));
        let past_the_bar = with_msix(at(0, 0xfc0), at(0, 0x800));
        let misaligned = with_msix(at(0, 4), at(0, 0x800));
        let overlapping = with_msix(at(0, 0), at(0, 0x40));
        for s in [in_missing_bar, past_the_bar, misaligned, overlapping] {
            assert!(
                matches!(s.validate(), Err(Error::InvalidSpec { .. })),
                "{:?}",
                s.caps
            );
        }
    }
}
