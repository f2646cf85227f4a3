//! The interposed libc entry points.
//!
//! Stable Rust cannot define C-variadic functions, so `open`, `ioctl` and `fcntl` are defined
//! with fixed arity. On x86-64 (System V) a variadic argument travels in the same register as
//! the fixed parameter declared here, so reading the optional `mode`/`arg` is exactly what the C
//! callee would do (garbage when the caller passed none, and then unused). The real functions
//! are called through variadic pointer types ([`crate::real`]). This module is therefore built
//! for x86-64 Linux only.
//!
//! Rules every entry point follows:
//! - a call on an fd that is not ours costs one lock-free set lookup and goes to libc;
//! - a call on a path reads the path through [`type1::usercopy`] (never dereferencing the host
//!   program's pointer), so a bad pointer is `EFAULT` as from the kernel, never a crash;
//! - while the library serves a call it blocks every signal (no handler can run on a thread
//!   that holds our locks) and catches panics (`EIO`; never an unwind into C); the one
//!   exception is a register-sized device region access ([`io`]), which sets a per-thread
//!   "serving" flag instead: a signal handler that interrupts it and calls the drop-in on one
//!   of our fds gets `EDEADLK` (bookkeeping after a real `close`/`dup` is left to the identity
//!   check), since the interrupted access may hold any of our locks;
//! - `errno` is untouched on success and set only on failure; the library's own system calls
//!   never leak their `errno` into the host program's.

// The entry points are exported by symbol name (`no_mangle`), not by Rust path.
#![allow(unreachable_pub)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::paths::{self, Lookup, Node};
use crate::state::{busy, state, State};
use crate::sys::{self, SignalsBlocked};

mod dir;
mod fd;
pub(crate) mod io;
mod ioctl;
mod open;
mod stat;
mod stdio;
mod xattr;

/// Calls the real libc function `$sym` of type `$ty` with `$args`, or fails with `ENOSYS`
/// (returning `$fail`) if libc has none.
macro_rules! real {
    ($sym:ident as $ty:ty, $fail:expr, ($($arg:expr),* $(,)?)) => {{
        // SAFETY: the symbol has this C type.
        match unsafe { $crate::real::func::<$ty>(&$crate::real::$sym) } {
            // SAFETY: the real function with the caller's arguments.
            Some(f) => unsafe { f($($arg),*) },
            None => {
                $crate::sys::set_errno(libc::ENOSYS);
                $fail
            }
        }
    }};
}
pub(crate) use real;

/// What serving a call ourselves gave.
pub(crate) type Served<R> = Result<R, c_int>;

