//! `fopen` and `fclose`: glibc's stdio opens and closes files with internal calls that never
//! reach our `open`/`close`, so its public entry points are interposed. A fake path is opened
//! with our `open` and wrapped by the real `fdopen`; `fclose` forgets a fake fd before glibc
//! closes it.

use std::ffi::{c_char, c_int};

use super::{open::open_node, real, serve, target, Served, Target};
use crate::files::{INHERITED, OURS};
use type1::usercopy::copy_from_process;

/// The open flags of an `fopen` mode string (`r`, `w`, `a`, `+`, `e`, `x`; glibc's rules).
fn mode_flags(mode: *const c_char) -> Served<c_int> {
    let mut m = [0u8; 8];
    let mut n = 0;
    while n < m.len() {
        let mut b = [0u8; 1];
        copy_from_process(mode as u64 + n as u64, &mut b).map_err(|_| libc::EFAULT)?;
        if b[0] == 0 {
            break;
        }
        m[n] = b[0];
        n += 1;
    }
    let m = &m[..n];
    let plus = m.contains(&b'+');
    let mut flags = match m.first() {
        Some(b'r') if plus => libc::O_RDWR,
        Some(b'r') => libc::O_RDONLY,
        Some(b'w') if plus => libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
        Some(b'w') => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        Some(b'a') if plus => libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
        Some(b'a') => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return Err(libc::EINVAL),
    };
    if m.contains(&b'e') {
        flags |= libc::O_CLOEXEC;
    }
    if m.contains(&b'x') {
        flags |= libc::O_EXCL;
    }
    Ok(flags)
}

fn try_fopen(path: *const c_char, mode: *const c_char) -> Option<*mut libc::FILE> {
    let (s, node) = match target(libc::AT_FDCWD, path) {
        Target::Real => return None,
        Target::Fault => return serve(std::ptr::null_mut(), || Some(Err(libc::EFAULT))),
        Target::Ours(s, node) => (s, node),
    };
    let fd = serve(-1, || {
        Some(mode_flags(mode).and_then(|f| open_node(s, node, f)))
    })?;
    if fd < 0 {
        return Some(std::ptr::null_mut());
    }
    let f = real!(
        FDOPEN as crate::real::FdopenFn,
        std::ptr::null_mut(),
        (fd, mode)
    );
    if f.is_null() {
        let e = crate::sys::errno();
        // SAFETY: closes the fd opened above through our own close (forgets it too).
        unsafe { super::fd::close(fd) };
        crate::sys::set_errno(e);
    }
    Some(f)
}

macro_rules! fopen_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `fopen`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            mode: *const c_char,
        ) -> *mut libc::FILE {
            if let Some(f) = try_fopen(path, mode) {
                return f;
            }
            let (path, _redirect) = super::redirect(path);
            real!(
                $sym as crate::real::FopenFn,
                std::ptr::null_mut(),
                (path, mode)
            )
        }
    };
}

fopen_like!(fopen, FOPEN);
fopen_like!(fopen64, FOPEN64);

/// Interposed `fclose`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn fclose(f: *mut libc::FILE) -> c_int {
    if !f.is_null() {
        // SAFETY: `f` is the caller's open stream, as fclose requires.
        let fd = unsafe { libc::fileno(f) };
        if fd >= 0 && (OURS.contains(fd) || INHERITED.contains(fd)) {
            serve((), || {
                if let Some(s) = crate::state::state() {
                    s.files.remove(fd);
                }
                INHERITED.remove(fd);
                Some(Ok(()))
            });
        }
    }
    real!(FCLOSE as crate::real::FcloseFn, libc::EOF, (f))
}
