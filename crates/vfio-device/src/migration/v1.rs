//! The deprecated v1 migration region (Linux v5.8–v6.0 `include/uapi/linux/vfio.h`,
//! `struct vfio_device_migration_info`), as QEMU 5.2–7.2's `hw/vfio/migration.c` drives it
//! (`vfio_migration_set_state`, `vfio_save_setup`, `vfio_save_iterate`,
//! `vfio_save_complete_precopy`, `vfio_load_state`). Legacy: QEMU ≥ 8.0 and kernels ≥ 6.1 use
//! v2; this face exists so QEMU 7.2 (`x-enable-migration=on`) can migrate the device.
//!
//! The region is device-specific index 9 with a `TYPE` capability (type
//! `VFIO_REGION_TYPE_MIGRATION_DEPRECATED`, subtype `VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED`),
//! flags `READ|WRITE|CAPS`, no mmap. Layout:
//!
//! | Offset | Field | Access |
//! |---|---|---|
//! | 0 | `device_state` u32 | RW, 4 bytes |
//! | 4 | `reserved` u32 | reads 0, writes ignored |
//! | 8 | `pending_bytes` u64 | RO |
//! | 16 | `data_offset` u64 | RO; reading it prepares a chunk when saving |
//! | 24 | `data_size` u64 | RO when saving; a write when resuming consumes a chunk |
//! | [`DATA_OFFSET`] … +[`DATA_SIZE`] | data section | RW, any size and alignment |
//!
//! Header fields are accessed whole (QEMU's `vfio_mig_read`/`vfio_mig_write` use the field's
//! size); any other header access, a write to a read-only field, or an access between the
//! header and the data section or past the region is `EINVAL`.
//!
//! `device_state` bits: `_RUNNING` 1, `_SAVING` 2, `_RESUMING` 4; bits 3–31 read 0 and are
//! ignored on write (QEMU read-modify-writes them). The values map onto the one state machine:
//! 001 RUNNING, 011 PRE_COPY, 010 STOP_COPY, 000 STOP, 100 RESUMING; a SET walks the v2 arcs,
//! so 011→010 goes through PRE_COPY_P2P and 100→001 checks and applies the stream on the way
//! through STOP. 101, 110 (the error state) and 111 are `EINVAL` with the state unchanged; a
//! refused stream on 100→001 is `EINVAL` with the state still 100, so QEMU never reads the
//! error state (on which it aborts). A v2 RUNNING_P2P reads as 000 and PRE_COPY_P2P as 010.
//!
//! Saving, per chunk: `pending_bytes` (no side effect when no chunk is out), `data_offset`
//! (moves up to [`DATA_SIZE`] bytes of the stream into the data section), `data_size`, the
//! data, then `pending_bytes` again, which acknowledges the chunk. In pre-copy the pending
//! bytes drop to 0 when the pre-copy frame is out; stop-and-copy adds the final frame.
//! Resuming, per chunk: `data_offset`, the data, then a `data_size` write, which appends that
//! many bytes of the data section to the stream.

use vfio_bindings::bindings::vfio::{
    vfio_device_migration_info, VFIO_DEVICE_STATE_V1_RESUMING, VFIO_DEVICE_STATE_V1_RUNNING,
    VFIO_DEVICE_STATE_V1_SAVING,
};

use std::mem::offset_of;

use crate::error::Error;
use crate::migration::MigState;

/// The region index (`VFIO_PCI_NUM_REGIONS`: the first device-specific index).
pub const INDEX: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_NUM_REGIONS;
/// Where the data section starts (page aligned).
pub const DATA_OFFSET: u64 = 0x1000;
/// Bytes of the data section: the largest chunk.
pub const DATA_SIZE: u64 = 256 << 10;
/// The region size.
pub const REGION_SIZE: u64 = DATA_OFFSET + DATA_SIZE;

pub(crate) const STATE: u64 = offset_of!(vfio_device_migration_info, device_state) as u64;
pub(crate) const RESERVED: u64 = offset_of!(vfio_device_migration_info, reserved) as u64;
pub(crate) const PENDING: u64 = offset_of!(vfio_device_migration_info, pending_bytes) as u64;
pub(crate) const OFFSET: u64 = offset_of!(vfio_device_migration_info, data_offset) as u64;
pub(crate) const SIZE: u64 = offset_of!(vfio_device_migration_info, data_size) as u64;
pub(crate) const HEADER: u64 = std::mem::size_of::<vfio_device_migration_info>() as u64;

/// The data section and the chunk handshake.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    area: Vec<u8>,
    /// Saving: bytes of the chunk handed out and not yet acknowledged.
    pub(crate) out: Option<usize>,
}

impl Chunk {
    pub(crate) fn area(&mut self) -> &mut Vec<u8> {
        if self.area.is_empty() {
            self.area = vec![0u8; usize::try_from(DATA_SIZE).unwrap_or(0)];
        }
        &mut self.area
    }
}

/// The v1 `device_state` value of a state.
#[must_use]
pub fn bits_of(s: MigState) -> u32 {
    match s {
        MigState::Running => VFIO_DEVICE_STATE_V1_RUNNING,
        MigState::PreCopy => VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING,
        MigState::StopCopy | MigState::PreCopyP2p => VFIO_DEVICE_STATE_V1_SAVING,
        MigState::Stop | MigState::RunningP2p => 0,
        MigState::Resuming => VFIO_DEVICE_STATE_V1_RESUMING,
        MigState::Error => VFIO_DEVICE_STATE_V1_SAVING | VFIO_DEVICE_STATE_V1_RESUMING,
    }
}

/// The state a written `device_state` asks for (`None`: an invalid value).
#[must_use]
pub fn state_of(bits: u32) -> Option<MigState> {
    const R: u32 = VFIO_DEVICE_STATE_V1_RUNNING;
    const S: u32 = VFIO_DEVICE_STATE_V1_SAVING;
    const M: u32 = VFIO_DEVICE_STATE_V1_RESUMING;
    match bits & (R | S | M) {
        0 => Some(MigState::Stop),
        R => Some(MigState::Running),
        S => Some(MigState::StopCopy),
        x if x == R | S => Some(MigState::PreCopy),
        M => Some(MigState::Resuming),
        _ => None,
    }
}

pub(crate) fn bad(reason: &'static str) -> Error {
    Error::Migration { reason }
}

pub(crate) fn saving(s: MigState) -> bool {
    matches!(
        s,
        MigState::PreCopy | MigState::PreCopyP2p | MigState::StopCopy
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_uapi_struct() {
        assert_eq!(
            (STATE, RESERVED, PENDING, OFFSET, SIZE, HEADER),
            (0, 4, 8, 16, 24, 32)
        );
    }

    #[test]
    fn state_bits_map_both_ways() {
        for (bits, s) in [
            (0, MigState::Stop),
            (1, MigState::Running),
            (2, MigState::StopCopy),
            (3, MigState::PreCopy),
            (4, MigState::Resuming),
        ] {
            assert_eq!(state_of(bits), Some(s));
            assert_eq!(state_of(bits | 0xf0), Some(s), "reserved bits are ignored");
            assert_eq!(bits_of(s), bits);
        }
        for bits in [5, 6, 7] {
            assert_eq!(state_of(bits), None);
        }
    }
}
