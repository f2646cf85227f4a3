//! The `stat` family, `access`, `readlink` and `realpath` for the fake nodes.
//!
//! Output buffers are written through [`type1::usercopy`], so a bad buffer is `EFAULT` (as
//! `cp_new_stat`'s `copy_to_user` gives), never a crash. The nodes are owned by the calling
//! user (a udev rule would give the VFIO nodes to the VMM's user), so permission checks pass
//! for reading and writing and fail for execution, as for a device node without `x` bits.

use std::ffi::{c_char, c_int, c_uint};

use super::{fd_node, real, serve, target, Served, Target};
use crate::paths::{self, Lookup, Node};
use type1::usercopy::copy_to_process;

fn ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// An inode number for a node, stable for the life of the process.
fn ino_of(node: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{node:?}").hash(&mut h);
    h.finish() | 1
}

fn stat_of(node: &Node, follow: bool) -> libc::stat {
    let (mode, major, minor) = paths::mode_of(node, follow);
    let (uid, gid) = ids();
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = mode;
    st.st_rdev = libc::makedev(major, minor);
    st.st_dev = libc::makedev(0, 6);
    st.st_nlink = if node.is_dir() { 2 } else { 1 };
    st.st_uid = uid;
    st.st_gid = gid;
    st.st_blksize = 4096;
    st.st_ino = ino_of(node);
    if let Node::DeviceAttr(..) = node {
        // sysfs reports a page for attribute files.
        st.st_size = 4096;
    }
    st
}

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: `T` is a plain-old-data C struct (stat/statx); viewing it as bytes is sound.
    unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), std::mem::size_of::<T>())
    }
}

fn put_stat(node: &Node, follow: bool, buf: *mut libc::stat) -> Served<c_int> {
    copy_to_process(buf as u64, bytes_of(&stat_of(node, follow))).map_err(|_| libc::EFAULT)?;
    Ok(0)
}

fn stat_lookup(l: Lookup, follow: bool, buf: *mut libc::stat) -> Served<c_int> {
    put_stat(&l?, follow, buf)
}

/// Serves a path-based stat; `None` if not ours.
fn path_stat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> Option<c_int> {
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    if flags & libc::AT_EMPTY_PATH != 0 && crate::files::OURS.contains(dirfd) {
        if let Some(r) = serve(-1, || {
            let empty = super::read_path(path);
            if !matches!(empty, super::PathArg::NotOurs | super::PathArg::Maybe(_)) {
                return Some(Err(libc::EFAULT));
            }
            let (_, node) = fd_node(dirfd)?;
            Some(put_stat(&node, true, buf))
        }) {
            return Some(r);
        }
    }
    match target(dirfd, path) {
        Target::Real => None,
        Target::Fault => serve(-1, || Some(Err(libc::EFAULT))),
        Target::Ours(_, l) => serve(-1, || Some(stat_lookup(l, follow, buf))),
    }
}

macro_rules! stat_like {
    ($name:ident, $sym:ident, $flags:expr) => {
        /// Interposed `stat`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, buf: *mut libc::stat) -> c_int {
            if let Some(r) = path_stat(libc::AT_FDCWD, path, buf, $flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!($sym as crate::real::StatFn, -1, (path, buf))
        }
    };
}

stat_like!(stat, STAT, 0);
stat_like!(stat64, STAT64, 0);
stat_like!(lstat, LSTAT, libc::AT_SYMLINK_NOFOLLOW);
stat_like!(lstat64, LSTAT64, libc::AT_SYMLINK_NOFOLLOW);

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
            if let Some(r) = path_stat(dirfd, path, buf, flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!(
                $sym as crate::real::FstatatFn,
                -1,
                (dirfd, path, buf, flags)
            )
        }
    };
}

fstatat_like!(fstatat, FSTATAT);
fstatat_like!(fstatat64, FSTATAT64);

fn fd_stat(fd: c_int, buf: *mut libc::stat) -> Option<c_int> {
    if !crate::files::OURS.contains(fd) {
        return None;
    }
    serve(-1, || {
        let (_, node) = fd_node(fd)?;
        Some(put_stat(&node, true, buf))
    })
}

macro_rules! fstat_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `fstat`-style entry point: fake fds look like their device node.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: *mut libc::stat) -> c_int {
            if let Some(r) = fd_stat(fd, buf) {
                return r;
            }
            real!($sym as crate::real::FstatFn, -1, (fd, buf))
        }
    };
}

fstat_like!(fstat, FSTAT);
fstat_like!(fstat64, FSTAT64);

