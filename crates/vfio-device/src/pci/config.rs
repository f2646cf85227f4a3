//! Config-space virtualisation, byte by byte, as vfio-pci does it.
//!
//! Every byte has a value, a write mask and a write-1-to-clear mask (`ConfigImage`): a write
//! stores `(old & !wmask) | (new & wmask)` and then clears the RW1C bits written as 1, the
//! effect of vfio-pci's per-capability permission tables (`struct perm_bits`,
//! `vfio_default_config_write`, v6.18 `drivers/vfio/pci/vfio_pci_config.c`). Registers whose
//! read value is computed rather than stored follow the kernel's handlers:
//!
//! - BARs and the ROM BAR store all 32 written bits and read back `stored & ~(size - 1) | type
//!   bits` (`vfio_bar_fixup`), unimplemented BARs read 0, the upper half of a 64-bit BAR keeps
//!   `stored & (mask >> 32)`, the ROM keeps its enable bit;
//! - the command register stores MEM, MASTER, PARITY, SERR and INTx-disable (and IO with an I/O
//!   BAR); INTx-disable masks INTx (`vfio_basic_config_write`); status is read-only, CAP_LIST
//!   reflects the chain and bit 3 the INTx line;
//! - MSI control: Enable sticks only while MSI is enabled through `VFIO_DEVICE_SET_IRQS`, QSIZE
//!   is capped, MMC reads the enabled vector count's log2 once MSI has been enabled
//!   (`vfio_msi_config_write`, `vfio_msi_enable`);
//! - MSI-X control, table and PBA words are read-only; Enable reads 1 exactly while MSI-X is
//!   enabled, Function Mask reads 0;
//! - PCIe DEVCTL bit 15 (initiate FLR) reads 0 and, with DEVCAP.FLR, resets the function
//!   (`vfio_exp_config_write`); DEVSTA error bits are RW1C;
//! - the interrupt line is writable and without effect, the pin read-only; bytes outside the
//!   header and capabilities read 0 and drop writes.
//!
//! Ranges here are `(pos, len)` with an exclusive end, checked by the caller
//! ([`crate::Device`]) against the config size; this module never sees an out-of-range byte.

use crate::pci::caps::{CapLayout, Flr};
use crate::pci::header::{FunctionSpec, NUM_BARS};
use crate::pci::image::ConfigImage;
use crate::pci::regs::*;

/// The interrupt state a config access needs to see (owned by the interrupt layer above, `irq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrqView {
    /// The device's INTx line is asserted (status bit 3).
    pub intx_asserted: bool,
    /// MSI is enabled through `SET_IRQS`.
    pub msi_enabled: bool,
    /// log2 of the vectors of the last MSI enable (`vdev->msi_qmax`), once MSI has been enabled.
    pub msi_qmax: Option<u16>,
    /// MSI-X is enabled through `SET_IRQS`.
    pub msix_enabled: bool,
}

/// What a config write changed that the rest of the device must act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteEffects {
    /// The command register before and after, if the write touched it.
    pub command: Option<(u16, u16)>,
    /// A function-level reset was initiated (PCIe DEVCTL bit 15 with DEVCAP.FLR).
    pub flr: bool,
}

/// The virtualised config space of one function.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    img: ConfigImage,
    /// Per BAR register: the address mask applied on read (0 for unimplemented slots).
    bar_mask: [u32; NUM_BARS],
    /// Per BAR register: the type bits ORed in on read.
    bar_flags: [u32; NUM_BARS],
    rom_mask: u32,
    layout: CapLayout,
}

