//! The interposed libc entry points.
//!
//! Stable Rust cannot define C-variadic functions, so `open`, `ioctl` and `fcntl` are defined
//! with fixed arity. On x86-64 (System V) a variadic argument travels in the same register as
//! the fixed parameter declared here, so reading the optional `mode`/`arg` is exactly what the C
//! callee would do (garbage when the caller passed none, and then unused). This module is
//! therefore built for x86-64 Linux only.
//!
//! Every entry point: passes through to the real libc for anything not ours (and while the
//! library does its own I/O), never panics across the FFI boundary (`catch_unwind` → `EIO`),
//! and touches `errno` only when it fails.

// The entry points are exported by symbol name (`no_mangle`), not by Rust path.
#![allow(unreachable_pub)]

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::files::{self, File};
use crate::paths::{self, Node};
use crate::real::{self, Sym};
use crate::state::{passthrough, state, State};
use crate::trace;

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// Runs `f`, turning a panic into `EIO` so it never unwinds into C.
fn guard<R: Copy>(fail: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        fail
    })
}

/// The resolved real function, as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the C type of the symbol.
unsafe fn real_fn<F: Copy>(sym: &Sym) -> Option<F> {
    let a = sym.get();
    if a == 0 {
        return None;
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: `a` is the non-null address of the symbol, whose type the caller guarantees.
    Some(unsafe { std::mem::transmute_copy::<usize, F>(&a) })
}

fn enosys<R: From<i8>>() -> R {
    set_errno(libc::ENOSYS);
    R::from(-1)
}

/// The path at `p` if it may be ours, with the state; `None` for anything else.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn ours(p: *const c_char) -> Option<(&'static State, String)> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if !paths::maybe_ours(bytes) {
        return None;
    }
    let s = state()?;
    Some((s, std::str::from_utf8(bytes).ok()?.to_string()))
}

fn node_of(s: &State, path: &str) -> Option<Node> {
    paths::classify(&s.cfg, path)
}

// ----- open -----

/// Opens a fake node; `None` if `path` is not a fake device.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn try_open(path: *const c_char, flags: c_int) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (s, p) = unsafe { ours(path) }?;
    let file = match node_of(s, &p)? {
        Node::Container => files::Files::new_container(s.ccfg.clone(), s.mm.clone()),
        Node::Group(n) => match s.cfg.group_spec(n).map(|spec| s.files.new_group(spec)) {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                set_errno(e);
                return Some(-1);
            }
            None => return None,
        },
        Node::Dir | Node::GroupLink(_) => return None,
    };
    let mfd_flags = if flags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: a NUL-terminated name and valid flags; memfd_create is not interposed.
    let fd = unsafe { libc::memfd_create(c"type1-vfio".as_ptr(), mfd_flags) };
    if fd < 0 {
        return Some(-1);
    }
    s.files.insert(fd, file);
    Some(fd)
}

macro_rules! open_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `open`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            flags: c_int,
            mode: libc::mode_t,
        ) -> c_int {
            guard(-1, || {
                // SAFETY: the caller's path, as libc would receive it.
                if let Some(r) = unsafe { try_open(path, flags) } {
                    return r;
                }
                // SAFETY: the real function with the caller's arguments.
                match unsafe { real_fn::<real::OpenFn>(&real::$sym) } {
                    // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
                    Some(f) => unsafe { f(path, flags, mode) },
                    None => enosys(),
                }
            })
        }
    };
}

open_like!(open, OPEN);
open_like!(open64, OPEN64);

macro_rules! openat_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `openat`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: libc::mode_t,
        ) -> c_int {
            guard(-1, || {
                // SAFETY: the caller's path (absolute paths ignore dirfd).
                if let Some(r) = unsafe { try_open(path, flags) } {
                    return r;
                }
                // SAFETY: the real function with the caller's arguments.
                match unsafe { real_fn::<real::OpenatFn>(&real::$sym) } {
                    // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
                    Some(f) => unsafe { f(dirfd, path, flags, mode) },
                    None => enosys(),
                }
            })
        }
    };
}

openat_like!(openat, OPENAT);
openat_like!(openat64, OPENAT64);

macro_rules! open2_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `__open_2`-style entry point (`_FORTIFY_SOURCE`).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int {
            guard(-1, || {
                // SAFETY: the caller's path.
                if let Some(r) = unsafe { try_open(path, flags) } {
                    return r;
                }
                // SAFETY: the real function with the caller's arguments.
                match unsafe { real_fn::<real::Open2Fn>(&real::$sym) } {
                    // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
                    Some(f) => unsafe { f(path, flags) },
                    None => enosys(),
                }
            })
        }
    };
}

