//! The library's global state, built once on first use; the re-entrancy flag; and what `fork`
//! does to the state (the hooks that call it are in `lifecycle`).
//!
//! Building the state may itself call intercepted functions (opening the trace file goes
//! through our `open`); a thread-local flag makes every interposer pass straight through to
//! libc while the state is being built and while this library does its own I/O.
//!
//! **fork.** A child of a multi-threaded program has one thread, and every lock another thread
//! held at the `fork` stays locked forever in it. So: the prepare handler makes sure the state
//! exists and takes the fd-table lock, the Mm lock and the interposers' own (all
//! [`crate::spin::SpinLock`]s, whose state survives a fork, unlike a sleeping mutex that records
//! waiters); the parent releases them; the child
//! releases them after turning every fake fd into an *inherited* one and forgetting (leaking,
//! never dropping) the parent's objects, whose engine locks it must never touch. The child gets
//! a fresh locked-memory account on first use (the kernel's child has its own `mm`, and VFIO's
//! charges stay with the parent's).

use std::cell::Cell;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use io_pgtable::{FlushQueueConfig, InvalidationPolicy};
use type1::mm::{MlockPolicy, Mm, ProcessLimits, ProcessMemory};
use type1::{ContainerConfig, Interrupts};

use crate::config::Config;
use crate::files::Files;
use crate::spin::SpinLock;
use crate::sys;

/// Everything the interposers share.
#[derive(Debug)]
pub(crate) struct State {
    /// Configuration.
    pub(crate) cfg: Config,
    /// Fake fds.
    pub(crate) files: Files,
    /// The process's memory and locked-memory account, shared by all its containers.
    mm: SpinLock<(Arc<Mm>, Arc<ProcessMemory>)>,
    /// Container options.
    pub(crate) ccfg: ContainerConfig,
    /// The `TYPE1_MEMLOCK` override, for the account of a forked child.
    memlock: Option<Option<u64>>,
    trace: Option<Trace>,
    start: Instant,
}

/// The trace file: written one whole line per `write(2)` on an `O_APPEND` fd.
#[derive(Debug)]
struct Trace {
    file: std::fs::File,
    id: (u64, u64),
}

static STATE: OnceLock<State> = OnceLock::new();
/// The process whose locked-memory account `State::mm` holds.
static MM_PID: AtomicI32 = AtomicI32::new(0);

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Restores the re-entrancy flag when dropped (also on unwind).
struct BusyGuard(bool);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let was = self.0;
        let _ = BUSY.try_with(|b| b.set(was));
    }
}

/// Runs `f` with interposers passing through on this thread (our own libc calls).
pub(crate) fn passthrough<R>(f: impl FnOnce() -> R) -> R {
    let was = BUSY.try_with(|b| b.replace(true)).unwrap_or(true);
    let _restore = BusyGuard(was);
    f()
}

/// True while this thread is inside the library's own I/O (or exiting).
#[inline]
pub(crate) fn busy() -> bool {
    BUSY.try_with(Cell::get).unwrap_or(true)
}

/// The state (built on first call). `None` while this thread is inside the library.
pub(crate) fn state() -> Option<&'static State> {
    if busy() {
        return None;
    }
    Some(STATE.get_or_init(|| passthrough(build)))
}

/// A new locked-memory account for this process. RLIMIT_MEMLOCK, CAP_IPC_LOCK and the memory
/// the process mlock'ed are read live, at each charge and MAP_DMA, as the kernel does
/// (`type1::mm::ProcessLimits`); a valid `TYPE1_MEMLOCK` replaces RLIMIT_MEMLOCK.
///
/// `memlock`: the `TYPE1_MEMLOCK` override (`Some(None)`: unlimited), else RLIMIT_MEMLOCK read
/// live at each charge. The address space is returned too: device BAR mappings are marked
/// reserved in it.
fn new_mm(memlock: Option<Option<u64>>) -> (Arc<Mm>, Arc<ProcessMemory>) {
    let limits = match memlock {
        Some(fixed) => ProcessLimits::with_memlock(fixed),
        None => ProcessLimits::new(),
    };
    let space = Arc::new(ProcessMemory::new(MlockPolicy::CheckOnly));
    let mm = Arc::new(Mm::with_limits(Box::new(space.clone()), Box::new(limits)));
    (mm, space)
}

