//! Fake VFIO files: the fd table and what each fake fd refers to (the objects of
//! [`crate::objects`], directories, sysfs files), and the group ioctls, with the kernel's
//! semantics (`drivers/vfio/container.c`, `drivers/vfio/group.c`, v6.18).
//!
//! Every fake fd is a real fd (a memfd named `type1-vfio-*`), so `close`, `dup`, `poll`, `fork`
//! and `exec` move real descriptors; this table maps the number to its object. Objects are
//! reference counted: a container lives on while a group is set to it even after the container
//! fd is closed; closing the last fd of a group unsets it from its container, as the kernel's
//! release does.
//!
//! **Identity.** An entry remembers the memfd's `(st_dev, st_ino)`. Before an fd is served the
//! identity is checked with one `fstat`, so an fd this library never saw closed (a raw
//! `syscall(SYS_close)`, glibc's internal close in `fclose`) and reused for another file is
//! recognised and forgotten: the call goes to the real file.
//!
//! **Concurrency.** The table is one mutex, held only to look up, insert or remove (never across
//! the engine or a system call of the host program), always with every signal blocked (callers
//! hold `sys::SignalsBlocked`). `fork` takes it in the prepare handler and releases it
//! in both processes, so the child never finds it locked (see the `state` module).
//! Membership is also kept in the lock-free `OURS` set, which is all a call on any other fd
//! consults.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use type1::uapi::{self, raw};
use type1::{Container, ContainerConfig, Error, GroupSpec, ProcessUserMemory, UserMemory};

use crate::config::Config;
use crate::devices;
use crate::fdset::FdSet;
use crate::objects::{ContainerFile, DeviceHandle, GroupDevices, GroupFile};
use crate::paths::Node;
use crate::spin::SpinLock;
use crate::sys;

/// fds this process serves.
pub(crate) static OURS: FdSet = FdSet::new();
/// fds inherited from a parent process (through `fork`) or a previous program image (through
/// `exec`) that were fake there: every VFIO request on them fails (see the README).
pub(crate) static INHERITED: FdSet = FdSet::new();

/// Set once this process opens a container (the exit trace lines are written only then).
pub(crate) static EVER_OPENED: AtomicBool = AtomicBool::new(false);

/// The memfd name prefix of fake fds (`/proc/self/fd/N` → `/memfd:type1-vfio-...`).
pub(crate) const MEMFD_PREFIX: &str = "type1-vfio-";

/// What a fake fd refers to.
#[derive(Debug, Clone)]
pub enum File {
    /// A container.
    Container(Arc<ContainerFile>),
    /// A group.
    Group(Arc<GroupFile>),
    /// A directory (`/dev/vfio` or a sysfs directory), opened for `fdopendir` or `openat`.
    Dir(Node),
    /// A device (a duplicate of the device's memfd).
    Device(Arc<DeviceHandle>),
    /// A sysfs attribute file: a memfd holding its contents, read natively.
    SysFile(Node),
}

impl File {
    /// The file system node this file is an open instance of (`None` for a device fd, an
    /// anonymous inode in the kernel: its `fstat` is the memfd's).
    pub fn node(&self) -> Option<Node> {
        match self {
            File::Container(_) => Some(Node::Container),
            File::Group(g) => Some(Node::Group(g.spec.id.0)),
            File::Dir(n) | File::SysFile(n) => Some(n.clone()),
            File::Device(_) => None,
        }
    }

