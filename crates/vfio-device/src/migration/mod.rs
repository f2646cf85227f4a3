//! Device migration: one state machine with two faces.
//!
//! The state machine is the v2 one (`enum vfio_device_mig_state`, v6.18
//! `include/uapi/linux/vfio.h`): every SET walks `vfio_mig_get_next_state`'s table one arc at a
//! time ([`next_state`]), and each arc does what a v2 driver does on it (mtty's
//! `mtty_step_state`, mlx5's `mlx5vf_pci_step_device_state_locked`):
//!
//! | Arc | Effect |
//! |---|---|
//! | RUNNING→RUNNING_P2P, PRE_COPY→PRE_COPY_P2P (RUNNING→STOP without P2P) | the model quiesces: no DMA, no interrupts from here |
//! | RUNNING_P2P→RUNNING, PRE_COPY_P2P→PRE_COPY (STOP→RUNNING without P2P) | the model resumes |
//! | RUNNING→PRE_COPY, RUNNING_P2P→PRE_COPY_P2P | a save transfer with one pre-copy frame; returns a data fd |
//! | PRE_COPY_P2P→STOP_COPY (PRE_COPY→STOP_COPY without P2P) | the final frame is appended to the same transfer (no new fd) |
//! | STOP→STOP_COPY | a save transfer holding the final frame; returns a data fd |
//! | STOP→RESUMING | a resume transfer; returns a data fd |
//! | RESUMING→STOP | the received stream is checked and applied; refused: `EINVAL`, the state stays RESUMING |
//! | STOP_COPY→STOP, PRE_COPY→RUNNING, PRE_COPY_P2P→RUNNING_P2P | the transfer ends (`ENODEV` from then on) |
//!
//! Device DMA (and interrupts) happen only in RUNNING and PRE_COPY ([`MigState::dma_allowed`]).
//! RUNNING_P2P only forbids peer-to-peer DMA in the UAPI; the model stops all DMA there, as the
//! P2P quiescing it stands for. Besides the model's own quiescing, the device layer closes the
//! [`crate::Dma`] gate, so a model that forgets still cannot reach guest memory.
//!
//! Faces:
//! - v2 ([`crate::ioctl`]): `VFIO_DEVICE_FEATURE` MIGRATION, MIG_DEVICE_STATE, MIG_DATA_SIZE,
//!   with data fds ([`DataFile`]);
//! - v1 ([`v1`]): the deprecated migration region QEMU 5.2–7.2 drives, whose `device_state`
//!   bits map onto the same states.
//!
//! The stream format is in [`stream`]. ERROR is never entered: a refused stream leaves the
//! device in RESUMING (mtty), and a reset (`VFIO_DEVICE_RESET`) always brings it back to
//! RUNNING with the model at power-on.

pub mod logging;
pub mod stream;
pub mod transfer;
pub mod v1;

use std::sync::{Arc, MutexGuard};

use vfio_bindings::bindings::vfio::{
    VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY,
};

use crate::device::Device;
use crate::error::{Error, Result};
use stream::{FrameKind, StreamIdentity};
pub use transfer::{DataFdMode, DataFile, Direction, Transfer, MAX_STREAM};

/// `enum vfio_device_mig_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigState {
    /// `VFIO_DEVICE_STATE_ERROR` (0).
    Error,
    /// `VFIO_DEVICE_STATE_STOP` (1).
    Stop,
    /// `VFIO_DEVICE_STATE_RUNNING` (2).
    Running,
    /// `VFIO_DEVICE_STATE_STOP_COPY` (3).
    StopCopy,
    /// `VFIO_DEVICE_STATE_RESUMING` (4).
    Resuming,
    /// `VFIO_DEVICE_STATE_RUNNING_P2P` (5).
    RunningP2p,
    /// `VFIO_DEVICE_STATE_PRE_COPY` (6).
    PreCopy,
    /// `VFIO_DEVICE_STATE_PRE_COPY_P2P` (7).
    PreCopyP2p,
}

