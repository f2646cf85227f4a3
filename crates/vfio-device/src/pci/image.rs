//! The bytes of a function's config space with their write and write-1-to-clear masks, as the
//! capability builder fills them in and config-space virtualisation reads and writes them
//! (vfio-pci's `vconfig` and `struct perm_bits`, v6.18 `drivers/vfio/pci/vfio_pci_config.c`).
//! Offsets are bytes from the start of config space; callers keep them in range.

/// Config bytes with their write masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigImage {
    pub(crate) bytes: Vec<u8>,
    pub(crate) wmask: Vec<u8>,
    pub(crate) w1c: Vec<u8>,
}

impl ConfigImage {
    pub(crate) fn new(size: usize) -> Self {
        ConfigImage {
            bytes: vec![0; size],
            wmask: vec![0; size],
            w1c: vec![0; size],
        }
    }

    pub(crate) fn set_u8(&mut self, at: usize, v: u8) {
        self.bytes[at] = v;
    }
    pub(crate) fn set_u16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn set_u32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn set_bytes(&mut self, at: usize, v: &[u8]) {
        self.bytes[at..at + v.len()].copy_from_slice(v);
    }
    pub(crate) fn get_u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }
    pub(crate) fn get_u32(&self, at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&self.bytes[at..at + 4]);
        u32::from_le_bytes(w)
    }
    pub(crate) fn wmask_u8(&mut self, at: usize, m: u8) {
        self.wmask[at] = m;
    }
    pub(crate) fn wmask_u16(&mut self, at: usize, m: u16) {
        self.wmask[at..at + 2].copy_from_slice(&m.to_le_bytes());
    }
    pub(crate) fn wmask_u32(&mut self, at: usize, m: u32) {
        self.wmask[at..at + 4].copy_from_slice(&m.to_le_bytes());
    }
    pub(crate) fn w1c_u16(&mut self, at: usize, m: u16) {
        self.w1c[at..at + 2].copy_from_slice(&m.to_le_bytes());
    }
}