    /// The memfd name for a new fd of this kind.
    pub(crate) fn memfd_name(&self) -> &'static std::ffi::CStr {
        match self {
            File::Container(_) => c"type1-vfio-container",
            File::Group(_) => c"type1-vfio-group",
            File::Dir(_) => c"type1-vfio-dir",
            File::SysFile(_) => c"type1-vfio-sysfs",
            File::Device(_) => vfio_device::Device::file_name(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    file: File,
    id: (u64, u64),
    /// The open access mode (`O_RDONLY`, `O_WRONLY` or `O_RDWR`).
    acc: i32,
}

/// The fd table and the set of open groups.
#[derive(Debug, Default)]
pub struct Files {
    fds: SpinLock<HashMap<i32, Entry>>,
    opened: Arc<Mutex<BTreeSet<u32>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Files {
    /// The object behind `fd`, if it is ours and still the file we created. An fd that was
    /// closed behind our back (and perhaps reused) is forgotten here.
    pub fn get(&self, fd: i32) -> Option<File> {
        self.get_with_mode(fd).map(|(f, _)| f)
    }

    /// [`Files::get`] with the open access mode.
    pub fn get_with_mode(&self, fd: i32) -> Option<(File, i32)> {
        if !OURS.contains(fd) {
            return None;
        }
        let (file, id, acc) = {
            let t = self.fds.lock();
            let e = t.get(&fd)?;
            (e.file.clone(), e.id, e.acc)
        };
        match sys::fd_identity(fd) {
            Some((dev, ino, _)) if (dev, ino) == id => Some((file, acc)),
            _ => {
                drop(file);
                self.remove(fd);
                None
            }
        }
    }

    /// Records `fd` → `file` opened with access mode `acc`, dropping whatever `fd` named
    /// before.
    pub fn insert(&self, fd: i32, file: File, acc: i32) {
        let Some((dev, ino, _)) = sys::fd_identity(fd) else {
            return;
        };
        INHERITED.remove(fd);
        let old = self.fds.lock().insert(
            fd,
            Entry {
                file,
                id: (dev, ino),
                acc,
            },
        );
        OURS.insert(fd);
        drop(old);
    }

    /// Forgets every fd that was closed behind our back (a raw `close` system call, glibc's
    /// internal close): the kernel would have released its file when it was closed.
    pub fn sweep(&self) {
        for fd in OURS.in_range(0, u32::MAX) {
            // `get` forgets an fd whose identity no longer matches.
            drop(self.get(fd));
        }
    }

    /// Forgets `fd`. Dropping the last reference releases the object.
    pub fn remove(&self, fd: i32) {
        if !OURS.remove(fd) {
            return;
        }
        let old = self.fds.lock().remove(&fd);
        drop(old);
    }

    /// Forgets every fd in `[first, last]`.
    pub fn remove_range(&self, first: u32, last: u32) {
        let fds = OURS.in_range(first, last);
        let gone: Vec<Entry> = {
            let mut t = self.fds.lock();
            fds.iter()
                .filter_map(|fd| {
                    OURS.remove(*fd);
                    t.remove(fd)
                })
                .collect()
        };
        drop(gone);
        for fd in INHERITED.in_range(first, last) {
            INHERITED.remove(fd);
        }
    }

    /// The distinct containers reachable from open fds (directly, or through a group or a
    /// device).
    pub(crate) fn live_containers(&self) -> Vec<Arc<ContainerFile>> {
        let mut out: Vec<Arc<ContainerFile>> = Vec::new();
        let t = self.fds.lock();
        for e in t.values() {
            let c = match &e.file {
                File::Container(c) => Some(c.clone()),
                File::Group(g) => lock(&g.container).clone(),
                File::Device(h) => Some(h.container.clone()),
                File::Dir(_) | File::SysFile(_) => None,
            };
            if let Some(c) = c {
                if !out.iter().any(|o| Arc::ptr_eq(o, &c)) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// `fork` prepare: holds the table lock across the fork.
    pub(crate) fn lock_for_fork(&self) {
        self.fds.lock_forever();
    }

    /// `fork`, parent side: releases the lock taken by [`Files::lock_for_fork`].
    pub(crate) fn unlock_after_fork(&self) {
        // SAFETY: `lock_for_fork` locked the mutex on this thread and forgot its guard.
        unsafe { self.fds.force_unlock() };
    }

    /// `fork`, child side: every fake fd now belongs to the parent's objects, which this
    /// process must never touch (their locks may be held by threads that do not exist here):
    /// they become inherited and the objects are leaked, never dropped. Releases the lock.
    pub(crate) fn child_after_fork(&self) {
        {
            // SAFETY: `lock_for_fork` locked the mutex in the parent and forgot its guard; the
            // child's only thread is this one.
            let t = unsafe { self.fds.data_mut() };
            std::mem::forget(std::mem::take(t));
        }
        OURS.move_all_into(&INHERITED);
        if let Ok(mut o) = self.opened.try_lock() {
            *o = BTreeSet::new();
        }
        // SAFETY: as for `unlock_after_fork`.
        unsafe { self.fds.force_unlock() };
    }

    /// A new container object.
    pub fn new_container(cfg: ContainerConfig, mm: Arc<type1::mm::Mm>) -> File {
        EVER_OPENED.store(true, Ordering::Release);
        File::Container(Arc::new(ContainerFile {
            c: Arc::new(Container::new(cfg, mm)),
            failed: AtomicBool::new(false),
        }))
    }

    /// A new group object, or `EBUSY` if the group is open already (`vfio_group_fops_open`).
    pub fn new_group(&self, spec: GroupSpec) -> Result<File, i32> {
        let mut o = lock(&self.opened);
        if !o.insert(spec.id.0) {
            return Err(libc::EBUSY);
        }
        Ok(File::Group(Arc::new(GroupFile {
            spec,
            container: Mutex::new(None),
            devices: GroupDevices::default(),
            opened: self.opened.clone(),
        })))
    }
}

/// If `fd` is a fake fd inherited from a parent process or program image, its kind
/// (`container`, `group`, `dir`); checked against `/proc/self/fd`, so a number reused since
/// is not mistaken for one.
pub(crate) fn inherited_kind(fd: i32) -> Option<String> {
    let link = sys::fd_link(fd)?;
    let name = link
        .strip_prefix(b"/memfd:")?
        .strip_prefix(MEMFD_PREFIX.as_bytes())?;
    let kind = name.split(|&b| b == b' ').next()?;
    Some(String::from_utf8_lossy(kind).into_owned())
}

/// A group fd's ioctl (`vfio_group_fops_unl_ioctl`). Returns the result or an errno.
pub fn group_ioctl(
    files: &Files,
    cfg: &Config,
    g: &Arc<GroupFile>,
    request: u64,
    arg: u64,
    user: &mut dyn UserMemory,
) -> Result<i64, i32> {
    use std::mem::{offset_of, size_of};
    match request {
        uapi::VFIO_GROUP_GET_STATUS => {
            // `vfio_group_ioctl_get_status`: copy_from_user(minsz = offsetofend(flags)), then
            // argsz < minsz: EINVAL.
            type S = raw::vfio_group_status;
            let minsz = offset_of!(S, flags) + size_of::<u32>();
            let mut b = [0u8; size_of::<S>()];
            user.read(arg, &mut b[..minsz]).map_err(|_| libc::EFAULT)?;
            let argsz = uapi::get_u32(&b, offset_of!(S, argsz));
            if (argsz as usize) < minsz {
                return Err(libc::EINVAL);
            }
            let mut flags = raw::VFIO_GROUP_FLAGS_VIABLE;
            if lock(&g.container).is_some() {
                flags |= raw::VFIO_GROUP_FLAGS_CONTAINER_SET;
            }
            let at = arg + offset_of!(S, flags) as u64;
            user.write(at, &flags.to_ne_bytes())
                .map_err(|_| libc::EFAULT)?;
            Ok(0)
        }
        uapi::VFIO_GROUP_SET_CONTAINER => {
            // `vfio_group_ioctl_set_container` (v6.18): EFAULT, then an fd that is not open is
            // EBADF, a group that has a container already EINVAL, and an open fd that is not a
            // container (nor an iommufd) EBADFD.
            // The argument points to the container fd, a C `int`.
            let mut b = [0u8; size_of::<libc::c_int>()];
            user.read(arg, &mut b).map_err(|_| libc::EFAULT)?;
            let fd = libc::c_int::from_ne_bytes(b);
            let target = files.get(fd);
            if target.is_none() && sys::fd_identity(fd).is_none() {
                return Err(libc::EBADF);
            }
            let mut slot = lock(&g.container);
            if slot.is_some() {
                return Err(libc::EINVAL);
            }
            let Some(File::Container(cf)) = target else {
                return Err(libc::EBADFD);
            };
            if cf.failed.load(Ordering::Acquire) {
                return Err(libc::EIO);
            }
            cf.c.set_group(g.spec.clone()).map_err(|e| e.errno())?;
            *slot = Some(cf);
            Ok(0)
        }
        uapi::VFIO_GROUP_UNSET_CONTAINER => {
            // `vfio_group_ioctl_unset_container`: an open device is a container user.
            if g.devices.any_open() {
                return Err(libc::EBUSY);
            }
            let mut slot = lock(&g.container);
            let Some(cf) = slot.take() else {
                return Err(libc::EINVAL);
            };
            if let Err(e) = cf.c.unset_group(g.spec.id) {
                *slot = Some(cf);
                return Err(e.errno());
            }
            Ok(0)
        }
        uapi::VFIO_GROUP_GET_DEVICE_FD => {
            // `vfio_group_ioctl_get_device_fd`: `strndup_user(arg, PAGE_SIZE)` (EFAULT if the
            // string cannot be read, EINVAL if it has no NUL within a page), then the name is
            // matched against the group's devices (ENODEV); the group must have a container
            // (`vfio_df_group_open`: EINVAL). The fd has O_CLOEXEC (`get_unused_fd_flags`).
            let name = strndup_user(arg, 4096)?;
            let name = String::from_utf8(name).map_err(|_| libc::ENODEV)?;
            let container = lock(&g.container).clone();
            let h = devices::open(cfg, g, container, &name)?;
            let src = h.dev.file().fd().as_raw_fd();
            // SAFETY: F_DUPFD_CLOEXEC of the device's own memfd; raw, not our fcntl.
            let fd = unsafe { libc::syscall(libc::SYS_fcntl, src, libc::F_DUPFD_CLOEXEC, 0) };
            let fd = i32::try_from(fd).map_err(|_| libc::EMFILE)?;
            if fd < 0 {
                return Err(sys::errno());
            }
            files.insert(fd, File::Device(h), libc::O_RDWR);
            Ok(i64::from(fd))
        }
        _ => Err(libc::ENOTTY),
    }
}

/// `strndup_user`: the NUL-terminated string at `addr`, at most `max` bytes with its NUL.
fn strndup_user(addr: u64, max: u64) -> Result<Vec<u8>, i32> {
    let user = ProcessUserMemory;
    let mut out = Vec::new();
    let mut at = addr;
    while (out.len() as u64) < max {
        let step = (4096 - at % 4096).min(max - out.len() as u64);
        let mut buf = vec![0u8; usize::try_from(step).map_err(|_| libc::EFAULT)?];
        user.read(at, &mut buf).map_err(|_| libc::EFAULT)?;
        if let Some(n) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..n]);
            return Ok(out);
        }
        out.extend_from_slice(&buf);
        at += step;
    }
    Err(libc::EINVAL)
}

/// A container fd's ioctl: the engine's byte-level entry.
pub fn container_ioctl(
    cf: &ContainerFile,
    request: u64,
    arg: u64,
    user: &mut dyn UserMemory,
) -> Result<i64, i32> {
    cf.c.ioctl(request, arg, user).map_err(|e: Error| e.errno())
}