/// Every state in UAPI order.
pub const ALL_STATES: [MigState; 8] = [
    MigState::Error,
    MigState::Stop,
    MigState::Running,
    MigState::StopCopy,
    MigState::Resuming,
    MigState::RunningP2p,
    MigState::PreCopy,
    MigState::PreCopyP2p,
];

impl MigState {
    /// The state of UAPI value `v`.
    #[must_use]
    pub fn from_raw(v: u32) -> Option<MigState> {
        ALL_STATES.get(usize::try_from(v).ok()?).copied()
    }

    /// The UAPI value.
    #[must_use]
    pub fn raw(self) -> u32 {
        match self {
            MigState::Error => 0,
            MigState::Stop => 1,
            MigState::Running => 2,
            MigState::StopCopy => 3,
            MigState::Resuming => 4,
            MigState::RunningP2p => 5,
            MigState::PreCopy => 6,
            MigState::PreCopyP2p => 7,
        }
    }

    /// True in the states where the device may DMA and interrupt.
    #[must_use]
    pub fn dma_allowed(self) -> bool {
        matches!(self, MigState::Running | MigState::PreCopy)
    }

    /// `state_flags_table` of `vfio_mig_get_next_state`: the flags a state needs (ERROR needs
    /// every bit, so it is never a valid target).
    #[must_use]
    pub fn required_flags(self) -> u32 {
        match self {
            MigState::Stop | MigState::Running | MigState::StopCopy | MigState::Resuming => {
                VFIO_MIGRATION_STOP_COPY
            }
            MigState::PreCopy => VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
            MigState::PreCopyP2p => {
                VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY
            }
            MigState::RunningP2p => VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
            MigState::Error => u32::MAX,
        }
    }

    /// True if a device with `flags` supports the state.
    #[must_use]
    pub fn supported(self, flags: u32) -> bool {
        self.required_flags() & flags == self.required_flags()
    }
}

/// `vfio_from_fsm_table`: `[current][target]` → the next state on the way.
fn table(cur: MigState, tgt: MigState) -> MigState {
    use MigState::{Error as Er, PreCopy as Pc, PreCopyP2p as Pcp, Resuming as Res};
    use MigState::{Running as Run, RunningP2p as Rp, Stop, StopCopy as Sc};
    // Columns in UAPI order: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P,
    // PRE_COPY, PRE_COPY_P2P.
    let row: [MigState; 8] = match cur {
        Stop => [Er, Stop, Rp, Sc, Res, Rp, Rp, Rp],
        Run => [Er, Rp, Run, Rp, Rp, Rp, Pc, Rp],
        Sc => [Er, Stop, Stop, Sc, Stop, Stop, Er, Er],
        Res => [Er, Stop, Stop, Stop, Res, Stop, Stop, Stop],
        Rp => [Er, Stop, Run, Stop, Stop, Rp, Run, Pcp],
        Pc => [Er, Run, Run, Pcp, Run, Run, Pc, Pcp],
        Pcp => [Er, Rp, Rp, Sc, Rp, Rp, Pc, Pcp],
        Er => [Er; 8],
    };
    row[usize::try_from(tgt.raw()).unwrap_or(0)]
}

/// `vfio_mig_get_next_state`: the next state from `cur` towards `target` for a device with
/// `flags`, skipping states it does not support; `None` where the kernel returns `EINVAL`
/// (an unsupported current or target state, ERROR, or no path).
///
/// Difference: the kernel's skip loop tests ERROR's flags (`~0U`, never supported) and, on an
/// ERROR cell (STOP_COPY → PRE_COPY or PRE_COPY_P2P on a PRE_COPY device), would follow
/// ERROR's row forever; the walk stops at ERROR and returns `None` (`EINVAL`), the result the
/// function's last line intends.
#[must_use]
pub fn next_state(flags: u32, cur: MigState, target: MigState) -> Option<MigState> {
    if !cur.supported(flags) || !target.supported(flags) {
        return None;
    }
    let mut next = table(cur, target);
    while next != MigState::Error && !next.supported(flags) {
        next = table(next, target);
    }
    (next != MigState::Error).then_some(next)
}

