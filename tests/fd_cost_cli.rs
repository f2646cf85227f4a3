//! The child of `type1 bench`'s drop-in cost figures (issue 11): it loops one libc call and
//! prints ns per call, with and without the preload. Functional only: the timing itself is
//! reported by `type1 bench` against its target, never asserted here.

mod common;

use common::preload_lib;
use std::process::Command;

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
fn an_unknown_call_is_refused_by_the_command_line() {
    let out = child("nonsense", false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'nonsense'"), "{stderr}");
    assert!(
        stderr.contains("possible values: tcgets-pipe, tcgets-pty, open-close"),
        "{stderr}"
    );
}
