//! The built-in DMA test device, in the spirit of QEMU's `edu` (`hw/misc/edu.c`), with DMA that
//! goes through the container and an autonomous writer for dirty-tracking tests.
//!
//! Identity 1234:11e8 rev 0x10, class 0x00ff00, subsystem 1af4:1100; 256-byte config space;
//! INTx pin A; MSI at 0x40 (64-bit, 4 vectors, no per-vector mask), MSI-X at 0x50 (8 vectors).
//!
//! | BAR | Kind | Size | Contents |
//! |---|---|---|---|
//! | 0 | 32-bit MMIO | 1 MiB | registers (below) |
//! | 2/3 | 64-bit prefetchable memory, mmap-able | 16 MiB | device memory (the DMA buffer) |
//! | 4 | 32-bit memory, mmap-able | 16 KiB | MSI-X table @0, PBA @0x2000 |
//!
//! BAR0 registers (little-endian; 4-byte accesses below 0x80, 4 or 8 from there; other sizes
//! read all-ones and drop writes):
//!
//! | Offset | Register |
//! |---|---|
//! | 0x00 | ident, RO `0x010000ed` |
//! | 0x04 | liveness: reads `!` the last value written |
//! | 0x20 | status, RO: bit 0 busy, bit 1 done, bit 2 DMA error (IOMMU/container refused, bounds, or bus master off) |
//! | 0x24 | IRQ status, RO |
//! | 0x60 | IRQ raise: ORed into IRQ status, raises interrupt 0 |
//! | 0x64 | IRQ acknowledge: clears these bits; the INTx line drops when IRQ status is 0 |
//! | 0x80 | DMA source (u64) |
//! | 0x88 | DMA destination (u64) |
//! | 0x90 | DMA count in bytes (u64) |
//! | 0x98 | DMA command: bit 0 start, bit 1 direction (0 RAM → device, 1 device → RAM), bit 2 raise IRQ 0x100 on completion, bit 3 error (RO) |
//! | 0xa0 | writer IOVA window base (u64, page aligned) |
//! | 0xa8 | writer window size in bytes (u64, whole pages) |
//! | 0xb0 | writer rate in pages per second (u32; 0 = as fast as possible) |
//! | 0xb4 | writer control: bit 0 run (write 1 to start, 0 to stop and join) |
//! | 0xb8 | writer seed (u64) |
//! | 0xc0 | pages the writer has written (u64, RO) |
//! | 0xc8 | writer DMA faults (u64, RO) |
//!
//! A transfer runs to completion inside the write of 0x98 (start): on the device side the
//! address is an offset in BAR2; on the RAM side an IOVA. The bytes move in one pass, straight
//! between guest memory and the BAR2 mapping. The RAM range is translated whole before any byte
//! moves ([`crate::Dma::read`], [`crate::Dma::write`]), so a transfer the IOMMU refuses sets the
//! error bits and writes nothing, on either side. Unlike edu, a range outside device memory is
//! refused, not copied out of bounds.
//!
//! The autonomous writer (0xa0–0xc8) writes whole guest pages at pseudo-random page indexes of
//! its window (xorshift64 from the seed: same seed, same sequence), each page filled with a
//! pattern naming its sequence number, at the configured rate. It runs on a thread with all
//! signals blocked, and stops on control 0, reset and release. Pages go out in batches of up
//! to 64 ([`crate::Dma::write_batch`]: one device transaction and one vectored store in an
//! IOMMU domain; at a set rate a batch holds only the writes already due), and the page count
//! moves once per batch.

mod state;
mod writer;

use std::sync::{Arc, Mutex, MutexGuard};

use io_pgtable::Iova;

use crate::device::{Device, DeviceSpec, Location};
use crate::dma::Dma;
use crate::error::Result;
use crate::irq::Level;
use crate::migration::MigrationSpec;
use crate::model::{DeviceContext, DeviceModel};
use crate::pci::*;
use writer::{Position, Writer, WriterConfig};

/// Register offsets of BAR0.
pub mod reg {
    /// Ident.
    pub const IDENT: u64 = 0x00;
    /// Liveness.
    pub const LIVENESS: u64 = 0x04;
    /// Status.
    pub const STATUS: u64 = 0x20;
    /// IRQ status.
    pub const IRQ_STATUS: u64 = 0x24;
    /// IRQ raise.
    pub const IRQ_RAISE: u64 = 0x60;
    /// IRQ acknowledge.
    pub const IRQ_ACK: u64 = 0x64;
    /// DMA source.
    pub const DMA_SRC: u64 = 0x80;
    /// DMA destination.
    pub const DMA_DST: u64 = 0x88;
    /// DMA count.
    pub const DMA_COUNT: u64 = 0x90;
    /// DMA command.
    pub const DMA_CMD: u64 = 0x98;
    /// Writer window base.
    pub const WRITER_BASE: u64 = 0xa0;
    /// Writer window size.
    pub const WRITER_SIZE: u64 = 0xa8;
    /// Writer rate.
    pub const WRITER_RATE: u64 = 0xb0;
    /// Writer control.
    pub const WRITER_CTRL: u64 = 0xb4;
    /// Writer seed.
    pub const WRITER_SEED: u64 = 0xb8;
    /// Writer pages written.
    pub const WRITER_PAGES: u64 = 0xc0;
    /// Writer faults.
    pub const WRITER_FAULTS: u64 = 0xc8;

