//! Interrupts: INTx, MSI, MSI-X, ERR and REQ, delivered by writing 1 to the eventfds the
//! program registered with `VFIO_DEVICE_SET_IRQS`.
//!
//! The handlers are vfio-pci's (v6.18 `drivers/vfio/pci/vfio_pci_intrs.c`):
//! `vfio_pci_set_intx_mask`, `vfio_pci_set_intx_unmask`, `vfio_pci_set_intx_trigger`,
//! `vfio_pci_set_msi_trigger` (with `vfio_msi_enable`, `vfio_msi_set_block`,
//! `vfio_msi_set_vector_signal`), `vfio_pci_set_err_trigger` and `vfio_pci_set_req_trigger`
//! (`vfio_pci_set_ctx_trigger_single`), dispatched as `vfio_pci_set_irqs_ioctl` does: no handler
//! (several or no action bits, MSI/MSI-X masking, ERR without PCI Express) is `ENOTTY`. The
//! loopback triggers (`DATA_NONE|ACTION_TRIGGER`, `DATA_BOOL`) signal exactly as the kernel
//! does, without touching the mask state.
//!
//! INTx is level-triggered and automasked (`vfio_intx_handler`): a rising line while enabled,
//! unmasked and not disabled by the command register signals and masks; unmasking (ioctl, or the
//! program signalling the resample eventfd, `vfio_pci_intx_unmask_handler`) signals again and
//! stays masked if the line is still asserted, else clears the mask. Command INTx-disable masks,
//! and clearing it unmasks by the same rule (`vfio_basic_config_write`).
//!
//! Concurrency: all state sits behind one mutex; device threads call [`Interrupts`] methods at
//! any time. A resample eventfd is watched by a thread with all signals blocked; it is stopped
//! and joined outside the lock.

pub mod eventfd;
mod msix;
pub mod set;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use vfio_bindings::bindings::vfio::{
    VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_REQ_IRQ_INDEX,
};

pub use eventfd::EventFd;
pub(crate) use msix::{MsixTable, Store};
pub use set::{Action, DataType, IrqData, SetIrqsHeader};

use crate::error::{Error, Result};
use crate::pci::IrqView;

/// A VFIO PCI IRQ index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqIndex {
    /// Legacy INTx.
    Intx,
    /// MSI.
    Msi,
    /// MSI-X.
    Msix,
    /// PCIe AER error notification.
    Err,
    /// Device request (the host wants the device back).
    Req,
}

impl IrqIndex {
    /// From the UAPI number.
    #[must_use]
    pub fn from_raw(index: u32) -> Option<IrqIndex> {
        match index {
            VFIO_PCI_INTX_IRQ_INDEX => Some(IrqIndex::Intx),
            VFIO_PCI_MSI_IRQ_INDEX => Some(IrqIndex::Msi),
            VFIO_PCI_MSIX_IRQ_INDEX => Some(IrqIndex::Msix),
            VFIO_PCI_ERR_IRQ_INDEX => Some(IrqIndex::Err),
            VFIO_PCI_REQ_IRQ_INDEX => Some(IrqIndex::Req),
            _ => None,
        }
    }

    /// The UAPI number.
    #[must_use]
    pub fn raw(self) -> u32 {
        match self {
            IrqIndex::Intx => VFIO_PCI_INTX_IRQ_INDEX,
            IrqIndex::Msi => VFIO_PCI_MSI_IRQ_INDEX,
            IrqIndex::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
            IrqIndex::Err => VFIO_PCI_ERR_IRQ_INDEX,
            IrqIndex::Req => VFIO_PCI_REQ_IRQ_INDEX,
        }
    }
}

/// Number of IRQ indexes (`VFIO_PCI_NUM_IRQS`).
pub const NUM_IRQS: u32 = VFIO_PCI_NUM_IRQS;

/// Vectors per index, as `vfio_pci_get_irq_count` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IrqCounts {
    /// 1 with an interrupt pin, else 0.
    pub intx: u32,
    /// `1 << MMC` of the MSI capability, 0 without one.
    pub msi: u32,
    /// MSI-X table size, 0 without the capability.
    pub msix: u32,
    /// 1 with a PCI Express capability, else 0.
    pub err: u32,
}

impl IrqCounts {
    /// The count of `index` (REQ is always 1; unknown indexes 0).
    #[must_use]
    pub fn of(&self, index: u32) -> u32 {
        match IrqIndex::from_raw(index) {
            Some(IrqIndex::Intx) => self.intx,
            Some(IrqIndex::Msi) => self.msi,
            Some(IrqIndex::Msix) => self.msix,
            Some(IrqIndex::Err) => self.err,
            Some(IrqIndex::Req) => 1,
            None => 0,
        }
    }
}

