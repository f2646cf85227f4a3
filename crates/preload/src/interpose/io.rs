//! `read`, `write`, their positional and vectored variants, `lseek` and `mmap` on fake fds:
//! the kernel's answers for files whose `file_operations` have no such method.
//!
//! `vfio_fops` (container.c) and `vfio_group_fops` (group.c), v6.18, define only `open`,
//! `release` and the ioctls, so (`vfs_read`/`vfs_write`/`vfs_readv`): an fd not open for
//! reading (writing) → `EBADF`, else no `->read`/`->read_iter` → `EINVAL`; `vfs_llseek` without
//! `FMODE_LSEEK` → `ESPIPE`; `do_mmap` without `->mmap` → `ENODEV` (after the length check,
//! `EINVAL` for 0, and `EACCES` for a mode the fd was not opened with). A fake directory reads as one (`EISDIR`), and is never writable (`EBADF`).
//! An inherited fd fails every one of them with `EBADFD`.

use std::ffi::{c_int, c_void};

use super::{real, serve, Served};
use crate::files::{File, INHERITED, OURS};
use crate::state::state;

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rw {
    Read,
    Write,
}

/// Serves a read or write on a fake or inherited fd; `None` if the fd is neither.
fn rw(fd: c_int, dir: Rw) -> Option<isize> {
    if OURS.contains(fd) {
        return serve(-1, || {
            let s = state()?;
            let (file, acc) = s.files.get_with_mode(fd)?;
            Some(rw_file(&file, acc, dir))
        });
    }
    if INHERITED.contains(fd) {
        return serve(-1, || super::ioctl::check_inherited(fd).map(Err));
    }
    None
}

fn rw_file(file: &File, acc: c_int, dir: Rw) -> Served<isize> {
    let allowed = match dir {
        Rw::Read => acc != libc::O_WRONLY,
        Rw::Write => acc != libc::O_RDONLY,
    };
    if !allowed {
        return Err(libc::EBADF);
    }
    match (file, dir) {
        (File::Dir(_), Rw::Read) => Err(libc::EISDIR),
        _ => Err(libc::EINVAL),
    }
}

macro_rules! rw_like {
    ($name:ident, $sym:ident, $ty:ty, $dir:expr, ($($arg:ident : $t:ty),*)) => {
        /// Interposed I/O entry point (fake fds answer as the kernel would for them).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, $($arg: $t),*) -> isize {
            if let Some(r) = rw(fd, $dir) {
                return r;
            }
            real!($sym as $ty, -1, (fd, $($arg),*))
        }
    };
}

rw_like!(read, READ, crate::real::ReadFn, Rw::Read, (buf: *mut c_void, n: usize));
rw_like!(write, WRITE, crate::real::WriteFn, Rw::Write, (buf: *const c_void, n: usize));
rw_like!(pread, PREAD, crate::real::PreadFn, Rw::Read, (buf: *mut c_void, n: usize, off: i64));
rw_like!(pread64, PREAD64, crate::real::PreadFn, Rw::Read, (buf: *mut c_void, n: usize, off: i64));
rw_like!(pwrite, PWRITE, crate::real::PwriteFn, Rw::Write, (buf: *const c_void, n: usize, off: i64));
rw_like!(pwrite64, PWRITE64, crate::real::PwriteFn, Rw::Write, (buf: *const c_void, n: usize, off: i64));
rw_like!(readv, READV, crate::real::ReadvFn, Rw::Read, (iov: *const libc::iovec, n: c_int));
rw_like!(writev, WRITEV, crate::real::ReadvFn, Rw::Write, (iov: *const libc::iovec, n: c_int));
rw_like!(preadv, PREADV, crate::real::PreadvFn, Rw::Read, (iov: *const libc::iovec, n: c_int, off: i64));
rw_like!(preadv64, PREADV64, crate::real::PreadvFn, Rw::Read, (iov: *const libc::iovec, n: c_int, off: i64));
rw_like!(pwritev, PWRITEV, crate::real::PreadvFn, Rw::Write, (iov: *const libc::iovec, n: c_int, off: i64));
rw_like!(pwritev64, PWRITEV64, crate::real::PreadvFn, Rw::Write, (iov: *const libc::iovec, n: c_int, off: i64));
rw_like!(preadv2, PREADV2, crate::real::Preadv2Fn, Rw::Read, (iov: *const libc::iovec, n: c_int, off: i64, fl: c_int));
rw_like!(preadv64v2, PREADV64V2, crate::real::Preadv2Fn, Rw::Read, (iov: *const libc::iovec, n: c_int, off: i64, fl: c_int));
rw_like!(pwritev2, PWRITEV2, crate::real::Preadv2Fn, Rw::Write, (iov: *const libc::iovec, n: c_int, off: i64, fl: c_int));
rw_like!(pwritev64v2, PWRITEV64V2, crate::real::Preadv2Fn, Rw::Write, (iov: *const libc::iovec, n: c_int, off: i64, fl: c_int));

/// Serves `lseek` on a fake or inherited fd: devices `ESPIPE`, directories seek (the memfd).
fn seek(fd: c_int) -> Option<i64> {
    if OURS.contains(fd) {
        return serve(-1, || {
            let s = state()?;
            match s.files.get(fd)? {
                File::Dir(_) => None,
                _ => Some(Err(libc::ESPIPE)),
            }
        });
    }
    if INHERITED.contains(fd) {
        return serve(-1, || super::ioctl::check_inherited(fd).map(Err));
    }
    None
}

macro_rules! lseek_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `lseek`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: i64, whence: c_int) -> i64 {
            if let Some(r) = seek(fd) {
                return r;
            }
            real!($sym as crate::real::LseekFn, -1, (fd, off, whence))
        }
    };
}

lseek_like!(lseek, LSEEK);
lseek_like!(lseek64, LSEEK64);

fn map(fd: c_int, len: usize, prot: c_int, flags: c_int) -> Option<*mut c_void> {
    if flags & libc::MAP_ANONYMOUS != 0 || !(OURS.contains(fd) || INHERITED.contains(fd)) {
        return None;
    }
    serve(libc::MAP_FAILED, || {
        if INHERITED.contains(fd) {
            return super::ioctl::check_inherited(fd).map(Err);
        }
        let s = state()?;
        let (_, acc) = s.files.get_with_mode(fd)?;
        // `do_mmap`: a zero length is EINVAL; a shared writable mapping needs FMODE_WRITE and
        // every file mapping FMODE_READ (EACCES); only then is the missing ->mmap ENODEV.
        let ty = flags & libc::MAP_TYPE;
        let shared = ty == libc::MAP_SHARED || ty == libc::MAP_SHARED_VALIDATE;
        let no_write = shared && prot & libc::PROT_WRITE != 0 && acc == libc::O_RDONLY;
        Some(if len == 0 {
            Err(libc::EINVAL)
        } else if no_write || acc == libc::O_WRONLY {
            Err(libc::EACCES)
        } else {
            Err(libc::ENODEV)
        })
    })
}

macro_rules! mmap_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `mmap`-style entry point (fake fds have no `->mmap`: `ENODEV`).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            addr: *mut c_void,
            len: usize,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: i64,
        ) -> *mut c_void {
            if let Some(r) = map(fd, len, prot, flags) {
                return r;
            }
            real!(
                $sym as crate::real::MmapFn,
                libc::MAP_FAILED,
                (addr, len, prot, flags, fd, off)
            )
        }
    };
}

mmap_like!(mmap, MMAP);
mmap_like!(mmap64, MMAP64);
