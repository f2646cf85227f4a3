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

/// Where a transfer goes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The file position (`read`, `write`, `readv`, `writev`; `preadv2` with offset -1).
    Position,
    /// An explicit offset.
    Offset(i64),
}

/// The user buffers of a transfer.
#[derive(Debug, Clone, Copy)]
enum Bufs {
    /// One buffer.
    One(u64, usize),
    /// An iovec array and its count.
    Vec(u64, c_int),
}

/// Largest chunk moved through a bounce buffer at a time.
const CHUNK: usize = 64 << 10;

/// Largest access served by [`device_register`]: a register (1, 2, 4 or 8 bytes).
const REGISTER_MAX: usize = 8;

/// Serves a transfer on a fake or inherited fd; `None` if the fd is neither (or is a sysfs
/// file, whose memfd answers natively).
fn rw(fd: c_int, dir: Rw, at: At, bufs: Bufs) -> Option<isize> {
    if OURS.contains(fd) {
        if let (At::Offset(off), Bufs::One(buf, n)) = (at, bufs) {
            if let Some(r) = device_register(fd, dir, off, buf, n) {
                return Some(r);
            }
        }
        return serve(-1, || {
            let s = state()?;
            let (file, acc) = s.files.get_with_mode(fd)?;
            if let File::SysFile(_) = file {
                return None;
            }
            Some(rw_file(fd, &file, acc, dir, at, bufs))
        });
    }
    if INHERITED.contains(fd) {
        return serve(-1, || super::ioctl::check_inherited(fd).map(Err));
    }
    None
}

/// A register access on a device fd (`pread`/`pwrite` of at most [`REGISTER_MAX`] bytes at an
/// offset, into or from a buffer on the caller's stack, [`crate::stack::direct`]), served with
/// one system call: the `fstat` of the fd identity check. Signals stay open while it runs; the
/// per-thread serving flag makes a handler's call into the drop-in fail instead of waiting for
/// a lock held below it ([`super::serve`]). The buffer is loaded or stored directly: it is live
/// stack, so no `EFAULT` can arise. `None` when any of that does not hold (or the fd turns out
/// not to be a device): the call takes the general path, which checks everything again.
fn device_register(fd: c_int, dir: Rw, off: i64, buf: u64, n: usize) -> Option<isize> {
    if n == 0 || n > REGISTER_MAX || off < 0 || super::reentrant() {
        return None;
    }
    if !crate::stack::direct(buf, n) {
        return None;
    }
    let _serving = super::Serving::enter();
    let saved = crate::sys::errno();
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let s = state()?;
        let (file, acc) = s.files.get_with_mode(fd)?;
        let File::Device(h) = file else {
            return None;
        };
        Some(device_register_rw(
            &h.dev,
            acc,
            dir,
            off.unsigned_abs(),
            buf,
            n,
        ))
    }))
    .unwrap_or(Some(Err(libc::EIO)))?;
    match served {
        Ok(v) => {
            crate::sys::set_errno(saved);
            Some(v)
        }
        Err(e) => {
            crate::sys::set_errno(e);
            Some(-1)
        }
    }
}

fn device_register_rw(
    dev: &vfio_device::Device,
    acc: c_int,
    dir: Rw,
    off: u64,
    buf: u64,
    n: usize,
) -> Served<isize> {
    let allowed = match dir {
        Rw::Read => acc != libc::O_WRONLY,
        Rw::Write => acc != libc::O_RDONLY,
    };
    if !allowed {
        return Err(libc::EBADF);
    }
    let mut tmp = [0u8; REGISTER_MAX];
    let user = buf as *mut u8;
    let done = match dir {
        Rw::Read => {
            let got = dev.read(off, &mut tmp[..n]).map_err(|e| e.errno())?;
            let got = got.min(n);
            // SAFETY: `stack::direct` found `[buf, buf + n)` on this thread's live stack above
            // our frame: mapped read-write, and no Rust reference of ours points there.
            unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr(), user, got) };
            got
        }
        Rw::Write => {
            // SAFETY: as above; the bytes are read into our own buffer first.
            unsafe { std::ptr::copy_nonoverlapping(user.cast_const(), tmp.as_mut_ptr(), n) };
            dev.write(off, &tmp[..n]).map_err(|e| e.errno())?
        }
    };
    Ok(isize::try_from(done).unwrap_or(isize::MAX))
}