open2_like!(__open_2, OPEN_2);
open2_like!(__open64_2, OPEN64_2);

// ----- ioctl -----

/// Interposed `ioctl`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    guard(-1, || {
        if let Some(s) = state() {
            if let Some(file) = s.files.get(fd) {
                return fake_ioctl(s, fd, &file, request, arg as u64);
            }
        }
        // SAFETY: the real function with the caller's arguments.
        match unsafe { real_fn::<real::IoctlFn>(&real::IOCTL) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(fd, request, arg) },
            None => enosys(),
        }
    })
}

fn fake_ioctl(s: &State, fd: c_int, file: &File, request: u64, arg: u64) -> c_int {
    let t = Instant::now();
    let decoded = s.tracing().then(|| trace::decode(request, arg));
    let r = passthrough(|| match file {
        File::Container(cf) => files::container_ioctl(cf, request, arg),
        File::Group(g) => files::group_ioctl(&s.files, g, request, arg),
    });
    if let Some(decoded) = decoded {
        let (result, errno) = match r {
            Ok(v) => (v, 0),
            Err(e) => (-1, e),
        };
        s.trace(serde_json::json!({
            "fd": fd,
            "request": trace::request_name(request),
            "request_nr": format!("{request:#x}"),
            "args": decoded,
            "result": result,
            "errno": errno,
            "duration_ns": u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }));
    }
    match r {
        Ok(v) => c_int::try_from(v).unwrap_or(c_int::MAX),
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

// ----- close, dup, fcntl -----

/// Interposed `close`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    guard(-1, || {
        if let Some(s) = state() {
            if s.files.is_fake(fd) {
                passthrough(|| s.files.remove(fd));
            }
        }
        // SAFETY: the real function with the caller's argument.
        match unsafe { real_fn::<real::FdFn>(&real::CLOSE) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(fd) },
            None => enosys(),
        }
    })
}

fn after_dup(old: c_int, new: c_int) {
    if new < 0 {
        return;
    }
    if let Some(s) = state() {
        passthrough(|| {
            s.files.remove(new);
            if let Some(f) = s.files.get(old) {
                s.files.insert(new, f);
            }
        });
    }
}

/// Interposed `dup`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    guard(-1, || {
        // SAFETY: the real function with the caller's argument.
        let r = match unsafe { real_fn::<real::FdFn>(&real::DUP) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(fd) },
            None => return enosys(),
        };
        after_dup(fd, r);
        r
    })
}

/// Interposed `dup2`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    guard(-1, || {
        // SAFETY: the real function with the caller's arguments.
        let r = match unsafe { real_fn::<real::Dup2Fn>(&real::DUP2) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(old, new) },
            None => return enosys(),
        };
        if old != new {
            after_dup(old, r);
        }
        r
    })
}

/// Interposed `dup3`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    guard(-1, || {
        // SAFETY: the real function with the caller's arguments.
        let r = match unsafe { real_fn::<real::Dup3Fn>(&real::DUP3) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(old, new, flags) },
            None => return enosys(),
        };
        after_dup(old, r);
        r
    })
}

macro_rules! fcntl_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `fcntl`-style entry point (`F_DUPFD`, `F_DUPFD_CLOEXEC` follow fake fds).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
            guard(-1, || {
                // SAFETY: the real function with the caller's arguments.
                let r = match unsafe { real_fn::<real::FcntlFn>(&real::$sym) } {
                    // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
                    Some(f) => unsafe { f(fd, cmd, arg) },
                    None => return enosys(),
                };
                if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
                    after_dup(fd, r);
                }
                r
            })
        }
    };
}

fcntl_like!(fcntl, FCNTL);
fcntl_like!(fcntl64, FCNTL64);

/// Interposed `close_range`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    guard(-1, || {
        // SAFETY: the real function with the caller's arguments.
        let r = match unsafe { real_fn::<real::CloseRangeFn>(&real::CLOSE_RANGE) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(first, last, flags) },
            None => return enosys(),
        };
        let cloexec_only = flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) != 0;
        if r == 0 && !cloexec_only {
            if let Some(s) = state() {
                passthrough(|| s.files.remove_range(first, last));
            }
        }
        r
    })
}

// ----- stat, access, readlink, realpath -----

