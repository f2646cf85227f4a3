//! Device DMA, routed as the kernel routes it: the only way a device model reaches guest
//! memory.
//!
//! - A device in an IOMMU-backed group DMAs through its group's domain with
//!   [`type1::DmaEngine`]: IOTLB, then a page walk; permission and translation faults come
//!   back as [`DmaError::Fault`]; a write marks the leaf's hardware dirty bit, so precise dirty
//!   tracking reports exactly the written pages.
//! - A device in an emulated (mdev-style) group is registered on the container with an unmap
//!   handler (`vfio_register_emulated_iommu_dev`) and pins the pages it writes
//!   (`vfio_pin_pages`), copies with `vfio_dma_rw`, and unpins; the handler unpins whatever an
//!   unmap takes away (`dma_unmap` of `vfio_device_ops`).
//!
//! Every access first checks the command register's bus-master bit (a function with MASTER
//! clear cannot DMA). A write is validated over its whole range before any byte is stored
//! (translation with write access, or pinning for write), so a refused transfer writes nothing;
//! in an IOMMU domain the pages before the faulting one may be left marked dirty (a false
//! positive, never a lost write). An unmap racing with a transfer can still cut it short, as
//! on hardware; after UNMAP returns, no write lands (strict invalidation).

pub mod logging;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use io_pgtable::{Access, Fault, Iova};
use type1::{Container, DeviceId, DmaEngine, DmaUnmapHandler, GroupId, Perm};

use logging::DirtyLog;

/// Why a DMA failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// The command register's bus-master bit is clear.
    #[error("bus mastering is disabled")]
    BusMasterOff,
    /// The device has no DMA path ([`Dma::none`]).
    #[error("the device has no DMA path")]
    NoPath,
    /// The IOMMU refused the access.
    #[error("IOMMU fault")]
    Fault(#[source] Fault),
    /// The container refused the access (emulated group: unmapped, read-only, not pinnable).
    #[error("the container refused the access (errno {errno})")]
    Refused {
        /// The container's errno.
        errno: i32,
        /// The first address of the refused range.
        iova: Iova,
    },
    /// Nothing backs a translated physical address, or the group detached.
    #[error("the access reached no memory")]
    NoMemory,
    /// `iova + len` wraps.
    #[error("DMA range wraps the address space")]
    Overflow,
    /// The device is in a migration state without DMA (STOP, RUNNING_P2P, STOP_COPY,
    /// RESUMING, PRE_COPY_P2P).
    #[error("device DMA is stopped by the migration state")]
    Quiesced,
}

/// Pins the emulated path holds while a write is in flight, released by the unmap handler if
/// an unmap takes their mapping away first.
///
/// The kernel's rule for a device that pins (`vfio_dma_do_unmap`'s comment on the notifier):
/// it *must* unpin in response and not pin the range again, or the unmap retries and finally
/// fails. So the handler also revokes the range: the device refuses to pin in it (a DMA
/// fault, as after the unmap) until the unmap that notified it has returned
/// ([`Container::unmaps_completed`] has moved on), after which the container itself answers.
/// Pinning and recording a pin happen under one lock, which the handler takes too, so a pin
/// in flight is never missed.
#[derive(Debug, Default)]
struct PinTracker {
    container: OnceLock<Weak<Container>>,
    id: OnceLock<DeviceId>,
    state: Mutex<Pins>,
}

/// What the tracker knows, under its lock.
#[derive(Debug, Default)]
struct Pins {
    /// `(iova, npage)` batches currently pinned.
    held: Vec<(u64, u64)>,
    /// `[start, end)` ranges an unmap in progress took away, with the unmap count then.
    revoked: Vec<(u64, u64, u64)>,
}

impl PinTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pins> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True if `[start, end)` touches a range whose unmap has not returned yet; forgets the
    /// revocations whose unmap is over.
    fn revoked(p: &mut Pins, c: &Container, start: u64, end: u64) -> bool {
        let now = c.unmaps_completed();
        p.revoked.retain(|&(_, _, at)| at >= now);
        p.revoked.iter().any(|&(s, e, _)| s < end && start < e)
    }

    fn take_locked(p: &mut Pins, iova: u64, length: u64) -> Vec<(u64, u64)> {
        let held = &mut p.held;
        let end = iova.saturating_add(length);
        let (hit, keep): (Vec<_>, Vec<_>) = held
            .iter()
            .partition(|&&(s, n)| s < end && iova < s.saturating_add(n * crate::PAGE_SIZE));
        *held = keep;
        hit
    }

    fn unpin(&self, batches: &[(u64, u64)]) {
        let (Some(c), Some(id)) = (self.container.get().and_then(Weak::upgrade), self.id.get())
        else {
            return;
        };
        for &(s, n) in batches {
            let _ = c.unpin_pages(*id, Iova(s), n);
        }
    }
}

