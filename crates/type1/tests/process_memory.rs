//! `ProcessMemory` and `ProcessLimits` against this process's real mappings and credentials:
//! the long-term pin rules of mm/gup.c `check_vma_flags` (v6.18) for each kind of memory, and
//! the live locked-memory account (issue 11).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use type1::mm::{
    Access, AddressSpace, LockCapability, LockLimits, MlockPolicy, Mm, ProcessLimits, ProcessMemory,
};

const PAGE: u64 = 4096;

/// Tests that mlock or change RLIMIT_MEMLOCK (process-wide) run one at a time.
static PROCESS_WIDE: Mutex<()> = Mutex::new(());

/// An `mmap` that is unmapped on drop.
struct Area {
    addr: u64,
    len: usize,
}

impl Area {
    fn new(pages: u64, prot: i32, flags: i32, fd: i32) -> Area {
        let len = usize::try_from(pages * PAGE).unwrap();
        // SAFETY: a fresh mapping chosen by the kernel; nothing else is touched.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        Area {
            addr: p as u64,
            len,
        }
    }

    fn anon(pages: u64, prot: i32) -> Area {
        Area::new(pages, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// A file of `pages` pages created in `dir` (removed at once; the fd keeps it). Each call gets
/// its own name: tests run in parallel threads of one process.
fn file_in(dir: &Path, pages: u64) -> OwnedFd {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("type1-pm-{}-{n}-{pages}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(pages * PAGE).unwrap();
    std::fs::remove_file(&path).unwrap();
    f.into()
}

fn fs_magic(dir: &Path) -> i64 {
    let c = CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable `statfs`.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    st.f_type
}

/// This build's temp dir, which must be on a disk file system for the dirty-tracking rule.
fn disk_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let m = fs_magic(&d);
    assert!(
        m != libc::TMPFS_MAGIC && m != libc::HUGETLBFS_MAGIC,
        "{} is on a memory file system (magic {m:#x}); the dirty-tracking rule needs a disk one",
        d.display()
    );
    d
}

fn pin(pm: &ProcessMemory, a: &Area, pages: u64, access: Access) -> Result<u64, u64> {
    let r = pm.pin_run(a.addr, pages, access)?;
    assert!(!r.reserved);
    pm.unpin_run(&r);
    Ok(r.npages)
}

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

mod gup_rules {
    use super::*;

    #[test]
    fn write_only_anonymous_memory_pins_for_write_but_not_for_read() {
        // check_vma_flags: FOLL_WRITE needs VM_WRITE only; a read pin needs VM_READ.
        let pm = ProcessMemory::default();
        let a = Area::anon(2, libc::PROT_WRITE);
        assert_eq!(pin(&pm, &a, 2, Access::Write), Ok(2));
        assert_eq!(pin(&pm, &a, 2, Access::Read), Err(a.addr));
    }

    #[test]
    fn prot_none_memory_faults_for_both_accesses() {
        let pm = ProcessMemory::default();
        let a = Area::anon(2, libc::PROT_NONE);
        assert_eq!(pin(&pm, &a, 2, Access::Write), Err(a.addr));
        assert_eq!(pin(&pm, &a, 2, Access::Read), Err(a.addr));
    }

    #[test]
    fn shared_disk_file_refuses_write_pins_and_allows_read_pins() {
        // writable_file_mapping_allowed: a FOLL_LONGTERM write pin of an area that
        // vma_needs_dirty_tracking (shared, writable, on a file system that writes back) faults.
        let pm = ProcessMemory::default();
        let fd = file_in(&disk_dir(), 4);
        let a = Area::new(4, RW, libc::MAP_SHARED, fd.as_raw_fd());
        assert_eq!(pin(&pm, &a, 4, Access::Write), Err(a.addr));
        assert_eq!(pin(&pm, &a, 4, Access::Read), Ok(4));
    }

    #[test]
    fn private_disk_file_mapping_pins_for_write() {
        // vma_needs_dirty_tracking: only shared writable areas need it.
        let pm = ProcessMemory::default();
        let fd = file_in(&disk_dir(), 4);
        let a = Area::new(4, RW, libc::MAP_PRIVATE, fd.as_raw_fd());
        assert_eq!(pin(&pm, &a, 4, Access::Write), Ok(4));
    }

    #[test]
    fn shmem_files_pin_for_write() {
        // shmem (tmpfs, memfd, shared anonymous) has no page_mkwrite and no writeback.
        let pm = ProcessMemory::default();
        assert_eq!(
            fs_magic(Path::new("/dev/shm")),
            libc::TMPFS_MAGIC,
            "/dev/shm"
        );
        let tmp = file_in(Path::new("/dev/shm"), 2);
        let a = Area::new(2, RW, libc::MAP_SHARED, tmp.as_raw_fd());
        assert_eq!(pin(&pm, &a, 2, Access::Write), Ok(2));

        // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
        let mfd = unsafe { libc::memfd_create(c"type1-pm".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(mfd >= 0);
        // SAFETY: `mfd` is a fresh fd nobody else owns.
        let mfd = unsafe { OwnedFd::from_raw_fd(mfd) };
        // SAFETY: sizes the memfd we own.
        assert_eq!(unsafe { libc::ftruncate(mfd.as_raw_fd(), 2 * 4096) }, 0);
        let m = Area::new(2, RW, libc::MAP_SHARED, mfd.as_raw_fd());
        assert_eq!(pin(&pm, &m, 2, Access::Write), Ok(2));

        let s = Area::new(2, RW, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1);
        assert_eq!(pin(&pm, &s, 2, Access::Write), Ok(2));
    }

    #[test]
    fn a_run_ends_where_the_next_area_refuses() {
        // The run covers adjacent areas while each allows the pin; MAP then pins the rest
        // with a new run, whose first page faults.
        let pm = ProcessMemory::default();
        let a = Area::anon(4, RW);
        // SAFETY: changes the protection of the second half of our own mapping.
        let r = unsafe {
            libc::mprotect(
                (a.addr + 2 * PAGE) as *mut libc::c_void,
                8192,
                libc::PROT_READ,
            )
        };
        assert_eq!(r, 0);
        assert_eq!(pin(&pm, &a, 4, Access::Write), Ok(2));
        assert_eq!(pin(&pm, &a, 4, Access::Read), Ok(4));
        assert_eq!(
            pm.pin_run(a.addr + 2 * PAGE, 2, Access::Write),
            Err(a.addr + 2 * PAGE)
        );
    }
}

mod live_account {
    use super::*;

    #[test]
    fn mlock_policy_lock_does_not_count_its_own_pins_twice() {
        // Our mlock of a pinned run shows in VmLck; the charge for that run must not count it
        // again as memory the process locked by itself.
        let _g = PROCESS_WIDE.lock().unwrap();
        let before = ProcessLimits::new().mlocked_bytes() / PAGE;
        let limits = ProcessLimits::with_memlock(Some((before + 4) * PAGE));
        let mm = Mm::with_limits(
            Box::new(ProcessMemory::new(MlockPolicy::Lock)),
            Box::new(limits),
        );
        let a = Area::anon(4, RW);
        let run = mm.space().pin_run(a.addr, 4, Access::Write).unwrap();
        assert_eq!(run.npages, 4);
        assert_eq!(
            limits.mlocked_bytes() / PAGE,
            before + 4,
            "VmLck shows the mlock"
        );
        assert_eq!(mm.space().os_locked_pages(), 4);
        mm.charge(4, LockCapability::Limited).unwrap();
        assert!(mm.charge(1, LockCapability::Limited).is_err());
        mm.uncharge(4);
        mm.space().unpin_run(&run);
        assert_eq!(mm.space().os_locked_pages(), 0);
        assert_eq!(limits.mlocked_bytes() / PAGE, before);
    }

    #[test]
    fn mlocked_memory_counts_against_the_limit() {
        // mlock_fixup and vfio both charge mm->locked_vm.
        let _g = PROCESS_WIDE.lock().unwrap();
        let before = ProcessLimits::new().mlocked_bytes() / PAGE;
        let mm = Mm::with_limits(
            Box::new(ProcessMemory::default()),
            Box::new(ProcessLimits::with_memlock(Some((before + 8) * PAGE))),
        );
        let a = Area::anon(4, RW);
        // SAFETY: locks our own mapping; no memory is accessed.
        let r = unsafe { libc::mlock(a.addr as *const libc::c_void, a.len) };
        assert_eq!(r, 0);
        assert!(mm.charge(5, LockCapability::Limited).is_err());
        mm.charge(4, LockCapability::Limited).unwrap();
        // SAFETY: as above.
        let r = unsafe { libc::munlock(a.addr as *const libc::c_void, a.len) };
        assert_eq!(r, 0);
        mm.charge(4, LockCapability::Limited).unwrap();
    }

    #[test]
    fn rlimit_memlock_is_read_at_each_charge() {
        let _g = PROCESS_WIDE.lock().unwrap();
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit.
        let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut saved) };
        assert_eq!(r, 0);
        let before = ProcessLimits::new().mlocked_bytes() / PAGE;
        let mm = Mm::with_limits(
            Box::new(ProcessMemory::default()),
            Box::new(ProcessLimits::new()),
        );
        let set = |pages: u64| {
            let rl = libc::rlimit {
                rlim_cur: pages * PAGE,
                rlim_max: saved.rlim_max,
            };
            // SAFETY: setrlimit reads one rlimit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) }, 0);
        };
        set(before + 2);
        let first = mm.charge(3, LockCapability::Limited);
        set(before + 3);
        let second = mm.charge(3, LockCapability::Limited);
        // SAFETY: restores the saved limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &saved) }, 0);
        assert!(first.is_err(), "{first:?}");
        second.unwrap();
    }

    #[test]
    fn the_capability_is_this_threads_cap_eff() {
        // capable(CAP_IPC_LOCK) checks the calling thread's effective set.
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        let want = if eff & (1 << 14) != 0 {
            LockCapability::Unlimited
        } else {
            LockCapability::Limited
        };
        assert_eq!(ProcessLimits::new().capability(), want);
    }
}