/// What a device offers for migration (in [`crate::DeviceSpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrationSpec {
    /// `VFIO_MIGRATION_*` flags of the MIGRATION feature; 0 means no migration (`ENOTTY`).
    /// STOP_COPY is mandatory when migration is offered.
    pub flags: u32,
    /// Offer the deprecated v1 migration region (QEMU 5.2–7.2) at index 9.
    pub v1_region: bool,
    /// Offer device DMA logging (DMA_LOGGING_START/STOP/REPORT).
    pub dma_logging: bool,
}

impl MigrationSpec {
    /// No migration, no logging.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Every v2 flag (STOP_COPY, P2P, PRE_COPY) and DMA logging; v1 region as given.
    #[must_use]
    pub fn full(v1_region: bool) -> Self {
        MigrationSpec {
            flags: VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
            v1_region,
            dma_logging: true,
        }
    }
}

/// The migration side of a device (behind the device's migration lock).
#[derive(Debug)]
pub(crate) struct MigCore {
    pub(crate) state: MigState,
    pub(crate) transfer: Option<Arc<Transfer>>,
    pub(crate) file: Option<Arc<DataFile>>,
    pub(crate) mode: DataFdMode,
    pub(crate) v1: v1::Chunk,
}

impl MigCore {
    pub(crate) fn new() -> Self {
        MigCore {
            state: MigState::Running,
            transfer: None,
            file: None,
            mode: DataFdMode::default(),
            v1: v1::Chunk::default(),
        }
    }

    /// Ends the current transfer (and stops its fd's thread).
    pub(crate) fn end_transfer(&mut self) {
        if let Some(t) = self.transfer.take() {
            t.end();
        }
        self.file = None;
        self.v1 = v1::Chunk::default();
    }

    fn start(&mut self, t: Arc<Transfer>) {
        self.end_transfer();
        self.transfer = Some(t);
    }
}

impl Device {
    pub(crate) fn mig(&self) -> MutexGuard<'_, MigCore> {
        self.mig
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `VFIO_MIGRATION_*` flags (0: no migration).
    #[must_use]
    pub fn migration_flags(&self) -> u32 {
        self.spec().migration.flags
    }

    /// The current migration state (`MIG_DEVICE_STATE` GET).
    #[must_use]
    pub fn migration_state(&self) -> MigState {
        self.mig().state
    }

    /// How v2 data fds move their bytes (default [`DataFdMode::Pipe`]); the drop-in sets
    /// [`DataFdMode::Routed`] when it routes `read`/`write`/`ioctl` on data fds.
    pub fn set_data_fd_mode(&self, mode: DataFdMode) {
        self.mig().mode = mode;
    }

    /// The current v2 data file if `fd` is its fd number.
    #[must_use]
    pub fn data_file(&self, fd: i32) -> Option<Arc<DataFile>> {
        self.mig().file.clone().filter(|f| f.fd() == fd)
    }

    /// The identity a state stream of this device carries.
    #[must_use]
    pub fn stream_identity(&self) -> StreamIdentity {
        let id = &self.spec().function.identity;
        StreamIdentity {
            vendor: id.vendor_id,
            device: id.device_id,
            subsystem_vendor: id.subsystem_vendor_id,
            subsystem: id.subsystem_id,
        }
    }

    /// `MIG_DATA_SIZE`: the stop-copy length estimate (one final frame).
    #[must_use]
    pub fn migration_data_size(&self) -> u64 {
        stream::HEADER_LEN as u64 + self.model().state_size()
    }

