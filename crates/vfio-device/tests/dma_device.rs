//! The built-in test device driven as a VMM drives it: config and BAR0 through `pread`/`pwrite`
//! at region offsets, interrupts and info through the byte-level device ioctls, guest memory in
//! a live type1 container over fake memory. Each test names the kernel rule it checks.

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use type1::mm::{AddressSpace, FakeMemory, LockCapability, Mm};
use type1::uapi::raw;
use type1::{
    Container, ContainerConfig, DirtyMode, GroupId, GroupSpec, MapDma, MapFlags, UserBuffer,
    UserMemory,
};
use type1::{Iova, Vaddr};
use vfio_bindings::bindings::vfio::{vfio_irq_set, vfio_region_info};
use vfio_device::ioctl::{VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_SET_IRQS};
use vfio_device::irq::EventFd;
use vfio_device::testdev::{self, reg};
use vfio_device::{Device, Dma, Location, NoGroupFds};

const RAM: u64 = 0x7f00_0000_0000;
const RAM_LEN: u64 = 64 << 20;
/// Guest RAM mapped for DMA at IOVA 0.
const MAPPED: u64 = 16 << 20;
const ARG: u64 = 0x10_0000;
const CONFIG: u64 = 7 << 40;
const GROUP: u32 = 5;

struct Rig {
    mem: Arc<FakeMemory>,
    c: Arc<Container>,
    dev: Arc<Device>,
}

#[derive(Clone, Copy)]
enum Kind {
    Iommu,
    Emulated,
}

fn rig(kind: Kind) -> Rig {
    let mem = Arc::new(FakeMemory::new());
    mem.add_ram(RAM, RAM_LEN, 1 << 32);
    let mm = Arc::new(Mm::new(
        Box::new(mem.clone()),
        None,
        LockCapability::Unlimited,
    ));
    let cfg = ContainerConfig {
        dirty_mode: DirtyMode::Precise,
        ..ContainerConfig::default()
    };
    let c = Arc::new(Container::new(cfg, mm));
    let spec = match kind {
        Kind::Iommu => GroupSpec::iommu(GROUP),
        Kind::Emulated => GroupSpec::emulated(GROUP),
    };
    c.set_group(spec).unwrap();
    c.set_iommu(type1::Version::V2).unwrap();
    c.map_dma(&MapDma {
        vaddr: Vaddr(RAM),
        iova: Iova(0),
        size: MAPPED,
        flags: MapFlags::READ | MapFlags::WRITE,
    })
    .unwrap();
    let dma = Dma::attach(&c, GroupId(GROUP)).unwrap();
    let dev = testdev::create(Location::new(GROUP, 0, 0, 4), dma).unwrap();
    Rig { mem, c, dev }
}

impl Rig {
    fn cfg_w16(&self, off: u64, v: u16) {
        assert_eq!(self.dev.write(CONFIG + off, &v.to_le_bytes()).unwrap(), 2);
    }
    fn cfg_r32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(CONFIG + off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn cfg_w32(&self, off: u64, v: u32) {
        self.dev.write(CONFIG + off, &v.to_le_bytes()).unwrap();
    }
    fn bus_master_on(&self) {
        self.cfg_w16(0x04, 0x0006);
    }
    fn reg_w64(&self, off: u64, v: u64) {
        assert_eq!(self.dev.write(off, &v.to_le_bytes()).unwrap(), 8);
    }
    fn reg_w32(&self, off: u64, v: u32) {
        assert_eq!(self.dev.write(off, &v.to_le_bytes()).unwrap(), 4);
    }
    fn reg_r32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn reg_r64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.dev.read(off, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
    /// One transfer through the registers.
    fn dma(&self, src: u64, dst: u64, count: u64, cmd: u64) -> u32 {
        self.reg_w64(reg::DMA_SRC, src);
        self.reg_w64(reg::DMA_DST, dst);
        self.reg_w64(reg::DMA_COUNT, count);
        self.reg_w64(reg::DMA_CMD, cmd | reg::CMD_START);
        self.reg_r32(reg::STATUS)
    }
    fn guest(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read(RAM + iova, &mut b).unwrap();
        b
    }
    /// `VFIO_DEVICE_SET_IRQS` as raw bytes.
    fn set_irqs(
        &self,
        flags: u32,
        index: u32,
        start: u32,
        count: u32,
        fds: &[i32],
    ) -> Result<i64, i32> {
        let mut u = UserBuffer::new(ARG, 4096);
        let data = offset_of!(vfio_irq_set, data);
        let argsz = u32::try_from(data + 4 * fds.len()).unwrap();
        let words = [argsz, flags, index, start, count];
        for (k, w) in words.iter().enumerate() {
            u.bytes[4 * k..4 * k + 4].copy_from_slice(&w.to_ne_bytes());
        }
        for (k, fd) in fds.iter().enumerate() {
            u.bytes[data + 4 * k..data + 4 * k + 4].copy_from_slice(&fd.to_ne_bytes());
        }
        self.dev
            .ioctl(VFIO_DEVICE_SET_IRQS, ARG, &mut u, &NoGroupFds)
            .map_err(|e| e.errno())
    }
}

const EVENTFD_TRIGGER: u32 = raw::VFIO_IRQ_SET_DATA_EVENTFD | raw::VFIO_IRQ_SET_ACTION_TRIGGER;
const NONE_UNMASK: u32 = raw::VFIO_IRQ_SET_DATA_NONE | raw::VFIO_IRQ_SET_ACTION_UNMASK;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect()
}

mod copy {
    use super::*;