impl ConfigSpace {
    /// Power-on config space of `spec` (assumed valid), command as `vfio_pci_core_enable`
    /// leaves it: memory (and I/O) decode on, bus master and INTx-disable off.
    #[must_use]
    pub fn new(spec: &FunctionSpec) -> Self {
        let size = if spec.caps.is_pcie() {
            CFG_SPACE_EXP_SIZE
        } else {
            CFG_SPACE_SIZE
        };
        let mut img = ConfigImage::new(size);
        let id = spec.identity;
        img.set_u16(VENDOR_ID, id.vendor_id);
        img.set_u16(DEVICE_ID, id.device_id);
        img.set_u8(REVISION_ID, id.revision);
        let class = id.class_code.to_le_bytes();
        img.set_bytes(CLASS_PROG, &class[..3]);
        img.set_u8(HEADER_TYPE, HEADER_TYPE_NORMAL);
        img.set_u16(SUBSYSTEM_VENDOR_ID, id.subsystem_vendor_id);
        img.set_u16(SUBSYSTEM_ID, id.subsystem_id);
        img.set_u8(INTERRUPT_PIN, spec.pin.raw());

        let mut command = 0;
        let mut cmd_mask =
            COMMAND_MEMORY | COMMAND_MASTER | COMMAND_PARITY | COMMAND_SERR | COMMAND_INTX_DISABLE;
        if spec.has_io_bar() {
            command |= COMMAND_IO;
            cmd_mask |= COMMAND_IO;
        }
        if spec.has_mem_bar() {
            command |= COMMAND_MEMORY;
        }
        img.set_u16(COMMAND, command);
        img.wmask_u16(COMMAND, cmd_mask);
        img.wmask_u8(CACHE_LINE_SIZE, 0xff);
        img.wmask_u8(LATENCY_TIMER, 0xff);
        img.wmask_u8(INTERRUPT_LINE, 0xff);

        let mut bar_mask = [0u32; NUM_BARS];
        let mut bar_flags = [0u32; NUM_BARS];
        for (i, bar) in spec.bars.iter().enumerate() {
            let Some(b) = bar else { continue };
            let mask = !(b.size - 1);
            bar_mask[i] = low32(mask);
            bar_flags[i] = b.kind.flag_bits();
            img.wmask_u32(BASE_ADDRESS_0 + 4 * i, u32::MAX);
            if matches!(b.kind, crate::pci::header::BarKind::Mem64(_)) && i + 1 < NUM_BARS {
                bar_mask[i + 1] = low32(mask >> 32);
                img.wmask_u32(BASE_ADDRESS_0 + 4 * (i + 1), u32::MAX);
            }
        }
        let rom_mask = match &spec.rom {
            Some(r) => {
                img.wmask_u32(ROM_ADDRESS, u32::MAX);
                low32(!(r.size - 1)) | ROM_ADDRESS_ENABLE
            }
            None => 0,
        };
        let layout = spec.caps.install(&mut img);
        if !spec.caps.caps().is_empty() {
            img.set_u16(STATUS, STATUS_CAP_LIST);
        }
        ConfigSpace {
            img,
            bar_mask,
            bar_flags,
            rom_mask,
            layout,
        }
    }

    /// Size of config space: 256, or 4096 with a PCI Express capability.
    #[must_use]
    pub fn size(&self) -> usize {
        self.img.bytes.len()
    }

    /// Where the capabilities are.
    #[must_use]
    pub fn layout(&self) -> &CapLayout {
        &self.layout
    }

    /// The stored command register.
    #[must_use]
    pub fn command(&self) -> u16 {
        self.img.get_u16(COMMAND)
    }

    /// Memory decode is on and the function is not in D3hot (`__vfio_pci_memory_enabled`).
    #[must_use]
    pub fn memory_enabled(&self) -> bool {
        let d3 = self
            .layout
            .pm
            .is_some_and(|pm| self.img.get_u16(pm + PM_CTRL) & PM_CTRL_STATE_MASK == PM_D3HOT);
        self.command() & COMMAND_MEMORY != 0 && !d3
    }

    /// The bus-master bit.
    #[must_use]
    pub fn bus_master(&self) -> bool {
        self.command() & COMMAND_MASTER != 0
    }

