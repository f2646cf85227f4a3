//! The library's global state, built once on first use, and the re-entrancy guard.
//!
//! Building the state may itself call intercepted functions (opening the trace file reads the
//! file system through our `open`); a thread-local flag makes every interposer pass straight
//! through to libc while the state is being built, and while this library does its own I/O.

use std::cell::Cell;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use io_pgtable::{FlushQueueConfig, InvalidationPolicy};
use type1::mm::{LockCapability, MlockPolicy, Mm, ProcessMemory};
use type1::{ContainerConfig, Interrupts};

use crate::config::Config;
use crate::files::Files;

/// Everything the interposers share.
#[derive(Debug)]
pub(crate) struct State {
    /// Configuration.
    pub(crate) cfg: Config,
    /// Fake fds.
    pub(crate) files: Files,
    /// The process's memory and locked-memory account, shared by all containers.
    pub(crate) mm: Arc<Mm>,
    /// Container options.
    pub(crate) ccfg: ContainerConfig,
    trace: Option<Mutex<std::fs::File>>,
    start: Instant,
}

static STATE: OnceLock<State> = OnceLock::new();

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with interposers passing through on this thread (our own libc calls).
pub(crate) fn passthrough<R>(f: impl FnOnce() -> R) -> R {
    let was = BUSY.with(|b| b.replace(true));
    let r = f();
    BUSY.with(|b| b.set(was));
    r
}

/// True while this thread is inside the library's own I/O.
pub(crate) fn busy() -> bool {
    BUSY.with(Cell::get)
}

/// `capable(CAP_IPC_LOCK)`: bit 14 of the effective capability set.
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// The state (built on first call). `None` while this thread is inside the library.
pub(crate) fn state() -> Option<&'static State> {
    if busy() {
        return None;
    }
    Some(STATE.get_or_init(|| passthrough(build)))
}

fn build() -> State {
    let cfg = Config::from_lookup(&|k| std::env::var(k).ok());
    for w in &cfg.warnings {
        eprintln!("{w}");
    }
    let cap = if has_ipc_lock() {
        LockCapability::Unlimited
    } else {
        LockCapability::Limited
    };
    let mm = Arc::new(Mm::new(
        Box::new(ProcessMemory::new(MlockPolicy::CheckOnly)),
        cfg.memlock,
        cap,
    ));
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
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Some(Mutex::new(f)),
            Err(e) => {
                eprintln!("type1-preload: cannot open trace file {p}: {e}");
                None
            }
        }
    });
    State {
        cfg,
        files: Files::default(),
        mm,
        ccfg,
        trace,
        start: Instant::now(),
    }
}

impl State {
    /// Appends one JSON line to the trace file, if any.
    pub(crate) fn trace(&self, record: serde_json::Value) {
        let Some(t) = &self.trace else { return };
        passthrough(|| {
            let mut v = record;
            let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
            v["t_us"] = serde_json::json!(us);
            if let Ok(mut f) = t.lock() {
                let _ = writeln!(f, "{v}");
            }
        });
    }

    /// True if tracing.
    pub(crate) fn tracing(&self) -> bool {
        self.trace.is_some()
    }
}