    /// Walks from the current state to `target` (the raw UAPI value) one arc at a time, as a
    /// v2 driver's `migration_set_state` does. Returns the transfer the last arc started, if
    /// it starts one (the v2 face turns it into a data fd).
    ///
    /// # Errors
    /// [`Error::NoFeature`] without migration (`ENOTTY`); [`Error::Migration`] (`EINVAL`) for a
    /// target that is invalid, unsupported or ERROR, or with no path (the state is left
    /// where the walk stopped); [`Error::BadStream`] (`EINVAL`) if RESUMING→STOP refuses the
    /// stream (the state stays RESUMING).
    pub fn set_migration_state(&self, target: u32) -> Result<Option<Arc<Transfer>>> {
        let flags = self.migration_flags();
        if flags == 0 {
            return Err(Error::NoFeature {
                feature: vfio_bindings::bindings::vfio::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
            });
        }
        let mut core = self.mig();
        self.walk(&mut core, target)
    }

    /// The v2 SET: the walk, and a data fd for a transfer the last arc started.
    pub(crate) fn set_migration_state_v2(&self, target: u32) -> Result<Option<Arc<DataFile>>> {
        let mut core = self.mig();
        let Some(t) = self.walk(&mut core, target)? else {
            return Ok(None);
        };
        let file = DataFile::new(t, core.mode)?;
        core.file = Some(file.clone());
        Ok(Some(file))
    }

