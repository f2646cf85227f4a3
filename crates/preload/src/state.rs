//! The library's global state, built once on first use; the re-entrancy flag; and the
//! process-lifecycle hooks (load, `fork`).
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
//!
//! **exec.** A new program image starts with this library loaded afresh; fake fds that
//! survived `exec` (no `O_CLOEXEC`) are found by their memfd name at load and marked inherited.

use std::cell::Cell;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use io_pgtable::{FlushQueueConfig, InvalidationPolicy};
use type1::mm::{MlockPolicy, Mm, ProcessLimits, ProcessMemory};
use type1::{ContainerConfig, Interrupts};

use crate::config::Config;
use crate::files::{self, Files, INHERITED};
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

extern "C" fn atfork_prepare() {
    // A handler's `fork` that interrupted a call served with signals open: the locks may be
    // held below us on this thread, so nothing is taken (nor released in the parent); the
    // child forgets the tables and unlocks everything as usual.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    if crate::interpose::reentrant() {
        return;
    }
    let _ = state();
    if let Some(s) = STATE.get() {
        s.files.lock_for_fork();
        s.mm.lock_forever();
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    crate::interpose::fork_prepare();
}

extern "C" fn atfork_parent() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    if crate::interpose::reentrant() {
        return;
    }
    if let Some(s) = STATE.get() {
        // SAFETY: `atfork_prepare` locked it on this thread and forgot the guard.
        unsafe { s.mm.force_unlock() };
        s.files.unlock_after_fork();
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    crate::interpose::fork_parent();
}

extern "C" fn atfork_child() {
    if let Some(s) = STATE.get() {
        // SAFETY: as in the parent; the child's only thread is this one.
        unsafe { s.mm.force_unlock() };
        s.files.child_after_fork();
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    crate::interpose::fork_child();
}

/// Marks fake fds that survived `exec` as inherited (their memfd names say what they were).
fn scan_inherited() {
    passthrough(|| {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if files::inherited_kind(fd).is_some() {
                INHERITED.insert(fd);
            }
        }
    });
}

/// Runs when the library is loaded, before the program's `main`.
extern "C" fn on_load() {
    crate::real::resolve_all();
    type1::usercopy::init();
    scan_inherited();
    // SAFETY: registers three `extern "C" fn()` handlers that live as long as the process.
    unsafe {
        libc::pthread_atfork(
            Some(atfork_prepare),
            Some(atfork_parent),
            Some(atfork_child),
        );
    }
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// Runs at `exit`: when tracing, one line with what the program left mapped, pinned and
/// charged, then every fake fd is released as the kernel releases files at exit, and a second
/// line shows what remains charged (nothing, unless something leaked). Other threads may still
/// run: the objects they use live on through their own references.
extern "C" fn on_exit() {
    let Some(s) = STATE.get() else { return };
    if !s.tracing()
        || busy()
        || MM_PID.load(Ordering::Acquire) != sys::pid()
        || !crate::files::EVER_OPENED.load(Ordering::Acquire)
    {
        return;
    }
    let _mask = sys::SignalsBlocked::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let containers = s.files.live_containers();
        let maps: Vec<_> = containers.iter().flat_map(|c| c.c.mappings()).collect();
        let mm = s.mm();
        s.trace(serde_json::json!({
            "event": "exit",
            "containers": containers.len(),
            "mappings": maps.len(),
            "mapped_bytes": maps.iter().map(|m| m.size).sum::<u64>(),
            "iommu_pinned_pages": maps.iter().map(|m| m.iommu_pinned_pages).sum::<u64>(),
            "iommu_reserved_pages": maps.iter().map(|m| m.iommu_reserved_pages).sum::<u64>(),
            "device_pinned_pages": maps.iter().map(|m| m.device_pinned_pages).sum::<u64>(),
            "locked_pages": mm.locked_pages(),
        }));
        drop(containers);
        // As the kernel's exit: the mappings go (a BAR mapping holds its device), then the
        // files are released.
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        crate::interpose::io::release_bar_maps();
        s.files.remove_range(0, u32::MAX);
        s.trace(serde_json::json!({
            "event": "released",
            "locked_pages": mm.locked_pages(),
            "pending_pages": mm.pending_pages(),
        }));
    }));
    drop(r);
}

#[used]
#[link_section = ".fini_array"]
static ON_EXIT: extern "C" fn() = on_exit;