    /// A DMA copy guest -> device -> guest through the IOMMU domain, completed with exactly
    /// one MSI-X interrupt on the registered eventfd.
    #[test]
    fn guest_to_device_to_guest_signals_msix_once() {
        let r = rig(Kind::Iommu);
        let data = pattern(8192);
        r.mem.write(RAM + 0x1000, &data).unwrap();
        r.bus_master_on();
        let e = EventFd::new().unwrap();
        r.set_irqs(EVENTFD_TRIGGER, 2, 0, 1, &[e.as_raw()]).unwrap();

        let s = r.dma(0x1000, 0, 8192, 0);
        assert_eq!(s, reg::STATUS_DONE);
        let s = r.dma(0, 0x40_0000, 8192, reg::CMD_TO_RAM | reg::CMD_IRQ);
        assert_eq!(s, reg::STATUS_DONE);

        assert_eq!(r.guest(0x40_0000, 8192), data);
        assert_eq!(e.read(), Some(1));
        assert_eq!(e.read(), None);
        assert_eq!(r.reg_r32(reg::IRQ_STATUS), reg::IRQ_DMA);
    }

    /// The same copy for a device in an emulated group: pin_pages + dma_rw, pins released.
    #[test]
    fn emulated_group_copies_through_pins_and_releases_them() {
        let r = rig(Kind::Emulated);
        let data = pattern(4096 + 100);
        r.mem.write(RAM + 0x3000, &data).unwrap();
        r.bus_master_on();
        assert_eq!(r.dma(0x3000, 0x800, 4196, 0), reg::STATUS_DONE);
        assert_eq!(
            r.dma(0x800, 0x9_0010, 4196, reg::CMD_TO_RAM),
            reg::STATUS_DONE
        );
        assert_eq!(r.guest(0x9_0010, 4196), data);
        assert!(r.c.mappings().iter().all(|m| m.device_pinned_pages == 0));
    }

    /// A function with bus master clear cannot DMA (the selftest's starting state).
    #[test]
    fn bus_master_clear_refuses_the_transfer() {
        let r = rig(Kind::Iommu);
        let s = r.dma(0, 0x1000, 64, reg::CMD_TO_RAM);
        assert_eq!(s, reg::STATUS_DONE | reg::STATUS_DMA_ERROR);
        assert_eq!(r.reg_r64(reg::DMA_CMD) & reg::CMD_ERROR, reg::CMD_ERROR);
    }
}

mod faults {
    use super::*;

    /// A transfer reaching an unmapped IOVA sets the error bits and writes nothing, not even
    /// the mapped first page.
    #[test]
    fn unmapped_destination_reports_a_fault_and_writes_nothing() {
        let r = rig(Kind::Iommu);
        r.bus_master_on();
        let dev_mem = r.dev.file();
        let _ = dev_mem;
        let s = r.dma(0, MAPPED - 4096, 8192, reg::CMD_TO_RAM);
        assert_eq!(s, reg::STATUS_DONE | reg::STATUS_DMA_ERROR);
        assert_eq!(r.guest(MAPPED - 4096, 4096), vec![0u8; 4096]);
    }

