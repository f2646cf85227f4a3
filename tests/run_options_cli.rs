//! `type1 run` checks every option before it starts the program (issue 11), with the parser the
//! drop-in reads the matching `TYPE1_*` variable with, and passes good values through.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn type1() -> Command {
    Command::new(env!("CARGO_BIN_EXE_type1"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("type1-run-opts-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `type1 run OPTIONS -- sh -c 'echo RAN'`.
fn run_with(options: &[&str]) -> Output {
    type1()
        .arg("run")
        .args(options)
        .args(["--", "sh", "-c", "echo RAN"])
        .output()
        .unwrap()
}

/// Asserts that `options` are refused before the program runs, with a message containing each
/// of `message`.
fn assert_refused(options: &[&str], message: &[&str]) {
    let out = run_with(options);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{options:?} accepted: {stderr}");
    assert!(out.stdout.is_empty(), "{options:?}: the program ran");
    for m in message {
        assert!(stderr.contains(m), "{options:?}: {m:?} not in {stderr}");
    }
}

#[test]
fn page_sizes_that_are_not_powers_of_two_are_refused() {
    assert_refused(
        &["--pgsizes", "4K,3K"],
        &["'4K,3K' for '--pgsizes", "not a power of two"],
    );
}

#[test]
fn page_sizes_below_4k_or_malformed_are_refused() {
    assert_refused(&["--pgsizes", "2K"], &["--pgsizes", "smaller than 4K"]);
    assert_refused(&["--pgsizes", "4K,lots"], &["\"lots\": that is not a size"]);
}

#[test]
fn page_sizes_outside_the_granule_are_refused() {
    // arm_lpae_restrict_pgsizes (v6.18) keeps only the chosen granule's sizes: 32M is a 16K
    // granule block, dropped from a 4K table.
    assert_refused(
        &["--pgsizes", "4K,32M"],
        &["32M is not a page or block size of the 4K granule"],
    );
}

#[test]
fn iova_bits_outside_io_pgtable_limits_are_refused() {
    assert_refused(
        &["--iova-bits", "99"],
        &["'99' for '--iova-bits", "13 to 52"],
    );
    assert_refused(&["--iova-bits", "-1"], &["'-1' for '--iova-bits"]);
    assert_refused(&["--iova-bits", "x"], &["'x' for '--iova-bits"]);
    // A 4K-granule table translates 48 bits at most (io-pgtable clamps ias).
    assert_refused(&["--iova-bits", "52"], &["at most 48 bits"]);
}

#[test]
fn reserved_ranges_that_are_inverted_or_malformed_are_refused() {
    assert_refused(
        &["--reserved", "0x2000-0x1000"],
        &["--reserved", "start is above the end"],
    );
    assert_refused(&["--reserved", "0x1000"], &["start-end"]);
    assert_refused(&["--reserved", "0x1000-zz"], &["not a number"]);
    assert_refused(
        &["--reserved", "0-0xffffffffffff"],
        &["cover the whole 48-bit aperture"],
    );
}

#[test]
fn memlock_that_is_not_a_size_is_refused() {
    assert_refused(
        &["--memlock", "lots"],
        &["'lots' for '--memlock", "unlimited"],
    );
    assert_refused(
        &["--memlock", "99999999999T"],
        &["--memlock", "does not fit in 64 bits"],
    );
}

#[test]
fn trace_file_that_cannot_be_appended_to_is_refused() {
    let dir = scratch("trace");
    // A directory cannot be opened for appending (EISDIR); nor can a file in a missing one.
    for bad in [dir.clone(), dir.join("missing/trace.jsonl")] {
        assert_refused(
            &["--trace", bad.to_str().unwrap()],
            &["--trace", "cannot open for appending"],
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_modes_and_bad_limits_are_refused() {
    assert_refused(&["--dirty-mode", "psychic"], &["kernel-exact", "precise"]);
    assert_refused(&["--invalidation", "eager"], &["strict", "lazy"]);
    assert_refused(&["--dma-entry-limit", "-1"], &["--dma-entry-limit"]);
    assert_refused(&["--group", "7:weird"], &["expected N:iommu or N:emulated"]);
    assert_refused(&["--device", "0000x00:04.0@7"], &["expected a PCI address"]);
}

#[test]
fn good_values_pass_through_to_the_environment() {
    let dir = scratch("env");
    let trace = dir.join("trace.jsonl");
    let out = type1()
        .args([
            "run",
            "--group",
            "7:iommu",
            "--device",
            "0000:00:04.0@7",
            "--pgsizes",
            "64K,512M",
            "--iova-bits",
            "52",
            "--reserved",
            "none",
            "--memlock",
            "unlimited",
            "--dirty-mode",
            "precise",
            "--invalidation",
            "lazy",
            "--dma-entry-limit",
            "10",
            "--allow-unsafe-interrupts",
            "--trace",
        ])
        .arg(&trace)
        .args(["--", "env"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "TYPE1_GROUPS=7:iommu",
        "TYPE1_DEVICES=0000:00:04.0@7",
        "TYPE1_PGSIZES=64K,512M",
        "TYPE1_IOVA_BITS=52",
        "TYPE1_RESERVED=none",
        "TYPE1_MEMLOCK=unlimited",
        "TYPE1_DIRTY_MODE=precise",
        "TYPE1_INVALIDATION=lazy",
        "TYPE1_DMA_ENTRY_LIMIT=10",
        "TYPE1_ALLOW_UNSAFE_INTERRUPTS=1",
        &format!("TYPE1_TRACE={}", trace.display()),
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "{want} not in the environment:\n{stdout}"
        );
    }
    // The drop-in read every value without a warning.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("type1-preload"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn defaults_pass_through_to_the_environment() {
    let out = type1().args(["run", "--", "env"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for want in [
        "TYPE1_PGSIZES=4K,2M,1G",
        "TYPE1_IOVA_BITS=48",
        "TYPE1_RESERVED=0xfee00000-0xfeefffff",
        "TYPE1_DIRTY_MODE=kernel-exact",
        "TYPE1_INVALIDATION=strict",
        "TYPE1_DMA_ENTRY_LIMIT=65535",
    ] {
        assert!(stdout.lines().any(|l| l == want), "{want}:\n{stdout}");
    }
    assert!(!stdout.contains("TYPE1_MEMLOCK=") && !stdout.contains("TYPE1_TRACE="));
}

/// `CAP_IPC_LOCK` (<linux/capability.h>).
const CAP_IPC_LOCK: u32 = 14;

/// One capability set of this process, from /proc/self/status.
fn cap_set(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap()
}

/// Builds `tests/c/run_memlock.c`.
fn memlock_program(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/run_memlock.c");
    let prog = dir.join("run_memlock");
    let st = Command::new("gcc")
        .args(["-O1", "-Wall", "-Werror", "-o"])
        .arg(&prog)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    prog
}

/// MAP_DMA of 1 MiB under `--memlock 64K`, optionally through `setpriv` dropping CAP_IPC_LOCK
/// as the README shows. Returns (the program's answer, type1's stderr).
fn map_1m_under_64k(prog: &Path, drop_ipc_lock: bool) -> (String, String) {
    let mut c = if drop_ipc_lock {
        let mut c = Command::new("setpriv");
        c.args(["--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock"])
            .arg(env!("CARGO_BIN_EXE_type1"));
        c
    } else {
        type1()
    };
    let out = c
        .args(["run", "--group", "7:iommu", "--memlock", "64K", "--"])
        .arg(prog)
        .arg("1048576")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr,
    )
}

/// With CAP_IPC_LOCK the kernel exempts the caller from the locked-memory limit
/// (`__account_locked_vm`, v6.18, `capable(CAP_IPC_LOCK)`), so `--memlock` has no effect and
/// `type1 run` says so; dropped with `setpriv` (README), the limit applies: ENOMEM past it
/// (`vfio_lock_acct`).
#[test]
fn memlock_warns_when_the_program_keeps_cap_ipc_lock() {
    let dir = scratch("memlock");
    let prog = memlock_program(&dir);
    // SAFETY: geteuid cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let bit = 1u64 << CAP_IPC_LOCK;
    let keeps = if root {
        (cap_set("CapInh:") | cap_set("CapBnd:")) & bit != 0
    } else {
        cap_set("CapAmb:") & bit != 0
    };
    let (answer, stderr) = map_1m_under_64k(&prog, false);
    if keeps {
        assert!(stderr.contains("CAP_IPC_LOCK"), "no warning: {stderr}");
        assert_eq!(answer, "MAPPED", "the capability exempts the map");
    } else {
        assert!(!stderr.contains("CAP_IPC_LOCK"), "{stderr}");
        assert_eq!(answer, "ENOMEM");
    }
    if root {
        let (answer, stderr) = map_1m_under_64k(&prog, true);
        assert!(!stderr.contains("CAP_IPC_LOCK"), "{stderr}");
        assert_eq!(
            answer, "ENOMEM",
            "the README's setpriv command applies the limit"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
