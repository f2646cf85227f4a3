//! Eventfds the device keeps: its own duplicates of the program's eventfds.
//!
//! The kernel holds a reference to every eventfd given to `VFIO_DEVICE_SET_IRQS`
//! (`eventfd_ctx_fdget`), so a program may close its fd and the device still signals the same
//! eventfd; the device here does the same with `F_DUPFD_CLOEXEC`. An fd that is not open is
//! `EBADF`, one that is open but not an eventfd `EINVAL` (`eventfd_ctx_fileget`); an eventfd is
//! recognised by its `/proc/self/fd` link, `anon_inode:[eventfd]`.
//!
//! This module holds the interrupt path's `unsafe`: `fcntl`, `read`, `write` and `poll` on fds
//! it owns.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// An eventfd owned by the device.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new non-blocking, close-on-exec eventfd (for tests, and the device's own wakeups).
    ///
    /// # Errors
    /// [`Error::Os`] if `eventfd` fails.
    pub fn new() -> Result<Self> {
        // SAFETY: plain syscall; the result is a fresh fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(Error::Os {
                op: "eventfd",
                errno: errno(),
            });
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd { fd })
    }

    /// The device's own reference to the program's eventfd `fd` (`eventfd_ctx_fdget`).
    ///
    /// # Errors
    /// [`Error::BadFd`] if `fd` is not open, [`Error::NotEventfd`] if it is not an eventfd,
    /// [`Error::Os`] if duplicating fails.
    pub fn from_user(fd: i32) -> Result<Self> {
        // SAFETY: F_GETFD only queries the descriptor table.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::BadFd { fd });
        }
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
        if !link.is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]") {
            return Err(Error::NotEventfd { fd });
        }
        // SAFETY: duplicates an open fd to the lowest free number >= 3, close-on-exec.
        let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if raw < 0 {
            return Err(Error::Os {
                op: "F_DUPFD_CLOEXEC",
                errno: errno(),
            });
        }
        // SAFETY: a fresh duplicate nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd { fd })
    }

    /// `eventfd_signal`: adds 1 to the counter. A full counter (`EAGAIN`) drops the signal,
    /// as the kernel's saturating add would leave the eventfd readable anyway.
    pub fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an fd we own.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Reads and clears the counter; `None` if it is zero (non-blocking fds) or on error.
    #[must_use]
    pub fn read(&self) -> Option<u64> {
        let mut b = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from an fd we own.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        (n == 8).then(|| u64::from_ne_bytes(b))
    }

    /// The raw fd (valid while `self` lives).
    #[must_use]
    pub fn as_raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The fd, borrowed.
    #[must_use]
    pub fn borrow(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// Blocks until one of `fds` is readable; returns which (by index), or `None` on error.
pub(crate) fn wait_readable(fds: &[&EventFd]) -> Option<usize> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|e| libc::pollfd {
            fd: e.as_raw(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let n = libc::nfds_t::try_from(p.len()).ok()?;
        // SAFETY: `p` is a live array of `n` pollfd structs.
        let rc = unsafe { libc::poll(p.as_mut_ptr(), n, -1) };
        if rc > 0 {
            return p.iter().position(|x| x.revents != 0);
        }
        if rc < 0 && errno() != libc::EINTR {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_fd_is_ebadf_and_a_pipe_is_einval() {
        assert_eq!(EventFd::from_user(-1).unwrap_err().errno(), libc::EBADF);
        assert_eq!(
            EventFd::from_user(999_999).unwrap_err().errno(),
            libc::EBADF
        );
        let mut p = [0i32; 2];
        // SAFETY: `p` has room for two fds.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        assert_eq!(EventFd::from_user(p[0]).unwrap_err().errno(), libc::EINVAL);
        // SAFETY: closing the pipe fds created above.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }

    /// The device's reference outlives the program's fd, as `eventfd_ctx_fdget`'s does.
    #[test]
    fn the_dup_still_signals_after_the_program_closes_its_fd() {
        let user = EventFd::new().unwrap();
        let reader = EventFd::from_user(user.as_raw()).unwrap();
        let dev = EventFd::from_user(user.as_raw()).unwrap();
        drop(user);
        dev.signal();
        assert_eq!(reader.read(), Some(1));
        assert_eq!(reader.read(), None);
    }
}
