//! The container fd's ioctls without a backend (`vfio_fops_unl_ioctl`, v6.18): requests for the
//! backend fail with `EINVAL` before their argument is read, whatever is wrong with the argument.
//! (The operations take the container's lock once and ask for the backend again only on failure;
//! these tests pin the order that leaves.)

use std::sync::Arc;

use libc::EINVAL;
use type1::mm::{FakeMemory, LockCapability, Mm};
use type1::uapi;
use type1::{Container, ContainerConfig, Error, GroupSpec, UserBuffer};

const ARG: u64 = 0x10_0000;

fn container_without_backend() -> Container {
    let c = Container::new(
        ContainerConfig::default(),
        Arc::new(Mm::new(
            Box::new(FakeMemory::new()),
            None,
            LockCapability::Limited,
        )),
    );
    c.set_group(GroupSpec::iommu(1)).unwrap();
    c
}

#[test]
fn backend_requests_without_a_backend_are_einval_even_with_an_unreadable_argument() {
    let c = container_without_backend();
    let mut empty = UserBuffer::new(ARG, 0);
    for req in [
        uapi::VFIO_IOMMU_GET_INFO,
        uapi::VFIO_IOMMU_MAP_DMA,
        uapi::VFIO_IOMMU_UNMAP_DMA,
        uapi::VFIO_IOMMU_DIRTY_PAGES,
    ] {
        let e = c.ioctl(req, ARG, &mut empty).unwrap_err();
        assert_eq!(e, Error::NoIommu, "request {req:#x}");
        assert_eq!(e.errno(), EINVAL);
    }
}

#[test]
fn backend_requests_without_a_backend_are_einval_even_with_a_short_argsz() {
    let c = container_without_backend();
    let mut u = UserBuffer::new(ARG, 64);
    u.bytes[0..4].copy_from_slice(&4u32.to_ne_bytes());
    for req in [uapi::VFIO_IOMMU_MAP_DMA, uapi::VFIO_IOMMU_UNMAP_DMA] {
        assert_eq!(c.ioctl(req, ARG, &mut u), Err(Error::NoIommu), "{req:#x}");
    }
    // An unknown request without a backend is EINVAL too (not ENOTTY).
    assert_eq!(c.ioctl(0x1234, ARG, &mut u), Err(Error::NoIommu));
}
