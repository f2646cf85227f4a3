//! Errors of the device layer and their kernel errno.
//!
//! Each variant is one failure of vfio-pci's device-fd paths (v6.18
//! `drivers/vfio/pci/vfio_pci_core.c`, `vfio_pci_intrs.c`, `vfio_pci_config.c`,
//! `vfio_pci_rdwr.c`, `drivers/vfio/vfio_main.c`). [`Error::errno`] is the one exhaustive mapping
//! to the errno the kernel leaves in `errno`; the table test below pins every variant.

/// A failure of a device operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The function description is inconsistent (device creation only).
    #[error("invalid function description: {reason}")]
    InvalidSpec {
        /// What is wrong.
        reason: &'static str,
    },
    /// `argsz` is below the request's `minsz`.
    #[error("argsz {argsz} is below the minimum {minsz}")]
    ArgszTooSmall {
        /// The caller's argsz.
        argsz: u32,
        /// The minimum.
        minsz: u32,
    },
    /// `copy_from_user`/`copy_to_user` failed.
    #[error("bad user address {addr:#x}")]
    BadAddress {
        /// The first byte that could not be reached.
        addr: u64,
    },
    /// Flag bits the request does not define.
    #[error("unknown flags {flags:#x}")]
    UnknownFlags {
        /// The flags given.
        flags: u32,
    },
    /// A defined flag combination the request refuses (GET|SET without PROBE, hot reset
    /// flags).
    #[error("invalid flag combination {flags:#x}")]
    InvalidFlags {
        /// The flags given.
        flags: u32,
    },
    /// A region index the device does not have (VGA on a non-VGA function included).
    #[error("no region {index}")]
    NoRegion {
        /// The index.
        index: u32,
    },
    /// An IRQ index the device does not have (ERR without PCI Express included).
    #[error("no IRQ index {index}")]
    NoIrqIndex {
        /// The index.
        index: u32,
    },
    /// `start`/`count` outside the index's vectors, or `count` wrapping.
    #[error("vectors {start}+{count} outside the {max} of the index")]
    IrqRange {
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
        /// Vectors of the index.
        max: u32,
    },
    /// `SET_IRQS` data type not exactly one of NONE, BOOL, EVENTFD.
    #[error("SET_IRQS data type {flags:#x} is not exactly one of NONE, BOOL, EVENTFD")]
    IrqDataType {
        /// The flags given.
        flags: u32,
    },
    /// `SET_IRQS` data shorter than `count` elements.
    #[error("SET_IRQS argsz {argsz} too small for {count} elements")]
    IrqDataShort {
        /// The argsz.
        argsz: u32,
        /// Elements needed.
        count: u32,
    },
    /// No handler for this index and action (none or several action bits, MSI masking,
    /// EVENTFD with MASK, ERR without PCI Express).
    #[error("no handler for SET_IRQS flags {flags:#x} on index {index}")]
    IrqNoHandler {
        /// The index.
        index: u32,
        /// The flags.
        flags: u32,
    },
    /// A handler's precondition failed (wrong type enabled, bad start/count, ...).
    #[error("SET_IRQS refused: {reason}")]
    IrqState {
        /// Which precondition.
        reason: &'static str,
    },
    /// The fd is not open.
    #[error("fd {fd} is not open")]
    BadFd {
        /// The fd.
        fd: i32,
    },
    /// The fd is open but not an eventfd.
    #[error("fd {fd} is not an eventfd")]
    NotEventfd {
        /// The fd.
        fd: i32,
    },
    /// The fd is open but not a VFIO group.
    #[error("fd {fd} is not a VFIO group")]
    NotGroup {
        /// The fd.
        fd: i32,
    },
    /// The device cannot reset (`reset_works` false).
    #[error("the device has no reset")]
    NoReset,
    /// Hot reset: the device's own group was not among the fds, or the count is wrong.
    #[error("hot reset: {reason}")]
    HotReset {
        /// Which check.
        reason: &'static str,
    },
    /// Hot-reset info: more devices are affected than the buffer holds.
    #[error("hot reset affects {count} devices, more than the buffer holds")]
    HotResetNoSpace {
        /// Devices affected.
        count: u32,
    },
    /// A config access outside config space (`vfio_config_do_rw`: `EFAULT`).
    #[error("config access {pos:#x}+{count} outside {size} bytes")]
    ConfigRange {
        /// Offset.
        pos: u64,
        /// Bytes.
        count: u64,
        /// Config size.
        size: u64,
    },
    /// A BAR or ROM access at or past the region's end, or to an unimplemented BAR.
    #[error("access at {pos:#x} outside region {index}")]
    RegionRange {
        /// Region index.
        index: u32,
        /// Offset in the region.
        pos: u64,
    },
    /// A write to a read-only region (the ROM).
    #[error("region {index} is read-only")]
    ReadOnly {
        /// Region index.
        index: u32,
    },
    /// A memory-BAR access while memory decode is off (`vfio_pci_iowrite*`: `EIO`).
    #[error("memory decode is disabled")]
    MemoryDisabled,
    /// An `mmap` the region does not allow (`vfio_pci_core_mmap`).
    #[error("mmap refused: {reason}")]
    Mmap {
        /// Which check.
        reason: &'static str,
    },
    /// A `VFIO_DEVICE_FEATURE` the device does not implement.
    #[error("feature {feature} not supported")]
    NoFeature {
        /// The feature index.
        feature: u32,
    },
    /// An ioctl request the device fd does not know.
    #[error("unknown ioctl {request:#x}")]
    NotTty {
        /// The request number.
        request: u64,
    },
    /// A migration state change the device refuses: an invalid or unsupported target, an arc
    /// `vfio_mig_get_next_state` has no path for, any change from ERROR, or a migration
    /// access in the wrong state (`EINVAL`).
    #[error("migration: {reason}")]
    Migration {
        /// Which rule.
        reason: &'static str,
    },
    /// A device state stream refused on RESUMING → STOP: truncated, corrupted, foreign or
    /// inconsistent (`EINVAL`, as mtty's load path).
    #[error("device state stream rejected: {reason}")]
    BadStream {
        /// What is wrong with it.
        reason: String,
    },
    /// A migration data transfer that has ended (`ENODEV`: `migf->disabled`).
    #[error("the migration data transfer has ended")]
    TransferEnded,
    /// A PRE_COPY read at a temporary end of data (`ENOMSG`).
    #[error("no pre-copy data available now")]
    NoData,
    /// A positional read or write on a migration data fd (`ESPIPE`).
    #[error("migration data fds are streams")]
    NotSeekable,
    /// A RESUMING write past the most the device accepts (`ENOMEM`).
    #[error("the device state stream exceeds {max} bytes")]
    StreamTooBig {
        /// The limit.
        max: u64,
    },
    /// DMA logging START with more ranges than `LOG_MAX_RANGES` (`E2BIG`).
    #[error("{count} logging ranges, more than {max}")]
    TooManyRanges {
        /// Ranges given.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// A DMA logging range whose end wraps or passes `ULONG_MAX` (`EOVERFLOW`).
    #[error("range {iova:#x}+{length:#x} overflows")]
    RangeOverflow {
        /// Start.
        iova: u64,
        /// Length.
        length: u64,
    },
    /// DMA logging: a range or page size the kernel refuses, logging already started or not
    /// started (`EINVAL`).
    #[error("DMA logging: {reason}")]
    Logging {
        /// Which rule.
        reason: &'static str,
    },
    /// An operating-system call failed (memfd, mmap, eventfd dup, thread creation).
    #[error("{op} failed with errno {errno}")]
    Os {
        /// What was attempted.
        op: &'static str,
        /// Its errno.
        errno: i32,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kernel errno for this error (positive, as it lands in `errno`).
    #[must_use]
    pub fn errno(&self) -> i32 {
        use libc::{
            E2BIG, EBADF, EFAULT, EINVAL, EIO, ENODEV, ENOMEM, ENOMSG, ENOSPC, ENOTTY, EOVERFLOW,
            ESPIPE,
        };
        match self {
            Error::InvalidSpec { .. }
            | Error::ArgszTooSmall { .. }
            | Error::UnknownFlags { .. }
            | Error::InvalidFlags { .. }
            | Error::NoRegion { .. }
            | Error::NoIrqIndex { .. }
            | Error::IrqRange { .. }
            | Error::IrqDataType { .. }
            | Error::IrqDataShort { .. }
            | Error::IrqState { .. }
            | Error::NotEventfd { .. }
            | Error::NotGroup { .. }
            | Error::NoReset
            | Error::HotReset { .. }
            | Error::RegionRange { .. }
            | Error::ReadOnly { .. }
            | Error::Mmap { .. }
            | Error::Migration { .. }
            | Error::BadStream { .. }
            | Error::Logging { .. } => EINVAL,
            Error::TransferEnded => ENODEV,
            Error::NoData => ENOMSG,
            Error::NotSeekable => ESPIPE,
            Error::StreamTooBig { .. } => ENOMEM,
            Error::TooManyRanges { .. } => E2BIG,
            Error::RangeOverflow { .. } => EOVERFLOW,
            Error::BadAddress { .. } | Error::ConfigRange { .. } => EFAULT,
            Error::IrqNoHandler { .. } | Error::NoFeature { .. } | Error::NotTty { .. } => ENOTTY,
            Error::BadFd { .. } => EBADF,
            Error::HotResetNoSpace { .. } => ENOSPC,
            Error::MemoryDisabled => EIO,
            Error::Os { errno, .. } => *errno,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{
        E2BIG, EBADF, EFAULT, EINVAL, EIO, ENODEV, ENOMEM, ENOMSG, ENOSPC, ENOTTY, EOVERFLOW,
        ESPIPE,
    };

    #[test]
    fn every_variant_maps_to_the_kernel_errno() {
        let table = [
            (Error::InvalidSpec { reason: "x" }, EINVAL),
            (Error::ArgszTooSmall { argsz: 1, minsz: 2 }, EINVAL),
            (Error::BadAddress { addr: 0 }, EFAULT),
            (Error::UnknownFlags { flags: 1 }, EINVAL),
            (Error::InvalidFlags { flags: 1 }, EINVAL),
            (Error::NoRegion { index: 8 }, EINVAL),
            (Error::NoIrqIndex { index: 5 }, EINVAL),
            (
                Error::IrqRange {
                    start: 0,
                    count: 9,
                    max: 8,
                },
                EINVAL,
            ),
            (Error::IrqDataType { flags: 3 }, EINVAL),
            (
                Error::IrqDataShort {
                    argsz: 24,
                    count: 2,
                },
                EINVAL,
            ),
            (Error::IrqNoHandler { index: 1, flags: 9 }, ENOTTY),
            (Error::IrqState { reason: "x" }, EINVAL),
            (Error::BadFd { fd: 99 }, EBADF),
            (Error::NotEventfd { fd: 3 }, EINVAL),
            (Error::NotGroup { fd: 3 }, EINVAL),
            (Error::NoReset, EINVAL),
            (Error::HotReset { reason: "x" }, EINVAL),
            (Error::HotResetNoSpace { count: 1 }, ENOSPC),
            (
                Error::ConfigRange {
                    pos: 256,
                    count: 1,
                    size: 256,
                },
                EFAULT,
            ),
            (Error::RegionRange { index: 0, pos: 0 }, EINVAL),
            (Error::ReadOnly { index: 6 }, EINVAL),
            (Error::MemoryDisabled, EIO),
            (Error::Mmap { reason: "x" }, EINVAL),
            (Error::NoFeature { feature: 0 }, ENOTTY),
            (Error::NotTty { request: 0 }, ENOTTY),
            (Error::Migration { reason: "x" }, EINVAL),
            (Error::BadStream { reason: "x".into() }, EINVAL),
            (Error::TransferEnded, ENODEV),
            (Error::NoData, ENOMSG),
            (Error::NotSeekable, ESPIPE),
            (Error::StreamTooBig { max: 1 }, ENOMEM),
            (
                Error::TooManyRanges {
                    count: 257,
                    max: 256,
                },
                E2BIG,
            ),
            (
                Error::RangeOverflow {
                    iova: u64::MAX,
                    length: 1,
                },
                EOVERFLOW,
            ),
            (Error::Logging { reason: "x" }, EINVAL),
            (
                Error::Os {
                    op: "memfd_create",
                    errno: ENOMEM,
                },
                ENOMEM,
            ),
        ];
        for (e, errno) in table {
            assert_eq!(e.errno(), errno, "{e:?}");
        }
    }
}
