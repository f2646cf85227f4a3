//! The real libc functions behind the interposed ones (`dlsym(RTLD_NEXT, name)`).
//!
//! Every symbol is resolved once, eagerly, when the library is loaded ([`resolve_all`] runs
//! from `.init_array`), so no interposer ever calls `dlsym` later: `dlsym` takes the dynamic
//! loader's lock and is not async-signal-safe, and an interposer may run in a signal handler.
//! A symbol that is still unresolved when first used (a call before our constructor ran) is
//! resolved then.
//!
//! The variadic C functions (`open`, `openat`, `ioctl`, `fcntl`) are called through variadic
//! function pointer types, so the call follows the C variadic convention exactly.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A lazily resolved symbol.
#[derive(Debug)]
pub(crate) struct Sym {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl Sym {
    const fn new(name: &'static CStr) -> Self {
        Sym {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The address of the next definition of the symbol, or 0 if there is none.
    pub(crate) fn get(&self) -> usize {
        let a = self.addr.load(Ordering::Relaxed);
        if a != 0 {
            return a;
        }
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only looks the symbol up.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        self.addr.store(p, Ordering::Relaxed);
        p
    }
}

macro_rules! syms {
    ($($id:ident = $name:literal;)*) => {
        $(
            #[doc = "A libc symbol resolved with `dlsym(RTLD_NEXT)`."]
            pub(crate) static $id: Sym = Sym::new($name);
        )*
        /// Resolves every symbol now.
        pub(crate) fn resolve_all() {
            $( $id.get(); )*
        }
    };
}

syms! {
    OPEN = c"open";
    OPEN64 = c"open64";
    OPENAT = c"openat";
    OPENAT64 = c"openat64";
    OPEN_2 = c"__open_2";
    OPEN64_2 = c"__open64_2";
    OPENAT_2 = c"__openat_2";
    OPENAT64_2 = c"__openat64_2";
    IOCTL = c"ioctl";
    CLOSE = c"close";
    CLOSEFROM = c"closefrom";
    DUP = c"dup";
    DUP2 = c"dup2";
    DUP3 = c"dup3";
    FCNTL = c"fcntl";
    FCNTL64 = c"fcntl64";
    CLOSE_RANGE = c"close_range";
    STAT = c"stat";
    STAT64 = c"stat64";
    LSTAT = c"lstat";
    LSTAT64 = c"lstat64";
    FSTAT = c"fstat";
    FSTAT64 = c"fstat64";
    FSTATAT = c"fstatat";
    FSTATAT64 = c"fstatat64";
    XSTAT = c"__xstat";
    XSTAT64 = c"__xstat64";
    LXSTAT = c"__lxstat";
    LXSTAT64 = c"__lxstat64";
    FXSTAT = c"__fxstat";
    FXSTAT64 = c"__fxstat64";
    FXSTATAT = c"__fxstatat";
    FXSTATAT64 = c"__fxstatat64";
    STATX = c"statx";
    ACCESS = c"access";
    FACCESSAT = c"faccessat";
    EACCESS = c"eaccess";
    EUIDACCESS = c"euidaccess";
    READLINK = c"readlink";
    READLINKAT = c"readlinkat";
    REALPATH = c"realpath";
    READ = c"read";
    WRITE = c"write";
    PREAD = c"pread";
    PREAD64 = c"pread64";
    PWRITE = c"pwrite";
    PWRITE64 = c"pwrite64";
    READV = c"readv";
    WRITEV = c"writev";
    PREADV = c"preadv";
    PREADV64 = c"preadv64";
    PWRITEV = c"pwritev";
    PWRITEV64 = c"pwritev64";
    PREADV2 = c"preadv2";
    PREADV64V2 = c"preadv64v2";
    PWRITEV2 = c"pwritev2";
    PWRITEV64V2 = c"pwritev64v2";
    LSEEK = c"lseek";
    LSEEK64 = c"lseek64";
    MMAP = c"mmap";
    MMAP64 = c"mmap64";
    FOPEN = c"fopen";
    FOPEN64 = c"fopen64";
    FDOPEN = c"fdopen";
    FCLOSE = c"fclose";
    OPENDIR = c"opendir";
    FDOPENDIR = c"fdopendir";
    READDIR = c"readdir";
    READDIR64 = c"readdir64";
    CLOSEDIR = c"closedir";
    REWINDDIR = c"rewinddir";
    DIRFD = c"dirfd";
    TELLDIR = c"telldir";
    SEEKDIR = c"seekdir";
    SCANDIR = c"scandir";
    SCANDIR64 = c"scandir64";
    PREAD_CHK = c"__pread_chk";
    PREAD64_CHK = c"__pread64_chk";
    READ_CHK = c"__read_chk";
    MUNMAP = c"munmap";
    GETXATTR = c"getxattr";
    LGETXATTR = c"lgetxattr";
    FGETXATTR = c"fgetxattr";
    LISTXATTR = c"listxattr";
    LLISTXATTR = c"llistxattr";
    FLISTXATTR = c"flistxattr";
}

/// `int (const char *, int, ...)`.
pub(crate) type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
/// `int (int, const char *, int, ...)`.
pub(crate) type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
/// `int (const char *, int)`.
pub(crate) type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
/// `int (int, const char *, int)`.
pub(crate) type Openat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
/// `int (int, unsigned long, ...)`.
pub(crate) type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;
/// `int (int)`.
pub(crate) type FdFn = unsafe extern "C" fn(c_int) -> c_int;
/// `void (int)`.
pub(crate) type ClosefromFn = unsafe extern "C" fn(c_int);
/// `int (int, int)`.
pub(crate) type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
/// `int (int, int, int)`.
pub(crate) type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
/// `int (int, int, ...)`.
pub(crate) type FcntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
/// `int (unsigned, unsigned, int)`.
pub(crate) type CloseRangeFn = unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int;
/// `int (const char *, struct stat *)`.
pub(crate) type StatFn = unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int;
/// `int (int, struct stat *)`.
pub(crate) type FstatFn = unsafe extern "C" fn(c_int, *mut libc::stat) -> c_int;
/// `int (int, const char *, struct stat *, int)`.
pub(crate) type FstatatFn =
    unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
/// `int (int ver, const char *, struct stat *)`.
pub(crate) type XstatFn = unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat) -> c_int;
/// `int (int ver, int, struct stat *)`.
pub(crate) type FxstatFn = unsafe extern "C" fn(c_int, c_int, *mut libc::stat) -> c_int;
/// `int (int ver, int, const char *, struct stat *, int)`.
pub(crate) type FxstatatFn =
    unsafe extern "C" fn(c_int, c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
/// `int (int, const char *, int, unsigned, struct statx *)`.
pub(crate) type StatxFn =
    unsafe extern "C" fn(c_int, *const c_char, c_int, c_uint, *mut libc::statx) -> c_int;
/// `int (const char *, int)`.
pub(crate) type AccessFn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
/// `int (int, const char *, int, int)`.
pub(crate) type FaccessatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, c_int) -> c_int;
/// `ssize_t (const char *, char *, size_t)`.
pub(crate) type ReadlinkFn = unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> isize;
/// `ssize_t (int, const char *, char *, size_t)`.
pub(crate) type ReadlinkatFn =
    unsafe extern "C" fn(c_int, *const c_char, *mut c_char, usize) -> isize;
/// `char *(const char *, char *)`.
pub(crate) type RealpathFn = unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut c_char;
/// `ssize_t (int, void *, size_t)`.
pub(crate) type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
/// `ssize_t (int, const void *, size_t)`.
pub(crate) type WriteFn = unsafe extern "C" fn(c_int, *const c_void, usize) -> isize;
/// `ssize_t (int, void *, size_t, off_t)`.
pub(crate) type PreadFn = unsafe extern "C" fn(c_int, *mut c_void, usize, i64) -> isize;
/// `ssize_t (int, const void *, size_t, off_t)`.
pub(crate) type PwriteFn = unsafe extern "C" fn(c_int, *const c_void, usize, i64) -> isize;
/// `ssize_t (int, const struct iovec *, int)`.
pub(crate) type ReadvFn = unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> isize;
/// `ssize_t (int, const struct iovec *, int, off_t)`.
pub(crate) type PreadvFn = unsafe extern "C" fn(c_int, *const libc::iovec, c_int, i64) -> isize;
/// `ssize_t (int, const struct iovec *, int, off_t, int)`.
pub(crate) type Preadv2Fn =
    unsafe extern "C" fn(c_int, *const libc::iovec, c_int, i64, c_int) -> isize;
/// `off_t (int, off_t, int)`.
pub(crate) type LseekFn = unsafe extern "C" fn(c_int, i64, c_int) -> i64;
/// `void *(void *, size_t, int, int, int, off_t)`.
pub(crate) type MmapFn =
    unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, c_int, i64) -> *mut c_void;
/// `FILE *(const char *, const char *)`.
pub(crate) type FopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
/// `FILE *(int, const char *)`.
pub(crate) type FdopenFn = unsafe extern "C" fn(c_int, *const c_char) -> *mut libc::FILE;
/// `int (FILE *)`.
pub(crate) type FcloseFn = unsafe extern "C" fn(*mut libc::FILE) -> c_int;
/// `DIR *(const char *)`.
pub(crate) type OpendirFn = unsafe extern "C" fn(*const c_char) -> *mut libc::DIR;
/// `DIR *(int)`.
pub(crate) type FdopendirFn = unsafe extern "C" fn(c_int) -> *mut libc::DIR;
/// `struct dirent *(DIR *)`.
pub(crate) type ReaddirFn = unsafe extern "C" fn(*mut libc::DIR) -> *mut libc::dirent;
/// `struct dirent64 *(DIR *)`.
pub(crate) type Readdir64Fn = unsafe extern "C" fn(*mut libc::DIR) -> *mut libc::dirent64;
/// `int (DIR *)`.
pub(crate) type ClosedirFn = unsafe extern "C" fn(*mut libc::DIR) -> c_int;
/// `void (DIR *)`.
pub(crate) type RewinddirFn = unsafe extern "C" fn(*mut libc::DIR);
/// `long (DIR *)`.
pub(crate) type TelldirFn = unsafe extern "C" fn(*mut libc::DIR) -> libc::c_long;
/// `void (DIR *, long)`.
pub(crate) type SeekdirFn = unsafe extern "C" fn(*mut libc::DIR, libc::c_long);
/// `scandir`'s filter.
pub(crate) type ScanFilter = Option<unsafe extern "C" fn(*const libc::dirent) -> c_int>;
/// `scandir`'s comparison.
pub(crate) type ScanCompar =
    Option<unsafe extern "C" fn(*mut *const libc::dirent, *mut *const libc::dirent) -> c_int>;
/// `int (const char *, struct dirent ***, filter, compar)`.
pub(crate) type ScandirFn = unsafe extern "C" fn(
    *const c_char,
    *mut *mut *mut libc::dirent,
    ScanFilter,
    ScanCompar,
) -> c_int;

/// The resolved real function, as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the C type of the symbol (a function pointer type).
pub(crate) unsafe fn func<F: Copy>(sym: &Sym) -> Option<F> {
    let a = sym.get();
    if a == 0 {
        return None;
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: `a` is the non-null address of the symbol, whose type the caller guarantees.
    Some(unsafe { std::mem::transmute_copy::<usize, F>(&a) })
}
/// `int (DIR *)`.
pub(crate) type DirfdFn = unsafe extern "C" fn(*mut libc::DIR) -> c_int;
/// `ssize_t (const char *, const char *, void *, size_t)`.
pub(crate) type GetxattrFn =
    unsafe extern "C" fn(*const c_char, *const c_char, *mut c_void, usize) -> isize;
/// `ssize_t (int, const char *, void *, size_t)`.
pub(crate) type FgetxattrFn =
    unsafe extern "C" fn(c_int, *const c_char, *mut c_void, usize) -> isize;
/// `ssize_t (const char *, char *, size_t)`.
pub(crate) type ListxattrFn = unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> isize;
/// `ssize_t (int, char *, size_t)`.
pub(crate) type FlistxattrFn = unsafe extern "C" fn(c_int, *mut c_char, usize) -> isize;
/// `ssize_t (int, void *, size_t, off_t, size_t)`.
pub(crate) type PreadChkFn = unsafe extern "C" fn(c_int, *mut c_void, usize, i64, usize) -> isize;
/// `ssize_t (int, void *, size_t, size_t)`.
pub(crate) type ReadChkFn = unsafe extern "C" fn(c_int, *mut c_void, usize, usize) -> isize;
/// `int (void *, size_t)`.
pub(crate) type MunmapFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;
