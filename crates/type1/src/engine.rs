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

use io_pgtable::{Access, Domain, Fault, Iova, PhysAddr};

use crate::mm::Mm;
use crate::release::Token;

/// Why a DMA failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmaError {
    /// The IOMMU refused the access.
    #[error("IOMMU fault")]
    Fault(#[source] Fault),
    /// Nothing backs the physical address.
    #[error("no memory at physical address {pa}")]
    Memory {
        /// The address.
        pa: PhysAddr,
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
    pub fn translate(&self, iova: Iova, access: Access) -> Result<PhysAddr, DmaError> {
        self.check()?;
        self.domain
            .translate(iova, access)
            .map(|t| t.pa)
            .map_err(DmaError::Fault)
    }

    /// Writes `data` to guest memory at `iova`.
    ///
    /// # Errors
    /// The first failing chunk's error; earlier chunks are written.
    pub fn write(&self, iova: Iova, data: &[u8]) -> Result<(), DmaError> {
        let mut done = 0usize;
        while done < data.len() {
            let _t = self.domain.transaction();
            self.check()?;
            let at = iova.wrapping_add(done as u64);
            let t = self
                .domain
                .translate(at, Access::Write)
                .map_err(DmaError::Fault)?;
            let n = crate::to_usize(t.len.min((data.len() - done) as u64));
            self.mm
                .space()
                .write_phys(t.pa.raw(), &data[done..done + n])
                .map_err(|pa| DmaError::Memory { pa: PhysAddr(pa) })?;
            // Re-validate after the store: re-marks the leaf if a harvest cleaned it meanwhile.
            self.domain
                .translate(at, Access::Write)
                .map_err(DmaError::Fault)?;
            done += n;
        }
        Ok(())
    }

    /// Writes each `(iova, data)` of `writes` in one device transaction: every write is
    /// translated (which marks its leaves dirty), the ones that translate are stored together
    /// ([`crate::mm::AddressSpace::write_phys_vectored`]: one system call for process memory),
    /// then translated again, as [`DmaEngine::write`] does for one. A write whose translation
    /// fails stores nothing; the others go on. Later writes to the same bytes win.
    ///
    /// Returns one result per write, in order.
    pub fn write_batch(&self, writes: &[(Iova, &[u8])]) -> Vec<Result<(), DmaError>> {
        let mut out = vec![Ok(()); writes.len()];
        let _t = self.domain.transaction();
        if let Err(e) = self.check() {
            out.fill(Err(e));
            return out;
        }
        // Per translated chunk: (pa, bytes) to store, and (owning write, iova).
        let mut stores: Vec<(u64, &[u8])> = Vec::with_capacity(writes.len());
        let mut owners: Vec<(usize, Iova)> = Vec::with_capacity(writes.len());
        for (k, &(iova, data)) in writes.iter().enumerate() {
            let first = stores.len();
            let mut done = 0usize;
            while done < data.len() {
                let at = iova.wrapping_add(done as u64);
                match self.domain.translate(at, Access::Write) {
                    Ok(t) => {
                        let n = crate::to_usize(t.len.min((data.len() - done) as u64));
                        stores.push((t.pa.raw(), &data[done..done + n]));
                        owners.push((k, at));
                        done += n;
                    }
                    Err(f) => {
                        stores.truncate(first);
                        owners.truncate(first);
                        out[k] = Err(DmaError::Fault(f));
                        break;
                    }
                }
            }
        }
        let mut landed = owners.len();
        if let Err((i, pa)) = self.mm.space().write_phys_vectored(&stores) {
            landed = i;
            for &(k, _) in &owners[i..] {
                out[k] = Err(DmaError::Memory { pa: PhysAddr(pa) });
            }
        }
        // Re-validate after the store: re-marks the leaves a harvest cleaned meanwhile.
        for &(k, at) in &owners[..landed] {
            if let Err(f) = self.domain.translate(at, Access::Write) {
                out[k] = Err(DmaError::Fault(f));
            }
        }
        out
    }

    /// Reads guest memory at `iova` into `buf`.
    ///
    /// # Errors
    /// The first failing chunk's error.
    pub fn read(&self, iova: Iova, buf: &mut [u8]) -> Result<(), DmaError> {
        let mut done = 0usize;
        while done < buf.len() {
            let _t = self.domain.transaction();
            self.check()?;
            let at = iova.wrapping_add(done as u64);
            let t = self
                .domain
                .translate(at, Access::Read)
                .map_err(DmaError::Fault)?;
            let n = crate::to_usize(t.len.min((buf.len() - done) as u64));
            self.mm
                .space()
                .read_phys(t.pa.raw(), &mut buf[done..done + n])
                .map_err(|pa| DmaError::Memory { pa: PhysAddr(pa) })?;
            done += n;
        }
        Ok(())
    }
}