    /// Ident value.
    pub const IDENT_VALUE: u32 = 0x0100_00ed;
    /// Status: busy.
    pub const STATUS_BUSY: u32 = 1 << 0;
    /// Status: the last transfer completed.
    pub const STATUS_DONE: u32 = 1 << 1;
    /// Status: the last transfer was refused.
    pub const STATUS_DMA_ERROR: u32 = 1 << 2;
    /// Command: start.
    pub const CMD_START: u64 = 1 << 0;
    /// Command: device → RAM.
    pub const CMD_TO_RAM: u64 = 1 << 1;
    /// Command: raise IRQ 0x100 on completion.
    pub const CMD_IRQ: u64 = 1 << 2;
    /// Command: error (RO).
    pub const CMD_ERROR: u64 = 1 << 3;
    /// The IRQ status bit of a DMA completion.
    pub const IRQ_DMA: u32 = 0x100;
}

/// BAR0 size.
pub const BAR0_SIZE: u64 = 1 << 20;
/// BAR2 (device memory) size.
pub const MEM_SIZE: u64 = 16 << 20;
/// BAR4 (MSI-X) size.
pub const MSIX_BAR_SIZE: u64 = 16 << 10;

/// The function description of the test device.
#[must_use]
pub fn function() -> FunctionSpec {
    let mut bars = [None; NUM_BARS];
    bars[0] = Some(BarSpec {
        kind: BarKind::Mem32(Prefetch::No),
        size: BAR0_SIZE,
        backing: BarBacking::Mmio,
    });
    bars[2] = Some(BarSpec {
        kind: BarKind::Mem64(Prefetch::Yes),
        size: MEM_SIZE,
        backing: BarBacking::Memory,
    });
    bars[4] = Some(BarSpec {
        kind: BarKind::Mem32(Prefetch::No),
        size: MSIX_BAR_SIZE,
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

/// Creates the test device at `location` with DMA path `dma`: v2 migration (STOP_COPY, P2P,
/// PRE_COPY) and DMA logging, no v1 region (9 regions).
///
/// # Errors
/// As [`Device::new`].
pub fn create(location: Location, dma: Dma) -> Result<Arc<Device>> {
    create_with(location, dma, MigrationSpec::full(false))
}

/// Creates the test device with the migration offer `migration`
/// (`MigrationSpec::full(true)` adds the v1 region QEMU 7.2 needs, as region 9).
///
/// # Errors
/// As [`Device::new`].
pub fn create_with(location: Location, dma: Dma, migration: MigrationSpec) -> Result<Arc<Device>> {
    let mut spec = DeviceSpec::new(function(), location);
    spec.migration = migration;
    Device::new(spec, dma, |ctx| Arc::new(TestDevice::new(ctx)))
}

#[derive(Debug, Default)]
struct Regs {
    liveness: u32,
    status: u32,
    irq_status: u32,
    src: u64,
    dst: u64,
    count: u64,
    cmd: u64,
    writer: WriterConfig,
    /// Pages and faults of writer runs that have stopped.
    writer_done: (u64, u64),
    /// The program's writer run bit (the thread itself pauses while quiesced).
    writer_on: bool,
    /// Where a (re)started writer continues.
    writer_pos: Position,
    /// In a migration state without DMA.
    quiesced: bool,
    /// A DMA command started while quiesced, run on resume.
    dma_pending: bool,
    /// An interrupt raised while quiesced, signalled on resume.
    irq_pending: bool,
}

/// The test device model.
#[derive(Debug)]
pub struct TestDevice {
    ctx: DeviceContext,
    regs: Mutex<Regs>,
    writer: Mutex<Option<Writer>>,
    /// Held by every path that DMAs or interrupts from a program's access, and by quiesce
    /// and resume: after `quiesce` takes it, nothing of the kind is in flight.
    dma_lock: Mutex<()>,
}

impl TestDevice {
    fn new(ctx: DeviceContext) -> Self {
        TestDevice {
            ctx,
            regs: Mutex::new(Regs::default()),
            writer: Mutex::new(None),
            dma_lock: Mutex::new(()),
        }
    }

    fn dma_lock(&self) -> MutexGuard<'_, ()> {
        self.dma_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the writer thread at its position if the program turned it on and DMA may
    /// run; a window the writer refuses turns the run bit off.
    fn start_writer(&self) {
        let (cfg, pos) = {
            let r = self.regs();
            if !r.writer_on || r.quiesced {
                return;
            }
            (r.writer, r.writer_pos)
        };
        let w = Writer::start(cfg, self.ctx.dma.clone(), pos).ok();
        if w.is_none() {
            self.regs().writer_on = false;
        }
        *self.writer() = w;
    }

    fn regs(&self) -> MutexGuard<'_, Regs> {
        self.regs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn writer(&self) -> MutexGuard<'_, Option<Writer>> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_reg(&self, off: u64) -> u64 {
        let r = self.regs();
        let w = self.writer();
        let (run_pages, run_faults) = w.as_ref().map_or((0, 0), Writer::counts);
        let (pages, faults) = (r.writer_done.0 + run_pages, r.writer_done.1 + run_faults);
        match off {
            reg::IDENT => u64::from(reg::IDENT_VALUE),
            reg::LIVENESS => u64::from(!r.liveness),
            reg::STATUS => u64::from(r.status),
            reg::IRQ_STATUS => u64::from(r.irq_status),
            reg::DMA_SRC => r.src,
            reg::DMA_DST => r.dst,
            reg::DMA_COUNT => r.count,
            reg::DMA_CMD => r.cmd,
            reg::WRITER_BASE => r.writer.base,
            reg::WRITER_SIZE => r.writer.size,
            reg::WRITER_RATE => u64::from(r.writer.rate),
            reg::WRITER_CTRL => u64::from(r.writer_on),
            reg::WRITER_SEED => r.writer.seed,
            reg::WRITER_PAGES => pages,
            reg::WRITER_FAULTS => faults,
            _ => 0,
        }
    }

    fn write_reg(&self, off: u64, v: u64) {
        let low = u32::try_from(v & 0xffff_ffff).unwrap_or(0);
        match off {
            reg::LIVENESS => self.regs().liveness = low,
            reg::IRQ_RAISE => {
                let _g = self.dma_lock();
                self.raise(low);
            }
            reg::IRQ_ACK => {
                let mut r = self.regs();
                r.irq_status &= !low;
                if r.irq_status == 0 {
                    drop(r);
                    self.ctx.irqs.set_intx(Level::Low);
                }
            }
            reg::DMA_SRC => self.regs().src = v,
            reg::DMA_DST => self.regs().dst = v,
            reg::DMA_COUNT => self.regs().count = v,
            reg::DMA_CMD => {
                let _g = self.dma_lock();
                let run = {
                    let mut r = self.regs();
                    r.cmd = v & !reg::CMD_ERROR;
                    let start = v & reg::CMD_START != 0;
                    if start && r.quiesced {
                        r.dma_pending = true;
                        r.status = reg::STATUS_BUSY;
                    }
                    start && !r.quiesced
                };
                if run {
                    self.run_dma();
                }
            }
            reg::WRITER_BASE => self.regs().writer.base = v,
            reg::WRITER_SIZE => self.regs().writer.size = v,
            reg::WRITER_RATE => self.regs().writer.rate = low,
            reg::WRITER_SEED => self.regs().writer.seed = v,
            reg::WRITER_CTRL => {
                self.stop_writer();
                {
                    let mut r = self.regs();
                    r.writer_on = low & 1 != 0;
                    r.writer_pos = Position::start(r.writer.seed);
                }
                self.start_writer();
            }
            _ => {}
        }
    }

    /// Stops and joins the writer, keeping its counts.
    fn stop_writer(&self) {
        let old = self.writer().take();
        if let Some(w) = old {
            let ((pages, faults), pos) = w.stop();
            let mut r = self.regs();
            r.writer_done.0 += pages;
            r.writer_done.1 += faults;
            r.writer_pos = pos;
        }
    }

    /// ORs `bits` into IRQ status and raises interrupt 0, or defers the signal to resume
    /// while quiesced.
    fn raise(&self, bits: u32) {
        let mut r = self.regs();
        r.irq_status |= bits;
        if bits == 0 {
            return;
        }
        if r.quiesced {
            r.irq_pending = true;
        } else {
            drop(r);
            self.ctx.irqs.signal(0);
        }
    }

    /// One transfer, start to finish (see the module docs).
    fn run_dma(&self) {
        let (src, dst, count, cmd) = {
            let mut r = self.regs();
            r.status = reg::STATUS_BUSY;
            (r.src, r.dst, r.count, r.cmd)
        };
        let ok = self.transfer(src, dst, count, cmd & reg::CMD_TO_RAM != 0);
        {
            let mut r = self.regs();
            r.cmd &= !reg::CMD_START;
            if ok {
                r.status = reg::STATUS_DONE;
            } else {
                r.status = reg::STATUS_DONE | reg::STATUS_DMA_ERROR;
                r.cmd |= reg::CMD_ERROR;
            }
        }
        if cmd & reg::CMD_IRQ != 0 {
            self.raise(reg::IRQ_DMA);
        }
    }

    fn transfer(&self, src: u64, dst: u64, count: u64, to_ram: bool) -> bool {
        let Some(mem) = self.ctx.bar_memory[2].as_ref() else {
            return false;
        };
        let dev_off = if to_ram { src } else { dst };
        if dev_off.checked_add(count).is_none_or(|e| e > MEM_SIZE) {
            return false;
        }
        let Ok(n) = usize::try_from(count) else {
            return false;
        };
        // One pass over the bytes: guest memory is copied straight to or from the BAR2
        // mapping (no bounce buffer), the copy through the IOMMU domain being the only one.
        mem.with_bytes_mut(dev_off, n, |bytes| {
            if to_ram {
                self.ctx.dma.write(Iova(dst), bytes).is_ok()
            } else {
                self.ctx.dma.read(Iova(src), bytes).is_ok()
            }
        })
        .unwrap_or(false)
    }
}

impl DeviceModel for TestDevice {
    fn bar_read(&self, bar: usize, offset: u64, data: &mut [u8]) {
        let ok_size = match data.len() {
            4 => true,
            8 => offset >= reg::DMA_SRC,
            _ => false,
        };
        if bar != 0 || !ok_size {
            data.fill(0xff);
            return;
        }
        let v = if offset < reg::DMA_SRC || (reg::WRITER_RATE..reg::WRITER_SEED).contains(&offset) {
            self.read_reg(offset)
        } else {
            self.read_reg(offset & !7) >> ((offset & 7) * 8)
        };
        let b = v.to_le_bytes();
        let n = data.len();
        data.copy_from_slice(&b[..n]);
    }

    fn bar_write(&self, bar: usize, offset: u64, data: &[u8]) {
        let v = match *data {
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] if offset >= reg::DMA_SRC => {
                u64::from_le_bytes([a, b, c, d, e, f, g, h])
            }
            _ => return,
        };
        if bar != 0 {
            return;
        }
        if offset & 7 == 4 && data.len() == 4 && offset >= reg::DMA_SRC {
            // High half of a 64-bit register (except the 32-bit ones at 0xb0/0xb4).
            let base = offset & !7;
            if base != reg::WRITER_RATE {
                let old = self.read_reg(base);
                self.write_reg(base, (old & 0xffff_ffff) | (v << 32));
                return;
            }
        }
        if data.len() == 4
            && offset >= reg::DMA_SRC
            && offset & 7 == 0
            && offset != reg::WRITER_RATE
        {
            let old = self.read_reg(offset);
            self.write_reg(offset, (old & !0xffff_ffff) | v);
            return;
        }
        self.write_reg(offset, v);
    }

    fn reset(&self) {
        let w = self.writer().take();
        drop(w);
        *self.regs() = Regs::default();
        self.ctx.irqs.set_intx(Level::Low);
    }

    fn release(&self) {
        let w = self.writer().take();
        drop(w);
    }

    fn quiesce(&self) {
        self.regs().quiesced = true;
        let _g = self.dma_lock();
        self.stop_writer();
    }

    fn resume(&self) {
        let _g = self.dma_lock();
        let (dma, irq) = {
            let mut r = self.regs();
            r.quiesced = false;
            (
                std::mem::take(&mut r.dma_pending),
                std::mem::take(&mut r.irq_pending),
            )
        };
        self.start_writer();
        if dma {
            self.run_dma();
        }
        if irq {
            self.ctx.irqs.signal(0);
        }
    }

    fn save_state(&self) -> Vec<u8> {
        let snap = state::Snapshot::of(&self.regs());
        snap.encode(self.ctx.bar_memory[2].as_deref())
    }

    fn restore_state(&self, bytes: &[u8]) -> std::result::Result<(), String> {
        let (snap, pages) = state::Snapshot::decode(bytes)?;
        let Some(mem) = self.ctx.bar_memory[2].as_deref() else {
            return Err("no device memory".into());
        };
        let zero = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < MEM_SIZE {
            mem.write(off, &zero);
            off += zero.len() as u64;
        }
        for (index, page) in pages {
            mem.write(u64::from(index) * crate::PAGE_SIZE, page);
        }
        let mut r = self.regs();
        let quiesced = r.quiesced;
        snap.apply(&mut r);
        r.quiesced = quiesced;
        Ok(())
    }
}
