//! Fake VFIO files: the fd table and the container and group objects behind it, with the
//! kernel's semantics (spec type1.md §3 and `drivers/vfio/group.c`).
//!
//! Every fake fd is a real fd (a memfd), so `close`, `dup`, `poll` and `fork` behave; this table
//! maps it to its object. Objects are reference counted: a container lives on while a group is
//! set to it even after the container fd is closed; closing the last fd of a group unsets it
//! from its container, as the kernel's release does.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use type1::uapi::{self, raw};
use type1::{Container, ContainerConfig, Error, GroupSpec, ProcessUserMemory, UserMemory};

/// An open `/dev/vfio/vfio`.
#[derive(Debug)]
pub struct ContainerFile {
    /// The engine.
    pub c: Container,
}

/// An open `/dev/vfio/<N>`.
#[derive(Debug)]
pub struct GroupFile {
    /// Its spec.
    pub spec: GroupSpec,
    /// The container it is set to.
    pub container: Mutex<Option<Arc<ContainerFile>>>,
    opened: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for GroupFile {
    fn drop(&mut self) {
        // `vfio_group_fops_release`: the group leaves its container.
        if let Ok(mut c) = self.container.lock() {
            if let Some(cf) = c.take() {
                let _ = cf.c.unset_group(self.spec.id);
            }
        }
        if let Ok(mut o) = self.opened.lock() {
            o.remove(&self.spec.id.0);
        }
    }
}

/// What a fake fd refers to.
#[derive(Debug, Clone)]
pub enum File {
    /// A container.
    Container(Arc<ContainerFile>),
    /// A group.
    Group(Arc<GroupFile>),
}

/// The fd table and the set of open groups.
#[derive(Debug, Default)]
pub struct Files {
    fds: Mutex<HashMap<i32, File>>,
    opened: Arc<Mutex<BTreeSet<u32>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Files {
    /// The object behind `fd`, if it is fake.
    pub fn get(&self, fd: i32) -> Option<File> {
        lock(&self.fds).get(&fd).cloned()
    }

    /// True if `fd` is fake.
    pub fn is_fake(&self, fd: i32) -> bool {
        lock(&self.fds).contains_key(&fd)
    }

    /// Records `fd` → `file`, dropping whatever `fd` named before.
    pub fn insert(&self, fd: i32, file: File) {
        let old = lock(&self.fds).insert(fd, file);
        drop(old);
    }

    /// Forgets `fd` (after a successful close). Dropping the last reference releases the object.
    pub fn remove(&self, fd: i32) {
        let old = lock(&self.fds).remove(&fd);
        drop(old);
    }

    /// Forgets every fd in `[first, last]`.
    pub fn remove_range(&self, first: u32, last: u32) {
        let gone: Vec<File> = {
            let mut t = lock(&self.fds);
            let keys: Vec<i32> = t
                .keys()
                .copied()
                .filter(|&k| u32::try_from(k).is_ok_and(|k| k >= first && k <= last))
                .collect();
            keys.into_iter().filter_map(|k| t.remove(&k)).collect()
        };
        drop(gone);
    }

    /// A new container object.
    pub fn new_container(cfg: ContainerConfig, mm: Arc<type1::mm::Mm>) -> File {
        File::Container(Arc::new(ContainerFile {
            c: Container::new(cfg, mm),
        }))
    }

    /// A new group object, or `EBUSY` if the group is open already.
    pub fn new_group(&self, spec: GroupSpec) -> Result<File, i32> {
        let mut o = lock(&self.opened);
        if !o.insert(spec.id.0) {
            return Err(libc::EBUSY);
        }
        Ok(File::Group(Arc::new(GroupFile {
            spec,
            container: Mutex::new(None),
            opened: self.opened.clone(),
        })))
    }
}

/// A group fd's ioctl (`vfio_group_fops_unl_ioctl`). Returns the result or an errno.
pub fn group_ioctl(files: &Files, g: &GroupFile, request: u64, arg: u64) -> Result<i64, i32> {
    let mut user = ProcessUserMemory;
    match request {
        uapi::VFIO_GROUP_GET_STATUS => {
            // struct vfio_group_status { __u32 argsz; __u32 flags; }
            let mut b = [0u8; 8];
            user.read(arg, &mut b).map_err(|_| libc::EFAULT)?;
            let argsz = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            if argsz < 8 {
                return Err(libc::EINVAL);
            }
            let mut flags = raw::VFIO_GROUP_FLAGS_VIABLE;
            if lock(&g.container).is_some() {
                flags |= raw::VFIO_GROUP_FLAGS_CONTAINER_SET;
            }
            user.write(arg + 4, &flags.to_ne_bytes())
                .map_err(|_| libc::EFAULT)?;
            Ok(0)
        }
        uapi::VFIO_GROUP_SET_CONTAINER => {
            let mut b = [0u8; 4];
            user.read(arg, &mut b).map_err(|_| libc::EFAULT)?;
            let fd = i32::from_ne_bytes(b);
            if fd < 0 {
                return Err(libc::EINVAL);
            }
            let cf = match files.get(fd) {
                Some(File::Container(cf)) => cf,
                Some(File::Group(_)) => return Err(libc::EINVAL),
                // A real fd that is not a VFIO container, or no fd at all.
                None => {
                    return Err(if fd_is_open(fd) {
                        libc::EINVAL
                    } else {
                        libc::EBADF
                    })
                }
            };
            let mut slot = lock(&g.container);
            if slot.is_some() {
                return Err(libc::EINVAL);
            }
            cf.c.set_group(g.spec.clone()).map_err(|e| e.errno())?;
            *slot = Some(cf);
            Ok(0)
        }
        uapi::VFIO_GROUP_UNSET_CONTAINER => {
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
            // The name must be readable; no device model yet: the kernel's "no such device".
            let mut b = [0u8; 1];
            user.read(arg, &mut b).map_err(|_| libc::EFAULT)?;
            Err(libc::ENODEV)
        }
        _ => Err(libc::ENOTTY),
    }
}

/// A container fd's ioctl: the engine's byte-level entry.
pub fn container_ioctl(cf: &ContainerFile, request: u64, arg: u64) -> Result<i64, i32> {
    cf.c.ioctl(request, arg, &mut ProcessUserMemory)
        .map_err(|e: Error| e.errno())
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor flags.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) >= 0 }
}
