//! `opendir`, `readdir` and friends for the fake directories (`/dev/vfio` and the sysfs
//! directories): glibc reads directories with `getdents64` on an fd opened internally, which
//! never reaches our `open`, so the public `DIR` functions are interposed and a fake directory
//! is a `DIR *` of our own. Real `DIR *`s go to libc untouched; telling them apart takes no lock
//! while no fake directory is open.
//!
//! Entries are listed as the kernel's `dcache_readdir` would: `.`, `..`, then the names.

use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_long};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{open::open_node, real, serve, target, Served, Target};
use crate::files::File;
use crate::paths::{self, Node};
use crate::real::{ScanCompar, ScanFilter};
use crate::state::{state, State};
use type1::usercopy::copy_to_process;

/// An open fake directory stream.
#[derive(Debug)]
struct FakeDir {
    entries: Vec<(Vec<u8>, u8)>,
    pos: usize,
    fd: c_int,
    ent: libc::dirent64,
}

static OPEN: AtomicUsize = AtomicUsize::new(0);
pub(super) static DIRS: crate::spin::SpinLock<Option<HashSet<usize>>> =
    crate::spin::SpinLock::new(None);

fn entries(s: &State, node: &Node) -> Vec<(Vec<u8>, u8)> {
    let mut v = vec![
        (b".".to_vec(), libc::DT_DIR),
        (b"..".to_vec(), libc::DT_DIR),
    ];
    v.extend(
        paths::entries(&s.cfg, node)
            .into_iter()
            .map(|(n, t)| (n.into_bytes(), t)),
    );
    v
}

fn is_fake(d: *mut libc::DIR) -> bool {
    OPEN.load(Ordering::Acquire) != 0
        && serve(false, || {
            Some(Ok(DIRS
                .lock()
                .as_ref()
                .is_some_and(|set| set.contains(&(d as usize)))))
        })
        .unwrap_or(false)
}

fn new_dir(s: &State, node: &Node, fd: c_int) -> *mut libc::DIR {
    // SAFETY: `dirent64` is plain old data; all-zero is a valid value.
    let ent: libc::dirent64 = unsafe { std::mem::zeroed() };
    let d = Box::into_raw(Box::new(FakeDir {
        entries: entries(s, node),
        pos: 0,
        fd,
        ent,
    }));
    DIRS.lock()
        .get_or_insert_with(HashSet::new)
        .insert(d as usize);
    OPEN.fetch_add(1, Ordering::AcqRel);
    d.cast()
}

fn opendir_node(s: &State, l: crate::paths::Lookup) -> Served<*mut libc::DIR> {
    let fd = open_node(s, l, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
    let node = s.files.get(fd).and_then(|f| f.node()).ok_or(libc::EBADF)?;
    Ok(new_dir(s, &node, fd))
}

/// Interposed `opendir`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut libc::DIR {
    let r = match target(libc::AT_FDCWD, path) {
        Target::Real => None,
        Target::Fault => serve(std::ptr::null_mut(), || Some(Err(libc::EFAULT))),
        Target::Ours(s, l) => serve(std::ptr::null_mut(), || Some(opendir_node(s, l))),
    };
    if let Some(r) = r {
        return r;
    }
    let (path, _redirect) = super::redirect(path);
    real!(
        OPENDIR as crate::real::OpendirFn,
        std::ptr::null_mut(),
        (path)
    )
}

/// Interposed `fdopendir`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut libc::DIR {
    if crate::files::OURS.contains(fd) {
        let r = serve(std::ptr::null_mut(), || {
            let s = state()?;
            Some(match s.files.get(fd)? {
                File::Dir(node) => Ok(new_dir(s, &node, fd)),
                _ => Err(libc::ENOTDIR),
            })
        });
        if let Some(r) = r {
            return r;
        }
    }
    real!(
        FDOPENDIR as crate::real::FdopendirFn,
        std::ptr::null_mut(),
        (fd)
    )
}

