//! Every error variant pinned to the kernel errno (`arm_lpae_map_pages`, `__arm_lpae_map`,
//! `arm_lpae_read_and_clear_dirty`, `__iommu_map`; v6.18).

use io_pgtable::error::errno::*;
use io_pgtable::{Error, Iova, PhysAddr};

#[test]
fn every_variant_maps_to_the_kernel_errno() {
    let table = [
        (Error::InvalidConfig { reason: "x" }, EINVAL),
        (Error::InvalidPageSize { pgsize: 3 }, EINVAL),
        (
            Error::IovaOutOfRange {
                iova: Iova(0),
                ias: 48,
            },
            ERANGE,
        ),
        (
            Error::PhysOutOfRange {
                paddr: PhysAddr(0),
                oas: 48,
            },
            ERANGE,
        ),
        (Error::NoAccess, EINVAL),
        (Error::Exists { iova: Iova(0) }, EEXIST),
        (Error::NoMemory, ENOMEM),
        (
            Error::Unaligned {
                what: "iova",
                value: 1,
                align: 4096,
            },
            EINVAL,
        ),
        (Error::EmptyRange, EINVAL),
        (Error::Overflow { start: 0, len: 0 }, EOVERFLOW),
        (Error::Hole { iova: Iova(0) }, EINVAL),
        (
            Error::DirtyOutOfRange {
                iova: Iova(0),
                size: 0,
            },
            EINVAL,
        ),
        (Error::DirtyUnsupported, EINVAL),
    ];
    for (e, errno) in table {
        assert_eq!(e.errno(), errno, "{e:?}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        (ENOMEM, EEXIST, EINVAL, ERANGE, EOVERFLOW),
        (12, 17, 22, 34, 75)
    );
}