    /// A transfer from RAM whose source runs into an unmapped IOVA is refused before any byte
    /// moves (the whole source is translated first): device memory keeps what it held, though
    /// the copy goes straight into it without a bounce buffer.
    #[test]
    fn unmapped_source_reports_a_fault_and_leaves_device_memory_untouched() {
        let r = rig(Kind::Iommu);
        r.bus_master_on();
        let data = pattern(8192);
        r.mem.write(RAM + 0x2000, &data).unwrap();
        assert_eq!(r.dma(0x2000, 0, 8192, 0), reg::STATUS_DONE);
        r.mem.write(RAM + MAPPED - 4096, &[0xee; 4096]).unwrap();
        let s = r.dma(MAPPED - 4096, 0, 8192, 0);
        assert_eq!(s, reg::STATUS_DONE | reg::STATUS_DMA_ERROR);
        assert_eq!(r.dma(0, 0x10_0000, 8192, reg::CMD_TO_RAM), reg::STATUS_DONE);
        assert_eq!(r.guest(0x10_0000, 8192), data);
    }

    #[test]
    fn emulated_unmapped_destination_writes_nothing() {
        let r = rig(Kind::Emulated);
        r.bus_master_on();
        r.mem.write(RAM + 0x5000, &[0xaa; 16]).unwrap();
        assert_eq!(r.dma(0x5000, 0, 16, 0), reg::STATUS_DONE);
        let s = r.dma(0, MAPPED - 8, 16, reg::CMD_TO_RAM);
        assert_eq!(s, reg::STATUS_DONE | reg::STATUS_DMA_ERROR);
        assert_eq!(r.guest(MAPPED - 8, 8), vec![0u8; 8]);
    }

    /// A transfer whose last byte is the last IOVA (so `iova + count` is 2^64) is refused as
    /// any unmapped range is, in both directions and both kinds of group: the IOMMU domain
    /// faults, and `vfio_iommu_type1_pin_pages` / `vfio_dma_rw` (v6.18) find no mapping there
    /// (`EINVAL`). Found by the `device_bytes` fuzzer: the emulated path computed the end of
    /// the range and overflowed.
    #[test]
    fn a_transfer_ending_at_the_top_of_the_iova_space_is_refused() {
        for kind in [Kind::Iommu, Kind::Emulated] {
            let r = rig(kind);
            r.bus_master_on();
            let top = u64::MAX - 0xff;
            let s = r.dma(0, top, 0x100, reg::CMD_TO_RAM);
            assert_eq!(s, reg::STATUS_DONE | reg::STATUS_DMA_ERROR);
            let s = r.dma(top, 0, 0x100, 0);
            assert_eq!(s, reg::STATUS_DONE | reg::STATUS_DMA_ERROR);
            assert!(r.c.mappings().iter().all(|m| m.device_pinned_pages == 0));
            // The device still works.
            assert_eq!(r.dma(0, 0x1000, 0x100, reg::CMD_TO_RAM), reg::STATUS_DONE);
        }
    }

    /// Device memory bounds: edu copies out of bounds; this device refuses.
    #[test]
    fn a_range_outside_device_memory_is_refused() {
        let r = rig(Kind::Iommu);
        r.bus_master_on();
        let s = r.dma(0, testdev::MEM_SIZE - 4, 8, 0);
        assert_eq!(s, reg::STATUS_DONE | reg::STATUS_DMA_ERROR);
    }
}

mod dirty {
    use super::*;

    /// Precise mode reads the page table's hardware dirty bits: exactly the pages the device
    /// wrote are reported.
    #[test]
    fn precise_mode_reports_exactly_the_written_pages() {
        let r = rig(Kind::Iommu);
        r.bus_master_on();
        r.c.dirty_start().unwrap();
        let _ = r.c.dirty_bitmap(Iova(0), MAPPED, 4096).unwrap();
        assert_eq!(
            r.dma(0, 0x2_0800, 2 * 4096, reg::CMD_TO_RAM),
            reg::STATUS_DONE
        );
        let bm = r.c.dirty_bitmap(Iova(0), MAPPED, 4096).unwrap();
        let set: Vec<u64> = (0..MAPPED / 4096)
            .filter(|&p| bm[(p / 64) as usize] >> (p % 64) & 1 == 1)
            .collect();
        assert_eq!(set, vec![0x20, 0x21, 0x22]);
    }

