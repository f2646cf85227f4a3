//! `LD_PRELOAD` drop-in: unmodified programs open and drive `/dev/vfio/vfio` and
//! `/dev/vfio/<N>`, served by the type1 engine in their own process.
//!
//! Load it with `LD_PRELOAD=libtype1_preload.so` (or `type1 run -- PROGRAM`) and describe the
//! groups in the environment (see [`config`]). Fake fds are real memfds mapped to container and
//! group objects; the container fd takes every type1 ioctl through
//! [`type1::Container::ioctl`], with the calling program's own memory behind `vaddr`.
//! Group fds implement GET_STATUS, SET_CONTAINER and UNSET_CONTAINER with the kernel's
//! semantics; GET_DEVICE_FD fails with `ENODEV` (no device model yet). PCI addresses given with
//! `TYPE1_DEVICES` resolve through sysfs (`readlink`, `realpath`, `stat`, `opendir`) to their
//! group.
//!
//! The library lives inside someone else's process, so (see `interpose` for the rules each
//! entry point follows): calls on fds and paths that are not ours cost a lock-free lookup and
//! go to libc; bad pointers are `EFAULT`, never a crash; a signal handler never waits for a lock
//! the thread it interrupted holds; `fork` leaves the child with unlocked state; `errno`
//! changes only on failure.
//!
//! The interposers exist on x86-64 Linux only (see `interpose` for why).
//!
//! # Layers
//!
//! Modules depend one way, each only on those below it; nothing calls up into a layer above
//! (the `fork` and `exit` hooks, which reach everything, are the top layer themselves):
//!
//! ```text
//! lifecycle                    load, fork and exit hooks
//! interpose                    the libc entry points (x86-64 Linux), trace lines
//! state                        the global state, the re-entrancy flag
//! files                        the fd table, what a fake fd refers to, the group ioctls
//! devices                      opening emulated devices, their sysfs attributes
//! objects                      container, group and device objects (shared vocabulary)
//! paths, trace, stack, real    path lookup, ioctl decoding, stack arguments, libc symbols
//! fdset, spin, sys, config     lock-free fd sets, spin locks, system calls, configuration
//! ```
//!
//! VFIO structures are decoded with the `type1` crate's UAPI helpers (`type1::uapi`: request
//! numbers, `minsz` values and field offsets taken from `vfio-bindings`), never hand-typed
//! offsets.

#![warn(missing_docs)]

pub use type1_preload_config as config;
pub mod devices;
mod fdset;
pub mod files;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod interpose;
mod lifecycle;
pub mod objects;
pub mod paths;
mod real;
mod spin;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod stack;
mod state;
mod sys;
mod trace;
