//! The child of `type1 bench`'s BAR0 figures (issue 12): under the drop-in it opens the test
//! device as a VMM does (container, group 5, SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD,
//! GET_REGION_INFO for BAR0) and loops a register read and a register write; without it, it
//! loops a memfd `pread`. Functional only: the timing is reported by `type1 bench` against its
//! target, never asserted here.

mod common;

use common::preload_lib;
use std::process::Command;

fn child(kind: &str, preload: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_type1"));
    c.args(["bench", "--device-call-cost", kind, "--budget-ms", "20"]);
    if preload {
        c.env("LD_PRELOAD", preload_lib())
            .env("TYPE1_GROUPS", "5:iommu")
            .env("TYPE1_DEVICES", "0000:00:1f.0@5");
    } else {
        c.env_remove("LD_PRELOAD");
    }
    c.output().unwrap()
}

fn numbers(out: &std::process::Output) -> Vec<f64> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

/// `vfio_pci_rw` on BAR0 (drivers/vfio/pci/vfio_pci_core.c, v6.18) through the drop-in: the
/// child checks the ident register and the liveness read-back itself, and fails otherwise.
#[test]
fn bar0_child_reads_and_writes_registers_through_the_drop_in() {
    let v = numbers(&child("bar0", true));
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|ns| *ns > 0.0 && ns.is_finite()), "{v:?}");
}

#[test]
fn bar0_child_without_the_drop_in_fails_instead_of_timing_something_else() {
    let out = child("bar0", false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/vfio/vfio"));
}

#[test]
fn memfd_child_prints_ns_per_pread() {
    let v = numbers(&child("memfd", false));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0] > 0.0 && v[0].is_finite());
}

#[test]
fn an_unknown_device_call_is_refused_by_the_command_line() {
    let out = child("nonsense", false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'nonsense'"), "{stderr}");
    assert!(stderr.contains("possible values: bar0, memfd"), "{stderr}");
}