    /// A data fd that could not be handed out: closed, its transfer ended.
    pub(crate) fn drop_data_file(&self, file: &Arc<DataFile>) {
        let mut core = self.mig();
        if core.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, file)) {
            core.end_transfer();
        }
        // SAFETY: the fd was created for this call and never reached the program.
        unsafe { libc::close(file.fd()) };
    }

    pub(crate) fn walk(&self, core: &mut MigCore, target: u32) -> Result<Option<Arc<Transfer>>> {
        let flags = self.migration_flags();
        let tgt = MigState::from_raw(target)
            .filter(|t| t.supported(flags))
            .ok_or(Error::Migration {
                reason: "target state invalid, unsupported or ERROR",
            })?;
        let mut out = None;
        while core.state != tgt {
            let next = next_state(flags, core.state, tgt).ok_or(Error::Migration {
                reason: "no arc from the current state to the target",
            })?;
            out = self.step(core, next)?;
            if out.is_some() && core.state != tgt {
                // A driver WARN in the kernel: only the last arc may return a file.
                core.end_transfer();
                return Err(Error::Migration {
                    reason: "an intermediate arc returned a data transfer",
                });
            }
        }
        Ok(out)
    }

    fn frame(&self, kind: FrameKind) -> Vec<u8> {
        stream::encode(kind, self.stream_identity(), &self.model().save_state())
    }

    /// One arc (see the module docs).
    fn step(&self, core: &mut MigCore, next: MigState) -> Result<Option<Arc<Transfer>>> {
        use MigState::{PreCopy, PreCopyP2p, Resuming, Running, RunningP2p, Stop, StopCopy};
        let cur = core.state;
        if cur.dma_allowed() && !next.dma_allowed() {
            self.model().quiesce();
            self.dma().set_paused(true);
        }
        let mut out = None;
        match (cur, next) {
            (Stop, StopCopy) => {
                let t = Transfer::save(self.frame(FrameKind::Final), true);
                core.start(t.clone());
                out = Some(t);
            }
            (Running, PreCopy) | (RunningP2p, PreCopyP2p) => {
                let t = Transfer::save(self.frame(FrameKind::PreCopy), false);
                core.start(t.clone());
                out = Some(t);
            }
            (PreCopyP2p | PreCopy, StopCopy) => match &core.transfer {
                Some(t) if t.direction() == Direction::Save && !t.is_ended() => {
                    t.finish_with(&self.frame(FrameKind::Final));
                }
                _ => {
                    return Err(Error::Migration {
                        reason: "no pre-copy transfer to complete",
                    })
                }
            },
            (StopCopy, Stop) | (PreCopy, Running) | (PreCopyP2p, RunningP2p) => {
                core.end_transfer();
            }
            (Stop, Resuming) => {
                let t = Transfer::resume();
                core.start(t.clone());
                out = Some(t);
            }
            (Resuming, Stop) => {
                self.load(core)?;
                core.end_transfer();
            }
            _ => {}
        }
        core.state = next;
        if !cur.dma_allowed() && next.dma_allowed() {
            self.dma().set_paused(false);
            self.model().resume();
        }
        Ok(out)
    }

    /// RESUMING→STOP: check the received stream and apply it.
    fn load(&self, core: &MigCore) -> Result<()> {
        let Some(t) = core
            .transfer
            .as_ref()
            .filter(|t| t.direction() == Direction::Resume)
        else {
            return Err(self.reject("no resume transfer".into()));
        };
        if let Some(f) = &core.file {
            f.settle();
        }
        let bytes = t.received().map_err(|m| self.reject(m))?;
        let payload = stream::decode(&bytes, self.stream_identity()).map_err(|m| self.reject(m))?;
        self.model()
            .restore_state(payload)
            .map_err(|m| self.reject(format!("model refused its state: {m}")))
    }

    /// One stderr line naming what was wrong, and the error.
    fn reject(&self, reason: String) -> Error {
        let l = self.spec().location;
        eprintln!(
            "type1 vfio-device {:04x}:{:02x}:{:02x}.{}: RESUMING: device state stream rejected: {reason}",
            l.segment,
            l.bus,
            l.devfn >> 3,
            l.devfn & 7
        );
        Error::BadStream { reason }
    }

    /// Reset and last close: the transfer ends, the state is RUNNING, DMA may run again (the
    /// caller resets the model).
    pub(crate) fn migration_reset(&self, core: &mut MigCore) {
        core.end_transfer();
        core.state = MigState::Running;
        self.dma().set_paused(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;

    #[test]
    fn the_table_matches_vfio_mig_get_next_state_with_every_flag() {
        use MigState::*;
        // (cur, target, next) rows of the kernel table that go somewhere else.
        let cases = [
            (Stop, Running, RunningP2p),
            (Stop, PreCopy, RunningP2p),
            (Running, Stop, RunningP2p),
            (Running, StopCopy, RunningP2p),
            (Running, PreCopy, PreCopy),
            (StopCopy, Running, Stop),
            (Resuming, Running, Stop),
            (RunningP2p, PreCopy, Running),
            (RunningP2p, PreCopyP2p, PreCopyP2p),
            (PreCopy, StopCopy, PreCopyP2p),
            (PreCopy, Stop, Running),
            (PreCopyP2p, StopCopy, StopCopy),
            (PreCopyP2p, Stop, RunningP2p),
        ];
        for (c, t, n) in cases {
            assert_eq!(next_state(ALL, c, t), Some(n), "{c:?} -> {t:?}");
        }
        assert_eq!(next_state(ALL, StopCopy, PreCopy), None);
        assert_eq!(next_state(ALL, StopCopy, PreCopyP2p), None);
        for s in ALL_STATES {
            assert_eq!(next_state(ALL, s, Error), None);
            assert_eq!(next_state(ALL, Error, s), None);
        }
    }

    #[test]
    fn unsupported_states_are_skipped_or_refused() {
        use MigState::*;
        let f = VFIO_MIGRATION_STOP_COPY;
        // Without P2P, RUNNING_P2P is skipped: RUNNING → STOP directly.
        assert_eq!(next_state(f, Running, StopCopy), Some(Stop));
        assert_eq!(next_state(f, Stop, Running), Some(Running));
        assert_eq!(next_state(f, Running, RunningP2p), None);
        assert_eq!(next_state(f, Running, PreCopy), None);
        let p2p = f | VFIO_MIGRATION_P2P;
        assert_eq!(next_state(p2p, RunningP2p, PreCopyP2p), None);
        // PRE_COPY without P2P: PRE_COPY → STOP_COPY goes through PRE_COPY_P2P? No: it is
        // unsupported, so the walk continues from PCP's row to STOP_COPY.
        let pc = f | VFIO_MIGRATION_PRE_COPY;
        assert_eq!(next_state(pc, PreCopy, StopCopy), Some(StopCopy));
        assert_eq!(next_state(pc, PreCopy, Stop), Some(Running));
    }
}