fn build() -> State {
    let cfg = Config::from_lookup(&|k| std::env::var(k).ok());
    for w in &cfg.warnings {
        sys::warn(w);
    }
    // Read once here: after `fork` the child must not take the environment lock.
    let memlock = std::env::var("TYPE1_MEMLOCK")
        .ok()
        .and_then(|v| crate::config::parse_memlock(&v).ok());
    let mm = new_mm(memlock);
    MM_PID.store(sys::pid(), Ordering::Release);
    let ccfg = ContainerConfig {
        dma_entry_limit: cfg.dma_entry_limit,
        interrupts: if cfg.allow_unsafe_interrupts {
            Interrupts::AllowUnsafe
        } else {
            Interrupts::RequireIsolated
        },
        invalidation: if cfg.lazy {
            InvalidationPolicy::Lazy(FlushQueueConfig::default())
        } else {
            InvalidationPolicy::Strict
        },
        dirty_mode: cfg.dirty_mode,
        ..ContainerConfig::default()
    };
    let trace = cfg.trace.as_ref().and_then(|p| {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(p)
        {
            Ok(file) => {
                let (dev, ino, _) = sys::fd_identity(file.as_raw_fd())?;
                Some(Trace {
                    file,
                    id: (dev, ino),
                })
            }
            Err(e) => {
                sys::warn(&format!("type1-preload: cannot open trace file {p}: {e}"));
                None
            }
        }
    });
    State {
        cfg,
        files: Files::default(),
        mm: SpinLock::new(mm),
        ccfg,
        memlock,
        trace,
        start: Instant::now(),
    }
}

impl State {
    /// This process's locked-memory account and address space (fresh ones in a forked
    /// child: the parent's reserved marks belong to the parent's devices).
    fn current(&self) -> (Arc<Mm>, Arc<ProcessMemory>) {
        let mut mm = self.mm.lock();
        let me = sys::pid();
        if MM_PID.load(Ordering::Acquire) != me {
            *mm = passthrough(|| new_mm(self.memlock));
            MM_PID.store(me, Ordering::Release);
        }
        mm.clone()
    }

    /// This process's locked-memory account.
    pub(crate) fn mm(&self) -> Arc<Mm> {
        self.current().0
    }

    /// This process's address space (for the reserved marks of device BAR mappings).
    pub(crate) fn process_memory(&self) -> Arc<ProcessMemory> {
        self.current().1
    }

    /// Appends one JSON line to the trace file, if any, in one `write(2)`.
    pub(crate) fn trace(&self, record: serde_json::Value) {
        let Some(t) = &self.trace else { return };
        let fd = t.file.as_raw_fd();
        // The host program may have closed our fd and reused the number: never write into
        // a file that is not our trace.
        if sys::fd_identity(fd).is_none_or(|(dev, ino, _)| (dev, ino) != t.id) {
            return;
        }
        let mut v = record;
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        v["t_us"] = serde_json::json!(us);
        v["pid"] = serde_json::json!(sys::pid());
        let mut line = v.to_string();
        line.push('\n');
        sys::raw_write(fd, line.as_bytes());
    }

    /// True if tracing.
    pub(crate) fn tracing(&self) -> bool {
        self.trace.is_some()
    }
}

/// The state if it was built (never builds it).
pub(crate) fn built() -> Option<&'static State> {
    STATE.get()
}

impl State {
    /// `fork` prepare: takes the fd-table lock and the Mm lock and holds them across the fork
    /// (see the module docs).
    pub(crate) fn lock_for_fork(&self) {
        self.files.lock_for_fork();
        self.mm.lock_forever();
    }

    /// `fork`, parent side: releases what [`State::lock_for_fork`] took.
    ///
    /// # Safety
    /// [`State::lock_for_fork`] was called on this thread, and nothing released its locks since.
    pub(crate) unsafe fn unlock_after_fork(&self) {
        // SAFETY: `lock_for_fork` locked it on this thread and forgot the guard (caller).
        unsafe { self.mm.force_unlock() };
        self.files.unlock_after_fork();
    }

    /// `fork`, child side: releases the locks and forgets the parent's objects (see
    /// `Files::child_after_fork`).
    ///
    /// # Safety
    /// The caller is the only thread of a forked child whose parent held these locks through
    /// [`State::lock_for_fork`] (or did not hold them: a re-entrant fork took nothing).
    pub(crate) unsafe fn child_after_fork(&self) {
        // SAFETY: as in the parent (caller); no other thread exists in the child.
        unsafe { self.mm.force_unlock() };
        self.files.child_after_fork();
    }

    /// True if the locked-memory account is this process's (false in a forked child until it
    /// takes a fresh one).
    pub(crate) fn account_is_ours(&self) -> bool {
        MM_PID.load(Ordering::Acquire) == sys::pid()
    }
}
