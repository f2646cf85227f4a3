//! "Which area contains this address?" answered by the kernel: the `PROCMAP_QUERY` ioctl on
//! `/proc/self/maps` (Linux 6.11, `do_procmap_query` in fs/proc/task_mmu.c), which looks one
//! area up in O(log n) under the mm's lock instead of printing every area as text. A pin of one
//! area costs one `fstat` and one `ioctl`, whatever the number of areas in the process.
//!
//! The fd to `/proc/self/maps` is opened once (close-on-exec) and kept for the life of the
//! process. It lives in someone else's process (the drop-in), so before each use it is checked
//! to still be ours:
//! - after `fork`, the child's copy would describe the *parent's* areas: the fd is tagged with
//!   the process id, and a child opens its own (the inherited copy is left open, close-on-exec;
//!   closing it could close a file the child program opened on that number since);
//! - the program may close the fd and open something else on its number (`close_range`,
//!   `closefrom`): `fstat` must still give the device and inode recorded at open, else the fd is
//!   forgotten (not closed: it is not ours any more) and a new one opened. `/proc/<pid>/maps`
//!   inodes are per process, so no other file matches.
//!
//! Older kernels answer `ENOTTY`: `Answer::Unsupported`, and the caller reads the text file.
//! Addresses are byte addresses; areas are `[start, end)`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::gup::MapsLine;

/// `struct procmap_query` (include/uapi/linux/fs.h, v6.11+). The kernel copies `size` bytes
/// (`copy_struct_from_user`), so this layout works with newer kernels that extend it.
#[repr(C)]
#[derive(Debug, Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

const _: () = assert!(std::mem::size_of::<ProcmapQuery>() == 104);

/// `PROCMAP_QUERY_VMA_READABLE` … `_SHARED` (`enum procmap_query_flags`).
const VMA_READABLE: u64 = 0x01;
const VMA_WRITABLE: u64 = 0x02;
const VMA_SHARED: u64 = 0x08;

/// `PROCMAP_QUERY = _IOWR(PROCFS_IOCTL_MAGIC = 'f', 17, struct procmap_query)`.
const PROCMAP_QUERY: u64 = ioc_readwrite(b'f', 17, std::mem::size_of::<ProcmapQuery>());

/// `_IOWR(type, nr, size)` on the generic ioctl encoding (x86, arm64, riscv).
const fn ioc_readwrite(ty: u8, nr: u8, size: usize) -> u64 {
    const READ_WRITE: u64 = 3;
    (READ_WRITE << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `PATH_MAX`: the kernel never writes a longer name (it fails with `ENAMETOOLONG` instead).
const NAME_MAX: usize = 4096;

/// A name buffer for [`query`].
#[derive(Debug)]
pub(crate) struct NameBuf(Box<[u8; NAME_MAX]>);

impl NameBuf {
    pub(crate) fn new() -> Self {
        NameBuf(Box::new([0; NAME_MAX]))
    }
}

/// What the kernel said about an address.
#[derive(Debug)]
pub(crate) enum Answer<'a> {
    /// The area containing the address.
    Area(MapsLine<'a>),
    /// No area contains the address (`ENOENT`).
    Unmapped,
    /// No `PROCMAP_QUERY` here (kernel before 6.11, or `/proc` unusable): read the text file.
    Unsupported,
}

/// A cached `/proc/self/maps` fd (module docs). The process has one, [`CACHE`].
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// `pid << 32 | fd`, 0 when none.
    fd: AtomicU64,
    /// `st_dev` and `st_ino` of that fd.
    dev: AtomicU64,
    ino: AtomicU64,
}

/// The process's cache.
pub(crate) static CACHE: Cache = Cache {
    fd: AtomicU64::new(0),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
};

/// `(st_dev, st_ino)` of `fd`. Raw system calls here and below: inside the drop-in, the libc
/// entry points are the drop-in's own interposers.
fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `struct stat` to a valid, exclusively borrowed buffer.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &raw mut st) };
    (r == 0).then_some((st.st_dev, st.st_ino))
}

