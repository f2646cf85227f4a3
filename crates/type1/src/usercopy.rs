//! `copy_from_user` / `copy_to_user` for this process's own memory, without ever dereferencing a
//! pointer the host program handed us.
//!
//! The kernel checks a user pointer by taking the page fault and returning `EFAULT`. A userspace
//! library cannot take the fault, so it asks the kernel to do the copy:
//! - first choice, `process_vm_readv`/`process_vm_writev` on our own pid: one system call, which
//!   honours page protections (a read-only page cannot be written) and fails instead of faulting;
//! - fallback, when a seccomp filter forbids those calls (`EPERM` or `ENOSYS`): a private pipe.
//!   Writing user memory into the pipe is `copy_from_user` (`pipe_write`), reading the pipe into
//!   user memory is `copy_to_user` (`pipe_read`), with the same `EFAULT` rules. The pipe is
//!   non-blocking (a fault can never leave us waiting), one per thread (no lock, so `fork` from
//!   another thread cannot leave it locked in the child), used one page at a time, drained after
//!   a partial copy, re-created after `fork` (the child must not share it with the parent) and
//!   whenever its fds stop being the pipe we made (a host program that closes or reuses fd
//!   numbers it does not own cannot make us write into its files).
//!
//! The choice is made once per process, on the first refusal, and stays.
//!
//! Ranges are `[addr, addr + len)`; errors carry the first address that could not be copied.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

/// Which direction a copy goes, seen from the user memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// User memory → our buffer (`copy_from_user`).
    Read,
    /// Our buffer → user memory (`copy_to_user`).
    Write,
}

/// The copy method in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Method {
    /// `process_vm_readv`/`process_vm_writev`.
    VmCalls = 0,
    /// The pipe fallback.
    Pipe = 1,
}

static METHOD: AtomicU8 = AtomicU8::new(Method::VmCalls as u8);

/// Bytes moved through the pipe per step: one page, far below the pipe's capacity.
const PIPE_STEP: usize = 4096;

/// The fallback pipe: its fds, their identity, and the process that made it.
#[derive(Debug)]
struct Pipe {
    rd: i32,
    wr: i32,
    id: [(u64, u64); 2],
    pid: i32,
}

thread_local! {
    static PIPE: RefCell<Option<Pipe>> = const { RefCell::new(None) };
}

/// This process's id, cached (a system call per copy otherwise); 0 until first asked and in a
/// child after `fork` (a `pthread_atfork` handler clears it).
static PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

/// Caches the process id and registers the `fork` handler that clears it. Called early (the
/// drop-in does it when it loads, before the program has threads), it also keeps the first
/// copy from doing the registration. Later calls do nothing.
pub fn init() {
    let _ = pid();
}

/// The calling process's id.
pub(crate) fn pid() -> i32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic, for the process's life.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
    });
    // SAFETY: getpid has no preconditions.
    let p = unsafe { libc::getpid() };
    PID.store(p, Ordering::Relaxed);
    p
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `(st_dev, st_ino)` of an fd, by raw system call.
fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `struct stat` to a valid, exclusively borrowed buffer.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &raw mut st) };
    (r == 0).then_some((st.st_dev, st.st_ino))
}

impl Pipe {
    fn new() -> Option<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two fds to a valid array.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pipe2,
                fds.as_mut_ptr(),
                libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if r != 0 {
            return None;
        }
        Some(Pipe {
            rd: fds[0],
            wr: fds[1],
            id: [identity(fds[0])?, identity(fds[1])?],
            pid: pid(),
        })
    }

    /// True if the fds are still the pipe we made (in this process or an ancestor).
    fn ours(&self) -> bool {
        identity(self.rd) == Some(self.id[0]) && identity(self.wr) == Some(self.id[1])
    }

    /// True if the pipe is ours and not shared with a parent process.
    fn valid(&self) -> bool {
        self.pid == pid() && self.ours()
    }

    /// Empties the pipe (after a partial copy left bytes in it).
    fn drain(&self) {
        let mut scratch = [0u8; PIPE_STEP];
        loop {
            // SAFETY: reads into our own buffer of PIPE_STEP bytes.
            let n =
                unsafe { libc::syscall(libc::SYS_read, self.rd, scratch.as_mut_ptr(), PIPE_STEP) };
            if n <= 0 {
                break;
            }
        }
    }

    /// Moves `len` bytes from `src` to `dst` through the pipe; returns how many arrived.
    /// One of the two is user memory; the kernel checks it.
    fn transfer(&self, src: u64, dst: u64, len: usize) -> usize {
        // SAFETY: write(2) reads `len` bytes at `src`; a bad user address fails with EFAULT
        // or a short count instead of faulting.
        let w = unsafe { libc::syscall(libc::SYS_write, self.wr, src, len) };
        let Ok(w) = usize::try_from(w) else { return 0 };
        if w == 0 {
            return 0;
        }
        // SAFETY: read(2) writes at most `w` bytes at `dst`; a bad user address fails with
        // EFAULT or a short count instead of faulting.
        let r = unsafe { libc::syscall(libc::SYS_read, self.rd, dst, w) };
        let r = usize::try_from(r).unwrap_or(0);
        if r < w {
            self.drain();
        }
        r
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.ours() {
            // SAFETY: both fds are the pipe we created (checked just now); closing our own
            // copies never touches the host program's files.
            unsafe {
                libc::syscall(libc::SYS_close, self.rd);
                libc::syscall(libc::SYS_close, self.wr);
            }
        }
    }
}

