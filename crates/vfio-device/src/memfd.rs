//! The device's file: a memfd holding every mmap-able region at its VFIO offset, and the
//! device's own mappings of it.
//!
//! A memory-backed BAR lives at `VFIO_PCI_INDEX_TO_OFFSET(index)` (index << 40) in one sparse
//! memfd, so a program that `mmap`s the device fd at the region offset QEMU got from
//! `VFIO_DEVICE_GET_REGION_INFO` maps the same pages the device reads and writes: guest and
//! device share them natively, as with a real BAR mapping (`vfio_pci_core_mmap`). The file is
//! sized to cover all regions; tmpfs allocates only the pages that are touched.
//!
//! This is one of the modules with `unsafe` (the others are the interrupt layer's eventfds, above
//! this one, and [`crate::thread`]): `memfd_create`, `ftruncate`, `mmap`, `munmap` and raw-pointer copies
//! into the mapping. Ranges are `(offset, len)` with an exclusive end, checked here.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{Error, Result};

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The device's backing file.
#[derive(Debug)]
pub struct DeviceFile {
    fd: OwnedFd,
    size: u64,
}

impl DeviceFile {
    /// A new close-on-exec memfd of `size` bytes (sparse).
    ///
    /// # Errors
    /// [`Error::Os`] if `memfd_create` or `ftruncate` fails.
    pub fn new(name: &CStr, size: u64) -> Result<Self> {
        // SAFETY: `name` is a valid NUL-terminated string; the flags are plain bits.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::Os {
                op: "memfd_create",
                errno: last_errno(),
            });
        }
        // SAFETY: `raw` is a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = i64::try_from(size).map_err(|_| Error::Os {
            op: "ftruncate",
            errno: libc::EFBIG,
        })?;
        // SAFETY: ftruncate on an fd we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(Error::Os {
                op: "ftruncate",
                errno: last_errno(),
            });
        }
        Ok(DeviceFile { fd, size })
    }

    /// The fd (mmap it at a region's offset to share that region's memory).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size of the file.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Maps `[offset, offset + len)` of the file shared and read-write for the device.
    ///
    /// # Errors
    /// [`Error::Os`] for a range outside the file, unaligned, or an `mmap` failure.
    pub fn map(&self, offset: u64, len: u64) -> Result<SharedMemory> {
        let einval = Error::Os {
            op: "mmap",
            errno: libc::EINVAL,
        };
        let end = offset.checked_add(len).ok_or(einval.clone())?;
        if len == 0 || end > self.size || offset % crate::PAGE_SIZE != 0 {
            return Err(einval);
        }
        let ulen = usize::try_from(len).map_err(|_| einval.clone())?;
        let off = i64::try_from(offset).map_err(|_| einval.clone())?;
        // SAFETY: a fresh shared mapping chosen by the kernel (addr NULL) of an fd we own; no
        // existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ulen,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Os {
                op: "mmap",
                errno: last_errno(),
            });
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(einval)?;
        Ok(SharedMemory { ptr, len: ulen })
    }
}