fn rw_file(fd: c_int, file: &File, acc: c_int, dir: Rw, at: At, bufs: Bufs) -> Served<isize> {
    if let At::Offset(off) = at {
        // `ksys_pread64`/`ksys_preadv`: a negative position is EINVAL before the fd is used.
        if off < 0 {
            return Err(libc::EINVAL);
        }
    }
    let allowed = match dir {
        Rw::Read => acc != libc::O_WRONLY,
        Rw::Write => acc != libc::O_RDONLY,
    };
    if !allowed {
        return Err(libc::EBADF);
    }
    match (file, dir) {
        (File::Device(h), _) => device_rw(fd, &h.dev, dir, at, bufs),
        (File::Dir(_), Rw::Read) => Err(libc::EISDIR),
        _ => Err(libc::EINVAL),
    }
}

/// The device file's position (kept in the memfd's own file position).
fn position(fd: c_int) -> u64 {
    // SAFETY: lseek on our own memfd.
    let p = unsafe { libc::syscall(libc::SYS_lseek, fd, 0i64, libc::SEEK_CUR) };
    u64::try_from(p).unwrap_or(0)
}

fn set_position(fd: c_int, pos: u64) {
    if let Ok(p) = i64::try_from(pos) {
        // SAFETY: lseek on our own memfd.
        unsafe { libc::syscall(libc::SYS_lseek, fd, p, libc::SEEK_SET) };
    }
}

/// `vfio_pci_rw` through bounce buffers: `len` bytes between the user buffer at `user` and the
/// device file at `off`; returns the bytes moved (short at the end of a region).
fn device_span(
    dev: &vfio_device::Device,
    dir: Rw,
    off: u64,
    user: u64,
    len: usize,
) -> Served<usize> {
    use type1::usercopy::{copy_from_process, copy_to_process};
    let mut done = 0usize;
    let mut tmp = vec![0u8; len.min(CHUNK)];
    while done < len {
        let step = (len - done).min(CHUNK);
        let at = off + done as u64;
        let ua = user + done as u64;
        let r = match dir {
            Rw::Read => dev.read(at, &mut tmp[..step]).and_then(|n| {
                copy_to_process(ua, &tmp[..n])
                    .map_err(|a| vfio_device::Error::BadAddress { addr: a })?;
                Ok(n)
            }),
            Rw::Write => match copy_from_process(ua, &mut tmp[..step]) {
                Ok(()) => dev.write(at, &tmp[..step]),
                Err(a) => Err(vfio_device::Error::BadAddress { addr: a }),
            },
        };
        match r {
            Ok(n) => {
                done += n;
                if n < step {
                    break;
                }
            }
            Err(_) if done > 0 => break,
            Err(e) => return Err(e.errno()),
        }
    }
    Ok(done)
}

fn device_rw(fd: c_int, dev: &vfio_device::Device, dir: Rw, at: At, bufs: Bufs) -> Served<isize> {
    let start = match at {
        At::Position => position(fd),
        At::Offset(off) => u64::try_from(off).map_err(|_| libc::EINVAL)?,
    };
    let spans: Vec<(u64, usize)> = match bufs {
        Bufs::One(b, n) => vec![(b, n)],
        Bufs::Vec(iov, cnt) => iovecs(iov, cnt)?,
    };
    let mut total = 0usize;
    for (buf, len) in spans {
        let n = match device_span(dev, dir, start + total as u64, buf, len) {
            Ok(n) => n,
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        };
        total += n;
        if n < len {
            break;
        }
    }
    if at == At::Position {
        set_position(fd, start + total as u64);
    }
    Ok(isize::try_from(total).unwrap_or(isize::MAX))
}

