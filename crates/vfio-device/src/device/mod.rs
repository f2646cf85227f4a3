//! A device: one PCI function behind a vfio-pci device fd.
//!
//! [`Device`] ties the config space, regions, interrupts, the device file and the model
//! together, and implements region access (`vfio_pci_rw`, v6.18
//! `drivers/vfio/pci/vfio_pci_core.c` and `vfio_pci_rdwr.c`) and reset. The byte-level ioctl
//! entry is one layer up, in `ioctl.rs`.
//!
//! Region access, by index (file offsets are `index << 40 | pos`):
//! - config: `pos + count` past config space is `EFAULT` (`vfio_config_do_rw`), otherwise any
//!   size and alignment;
//! - BARs: unimplemented or `pos >= size` is `EINVAL`; the count is clipped at the end; the
//!   transfer is split into naturally aligned 8/4/2/1-byte accesses; inside the MSI-X table
//!   reads give 0xFF and writes are dropped; a memory BAR with memory decode off is `EIO`
//!   (`vfio_pci_core_do_io_rw`);
//! - ROM: writes are `EINVAL`, reads past the image give 0xFF;
//! - VGA and indexes past the regions: `EINVAL`. A count of 0 returns 0.
//!
//! Reset (`VFIO_DEVICE_RESET`, `PCI_HOT_RESET`, PCIe initiate-FLR): the kernel saves and
//! restores config state around `pci_try_reset_function`, so command, BARs, MSI/MSI-X setup and
//! `SET_IRQS` bindings look unchanged; the model goes back to power-on with its DMA stopped.
//!
//! Concurrency: config space is behind a mutex (taken before the interrupt mutex, never
//! after); no lock is held while the model runs.
//!
//! `impl Device` is split by concern: region access and reset here, the migration API in
//! `migration.rs` (the v2 state walk) and `migration_v1.rs` (the v1 region), the byte-level
//! ioctls in the ioctl layer above (`ioctl.rs`, which nothing below imports).

mod migration;
mod migration_v1;

use std::ffi::CStr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::dma::Dma;
use crate::error::{Error, Result};
use crate::irq::{Interrupts, IrqCounts, MsixTable, Store};
use crate::memfd::{DeviceFile, SharedMemory};
use crate::migration::{MigCore, MigrationSpec};
use crate::model::{DeviceContext, DeviceModel};
use crate::pci::regs::COMMAND_INTX_DISABLE;
use crate::pci::{BarBacking, ConfigSpace, FunctionSpec, NUM_BARS};
use crate::region::{
    MapSharing, MmapArea, MsixMmap, RegionIndex, RegionInfo, Regions, NUM_REGIONS,
};

/// Where the function sits: its IOMMU group and PCI address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// IOMMU group number.
    pub group: u32,
    /// PCI segment (domain).
    pub segment: u16,
    /// Bus.
    pub bus: u8,
    /// Device and function, `(dev << 3) | fn`.
    pub devfn: u8,
}

impl Location {
    /// Group `group`, `segment:bus:dev.0`.
    #[must_use]
    pub fn new(group: u32, segment: u16, bus: u8, dev: u8) -> Self {
        Location {
            group,
            segment,
            bus,
            devfn: dev << 3,
        }
    }
}

/// Whether `VFIO_DEVICE_RESET` works (`vdev->reset_works`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetSupport {
    /// Function reset available: flags `RESET`.
    Function,
    /// No reset: `VFIO_DEVICE_RESET` is `EINVAL`, hot reset `ENODEV`.
    None,
}

/// Everything needed to create a [`Device`].
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// The function.
    pub function: FunctionSpec,
    /// Where it sits.
    pub location: Location,
    /// How an mmap-able MSI-X BAR is offered.
    pub msix_mmap: MsixMmap,
    /// Reset support.
    pub reset: ResetSupport,
    /// Migration and DMA logging offered ([`MigrationSpec::none`] by default).
    pub migration: MigrationSpec,
}

impl DeviceSpec {
    /// A spec with the v4.16+ MSI-X mmap policy and function reset.
    #[must_use]
    pub fn new(function: FunctionSpec, location: Location) -> Self {
        DeviceSpec {
            function,
            location,
            msix_mmap: MsixMmap::Mappable,
            reset: ResetSupport::Function,
            migration: MigrationSpec::none(),
        }
    }
}

