//! Where [`Mm`](super::Mm) reads the locked-memory limit, the lock capability and the memory the
//! process locked by itself: the seam between the accounting and the process's credentials.
//!
//! The kernel reads these at the moment it needs them, never once for the life of a container:
//! - RLIMIT_MEMLOCK at every charge: `vfio_lock_acct` → `mm_lock_acct` → `__account_locked_vm`
//!   reads `task_rlimit(task, RLIMIT_MEMLOCK)` each time (and `vfio_pin_pages_remote` reads
//!   `rlimit(RLIMIT_MEMLOCK)` for its own pre-check), v6.18;
//! - CAP_IPC_LOCK at every MAP_DMA: `vfio_dma_do_map` stores `dma->lock_cap =
//!   capable(CAP_IPC_LOCK)` in each new mapping, and every later charge for that mapping (replay,
//!   emulated pins) uses the stored value; `vfio_change_dma_owner` reads it again;
//! - the charge itself lands in `mm->locked_vm`, which also counts every `VM_LOCKED` page the
//!   process has `mlock`ed (`mlock_fixup`), so both compete for one limit.
//!
//! [`ProcessLimits`] reads all three live from this process (getrlimit, `capget`, and `VmLck`
//! of `/proc/thread-self/status`, read only for a charge against a finite limit without the
//! capability); [`FixedLimits`] holds constants, for tests, benches and
//! [`FakeMemory`](super::FakeMemory) address spaces. Amounts are bytes; [`Mm`](super::Mm) turns
//! them into pages.

use std::fmt::Debug;
use std::sync::Arc;

use super::LockCapability;

/// The bit of `CAP_IPC_LOCK` in a capability set (`<linux/capability.h>`).
const CAP_IPC_LOCK_BIT: u32 = 14;

/// Bytes per kB in `/proc/*/status` (`VmLck:` is printed in kB).
const STATUS_KB: u64 = 1024;

/// The process's locked-memory credentials, read when the accounting needs them.
pub trait LockLimits: Send + Sync + Debug {
    /// RLIMIT_MEMLOCK (soft) in bytes now; `None` if unlimited (`RLIM_INFINITY`).
    fn memlock_bytes(&self) -> Option<u64>;

    /// `capable(CAP_IPC_LOCK)` now, for the calling thread.
    fn capability(&self) -> LockCapability;

    /// Bytes the process has locked by other means (`mlock`, `mlockall`, `MAP_LOCKED`): they
    /// share `mm->locked_vm`, hence the limit, with our charges. Default: none.
    fn mlocked_bytes(&self) -> u64 {
        0
    }
}

impl<T: LockLimits + ?Sized> LockLimits for Arc<T> {
    fn memlock_bytes(&self) -> Option<u64> {
        (**self).memlock_bytes()
    }
    fn capability(&self) -> LockCapability {
        (**self).capability()
    }
    fn mlocked_bytes(&self) -> u64 {
        (**self).mlocked_bytes()
    }
}

/// Constant limits: what [`Mm::new`](super::Mm::new) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedLimits {
    /// The limit in bytes (`None`: unlimited).
    pub memlock_bytes: Option<u64>,
    /// The capability every MAP_DMA sees.
    pub capability: LockCapability,
    /// Bytes locked by other means.
    pub mlocked_bytes: u64,
}

impl LockLimits for FixedLimits {
    fn memlock_bytes(&self) -> Option<u64> {
        self.memlock_bytes
    }
    fn capability(&self) -> LockCapability {
        self.capability
    }
    fn mlocked_bytes(&self) -> u64 {
        self.mlocked_bytes
    }
}

/// This process's limits, read live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessLimits {
    /// `Some(limit)`: a fixed limit replacing RLIMIT_MEMLOCK (the preload's `TYPE1_MEMLOCK`).
    memlock_override: Option<Option<u64>>,
}

impl ProcessLimits {
    /// RLIMIT_MEMLOCK, CAP_IPC_LOCK and `VmLck`, all read at each use.
    #[must_use]
    pub fn new() -> Self {
        ProcessLimits::default()
    }

    /// As [`ProcessLimits::new`], but with a fixed limit in bytes instead of RLIMIT_MEMLOCK
    /// (`None`: unlimited). The capability and `VmLck` are still read live.
    #[must_use]
    pub fn with_memlock(limit_bytes: Option<u64>) -> Self {
        ProcessLimits {
            memlock_override: Some(limit_bytes),
        }
    }
}