/// The caller's iovec array (`import_iovec`: more than `UIO_MAXIOV` entries or a negative
/// count is EINVAL, an unreadable array EFAULT, a total beyond `MAX_RW_COUNT` is clipped).
fn iovecs(iov: u64, cnt: c_int) -> Served<Vec<(u64, usize)>> {
    const UIO_MAXIOV: c_int = 1024;
    if !(0..=UIO_MAXIOV).contains(&cnt) {
        return Err(libc::EINVAL);
    }
    let n = usize::try_from(cnt).map_err(|_| libc::EINVAL)?;
    let mut raw = vec![0u8; n * std::mem::size_of::<libc::iovec>()];
    type1::usercopy::copy_from_process(iov, &mut raw).map_err(|_| libc::EFAULT)?;
    let mut out = Vec::with_capacity(n);
    let mut total = 0usize;
    // `struct iovec` as libc lays it out: two pointer-sized words.
    const BASE: usize = std::mem::offset_of!(libc::iovec, iov_base);
    const LEN: usize = std::mem::offset_of!(libc::iovec, iov_len);
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |c: &[u8], at: usize| -> Served<usize> {
        let w = c[at..at + WORD].try_into().map_err(|_| libc::EINVAL)?;
        Ok(usize::from_ne_bytes(w))
    };
    for c in raw.chunks_exact(std::mem::size_of::<libc::iovec>()) {
        let base = word(c, BASE)? as u64;
        let len = word(c, LEN)?;
        if isize::try_from(len).is_err() {
            return Err(libc::EINVAL);
        }
        let len = len.min(MAX_RW_COUNT - total);
        total += len;
        out.push((base, len));
    }
    Ok(out)
}

/// `MAX_RW_COUNT`: the most one read or write moves (`INT_MAX & PAGE_MASK`).
const MAX_RW_COUNT: usize = 0x7fff_f000;

macro_rules! rw_one {
    ($name:ident, $sym:ident, $ty:ty, $dir:expr, $bufty:ty) => {
        /// Interposed I/O entry point (fake fds answer as the kernel would for them).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: $bufty, n: usize) -> isize {
            if let Some(r) = rw(
                fd,
                $dir,
                At::Position,
                Bufs::One(buf as u64, n.min(MAX_RW_COUNT)),
            ) {
                return r;
            }
            real!($sym as $ty, -1, (fd, buf, n))
        }
    };
}

rw_one!(read, READ, crate::real::ReadFn, Rw::Read, *mut c_void);
rw_one!(write, WRITE, crate::real::WriteFn, Rw::Write, *const c_void);

macro_rules! rw_pos {
    ($name:ident, $sym:ident, $ty:ty, $dir:expr, $bufty:ty) => {
        /// Interposed positional I/O entry point (fake fds answer as the kernel would).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: $bufty, n: usize, off: i64) -> isize {
            if let Some(r) = rw(
                fd,
                $dir,
                At::Offset(off),
                Bufs::One(buf as u64, n.min(MAX_RW_COUNT)),
            ) {
                return r;
            }
            real!($sym as $ty, -1, (fd, buf, n, off))
        }
    };
}

rw_pos!(pread, PREAD, crate::real::PreadFn, Rw::Read, *mut c_void);
rw_pos!(
    pread64,
    PREAD64,
    crate::real::PreadFn,
    Rw::Read,
    *mut c_void
);
rw_pos!(
    pwrite,
    PWRITE,
    crate::real::PwriteFn,
    Rw::Write,
    *const c_void
);
rw_pos!(
    pwrite64,
    PWRITE64,
    crate::real::PwriteFn,
    Rw::Write,
    *const c_void
);

macro_rules! rw_chk {
    ($name:ident, $sym:ident, $plain:ident) => {
        /// Interposed fortified `pread` (`_FORTIFY_SOURCE`): a fake fd is served as by `pread`
        /// once the buffer check passes; a failing check goes to glibc, which aborts.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            buf: *mut c_void,
            n: usize,
            off: i64,
            buflen: usize,
        ) -> isize {
            if n <= buflen {
                if let Some(r) = rw(
                    fd,
                    Rw::Read,
                    At::Offset(off),
                    Bufs::One(buf as u64, n.min(MAX_RW_COUNT)),
                ) {
                    return r;
                }
            }
            real!(
                $sym as crate::real::PreadChkFn,
                -1,
                (fd, buf, n, off, buflen)
            )
        }
    };
}

rw_chk!(__pread_chk, PREAD_CHK, pread);
rw_chk!(__pread64_chk, PREAD64_CHK, pread64);

/// Interposed fortified `read` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize) -> isize {
    if n <= buflen {
        if let Some(r) = rw(
            fd,
            Rw::Read,
            At::Position,
            Bufs::One(buf as u64, n.min(MAX_RW_COUNT)),
        ) {
            return r;
        }
    }
    real!(READ_CHK as crate::real::ReadChkFn, -1, (fd, buf, n, buflen))
}

