//! A simulated IOMMU-backed device: a DMA engine that reads and writes guest memory through its
//! group's domain, as hardware would (IOTLB, page walk, permission faults, hardware dirty bits).
//!
//! A write is translated (which marks the leaf dirty), stored, then translated again: if a dirty
//! harvest cleaned the leaf between the first translation and the store, the second marks it
//! again, so the store is never missing from a later report. Once the group detaches, every
//! access fails, like a device whose IOMMU domain is gone.
//!
//! Each chunk (translation, store, re-translation) is one [`io_pgtable::Domain::transaction`]:
//! an unmap's invalidation, and a detach, wait for the chunks begun before them, so once UNMAP
//! returns no write lands in the unmapped memory (strict invalidation), as on hardware.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_pgtable::{Access, Domain, Fault, Iova};

use crate::mm::Mm;
use crate::type1::Token;

/// Why a DMA failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// The IOMMU refused the access.
    #[error("IOMMU fault")]
    Fault(#[source] Fault),
    /// Nothing backs the physical address.
    #[error("no memory at physical address {pa:#x}")]
    Memory {
        /// The address.
        pa: u64,
    },
    /// The device's group is no longer attached.
    #[error("the device's group is detached")]
    Detached,
}

/// A device doing DMA through an IOMMU domain.
#[derive(Debug, Clone)]
pub struct DmaEngine {
    domain: Arc<Domain<Token>>,
    attached: Arc<AtomicBool>,
    mm: Arc<Mm>,
}

impl DmaEngine {
    pub(crate) fn new(domain: Arc<Domain<Token>>, attached: Arc<AtomicBool>, mm: Arc<Mm>) -> Self {
        DmaEngine {
            domain,
            attached,
            mm,
        }
    }

    fn check(&self) -> Result<(), DmaError> {
        if self.attached.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(DmaError::Detached)
        }
    }

    /// Translates one address (what the device's IOMMU does for one transaction).
    ///
    /// # Errors
    /// [`DmaError::Fault`] or [`DmaError::Detached`].
    pub fn translate(&self, iova: u64, access: Access) -> Result<u64, DmaError> {
        self.check()?;
        self.domain
            .translate(Iova(iova), access)
            .map(|t| t.pa.raw())
            .map_err(DmaError::Fault)
    }

    /// Writes `data` to guest memory at `iova`.
    ///
    /// # Errors
    /// The first failing chunk's error; earlier chunks are written.
    pub fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        let mut done = 0usize;
        while done < data.len() {
            let _t = self.domain.transaction();
            self.check()?;
            let at = iova + done as u64;
            let t = self
                .domain
                .translate(Iova(at), Access::Write)
                .map_err(DmaError::Fault)?;
            let n = crate::to_usize(t.len.min((data.len() - done) as u64));
            self.mm
                .space()
                .write_phys(t.pa.raw(), &data[done..done + n])
                .map_err(|pa| DmaError::Memory { pa })?;
            // Re-validate after the store: re-marks the leaf if a harvest cleaned it meanwhile.
            self.domain
                .translate(Iova(at), Access::Write)
                .map_err(DmaError::Fault)?;
            done += n;
        }
        Ok(())
    }

    /// Reads guest memory at `iova` into `buf`.
    ///
    /// # Errors
    /// The first failing chunk's error.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let mut done = 0usize;
        while done < buf.len() {
            let _t = self.domain.transaction();
            self.check()?;
            let at = iova + done as u64;
            let t = self
                .domain
                .translate(Iova(at), Access::Read)
                .map_err(DmaError::Fault)?;
            let n = crate::to_usize(t.len.min((buf.len() - done) as u64));
            self.mm
                .space()
                .read_phys(t.pa.raw(), &mut buf[done..done + n])
                .map_err(|pa| DmaError::Memory { pa })?;
            done += n;
        }
        Ok(())
    }
}
