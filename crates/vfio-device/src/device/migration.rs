//! The device's migration API: the migration lock, the v2 state walk and what each arc does
//! to the model and the DMA gate (the state machine and its table are in
//! [`crate::migration`], below this layer).

use std::sync::{Arc, MutexGuard};

use crate::error::{Error, Result};
use crate::migration::stream::{self, FrameKind, StreamIdentity};
use crate::migration::{next_state, DataFdMode, DataFile, Direction, MigCore, MigState, Transfer};

use super::Device;

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
