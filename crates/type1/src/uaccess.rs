//! User memory as the kernel reaches it (`copy_from_user`, `copy_to_user`, `access_ok`):
//! [`UserMemory`] is the seam the ioctl layer reads arguments and writes results through. A
//! failure is `EFAULT`. [`ProcessUserMemory`] is this process (through [`crate::usercopy`], never
//! dereferencing a pointer it was handed); [`UserBuffer`] is a window backed by a buffer.
//!
//! Ranges are `[addr, addr + len)`; errors carry the first address that could not be copied.

/// x86-64 `TASK_SIZE_MAX`: the end of user address space, as `access_ok` sees it.
pub const TASK_SIZE_MAX: u64 = (1 << 47) - 4096;

/// User memory as the kernel reaches it.
pub trait UserMemory {
    /// `copy_from_user`: fills `buf` from `addr`.
    ///
    /// # Errors
    /// `Err(addr)` of the first byte that cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), u64>;

    /// `copy_to_user`: writes `data` at `addr`.
    ///
    /// # Errors
    /// `Err(addr)` of the first byte that cannot be written.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), u64>;
}

/// `access_ok(addr, size)` on x86-64.
#[must_use]
pub fn access_ok(addr: u64, size: u64) -> bool {
    size <= TASK_SIZE_MAX && addr <= TASK_SIZE_MAX - size
}

/// A window of user memory `[base, base + len)` backed by a buffer: for tests and for callers
/// that hold the argument in Rust memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBuffer {
    /// User address of the first byte.
    pub base: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

impl UserBuffer {
    /// A zeroed window of `len` bytes at `base`.
    #[must_use]
    pub fn new(base: u64, len: usize) -> Self {
        UserBuffer {
            base,
            bytes: vec![0; len],
        }
    }

    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, u64> {
        let start = addr.checked_sub(self.base).ok_or(addr)?;
        let start = usize::try_from(start).map_err(|_| addr)?;
        let end = start.checked_add(len).ok_or(addr)?;
        if end > self.bytes.len() {
            let first_bad = self.base + self.bytes.len() as u64;
            return Err(first_bad.max(addr));
        }
        Ok(start..end)
    }
}

impl UserMemory for UserBuffer {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), u64> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), u64> {
        let r = self.range(addr, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
}

/// This process's own memory as the ioctl's user memory: what an `LD_PRELOAD` drop-in passes,
/// so a bad pointer from the host program is `EFAULT`, never a crash.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessUserMemory;

impl UserMemory for ProcessUserMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), u64> {
        if !access_ok(addr, buf.len() as u64) {
            return Err(addr);
        }
        crate::usercopy::copy(
            addr,
            buf.as_mut_ptr(),
            buf.len(),
            crate::usercopy::Direction::Read,
        )
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), u64> {
        if !access_ok(addr, data.len() as u64) {
            return Err(addr);
        }
        crate::usercopy::copy(
            addr,
            data.as_ptr().cast_mut(),
            data.len(),
            crate::usercopy::Direction::Write,
        )
    }
}