fn vm_calls(remote: u64, local: *mut u8, len: usize, dir: Direction) -> Result<usize, i32> {
    let local_iov = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let remote_iov = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    let nr = match dir {
        Direction::Read => libc::SYS_process_vm_readv,
        Direction::Write => libc::SYS_process_vm_writev,
    };
    // SAFETY: `local` points to `len` bytes the caller owns (readable for Write, writable for
    // Read); the kernel validates the remote range and fails instead of faulting. The pid is
    // our own, which needs no ptrace permission.
    let n = unsafe {
        libc::syscall(
            nr,
            pid(),
            &raw const local_iov,
            1usize,
            &raw const remote_iov,
            1usize,
            0usize,
        )
    };
    usize::try_from(n).map_err(|_| errno())
}

fn pipe_copy_with(
    pipe: &Pipe,
    remote: u64,
    local: *mut u8,
    len: usize,
    dir: Direction,
) -> Result<(), u64> {
    let mut done = 0usize;
    while done < len {
        let step = PIPE_STEP.min(len - done);
        let user = remote + done as u64;
        let ours = local as u64 + done as u64;
        let (src, dst) = match dir {
            Direction::Read => (user, ours),
            Direction::Write => (ours, user),
        };
        let n = pipe.transfer(src, dst, step);
        done += n;
        if n < step {
            return Err(remote + done as u64);
        }
    }
    Ok(())
}

fn pipe_copy(remote: u64, local: *mut u8, len: usize, dir: Direction) -> Result<(), u64> {
    let r = PIPE.try_with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            // Re-entered on this thread (a signal handler): a pipe of its own for this copy.
            let pipe = Pipe::new().ok_or(remote)?;
            return pipe_copy_with(&pipe, remote, local, len, dir);
        };
        if !slot.as_ref().is_some_and(Pipe::valid) {
            // Closed or reused by the host program, or inherited from the parent after fork.
            *slot = Pipe::new();
        }
        let pipe = slot.as_ref().ok_or(remote)?;
        pipe_copy_with(pipe, remote, local, len, dir)
    });
    match r {
        Ok(r) => r,
        // The thread is exiting (its pipe is gone): a pipe of its own for this copy.
        Err(_) => {
            let pipe = Pipe::new().ok_or(remote)?;
            pipe_copy_with(&pipe, remote, local, len, dir)
        }
    }
}

/// Copies `len` bytes between our buffer `local` and this process's address `remote`.
///
/// # Errors
/// `Err(addr)`: the first user address that could not be copied (`EFAULT`).
pub(crate) fn copy(remote: u64, local: *mut u8, len: usize, dir: Direction) -> Result<(), u64> {
    if len == 0 {
        return Ok(());
    }
    if METHOD.load(Ordering::Relaxed) == Method::VmCalls as u8 {
        match vm_calls(remote, local, len, dir) {
            Ok(done) if done == len => return Ok(()),
            Ok(done) => return Err(remote + done as u64),
            Err(libc::EPERM | libc::ENOSYS) => {
                METHOD.store(Method::Pipe as u8, Ordering::Relaxed);
            }
            Err(_) => return Err(remote),
        }
    }
    pipe_copy(remote, local, len, dir)
}

/// `copy_from_user`: fills `buf` from this process's address `addr`.
///
/// # Errors
/// `Err(addr)` of the first byte that cannot be read.
pub fn copy_from_process(addr: u64, buf: &mut [u8]) -> Result<(), u64> {
    copy(addr, buf.as_mut_ptr(), buf.len(), Direction::Read)
}

/// `copy_to_user`: writes `data` at this process's address `addr` (read-only memory fails).
///
/// # Errors
/// `Err(addr)` of the first byte that cannot be written.
pub fn copy_to_process(addr: u64, data: &[u8]) -> Result<(), u64> {
    copy(addr, data.as_ptr().cast_mut(), data.len(), Direction::Write)
}