/// The next entry of a fake stream, or null at the end.
fn next(d: *mut libc::DIR) -> *mut libc::dirent64 {
    // SAFETY: `d` is a live `FakeDir` (checked by `is_fake`), used by one thread at a time as
    // POSIX requires of a directory stream.
    let fd = unsafe { &mut *d.cast::<FakeDir>() };
    let Some((name, ty)) = fd.entries.get(fd.pos) else {
        return std::ptr::null_mut();
    };
    fd.pos += 1;
    fd.ent.d_ino = 1 + fd.pos as u64;
    fd.ent.d_off = i64::try_from(fd.pos).unwrap_or(i64::MAX);
    fd.ent.d_reclen = u16::try_from(std::mem::size_of::<libc::dirent64>()).unwrap_or(u16::MAX);
    fd.ent.d_type = *ty;
    fd.ent.d_name = [0; 256];
    for (dst, src) in fd.ent.d_name.iter_mut().zip(name.iter().take(255)) {
        *dst = *src as c_char;
    }
    &raw mut fd.ent
}

/// Interposed `readdir64`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn readdir64(d: *mut libc::DIR) -> *mut libc::dirent64 {
    if is_fake(d) {
        return next(d);
    }
    real!(
        READDIR64 as crate::real::Readdir64Fn,
        std::ptr::null_mut(),
        (d)
    )
}

/// Interposed `readdir` (`struct dirent` and `struct dirent64` are one layout on x86-64).
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn readdir(d: *mut libc::DIR) -> *mut libc::dirent {
    if is_fake(d) {
        return next(d).cast();
    }
    real!(READDIR as crate::real::ReaddirFn, std::ptr::null_mut(), (d))
}

/// Interposed `closedir`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn closedir(d: *mut libc::DIR) -> c_int {
    if is_fake(d) {
        serve((), || {
            if let Some(set) = DIRS.lock().as_mut() {
                set.remove(&(d as usize));
            }
            Some(Ok(()))
        });
        OPEN.fetch_sub(1, Ordering::AcqRel);
        // SAFETY: `d` came from `Box::into_raw` in `new_dir` and was just unregistered.
        let fd = unsafe { Box::from_raw(d.cast::<FakeDir>()) };
        // SAFETY: the fd this stream owned, closed through our close (forgets it too).
        return unsafe { super::fd::close(fd.fd) };
    }
    real!(CLOSEDIR as crate::real::ClosedirFn, -1, (d))
}

/// Interposed `rewinddir`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn rewinddir(d: *mut libc::DIR) {
    if is_fake(d) {
        // SAFETY: a live `FakeDir`, as in `next`.
        unsafe { (*d.cast::<FakeDir>()).pos = 0 };
        return;
    }
    real!(REWINDDIR as crate::real::RewinddirFn, (), (d));
}

/// Interposed `dirfd`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn dirfd(d: *mut libc::DIR) -> c_int {
    if is_fake(d) {
        // SAFETY: a live `FakeDir`, as in `next`.
        return unsafe { (*d.cast::<FakeDir>()).fd };
    }
    real!(DIRFD as crate::real::DirfdFn, -1, (d))
}

/// Interposed `telldir`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn telldir(d: *mut libc::DIR) -> c_long {
    if is_fake(d) {
        // SAFETY: a live `FakeDir`, as in `next`.
        return c_long::try_from(unsafe { (*d.cast::<FakeDir>()).pos }).unwrap_or(c_long::MAX);
    }
    real!(TELLDIR as crate::real::TelldirFn, -1, (d))
}

/// Interposed `seekdir`.
///
/// # Safety
/// As the libc function.
#[no_mangle]
pub unsafe extern "C" fn seekdir(d: *mut libc::DIR, pos: c_long) {
    if is_fake(d) {
        // SAFETY: a live `FakeDir`, as in `next`.
        unsafe { (*d.cast::<FakeDir>()).pos = usize::try_from(pos).unwrap_or(0) };
        return;
    }
    real!(SEEKDIR as crate::real::SeekdirFn, (), (d, pos));
}

