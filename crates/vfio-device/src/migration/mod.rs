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
//! - v2 (the device ioctls, in the byte layer `ioctl.rs` on top): `VFIO_DEVICE_FEATURE` MIGRATION, MIG_DEVICE_STATE, MIG_DATA_SIZE,
//!   with data fds ([`DataFile`]);
//! - v1 ([`v1`]): the deprecated migration region QEMU 5.2–7.2 drives, whose `device_state`
//!   bits map onto the same states.
//!
//! The stream format is in [`stream`]. ERROR is never entered: a refused stream leaves the
//! device in RESUMING (mtty), and a reset (`VFIO_DEVICE_RESET`) always brings it back to
//! RUNNING with the model at power-on.

pub mod stream;
pub mod transfer;
pub mod v1;

use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY,
};

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

    /// Ends the current transfer and makes `t` the current one.
    pub(crate) fn start(&mut self, t: Arc<Transfer>) {
        self.end_transfer();
        self.transfer = Some(t);
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