    /// The INTx-disable bit (`vdev->virq_disabled`).
    #[must_use]
    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }

    fn bar_value(&self, slot: usize) -> u32 {
        let stored = self.img.get_u32(BASE_ADDRESS_0 + 4 * slot);
        (stored & self.bar_mask[slot]) | self.bar_flags[slot]
    }

    /// The value of the byte at `pos` as a read sees it.
    fn byte(&self, pos: usize, view: &IrqView) -> u8 {
        let bars = BASE_ADDRESS_0..BASE_ADDRESS_0 + 4 * NUM_BARS;
        if bars.contains(&pos) {
            let slot = (pos - BASE_ADDRESS_0) / 4;
            return self.bar_value(slot).to_le_bytes()[(pos - BASE_ADDRESS_0) % 4];
        }
        if (ROM_ADDRESS..ROM_ADDRESS + 4).contains(&pos) {
            let v = self.img.get_u32(ROM_ADDRESS) & self.rom_mask;
            return v.to_le_bytes()[pos - ROM_ADDRESS];
        }
        let mut b = self.img.bytes[pos];
        if pos == STATUS && view.intx_asserted {
            b |= low8(STATUS_INTERRUPT);
        }
        if let Some((msi, _)) = self.layout.msi {
            if pos == msi + MSI_FLAGS {
                if let Some(q) = view.msi_qmax {
                    b = (b & !low8(MSI_FLAGS_QMASK)) | low8(q << 1);
                }
            }
        }
        if let Some((msix, _)) = self.layout.msix {
            if pos == msix + MSIX_FLAGS + 1 {
                b &= !high8(MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL);
                if view.msix_enabled {
                    b |= high8(MSIX_FLAGS_ENABLE);
                }
            }
        }
        b
    }

    /// Reads `buf.len()` bytes at `pos` (in range, checked by the caller).
    pub fn read(&self, pos: usize, buf: &mut [u8], view: &IrqView) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(pos + i, view);
        }
    }

    /// A 16-bit read at `pos`, for tests and the device layer.
    #[must_use]
    pub fn read_u16(&self, pos: usize, view: &IrqView) -> u16 {
        let mut b = [0u8; 2];
        self.read(pos, &mut b, view);
        u16::from_le_bytes(b)
    }

    /// A 32-bit read at `pos`.
    #[must_use]
    pub fn read_u32(&self, pos: usize, view: &IrqView) -> u32 {
        let mut b = [0u8; 4];
        self.read(pos, &mut b, view);
        u32::from_le_bytes(b)
    }

    /// Writes `data` at `pos` (in range, checked by the caller) and reports what changed.
    pub fn write(&mut self, pos: usize, data: &[u8], view: &IrqView) -> WriteEffects {
        let old_cmd = self.command();
        for (i, &v) in data.iter().enumerate() {
            let p = pos + i;
            let wm = self.img.wmask[p];
            let mut new = (self.img.bytes[p] & !wm) | (v & wm);
            new &= !(v & self.img.w1c[p]);
            self.img.bytes[p] = new;
        }
        let touched = |at: usize, len: usize| pos < at + len && at < pos + data.len();
        let mut fx = WriteEffects::default();
        if touched(COMMAND, 2) {
            fx.command = Some((old_cmd, self.command()));
        }
        if let Some((msi, cap)) = self.layout.msi {
            if touched(msi + MSI_FLAGS, 1) {
                let mut flags = self.img.get_u16(msi + MSI_FLAGS);
                if !view.msi_enabled {
                    flags &= !MSI_FLAGS_ENABLE;
                }
                let qmax = view.msi_qmax.unwrap_or(cap.mmc());
                if (flags & MSI_FLAGS_QSIZE) >> 4 > qmax {
                    flags = (flags & !MSI_FLAGS_QSIZE) | (qmax << 4);
                }
                self.img.set_u16(msi + MSI_FLAGS, flags);
            }
        }
        if let Some((exp, cap)) = self.layout.pcie {
            if touched(exp + EXP_DEVCTL + 1, 1) {
                let ctl = self.img.get_u16(exp + EXP_DEVCTL);
                if ctl & EXP_DEVCTL_BCR_FLR != 0 {
                    self.img
                        .set_u16(exp + EXP_DEVCTL, ctl & !EXP_DEVCTL_BCR_FLR);
                    fx.flr = cap.flr == Flr::Supported;
                }
            }
        }
        fx
    }

    /// A 16-bit write at `pos`.
    pub fn write_u16(&mut self, pos: usize, v: u16, view: &IrqView) -> WriteEffects {
        self.write(pos, &v.to_le_bytes(), view)
    }

    /// A 32-bit write at `pos`.
    pub fn write_u32(&mut self, pos: usize, v: u32, view: &IrqView) -> WriteEffects {
        self.write(pos, &v.to_le_bytes(), view)
    }
}