macro_rules! xstat_like {
    ($name:ident, $sym:ident, $flags:expr) => {
        /// Interposed glibc compat `__xstat`-style entry point (binaries built before glibc 2.33).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            ver: c_int,
            path: *const c_char,
            buf: *mut libc::stat,
        ) -> c_int {
            if let Some(r) = path_stat(libc::AT_FDCWD, path, buf, $flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!($sym as crate::real::XstatFn, -1, (ver, path, buf))
        }
    };
}

xstat_like!(__xstat, XSTAT, 0);
xstat_like!(__xstat64, XSTAT64, 0);
xstat_like!(__lxstat, LXSTAT, libc::AT_SYMLINK_NOFOLLOW);
xstat_like!(__lxstat64, LXSTAT64, libc::AT_SYMLINK_NOFOLLOW);

macro_rules! fxstat_like {
    ($name:ident, $sym:ident) => {
        /// Interposed glibc compat `__fxstat`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
            if let Some(r) = fd_stat(fd, buf) {
                return r;
            }
            real!($sym as crate::real::FxstatFn, -1, (ver, fd, buf))
        }
    };
}

fxstat_like!(__fxstat, FXSTAT);
fxstat_like!(__fxstat64, FXSTAT64);

macro_rules! fxstatat_like {
    ($name:ident, $sym:ident) => {
        /// Interposed glibc compat `__fxstatat`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            ver: c_int,
            dirfd: c_int,
            path: *const c_char,
            buf: *mut libc::stat,
            flags: c_int,
        ) -> c_int {
            if let Some(r) = path_stat(dirfd, path, buf, flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!(
                $sym as crate::real::FxstatatFn,
                -1,
                (ver, dirfd, path, buf, flags)
            )
        }
    };
}

fxstatat_like!(__fxstatat, FXSTATAT);
fxstatat_like!(__fxstatat64, FXSTATAT64);

fn put_statx(node: &Node, follow: bool, buf: *mut libc::statx) -> Served<c_int> {
    let st = stat_of(node, follow);
    // SAFETY: `statx` is plain old data; all-zero is a valid value.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    sx.stx_mask = libc::STATX_TYPE
        | libc::STATX_MODE
        | libc::STATX_NLINK
        | libc::STATX_UID
        | libc::STATX_GID
        | libc::STATX_INO
        | libc::STATX_SIZE;
    sx.stx_mode = u16::try_from(st.st_mode).unwrap_or(0);
    sx.stx_nlink = u32::try_from(st.st_nlink).unwrap_or(1);
    sx.stx_uid = st.st_uid;
    sx.stx_gid = st.st_gid;
    sx.stx_ino = st.st_ino;
    sx.stx_size = u64::try_from(st.st_size).unwrap_or(0);
    sx.stx_blksize = 4096;
    sx.stx_rdev_major = libc::major(st.st_rdev);
    sx.stx_rdev_minor = libc::minor(st.st_rdev);
    sx.stx_dev_minor = 6;
    copy_to_process(buf as u64, bytes_of(&sx)).map_err(|_| libc::EFAULT)?;
    Ok(0)
}

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
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    if flags & libc::AT_EMPTY_PATH != 0 && crate::files::OURS.contains(dirfd) {
        if let Some(r) = serve(-1, || {
            let (_, node) = fd_node(dirfd)?;
            Some(put_statx(&node, true, buf))
        }) {
            return r;
        }
    }
    let r = match target(dirfd, path) {
        Target::Real => None,
        Target::Fault => serve(-1, || Some(Err(libc::EFAULT))),
        Target::Ours(_, l) => serve(-1, || Some(l.and_then(|n| put_statx(&n, follow, buf)))),
    };
    if let Some(r) = r {
        return r;
    }
    let (path, _redirect) = super::redirect(path);
    real!(
        STATX as crate::real::StatxFn,
        -1,
        (dirfd, path, flags, mask, buf)
    )
}

/// `access(2)` on a node owned by the caller: `x` on a device → `EACCES`.
fn access_node(l: Lookup, mode: c_int) -> Served<c_int> {
    let node = l?;
    if mode & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
        return Err(libc::EINVAL);
    }
    if mode & libc::X_OK != 0 && !node.is_dir() && !node.is_link() {
        return Err(libc::EACCES);
    }
    Ok(0)
}

