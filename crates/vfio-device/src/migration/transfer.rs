//! Migration data transfers and the v2 data fd.
//!
//! A [`Transfer`] is one direction of one migration: the bytes a save produces (read by the
//! VMM) or the bytes a resume receives (written by the VMM). Its rules are the kernel's data-fd
//! rules (mtty's `mtty_save_read`/`mtty_resume_write`, mlx5's pre-copy `ENOMSG`, v6.18):
//!
//! - save, read: bytes in order; at the end of a complete stream `0` (EOF); at a temporary end
//!   while pre-copy data may still come, `ENOMSG`; after the transfer ended (SC→STOP, PC→RUN,
//!   PCP→RP, reset, close) `ENODEV`;
//! - resume, write: appended in order, cut anywhere; past [`MAX_STREAM`] `ENOMEM`; after the
//!   transfer ended `ENODEV`.
//!
//! The v1 region moves the same transfer through its data section; the v2 face hands out a
//! [`DataFile`]: a real fd (one end of an `O_CLOEXEC` pipe) so `close`, `dup`, `poll`,
//! `FD_CLOEXEC` and `ESPIPE` on `pread`/`pwrite`/`lseek` are the kernel's own. Two ways to move
//! the bytes (see [`DataFdMode`]):
//!
//! - [`DataFdMode::Pipe`] (default, nothing to route): a device thread pumps the save stream
//!   into the pipe and closes its end at the end of the stream (EOF), or drains the pipe into
//!   the resume buffer. Differences from the kernel: a pre-copy read at a temporary end blocks
//!   instead of `ENOMSG`; after the transfer ended the reader sees what was already in the pipe
//!   then EOF instead of `ENODEV`; a resume write past the limit succeeds and RESUMING→STOP fails
//!   with `EINVAL` instead of the write failing with `ENOMEM`; `VFIO_MIG_GET_PRECOPY_INFO` gets
//!   the pipe's `ENOTTY`.
//! - [`DataFdMode::Routed`]: nothing flows through the pipe; the drop-in routes `read`, `write`
//!   and `ioctl` on the fd to [`DataFile::read`], [`DataFile::write`] and `Device::data_file_ioctl`,
//!   which give the kernel's rules exactly.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};

/// The most bytes a resume accepts (`ENOMEM` past it).
pub const MAX_STREAM: u64 = 256 << 20;

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The device's state goes out (PRE_COPY, STOP_COPY).
    Save,
    /// A state comes in (RESUMING).
    Resume,
}

#[derive(Debug, Default)]
struct Inner {
    data: Vec<u8>,
    /// Save: bytes consumed by the reader.
    pos: usize,
    /// Save: no more bytes will be appended.
    complete: bool,
    /// Ended: every access is `ENODEV`.
    ended: bool,
    /// Resume (pipe mode): bytes that arrived past the limit.
    overflow: bool,
}

/// One direction of one migration (see the module docs).
#[derive(Debug)]
pub struct Transfer {
    dir: Direction,
    limit: u64,
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Transfer {
    pub(crate) fn save(first: Vec<u8>, complete: bool) -> Arc<Transfer> {
        Arc::new(Transfer {
            dir: Direction::Save,
            limit: MAX_STREAM,
            inner: Mutex::new(Inner {
                data: first,
                complete,
                ..Inner::default()
            }),
            cv: Condvar::new(),
        })
    }

    pub(crate) fn resume() -> Arc<Transfer> {
        Self::resume_limited(MAX_STREAM)
    }

    pub(crate) fn resume_limited(limit: u64) -> Arc<Transfer> {
        Arc::new(Transfer {
            dir: Direction::Resume,
            limit,
            inner: Mutex::new(Inner::default()),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The direction.
    #[must_use]
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Appends save bytes (PRE_COPY_P2P → STOP_COPY) and marks the stream complete.
    pub(crate) fn finish_with(&self, tail: &[u8]) {
        let mut g = self.lock();
        g.data.extend_from_slice(tail);
        g.complete = true;
        self.cv.notify_all();
    }

    /// Ends the transfer: later accesses are `ENODEV`.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
        self.cv.notify_all();
    }

    /// True once ended.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// Save: bytes not yet read.
    #[must_use]
    pub fn pending(&self) -> u64 {
        let g = self.lock();
        (g.data.len() - g.pos) as u64
    }

    /// Save: the reader's rules (module docs).
    ///
    /// # Errors
    /// [`Error::TransferEnded`] (`ENODEV`), [`Error::NoData`] (`ENOMSG`), or
    /// [`Error::Migration`] on a resume transfer (`EINVAL`, a write-only file).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        if self.dir != Direction::Save {
            return Err(Error::Migration {
                reason: "read on a RESUMING data fd",
            });
        }
        let mut g = self.lock();
        if g.ended {
            return Err(Error::TransferEnded);
        }
        let n = buf.len().min(g.data.len() - g.pos);
        if n == 0 && !buf.is_empty() {
            return if g.complete {
                Ok(0)
            } else {
                Err(Error::NoData)
            };
        }
        let p = g.pos;
        buf[..n].copy_from_slice(&g.data[p..p + n]);
        g.pos += n;
        Ok(n)
    }

    /// Resume: appends `data` (module docs).
    ///
    /// # Errors
    /// [`Error::TransferEnded`] (`ENODEV`), [`Error::StreamTooBig`] (`ENOMEM`), or
    /// [`Error::Migration`] on a save transfer (`EINVAL`, a read-only file).
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        if self.dir != Direction::Resume {
            return Err(Error::Migration {
                reason: "write on a saving data fd",
            });
        }
        let mut g = self.lock();
        if g.ended {
            return Err(Error::TransferEnded);
        }
        if (g.data.len() + data.len()) as u64 > self.limit {
            return Err(Error::StreamTooBig { max: self.limit });
        }
        g.data.extend_from_slice(data);
        Ok(data.len())
    }

