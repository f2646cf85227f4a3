//! Guest RAM and the destination buffer: real memory, touched only in ways that are sound while
//! device threads write to it.
//!
//! The source is an anonymous `MAP_NORESERVE` mapping. It is filled through a plain slice before
//! any device thread exists; from then on it is read only with `process_vm_readv` (the kernel
//! copies, so a concurrent device write is not a data race in Rust's sense) until every device
//! thread has been joined, when the final comparison borrows it as a slice again.

use anyhow::{bail, Context, Result};

/// Bytes per guest page.
pub const PAGE: u64 = 4096;

/// An anonymous private mapping owned by this value.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is plain memory; every access path below is either exclusive (`&mut self`)
// or goes through the kernel (process_vm_*), so sharing the handle between threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of zeroed memory, asking for transparent huge pages: first touch of
    /// memory is expensive on small virtual machines, and 2M pages take 512x fewer faults.
    pub fn new(len: u64) -> Result<Region> {
        let len = usize::try_from(len).context("size does not fit this machine")?;
        // SAFETY: an anonymous mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "cannot map {len} bytes of guest memory: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: advice on the mapping just created; failure (no THP) is harmless.
        unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Host address of the first byte (the "physical" address of guest page 0).
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Exclusive access (no device thread may run).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, owned by `self`, and the
        // `&mut self` borrow guarantees no other access through this handle.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Shared access for reading once no other thread writes (devices joined).
    pub fn as_slice(&mut self) -> &[u8] {
        self.as_mut_slice()
    }

    /// Copies the byte ranges `ranges` (offset, len) of this region into the same offsets of
    /// `dst`, through the kernel, while other threads may write the region.
    pub fn copy_ranges_to(&self, dst: &mut [u8], ranges: &[(u64, u64)]) -> Result<()> {
        const BATCH: usize = 512;
        for chunk in ranges.chunks(BATCH) {
            let mut local = Vec::with_capacity(chunk.len());
            let mut remote = Vec::with_capacity(chunk.len());
            let mut total = 0usize;
            for &(off, len) in chunk {
                let (o, l) = (usize::try_from(off)?, usize::try_from(len)?);
                let end = o.checked_add(l).filter(|&e| e <= self.len.min(dst.len()));
                if end.is_none() {
                    bail!("copy range {off:#x}+{len:#x} outside guest memory");
                }
                local.push(libc::iovec {
                    iov_base: dst[o..].as_mut_ptr().cast(),
                    iov_len: l,
                });
                remote.push(libc::iovec {
                    iov_base: (self.addr() + off) as *mut libc::c_void,
                    iov_len: l,
                });
                total += l;
            }
            let mut done = 0usize;
            while done < total {
                // SAFETY: every local iovec points into `dst` (bounds checked above), which we
                // borrow mutably; the remote iovecs lie inside this mapping. The kernel does
                // the copy and reports failures instead of faulting.
                let n = unsafe {
                    libc::process_vm_readv(
                        libc::getpid(),
                        local.as_ptr(),
                        local.len() as libc::c_ulong,
                        remote.as_ptr(),
                        remote.len() as libc::c_ulong,
                        0,
                    )
                };
                let Ok(n) = usize::try_from(n) else {
                    bail!("process_vm_readv: {}", std::io::Error::last_os_error());
                };
                if n == 0 {
                    bail!("process_vm_readv made no progress");
                }
                done += n;
                if done < total {
                    // Partial copy (rare): drop what was transferred and retry the rest.
                    advance(&mut local, n);
                    advance(&mut remote, n);
                }
            }
        }
        Ok(())
    }
}

impl Region {
    /// Reads `buf.len()` bytes at offset `off` through the kernel (safe while devices write).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let end = off
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len());
        if end.is_none() {
            bail!("read {off:#x}+{:#x} outside guest memory", buf.len());
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: (self.addr() + off) as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `buf` is ours to write; the remote range lies inside the mapping (checked);
        // the kernel copies.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if usize::try_from(n).ok() != Some(buf.len()) {
            bail!("process_vm_readv: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Drops the first `n` bytes from an iovec list.
fn advance(v: &mut Vec<libc::iovec>, mut n: usize) {
    while n > 0 && !v.is_empty() {
        if v[0].iov_len <= n {
            n -= v[0].iov_len;
            v.remove(0);
        } else {
            v[0].iov_base = (v[0].iov_base as u64 + n as u64) as *mut libc::c_void;
            v[0].iov_len -= n;
            n = 0;
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Fills `buf` with the seeded pattern (guest page `i` gets a distinct, reproducible content).
pub fn fill_pattern(buf: &mut [u8], seed: u64) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let v = splitmix(seed ^ (i as u64));
        let bytes = v.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// SplitMix64: a tiny deterministic generator.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_moves_exactly_those_bytes() {
        let mut r = Region::new(4 * PAGE).unwrap();
        fill_pattern(r.as_mut_slice(), 7);
        let mut dst = vec![0u8; 4 * 4096];
        r.copy_ranges_to(&mut dst, &[(4096, 4096), (3 * 4096 + 10, 5)])
            .unwrap();
        let src = r.as_slice();
        assert_eq!(&dst[4096..8192], &src[4096..8192]);
        assert_eq!(
            &dst[3 * 4096 + 10..3 * 4096 + 15],
            &src[3 * 4096 + 10..3 * 4096 + 15]
        );
        assert!(dst[..4096].iter().all(|&b| b == 0));
        assert!(r.copy_ranges_to(&mut dst, &[(4 * 4096, 1)]).is_err());
    }
}