/// A shared mapping of part of the device file. Other mappings of the same pages (the VMM's,
/// a guest's) may write at any time: accesses of 1, 2, 4 or 8 aligned bytes are single
/// volatile accesses, as a device sees its own memory; longer copies may observe concurrent
/// writes torn, as DMA would.
#[derive(Debug)]
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; all access goes through
// raw-pointer reads and writes that tolerate concurrent writers (see the type's docs).
unsafe impl Send for SharedMemory {}
// SAFETY: as above; no method hands out references into the mapping.
unsafe impl Sync for SharedMemory {}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing references the mapping
        // once its owner is dropped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl SharedMemory {
    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// True if the mapping is empty (never: mappings have at least one page).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn span(&self, offset: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.len).then_some(start)
    }

    /// Reads `buf.len()` bytes at `offset`; false (and nothing read) if out of range.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let Some(start) = self.span(offset, buf.len()) else {
            return false;
        };
        // SAFETY: `start + buf.len() <= len` (checked by `span`), so the source lies inside
        // the live mapping; `buf` is a distinct Rust buffer.
        unsafe {
            let src = self.ptr.as_ptr().add(start);
            match buf.len() {
                1 => buf[0] = src.read_volatile(),
                2 if start % 2 == 0 => {
                    buf.copy_from_slice(&src.cast::<u16>().read_volatile().to_ne_bytes());
                }
                4 if start % 4 == 0 => {
                    buf.copy_from_slice(&src.cast::<u32>().read_volatile().to_ne_bytes());
                }
                8 if start % 8 == 0 => {
                    buf.copy_from_slice(&src.cast::<u64>().read_volatile().to_ne_bytes());
                }
                n => std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), n),
            }
        }
        true
    }

    /// Writes `data` at `offset`; false (and nothing written) if out of range.
    pub fn write(&self, offset: u64, data: &[u8]) -> bool {
        let Some(start) = self.span(offset, data.len()) else {
            return false;
        };
        // SAFETY: `start + data.len() <= len` (checked by `span`): the destination lies inside
        // the live, writable mapping; `data` is a distinct Rust buffer.
        unsafe {
            let dst = self.ptr.as_ptr().add(start);
            match *data {
                [b] => dst.write_volatile(b),
                [a, b] if start % 2 == 0 => {
                    dst.cast::<u16>().write_volatile(u16::from_ne_bytes([a, b]));
                }
                [a, b, c, d] if start % 4 == 0 => {
                    dst.cast::<u32>()
                        .write_volatile(u32::from_ne_bytes([a, b, c, d]));
                }
                [a, b, c, d, e, f, g, h] if start % 8 == 0 => dst
                    .cast::<u64>()
                    .write_volatile(u64::from_ne_bytes([a, b, c, d, e, f, g, h])),
                _ => std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()),
            }
        }
        true
    }

    /// Runs `f` on `[offset, offset + len)` of the mapping as one byte slice, for a bulk copy
    /// straight between this memory and guest memory (a device DMA without a bounce buffer);
    /// `None` if the range is out of bounds. As with every copy of this type, other mappings of
    /// the same pages may write meanwhile and `f` may see their bytes torn, as a DMA would.
    pub(crate) fn with_bytes_mut<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Option<R> {
        let start = self.span(offset, len)?;
        // SAFETY: `start + len <= self.len` (checked by `span`): the bytes lie inside the live,
        // read-write mapping, which outlives the call (`&self`); the slice does not escape `f`.
        // This process makes no other Rust reference into the mapping; concurrent writers
        // through other mappings are the shared-memory caveat stated on the type.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) };
        Some(f(bytes))
    }

    /// Reads a little-endian `u32` at `offset` (0 if out of range).
    #[must_use]
    pub fn read_u32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// Reads a little-endian `u64` at `offset` (0 if out of range).
    #[must_use]
    pub fn read_u64(&self, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(offset, &mut b);
        u64::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_offset_share_bytes() {
        let f = DeviceFile::new(c"t", 9 << 40).unwrap();
        let a = f.map(4 << 40, 4096).unwrap();
        let b = f.map(4 << 40, 4096).unwrap();
        assert!(a.write(8, &0x1122_3344_5566_7788u64.to_le_bytes()));
        assert_eq!(b.read_u64(8), 0x1122_3344_5566_7788);
        let mut buf = [0u8; 3];
        assert!(b.read(9, &mut buf));
        assert_eq!(buf, [0x77, 0x66, 0x55]);
    }

    #[test]
    fn out_of_range_accesses_are_refused() {
        let f = DeviceFile::new(c"t", 1 << 20).unwrap();
        let a = f.map(0, 4096).unwrap();
        assert!(!a.write(4095, &[1, 2]));
        assert!(!a.read(u64::MAX, &mut [0u8; 1]));
        f.map(4096, 1 << 20).unwrap_err();
        f.map(1, 4096).unwrap_err();
    }
}