    /// The autonomous writer writes whole pages inside its window only, and stops on
    /// request.
    #[test]
    fn autonomous_writer_stays_inside_its_window() {
        let r = rig(Kind::Iommu);
        r.bus_master_on();
        r.c.dirty_start().unwrap();
        let _ = r.c.dirty_bitmap(Iova(0), MAPPED, 4096).unwrap();
        let (base, size) = (0x10_0000u64, 16 * 4096u64);
        r.reg_w64(reg::WRITER_BASE, base);
        r.reg_w64(reg::WRITER_SIZE, size);
        r.reg_w64(reg::WRITER_SEED, 42);
        r.reg_w32(reg::WRITER_RATE, 0);
        r.reg_w32(reg::WRITER_CTRL, 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while r.reg_r64(reg::WRITER_PAGES) < 64 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        r.reg_w32(reg::WRITER_CTRL, 0);
        assert!(r.reg_r64(reg::WRITER_PAGES) >= 64);
        let bm = r.c.dirty_bitmap(Iova(0), MAPPED, 4096).unwrap();
        let set: Vec<u64> = (0..MAPPED / 4096)
            .filter(|&p| bm[(p / 64) as usize] >> (p % 64) & 1 == 1)
            .collect();
        assert!(!set.is_empty());
        assert!(set
            .iter()
            .all(|&p| p * 4096 >= base && p * 4096 < base + size));
        assert_eq!(r.reg_r64(reg::WRITER_FAULTS), 0);
    }
}

mod intx {
    use super::*;

    /// `vfio_intx_handler` / `vfio_pci_intx_unmask_handler` through the ioctl bytes and the
    /// device's IRQ registers.
    #[test]
    fn mask_unmask_and_resample_follow_the_line() {
        let r = rig(Kind::Iommu);
        let t = EventFd::new().unwrap();
        r.set_irqs(EVENTFD_TRIGGER, 0, 0, 1, &[t.as_raw()]).unwrap();
        r.reg_w32(reg::IRQ_RAISE, 1);
        assert_eq!(t.read(), Some(1));
        r.reg_w32(reg::IRQ_RAISE, 2);
        assert_eq!(t.read(), None);
        r.set_irqs(NONE_UNMASK, 0, 0, 1, &[]).unwrap();
        assert_eq!(t.read(), Some(1));
        r.reg_w32(reg::IRQ_ACK, 3);
        r.set_irqs(NONE_UNMASK, 0, 0, 1, &[]).unwrap();
        assert_eq!(t.read(), None);
        // Status bit 3 follows the line.
        r.reg_w32(reg::IRQ_RAISE, 1);
        assert_eq!(r.cfg_r32(0x04) >> 16 & 0x8, 0x8);
        let u = EventFd::new().unwrap();
        let unmask_efd = raw::VFIO_IRQ_SET_DATA_EVENTFD | raw::VFIO_IRQ_SET_ACTION_UNMASK;
        r.set_irqs(unmask_efd, 0, 0, 1, &[u.as_raw()]).unwrap();
        let _ = t.read();
        u.signal();
        let mut got = None;
        for _ in 0..400 {
            got = t.read();
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, Some(1));
    }
}

mod config {
    use super::*;

    /// `vfio_pci_core_enable` leaves bus master clear; it sets and clears with read-back.
    #[test]
    fn bus_master_starts_clear_and_follows_writes() {
        let r = rig(Kind::Iommu);
        assert_eq!(r.cfg_r32(0x00), 0x11e8_1234);
        assert_eq!(r.cfg_r32(0x04) & 0x4, 0);
        r.bus_master_on();
        assert_eq!(r.cfg_r32(0x04) & 0x4, 0x4);
        r.cfg_w16(0x04, 0x0002);
        assert_eq!(r.cfg_r32(0x04) & 0x4, 0);
    }

    /// `vfio_bar_fixup` sizing, and a ROM BAR that reads 0 without a ROM.
    #[test]
    fn bar_sizing_and_rom_bar() {
        let r = rig(Kind::Iommu);
        for bar in 0..6 {
            r.cfg_w32(0x10 + 4 * bar, u32::MAX);
        }
        r.cfg_w32(0x30, 0xffff_f800);
        let got: Vec<u32> = (0..6).map(|b| r.cfg_r32(0x10 + 4 * b)).collect();
        assert_eq!(
            got,
            vec![0xfff0_0000, 0, 0xff00_000c, 0xffff_ffff, 0xffff_c000, 0]
        );
        assert_eq!(r.cfg_r32(0x30), 0);
    }

