//! The trait a device model implements, and what the device layer hands it.
//!
//! The device layer owns everything vfio-pci owns: config space, the region and IRQ UAPI,
//! eventfds, the MSI-X table's host-side programming, reset sequencing. A model supplies the
//! [`crate::pci::FunctionSpec`] (identity, BARs, capabilities) and implements
//! [`DeviceModel`]: its MMIO BARs, and its reset. At creation it receives a
//! [`DeviceContext`]: the [`Dma`] handle (its only way to guest memory), the [`Interrupts`]
//! handle, and the mappings of its memory-backed BARs.
//!
//! # Threading contract
//!
//! - `bar_read`/`bar_write` run on the thread of the program's `pread`/`pwrite` (any thread,
//!   possibly several at once); `reset` on the thread of the ioctl or config write that asked
//!   for it. No device-layer lock is held while a model method runs, so a model may call its
//!   [`Interrupts`] and [`Dma`] from inside them.
//! - The migration methods (`quiesce`, `resume`, `save_state`, `state_size`,
//!   `restore_state`) run with the device's migration lock held: they must not call the
//!   [`crate::Device`]'s migration API.
//! - Threads a model starts must be started with [`crate::thread::spawn`], which blocks every
//!   signal, and must never write to stdout (or stderr outside a fatal error): the device runs
//!   inside someone else's program.
//! - `reset` must return with the model's DMA stopped: no DMA issued by the model may start
//!   after `reset` returns until the program starts it again.
//!
//! # Example
//!
//! A device with one 4 KiB MMIO BAR holding a scratch register at 0 and a doorbell at 4 that
//! raises interrupt 0 (MSI-X, MSI or INTx, whichever the program enabled):
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vfio_device::pci::*;
//! use vfio_device::{Device, DeviceContext, DeviceModel, DeviceSpec, Dma, Location};
//!
//! #[derive(Debug)]
//! struct Doorbell {
//!     ctx: DeviceContext,
//!     scratch: Mutex<u32>,
//! }
//!
//! impl DeviceModel for Doorbell {
//!     fn bar_read(&self, _bar: usize, offset: u64, data: &mut [u8]) {
//!         let v = if offset == 0 { *self.scratch.lock().unwrap() } else { 0 };
//!         let b = v.to_le_bytes();
//!         let n = data.len().min(4);
//!         data[..n].copy_from_slice(&b[..n]);
//!     }
//!     fn bar_write(&self, _bar: usize, offset: u64, data: &[u8]) {
//!         let mut w = [0u8; 4];
//!         let n = data.len().min(4);
//!         w[..n].copy_from_slice(&data[..n]);
//!         match offset {
//!             0 => *self.scratch.lock().unwrap() = u32::from_le_bytes(w),
//!             4 => {
//!                 self.ctx.irqs.signal(0);
//!             }
//!             _ => {}
//!         }
//!     }
//!     fn reset(&self) {
//!         *self.scratch.lock().unwrap() = 0;
//!     }
//! }
//!
//! let mut bars = [None; NUM_BARS];
//! bars[0] = Some(BarSpec { kind: BarKind::Mem32(Prefetch::No), size: 4096, backing: BarBacking::Mmio });
//! let function = FunctionSpec {
//!     identity: Identity { vendor_id: 0x1234, device_id: 0x0001, revision: 0, class_code: 0xff0000,
//!                          subsystem_vendor_id: 0x1234, subsystem_id: 0 },
//!     bars,
//!     rom: None,
//!     pin: InterruptPin::IntA,
//!     caps: CapabilityList::new().msi(MsiCap { vectors: 1, address: MsiAddress::Bits64,
//!                                              masking: PerVectorMask::Absent }),
//! };
//! let spec = DeviceSpec::new(function, Location::new(7, 0, 4, 0));
//! let dev = Device::new(spec, Dma::none(), |ctx| {
//!     Arc::new(Doorbell { ctx, scratch: Mutex::new(0) })
//! }).unwrap();
//! // The program's view: a pwrite then a pread of BAR0 at region offset 0.
//! dev.write(0, &0xabcdu32.to_le_bytes()).unwrap();
//! let mut b = [0u8; 4];
//! assert_eq!(dev.read(0, &mut b).unwrap(), 4);
//! assert_eq!(u32::from_le_bytes(b), 0xabcd);
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use crate::dma::Dma;
use crate::irq::Interrupts;
use crate::memfd::SharedMemory;
use crate::pci::NUM_BARS;

/// What a model is given at creation.
#[derive(Debug, Clone)]
pub struct DeviceContext {
    /// The model's only way to guest memory.
    pub dma: Arc<Dma>,
    /// Raising interrupts.
    pub irqs: Arc<Interrupts>,
    /// The device's own mapping of each memory-backed BAR (shared with whoever maps the
    /// device file there).
    pub bar_memory: [Option<Arc<SharedMemory>>; NUM_BARS],
}

/// A device model: the behaviour behind a function's MMIO BARs and its reset.
pub trait DeviceModel: Send + Sync + Debug {
    /// A read of `data.len()` bytes (1, 2, 4 or 8, naturally aligned) at `offset` of MMIO
    /// BAR `bar`. Never called for memory-backed BARs or for the MSI-X table.
    fn bar_read(&self, bar: usize, offset: u64, data: &mut [u8]);

    /// A write of `data` (1, 2, 4 or 8 bytes, naturally aligned) at `offset` of MMIO BAR
    /// `bar`.
    fn bar_write(&self, bar: usize, offset: u64, data: &[u8]);

    /// Function-level reset: registers to power-on, the interrupt line low, DMA stopped
    /// before returning.
    fn reset(&self);

    /// The device is going away (last close). Stop every thread. The default does nothing.
    fn release(&self) {}

    // ----- migration (only called on devices whose spec offers migration) -----

    /// Entering a migration state without DMA (STOP, RUNNING_P2P, STOP_COPY, RESUMING,
    /// PRE_COPY_P2P): stop issuing DMA and raising interrupts, and return with no DMA in
    /// flight. Work the program starts meanwhile (a doorbell, a DMA command) is kept and done
    /// on [`DeviceModel::resume`]. The default does nothing (the device layer's DMA gate still
    /// refuses every access).
    fn quiesce(&self) {}

    /// Back in RUNNING or PRE_COPY: DMA and interrupts may run again. The default does
    /// nothing.
    fn resume(&self) {}

    /// The model's state, as bytes the same model restores with
    /// [`DeviceModel::restore_state`]. Called in STOP_COPY (quiesced) for the final frame and
    /// on entering PRE_COPY (running) for the pre-copy frame. The default keeps no state.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// An estimate of `save_state().len()` (`MIG_DATA_SIZE`). The default saves and measures.
    fn state_size(&self) -> u64 {
        self.save_state().len() as u64
    }

    /// Restores a state saved by [`DeviceModel::save_state`], while quiesced in RESUMING.
    /// All or nothing: on `Err` (a message naming the problem) the model is unchanged. Must
    /// not panic on any input. The default accepts only an empty state.
    ///
    /// # Errors
    /// What is wrong with `state`.
    fn restore_state(&self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes of model state, but this model keeps none",
                state.len()
            ))
        }
    }
}
