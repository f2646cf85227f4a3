//! The process-lifecycle hooks: library load (`.init_array`), `fork` (`pthread_atfork`) and
//! `exit` (`.fini_array`). They sit on top of everything: they reach the state, the fd table
//! and the interposers' own locks, and nothing calls into them.
//!
//! **fork.** See the `state` module: the prepare handler makes sure the state exists and takes
//! its locks and the interposers' (all spin locks, which survive a fork); the parent releases
//! them; the child releases them after turning every fake fd into an inherited one.
//!
//! **exec.** A new program image starts with this library loaded afresh; fake fds that
//! survived `exec` (no `O_CLOEXEC`) are found by their memfd name at load and marked inherited.

use std::sync::atomic::Ordering;

use crate::files::{inherited_kind, EVER_OPENED, INHERITED};
use crate::state::{built, busy, passthrough, state};
use crate::sys;

extern "C" fn atfork_prepare() {
    // A handler's `fork` that interrupted a call served with signals open: the locks may be
    // held below us on this thread, so nothing is taken (nor released in the parent); the
    // child forgets the tables and unlocks everything as usual.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    if crate::interpose::reentrant() {
        return;
    }
    let _ = state();
    if let Some(s) = built() {
        s.lock_for_fork();
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    crate::interpose::fork_prepare();
}

extern "C" fn atfork_parent() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    if crate::interpose::reentrant() {
        return;
    }
    if let Some(s) = built() {
        // SAFETY: `atfork_prepare` took the locks on this thread (it takes them whenever the
        // state exists and the call is not re-entrant, as here).
        unsafe { s.unlock_after_fork() };
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    crate::interpose::fork_parent();
}

extern "C" fn atfork_child() {
    if let Some(s) = built() {
        // SAFETY: as in the parent; the child's only thread is this one.
        unsafe { s.child_after_fork() };
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
            if inherited_kind(fd).is_some() {
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
    let Some(s) = built() else { return };
    if !s.tracing() || busy() || !s.account_is_ours() || !EVER_OPENED.load(Ordering::Acquire) {
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
