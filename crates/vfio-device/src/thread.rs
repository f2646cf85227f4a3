//! Device threads: every thread this crate starts (and every thread a device model starts
//! through [`spawn`]) runs with all signals blocked, so a program's signal handlers never run
//! on a device thread, and device threads never write to stdout.
//!
//! The mask is set in the parent around `std::thread::Builder::spawn` and inherited by the new
//! thread, so there is no window in which the child can take a signal; the parent's mask is
//! restored before `spawn` returns. `unsafe` here is `pthread_sigmask` only.

use std::io;
use std::thread::JoinHandle;

/// Spawns `f` on a named thread with all signals blocked.
///
/// # Errors
/// The error of `std::thread::Builder::spawn`, or of `pthread_sigmask`.
pub fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: sigset_t is plain data; sigfillset initialises it fully.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&raw mut all) };
    // SAFETY: both pointers are valid sigset_t; only this thread's mask changes.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const all, &raw mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let r = std::thread::Builder::new().name(name.to_owned()).spawn(f);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut()) };
    r
}

/// True if every signal is blocked on the calling thread (for tests of the contract).
#[must_use]
pub fn all_signals_blocked() -> bool {
    // SAFETY: sigset_t is plain data, filled by pthread_sigmask below.
    let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a NULL new set only queries the mask into `cur`.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &raw mut cur) };
    // SAFETY: `cur` was filled above; sigismember reads it.
    rc == 0
        && [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGUSR1,
            libc::SIGALRM,
            libc::SIGCHLD,
        ]
        .iter()
        .all(|&s| unsafe { libc::sigismember(&raw const cur, s) } == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_threads_block_every_signal_and_the_parent_keeps_its_mask() {
        let before = all_signals_blocked();
        let h = spawn("t", all_signals_blocked).unwrap();
        assert!(h.join().unwrap());
        assert_eq!(all_signals_blocked(), before);
    }
}