impl DmaUnmapHandler for PinTracker {
    fn dma_unmap(&self, iova: Iova, length: u64) {
        let iova = iova.raw();
        // Under the tracker's lock throughout: a write in flight has either not pinned yet
        // (and will see the revocation) or holds pins recorded here (unpinned now).
        let mut p = self.lock();
        if let Some(c) = self.container.get().and_then(Weak::upgrade) {
            let at = c.unmaps_completed();
            p.revoked.push((iova, iova.saturating_add(length), at));
        }
        let hit = Self::take_locked(&mut p, iova, length);
        self.unpin(&hit);
    }
}

#[derive(Debug)]
enum Path {
    None,
    Iommu(DmaEngine),
    Emulated {
        container: Arc<Container>,
        id: DeviceId,
        pins: Arc<PinTracker>,
    },
}

/// A device's DMA handle. Cheap to share through `Arc`; usable from any thread.
#[derive(Debug)]
pub struct Dma {
    path: Path,
    bus_master: AtomicBool,
    /// Closed in the migration states without DMA.
    paused: AtomicBool,
    /// Device DMA logging, fed by every write that lands.
    log: Mutex<Option<DirtyLog>>,
}

impl Drop for Dma {
    fn drop(&mut self) {
        if let Path::Emulated { container, id, .. } = &self.path {
            let _ = container.unregister_device(*id);
        }
    }
}

impl Dma {
    /// A device that cannot DMA (every access fails with [`DmaError::NoPath`]).
    #[must_use]
    pub fn none() -> Dma {
        Dma {
            path: Path::None,
            bus_master: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            log: Mutex::new(None),
        }
    }

    /// The DMA path of a device in `group` of `container`: the group's IOMMU domain if it is
    /// IOMMU-backed, else an emulated-device registration with an unmap handler.
    ///
    /// # Errors
    /// The container's error if the group is not attached (`EINVAL`) or no IOMMU is set.
    pub fn attach(container: &Arc<Container>, group: GroupId) -> type1::Result<Dma> {
        if let Ok(engine) = container.dma_engine(group) {
            return Ok(Dma {
                path: Path::Iommu(engine),
                bus_master: AtomicBool::new(false),
                paused: AtomicBool::new(false),
                log: Mutex::new(None),
            });
        }
        let pins = Arc::new(PinTracker::default());
        let handler: Arc<dyn DmaUnmapHandler> = pins.clone();
        let id = container.register_device(group, Some(handler))?;
        let _ = pins.container.set(Arc::downgrade(container));
        let _ = pins.id.set(id);
        Ok(Dma {
            path: Path::Emulated {
                container: container.clone(),
                id,
                pins,
            },
            bus_master: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            log: Mutex::new(None),
        })
    }

    /// True for a device in an IOMMU-backed group.
    #[must_use]
    pub fn is_iommu(&self) -> bool {
        matches!(self.path, Path::Iommu(_))
    }

    pub(crate) fn set_bus_master(&self, on: bool) {
        self.bus_master.store(on, Ordering::Release);
    }

