//! The child of `type1 bench`'s drop-in cost figures (issue 11): it loops one libc call and
//! prints ns per call, with and without the preload. Functional only: the timing itself is
//! reported by `type1 bench` against its target, never asserted here.

use std::path::PathBuf;
use std::process::Command;

/// `libtype1_preload.so` of this build: beside the `type1` binary, or in `deps/` when the
/// drop-in was built only as a dependency (as `type1 run` looks for it).
fn preload_lib() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_type1"))
        .parent()
        .unwrap()
        .to_path_buf();
    let cands = [
        dir.join("libtype1_preload.so"),
        dir.join("deps/libtype1_preload.so"),
    ];
    cands
        .iter()
        .find(|c| c.is_file())
        .unwrap_or_else(|| panic!("libtype1_preload.so missing from {}", dir.display()))
        .clone()
}

fn child(kind: &str, preload: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_type1"));
    c.args(["bench", "--fd-call-cost", kind, "--budget-ms", "20"]);
    if preload {
        c.env("LD_PRELOAD", preload_lib())
            .env("TYPE1_GROUPS", "7:iommu");
    } else {
        c.env_remove("LD_PRELOAD");
    }
    c.output().unwrap()
}

#[test]
fn each_call_runs_with_and_without_the_preload_and_prints_ns_per_call() {
    // TCGETS on a pipe must fail with ENOTTY (vfs_ioctl) in both runs, or the child fails.
    for kind in ["tcgets-pipe", "open-close"] {
        for preload in [false, true] {
            let out = child(kind, preload);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{kind} preload={preload}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ns: f64 = stdout.trim().parse().unwrap();
            assert!(ns > 0.0 && ns.is_finite(), "{kind}: {stdout}");
        }
    }
}

#[test]
fn an_unknown_call_is_an_error() {
    let out = child("nonsense", false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown call"));
}
