//! `ioctl`: the container and group requests go to the engine and the group model; the VFS's
//! generic requests behave as for any file; inherited fds fail.
//!
//! The VFS handles a few requests itself before the driver sees them (`do_vfs_ioctl`, v6.18):
//! `FIOCLEX`, `FIONCLEX`, `FIONBIO`, `FIOASYNC`, `FIGETBSZ` are served by the real memfd behind
//! our fd, which gives the kernel's answer (and the real close-on-exec and non-blocking state);
//! `FIOQSIZE` is `ENOTTY` on a character device. Everything else is the driver's.

use std::ffi::{c_int, c_ulong, c_void};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{real, serve, Served};
use crate::fdset::FdSet;
use crate::files::{self, File, INHERITED, OURS};
use crate::objects::ContainerFile;
use crate::stack::StackOrProcess;
use crate::state::{state, State};
use crate::trace;

/// The ioctl type byte of VFIO requests (`VFIO_TYPE`, `';'`).
const VFIO_TYPE: u64 = type1::uapi::raw::VFIO_TYPE as u64;

/// fds whose inheritance was already reported on stderr.
static WARNED: FdSet = FdSet::new();

fn ioc_type(request: u64) -> u64 {
    (request >> 8) & 0xff
}

/// Requests the VFS serves for every file (`do_vfs_ioctl`).
fn is_vfs_generic(request: u64) -> bool {
    [
        libc::FIOCLEX,
        libc::FIONCLEX,
        libc::FIONBIO,
        libc::FIOASYNC,
        FIGETBSZ,
    ]
    .contains(&request)
}

/// `FIGETBSZ` (`_IO(0x00, 2)`, from `<linux/fs.h>`, not in the libc crate).
const FIGETBSZ: u64 = 2;

/// `FIOQSIZE` (`_IOR('f', 128, loff_t)` is not in every libc).
const FIOQSIZE: u64 = 0x5460;

/// `KVM_SET_DEVICE_ATTR`: `_IOW(KVMIO, 0xe1, struct kvm_device_attr)`.
const KVM_SET_DEVICE_ATTR: u64 = (1 << 30)
    | ((std::mem::size_of::<kvm_bindings::kvm_device_attr>() as u64) << 16)
    | ((kvm_bindings::KVMIO as u64) << 8)
    | 0xe1;

/// A VMM handing one of our group fds to KVM's VFIO pseudo-device (`KVM_DEV_VFIO_FILE` add or
/// delete, QEMU's `vfio_kvm_device_add_group`): KVM would refuse a memfd (`EINVAL`); there is
/// no kernel group to tell KVM about (it uses the group for cache-coherency and the SPAPR TCE
/// table), so the call succeeds without reaching the kernel. `None`: not such a call.
fn kvm_vfio_file(arg: u64) -> Option<Served<c_int>> {
    use std::mem::offset_of;
    use type1::usercopy::copy_from_process;
    let mut a = [0u8; std::mem::size_of::<kvm_bindings::kvm_device_attr>()];
    copy_from_process(arg, &mut a).ok()?;
    let u32_at = |o: usize| u32::from_ne_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&a[o..o + 8]);
        u64::from_ne_bytes(b)
    };
    let group = u32_at(offset_of!(kvm_bindings::kvm_device_attr, group));
    let attr = u64_at(offset_of!(kvm_bindings::kvm_device_attr, attr));
    let addr = u64_at(offset_of!(kvm_bindings::kvm_device_attr, addr));
    if group != kvm_bindings::KVM_DEV_VFIO_FILE
        || !(attr == u64::from(kvm_bindings::KVM_DEV_VFIO_FILE_ADD)
            || attr == u64::from(kvm_bindings::KVM_DEV_VFIO_FILE_DEL))
    {
        return None;
    }
    let mut fd = [0u8; 4];
    copy_from_process(addr, &mut fd).ok()?;
    let fd = i32::from_ne_bytes(fd);
    let s = state()?;
    match s.files.get(fd)? {
        File::Group(_) => Some(Ok(0)),
        _ => None,
    }
}

/// The error of any VFIO request on an fd inherited from another process, reported once per fd.
pub(crate) fn inherited_error(fd: c_int, kind: &str) -> c_int {
    if !WARNED.contains(fd) {
        WARNED.insert(fd);
        crate::sys::warn(&format!(
            "type1-preload: fd {fd} is a VFIO {kind} fd inherited from another process (fork or \
             exec); type1 serves each process's containers in that process, so requests on it \
             fail with EBADFD. Open the container and groups in the process that uses them \
             (see the README, \"Differences from the kernel\")."
        ));
    }
    libc::EBADFD
}