fn low32(v: u64) -> u32 {
    u32::try_from(v & u64::from(u32::MAX)).unwrap_or(0)
}
fn low8(v: u16) -> u8 {
    v.to_le_bytes()[0]
}
fn high8(v: u16) -> u8 {
    v.to_le_bytes()[1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::caps::{
        BarOffset, CapabilityList, MsiAddress, MsiCap, MsixCap, PcieCap, PerVectorMask,
    };
    use crate::pci::header::*;

    const V: IrqView = IrqView {
        intx_asserted: false,
        msi_enabled: false,
        msi_qmax: None,
        msix_enabled: false,
    };

    /// The reference "tdev" profile: BAR0 1 MiB MMIO, BAR2/3 16 MiB 64-bit prefetchable,
    /// BAR4 16 KiB with the MSI-X table and PBA, MSI @0x40, MSI-X @0x50.
    fn tdev() -> FunctionSpec {
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
                revision: 0x10,
                class_code: 0x00ff00,
                subsystem_vendor_id: 0x1af4,
                subsystem_id: 0x1100,
            },
            bars,
            rom: None,
            pin: InterruptPin::IntA,
            caps: CapabilityList::new()
                .msi(MsiCap {
                    vectors: 4,
                    address: MsiAddress::Bits64,
                    masking: PerVectorMask::Absent,
                })
                .msix(MsixCap {
                    table_size: 8,
                    table: BarOffset { bar: 4, offset: 0 },
                    pba: BarOffset {
                        bar: 4,
                        offset: 0x2000,
                    },
                }),
        }
    }

    mod header {
        use super::*;

        #[test]
        fn identity_registers_read_back() {
            let c = ConfigSpace::new(&tdev());
            assert_eq!(c.read_u32(VENDOR_ID, &V), 0x11e8_1234);
            assert_eq!(c.read_u32(REVISION_ID, &V), 0x00ff_0010);
            assert_eq!(c.read_u32(SUBSYSTEM_VENDOR_ID, &V), 0x1100_1af4);
            assert_eq!(c.size(), 256);
        }

        #[test]
        fn identity_registers_are_read_only() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u32(VENDOR_ID, 0xdead_beef, &V);
            assert_eq!(c.read_u32(VENDOR_ID, &V), 0x11e8_1234);
        }

        /// `vfio_pci_core_enable`: decode on, bus master off (the selftest asserts it).
        #[test]
        fn command_starts_with_memory_on_and_bus_master_clear() {
            let c = ConfigSpace::new(&tdev());
            assert_eq!(c.command(), COMMAND_MEMORY);
            assert!(!c.bus_master());
        }

        #[test]
        fn command_write_all_ones_keeps_the_store_mask() {
            let mut c = ConfigSpace::new(&tdev());
            let fx = c.write_u16(COMMAND, 0xffff, &V);
            assert_eq!(c.read_u16(COMMAND, &V), 0x0546);
            assert_eq!(fx.command, Some((COMMAND_MEMORY, 0x0546)));
        }

        #[test]
        fn bus_master_sets_and_clears_with_read_back() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u16(COMMAND, COMMAND_MEMORY | COMMAND_MASTER, &V);
            assert!(c.bus_master());
            c.write_u16(COMMAND, COMMAND_MEMORY, &V);
            assert!(!c.bus_master());
        }

        #[test]
        fn status_reports_cap_list_and_intx_and_ignores_writes() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u16(STATUS, 0xffff, &V);
            assert_eq!(c.read_u16(STATUS, &V), STATUS_CAP_LIST);
            let asserted = IrqView {
                intx_asserted: true,
                ..V
            };
            assert_eq!(
                c.read_u16(STATUS, &asserted),
                STATUS_CAP_LIST | STATUS_INTERRUPT
            );
        }

        #[test]
        fn interrupt_line_is_writable_and_pin_read_only() {
            let mut c = ConfigSpace::new(&tdev());
            c.write(INTERRUPT_LINE, &[0x0a, 0x04], &V);
            let mut b = [0u8; 2];
            c.read(INTERRUPT_LINE, &mut b, &V);
            assert_eq!(b, [0x0a, 0x01]);
        }

        #[test]
        fn bytes_outside_capabilities_read_zero_and_drop_writes() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u32(0xf0, 0x1234_5678, &V);
            assert_eq!(c.read_u32(0xf0, &V), 0);
        }

        #[test]
        fn bist_is_read_only_zero() {
            let mut c = ConfigSpace::new(&tdev());
            c.write(BIST, &[0xff], &V);
            assert_eq!(c.read_u32(CACHE_LINE_SIZE, &V) >> 24, 0);
        }
    }

    mod bars {
        use super::*;

        /// `vfio_bar_fixup`: sizing reads of the reference profile.
        #[test]
        fn sizing_reads_follow_vfio_bar_fixup() {
            let mut c = ConfigSpace::new(&tdev());
            for slot in 0..6 {
                c.write_u32(BASE_ADDRESS_0 + 4 * slot, u32::MAX, &V);
            }
            c.write_u32(ROM_ADDRESS, u32::MAX, &V);
            let bar = |c: &ConfigSpace, s: usize| c.read_u32(BASE_ADDRESS_0 + 4 * s, &V);
            assert_eq!(bar(&c, 0), 0xfff0_0000);
            assert_eq!(bar(&c, 1), 0);
            assert_eq!(bar(&c, 2), 0xff00_000c);
            assert_eq!(bar(&c, 3), 0xffff_ffff);
            assert_eq!(bar(&c, 4), 0xffff_c000);
            assert_eq!(bar(&c, 5), 0);
            assert_eq!(c.read_u32(ROM_ADDRESS, &V), 0);
        }

        #[test]
        fn bar_address_keeps_only_aligned_bits() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u32(BASE_ADDRESS_0, 0x1234_5678, &V);
            assert_eq!(c.read_u32(BASE_ADDRESS_0, &V), 0x1230_0000);
        }

        #[test]
        fn rom_bar_sizes_and_keeps_enable() {
            let mut s = tdev();
            s.rom = Some(RomSpec {
                size: 64 << 10,
                image: vec![0x55, 0xaa],
            });
            let mut c = ConfigSpace::new(&s);
            c.write_u32(ROM_ADDRESS, 0xffff_f800, &V);
            assert_eq!(c.read_u32(ROM_ADDRESS, &V), 0xffff_0000);
            c.write_u32(ROM_ADDRESS, u32::MAX, &V);
            assert_eq!(c.read_u32(ROM_ADDRESS, &V), 0xffff_0001);
        }

        #[test]
        fn io_bar_reads_its_type_bit_and_makes_io_writable() {
            let mut s = tdev();
            s.bars[1] = Some(BarSpec {
                kind: BarKind::Io,
                size: 32,
                backing: BarBacking::Mmio,
            });
            let mut c = ConfigSpace::new(&s);
            c.write_u32(BASE_ADDRESS_0 + 4, u32::MAX, &V);
            assert_eq!(c.read_u32(BASE_ADDRESS_0 + 4, &V), 0xffff_ffe1);
            assert_eq!(c.command(), COMMAND_IO | COMMAND_MEMORY);
            c.write_u16(COMMAND, 0, &V);
            assert_eq!(c.command(), 0);
        }

        #[test]
        fn sub_dword_bar_writes_merge() {
            let mut c = ConfigSpace::new(&tdev());
            c.write(BASE_ADDRESS_0 + 2, &[0x40, 0xfe], &V);
            assert_eq!(c.read_u32(BASE_ADDRESS_0, &V), 0xfe40_0000);
        }
    }

    mod msi {
        use super::*;

        #[test]
        fn chain_is_msi_then_msix_then_end() {
            let c = ConfigSpace::new(&tdev());
            let mut b = [0u8; 1];
            c.read(CAPABILITY_LIST, &mut b, &V);
            assert_eq!(b[0], 0x40);
            assert_eq!(c.read_u16(0x40, &V), 0x5005);
            assert_eq!(c.read_u16(0x50, &V), 0x0011);
        }

        /// `vfio_msi_config_write`: Enable sticks only while MSI is enabled by SET_IRQS.
        #[test]
        fn enable_written_without_set_irqs_reads_zero() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u16(0x40 + MSI_FLAGS, MSI_FLAGS_ENABLE, &V);
            assert_eq!(c.read_u16(0x40 + MSI_FLAGS, &V) & MSI_FLAGS_ENABLE, 0);
            let on = IrqView {
                msi_enabled: true,
                msi_qmax: Some(1),
                ..V
            };
            c.write_u16(0x40 + MSI_FLAGS, MSI_FLAGS_ENABLE, &on);
            let flags = c.read_u16(0x40 + MSI_FLAGS, &on);
            assert_eq!(flags & MSI_FLAGS_ENABLE, MSI_FLAGS_ENABLE);
            assert_eq!((flags & MSI_FLAGS_QMASK) >> 1, 1);
        }

        #[test]
        fn qsize_is_capped_to_the_enabled_vectors() {
            let mut c = ConfigSpace::new(&tdev());
            let on = IrqView {
                msi_enabled: true,
                msi_qmax: Some(1),
                ..V
            };
            c.write_u16(0x40 + MSI_FLAGS, 0x70 | MSI_FLAGS_ENABLE, &on);
            assert_eq!(c.read_u16(0x40 + MSI_FLAGS, &on) & MSI_FLAGS_QSIZE, 0x10);
        }

        #[test]
        fn address_and_data_are_writable() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u32(0x40 + MSI_ADDRESS_LO, 0xfee0_1003, &V);
            c.write_u32(0x40 + MSI_ADDRESS_LO + 4, 0x1, &V);
            c.write_u16(0x40 + MSI_DATA_64, 0x4041, &V);
            assert_eq!(c.read_u32(0x40 + MSI_ADDRESS_LO, &V), 0xfee0_1000);
            assert_eq!(c.read_u32(0x40 + MSI_ADDRESS_LO + 4, &V), 1);
            assert_eq!(c.read_u16(0x40 + MSI_DATA_64, &V), 0x4041);
        }

        #[test]
        fn per_vector_mask_bits_are_writable_up_to_the_vector_count() {
            let mut s = tdev();
            s.caps = CapabilityList::new().msi(MsiCap {
                vectors: 4,
                address: MsiAddress::Bits64,
                masking: PerVectorMask::Present,
            });
            let mut c = ConfigSpace::new(&s);
            c.write_u32(0x40 + MSI_MASK_64, u32::MAX, &V);
            assert_eq!(c.read_u32(0x40 + MSI_MASK_64, &V), 0xf);
            assert_eq!(
                c.read_u16(0x40 + MSI_FLAGS, &V) & MSI_FLAGS_MASKBIT,
                MSI_FLAGS_MASKBIT
            );
        }
    }

    mod msix {
        use super::*;

        #[test]
        fn control_writes_are_dropped_and_enable_follows_set_irqs() {
            let mut c = ConfigSpace::new(&tdev());
            c.write_u16(0x50 + MSIX_FLAGS, 0xffff, &V);
            assert_eq!(c.read_u16(0x50 + MSIX_FLAGS, &V), 7);
            let on = IrqView {
                msix_enabled: true,
                ..V
            };
            assert_eq!(c.read_u16(0x50 + MSIX_FLAGS, &on), 0x8007);
        }

        #[test]
        fn table_and_pba_words_name_bar_and_offset() {
            let c = ConfigSpace::new(&tdev());
            assert_eq!(c.read_u32(0x50 + MSIX_TABLE, &V), 4);
            assert_eq!(c.read_u32(0x50 + MSIX_PBA, &V), 0x2004);
        }
    }

    mod pcie {
        use super::*;

        fn pcie_spec() -> FunctionSpec {
            let mut s = tdev();
            s.caps = CapabilityList::new().pm().pcie(PcieCap {
                flr: Flr::Supported,
            });
            s
        }

        #[test]
        fn pcie_makes_config_4k_with_empty_extended_space() {
            let c = ConfigSpace::new(&pcie_spec());
            assert_eq!(c.size(), 4096);
            assert_eq!(c.read_u32(EXT_CAP_START, &V), 0);
            assert_eq!(c.layout().pcie.map(|p| p.0), Some(0x48));
        }

        /// `vfio_exp_config_write`: initiate-FLR resets and reads back 0.
        #[test]
        fn devctl_flr_bit_requests_a_reset_and_reads_zero() {
            let mut c = ConfigSpace::new(&pcie_spec());
            let fx = c.write_u16(0x48 + EXP_DEVCTL, EXP_DEVCTL_BCR_FLR | 0x10, &V);
            assert!(fx.flr);
            assert_eq!(c.read_u16(0x48 + EXP_DEVCTL, &V), 0x10);
        }

        #[test]
        fn devsta_error_bits_are_write_one_to_clear() {
            let mut c = ConfigSpace::new(&pcie_spec());
            c.img.set_u16(0x48 + EXP_DEVSTA, 0x5);
            c.write_u16(0x48 + EXP_DEVSTA, 0x1, &V);
            assert_eq!(c.read_u16(0x48 + EXP_DEVSTA, &V), 0x4);
        }

        #[test]
        fn pm_d3hot_turns_memory_decode_off() {
            let mut c = ConfigSpace::new(&pcie_spec());
            assert!(c.memory_enabled());
            c.write_u16(0x40 + PM_CTRL, PM_D3HOT, &V);
            assert!(!c.memory_enabled());
            assert_eq!(
                c.read_u16(0x40 + PM_CTRL, &V),
                PM_D3HOT | PM_CTRL_NO_SOFT_RESET
            );
        }

        #[test]
        fn extended_capabilities_chain_from_0x100() {
            let mut s = pcie_spec();
            s.caps = s
                .caps
                .clone()
                .ext(crate::pci::caps::ExtCap {
                    id: 0x0b,
                    version: 1,
                    body: vec![1, 2, 3, 4],
                })
                .ext(crate::pci::caps::ExtCap {
                    id: 0x0d,
                    version: 1,
                    body: vec![],
                });
            let c = ConfigSpace::new(&s);
            assert_eq!(c.read_u32(0x100, &V), 0x1081_000b);
            assert_eq!(c.read_u32(0x104, &V), 0x0403_0201);
            assert_eq!(c.read_u32(0x108, &V), 0x0001_000d);
        }
    }
}