/// `copy_to_user` of several buffers: each `(addr, data)` is written at this process's address
/// `addr`, in order, with one `process_vm_writev` per 1024 of them (the pipe fallback copies
/// them one by one).
///
/// # Errors
/// `Err((index, addr))`: the first write not wholly copied and its first byte that could not
/// be written; the writes before it landed.
pub fn copy_to_process_vectored(writes: &[(u64, &[u8])]) -> Result<(), (usize, u64)> {
    /// `UIO_MAXIOV`.
    const MAX_IOV: usize = 1024;
    for (b, batch) in writes.chunks(MAX_IOV).enumerate() {
        let base = b * MAX_IOV;
        if METHOD.load(Ordering::Relaxed) == Method::VmCalls as u8 {
            match vm_writev(batch) {
                Ok(done) => {
                    // The first write not wholly copied holds the first address that failed.
                    let mut left = done;
                    for (k, &(addr, data)) in batch.iter().enumerate() {
                        if left < data.len() {
                            return Err((base + k, addr + left as u64));
                        }
                        left -= data.len();
                    }
                    continue;
                }
                Err(libc::EPERM | libc::ENOSYS) => {
                    METHOD.store(Method::Pipe as u8, Ordering::Relaxed);
                }
                Err(_) => return Err((base, batch.first().map_or(0, |w| w.0))),
            }
        }
        for (k, &(addr, data)) in batch.iter().enumerate() {
            copy_to_process(addr, data).map_err(|a| (base + k, a))?;
        }
    }
    Ok(())
}

/// One `process_vm_writev` of at most `UIO_MAXIOV` buffers: the bytes it copied.
fn vm_writev(writes: &[(u64, &[u8])]) -> Result<usize, i32> {
    let local: Vec<libc::iovec> = writes
        .iter()
        .map(|&(_, d)| libc::iovec {
            iov_base: d.as_ptr().cast_mut().cast(),
            iov_len: d.len(),
        })
        .collect();
    let remote: Vec<libc::iovec> = writes
        .iter()
        .map(|&(a, d)| libc::iovec {
            iov_base: a as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    // SAFETY: every local iovec names a buffer the caller lends us for reading; the kernel
    // validates the remote ranges and fails instead of faulting. The pid is our own, which
    // needs no ptrace permission.
    let n = unsafe {
        libc::syscall(
            libc::SYS_process_vm_writev,
            pid(),
            local.as_ptr(),
            local.len(),
            remote.as_ptr(),
            remote.len(),
            0usize,
        )
    };
    usize::try_from(n).map_err(|_| errno())
}

/// The bytes of `words` in memory order (native-endian): what `copy_to_user` of a `u64`
/// array copies.
pub(crate) fn words_as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: the slice covers exactly the memory of `words` and borrows it for the same
    // lifetime; `u8` has no alignment or validity requirement.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// [`words_as_bytes`], writable: any bytes written form valid `u64`s.
pub(crate) fn words_as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in `words_as_bytes`, borrowed mutably for the same lifetime; every byte pattern
    // is a valid `u64`.
    unsafe {
        std::slice::from_raw_parts_mut(
            words.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(words),
        )
    }
}

/// True once a refusal of `process_vm_readv`/`writev` switched this process to the pipe.
#[must_use]
pub fn using_pipe_fallback() -> bool {
    METHOD.load(Ordering::Relaxed) == Method::Pipe as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `copy_to_user` of several buffers writes them in order and stops at the first one that
    /// faults, naming it and its first bad byte (as the kernel's copy of an iovec would).
    #[test]
    fn vectored_copy_writes_in_order_and_names_the_first_fault() {
        let mut a = [0u8; 4];
        let mut b = [0u8; 3];
        let (pa, pb) = (a.as_mut_ptr() as u64, b.as_mut_ptr() as u64);
        copy_to_process_vectored(&[(pa, b"abcd"), (pb, b"xyz"), (pa + 1, b"Q")]).unwrap();
        assert_eq!((&a, &b), (b"aQcd", b"xyz"));
        let r = copy_to_process_vectored(&[(pb, b"123"), (8, b"zz"), (pa, b"no")]);
        assert_eq!(r, Err((1, 8)));
        assert_eq!(&b, b"123");
        assert_eq!(&a, b"aQcd");
    }

    fn with_method<R>(m: Method, f: impl FnOnce() -> R) -> R {
        let old = METHOD.swap(m as u8, Ordering::SeqCst);
        let r = f();
        METHOD.store(old, Ordering::SeqCst);
        r
    }

    fn checks() {
        let src = vec![7u8; 3 * PIPE_STEP + 5];
        let mut dst = vec![0u8; src.len()];
        copy_from_process(src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(src, dst);
        let mut out = vec![0u8; 10];
        copy_to_process(out.as_mut_ptr() as u64, &[1; 10]).unwrap();
        assert_eq!(out, [1; 10]);
        // A pointer into the first page is never mapped: EFAULT at that address.
        let mut b = [0u8; 8];
        assert_eq!(copy_from_process(16, &mut b), Err(16));
        assert_eq!(copy_to_process(16, &b), Err(16));
        // Read-only memory cannot be written (copy_to_user honours protections).
        let ro: &'static [u8] = b"read-only bytes";
        assert_eq!(
            copy_to_process(ro.as_ptr() as u64, b"x"),
            Err(ro.as_ptr() as u64)
        );
    }

    #[test]
    fn both_methods_copy_and_report_the_first_bad_address() {
        with_method(Method::VmCalls, checks);
        with_method(Method::Pipe, checks);
    }
}