/// One PCI function behind a device fd.
#[derive(Debug)]
pub struct Device {
    spec: DeviceSpec,
    file: DeviceFile,
    bar_memory: [Option<Arc<SharedMemory>>; NUM_BARS],
    config: Mutex<ConfigSpace>,
    regions: Regions,
    irqs: Arc<Interrupts>,
    dma: Arc<Dma>,
    model: Arc<dyn DeviceModel>,
    pub(crate) mig: Mutex<MigCore>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.release();
    }
}

impl Device {
    /// Creates the device: validates the spec, creates its file and BAR memory, and builds
    /// the model with `make`.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`], or [`Error::Os`] if the memfd or a mapping fails.
    pub fn new<F>(spec: DeviceSpec, dma: Dma, make: F) -> Result<Arc<Device>>
    where
        F: FnOnce(DeviceContext) -> Arc<dyn DeviceModel>,
    {
        let f = &spec.function;
        f.validate()?;
        let file = DeviceFile::new(
            Self::file_name(),
            u64::from(NUM_REGIONS) << crate::region::OFFSET_SHIFT,
        )?;
        let mut bar_memory: [Option<Arc<SharedMemory>>; NUM_BARS] = Default::default();
        for (i, b) in f.bars.iter().enumerate() {
            if let Some(b) = b.filter(|b| b.backing == BarBacking::Memory) {
                bar_memory[i] = Some(Arc::new(file.map(RegionIndex::bar(i).offset(), b.size)?));
            }
        }
        let config = ConfigSpace::new(f);
        let regions = Regions::new(f, config.size(), spec.msix_mmap)
            .with_v1_migration(spec.migration.v1_region && spec.migration.flags != 0);
        let msix = f.caps.msix_cap().map(|x| {
            let store = |bar: u8, off: u32, len: u64| match &bar_memory[usize::from(bar)] {
                Some(m) => Store::Shared(m.clone(), u64::from(off)),
                None => Store::Local(vec![0; usize::try_from(len).unwrap_or(0)]),
            };
            MsixTable::new(
                store(x.table.bar, x.table.offset, x.table_bytes()),
                store(x.pba.bar, x.pba.offset, x.pba_bytes()),
                x.table_size,
            )
        });
        let counts = IrqCounts {
            intx: u32::from(f.pin.raw() != 0),
            msi: f.caps.msi_cap().map_or(0, |m| u32::from(m.vectors)),
            msix: f.caps.msix_cap().map_or(0, |x| u32::from(x.table_size)),
            err: u32::from(f.caps.is_pcie()),
        };
        let irqs = Interrupts::new(counts, msix);
        let dma = Arc::new(dma);
        dma.set_bus_master(config.bus_master());
        let model = make(DeviceContext {
            dma: dma.clone(),
            irqs: irqs.clone(),
            bar_memory: bar_memory.clone(),
        });
        Ok(Arc::new(Device {
            spec,
            file,
            bar_memory,
            config: Mutex::new(config),
            regions,
            irqs,
            dma,
            model,
            mig: Mutex::new(MigCore::new()),
        }))
    }

    fn cfg(&self) -> MutexGuard<'_, ConfigSpace> {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The spec the device was created from.
    #[must_use]
    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    /// The device file (a memfd): hand it out as the device fd, or `mmap` it at the offsets
    /// of [`Device::mmap_areas`].
    #[must_use]
    pub fn file(&self) -> &DeviceFile {
        &self.file
    }