macro_rules! rw_vec {
    ($name:ident, $sym:ident, $dir:expr) => {
        /// Interposed vectored I/O entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, iov: *const libc::iovec, n: c_int) -> isize {
            if let Some(r) = rw(fd, $dir, At::Position, Bufs::Vec(iov as u64, n)) {
                return r;
            }
            real!($sym as crate::real::ReadvFn, -1, (fd, iov, n))
        }
    };
}

rw_vec!(readv, READV, Rw::Read);
rw_vec!(writev, WRITEV, Rw::Write);

macro_rules! rw_posvec {
    ($name:ident, $sym:ident, $dir:expr) => {
        /// Interposed positional vectored I/O entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            iov: *const libc::iovec,
            n: c_int,
            off: i64,
        ) -> isize {
            if let Some(r) = rw(fd, $dir, At::Offset(off), Bufs::Vec(iov as u64, n)) {
                return r;
            }
            real!($sym as crate::real::PreadvFn, -1, (fd, iov, n, off))
        }
    };
}

rw_posvec!(preadv, PREADV, Rw::Read);
rw_posvec!(preadv64, PREADV64, Rw::Read);
rw_posvec!(pwritev, PWRITEV, Rw::Write);
rw_posvec!(pwritev64, PWRITEV64, Rw::Write);

macro_rules! rw_posvec2 {
    ($name:ident, $sym:ident, $dir:expr) => {
        /// Interposed `preadv2`-style entry point (offset -1: the file position).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            iov: *const libc::iovec,
            n: c_int,
            off: i64,
            flags: c_int,
        ) -> isize {
            let at = if off == -1 {
                At::Position
            } else {
                At::Offset(off)
            };
            if let Some(r) = rw(fd, $dir, at, Bufs::Vec(iov as u64, n)) {
                return r;
            }
            real!($sym as crate::real::Preadv2Fn, -1, (fd, iov, n, off, flags))
        }
    };
}

rw_posvec2!(preadv2, PREADV2, Rw::Read);
rw_posvec2!(preadv64v2, PREADV64V2, Rw::Read);
rw_posvec2!(pwritev2, PWRITEV2, Rw::Write);
rw_posvec2!(pwritev64v2, PWRITEV64V2, Rw::Write);