    /// `vfio_config_do_rw`: EFAULT past config space; count 0 is 0.
    #[test]
    fn config_access_past_the_end_is_efault() {
        let r = rig(Kind::Iommu);
        let mut b = [0u8; 2];
        assert_eq!(r.dev.read(CONFIG + 255, &mut b[..1]).unwrap(), 1);
        assert_eq!(
            r.dev.read(CONFIG + 255, &mut b).unwrap_err().errno(),
            libc::EFAULT
        );
        assert_eq!(
            r.dev.read(CONFIG + 256, &mut b[..1]).unwrap_err().errno(),
            libc::EFAULT
        );
        assert_eq!(r.dev.read(CONFIG + 256, &mut []).unwrap(), 0);
    }

    /// `vfio_pci_bar_rw`: past the BAR is EINVAL, the count is clipped, MEM off is EIO,
    /// the MSI-X table reads 0xff.
    #[test]
    fn bar_access_rules() {
        let r = rig(Kind::Iommu);
        let mut b = [0u8; 16];
        assert_eq!(
            r.dev.read(1 << 20, &mut b[..1]).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(r.dev.read((1 << 20) - 2, &mut b[..8]).unwrap(), 2);
        assert_eq!(r.dev.read(0x01, &mut b[..3]).unwrap(), 3);
        assert_eq!(r.dev.read(4 << 40, &mut b).unwrap(), 16);
        assert_eq!(b, [0xff; 16]);
        assert_eq!(
            r.dev.read(1 << 40, &mut b[..4]).unwrap_err().errno(),
            libc::EINVAL
        );
        r.cfg_w16(0x04, 0);
        assert_eq!(r.dev.read(0, &mut b[..4]).unwrap_err().errno(), libc::EIO);
    }

    /// `vfio_pci_ioctl_get_info` and `vfio_pci_ioctl_get_region_info` at byte level:
    /// PCI|RESET, 9 regions, 5 irqs; BAR4 grows argsz to 40, then gets MSIX_MAPPABLE at 32.
    #[test]
    fn info_and_region_info_bytes() {
        let r = rig(Kind::Iommu);
        let mut u = UserBuffer::new(ARG, 4096);
        u.bytes[..4].copy_from_slice(&16u32.to_ne_bytes());
        r.dev
            .ioctl(VFIO_DEVICE_GET_INFO, ARG, &mut u, &NoGroupFds)
            .unwrap();
        let w =
            |u: &UserBuffer, at: usize| u32::from_ne_bytes(u.bytes[at..at + 4].try_into().unwrap());
        assert_eq!((w(&u, 4), w(&u, 8), w(&u, 12)), (3, 9, 5));
        u.bytes[..4].copy_from_slice(&15u32.to_ne_bytes());
        let e = r
            .dev
            .ioctl(VFIO_DEVICE_GET_INFO, ARG, &mut u, &NoGroupFds)
            .unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);

        let mut u = UserBuffer::new(ARG, 4096);
        let argsz = u32::try_from(size_of::<vfio_region_info>()).unwrap();
        u.bytes[..4].copy_from_slice(&argsz.to_ne_bytes());
        u.bytes[8..12].copy_from_slice(&4u32.to_ne_bytes());
        r.dev
            .ioctl(VFIO_DEVICE_GET_REGION_INFO, ARG, &mut u, &NoGroupFds)
            .unwrap();
        assert_eq!(w(&u, 0), 40);
        assert_eq!(w(&u, offset_of!(vfio_region_info, cap_offset)), 0);
        r.dev
            .ioctl(VFIO_DEVICE_GET_REGION_INFO, ARG, &mut u, &NoGroupFds)
            .unwrap();
        assert_eq!(w(&u, offset_of!(vfio_region_info, cap_offset)), 32);
        assert_eq!(w(&u, 32), 0x0001_0003);
        let mut probe = [0u8; 8];
        u.read(ARG + 40, &mut probe).unwrap();
        assert_eq!(probe, [0; 8]);
    }

    /// DEVICE_RESET: registers back to power-on; command and bindings survive.
    #[test]
    fn reset_restores_registers_and_keeps_config() {
        let r = rig(Kind::Iommu);
        r.bus_master_on();
        r.reg_w32(reg::LIVENESS, 5);
        r.reg_w64(reg::DMA_SRC, 0x1234);
        let mut u = UserBuffer::new(ARG, 64);
        r.dev
            .ioctl(
                vfio_device::ioctl::VFIO_DEVICE_RESET,
                0,
                &mut u,
                &NoGroupFds,
            )
            .unwrap();
        assert_eq!(r.reg_r32(reg::LIVENESS), u32::MAX);
        assert_eq!(r.reg_r64(reg::DMA_SRC), 0);
        assert_eq!(r.cfg_r32(0x04) & 0x6, 0x6);
    }
}