/// `scandir` of a fake directory: entries `malloc`ed one by one as glibc does, filtered and
/// sorted with the caller's functions.
fn scan(
    s: &State,
    l: crate::paths::Lookup,
    namelist: *mut *mut *mut libc::dirent,
    filter: ScanFilter,
    compar: ScanCompar,
) -> Served<c_int> {
    let node = match l? {
        n if n.is_link() => n.follow().ok_or(libc::ENOENT)?,
        n if n.is_dir() => n,
        _ => return Err(libc::ENOTDIR),
    };
    let size = std::mem::size_of::<libc::dirent>();
    let mut kept: Vec<*mut libc::dirent> = Vec::new();
    for (i, (name, ty)) in entries(s, &node).into_iter().enumerate() {
        // SAFETY: malloc of one dirent; freed below or by the caller, as with glibc.
        let p = unsafe { libc::malloc(size) }.cast::<libc::dirent>();
        if p.is_null() {
            for k in kept {
                // SAFETY: entries malloc'ed above.
                unsafe { libc::free(k.cast()) };
            }
            return Err(libc::ENOMEM);
        }
        // SAFETY: `dirent` is plain old data; `p` points to `size` writable bytes.
        unsafe {
            let mut e: libc::dirent = std::mem::zeroed();
            e.d_ino = i as u64 + 1;
            e.d_off = i64::try_from(i + 1).unwrap_or(i64::MAX);
            e.d_reclen = u16::try_from(size).unwrap_or(u16::MAX);
            e.d_type = ty;
            for (dst, src) in e.d_name.iter_mut().zip(name.iter().take(255)) {
                *dst = *src as c_char;
            }
            p.write(e);
        }
        // SAFETY: the caller's filter, given an entry as glibc would.
        let keep = filter.is_none_or(|f| unsafe { f(p) } != 0);
        if keep {
            kept.push(p);
        } else {
            // SAFETY: the entry malloc'ed above.
            unsafe { libc::free(p.cast()) };
        }
    }
    if let Some(c) = compar {
        // SAFETY: sorting our own array of pointers with the caller's comparison, as glibc's
        // scandir does with qsort.
        unsafe {
            libc::qsort(
                kept.as_mut_ptr().cast(),
                kept.len(),
                std::mem::size_of::<*mut libc::dirent>(),
                Some(std::mem::transmute::<
                    unsafe extern "C" fn(
                        *mut *const libc::dirent,
                        *mut *const libc::dirent,
                    ) -> c_int,
                    unsafe extern "C" fn(*const libc::c_void, *const libc::c_void) -> c_int,
                >(c)),
            );
        }
    }
    let n = kept.len();
    // SAFETY: malloc of the array the caller frees.
    let arr = unsafe { libc::malloc(n.max(1) * std::mem::size_of::<*mut libc::dirent>()) }
        .cast::<*mut libc::dirent>();
    let free_all = |kept: &[*mut libc::dirent]| {
        for &k in kept {
            // SAFETY: entries malloc'ed above.
            unsafe { libc::free(k.cast()) };
        }
    };
    if arr.is_null() {
        free_all(&kept);
        return Err(libc::ENOMEM);
    }
    // SAFETY: `arr` holds `n` pointers.
    unsafe { std::ptr::copy_nonoverlapping(kept.as_ptr(), arr, n) };
    if copy_to_process(namelist as u64, &(arr as usize).to_ne_bytes()).is_err() {
        free_all(&kept);
        // SAFETY: the array malloc'ed above.
        unsafe { libc::free(arr.cast()) };
        return Err(libc::EFAULT);
    }
    Ok(c_int::try_from(n).unwrap_or(c_int::MAX))
}

macro_rules! scandir_like {
    ($name:ident, $sym:ident) => {
        /// Interposed `scandir`-style entry point.
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            namelist: *mut *mut *mut libc::dirent,
            filter: ScanFilter,
            compar: ScanCompar,
        ) -> c_int {
            let r = match target(libc::AT_FDCWD, path) {
                Target::Real => None,
                Target::Fault => serve(-1, || Some(Err(libc::EFAULT))),
                Target::Ours(s, l) => serve(-1, || Some(scan(s, l, namelist, filter, compar))),
            };
            if let Some(r) = r {
                return r;
            }
            let (path, _redirect) = super::redirect(path);
            real!(
                $sym as crate::real::ScandirFn,
                -1,
                (path, namelist, filter, compar)
            )
        }
    };
}

scandir_like!(scandir, SCANDIR);
scandir_like!(scandir64, SCANDIR64);
