//! Extended attributes of the fake nodes: none (`getxattr` → `ENODATA`, `listxattr` → an
//! empty list), as for a device node on a `devtmpfs` without security labels. `ls -l` asks for
//! them on every file it lists.

use std::ffi::{c_char, c_int, c_void};

use super::{real, serve, target, Target};
use crate::files::OURS;

fn path_xattr(path: *const c_char, answer: Result<isize, c_int>) -> Option<isize> {
    match target(libc::AT_FDCWD, path) {
        Target::Real => None,
        Target::Fault => serve(-1, || Some(Err(libc::EFAULT))),
        Target::Ours(_, l) => serve(-1, || Some(l.and(answer))),
    }
}

fn fd_xattr(fd: c_int, answer: Result<isize, c_int>) -> Option<isize> {
    if !OURS.contains(fd) {
        return None;
    }
    serve(-1, || {
        crate::state::state()?.files.get(fd)?;
        Some(answer)
    })
}

macro_rules! getxattr_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `getxattr`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            name: *const c_char,
            value: *mut c_void,
            size: usize,
        ) -> isize {
            if let Some(r) = path_xattr(path, Err(libc::ENODATA)) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!(
                $sym as crate::real::GetxattrFn,
                -1,
                (path, name, value, size)
            )
        }
    };
}

getxattr_like!(getxattr, GETXATTR);
getxattr_like!(lgetxattr, LGETXATTR);

macro_rules! listxattr_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `listxattr`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            list: *mut c_char,
            size: usize,
        ) -> isize {
            if let Some(r) = path_xattr(path, Ok(0)) {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!($sym as crate::real::ListxattrFn, -1, (path, list, size))
        }
    };
}

listxattr_like!(listxattr, LISTXATTR);
listxattr_like!(llistxattr, LLISTXATTR);

/// Interposed `fgetxattr`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn fgetxattr(
    fd: c_int,
    name: *const c_char,
    value: *mut c_void,
    size: usize,
) -> isize {
    if let Some(r) = fd_xattr(fd, Err(libc::ENODATA)) {
        return r;
    }
    real!(
        FGETXATTR as crate::real::FgetxattrFn,
        -1,
        (fd, name, value, size)
    )
}

/// Interposed `flistxattr`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn flistxattr(fd: c_int, list: *mut c_char, size: usize) -> isize {
    if let Some(r) = fd_xattr(fd, Ok(0)) {
        return r;
    }
    real!(
        FLISTXATTR as crate::real::FlistxattrFn,
        -1,
        (fd, list, size)
    )
}