    /// Closes (or opens) the migration gate: while closed every access is
    /// [`DmaError::Quiesced`].
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// True while the migration gate is closed.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(crate) fn log(&self) -> std::sync::MutexGuard<'_, Option<DirtyLog>> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, iova: Iova, len: usize) -> Result<(), DmaError> {
        if !self.bus_master.load(Ordering::Acquire) {
            return Err(DmaError::BusMasterOff);
        }
        if self.paused.load(Ordering::Acquire) {
            return Err(DmaError::Quiesced);
        }
        if len > 0 && iova.checked_add(len as u64 - 1).is_none() {
            return Err(DmaError::Overflow);
        }
        Ok(())
    }

    /// Reads guest memory at `iova` into `buf`. In an IOMMU domain the whole range is
    /// translated first, so a range refused up front leaves `buf` untouched.
    ///
    /// # Errors
    /// [`DmaError`]; `buf` may be partly filled when an unmap cuts the read short.
    pub fn read(&self, iova: Iova, buf: &mut [u8]) -> Result<(), DmaError> {
        self.check(iova, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        match &self.path {
            Path::None => Err(DmaError::NoPath),
            Path::Iommu(e) => {
                validate(e, iova, buf.len(), Access::Read)?;
                e.read(iova, buf).map_err(engine_error)
            }
            Path::Emulated { container, id, .. } => container
                .dma_rw(*id, iova, buf, Access::Read)
                .map_err(|e| DmaError::Refused {
                    errno: e.errno(),
                    iova,
                }),
        }
    }

    /// Writes `data` to guest memory at `iova`, all or nothing (see the module docs). A write
    /// that lands is recorded in the device's DMA log when logging is on.
    ///
    /// # Errors
    /// [`DmaError`]; nothing is written when the range is refused up front.
    pub fn write(&self, iova: Iova, data: &[u8]) -> Result<(), DmaError> {
        let r = self.write_unlogged(iova, data);
        if r.is_ok() {
            if let Some(l) = self.log().as_mut() {
                l.mark(iova.raw(), data.len() as u64);
            }
        }
        r
    }

    /// Writes each `(iova, data)` of `writes` as [`Dma::write`] would, one result per write in
    /// order; later writes to the same bytes win. In an IOMMU domain the batch is one device
    /// transaction with one vectored store ([`DmaEngine::write_batch`]): every write is
    /// translated for write access before any byte lands, so a refused write stores nothing
    /// and the others go on; an unmap waits for the batch, so nothing lands after UNMAP
    /// returns. Other paths write one by one.
    pub fn write_batch(&self, writes: &[(Iova, &[u8])]) -> Vec<Result<(), DmaError>> {
        let out: Vec<Result<(), DmaError>> = match &self.path {
            Path::Iommu(e) => {
                let mut out = vec![Ok(()); writes.len()];
                let mut go: Vec<(Iova, &[u8])> = Vec::with_capacity(writes.len());
                let mut idx = Vec::with_capacity(writes.len());
                for (k, &(iova, data)) in writes.iter().enumerate() {
                    match self.check(iova, data.len()) {
                        Err(err) => out[k] = Err(err),
                        Ok(()) if data.is_empty() => {}
                        Ok(()) => {
                            go.push((iova, data));
                            idx.push(k);
                        }
                    }
                }
                for (k, r) in idx.into_iter().zip(e.write_batch(&go)) {
                    out[k] = r.map_err(engine_error);
                }
                out
            }
            _ => writes
                .iter()
                .map(|&(iova, data)| self.write_unlogged(iova, data))
                .collect(),
        };
        if let Some(l) = self.log().as_mut() {
            for (&(iova, data), r) in writes.iter().zip(&out) {
                if r.is_ok() {
                    l.mark(iova.raw(), data.len() as u64);
                }
            }
        }
        out
    }

    fn write_unlogged(&self, iova: Iova, data: &[u8]) -> Result<(), DmaError> {
        self.check(iova, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        match &self.path {
            Path::None => Err(DmaError::NoPath),
            Path::Iommu(e) => {
                validate(e, iova, data.len(), Access::Write)?;
                e.write(iova, data).map_err(engine_error)
            }
            Path::Emulated {
                container,
                id,
                pins,
            } => Self::emulated_write(container, *id, pins, iova, data),
        }
    }

    fn emulated_write(
        c: &Container,
        id: DeviceId,
        pins: &PinTracker,
        iova: Iova,
        data: &[u8],
    ) -> Result<(), DmaError> {
        let refused = |e: type1::Error, at: u64| DmaError::Refused {
            errno: e.errno(),
            iova: Iova(at),
        };
        let first = iova.align_down(crate::PAGE_SIZE).raw();
        // From the last byte: a write ending at the top of the IOVA space has no end (`check`
        // ruled out a range that wraps; `data` is not empty).
        let last = iova.raw() + (data.len() as u64 - 1);
        let end = last.saturating_add(1);
        let npages = (last - first) / crate::PAGE_SIZE + 1;
        let mut batches = Vec::new();
        let mut done = 0;
        let mut result = Ok(());
        {
            // Pins are taken and recorded under the tracker's lock: the unmap handler, which
            // takes it too, sees every pin (the container's lock is not held here).
            let mut p = pins.lock();
            if PinTracker::revoked(&mut p, c, first, end) {
                return Err(DmaError::Refused {
                    errno: libc::EINVAL,
                    iova,
                });
            }
            while done < npages {
                let n = (npages - done).min(type1::PIN_PAGES_MAX);
                let at = first + done * crate::PAGE_SIZE;
                if let Err(e) = c.pin_pages(id, Iova(at), n, Perm::WRITE) {
                    result = Err(refused(e, at));
                    break;
                }
                batches.push((at, n));
                done += n;
            }
            p.held.extend(batches.iter().copied());
        }
        if result.is_ok() {
            let mut buf = data.to_vec();
            result = c
                .dma_rw(id, iova, &mut buf, Access::Write)
                .map_err(|e| refused(e, iova.raw()));
        }
        // Taken back and unpinned under the lock, so an unmap's recheck never finds a pin
        // that is on its way out.
        let mut p = pins.lock();
        let mut still = Vec::new();
        for b in batches {
            still.extend(PinTracker::take_locked(&mut p, b.0, b.1 * crate::PAGE_SIZE));
        }
        pins.unpin(&still);
        drop(p);
        result
    }
}

/// Translates every page of the non-empty `[iova, iova + len)` for `access` before any byte
/// moves, so a range the IOMMU refuses up front is refused whole (a write marks the leaves
/// dirty as it goes).
fn validate(e: &DmaEngine, iova: Iova, len: usize, access: Access) -> Result<(), DmaError> {
    let first = iova.align_down(crate::PAGE_SIZE).raw();
    let last = iova.raw() + (len as u64 - 1);
    let mut page = first;
    while page <= last {
        e.translate(Iova(page.max(iova.raw())), access)
            .map_err(engine_error)?;
        page = match page.checked_add(crate::PAGE_SIZE) {
            Some(p) => p,
            None => break,
        };
    }
    Ok(())
}

fn engine_error(e: type1::DmaError) -> DmaError {
    match e {
        type1::DmaError::Fault(f) => DmaError::Fault(f),
        // Memory, Detached, and any failure a later type1 adds: the access reaches no memory.
        _ => DmaError::NoMemory,
    }
}