    /// Resume: the bytes received so far (a copy; the transfer keeps them, so a failed load
    /// can be retried after more writes, as in mtty).
    pub(crate) fn received(&self) -> std::result::Result<Vec<u8>, String> {
        let g = self.lock();
        if g.overflow {
            return Err(format!(
                "stream longer than the {} bytes accepted",
                self.limit
            ));
        }
        Ok(g.data.clone())
    }

    /// Save, pre-copy: `(initial_bytes, dirty_bytes)` of `VFIO_MIG_GET_PRECOPY_INFO`.
    ///
    /// # Errors
    /// [`Error::TransferEnded`].
    pub(crate) fn precopy_info(&self) -> Result<(u64, u64)> {
        let g = self.lock();
        if g.ended {
            return Err(Error::TransferEnded);
        }
        Ok(((g.data.len() - g.pos) as u64, 0))
    }

    /// Pump side: waits for bytes; `None` at the end of the stream or once ended.
    fn next_chunk(&self, max: usize) -> Option<Vec<u8>> {
        let mut g = self.lock();
        loop {
            if g.ended {
                return None;
            }
            if g.pos < g.data.len() {
                let n = max.min(g.data.len() - g.pos);
                let p = g.pos;
                let v = g.data[p..p + n].to_vec();
                g.pos += n;
                return Some(v);
            }
            if g.complete {
                return None;
            }
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(50))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }

    /// Drain side: appends bytes that came through the pipe (the limit is reported at load).
    fn push_drained(&self, data: &[u8]) {
        let mut g = self.lock();
        if (g.data.len() + data.len()) as u64 > self.limit {
            g.overflow = true;
        } else {
            g.data.extend_from_slice(data);
        }
    }
}

/// How the bytes of a v2 data fd move (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataFdMode {
    /// A device thread moves the bytes through the pipe; nothing to route.
    #[default]
    Pipe,
    /// The drop-in routes `read`/`write`/`ioctl` on the fd to the [`DataFile`].
    Routed,
}

/// A v2 migration data fd: the fd the program holds and the transfer behind it.
#[derive(Debug)]
pub struct DataFile {
    transfer: Arc<Transfer>,
    /// The program's fd number (owned by the program, never closed here).
    fd: RawFd,
    /// Our end of the pipe (pipe mode); kept open so the program never sees EPIPE/SIGPIPE.
    own: Option<OwnedFd>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    mode: DataFdMode,
}

impl Drop for DataFile {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(Error::Os {
            op: "pipe2",
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblock(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on an fd we own; no memory is passed.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// `poll` one fd for `events`, at most `ms` milliseconds; true if ready.
fn wait_fd(fd: RawFd, events: libc::c_short, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&raw mut p, 1, ms) };
    rc > 0
}

impl DataFile {
    /// Creates the fd for `transfer`: the program gets the pipe's read end for a save, the
    /// write end for a resume.
    pub(crate) fn new(transfer: Arc<Transfer>, mode: DataFdMode) -> Result<Arc<DataFile>> {
        let (r, w) = pipe()?;
        let (theirs, ours) = match transfer.direction() {
            Direction::Save => (r, w),
            Direction::Resume => (w, r),
        };
        let stop = Arc::new(AtomicBool::new(false));
        // Non-blocking in both modes: `settle` drains what is in the pipe now, and in routed
        // mode the program still holds the write end when it leaves RESUMING (a blocking read
        // there waited for bytes that never come: found by the migration_stream fuzz target).
        set_nonblock(ours.as_raw_fd());
        let thread = if mode == DataFdMode::Pipe {
            let t = transfer.clone();
            let s = stop.clone();
            let dup = ours.try_clone().map_err(|e| Error::Os {
                op: "dup",
                errno: e.raw_os_error().unwrap_or(0),
            })?;
            let h = match transfer.direction() {
                Direction::Save => crate::thread::spawn("vfio-mig-save", move || pump(&t, dup, &s)),
                Direction::Resume => {
                    crate::thread::spawn("vfio-mig-resume", move || drain(&t, &dup, &s))
                }
            }
            .map_err(|e| Error::Os {
                op: "spawn",
                errno: e.raw_os_error().unwrap_or(libc::EAGAIN),
            })?;
            Some(h)
        } else {
            None
        };
        // The program owns its end from here on.
        let fd = std::os::fd::IntoRawFd::into_raw_fd(theirs);
        let own = match transfer.direction() {
            // A save pump closes its own dup at the end of the stream (EOF); keeping `ours`
            // too would hide the EOF, so a save keeps nothing.
            Direction::Save => {
                drop(ours);
                None
            }
            Direction::Resume => Some(ours),
        };
        Ok(Arc::new(DataFile {
            transfer,
            fd,
            own,
            stop,
            thread: Mutex::new(thread),
            mode,
        }))
    }

    /// The fd number handed to the program.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// How the bytes move.
    #[must_use]
    pub fn mode(&self) -> DataFdMode {
        self.mode
    }

    /// The transfer behind the fd.
    #[must_use]
    pub fn transfer(&self) -> &Arc<Transfer> {
        &self.transfer
    }

    /// Routed `read(fd, buf)` (`mtty_save_read` plus `ENOMSG`): see the module docs.
    ///
    /// # Errors
    /// As [`Transfer::read`].
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        self.transfer.read(buf)
    }

    /// Routed `write(fd, data)` (`mtty_resume_write`).
    ///
    /// # Errors
    /// As [`Transfer::write`].
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        self.transfer.write(data)
    }

