//! Small wrappers over the process facilities every interposer needs: `errno`, the signal mask,
//! and raw system calls that never re-enter our own interposers.
//!
//! Concurrency: everything here is per thread (errno, the signal mask) or a plain system call.

use std::ffi::c_int;

/// This thread's `errno`.
pub(crate) fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's `errno`.
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// Every signal blocked on this thread until dropped, then the previous mask restored.
///
/// Held while the library holds any lock or runs the engine, so a signal handler of the host
/// program that calls `close` or `ioctl` can never run on a thread that holds a lock it needs
/// (the kernel, too, runs handlers only when a system call returns). Signals arriving meanwhile
/// stay pending and are delivered when the mask is restored.
#[derive(Debug)]
pub(crate) struct SignalsBlocked {
    old: libc::sigset_t,
}

impl SignalsBlocked {
    /// Blocks every signal that can be blocked.
    pub(crate) fn new() -> Self {
        // SAFETY: sigset_t is plain old data; sigfillset initialises it.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to sigset_t values we own; pthread_sigmask only reads `all`
        // and writes `old`.
        unsafe {
            libc::sigfillset(&raw mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut old);
        }
        SignalsBlocked { old }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`; a null old-set pointer is allowed.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const self.old, std::ptr::null_mut());
        }
    }
}

/// `(st_dev, st_ino, st_mode)` of an open fd by raw `fstat` (never our interposer); `None` if the
/// fd is not open.
pub(crate) fn fd_identity(fd: c_int) -> Option<(u64, u64, u32)> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `struct stat` to a valid, exclusively borrowed buffer.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &raw mut st) };
    (r == 0).then_some((st.st_dev, st.st_ino, st.st_mode))
}

/// What `/proc/self/fd/<fd>` links to, by raw `readlinkat` (at most 255 bytes).
pub(crate) fn fd_link(fd: c_int) -> Option<Vec<u8>> {
    let path = format!("/proc/self/fd/{fd}\0");
    let mut buf = [0u8; 256];
    // SAFETY: a NUL-terminated path and a buffer of `buf.len()` bytes we own.
    let n = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            path.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    Some(buf[..n].to_vec())
}

/// This process's id.
pub(crate) fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Writes all of `data` to `fd` in one `write(2)` (a trace line), by raw system call.
pub(crate) fn raw_write(fd: c_int, data: &[u8]) {
    // SAFETY: writes `data.len()` bytes from our own buffer.
    unsafe { libc::syscall(libc::SYS_write, fd, data.as_ptr(), data.len()) };
}

/// Writes one line to stderr in one `write(2)`, ignoring failure (a host program may have
/// closed its stderr; a diagnostic must never fail a call).
pub(crate) fn warn(msg: &str) {
    let mut line = String::with_capacity(msg.len() + 1);
    line.push_str(msg);
    line.push('\n');
    raw_write(2, line.as_bytes());
}
