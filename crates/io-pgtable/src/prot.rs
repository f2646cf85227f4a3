//! IOMMU protection flags (`IOMMU_READ`, `IOMMU_WRITE`, ... in `include/linux/iommu.h`) and the
//! device-side access kinds.

bitflags::bitflags! {
    /// Protection of a mapping, with the kernel's bit values.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Prot: u32 {
        /// The device may read.
        const READ = 1 << 0;
        /// The device may write.
        const WRITE = 1 << 1;
        /// Cacheable, coherent memory (Normal WB, inner shareable).
        const CACHE = 1 << 2;
        /// Not executable.
        const NOEXEC = 1 << 3;
        /// Device memory (nGnRE).
        const MMIO = 1 << 4;
        /// Privileged only (no AP_UNPRIV on stage 1).
        const PRIV = 1 << 5;
    }
}

/// The kind of a device access through [`crate::Domain::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A DMA read (device reads memory).
    Read,
    /// A DMA write (device writes memory); marks hardware dirty state.
    Write,
}