fn stat_of(mode: (u32, u32, u32)) -> libc::stat {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = mode.0;
    st.st_rdev = libc::makedev(mode.1, mode.2);
    st.st_dev = libc::makedev(0, 6);
    st.st_nlink = 1;
    st.st_blksize = 4096;
    st.st_ino = u64::from(mode.1) << 32 | u64::from(mode.2) | 0x7000_0000;
    st
}

/// Fills `*buf` for a fake path. `None` if not ours.
///
/// # Safety
/// `path` as for `stat`; `buf` valid for a write if non-null.
unsafe fn fake_stat(path: *const c_char, buf: *mut libc::stat, follow: bool) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (s, p) = unsafe { ours(path) }?;
    let node = node_of(s, &p)?;
    if buf.is_null() {
        set_errno(libc::EFAULT);
        return Some(-1);
    }
    // SAFETY: non-null, caller-provided `struct stat`.
    unsafe { buf.write(stat_of(paths::mode_of(&node, follow))) };
    Some(0)
}

macro_rules! stat_like {
    ($name:ident, $sym:ident, $follow:expr) => {
        /// Interposed `stat`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, buf: *mut libc::stat) -> c_int {
            guard(-1, || {
                // SAFETY: the caller's arguments.
                if let Some(r) = unsafe { fake_stat(path, buf, $follow) } {
                    return r;
                }
                // SAFETY: the real function with the caller's arguments.
                match unsafe { real_fn::<real::StatFn>(&real::$sym) } {
                    // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
                    Some(f) => unsafe { f(path, buf) },
                    None => enosys(),
                }
            })
        }
    };
}

stat_like!(stat, STAT, true);
stat_like!(stat64, STAT64, true);
stat_like!(lstat, LSTAT, false);
stat_like!(lstat64, LSTAT64, false);

macro_rules! fstatat_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `fstatat`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            buf: *mut libc::stat,
            flags: c_int,
        ) -> c_int {
            guard(-1, || {
                let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
                // SAFETY: the caller's arguments (absolute paths ignore dirfd).
                if let Some(r) = unsafe { fake_stat(path, buf, follow) } {
                    return r;
                }
                // SAFETY: the real function with the caller's arguments.
                match unsafe { real_fn::<real::FstatatFn>(&real::$sym) } {
                    // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
                    Some(f) => unsafe { f(dirfd, path, buf, flags) },
                    None => enosys(),
                }
            })
        }
    };
}

fstatat_like!(fstatat, FSTATAT);
fstatat_like!(fstatat64, FSTATAT64);

fn fd_node(fd: c_int) -> Option<Node> {
    let s = state()?;
    match s.files.get(fd)? {
        File::Container(_) => Some(Node::Container),
        File::Group(g) => Some(Node::Group(g.spec.id.0)),
    }
}

macro_rules! fstat_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `fstat`-style entry point: fake fds look like their device node.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: *mut libc::stat) -> c_int {
            guard(-1, || {
                if let Some(node) = fd_node(fd) {
                    if buf.is_null() {
                        set_errno(libc::EFAULT);
                        return -1;
                    }
                    // SAFETY: non-null, caller-provided `struct stat`.
                    unsafe { buf.write(stat_of(paths::mode_of(&node, true))) };
                    return 0;
                }
                // SAFETY: the real function with the caller's arguments.
                match unsafe { real_fn::<real::FstatFn>(&real::$sym) } {
                    // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
                    Some(f) => unsafe { f(fd, buf) },
                    None => enosys(),
                }
            })
        }
    };
}

fstat_like!(fstat, FSTAT);
fstat_like!(fstat64, FSTAT64);

/// Interposed `statx`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut libc::statx,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's path.
        let node = match unsafe { ours(path) } {
            Some((s, p)) => node_of(s, &p),
            None => None,
        };
        if let Some(node) = node {
            if buf.is_null() {
                set_errno(libc::EFAULT);
                return -1;
            }
            let (mode, major, minor) =
                paths::mode_of(&node, flags & libc::AT_SYMLINK_NOFOLLOW == 0);
            // SAFETY: `statx` is plain old data; all-zero is a valid value.
            let mut st: libc::statx = unsafe { std::mem::zeroed() };
            st.stx_mask = libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_NLINK;
            st.stx_mode = u16::try_from(mode).unwrap_or(0);
            st.stx_nlink = 1;
            st.stx_rdev_major = major;
            st.stx_rdev_minor = minor;
            st.stx_blksize = 4096;
            // SAFETY: non-null, caller-provided `struct statx`.
            unsafe { buf.write(st) };
            return 0;
        }
        // SAFETY: the real function with the caller's arguments.
        match unsafe { real_fn::<real::StatxFn>(&real::STATX) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(dirfd, path, flags, mask, buf) },
            None => enosys(),
        }
    })
}

