//! The real libc functions behind the interposed ones (`dlsym(RTLD_NEXT, name)`).

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
    };
}

syms! {
    OPEN = c"open";
    OPEN64 = c"open64";
    OPENAT = c"openat";
    OPENAT64 = c"openat64";
    OPEN_2 = c"__open_2";
    OPEN64_2 = c"__open64_2";
    IOCTL = c"ioctl";
    CLOSE = c"close";
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
    STATX = c"statx";
    ACCESS = c"access";
    FACCESSAT = c"faccessat";
    READLINK = c"readlink";
    READLINKAT = c"readlinkat";
    REALPATH = c"realpath";
}

/// `int (const char *, int, mode_t)`.
pub(crate) type OpenFn = unsafe extern "C" fn(*const c_char, c_int, libc::mode_t) -> c_int;
/// `int (int, const char *, int, mode_t)`.
pub(crate) type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, libc::mode_t) -> c_int;
/// `int (const char *, int)`.
pub(crate) type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
/// `int (int, unsigned long, void *)`.
pub(crate) type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, *mut c_void) -> c_int;
/// `int (int)`.
pub(crate) type FdFn = unsafe extern "C" fn(c_int) -> c_int;
/// `int (int, int)`.
pub(crate) type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
/// `int (int, int, int)`.
pub(crate) type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
/// `int (int, int, unsigned long)`.
pub(crate) type FcntlFn = unsafe extern "C" fn(c_int, c_int, c_ulong) -> c_int;
/// `int (unsigned, unsigned, int)`.
pub(crate) type CloseRangeFn = unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int;
/// `int (const char *, struct stat *)`.
pub(crate) type StatFn = unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int;
/// `int (int, struct stat *)`.
pub(crate) type FstatFn = unsafe extern "C" fn(c_int, *mut libc::stat) -> c_int;
/// `int (int, const char *, struct stat *, int)`.
pub(crate) type FstatatFn =
    unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
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
