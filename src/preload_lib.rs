//! Where `type1 run` (and `type1 bench`) find the drop-in, `libtype1_preload.so`:
//!
//! 1. `TYPE1_PRELOAD_LIB`, if set and not empty;
//! 2. in release builds, the copy carried inside this executable (`build.rs` builds it), written
//!    once to a per-user cache file named by its content hash, `~/.cache/type1/` (or
//!    `$XDG_CACHE_HOME/type1/`, or `/tmp/type1-UID/` without a home): an installed `type1`
//!    (`cargo install`, which installs binaries only) needs nothing beside it;
//! 3. beside this executable or in its `deps/` (debug builds in the repository).
//!
//! A file rather than a memfd named `/proc/self/fd/N` in `LD_PRELOAD`: that name only means the
//! library in processes that keep fd N, so a grandchild started after `close_range` (or any fd
//! reuse) would load nothing or another file; a file's path means the same in every descendant.
//! The file is written to a temporary name and renamed over the final one (a concurrent
//! `type1 run` or a running program never sees a partial file) and compared byte for byte with
//! the carried copy before every use; it is never deleted (one per `type1` build).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The drop-in carried inside this executable, and its name in the cache.
#[cfg(type1_embedded_preload)]
const EMBEDDED: Option<(&[u8], &str)> = Some((
    include_bytes!(concat!(env!("OUT_DIR"), "/libtype1_preload.so")),
    concat!("libtype1_preload-", env!("TYPE1_PRELOAD_HASH"), ".so"),
));
#[cfg(not(type1_embedded_preload))]
const EMBEDDED: Option<(&[u8], &str)> = None;

/// The drop-in library for `LD_PRELOAD`.
///
/// # Errors
/// When no cache directory is usable for the carried copy, or (in a build that carries none) no
/// library is beside the executable.
pub fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TYPE1_PRELOAD_LIB").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some((bytes, name)) = EMBEDDED {
        return cached(bytes, name);
    }
    beside_executable()
}

/// The library of a development build: beside this executable or in its `deps/`.
fn beside_executable() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the type1 executable")?;
    let dir = exe
        .parent()
        .context("the type1 executable has no directory")?;
    // Cargo refreshes the copy in `deps/` on every build but the one beside the binary only
    // when the drop-in itself is built: the newer of the two is this build's.
    let newest = [
        dir.join("libtype1_preload.so"),
        dir.join("deps/libtype1_preload.so"),
    ]
    .into_iter()
    .filter_map(|c| Some((std::fs::metadata(&c).ok()?.modified().ok()?, c)))
    .max_by_key(|(t, _)| *t);
    if let Some((_, lib)) = newest {
        return Ok(lib);
    }
    bail!(
        "libtype1_preload.so not found beside {} (this debug build carries no copy: build with \
         `cargo build --release` or TYPE1_EMBED_PRELOAD=1, or set TYPE1_PRELOAD_LIB)",
        exe.display()
    )
}

/// This process's effective uid.
fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The cache directories to try, best first.
fn cache_dirs() -> Vec<PathBuf> {
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let mut dirs = Vec::new();
    if let Some(x) = abs(std::env::var_os("XDG_CACHE_HOME")) {
        dirs.push(x.join("type1"));
    }
    if let Some(h) = abs(std::env::var_os("HOME")) {
        dirs.push(h.join(".cache/type1"));
    }
    dirs.push(std::env::temp_dir().join(format!("type1-{}", euid())));
    dirs
}

/// A directory only this user can change (owned by the effective uid, not group- or
/// world-writable), created with mode 0700 if missing: nobody else may swap the library between
/// the check and the load (with `sudo`, `HOME` may still be the invoking user's).
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let m = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !m.is_dir() || m.uid() != euid() || m.mode() & 0o022 != 0 {
        bail!(
            "{} is not a directory that only uid {} can write",
            dir.display(),
            euid()
        );
    }
    Ok(())
}

/// The carried library as a file in the first usable cache directory.
fn cached(bytes: &[u8], name: &str) -> Result<PathBuf> {
    let mut errors = Vec::new();
    for dir in cache_dirs() {
        match private_dir(&dir).and_then(|()| install(&dir, bytes, name)) {
            Ok(p) => return Ok(p),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!(
        "cannot write the drop-in carried by type1 to a cache directory ({}); set \
         XDG_CACHE_HOME to a writable directory, or TYPE1_PRELOAD_LIB",
        errors.join("; ")
    )
}

/// `dir/name` holding exactly `bytes`: reused if it does, else written to a temporary file and
/// renamed over it.
fn install(dir: &Path, bytes: &[u8], name: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = dir.join(name);
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        let ours = m.is_file() && m.uid() == euid() && m.mode() & 0o022 == 0;
        if ours
            && m.len() == bytes.len() as u64
            && std::fs::read(&path).ok().as_deref() == Some(bytes)
        {
            return Ok(path);
        }
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("type1-preload-lib-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn carried_library_is_written_once_and_rewritten_when_it_differs() {
        let d = scratch("install");
        private_dir(&d).unwrap();
        let p = install(&d, b"first", "lib-a.so").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        let before = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(install(&d, b"first", "lib-a.so").unwrap(), p);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), before);
        // A truncated or altered file (a crash, another writer) is replaced, never used.
        std::fs::write(&p, b"fir").unwrap();
        install(&d, b"first", "lib-a.so").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["lib-a.so"], "no temporary file left behind");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_cache_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch("mode");
        private_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
