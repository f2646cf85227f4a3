//! PCI configuration-space register offsets and bits (`include/uapi/linux/pci_regs.h`), named
//! once here and used everywhere else. Offsets are bytes from the start of config space, or from
//! the start of a capability where the name says so (`MSI_*`, `MSIX_*`, `PM_*`, `EXP_*`).

/// Vendor ID (u16).
pub const VENDOR_ID: usize = 0x00;
/// Device ID (u16).
pub const DEVICE_ID: usize = 0x02;
/// Command (u16).
pub const COMMAND: usize = 0x04;
/// Status (u16).
pub const STATUS: usize = 0x06;
/// Revision ID (u8).
pub const REVISION_ID: usize = 0x08;
/// Class code: programming interface (u8); the class is the 24 bits at 0x09..0x0C.
pub const CLASS_PROG: usize = 0x09;
/// Cache line size (u8).
pub const CACHE_LINE_SIZE: usize = 0x0c;
/// Latency timer (u8).
pub const LATENCY_TIMER: usize = 0x0d;
/// Header type (u8).
pub const HEADER_TYPE: usize = 0x0e;
/// BIST (u8).
pub const BIST: usize = 0x0f;
/// BAR 0 (u32); BAR n is at `BASE_ADDRESS_0 + 4 n`.
pub const BASE_ADDRESS_0: usize = 0x10;
/// Subsystem vendor ID (u16).
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
/// Subsystem ID (u16).
pub const SUBSYSTEM_ID: usize = 0x2e;
/// Expansion ROM BAR (u32).
pub const ROM_ADDRESS: usize = 0x30;
/// Capabilities pointer (u8).
pub const CAPABILITY_LIST: usize = 0x34;
/// Interrupt line (u8).
pub const INTERRUPT_LINE: usize = 0x3c;
/// Interrupt pin (u8).
pub const INTERRUPT_PIN: usize = 0x3d;
/// End of the type-0 header; capabilities start at or after this.
pub const STD_HEADER_SIZEOF: usize = 0x40;
/// Size of conventional config space.
pub const CFG_SPACE_SIZE: usize = 256;
/// Size of PCI Express extended config space.
pub const CFG_SPACE_EXP_SIZE: usize = 4096;

/// Command: I/O space decode.
pub const COMMAND_IO: u16 = 0x1;
/// Command: memory space decode.
pub const COMMAND_MEMORY: u16 = 0x2;
/// Command: bus master (the function may DMA).
pub const COMMAND_MASTER: u16 = 0x4;
/// Command: parity error response.
pub const COMMAND_PARITY: u16 = 0x40;
/// Command: SERR# enable.
pub const COMMAND_SERR: u16 = 0x100;
/// Command: INTx emulation disable.
pub const COMMAND_INTX_DISABLE: u16 = 0x400;

/// Status: INTx asserted.
pub const STATUS_INTERRUPT: u16 = 0x8;
/// Status: capability list present.
pub const STATUS_CAP_LIST: u16 = 0x10;

/// Header type 0 (normal function).
pub const HEADER_TYPE_NORMAL: u8 = 0;

/// BAR bit 0: I/O space.
pub const BASE_ADDRESS_SPACE_IO: u32 = 0x1;
/// BAR bits 2:1 = 10b: 64-bit memory BAR.
pub const BASE_ADDRESS_MEM_TYPE_64: u32 = 0x4;
/// BAR bit 3: prefetchable.
pub const BASE_ADDRESS_MEM_PREFETCH: u32 = 0x8;
/// ROM BAR bit 0: decode enable.
pub const ROM_ADDRESS_ENABLE: u32 = 0x1;

/// Capability ID: power management.
pub const CAP_ID_PM: u8 = 0x01;
/// Capability ID: MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID: PCI Express.
pub const CAP_ID_EXP: u8 = 0x10;
/// Capability ID: MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Capability: offset of the next pointer.
pub const CAP_LIST_NEXT: usize = 1;