fn close(fd: i32) {
    // SAFETY: only called on an fd this module opened and never published.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

impl Cache {
    /// Our `/proc/self/maps` fd, verified (module docs), or a fresh one; `None` if `/proc`
    /// cannot be opened.
    pub(crate) fn fd(&self) -> Option<i32> {
        let pid = u64::try_from(crate::usercopy::pid()).unwrap_or(0);
        let cached = self.fd.load(Ordering::Acquire);
        if cached != 0 && cached >> 32 == pid {
            let fd = i32::try_from(cached & 0x7fff_ffff).unwrap_or(-1);
            let want = (
                self.dev.load(Ordering::Acquire),
                self.ino.load(Ordering::Acquire),
            );
            if identity(fd) == Some(want) {
                return Some(fd);
            }
        }
        // SAFETY: a NUL-terminated path; a read-only, close-on-exec fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/proc/self/maps".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        let fd = i32::try_from(r).ok().filter(|&fd| fd >= 0)?;
        let Some((dev, ino)) = identity(fd) else {
            close(fd);
            return None;
        };
        // Another thread may have opened one too: both are valid; the last one stored is
        // cached and the other stays open (a rare, bounded leak of one fd per race, never a
        // double close). A reader between the stores fails the identity check and opens again.
        self.fd.store(0, Ordering::Release);
        self.dev.store(dev, Ordering::Release);
        self.ino.store(ino, Ordering::Release);
        self.fd.store(
            pid << 32 | u64::try_from(fd).unwrap_or(0),
            Ordering::Release,
        );
        Some(fd)
    }
}

/// The area containing `addr`, with its name written into `name`.
#[cfg(test)]
pub(crate) fn query(addr: u64, name: &mut NameBuf) -> Answer<'_> {
    let Some(fd) = CACHE.fd() else {
        return Answer::Unsupported;
    };
    query_fd(fd, addr, name)
}

/// One area as `PROCMAP_QUERY` describes it (the fields the pin rules and the drop-in's stack
/// check read). Addresses are `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawArea {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `VM_READ`.
    pub read: bool,
    /// `VM_WRITE`.
    pub write: bool,
    /// `VM_MAYSHARE`.
    pub shared: bool,
    /// The backing file's device (major, minor); `(0, 0)` for anonymous memory.
    pub dev: (u32, u32),
    /// The backing file's inode; 0 for anonymous memory.
    pub inode: u64,
    /// Bytes of the name written to the caller's buffer, its NUL included; 0: no name.
    pub name_len: usize,
}

/// One `PROCMAP_QUERY` on `fd` (an fd of `/proc/self/maps` the caller owns) for the area
/// containing `addr`, its name written into `name` (an empty `name` asks for none).
/// Async-signal-safe: one raw system call, no allocation, no lock.
///
/// # Errors
/// The ioctl's errno: `ENOENT` if no area contains `addr`, `ENAMETOOLONG` if the name does not
/// fit `name`, `ENOTTY` before Linux 6.11.
pub fn query_raw(fd: i32, addr: u64, name: &mut [u8]) -> Result<RawArea, i32> {
    let mut q = ProcmapQuery {
        size: std::mem::size_of::<ProcmapQuery>() as u64,
        query_addr: addr,
        vma_name_size: u32::try_from(name.len()).map_err(|_| libc::EINVAL)?,
        vma_name_addr: if name.is_empty() {
            0
        } else {
            name.as_mut_ptr() as u64
        },
        ..ProcmapQuery::default()
    };
    // SAFETY: `q` is a valid `procmap_query` the kernel reads and writes back; its name pointer
    // is the caller's exclusively borrowed buffer, of which the kernel writes at most
    // `vma_name_size` bytes (the build-id size is 0).
    let r = unsafe { libc::syscall(libc::SYS_ioctl, fd, PROCMAP_QUERY, &raw mut q) };
    if r != 0 {
        // SAFETY: reads this thread's errno, just set by the failed call.
        return Err(unsafe { *libc::__errno_location() });
    }
    Ok(RawArea {
        start: q.vma_start,
        end: q.vma_end,
        read: q.vma_flags & VMA_READABLE != 0,
        write: q.vma_flags & VMA_WRITABLE != 0,
        shared: q.vma_flags & VMA_SHARED != 0,
        dev: (q.dev_major, q.dev_minor),
        inode: q.inode,
        name_len: usize::try_from(q.vma_name_size).map_or(name.len(), |n| n.min(name.len())),
    })
}

