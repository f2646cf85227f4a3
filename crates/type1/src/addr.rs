//! The three address spaces of the typed API, one type each, so an iova cannot be passed where a
//! user address is expected (the `iova`/`vaddr` swap of a `struct vfio_iommu_type1_dma_map`).
//!
//! - [`Iova`]: what a device puts on the bus, the input of the IOMMU page table (re-exported
//!   from `io_pgtable`).
//! - [`Vaddr`]: a host virtual address of the process that owns the mappings (`vaddr` of MAP_DMA,
//!   `dma->vaddr` in the kernel).
//! - [`PhysAddr`]: the output of the page table, where a translated access lands (re-exported
//!   from `io_pgtable`). With [`crate::mm::ProcessMemory`] it is numerically the host virtual
//!   address of the pinned page (this process stands in for physical memory, so a simulated
//!   device writes the real bytes); with [`crate::mm::FakeMemory`] it is a synthetic physical
//!   address. Either way it is what the IOMMU maps to and a device reaches, never a user address
//!   to copy from.
//!
//! The ioctl layer wraps the raw `__u64` fields into these types at the boundary; every `u64` is a
//! valid address, so the wrapping never fails, and the kernel's checks (alignment, wrap past
//! `u64::MAX`, `TASK_SIZE`) stay in the typed operations, in the kernel's order, with the same
//! errno. Ranges are `(start, length in bytes)` with an exclusive end; an end that would wrap is
//! an error ([`Vaddr::checked_add`]), never clamped.

pub use io_pgtable::{Iova, PhysAddr};

io_pgtable::address_type!(
    /// A host virtual address in the mappings' owner (MAP_DMA's `vaddr`).
    Vaddr
);

impl Vaddr {
    /// The address of `ptr` in this process.
    #[inline]
    #[must_use]
    pub fn of_ptr<T>(ptr: *const T) -> Self {
        Self(ptr as usize as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vaddr_checked_add_refuses_wrap() {
        assert_eq!(Vaddr(u64::MAX).checked_add(1), None);
        assert_eq!(Vaddr(1).checked_add(2), Some(Vaddr(3)));
    }

    #[test]
    fn vaddr_formats_like_the_page_table_addresses() {
        assert_eq!(Vaddr(0x1000).to_string(), "0x0000000000001000");
        assert_eq!(format!("{:?}", Vaddr(0x20)), "Vaddr(0x20)");
        assert!(Vaddr(0x2000).is_aligned(0x1000) && !Vaddr(0x2001).is_aligned(0x1000));
    }
}