impl LockLimits for ProcessLimits {
    fn memlock_bytes(&self) -> Option<u64> {
        match self.memlock_override {
            Some(fixed) => fixed,
            None => process_memlock_limit(),
        }
    }

    /// Capabilities are per thread (`capable()` checks `current`), so this reads the calling
    /// thread's effective set (`capget`, one system call; the thread's `CapEff` if that fails).
    /// If neither can be read, the limit applies.
    fn capability(&self) -> LockCapability {
        match thread_cap_eff().or_else(|| read_status().and_then(|s| s.cap_eff)) {
            Some(caps) if caps & (1 << CAP_IPC_LOCK_BIT) != 0 => LockCapability::Unlimited,
            _ => LockCapability::Limited,
        }
    }

    /// `VmLck` (the process's `locked_vm`, in kB); 0 if it cannot be read.
    fn mlocked_bytes(&self) -> u64 {
        read_status()
            .and_then(|s| s.vm_lck_kb)
            .map_or(0, |kb| kb.saturating_mul(STATUS_KB))
    }
}

/// RLIMIT_MEMLOCK (soft) of this process in bytes, `None` if unlimited.
#[must_use]
pub fn process_memlock_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` to a valid pointer.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if r != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(rl.rlim_cur)
    }
}

/// `struct __user_cap_header_struct` (include/uapi/linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 passes two of them (capabilities 0–31, 32–63).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// The calling thread's effective capability set (`capget` with pid 0: the caller), by raw
/// system call (inside the drop-in, libc's entry points may be interposed).
fn thread_cap_eff() -> Option<u64> {
    let mut h = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget reads the header and writes two `__user_cap_data_struct`s, for version 3,
    // into a valid array of two.
    let r = unsafe { libc::syscall(libc::SYS_capget, &raw mut h, d.as_mut_ptr()) };
    (r == 0).then(|| u64::from(d[0].effective) | u64::from(d[1].effective) << 32)
}

/// The fields of `/proc/<pid>/status` the accounting reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StatusFields {
    /// `CapEff:` (hex bit mask).
    pub(crate) cap_eff: Option<u64>,
    /// `VmLck:` in kB (absent for kernel threads).
    pub(crate) vm_lck_kb: Option<u64>,
}

/// Parses `CapEff:` and `VmLck:` out of a status file's text.
pub(crate) fn parse_status(text: &str) -> StatusFields {
    let mut f = StatusFields::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("CapEff:") {
            f.cap_eff = u64::from_str_radix(v.trim(), 16).ok();
        } else if let Some(v) = line.strip_prefix("VmLck:") {
            f.vm_lck_kb = v
                .trim()
                .strip_suffix("kB")
                .and_then(|n| n.trim().parse().ok());
        }
    }
    f
}

/// The calling thread's status (`/proc/thread-self`, Linux 3.17+; `/proc/self` before).
fn read_status() -> Option<StatusFields> {
    std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .ok()
        .map(|t| parse_status(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    mod status {
        use super::*;

        #[test]
        fn cap_eff_and_vm_lck_are_parsed() {
            let text = "Name:\tx\nVmLck:\t      16 kB\nCapEff:\t0000000000004000\n";
            assert_eq!(
                parse_status(text),
                StatusFields {
                    cap_eff: Some(1 << 14),
                    vm_lck_kb: Some(16)
                }
            );
        }

        #[test]
        fn missing_or_garbled_fields_are_none() {
            assert_eq!(
                parse_status("VmLck:\tlots\nCapEff:\tzz\n"),
                StatusFields::default()
            );
        }

        #[test]
        fn capget_gives_the_threads_cap_eff() {
            let s = read_status().unwrap();
            assert_eq!(thread_cap_eff(), s.cap_eff);
        }

        #[test]
        fn this_process_reports_its_own_status() {
            // Every user process has both lines.
            let s = read_status().unwrap();
            assert!(s.cap_eff.is_some() && s.vm_lck_kb.is_some(), "{s:?}");
        }
    }

    #[test]
    fn the_override_replaces_rlimit_memlock_but_not_the_capability() {
        let l = ProcessLimits::with_memlock(Some(1 << 20));
        assert_eq!(l.memlock_bytes(), Some(1 << 20));
        assert_eq!(ProcessLimits::with_memlock(None).memlock_bytes(), None);
        assert_eq!(
            ProcessLimits::new().memlock_bytes(),
            process_memlock_limit()
        );
    }
}