/// [`query`] on a verified fd (several queries of one pin share one check).
pub(crate) fn query_fd(fd: i32, addr: u64, name: &mut NameBuf) -> Answer<'_> {
    let q = match query_raw(fd, addr, &mut name.0[..]) {
        Ok(q) => q,
        Err(libc::ENOENT) => return Answer::Unmapped,
        Err(_) => return Answer::Unsupported,
    };
    if q.start > addr || addr >= q.end {
        return Answer::Unsupported;
    }
    // The kernel counts the terminating NUL in the name's size; 0 means no name.
    let raw = &name.0[..q.name_len];
    let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
    let Ok(path) = std::str::from_utf8(raw) else {
        // A non-UTF-8 file name: classified as an ordinary file by the text path too (lossy
        // there); here, let the text path decide.
        return Answer::Unsupported;
    };
    Answer::Area(MapsLine {
        start: q.start,
        end: q.end,
        read: q.read,
        write: q.write,
        shared: q.shared,
        dev: q.dev,
        inode: q.inode,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> bool {
        let mut n = NameBuf::new();
        let x = 0u8;
        !matches!(query(&raw const x as u64, &mut n), Answer::Unsupported)
    }

    #[test]
    fn the_request_number_is_the_kernels() {
        // _IOWR('f', 17, struct procmap_query) with sizeof == 104 (include/uapi/linux/fs.h).
        assert_eq!(PROCMAP_QUERY, 0xC068_6611);
    }

    #[test]
    fn an_anonymous_mapping_is_found_with_its_bounds_and_permissions() {
        if !supported() {
            eprintln!("PROCMAP_QUERY unsupported here (kernel < 6.11): nothing to check");
            return;
        }
        let len = 3 * 4096;
        // SAFETY: a fresh anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let a = p as u64;
        let mut n = NameBuf::new();
        match query(a + 4096, &mut n) {
            Answer::Area(l) => {
                assert!(l.start <= a && l.end >= a + len as u64, "{l:?}");
                assert!(l.read && !l.write && !l.shared, "{l:?}");
                assert_eq!(l.inode, 0);
            }
            other => panic!("{other:?}"),
        }
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(p, len) };
        assert!(matches!(query(a + 4096, &mut n), Answer::Unmapped));
    }

    #[test]
    fn a_memfd_mapping_is_named_as_in_the_maps_file() {
        if !supported() {
            return;
        }
        // SAFETY: creates an fd owned by this test.
        let fd = unsafe { libc::memfd_create(c"procmap-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: sizes and maps our own memfd, shared and writable.
        let p = unsafe {
            assert_eq!(libc::ftruncate(fd, 4096), 0);
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let mut n = NameBuf::new();
        match query(p as u64, &mut n) {
            Answer::Area(l) => {
                assert!(l.read && l.write && l.shared, "{l:?}");
                assert!(l.path.starts_with("/memfd:procmap-test"), "{l:?}");
                assert_ne!(l.inode, 0);
            }
            other => panic!("{other:?}"),
        }
        // SAFETY: releases the mapping and fd made above.
        unsafe {
            libc::munmap(p, 4096);
            libc::close(fd);
        }
    }

    #[test]
    fn a_cached_fd_closed_behind_our_back_is_replaced_not_reused() {
        if !supported() {
            return;
        }
        let cache = Cache::default();
        let fd = cache.fd().unwrap();
        assert_eq!(cache.fd(), Some(fd), "a verified fd is reused");
        // The program closes our fd and opens something else, maybe on the same number.
        close(fd);
        // SAFETY: opens /dev/null for this test.
        let other = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(other >= 0);
        let fresh = cache.fd().unwrap();
        assert_ne!(fresh, other, "another file's fd was trusted");
        let x = 0u8;
        let mut n = NameBuf::new();
        assert!(matches!(
            query_fd(fresh, &raw const x as u64, &mut n),
            Answer::Area(_)
        ));
        close(other);
        close(fresh);
    }

    #[test]
    fn every_area_is_described_as_the_maps_text_describes_it() {
        if !supported() {
            return;
        }
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let (mut same, mut total) = (0, 0);
        let mut n = NameBuf::new();
        for l in text.lines().filter_map(super::super::gup::parse_maps_line) {
            total += 1;
            // Other test threads map and unmap meanwhile: compare areas that did not change.
            if let Answer::Area(q) = query(l.start, &mut n) {
                if (q.start, q.end) == (l.start, l.end) {
                    assert_eq!(q, l, "area {:#x}-{:#x}", l.start, l.end);
                    same += 1;
                }
            }
        }
        assert!(
            total > 5 && same * 10 >= total * 9,
            "{same} of {total} areas compared"
        );
    }
}
