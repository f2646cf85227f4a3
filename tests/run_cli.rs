//! `type1 run -- PROGRAM` (issue 8): unmodified programs through the drop-in, exit status
//! passed through.

use std::path::Path;
use std::process::Command;

fn type1() -> Command {
    Command::new(env!("CARGO_BIN_EXE_type1"))
}

#[test]
fn c_program_runs_through_type1_run() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/preload/tests/c/vfio_basic.c");
    let dir = std::env::temp_dir().join(format!("type1-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("vfio_basic");
    let st = Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(&prog)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let trace = dir.join("trace.jsonl");
    for order in ["group-first", "container-first"] {
        let out = type1()
            .args([
                "run",
                "--group",
                "7:iommu",
                "--group",
                "8:emulated",
                "--device",
                "0000:00:04.0@7",
            ])
            .arg("--trace")
            .arg(&trace)
            .arg("--")
            .arg(&prog)
            .arg(order)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("PASS"),
            "{order}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(std::fs::read_to_string(&trace).unwrap().lines().count() > 100);
}

#[test]
fn exit_status_passes_through() {
    let st = type1()
        .args(["run", "--", "sh", "-c", "exit 42"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(42));
}

#[test]
fn bad_options_are_clear_errors() {
    let out = type1()
        .args(["run", "--group", "7", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected N:iommu or N:emulated"));
    let out = type1()
        .args(["run", "--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/program"));
}