    /// The name of the device file.
    #[must_use]
    pub fn file_name() -> &'static CStr {
        c"type1-vfio-device"
    }

    /// The ranges of the device file a program may `mmap`.
    #[must_use]
    pub fn mmap_areas(&self) -> Vec<MmapArea> {
        self.regions.mmap_areas()
    }

    /// `vfio_pci_core_mmap`'s checks for `mmap(len, file_offset)`.
    ///
    /// # Errors
    /// [`Error::Mmap`] (`EINVAL`).
    pub fn check_mmap(&self, file_offset: u64, len: u64, sharing: MapSharing) -> Result<()> {
        self.regions.check_mmap(file_offset, len, sharing)
    }

    /// The region layout.
    #[must_use]
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// Region info for `index`.
    ///
    /// # Errors
    /// [`Error::NoRegion`].
    pub fn region_info(&self, index: RegionIndex) -> Result<RegionInfo> {
        self.regions.info(index)
    }

    /// The interrupt side.
    #[must_use]
    pub fn irqs(&self) -> &Arc<Interrupts> {
        &self.irqs
    }

    /// The DMA handle.
    #[must_use]
    pub fn dma(&self) -> &Arc<Dma> {
        &self.dma
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &Arc<dyn DeviceModel> {
        &self.model
    }

    /// True if `VFIO_DEVICE_RESET` works.
    #[must_use]
    pub fn reset_works(&self) -> bool {
        self.spec.reset == ResetSupport::Function
    }

    /// Function-level reset (see the module docs).
    ///
    /// # Errors
    /// [`Error::NoReset`] without reset support.
    pub fn reset(&self) -> Result<()> {
        if !self.reset_works() {
            return Err(Error::NoReset);
        }
        {
            // Migration: the transfer ends (its fd reads ENODEV), the state is RUNNING and
            // the model, reset, may DMA again (mlx5's deferred reset).
            let mut core = self.mig();
            self.model.reset();
            self.migration_reset(&mut core);
        }
        self.irqs.reset_device_side();
        Ok(())
    }

    /// Last close: interrupts disabled and eventfds dropped, DMA logging stopped, the
    /// migration transfer ended and the state RUNNING, the model reset and released
    /// (`vfio_pci_core_close_device`, `vfio_device_last_close`).
    pub fn release(&self) {
        self.irqs.release();
        *self.dma.log() = None;
        {
            let mut core = self.mig();
            self.model.reset();
            self.migration_reset(&mut core);
        }
        self.model.release();
    }

    // ----- region access -----

    /// `pread(fd, buf, file_offset)`: returns bytes read.
    ///
    /// # Errors
    /// As in the module docs.
    pub fn read(&self, file_offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.rw(file_offset, Buf::Read(buf))
    }

    /// `pwrite(fd, data, file_offset)`: returns bytes written.
    ///
    /// # Errors
    /// As in the module docs.
    pub fn write(&self, file_offset: u64, data: &[u8]) -> Result<usize> {
        self.rw(file_offset, Buf::Write(data))
    }

    fn rw(&self, file_offset: u64, mut buf: Buf<'_>) -> Result<usize> {
        if buf.len() == 0 {
            return Ok(0);
        }
        let (index, pos) = RegionIndex::split(file_offset);
        if index.0 >= self.regions.count() {
            return Err(Error::NoRegion { index: index.0 });
        }
        if index.0 == crate::migration::v1::INDEX {
            return match buf {
                Buf::Read(b) => self.v1_read(pos, b),
                Buf::Write(d) => self.v1_write(pos, d),
            };
        }
        if index == RegionIndex::CONFIG {
            return self.config_rw(pos, &mut buf);
        }
        if index == RegionIndex::ROM {
            if matches!(buf, Buf::Write(_)) {
                return Err(Error::ReadOnly { index: index.0 });
            }
            return self.bar_rw(index, pos, &mut buf);
        }
        if index.as_bar().is_some() {
            return self.bar_rw(index, pos, &mut buf);
        }
        Err(Error::NoRegion { index: index.0 })
    }

    /// `vfio_pci_config_rw`.
    fn config_rw(&self, pos: u64, buf: &mut Buf<'_>) -> Result<usize> {
        let size = self.regions.config_size();
        let count = buf.len() as u64;
        if pos >= size || pos + count > size {
            return Err(Error::ConfigRange { pos, count, size });
        }
        let p = usize::try_from(pos).unwrap_or(0);
        let mut cfg = self.cfg();
        let view = self.irqs.view();
        match buf {
            Buf::Read(b) => cfg.read(p, b, &view),
            Buf::Write(d) => {
                let fx = cfg.write(p, d, &view);
                let flr = fx.flr;
                if let Some((old, new)) = fx.command {
                    self.dma.set_bus_master(cfg.bus_master());
                    if (old ^ new) & COMMAND_INTX_DISABLE != 0 {
                        self.irqs.set_virq_disabled(new & COMMAND_INTX_DISABLE != 0);
                    }
                }
                drop(cfg);
                if flr {
                    // Config write path of `vfio_exp_config_write`: errors are not reported.
                    let _ = self.reset();
                }
            }
        }
        Ok(buf.len())
    }

    /// `vfio_pci_bar_rw` + `vfio_pci_core_do_io_rw`.
    fn bar_rw(&self, index: RegionIndex, pos: u64, buf: &mut Buf<'_>) -> Result<usize> {
        let rom = index == RegionIndex::ROM;
        let (end, slot) = match index.as_bar() {
            Some(s) => (self.regions.bar_size(s), Some(s)),
            None => (self.regions.rom_size(), None),
        };
        if end == 0 || pos >= end {
            return Err(Error::RegionRange {
                index: index.0,
                pos,
            });
        }
        let count = usize::try_from((buf.len() as u64).min(end - pos)).unwrap_or(0);
        let spec = slot.and_then(|s| self.spec.function.bar(s).copied());
        let test_mem = rom || spec.is_some_and(|b| b.kind.is_memory());
        // The excluded window: the MSI-X table, or the ROM past its image.
        let (x_start, x_end) = if rom {
            let image = self
                .spec
                .function
                .rom
                .as_ref()
                .map_or(0, |r| r.image.len() as u64);
            (image, end)
        } else {
            match self.regions.msix_table() {
                Some((bar, s, e)) if Some(bar) == slot => (s, e),
                _ => (0, 0),
            }
        };
        let pba = self.spec.function.caps.msix_cap().and_then(|x| {
            (Some(usize::from(x.pba.bar)) == slot).then(|| {
                let s = u64::from(x.pba.offset);
                (s, s + x.pba_bytes())
            })
        });
        let mut done = 0usize;
        while done < count {
            let off = pos + done as u64;
            let left = (count - done) as u64;
            let fillable = if off < x_start {
                left.min(x_start - off)
            } else if off >= x_end {
                left
            } else {
                0
            };
            let size = if fillable >= 8 && off % 8 == 0 {
                8
            } else if fillable >= 4 && off % 4 == 0 {
                4
            } else if fillable >= 2 && off % 2 == 0 {
                2
            } else if fillable > 0 {
                1
            } else {
                let n = usize::try_from(left.min(x_end - off)).unwrap_or(0);
                if let Buf::Read(b) = buf {
                    b[done..done + n].fill(0xff);
                }
                done += n;
                continue;
            };
            if test_mem && !self.cfg().memory_enabled() {
                return Err(Error::MemoryDisabled);
            }
            let chunk = done..done + size;
            if rom {
                if let Buf::Read(b) = buf {
                    let img = self
                        .spec
                        .function
                        .rom
                        .as_ref()
                        .map_or(&[][..], |r| &r.image[..]);
                    let s = usize::try_from(off).unwrap_or(usize::MAX);
                    b[chunk].copy_from_slice(&img[s..s + size]);
                }
            } else if let Some(s) = slot {
                self.bar_access(s, off, pba, buf, chunk);
            }
            done += size;
        }
        if slot.is_some() {
            self.irqs.msix_poll();
        }
        Ok(count)
    }

    fn bar_access(
        &self,
        slot: usize,
        off: u64,
        pba: Option<(u64, u64)>,
        buf: &mut Buf<'_>,
        chunk: std::ops::Range<usize>,
    ) {
        if let Some(m) = &self.bar_memory[slot] {
            match buf {
                Buf::Read(b) => {
                    m.read(off, &mut b[chunk]);
                }
                Buf::Write(d) => {
                    m.write(off, &d[chunk]);
                }
            }
            return;
        }
        let in_pba = pba.is_some_and(|(s, e)| off >= s && off < e);
        match buf {
            Buf::Read(b) if in_pba => {
                let (s, _) = pba.unwrap_or((0, 0));
                self.irqs.read_pba(off - s, &mut b[chunk]);
            }
            Buf::Write(_) if in_pba => {}
            Buf::Read(b) => self.model.bar_read(slot, off, &mut b[chunk]),
            Buf::Write(d) => self.model.bar_write(slot, off, &d[chunk]),
        }
    }

    /// Config-space read for the device layer and tests (`pos` in range).
    ///
    /// # Errors
    /// [`Error::ConfigRange`].
    pub fn config_read(&self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        self.config_rw(pos, &mut Buf::Read(buf))
    }

    /// Config-space write.
    ///
    /// # Errors
    /// [`Error::ConfigRange`].
    pub fn config_write(&self, pos: u64, data: &[u8]) -> Result<usize> {
        self.config_rw(pos, &mut Buf::Write(data))
    }
}

enum Buf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Buf<'_> {
    fn len(&self) -> usize {
        match self {
            Buf::Read(b) => b.len(),
            Buf::Write(d) => d.len(),
        }
    }
}
