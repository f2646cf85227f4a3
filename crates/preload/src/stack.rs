//! Which user buffers can be touched directly: those on the calling thread's own stack, above
//! the current stack pointer.
//!
//! A user buffer is normally copied through `type1::usercopy` (a system call that fails with
//! `EFAULT` instead of faulting). A buffer that lies between our own stack frame and the top of
//! the stack area the thread is running on is part of that thread's live stack: its caller's
//! frames. It is mapped, readable and writable for as long as the thread runs on it, so a
//! register-sized device access (QEMU's `vfio_region_read`/`_write` pass a local variable) can
//! load or store it without a system call and without any chance of a fault.
//!
//! The stack area is asked of the kernel once per thread with `PROCMAP_QUERY` on
//! `/proc/self/maps` (`do_procmap_query`, fs/proc/task_mmu.c, Linux 6.11): the area containing
//! our stack pointer, which must be private, anonymous, readable and writable, and be the
//! thread's own stack (see [`query`]). The answer is kept per thread. A thread that runs on another stack (a coroutine, `sigaltstack`) asks again,
//! at most [`MAX_QUERIES`] times; without the ioctl (older kernels, no `/proc`), or past that,
//! every buffer goes through `type1::usercopy`. Areas are `[start, end)`.
//!
//! Everything here is async-signal-safe: raw system calls, no allocation, no lock.

use std::cell::Cell;

use type1::mm::procmap::query_raw;

/// Queries per thread (a thread that keeps switching stacks stops asking).
const MAX_QUERIES: u32 = 8;

thread_local! {
    /// This thread's known stack area `[start, end)` and the queries made.
    static STACK: Cell<(u64, u64, u32)> = const { Cell::new((0, 0, 0)) };
}

/// The thread pointer: the x86-64 TLS ABI keeps it in the first word of the thread control
/// block, at `%fs:0`. glibc puts a thread's control block (and its static TLS below it) at the
/// top of the block that holds its stack, also for a stack the program supplied.
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reads the first word of this thread's own control block, which the TLS ABI
    // requires to hold the thread pointer; no memory is written.
    unsafe {
        std::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) tp,
            options(nostack, readonly, preserves_flags)
        );
    }
    tp
}

/// This thread's stack area containing `addr`, asked of the kernel: the private, anonymous,
/// read-write area that holds this thread's control block (a thread's own stack block; the
/// area ends at the control block, below which its stack grows), or the one the kernel names
/// `[stack]` (the main thread's). Any other area (a coroutine stack on the heap, an alternate
/// signal stack) is not accepted: it may end beyond what the thread owns.
fn query(addr: u64) -> Option<(u64, u64)> {
    // SAFETY: a NUL-terminated path; raw openat, never our interposer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    let mut name = [0u8; 16];
    // A name too long for the buffer is not "[stack]": ask again without it.
    let q = query_raw(fd, addr, &mut name).or_else(|_| {
        name = [0; 16];
        query_raw(fd, addr, &mut [])
    });
    // SAFETY: closes the fd opened above.
    unsafe { libc::syscall(libc::SYS_close, fd) };
    let q = q.ok()?;
    let private = !q.shared && q.inode == 0 && q.dev.0 == 0;
    if !(q.read && q.write && private && (q.start..q.end).contains(&addr)) {
        return None;
    }
    let tp = thread_pointer();
    if (q.start..q.end).contains(&tp) {
        return Some((q.start, tp));
    }
    (name.get(..q.name_len) == Some(&b"[stack]\0"[..])).then_some((q.start, q.end))
}

/// True if `[addr, addr + len)` lies on this thread's stack above the caller's frame, so it
/// can be read and written directly (see the module docs). Never inlined: our own frame must
/// lie below every frame of the caller.
#[inline(never)]
pub(crate) fn direct(addr: u64, len: usize) -> bool {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as u64;
    let Some(end) = addr.checked_add(len as u64) else {
        return false;
    };
    if addr < here {
        return false;
    }
    let Ok((mut lo, mut hi, n)) = STACK.try_with(Cell::get) else {
        return false;
    };
    if !(lo..hi).contains(&here) {
        if n >= MAX_QUERIES {
            return false;
        }
        if let Some((l, h)) = query(here) {
            (lo, hi) = (l, h);
        }
        let _ = STACK.try_with(|s| s.set((lo, hi, n + 1)));
        if !(lo..hi).contains(&here) {
            return false;
        }
    }
    end <= hi
}

/// The address of a local in the calling function's frame: the floor below which
/// [`StackOrProcess`] never touches memory directly. Inlined, so the local is the caller's.
#[inline(always)]
pub(crate) fn frame_floor() -> u64 {
    let marker = 0u8;
    std::hint::black_box(std::ptr::addr_of!(marker)) as u64
}

/// The host program's memory as an ioctl's user memory: a range on this thread's live stack
/// above `floor` (a local of the interposer the host program called, [`frame_floor`]) and
/// above our frame ([`direct`]) is loaded or stored directly; any other range goes through
/// [`type1::ProcessUserMemory`] (`process_vm_readv`/`writev`, or the pipe), where a bad
/// address is `EFAULT`.
///
/// The floor keeps the engine's and the interposer's own frames out of the direct path: the
/// host program's frames lie above its call into the interposer, so a pointer below the floor
/// is not one of them (a stale pointer below the program's stack pointer) and takes the copy
/// path, as every such pointer did before this path existed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackOrProcess {
    floor: u64,
}

impl StackOrProcess {
    /// User memory for a call entered at `floor` ([`frame_floor`] in the interposer).
    pub(crate) fn new(floor: u64) -> Self {
        StackOrProcess { floor }
    }

    fn on_stack(&self, addr: u64, len: usize) -> bool {
        addr >= self.floor && direct(addr, len)
    }
}

impl type1::UserMemory for StackOrProcess {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), u64> {
        if self.on_stack(addr, buf.len()) {
            // SAFETY: `[addr, addr + len)` is this thread's live stack above the interposer's
            // frame (`on_stack`): the host program's own frames, mapped read-write while this
            // thread runs; no reference of ours points there, and `buf` is our memory.
            unsafe {
                std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len())
            };
            return Ok(());
        }
        type1::ProcessUserMemory.read(addr, buf)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), u64> {
        if self.on_stack(addr, data.len()) {
            // SAFETY: as in `read`; the bytes come from our own buffer.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
            return Ok(());
        }
        type1::ProcessUserMemory.write(addr, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local variable of the caller is on the stack; heap memory and addresses below the
    /// stack pointer are not (they go through `usercopy`, which gives `EFAULT` as
    /// `copy_to_user` does).
    #[test]
    fn only_the_live_stack_above_us_is_direct() {
        let local = [0u8; 8];
        let heap = Box::new([0u8; 8]);
        assert!(direct(local.as_ptr() as u64, local.len()));
        assert!(!direct(heap.as_ptr() as u64, heap.len()));
        assert!(!direct(8, 8));
        assert!(!direct(u64::MAX - 3, 8));
        let (_, hi, _) = STACK.with(Cell::get);
        assert!(!direct(hi - 4, 8), "a range past the top of the stack area");
    }
}