/// The INTx line level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Deasserted.
    Low,
    /// Asserted.
    High,
}

/// Which interrupt type is enabled (`vdev->irq_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enabled {
    /// None.
    None,
    /// INTx.
    Intx,
    /// MSI with this many vectors.
    Msi(u32),
    /// MSI-X with this many vectors.
    Msix(u32),
}

/// What happened to one interrupt the device raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// An eventfd was written.
    Signalled,
    /// Held: INTx masked, an MSI-X entry masked (pending bit set).
    Held,
    /// Dropped: the type is not enabled, or no eventfd is bound to the vector.
    Dropped,
}

/// A thread that unmasks INTx whenever the program signals the resample eventfd.
#[derive(Debug)]
struct Resampler {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Resampler {
    fn drop(&mut self) {
        self.stop.signal();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[derive(Debug)]
struct State {
    enabled: Enabled,
    intx_trigger: Option<EventFd>,
    intx_masked: bool,
    resample: Option<Resampler>,
    vectors: Vec<Option<EventFd>>,
    msi_qmax: Option<u16>,
    err: Option<EventFd>,
    req: Option<EventFd>,
    line: Level,
    virq_disabled: bool,
    msix: Option<MsixTable>,
}

/// The interrupt side of a device: the `SET_IRQS` state and the device's way to raise
/// interrupts. Shared as `Arc<Interrupts>` between the device fd and the device model.
#[derive(Debug)]
pub struct Interrupts {
    counts: IrqCounts,
    state: Mutex<State>,
    me: Weak<Interrupts>,
}

type Retired = Vec<Resampler>;

impl Interrupts {
    pub(crate) fn new(counts: IrqCounts, msix: Option<MsixTable>) -> Arc<Self> {
        Arc::new_cyclic(|me| Interrupts {
            counts,
            state: Mutex::new(State {
                enabled: Enabled::None,
                intx_trigger: None,
                intx_masked: false,
                resample: None,
                vectors: Vec::new(),
                msi_qmax: None,
                err: None,
                req: None,
                line: Level::Low,
                virq_disabled: false,
                msix,
            }),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Vectors per index.
    #[must_use]
    pub fn counts(&self) -> IrqCounts {
        self.counts
    }

    /// The enabled type.
    #[must_use]
    pub fn enabled(&self) -> Enabled {
        self.lock().enabled
    }

    /// True while INTx is masked.
    #[must_use]
    pub fn intx_masked(&self) -> bool {
        self.lock().intx_masked
    }

    /// What config reads and writes need to know.
    #[must_use]
    pub fn view(&self) -> IrqView {
        let st = self.lock();
        IrqView {
            intx_asserted: st.line == Level::High,
            msi_enabled: matches!(st.enabled, Enabled::Msi(_)),
            msi_qmax: st.msi_qmax,
            msix_enabled: matches!(st.enabled, Enabled::Msix(_)),
        }
    }

    // ----- the device's side -----

    /// Drives the INTx line (`vfio_intx_handler` on a rising edge).
    pub fn set_intx(&self, level: Level) -> Delivery {
        let mut st = self.lock();
        let rising = st.line == Level::Low && level == Level::High;
        st.line = level;
        if rising {
            Self::intx_deliver(&mut st)
        } else {
            Delivery::Held
        }
    }

    /// The line is asserted: signal and automask if INTx is enabled, unmasked, not disabled.
    fn intx_deliver(st: &mut State) -> Delivery {
        if st.enabled != Enabled::Intx || st.virq_disabled {
            return Delivery::Dropped;
        }
        if st.intx_masked || st.line == Level::Low {
            return Delivery::Held;
        }
        st.intx_masked = true;
        match &st.intx_trigger {
            Some(t) => {
                t.signal();
                Delivery::Signalled
            }
            None => Delivery::Dropped,
        }
    }

    /// Fires MSI vector `v`.
    pub fn msi(&self, v: u32) -> Delivery {
        let st = self.lock();
        match st.enabled {
            Enabled::Msi(n) if v < n => Self::signal_vector(&st, v),
            _ => Delivery::Dropped,
        }
    }

    fn signal_vector(st: &State, v: u32) -> Delivery {
        match st.vectors.get(v as usize).and_then(Option::as_ref) {
            Some(e) => {
                e.signal();
                Delivery::Signalled
            }
            None => Delivery::Dropped,
        }
    }

    /// Fires MSI-X vector `v`: held in the PBA while its table entry is masked.
    pub fn msix(&self, v: u32) -> Delivery {
        let mut st = self.lock();
        let d = Self::msix_locked(&mut st, v);
        Self::msix_flush(&mut st);
        d
    }

    fn msix_locked(st: &mut State, v: u32) -> Delivery {
        let Enabled::Msix(n) = st.enabled else {
            return Delivery::Dropped;
        };
        let Ok(v16) = u16::try_from(v) else {
            return Delivery::Dropped;
        };
        if v >= n {
            return Delivery::Dropped;
        }
        if let Some(t) = st.msix.as_mut() {
            if t.masked(v16) {
                t.set_pending(v16);
                return Delivery::Held;
            }
        }
        Self::signal_vector(st, v)
    }

    /// Delivers MSI-X vectors whose pending bit is set and whose entry is now unmasked.
    fn msix_flush(st: &mut State) {
        let Some(t) = st.msix.as_mut() else { return };
        if !matches!(st.enabled, Enabled::Msix(_)) {
            return;
        }
        for v in t.take_deliverable() {
            Self::signal_vector(st, u32::from(v));
        }
    }

    /// Delivers pending MSI-X vectors whose entries were unmasked behind the device's back
    /// (the table is in shared memory).
    pub fn msix_poll(&self) {
        Self::msix_flush(&mut self.lock());
    }

    /// Raises the device's interrupt `v` by whatever type is enabled: MSI-X vector `v`, MSI
    /// vector `v`, or (for vector 0) a rising INTx edge the device must later lower with
    /// [`Interrupts::set_intx`].
    pub fn signal(&self, v: u32) -> Delivery {
        let enabled = self.enabled();
        match enabled {
            Enabled::Msix(_) => self.msix(v),
            Enabled::Msi(_) => self.msi(v),
            Enabled::Intx if v == 0 => self.set_intx(Level::High),
            _ => Delivery::Dropped,
        }
    }

    /// Signals the ERR eventfd (AER), if set.
    pub fn err(&self) -> Delivery {
        Self::signal_ctx(self.lock().err.as_ref())
    }

    /// Signals the REQ eventfd (the host wants the device back), if set.
    pub fn req(&self) -> Delivery {
        Self::signal_ctx(self.lock().req.as_ref())
    }

    fn signal_ctx(e: Option<&EventFd>) -> Delivery {
        match e {
            Some(e) => {
                e.signal();
                Delivery::Signalled
            }
            None => Delivery::Dropped,
        }
    }

    // ----- the config side -----

    /// Command INTx-disable changed (`vfio_basic_config_write`).
    pub(crate) fn set_virq_disabled(&self, disabled: bool) {
        let mut st = self.lock();
        if disabled && !st.virq_disabled {
            st.virq_disabled = true;
            Self::intx_mask(&mut st);
        } else if !disabled && st.virq_disabled {
            st.virq_disabled = false;
            Self::intx_unmask(&mut st);
        }
    }

    fn intx_mask(st: &mut State) {
        if st.enabled == Enabled::Intx {
            st.intx_masked = true;
        }
    }

    /// `vfio_pci_intx_unmask_handler`.
    fn intx_unmask(st: &mut State) {
        if st.enabled != Enabled::Intx || !st.intx_masked || st.virq_disabled {
            return;
        }
        if st.line == Level::High {
            if let Some(t) = &st.intx_trigger {
                t.signal();
            }
        } else {
            st.intx_masked = false;
        }
    }

    fn resample_fired(&self) {
        Self::intx_unmask(&mut self.lock());
    }

    // ----- SET_IRQS -----

    /// `vfio_pci_set_irqs_ioctl` after validation: runs the handler for `index` and the
    /// action in `flags` with `data` (`count` elements of the request's type).
    ///
    /// # Errors
    /// The handler's error (see the module docs).
    pub fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        data: &IrqData,
    ) -> Result<()> {
        let mut retired = Retired::new();
        let r = {
            let mut st = self.lock();
            let r = self.dispatch(&mut st, index, flags, start, count, data, &mut retired);
            Self::msix_flush(&mut st);
            r
        };
        drop(retired);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        st: &mut State,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        data: &IrqData,
        retired: &mut Retired,
    ) -> Result<()> {
        let no_handler = Err(Error::IrqNoHandler { index, flags });
        let action = Action::from_flags(flags);
        match (IrqIndex::from_raw(index), action) {
            (Some(IrqIndex::Intx), Some(Action::Mask)) => {
                Self::intx_set_mask(st, start, count, data)
            }
            (Some(IrqIndex::Intx), Some(Action::Unmask)) => {
                self.intx_set_unmask(st, start, count, data, retired)
            }
            (Some(IrqIndex::Intx), Some(Action::Trigger)) => {
                Self::intx_set_trigger(st, start, count, data, retired)
            }
            (Some(IrqIndex::Msi), Some(Action::Trigger)) => {
                Self::msi_set_trigger(st, false, start, count, data)
            }
            (Some(IrqIndex::Msix), Some(Action::Trigger)) => {
                Self::msi_set_trigger(st, true, start, count, data)
            }
            (Some(IrqIndex::Err), Some(Action::Trigger)) if self.counts.err > 0 => {
                Self::ctx_trigger(&mut st.err, start, count, data)
            }
            (Some(IrqIndex::Req), Some(Action::Trigger)) => {
                Self::ctx_trigger(&mut st.req, start, count, data)
            }
            _ => no_handler,
        }
    }

    fn first_bool(data: &IrqData) -> bool {
        matches!(data, IrqData::Bool(b) if b.first().is_some_and(|&x| x != 0))
    }

    /// `vfio_pci_set_intx_mask`.
    fn intx_set_mask(st: &mut State, start: u32, count: u32, data: &IrqData) -> Result<()> {
        if st.enabled != Enabled::Intx || start != 0 || count != 1 {
            return Err(Error::IrqState {
                reason: "INTx mask needs INTx enabled, start 0, count 1",
            });
        }
        match data {
            IrqData::None => Self::intx_mask(st),
            IrqData::Bool(_) => {
                if Self::first_bool(data) {
                    Self::intx_mask(st);
                }
            }
            IrqData::Eventfd(_) => {
                return Err(Error::IrqNoHandler {
                    index: VFIO_PCI_INTX_IRQ_INDEX,
                    flags: 0,
                })
            }
        }
        Ok(())
    }

    /// `vfio_pci_set_intx_unmask`.
    fn intx_set_unmask(
        &self,
        st: &mut State,
        start: u32,
        count: u32,
        data: &IrqData,
        retired: &mut Retired,
    ) -> Result<()> {
        if st.enabled != Enabled::Intx || start != 0 || count != 1 {
            return Err(Error::IrqState {
                reason: "INTx unmask needs INTx enabled, start 0, count 1",
            });
        }
        match data {
            IrqData::None => Self::intx_unmask(st),
            IrqData::Bool(_) => {
                if Self::first_bool(data) {
                    Self::intx_unmask(st);
                }
            }
            IrqData::Eventfd(fds) => {
                let fd = fds.first().copied().unwrap_or(-1);
                if let Some(old) = st.resample.take() {
                    retired.push(old);
                }
                if fd >= 0 {
                    st.resample = Some(self.start_resampler(fd)?);
                }
            }
        }
        Ok(())
    }

    /// `vfio_virqfd_enable` with `vfio_pci_intx_unmask_handler`.
    fn start_resampler(&self, fd: i32) -> Result<Resampler> {
        let efd = EventFd::from_user(fd)?;
        let stop = Arc::new(EventFd::new()?);
        let stop2 = stop.clone();
        let me = self.me.clone();
        let thread = crate::thread::spawn("vfio-intx-resample", move || loop {
            match eventfd::wait_readable(&[&efd, &stop2]) {
                Some(0) => {
                    // A stop wins over a resample eventfd that never goes quiet (the program
                    // gave the trigger eventfd as resample too: each unmask with the line
                    // asserted signals it again), or the disable would wait forever.
                    if stop2.read().is_some() {
                        return;
                    }
                    let _ = efd.read();
                    match me.upgrade() {
                        Some(irqs) => irqs.resample_fired(),
                        None => return,
                    }
                }
                _ => return,
            }
        })
        .map_err(|e| Error::Os {
            op: "spawn",
            errno: e.raw_os_error().unwrap_or(libc::EAGAIN),
        })?;
        Ok(Resampler {
            stop,
            thread: Some(thread),
        })
    }

    /// `vfio_pci_set_intx_trigger`.
    fn intx_set_trigger(
        st: &mut State,
        start: u32,
        count: u32,
        data: &IrqData,
        retired: &mut Retired,
    ) -> Result<()> {
        let is_intx = st.enabled == Enabled::Intx;
        if is_intx && count == 0 && *data == IrqData::None {
            Self::intx_disable(st, retired);
            return Ok(());
        }
        if !(is_intx || st.enabled == Enabled::None) || start != 0 || count != 1 {
            return Err(Error::IrqState {
                reason: "INTx trigger needs INTx or nothing enabled, start 0, count 1",
            });
        }
        match data {
            IrqData::Eventfd(fds) => {
                let fd = fds.first().copied().unwrap_or(-1);
                let trigger = if fd >= 0 {
                    Some(EventFd::from_user(fd)?)
                } else {
                    None
                };
                st.intx_trigger = trigger;
                if !is_intx {
                    // `vfio_intx_enable`: masked iff INTx-disable is set; a line already
                    // asserted interrupts at once.
                    st.enabled = Enabled::Intx;
                    st.intx_masked = st.virq_disabled;
                    Self::intx_deliver(st);
                }
                Ok(())
            }
            _ if !is_intx => Err(Error::IrqState {
                reason: "INTx loopback needs INTx enabled",
            }),
            IrqData::None => {
                Self::intx_loopback(st);
                Ok(())
            }
            IrqData::Bool(_) => {
                if Self::first_bool(data) {
                    Self::intx_loopback(st);
                }
                Ok(())
            }
        }
    }

    /// `vfio_send_intx_eventfd`.
    fn intx_loopback(st: &State) {
        if st.enabled == Enabled::Intx && !st.virq_disabled {
            if let Some(t) = &st.intx_trigger {
                t.signal();
            }
        }
    }

    /// `vfio_intx_disable`.
    fn intx_disable(st: &mut State, retired: &mut Retired) {
        st.enabled = Enabled::None;
        st.intx_trigger = None;
        st.intx_masked = false;
        if let Some(r) = st.resample.take() {
            retired.push(r);
        }
    }

    /// `vfio_pci_set_msi_trigger`.
    fn msi_set_trigger(
        st: &mut State,
        msix: bool,
        start: u32,
        count: u32,
        data: &IrqData,
    ) -> Result<()> {
        let this = |e: Enabled| {
            matches!(
                (e, msix),
                (Enabled::Msi(_), false) | (Enabled::Msix(_), true)
            )
        };
        if this(st.enabled) && count == 0 && *data == IrqData::None {
            Self::msi_disable(st);
            return Ok(());
        }
        if !(this(st.enabled) || st.enabled == Enabled::None) {
            return Err(Error::IrqState {
                reason: "another interrupt type is enabled",
            });
        }
        match data {
            IrqData::Eventfd(fds) => {
                if this(st.enabled) {
                    return Self::msi_set_block(st, msix, start, fds);
                }
                // `vfio_msi_enable(start + count)`, bind, disable again on failure.
                let nvec = start + count;
                st.vectors = (0..nvec).map(|_| None).collect();
                if msix {
                    st.enabled = Enabled::Msix(nvec);
                    if let Some(t) = st.msix.as_mut() {
                        t.mask_all();
                    }
                } else {
                    st.enabled = Enabled::Msi(nvec);
                    // fls(nvec * 2 - 1) - 1 = ceil(log2(nvec)).
                    st.msi_qmax =
                        Some(u16::try_from(nvec.next_power_of_two().trailing_zeros()).unwrap_or(0));
                }
                let r = Self::msi_set_block(st, msix, start, fds);
                if r.is_err() {
                    Self::msi_disable(st);
                }
                r
            }
            _ if !this(st.enabled) => Err(Error::IrqState {
                reason: "MSI loopback needs the type enabled",
            }),
            IrqData::None => {
                for v in start..start.saturating_add(count) {
                    Self::signal_vector(st, v);
                }
                Ok(())
            }
            IrqData::Bool(b) => {
                for (k, v) in (start..start.saturating_add(count)).enumerate() {
                    if b.get(k).is_some_and(|&x| x != 0) {
                        Self::signal_vector(st, v);
                    }
                }
                Ok(())
            }
        }
    }

    /// `vfio_msi_set_block` / `vfio_msi_set_vector_signal` (static allocation).
    fn msi_set_block(st: &mut State, msix: bool, start: u32, fds: &[i32]) -> Result<()> {
        let mut result = Ok(());
        let mut done = start;
        for (k, &fd) in fds.iter().enumerate() {
            let v = start + u32::try_from(k).unwrap_or(u32::MAX);
            done = v;
            result = Self::msi_set_vector(st, msix, v, fd);
            if result.is_err() {
                break;
            }
            done = v + 1;
        }
        if result.is_err() {
            for v in start..done {
                // Unbinding cannot fail.
                let _ = Self::msi_set_vector(st, msix, v, -1);
            }
        }
        result
    }

    fn msi_set_vector(st: &mut State, msix: bool, v: u32, fd: i32) -> Result<()> {
        let slot = v as usize;
        if let Some(old) = st.vectors.get_mut(slot) {
            *old = None;
            Self::program_entry(st, msix, v, false);
        }
        if fd < 0 {
            return Ok(());
        }
        if slot >= st.vectors.len() {
            return Err(Error::IrqState {
                reason: "vector beyond the enabled vectors",
            });
        }
        let e = EventFd::from_user(fd)?;
        st.vectors[slot] = Some(e);
        Self::program_entry(st, msix, v, true);
        Ok(())
    }

    /// The host side (un)masks the MSI-X entry of a vector as its trigger comes and goes.
    fn program_entry(st: &mut State, msix: bool, v: u32, bound: bool) {
        if !msix {
            return;
        }
        if let (Some(t), Ok(v)) = (st.msix.as_mut(), u16::try_from(v)) {
            t.set_masked(v, !bound);
        }
    }

    /// `vfio_msi_disable`.
    fn msi_disable(st: &mut State) {
        if matches!(st.enabled, Enabled::Msix(_)) {
            if let Some(t) = st.msix.as_mut() {
                t.mask_all();
            }
        }
        st.vectors.clear();
        st.enabled = Enabled::None;
    }

    /// `vfio_pci_set_ctx_trigger_single` behind the ERR/REQ preconditions.
    fn ctx_trigger(
        ctx: &mut Option<EventFd>,
        start: u32,
        count: u32,
        data: &IrqData,
    ) -> Result<()> {
        if start != 0 || count > 1 {
            return Err(Error::IrqState {
                reason: "ERR/REQ need start 0 and count <= 1",
            });
        }
        match data {
            IrqData::None => match ctx {
                Some(e) => {
                    if count > 0 {
                        e.signal();
                    } else {
                        *ctx = None;
                    }
                    Ok(())
                }
                None => Err(Error::IrqState {
                    reason: "no trigger to signal or remove",
                }),
            },
            IrqData::Bool(b) => {
                if count == 0 {
                    return Err(Error::IrqState {
                        reason: "BOOL with count 0",
                    });
                }
                if b.first().is_some_and(|&x| x != 0) {
                    if let Some(e) = ctx {
                        e.signal();
                    }
                }
                Ok(())
            }
            IrqData::Eventfd(fds) => {
                if count == 0 {
                    return Err(Error::IrqState {
                        reason: "EVENTFD with count 0",
                    });
                }
                let fd = fds.first().copied().unwrap_or(-1);
                if fd == -1 {
                    *ctx = None;
                } else if fd >= 0 {
                    *ctx = Some(EventFd::from_user(fd)?);
                }
                Ok(())
            }
        }
    }

    /// Last close / teardown: every type disabled, ERR and REQ dropped, the line lowered.
    pub(crate) fn release(&self) {
        let mut retired = Retired::new();
        {
            let mut st = self.lock();
            Self::intx_disable(&mut st, &mut retired);
            Self::msi_disable(&mut st);
            st.err = None;
            st.req = None;
        }
        drop(retired);
    }

    /// Function reset: the device's line goes low and pending MSI-X bits clear; bindings and
    /// the enabled type survive (the kernel saves and restores interrupt state around
    /// `pci_try_reset_function`).
    pub(crate) fn reset_device_side(&self) {
        let mut st = self.lock();
        st.line = Level::Low;
        let msix_on = matches!(st.enabled, Enabled::Msix(_));
        let bound: Vec<bool> = st.vectors.iter().map(Option::is_some).collect();
        if let Some(t) = st.msix.as_mut() {
            t.mask_all();
            if msix_on {
                for (v, b) in bound.iter().enumerate() {
                    if let Ok(v) = u16::try_from(v) {
                        t.set_masked(v, !b);
                    }
                }
            }
        }
    }

    /// PBA bytes for a PBA in an MMIO BAR.
    pub(crate) fn read_pba(&self, off: u64, buf: &mut [u8]) {
        match self.lock().msix.as_ref() {
            Some(t) => t.read_pba(off, buf),
            None => buf.fill(0),
        }
    }
}

#[cfg(test)]
mod tests;