/// Interposed `access`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's path.
        if let Some((s, p)) = unsafe { ours(path) } {
            if node_of(s, &p).is_some() {
                return 0;
            }
        }
        // SAFETY: the real function with the caller's arguments.
        match unsafe { real_fn::<real::AccessFn>(&real::ACCESS) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(path, mode) },
            None => enosys(),
        }
    })
}

/// Interposed `faccessat`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's path.
        if let Some((s, p)) = unsafe { ours(path) } {
            if node_of(s, &p).is_some() {
                return 0;
            }
        }
        // SAFETY: the real function with the caller's arguments.
        match unsafe { real_fn::<real::FaccessatFn>(&real::FACCESSAT) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(dirfd, path, mode, flags) },
            None => enosys(),
        }
    })
}

/// `readlink` of a fake node: `Some(result)` if ours.
///
/// # Safety
/// `path` NULL or NUL-terminated; `buf` valid for `size` bytes.
unsafe fn fake_readlink(path: *const c_char, buf: *mut c_char, size: usize) -> Option<isize> {
    // SAFETY: forwarded contract.
    let (s, p) = unsafe { ours(path) }?;
    match node_of(s, &p)? {
        Node::GroupLink(n) => {
            let target = paths::link_target(n);
            let n = target.len().min(size);
            // SAFETY: `buf` holds `size` bytes per the caller; we copy at most that.
            unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast::<u8>(), n) };
            Some(isize::try_from(n).unwrap_or(isize::MAX))
        }
        _ => {
            set_errno(libc::EINVAL);
            Some(-1)
        }
    }
}

/// Interposed `readlink`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    guard(-1, || {
        // SAFETY: the caller's arguments.
        if let Some(r) = unsafe { fake_readlink(path, buf, size) } {
            return r;
        }
        // SAFETY: the real function with the caller's arguments.
        match unsafe { real_fn::<real::ReadlinkFn>(&real::READLINK) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(path, buf, size) },
            None => enosys(),
        }
    })
}

/// Interposed `__readlink_chk` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn __readlink_chk(
    path: *const c_char,
    buf: *mut c_char,
    size: usize,
    _buflen: usize,
) -> isize {
    // SAFETY: same contract as readlink.
    unsafe { readlink(path, buf, size) }
}

/// Interposed `readlinkat`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: usize,
) -> isize {
    guard(-1, || {
        // SAFETY: the caller's arguments.
        if let Some(r) = unsafe { fake_readlink(path, buf, size) } {
            return r;
        }
        // SAFETY: the real function with the caller's arguments.
        match unsafe { real_fn::<real::ReadlinkatFn>(&real::READLINKAT) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(dirfd, path, buf, size) },
            None => enosys(),
        }
    })
}

/// Interposed `realpath`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's path.
        if let Some((s, p)) = unsafe { ours(path) } {
            if let Some(r) = paths::resolve(&s.cfg, &p) {
                let len = r.len();
                let out = if resolved.is_null() {
                    // SAFETY: malloc of len + 1 bytes; the caller frees it, as with glibc.
                    unsafe { libc::malloc(len + 1) }.cast::<c_char>()
                } else {
                    resolved
                };
                if out.is_null() {
                    set_errno(libc::ENOMEM);
                    return std::ptr::null_mut();
                }
                // SAFETY: `out` holds at least PATH_MAX (caller) or len + 1 (malloc) bytes;
                // fake paths are far shorter than PATH_MAX.
                unsafe {
                    std::ptr::copy_nonoverlapping(r.as_ptr(), out.cast::<u8>(), len);
                    *out.add(len) = 0;
                }
                return out;
            }
        }
        // SAFETY: the real function with the caller's arguments.
        match unsafe { real_fn::<real::RealpathFn>(&real::REALPATH) } {
            // SAFETY: `f` has the C type it was resolved with; the caller's arguments pass through.
            Some(f) => unsafe { f(path, resolved) },
            None => {
                set_errno(libc::ENOSYS);
                std::ptr::null_mut()
            }
        }
    })
}

/// Interposed `__realpath_chk` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn __realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    _resolvedlen: usize,
) -> *mut c_char {
    // SAFETY: same contract as realpath.
    unsafe { realpath(path, resolved) }
}