    /// Routed `pread`/`pwrite`: always `ESPIPE` (the file is a stream).
    ///
    /// # Errors
    /// [`Error::NotSeekable`].
    pub fn positional(&self) -> Result<usize> {
        Err(Error::NotSeekable)
    }

    /// Waits for the pump or drain thread to finish its work (resume: every byte the program
    /// wrote before this call is in the transfer).
    pub(crate) fn settle(&self) {
        self.stop_thread();
        if let (Some(own), Direction::Resume) = (&self.own, self.transfer.direction()) {
            drain_now(&self.transfer, own.as_raw_fd());
        }
    }

    fn stop_thread(&self) {
        self.stop.store(true, Ordering::Release);
        let h = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

/// Save pump: transfer → pipe; closes its end at the end of the stream or when ended.
fn pump(t: &Transfer, w: OwnedFd, stop: &AtomicBool) {
    let fd = w.as_raw_fd();
    'outer: while let Some(chunk) = t.next_chunk(64 << 10) {
        let mut off = 0;
        while off < chunk.len() {
            if stop.load(Ordering::Acquire) || t.is_ended() {
                break 'outer;
            }
            if !wait_fd(fd, libc::POLLOUT, 20) {
                continue;
            }
            let rest = &chunk[off..];
            // SAFETY: `rest` is valid for `rest.len()` bytes; `fd` is our open pipe end.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            match n {
                n if n > 0 => off += n.unsigned_abs(),
                _ => {
                    let e = std::io::Error::last_os_error().raw_os_error();
                    if e != Some(libc::EAGAIN) && e != Some(libc::EINTR) {
                        // The program closed its end (EPIPE; SIGPIPE is blocked here).
                        break 'outer;
                    }
                }
            }
        }
    }
    drop(w);
}

/// Reads what is in the pipe now (non-blocking end) into the transfer.
fn drain_now(t: &Transfer, fd: RawFd) -> bool {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: `buf` is valid for its length; `fd` is our open, non-blocking pipe end.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            t.push_drained(&buf[..n.unsigned_abs()]);
            continue;
        }
        // 0: every writer closed; <0: EAGAIN (empty) or an error.
        return n == 0;
    }
}

/// Resume drain: pipe → transfer until stopped or every writer closed.
fn drain(t: &Transfer, r: &OwnedFd, stop: &AtomicBool) {
    let fd = r.as_raw_fd();
    while !stop.load(Ordering::Acquire) {
        if wait_fd(fd, libc::POLLIN, 20) && drain_now(t, fd) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_reads_give_data_then_enomsg_until_complete_then_eof() {
        let t = Transfer::save(b"abc".to_vec(), false);
        let mut b = [0u8; 2];
        assert_eq!(t.read(&mut b).unwrap(), 2);
        assert_eq!(t.read(&mut b).unwrap(), 1);
        assert_eq!(t.read(&mut b).unwrap_err().errno(), libc::ENOMSG);
        t.finish_with(b"d");
        assert_eq!(t.read(&mut b).unwrap(), 1);
        assert_eq!(t.read(&mut b).unwrap(), 0);
        t.end();
        assert_eq!(t.read(&mut b).unwrap_err().errno(), libc::ENODEV);
    }

    #[test]
    fn resume_writes_append_until_the_limit_then_enomem() {
        let t = Transfer::resume_limited(4);
        assert_eq!(t.write(b"xy").unwrap(), 2);
        assert_eq!(t.write(b"abc").unwrap_err().errno(), libc::ENOMEM);
        assert_eq!(t.write(b"ab").unwrap(), 2);
        assert_eq!(t.received().unwrap(), b"xyab");
        assert_eq!(t.read(&mut [0u8; 1]).unwrap_err().errno(), libc::EINVAL);
        t.end();
        assert_eq!(t.write(b"z").unwrap_err().errno(), libc::ENODEV);
    }
}