fn path_access(dirfd: c_int, path: *const c_char, mode: c_int) -> Option<c_int> {
    match target(dirfd, path) {
        Target::Real => None,
        Target::Fault => serve(-1, || Some(Err(libc::EFAULT))),
        Target::Ours(_, l) => serve(-1, || Some(access_node(l, mode))),
    }
}

macro_rules! access_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `access`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: c_int) -> c_int {
            if let Some(r) = path_access(libc::AT_FDCWD, path, mode) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!($sym as crate::real::AccessFn, -1, (path, mode))
        }
    };
}

access_like!(access, ACCESS);
access_like!(eaccess, EACCESS);
access_like!(euidaccess, EUIDACCESS);

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
    if let Some(r) = path_access(dirfd, path, mode) {
        return r;
    }
    let (path, _redirect) = super::redirect(path);
    real!(
        FACCESSAT as crate::real::FaccessatFn,
        -1,
        (dirfd, path, mode, flags)
    )
}

/// `readlink` of a fake node (`do_readlinkat`: a size of 0 or less is `EINVAL`, a node that
/// is not a link `EINVAL`, the target truncated to the buffer, a bad buffer `EFAULT`).
fn readlink_node(l: Lookup, buf: *mut c_char, size: usize) -> Served<isize> {
    let node = l?;
    if isize::try_from(size).is_err() || size == 0 {
        return Err(libc::EINVAL);
    }
    let Some(target) = node.link_target() else {
        return Err(libc::EINVAL);
    };
    let len = target.len().min(size);
    copy_to_process(buf as u64, &target.as_bytes()[..len]).map_err(|_| libc::EFAULT)?;
    Ok(isize::try_from(len).unwrap_or(isize::MAX))
}

fn path_readlink(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: usize,
) -> Option<isize> {
    match target(dirfd, path) {
        Target::Real => None,
        Target::Fault => serve(-1, || Some(Err(libc::EFAULT))),
        Target::Ours(_, l) => serve(-1, || Some(readlink_node(l, buf, size))),
    }
}

/// Interposed `readlink`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    if let Some(r) = path_readlink(libc::AT_FDCWD, path, buf, size) {
        return r;
    }
    let (path, _redirect) = super::redirect(path);
    real!(READLINK as crate::real::ReadlinkFn, -1, (path, buf, size))
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
    if let Some(r) = path_readlink(dirfd, path, buf, size) {
        return r;
    }
    let (path, _redirect) = super::redirect(path);
    real!(
        READLINKAT as crate::real::ReadlinkatFn,
        -1,
        (dirfd, path, buf, size)
    )
}

/// `realpath` of a fake node into `resolved` (or a `malloc`ed buffer when it is NULL).
fn realpath_node(l: Lookup, resolved: *mut c_char) -> Served<*mut c_char> {
    let r = paths::canonical(&l?);
    let mut bytes = r.into_bytes();
    bytes.push(0);
    let out = if resolved.is_null() {
        // SAFETY: malloc of len + 1 bytes; the caller frees it, as with glibc.
        let p = unsafe { libc::malloc(bytes.len()) }.cast::<c_char>();
        if p.is_null() {
            return Err(libc::ENOMEM);
        }
        p
    } else {
        resolved
    };
    if copy_to_process(out as u64, &bytes).is_err() {
        if resolved.is_null() {
            // SAFETY: the buffer malloc'ed above.
            unsafe { libc::free(out.cast()) };
        }
        return Err(libc::EFAULT);
    }
    Ok(out)
}

/// Interposed `realpath`. A bad path pointer is `EFAULT` (glibc would crash on it).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    if path.is_null() {
        crate::sys::set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    let r = match target(libc::AT_FDCWD, path) {
        Target::Real if super::string_readable(path) => None,
        Target::Real | Target::Fault => serve(std::ptr::null_mut(), || Some(Err(libc::EFAULT))),
        Target::Ours(_, l) => serve(std::ptr::null_mut(), || Some(realpath_node(l, resolved))),
    };
    if let Some(r) = r {
        return r;
    }
    let (path, _redirect) = super::redirect(path);
    real!(
        REALPATH as crate::real::RealpathFn,
        std::ptr::null_mut(),
        (path, resolved)
    )
}

/// Interposed `__realpath_chk` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn __realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    _len: usize,
) -> *mut c_char {
    // SAFETY: same contract as realpath.
    unsafe { realpath(path, resolved) }
}

/// Interposed `canonicalize_file_name` (`realpath(path, NULL)`).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    // SAFETY: glibc defines this function as realpath with a NULL buffer.
    unsafe { realpath(path, std::ptr::null_mut()) }
}
