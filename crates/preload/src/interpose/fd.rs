//! `close`, `closefrom`, `close_range`, `dup*` and `fcntl`: the fd table follows the real
//! descriptors.
//!
//! A fake fd is forgotten *before* the real `close` (so a concurrent `open` that reuses the
//! number is never clobbered); a duplicate of a fake fd names the same object, and a duplicate
//! made onto a fake fd number replaces it (the kernel closed it). Inherited fds stay inherited
//! through `dup`.

use std::ffi::{c_int, c_uint, c_ulong};

use super::{real, serve};
use crate::files::{INHERITED, OURS};
use crate::state::state;

/// Forgets `fd` if it is fake or inherited (before it is closed).
fn forget(fd: c_int) {
    if OURS.contains(fd) {
        serve((), || {
            let s = state()?;
            s.files.remove(fd);
            Some(Ok(()))
        });
    }
    INHERITED.remove(fd);
}

/// After `new = dup(old)` succeeded: `new` names what `old` names.
fn after_dup(old: c_int, new: c_int) {
    if new < 0 || new == old {
        return;
    }
    if OURS.contains(new) || OURS.contains(old) {
        serve((), || {
            let s = state()?;
            s.files.remove(new);
            if let Some((f, acc)) = s.files.get_with_mode(old) {
                s.files.insert(new, f, acc);
            }
            Some(Ok(()))
        });
    }
    if INHERITED.contains(old) {
        INHERITED.insert(new);
    } else {
        INHERITED.remove(new);
    }
}

/// Interposed `close`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    forget(fd);
    real!(CLOSE as crate::real::FdFn, -1, (fd))
}

fn forget_range(first: c_uint, last: c_uint) {
    serve((), || {
        if let Some(s) = state() {
            s.files.remove_range(first, last);
        }
        for fd in INHERITED.in_range(first, last) {
            INHERITED.remove(fd);
        }
        Some(Ok(()))
    });
}

/// Interposed `closefrom` (glibc ≥ 2.34).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn closefrom(low: c_int) {
    if let Ok(first) = c_uint::try_from(low.max(0)) {
        forget_range(first, c_uint::MAX);
    }
    real!(CLOSEFROM as crate::real::ClosefromFn, (), (low));
}

/// Interposed `close_range`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let cloexec_only = flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) != 0;
    // Only a valid call closes anything: `first > last` or unknown flags are EINVAL.
    let valid = first <= last
        && flags & !((libc::CLOSE_RANGE_CLOEXEC | libc::CLOSE_RANGE_UNSHARE) as c_int) == 0;
    if valid && !cloexec_only {
        forget_range(first, last);
    }
    real!(
        CLOSE_RANGE as crate::real::CloseRangeFn,
        -1,
        (first, last, flags)
    )
}

/// Interposed `dup`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let r = real!(DUP as crate::real::FdFn, -1, (fd));
    let e = crate::sys::errno();
    after_dup(fd, r);
    crate::sys::set_errno(e);
    r
}

/// Interposed `dup2`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let r = real!(DUP2 as crate::real::Dup2Fn, -1, (old, new));
    let e = crate::sys::errno();
    after_dup(old, r);
    crate::sys::set_errno(e);
    r
}

/// Interposed `dup3`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let r = real!(DUP3 as crate::real::Dup3Fn, -1, (old, new, flags));
    let e = crate::sys::errno();
    after_dup(old, r);
    crate::sys::set_errno(e);
    r
}

macro_rules! fcntl_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `fcntl`-style entry point (`F_DUPFD`, `F_DUPFD_CLOEXEC` follow fake fds).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
            let r = real!($sym as crate::real::FcntlFn, -1, (fd, cmd, arg));
            if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
                let e = crate::sys::errno();
                after_dup(fd, r);
                crate::sys::set_errno(e);
            }
            r
        }
    };
}

fcntl_like!(fcntl, FCNTL);
fcntl_like!(fcntl64, FCNTL64);
