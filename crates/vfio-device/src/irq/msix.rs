//! The function's MSI-X table and pending-bit array, as the host side programs them.
//!
//! Each structure lives either in a memory-backed BAR (the device file, so whoever maps the BAR
//! sees it) or, in an MMIO BAR, in device memory here. As the kernel's MSI layer does for a
//! real function (`msix_mask_all`, `pci_msix_write_vector_ctrl`), every entry is masked while
//! MSI-X is off, and an entry is unmasked while a trigger is bound to its vector. A vector that
//! fires while its entry is masked sets its pending bit instead of signalling; the bit is
//! delivered and cleared once the entry is unmasked again ([`MsixTable::take_deliverable`]).
//! Offsets are bytes inside the structure; vectors past the table are ignored.

use std::sync::Arc;

use crate::memfd::SharedMemory;
use crate::pci::regs::{MSIX_ENTRY_CTRL_MASKBIT, MSIX_ENTRY_SIZE, MSIX_ENTRY_VECTOR_CTRL};

/// Where one structure's bytes are.
#[derive(Debug)]
pub(crate) enum Store {
    /// In a memory BAR mapping, at this offset.
    Shared(Arc<SharedMemory>, u64),
    /// Device-private bytes (MMIO BAR).
    Local(Vec<u8>),
}

impl Store {
    fn read(&self, off: u64, buf: &mut [u8]) {
        match self {
            Store::Shared(m, base) => {
                if !base.checked_add(off).is_some_and(|a| m.read(a, buf)) {
                    buf.fill(0);
                }
            }
            Store::Local(v) => {
                let s = usize::try_from(off).unwrap_or(usize::MAX);
                match v.get(s..s.saturating_add(buf.len())) {
                    Some(src) => buf.copy_from_slice(src),
                    None => buf.fill(0),
                }
            }
        }
    }

    fn write(&mut self, off: u64, data: &[u8]) {
        match self {
            Store::Shared(m, base) => {
                if let Some(a) = base.checked_add(off) {
                    m.write(a, data);
                }
            }
            Store::Local(v) => {
                let s = usize::try_from(off).unwrap_or(usize::MAX);
                if let Some(dst) = v.get_mut(s..s.saturating_add(data.len())) {
                    dst.copy_from_slice(data);
                }
            }
        }
    }

    fn read_u32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn write_u32(&mut self, off: u64, v: u32) {
        self.write(off, &v.to_le_bytes());
    }
}

/// The MSI-X table and PBA of a function.
#[derive(Debug)]
pub(crate) struct MsixTable {
    table: Store,
    pba: Store,
    size: u16,
}

impl MsixTable {
    pub(crate) fn new(table: Store, pba: Store, size: u16) -> Self {
        let mut t = MsixTable { table, pba, size };
        t.mask_all();
        t
    }

    fn ctrl_off(v: u16) -> u64 {
        u64::from(v) * MSIX_ENTRY_SIZE + MSIX_ENTRY_VECTOR_CTRL
    }

    /// Masks every entry and clears every pending bit (MSI-X off, or reset).
    pub(crate) fn mask_all(&mut self) {
        for v in 0..self.size {
            self.set_masked(v, true);
        }
        let words = u64::from(self.size).div_ceil(64);
        for w in 0..words {
            self.pba.write(w * 8, &[0; 8]);
        }
    }

    /// True if entry `v` is masked.
    pub(crate) fn masked(&self, v: u16) -> bool {
        self.table.read_u32(Self::ctrl_off(v)) & MSIX_ENTRY_CTRL_MASKBIT != 0
    }

    /// Sets or clears entry `v`'s mask bit.
    pub(crate) fn set_masked(&mut self, v: u16, masked: bool) {
        if v >= self.size {
            return;
        }
        let off = Self::ctrl_off(v);
        let c = self.table.read_u32(off);
        let c = if masked {
            c | MSIX_ENTRY_CTRL_MASKBIT
        } else {
            c & !MSIX_ENTRY_CTRL_MASKBIT
        };
        self.table.write_u32(off, c);
    }

    fn pba_bit(&self, v: u16) -> (u64, u8) {
        (u64::from(v / 8), 1 << (v % 8))
    }

    /// Sets `v`'s pending bit.
    pub(crate) fn set_pending(&mut self, v: u16) {
        if v >= self.size {
            return;
        }
        let (off, bit) = self.pba_bit(v);
        let mut b = [0u8];
        self.pba.read(off, &mut b);
        self.pba.write(off, &[b[0] | bit]);
    }

    /// True if `v`'s pending bit is set.
    pub(crate) fn pending(&self, v: u16) -> bool {
        let (off, bit) = self.pba_bit(v);
        let mut b = [0u8];
        self.pba.read(off, &mut b);
        b[0] & bit != 0
    }

    /// Clears the pending bit of every unmasked vector and returns those vectors.
    pub(crate) fn take_deliverable(&mut self) -> Vec<u16> {
        let mut out = Vec::new();
        for v in 0..self.size {
            if self.pending(v) && !self.masked(v) {
                let (off, bit) = self.pba_bit(v);
                let mut b = [0u8];
                self.pba.read(off, &mut b);
                self.pba.write(off, &[b[0] & !bit]);
                out.push(v);
            }
        }
        out
    }

    /// Reads PBA bytes (for a PBA in an MMIO BAR).
    pub(crate) fn read_pba(&self, off: u64, buf: &mut [u8]) {
        self.pba.read(off, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(n: u16) -> MsixTable {
        MsixTable::new(
            Store::Local(vec![0; usize::from(n) * 16]),
            Store::Local(vec![0; usize::from(n).div_ceil(64) * 8]),
            n,
        )
    }

    #[test]
    fn entries_start_masked() {
        let t = local(8);
        assert!(t.masked(0) && t.masked(7));
    }

    #[test]
    fn pending_is_delivered_once_unmasked() {
        let mut t = local(8);
        t.set_pending(3);
        assert!(t.take_deliverable().is_empty());
        t.set_masked(3, false);
        assert_eq!(t.take_deliverable(), vec![3]);
        assert!(!t.pending(3));
        assert!(t.take_deliverable().is_empty());
    }
}
