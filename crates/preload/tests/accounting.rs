//! Locked-memory accounting and long-term pin rules under the drop-in (issue 11): C programs
//! change RLIMIT_MEMLOCK, CAP_IPC_LOCK and mlock'ed memory after they started, and map memory
//! of every kind the kernel's GUP rules tell apart; each asserts the kernel's errno and names the
//! kernel rule (`crates/preload/tests/c/acct_*.c`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::preload_lib;

/// Compiles `tests/c/<name>.c` into this build's temp dir (per process: parallel test binaries
/// of debug and release do not share it).
fn build(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("acct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One binary per call: tests run in parallel and may build the same program; executing a
    // file another test's gcc is writing fails with ETXTBSY.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = dir.join(format!("{name}-{n}"));
    let st = Command::new("gcc")
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("gcc is needed to build the test program: {e}"));
    assert!(st.success(), "gcc failed on {}", src.display());
    out
}

fn run_preloaded(prog: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(prog);
    c.args(args)
        .env("LD_PRELOAD", preload_lib())
        .env("TYPE1_GROUPS", "7:iommu")
        .env_remove("TYPE1_MEMLOCK");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn assert_pass(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("PASS"),
        "{what}: status {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn memlock_limit_is_read_at_each_map_after_setrlimit() {
    // __account_locked_vm reads task_rlimit(RLIMIT_MEMLOCK) at every charge.
    let prog = build("acct_limits");
    assert_pass(&run_preloaded(&prog, &["rlimit"], &[]), "rlimit");
}

#[test]
fn mlocked_memory_counts_against_the_memlock_limit() {
    // mlock and vfio both charge mm->locked_vm.
    let prog = build("acct_limits");
    assert_pass(&run_preloaded(&prog, &["mlock"], &[]), "mlock");
}

#[test]
fn cap_ipc_lock_is_read_at_each_map() {
    // vfio_dma_do_map: dma->lock_cap = capable(CAP_IPC_LOCK), per mapping. The program starts
    // with the capability (CI runs as root) and fails loudly, not skips, without it.
    let prog = build("acct_limits");
    assert_pass(&run_preloaded(&prog, &["cap"], &[]), "cap");
}

#[test]
fn type1_memlock_replaces_rlimit_memlock() {
    let prog = build("acct_limits");
    assert_pass(
        &run_preloaded(&prog, &["override"], &[("TYPE1_MEMLOCK", "128K")]),
        "override",
    );
}

/// `statfs(dir).f_type`.
fn fs_magic(dir: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable `statfs`.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (r == 0).then_some(st.f_type)
}

/// A directory on a disk file system (where shared writable file mappings need dirty
/// tracking): this build's temp dir, the target dir, /var/tmp or /tmp.
fn disk_dir() -> PathBuf {
    let tmpdir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut cands = vec![tmpdir.clone()];
    cands.extend(tmpdir.parent().map(Path::to_path_buf));
    cands.extend(["/var/tmp", "/tmp"].map(PathBuf::from));
    // RAMFS_MAGIC of <linux/magic.h>, which the libc crate does not export.
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let memory_fs = [libc::TMPFS_MAGIC, RAMFS_MAGIC, libc::HUGETLBFS_MAGIC];
    cands
        .into_iter()
        .find(|d| fs_magic(d).is_some_and(|m| !memory_fs.contains(&m)))
        .unwrap_or_else(|| {
            panic!(
                "no directory on a disk file system (ext4, xfs, btrfs, overlay...) among \
                 CARGO_TARGET_TMPDIR, the target dir, /var/tmp and /tmp: the GUP dirty-tracking \
                 rule cannot be tested"
            )
        })
}

#[test]
fn long_term_pins_follow_the_gup_rules_for_each_kind_of_memory() {
    // check_vma_flags (mm/gup.c, v6.18): shared disk files refuse write pins, shmem/memfd and
    // private mappings allow them; WRITE needs VM_WRITE, READ needs VM_READ.
    let prog = build("acct_gup");
    let dir = disk_dir();
    assert_pass(
        &run_preloaded(&prog, &[dir.to_str().unwrap()], &[]),
        "gup rules",
    );
}