/// PM: capabilities register (u16).
pub const PM_PMC: usize = 2;
/// PM: control/status register (u16).
pub const PM_CTRL: usize = 4;
/// PM capability length.
pub const PM_SIZEOF: usize = 8;
/// PMC: version 3 (PCI PM 1.2).
pub const PM_PMC_VERSION_3: u16 = 0x3;
/// PMCSR: power state field (D0..D3hot).
pub const PM_CTRL_STATE_MASK: u16 = 0x3;
/// PMCSR: D3hot.
pub const PM_D3HOT: u16 = 0x3;
/// PMCSR: no soft reset on D3hot -> D0.
pub const PM_CTRL_NO_SOFT_RESET: u16 = 0x8;
/// PMCSR: PME enable.
pub const PM_CTRL_PME_ENABLE: u16 = 0x100;
/// PMCSR: PME status (RW1C).
pub const PM_CTRL_PME_STATUS: u16 = 0x8000;

/// MSI: message control (u16).
pub const MSI_FLAGS: usize = 2;
/// MSI control: enable.
pub const MSI_FLAGS_ENABLE: u16 = 0x1;
/// MSI control: multiple message capable (log2 of vectors), bits 3:1.
pub const MSI_FLAGS_QMASK: u16 = 0xe;
/// MSI control: multiple message enable, bits 6:4.
pub const MSI_FLAGS_QSIZE: u16 = 0x70;
/// MSI control: 64-bit address capable.
pub const MSI_FLAGS_64BIT: u16 = 0x80;
/// MSI control: per-vector masking capable.
pub const MSI_FLAGS_MASKBIT: u16 = 0x100;
/// MSI: message address low (u32).
pub const MSI_ADDRESS_LO: usize = 4;
/// MSI: message data of a 32-bit capability.
pub const MSI_DATA_32: usize = 8;
/// MSI: message data of a 64-bit capability.
pub const MSI_DATA_64: usize = 12;
/// MSI: mask bits of a 32-bit capability.
pub const MSI_MASK_32: usize = 12;
/// MSI: mask bits of a 64-bit capability.
pub const MSI_MASK_64: usize = 16;

/// MSI-X: message control (u16).
pub const MSIX_FLAGS: usize = 2;
/// MSI-X control: table size - 1.
pub const MSIX_FLAGS_QSIZE: u16 = 0x7ff;
/// MSI-X control: function mask.
pub const MSIX_FLAGS_MASKALL: u16 = 0x4000;
/// MSI-X control: enable.
pub const MSIX_FLAGS_ENABLE: u16 = 0x8000;
/// MSI-X: table offset / BIR (u32).
pub const MSIX_TABLE: usize = 4;
/// MSI-X: PBA offset / BIR (u32).
pub const MSIX_PBA: usize = 8;
/// MSI-X capability length.
pub const MSIX_SIZEOF: usize = 12;
/// MSI-X table entry size.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// MSI-X table entry: vector control (u32).
pub const MSIX_ENTRY_VECTOR_CTRL: u64 = 12;
/// MSI-X vector control: masked.
pub const MSIX_ENTRY_CTRL_MASKBIT: u32 = 0x1;

/// PCIe: capabilities register (u16).
pub const EXP_FLAGS: usize = 2;
/// PCIe capabilities: version 2.
pub const EXP_FLAGS_VERS_2: u16 = 0x2;
/// PCIe: device capabilities (u32).
pub const EXP_DEVCAP: usize = 4;
/// DEVCAP: function-level reset capable.
pub const EXP_DEVCAP_FLR: u32 = 0x1000_0000;
/// PCIe: device control (u16).
pub const EXP_DEVCTL: usize = 8;
/// DEVCTL: initiate function-level reset.
pub const EXP_DEVCTL_BCR_FLR: u16 = 0x8000;
/// DEVCTL: phantom functions enable (not writable through vfio-pci).
pub const EXP_DEVCTL_PHANTOM: u16 = 0x200;
/// PCIe: device status (u16).
pub const EXP_DEVSTA: usize = 10;
/// DEVSTA: the error-detected bits (correctable, non-fatal, fatal, unsupported request), RW1C.
pub const EXP_DEVSTA_ERRORS: u16 = 0xf;
/// PCIe: link control (u16).
pub const EXP_LNKCTL: usize = 16;
/// PCIe: device control 2 (u16).
pub const EXP_DEVCTL2: usize = 40;
/// Length of a version-2 endpoint PCIe capability.
pub const EXP_ENDPOINT_SIZEOF_V2: usize = 60;
/// First extended capability.
pub const EXT_CAP_START: usize = 0x100;
