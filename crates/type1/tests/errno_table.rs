//! Every error variant pinned to the kernel errno.

use libc::*;
use type1::Error;

#[test]
fn every_variant_maps_to_the_kernel_errno() {
    let pg = io_pgtable::Error::NoMemory;
    let table: Vec<(Error, i32)> = vec![
        (Error::BadAddress { addr: 0 }, EFAULT),
        (Error::ArgszTooSmall { argsz: 0, minsz: 1 }, EINVAL),
        (Error::UnknownFlags { flags: 8 }, EINVAL),
        (Error::InvalidFlags { flags: 3 }, EINVAL),
        (Error::ZeroSize, EINVAL),
        (Error::Overflow { start: 0, size: 0 }, EOVERFLOW),
        (
            Error::Unaligned {
                what: "iova",
                value: 1,
                align: 4096,
            },
            EINVAL,
        ),
        (Error::InvalidProtection, EINVAL),
        (Error::NoMapping { iova: 0 }, ENOENT),
        (Error::VaddrUpdateMismatch { iova: 0 }, EINVAL),
        (Error::Exists { iova: 0, size: 0 }, EEXIST),
        (Error::NoSlots { limit: 1 }, ENOSPC),
        (Error::OutsideIovaRange { iova: 0, size: 0 }, EINVAL),
        (Error::Fault { vaddr: 0 }, EFAULT),
        (
            Error::LockedMemoryLimit {
                locked: 0,
                more: 1,
                limit: 0,
            },
            ENOMEM,
        ),
        (Error::NoMemory, ENOMEM),
        (Error::Bisects { iova: 0 }, EINVAL),
        (Error::VaddrAlreadyInvalid { iova: 0 }, EINVAL),
        (Error::VaddrWithEmulatedGroups, EBUSY),
        (Error::VaddrInvalid, EBUSY),
        (Error::NotTty { request: 0 }, ENOTTY),
        (Error::NoIommu, EINVAL),
        (Error::SetIommuState, EINVAL),
        (Error::NoDriver { ty: 6 }, ENODEV),
        (Error::GroupAttached { group: 1 }, EINVAL),
        (Error::GroupNotAttached { group: 1 }, EINVAL),
        (Error::ApertureConflict { start: 0, end: 0 }, EINVAL),
        (Error::ReservedConflict { start: 0, end: 0 }, EINVAL),
        (Error::NoIovaLeft, EINVAL),
        (Error::UnsafeInterrupts { group: 1 }, EPERM),
        (
            Error::InvalidDomain {
                group: 1,
                source: io_pgtable::Error::EmptyRange,
            },
            EINVAL,
        ),
        (Error::InvalidReservedRegion { start: 0, len: 0 }, EINVAL),
        (Error::Domain(pg), ENOMEM),
        (Error::InvalidBitmap { reason: "x" }, EINVAL),
        (Error::NotTracking, EINVAL),
    ];
    for (e, errno) in table {
        assert_eq!(e.errno(), errno, "{e:?}");
        assert!(!e.to_string().is_empty());
    }
}
