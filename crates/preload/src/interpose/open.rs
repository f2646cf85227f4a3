//! `open` and its LFS and fortified variants: fake nodes get a memfd registered in the fd
//! table; everything else goes to libc.
//!
//! Open flags as the kernel's `do_sys_open` → `path_openat` → `do_open` treat them for an
//! existing node: `O_CREAT|O_EXCL` → `EEXIST`; `O_DIRECTORY` on a device → `ENOTDIR`; a
//! directory opened for writing → `EISDIR`; `O_NOFOLLOW` on the sysfs group link → `ELOOP`.

use std::ffi::{c_char, c_int};

use type1::GroupSpec;

use super::{real, serve, target, Served, Target};
use crate::files::{File, Files};
use crate::paths::{Lookup, Node};
use crate::state::State;

/// Opens `node` as the kernel would; returns the new fd.
pub(crate) fn open_node(s: &State, node: Lookup, flags: c_int) -> Served<c_int> {
    let node = node?;
    if flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL {
        return Err(libc::EEXIST);
    }
    let acc = flags & libc::O_ACCMODE;
    let node = match node {
        n if n.is_link() && flags & libc::O_NOFOLLOW != 0 => return Err(libc::ELOOP),
        n if n.is_link() => n.follow().ok_or(libc::ENOENT)?,
        n => n,
    };
    // The kernel released whatever was closed behind our back; so do we, before a group's
    // exclusive open is judged.
    s.files.sweep();
    let file = if node.is_dir() {
        if acc != libc::O_RDONLY || flags & libc::O_CREAT != 0 {
            return Err(libc::EISDIR);
        }
        File::Dir(node)
    } else {
        if flags & libc::O_DIRECTORY != 0 {
            return Err(libc::ENOTDIR);
        }
        match node {
            Node::DeviceAttr(ref bdf, attr) => {
                let group = *s.cfg.devices.get(bdf).ok_or(libc::ENOENT)?;
                let bytes = crate::devices::attr_contents(bdf, group, attr).ok_or(libc::EIO)?;
                return open_sysfile(s, node, &bytes, flags);
            }
            Node::Container => Files::new_container(s.ccfg.clone(), s.mm()),
            Node::Group(n) => {
                let spec: GroupSpec = s.cfg.group_spec(n).ok_or(libc::ENOENT)?;
                s.files.new_group(spec)?
            }
            _ => return Err(libc::ENOENT),
        }
    };
    let mfd_flags = if flags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: a NUL-terminated name and valid flags; memfd_create is not interposed.
    let fd = unsafe { libc::memfd_create(file.memfd_name().as_ptr(), mfd_flags) };
    if fd < 0 {
        return Err(crate::sys::errno());
    }
    if acc != libc::O_RDWR {
        reopen_with_mode(fd, acc, mfd_flags != 0);
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: F_SETFL on the fd we just created.
        unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFL, libc::O_NONBLOCK) };
    }
    s.files.insert(fd, file, acc);
    Ok(fd)
}

/// A sysfs attribute: a memfd holding `bytes`, read natively (position, `pread`, `lseek`).
fn open_sysfile(s: &State, node: Node, bytes: &[u8], flags: c_int) -> Served<c_int> {
    let file = File::SysFile(node);
    let mfd_flags = if flags & libc::O_CLOEXEC != 0 {
        libc::MFD_CLOEXEC
    } else {
        0
    };
    // SAFETY: a NUL-terminated name and valid flags; memfd_create is not interposed.
    let fd = unsafe { libc::memfd_create(file.memfd_name().as_ptr(), mfd_flags) };
    if fd < 0 {
        return Err(crate::sys::errno());
    }
    // SAFETY: writes our own buffer to the memfd just created, at offset 0.
    unsafe { libc::syscall(libc::SYS_pwrite64, fd, bytes.as_ptr(), bytes.len(), 0i64) };
    let acc = flags & libc::O_ACCMODE;
    if acc != libc::O_RDWR {
        reopen_with_mode(fd, acc, mfd_flags != 0);
    }
    s.files.insert(fd, file, acc);
    Ok(fd)
}

/// Gives the memfd `fd` the open access mode `acc` (so `F_GETFL` and `read`/`write` see the
/// mode the caller asked for): a new open file description through `/proc/self/fd`, moved onto
/// the same fd number. Best effort: on failure the fd stays read-write.
fn reopen_with_mode(fd: c_int, acc: c_int, cloexec: bool) {
    let path = format!("/proc/self/fd/{fd}\0");
    // SAFETY: a NUL-terminated path; raw system calls on fds this function owns.
    unsafe {
        let new = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            acc | libc::O_CLOEXEC,
        );
        let Ok(new) = c_int::try_from(new) else {
            return;
        };
        if new < 0 {
            return;
        }
        let dflags = if cloexec { libc::O_CLOEXEC } else { 0 };
        libc::syscall(libc::SYS_dup3, new, fd, dflags);
        libc::syscall(libc::SYS_close, new);
    }
}

/// Serves an open of `path` (relative to `dirfd`) if it is ours.
fn try_open(dirfd: c_int, path: *const c_char, flags: c_int) -> Option<c_int> {
    match target(dirfd, path) {
        Target::Real => None,
        Target::Fault => serve(-1, || Some(Err(libc::EFAULT))),
        Target::Ours(s, node) => serve(-1, || Some(open_node(s, node, flags))),
    }
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
            if let Some(r) = try_open(libc::AT_FDCWD, path, flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!($sym as crate::real::OpenFn, -1, (path, flags, mode))
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
            if let Some(r) = try_open(dirfd, path, flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!(
                $sym as crate::real::OpenatFn,
                -1,
                (dirfd, path, flags, mode)
            )
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
            if let Some(r) = try_open(libc::AT_FDCWD, path, flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!($sym as crate::real::Open2Fn, -1, (path, flags))
        }
    };
}

open2_like!(__open_2, OPEN_2);
open2_like!(__open64_2, OPEN64_2);

macro_rules! openat2_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `__openat_2`-style entry point (`_FORTIFY_SOURCE`).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
            if let Some(r) = try_open(dirfd, path, flags) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!($sym as crate::real::Openat2Fn, -1, (dirfd, path, flags))
        }
    };
}

openat2_like!(__openat_2, OPENAT_2);
openat2_like!(__openat64_2, OPENAT64_2);