/// Serves `lseek` on a fake or inherited fd: devices `ESPIPE`, directories seek (the memfd).
fn seek(fd: c_int) -> Option<i64> {
    if OURS.contains(fd) {
        return serve(-1, || {
            let s = state()?;
            match s.files.get(fd)? {
                File::Dir(_) | File::SysFile(_) => None,
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

/// The arguments of an `mmap` call.
#[derive(Debug, Clone, Copy)]
struct MapArgs {
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
}

fn map(a: MapArgs, real_mmap: crate::real::MmapFn) -> Option<*mut c_void> {
    let MapArgs {
        len,
        prot,
        flags,
        fd,
        ..
    } = a;
    if flags & libc::MAP_ANONYMOUS != 0 || !(OURS.contains(fd) || INHERITED.contains(fd)) {
        return None;
    }
    serve(libc::MAP_FAILED, || {
        if INHERITED.contains(fd) {
            return super::ioctl::check_inherited(fd).map(Err);
        }
        let s = state()?;
        let (file, acc) = s.files.get_with_mode(fd)?;
        if let File::SysFile(_) = file {
            return None;
        }
        // `do_mmap`: a zero length is EINVAL; a shared writable mapping needs FMODE_WRITE and
        // every file mapping FMODE_READ (EACCES); only then does the file's ->mmap decide.
        let ty = flags & libc::MAP_TYPE;
        let shared = ty == libc::MAP_SHARED || ty == libc::MAP_SHARED_VALIDATE;
        let no_write = shared && prot & libc::PROT_WRITE != 0 && acc == libc::O_RDONLY;
        if len == 0 {
            return Some(Err(libc::EINVAL));
        }
        if no_write || acc == libc::O_WRONLY {
            return Some(Err(libc::EACCES));
        }
        let File::Device(h) = file else {
            // No ->mmap.
            return Some(Err(libc::ENODEV));
        };
        Some(map_device(s, &h, a, shared, real_mmap))
    })
}

/// `vfio_pci_core_mmap`: the device's checks, then the real mapping of its memfd, recorded as
/// a PFNMAP-like area so a later MAP_DMA of it is reserved memory (not pinned, not charged).
fn map_device(
    s: &crate::state::State,
    h: &std::sync::Arc<crate::objects::DeviceHandle>,
    a: MapArgs,
    shared: bool,
    real_mmap: crate::real::MmapFn,
) -> Served<*mut c_void> {
    let sharing = if shared {
        vfio_device::region::MapSharing::Shared
    } else {
        vfio_device::region::MapSharing::Private
    };
    let off = u64::try_from(a.off).map_err(|_| libc::EINVAL)?;
    h.dev
        .check_mmap(off, a.len as u64, sharing)
        .map_err(|e| e.errno())?;
    // SAFETY: the real mmap with the caller's arguments, on the device's memfd.
    let p = unsafe { real_mmap(a.addr, a.len, a.prot, a.flags, a.fd, a.off) };
    if p == libc::MAP_FAILED {
        return Err(crate::sys::errno());
    }
    s.process_memory().mark_reserved(p as u64, a.len as u64);
    // The mapping holds the device file, as the kernel's VMA does: the device stays open (and
    // its group in use) until the last of its mappings is gone.
    let start = p as u64;
    bar_maps()
        .lock()
        .push((start, start + a.len as u64, h.clone()));
    mapped_bars().fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    Ok(p)
}

/// Live BAR mappings `[start, end)` and the device each keeps open.
type BarMaps = Vec<(u64, u64, std::sync::Arc<crate::objects::DeviceHandle>)>;

pub(crate) fn bar_maps() -> &'static crate::spin::SpinLock<BarMaps> {
    static MAPS: crate::spin::SpinLock<BarMaps> = crate::spin::SpinLock::new(Vec::new());
    &MAPS
}

/// At exit: the process's mappings go before its files are released, so every device a BAR
/// mapping held is let go.
pub(crate) fn release_bar_maps() {
    let all = std::mem::take(&mut *bar_maps().lock());
    drop(all);
}

/// Removes `[start, end)` from the live BAR mappings (splitting them as `munmap` splits VMAs);
/// returns the handles whose last piece went, to be dropped outside the lock.
fn unmap_bars(start: u64, end: u64) -> BarMaps {
    let mut maps = bar_maps().lock();
    let mut keep = Vec::with_capacity(maps.len());
    let mut gone = Vec::new();
    for (s, e, h) in maps.drain(..) {
        if e <= start || end <= s {
            keep.push((s, e, h));
            continue;
        }
        if s < start {
            keep.push((s, start, h.clone()));
        }
        if end < e {
            keep.push((end, e, h.clone()));
        }
        gone.push((s, e, h));
    }
    *maps = keep;
    gone
}

/// How many BAR mappings were made (`munmap` consults the reserved marks only when nonzero).
fn mapped_bars() -> &'static std::sync::atomic::AtomicUsize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    &N
}

/// Interposed `munmap`: an unmapped BAR stops being reserved memory.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    let r = real!(MUNMAP as crate::real::MunmapFn, -1, (addr, len));
    if r == 0 && mapped_bars().load(std::sync::atomic::Ordering::Acquire) != 0 {
        forget_bar_range(addr as u64, len as u64);
    }
    r
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
            // SAFETY: the symbol has this C type.
            let real_mmap = unsafe { crate::real::func::<crate::real::MmapFn>(&crate::real::$sym) };
            if let Some(real_mmap) = real_mmap {
                let a = MapArgs {
                    addr,
                    len,
                    prot,
                    flags,
                    fd,
                    off,
                };
                if let Some(r) = map(a, real_mmap) {
                    return r;
                }
            }
            let p = real!(
                $sym as crate::real::MmapFn,
                libc::MAP_FAILED,
                (addr, len, prot, flags, fd, off)
            );
            if p != libc::MAP_FAILED
                && flags & libc::MAP_FIXED != 0
                && mapped_bars().load(std::sync::atomic::Ordering::Acquire) != 0
            {
                // A fixed mapping replaces whatever it covers, BAR mappings included.
                let e = crate::sys::errno();
                forget_bar_range(p as u64, len as u64);
                crate::sys::set_errno(e);
            }
            p
        }
    };
}

/// `[start, start + len)` is no BAR mapping any more (unmapped, or replaced by a new mapping).
fn forget_bar_range(start: u64, len: u64) {
    serve((), || {
        state()?.process_memory().unmark_reserved(start, len);
        drop(unmap_bars(start, start.saturating_add(len)));
        Some(Ok(()))
    });
}

mmap_like!(mmap, MMAP);
mmap_like!(mmap64, MMAP64);