/// Serves an inherited fd: `Some(errno)` if it is one.
pub(crate) fn check_inherited(fd: c_int) -> Option<c_int> {
    match files::inherited_kind(fd) {
        Some(kind) => {
            INHERITED.insert(fd);
            Some(inherited_error(fd, &kind))
        }
        None => {
            INHERITED.remove(fd);
            WARNED.remove(fd);
            None
        }
    }
}

fn engine(cf: &ContainerFile, request: u64, arg: u64, user: &mut StackOrProcess) -> Served<i64> {
    if cf.failed.load(Ordering::Acquire) {
        return Err(libc::EIO);
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        files::container_ioctl(cf, request, arg, user)
    })) {
        Ok(r) => r,
        Err(_) => {
            cf.failed.store(true, Ordering::Release);
            crate::sys::warn(
                "type1-preload: internal error in a VFIO container request; the container now \
                 fails every request with EIO",
            );
            Err(libc::EIO)
        }
    }
}

/// The fds of this process as `VFIO_DEVICE_PCI_HOT_RESET` sees them.
struct TableGroups<'a>(&'a State);

impl vfio_device::ioctl::GroupFds for TableGroups<'_> {
    fn kind(&self, fd: i32) -> vfio_device::ioctl::FdKind {
        use vfio_device::ioctl::FdKind;
        match self.0.files.get(fd) {
            Some(File::Group(g)) => FdKind::Group(g.spec.id.0),
            Some(_) => FdKind::NotGroup,
            None if crate::sys::fd_identity(fd).is_some() => FdKind::NotGroup,
            None => FdKind::NotOpen,
        }
    }
}

/// The request on the driver of `file`; `user` is the host program's memory (argument
/// structures on its stack are read and written directly, [`StackOrProcess`]).
fn driver(
    s: &State,
    file: &File,
    request: u64,
    arg: u64,
    user: &mut StackOrProcess,
) -> Served<i64> {
    match file {
        File::Container(cf) => engine(cf, request, arg, user),
        File::Group(g) => files::group_ioctl(&s.files, &s.cfg, g, request, arg, user),
        File::Device(h) => h
            .dev
            .ioctl(request, arg, user, &TableGroups(s))
            .map_err(|e| e.errno()),
        // Directories and regular sysfs files have no ioctls.
        File::Dir(_) | File::SysFile(_) => Err(libc::ENOTTY),
    }
}

fn fake_ioctl(
    s: &State,
    fd: c_int,
    file: &File,
    request: u64,
    arg: u64,
    user: &mut StackOrProcess,
) -> Served<c_int> {
    if request == FIOQSIZE && matches!(file, File::Container(_) | File::Group(_) | File::Device(_))
    {
        return Err(libc::ENOTTY);
    }
    let t = Instant::now();
    let traced = s.tracing() && ioc_type(request) == VFIO_TYPE;
    let args = traced.then(|| {
        if matches!(file, File::Device(_)) {
            serde_json::json!({ "arg": format!("{arg:#x}") })
        } else {
            trace::decode(request, arg)
        }
    });
    let r = driver(s, file, request, arg, user);
    if let Some(args) = args {
        let (result, errno) = match r {
            Ok(v) => (v, 0),
            Err(e) => (-1, e),
        };
        let mut line = serde_json::json!({
            "fd": fd,
            "request": if matches!(file, File::Device(_)) {
                trace::device_request_name(request)
            } else {
                trace::request_name(request)
            },
            "request_nr": format!("{request:#x}"),
            "args": args,
            "result": result,
            "errno": errno,
            "duration_ns": u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
        });
        if r.is_ok() && !matches!(file, File::Device(_)) {
            if let Some(out) = trace::decode_out(request, arg) {
                line["out"] = out;
            }
        }
        s.trace(line);
    }
    r.map(|v| c_int::try_from(v).unwrap_or(c_int::MAX))
}

/// Interposed `ioctl`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    let req = request;
    if OURS.contains(fd) && !is_vfs_generic(req) {
        let mut user = StackOrProcess::new(crate::stack::frame_floor());
        let r = serve(-1, || {
            let s = state()?;
            let file = s.files.get(fd)?;
            Some(fake_ioctl(s, fd, &file, req, arg as u64, &mut user))
        });
        if let Some(r) = r {
            return r;
        }
    } else if (INHERITED.contains(fd) || ioc_type(req) == VFIO_TYPE)
        && !is_vfs_generic(req)
        && !crate::state::busy()
    {
        if let Some(r) = serve(-1, || check_inherited(fd).map(Err)) {
            return r;
        }
    }
    if req == KVM_SET_DEVICE_ATTR && !crate::state::busy() {
        if let Some(r) = serve(-1, || kvm_vfio_file(arg as u64)) {
            return r;
        }
    }
    real!(IOCTL as crate::real::IoctlFn, -1, (fd, request, arg))
}