thread_local! {
    /// Set while this thread serves a call without blocking signals (see the module docs).
    static SERVING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a thread whose signal handler interrupted a call served with signals open: our
/// locks may be held below us.
#[inline]
pub(crate) fn reentrant() -> bool {
    SERVING.try_with(std::cell::Cell::get).unwrap_or(false)
}

/// Marks this thread as serving with signals open until dropped.
pub(crate) struct Serving(bool);

impl Serving {
    pub(crate) fn enter() -> Serving {
        Serving(SERVING.try_with(|s| s.replace(true)).unwrap_or(false))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let was = self.0;
        let _ = SERVING.try_with(|s| s.set(was));
    }
}

/// Serves a call that is ours: blocks signals, catches panics (`EIO`), keeps `errno` as it was
/// on success and sets it on failure. `f` returns `None` if the call turned out not to be ours
/// after all (the caller then goes to libc, with `errno` as the host program left it).
///
/// On a thread whose handler interrupted a call served with signals open ([`reentrant`]) nothing
/// is run: a call with a result fails with `EDEADLK`; a call without one (`()`: the fd-table
/// bookkeeping after a real `close`, `dup` or `munmap`) is skipped, `errno` untouched; the fd
/// identity check forgets a closed fd at its next use.
pub(crate) fn serve<R>(fail: R, f: impl FnOnce() -> Option<Served<R>>) -> Option<R> {
    if reentrant() {
        if std::mem::size_of::<R>() != 0 {
            sys::set_errno(libc::EDEADLK);
        }
        return Some(fail);
    }
    let saved = sys::errno();
    let r = {
        let _mask = SignalsBlocked::new();
        catch_unwind(AssertUnwindSafe(f)).unwrap_or(Some(Err(libc::EIO)))
    };
    match r {
        None => {
            sys::set_errno(saved);
            None
        }
        Some(Ok(v)) => {
            sys::set_errno(saved);
            Some(v)
        }
        Some(Err(e)) => {
            sys::set_errno(e);
            Some(fail)
        }
    }
}

/// `fork` prepare: the interposers' own locks are held across the fork (see [`crate::spin`]).
pub(crate) fn fork_prepare() {
    dir::DIRS.lock_forever();
    io::bar_maps().lock_forever();
}

/// `fork`, parent side: releases what [`fork_prepare`] took.
pub(crate) fn fork_parent() {
    // SAFETY: `fork_prepare` took both on this thread.
    unsafe {
        io::bar_maps().force_unlock();
        dir::DIRS.force_unlock();
    }
}

/// `fork`, child side: the parent's BAR mappings stay mapped here but hold the parent's
/// devices, which this process must never release: they are forgotten (leaked). Then the
/// locks are released.
pub(crate) fn fork_child() {
    // SAFETY: `fork_prepare` took both in the parent; the child's only thread is this one.
    unsafe {
        std::mem::forget(std::mem::take(io::bar_maps().data_mut()));
        io::bar_maps().force_unlock();
        dir::DIRS.force_unlock();
    }
}

/// A path argument, read safely.
#[derive(Debug)]
pub(crate) enum PathArg {
    /// Not one of ours (or unreadable: libc will report it).
    NotOurs,
    /// The pointer cannot be read: `EFAULT`.
    Fault,
    /// A path that may be ours (without its NUL).
    Maybe(Vec<u8>),
}

/// `PATH_MAX`, the longest path the kernel accepts including its NUL.
const PATH_MAX: usize = 4096;

/// Reads the NUL-terminated path at `p` without dereferencing it, stopping early when its
/// first bytes show it cannot be ours.
pub(crate) fn read_path(p: *const c_char) -> PathArg {
    if p.is_null() {
        return PathArg::Fault;
    }
    let addr = p as u64;
    let mut out: Vec<u8> = Vec::new();
    let mut at = addr;
    loop {
        // Never read across a page boundary in one step: the next page may be unmapped even
        // though the string ends before it.
        let to_page_end = 4096 - (at % 4096);
        let want = if out.is_empty() {
            to_page_end.min(16)
        } else {
            to_page_end.min(256)
        };
        let mut buf = [0u8; 256];
        let Ok(want) = usize::try_from(want) else {
            return PathArg::Fault;
        };
        if type1::usercopy::copy_from_process(at, &mut buf[..want]).is_err() {
            return PathArg::Fault;
        }
        let chunk = &buf[..want];
        let end = chunk.iter().position(|&b| b == 0);
        out.extend_from_slice(&chunk[..end.unwrap_or(want)]);
        if !paths::maybe_ours(&out) {
            return PathArg::NotOurs;
        }
        if end.is_some() {
            return PathArg::Maybe(out);
        }
        if out.len() >= PATH_MAX {
            return PathArg::NotOurs;
        }
        at += want as u64;
    }
}

/// True if the whole NUL-terminated string at `p` (at most `PATH_MAX` bytes) can be read: for
/// the functions glibc implements in userspace (`realpath`), which would fault on a bad string
/// where a system call returns `EFAULT`.
pub(crate) fn string_readable(p: *const c_char) -> bool {
    let mut at = p as u64;
    let end = at.saturating_add(PATH_MAX as u64);
    while at < end {
        let step = (4096 - at % 4096).min(256);
        let mut buf = [0u8; 256];
        let Ok(n) = usize::try_from(step) else {
            return false;
        };
        if type1::usercopy::copy_from_process(at, &mut buf[..n]).is_err() {
            return false;
        }
        if buf[..n].contains(&0) {
            return true;
        }
        at += step;
    }
    true
}

/// The state and the resolved node of the path at `p` relative to `dirfd` (`AT_FDCWD` or one of
/// our directory fds), when it is ours.
pub(crate) enum Target {
    /// Not ours: go to libc.
    Real,
    /// The path pointer is bad.
    Fault,
    /// Ours: the node, or the errno of its lookup.
    Ours(&'static State, Lookup),
}

thread_local! {
    /// A rewritten path for the real function that follows (see [`paths::escape`]).
    static REDIRECT: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// The path the real function must be given: `p`, or the rewritten path [`target`] left for
/// this thread, which the returned `CString` keeps alive.
pub(crate) fn redirect(p: *const c_char) -> (*const c_char, Option<CString>) {
    let c = REDIRECT
        .try_with(|r| r.try_borrow_mut().ok().and_then(|mut r| r.take()))
        .ok()
        .flatten();
    match c {
        Some(c) => (c.as_ptr(), Some(c)),
        None => (p, None),
    }
}

/// Resolves `p` (relative to `dirfd` when it is relative).
pub(crate) fn target(dirfd: c_int, p: *const c_char) -> Target {
    // A signal handler's call cannot inherit a rewrite meant for the interrupted call: the
    // slot is taken by the real call that immediately follows `target` on this thread.
    let _ = REDIRECT.try_with(|r| r.try_borrow_mut().map(|mut r| r.take()));
    if busy() {
        return Target::Real;
    }
    let path = match read_path(p) {
        // Resolving under one of our directory fds takes the fd table's lock.
        PathArg::NotOurs if reentrant() && dirfd >= 0 && crate::files::OURS.contains(dirfd) => {
            return match state() {
                Some(s) => Target::Ours(s, Err(libc::EDEADLK)),
                None => Target::Real,
            };
        }
        PathArg::Maybe(path) => path,
        PathArg::Fault => return Target::Fault,
        PathArg::NotOurs => {
            // A relative path under one of our directory fds.
            if dirfd >= 0 && crate::files::OURS.contains(dirfd) {
                return relative(dirfd, p);
            }
            return Target::Real;
        }
    };
    let Some(s) = state() else {
        return Target::Real;
    };
    match paths::classify(&s.cfg, &path) {
        Some(l) => Target::Ours(s, l),
        None => {
            if let Some(c) = paths::escape(&s.cfg, &path).and_then(|p| CString::new(p).ok()) {
                let _ = REDIRECT.try_with(|r| r.try_borrow_mut().map(|mut r| *r = Some(c)));
            }
            Target::Real
        }
    }
}

fn relative(dirfd: c_int, p: *const c_char) -> Target {
    let Some(s) = state() else {
        return Target::Real;
    };
    let Some(crate::files::File::Dir(dir)) = s.files.get(dirfd) else {
        return Target::Real;
    };
    let mut rel = [0u8; 256];
    let mut n = 0;
    // Short names only (our directories hold short names); read byte by byte up to NUL.
    while n < rel.len() {
        let mut b = [0u8; 1];
        if type1::usercopy::copy_from_process(p as u64 + n as u64, &mut b).is_err() {
            return Target::Fault;
        }
        if b[0] == 0 {
            break;
        }
        rel[n] = b[0];
        n += 1;
    }
    if n == 0 || rel[0] == b'/' {
        return Target::Real;
    }
    let mut full = paths::canonical(&dir).into_bytes();
    full.push(b'/');
    full.extend_from_slice(&rel[..n]);
    match paths::classify(&s.cfg, &full) {
        Some(l) => Target::Ours(s, l),
        // Inside a fake directory nothing else exists.
        None => Target::Ours(s, Err(libc::ENOENT)),
    }
}

/// The node of an fd of ours, if any.
pub(crate) fn fd_node(fd: c_int) -> Option<(&'static State, Node)> {
    let s = state()?;
    Some((s, s.files.get(fd)?.node()?))
}
