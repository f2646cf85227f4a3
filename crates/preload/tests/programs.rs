//! Unmodified programs under the drop-in (issue 8): a C program, the same source as C++, and a
//! Rust program drive /dev/vfio/* as VMMs do and assert every result and errno (the container and
//! type1 ioctls of `drivers/vfio/container.c` and `vfio_iommu_type1.c`, v6.18).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::preload_lib;

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/vfio_basic.c")
}

/// Compiles the C source with `compiler` (and extra flags) into a fresh temp dir.
fn build(compiler: &str, flags: &[&str], name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("type1-preload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let st = Command::new(compiler)
        .args(flags)
        .arg("-O1")
        .arg("-Wall")
        .arg("-o")
        .arg(&out)
        .arg(source())
        .status()
        .unwrap_or_else(|e| panic!("{compiler} is needed to build the test program: {e}"));
    assert!(st.success(), "{compiler} failed");
    out
}

fn run_preloaded(prog: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(prog);
    c.args(args)
        .env("LD_PRELOAD", preload_lib())
        .env("TYPE1_GROUPS", "7:iommu,8:emulated")
        .env("TYPE1_DEVICES", "0000:00:04.0@7");
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
fn c_program_passes_in_both_close_orders() {
    let prog = build("gcc", &["-x", "c", "-std=gnu11"], "vfio_basic_c");
    for order in ["group-first", "container-first"] {
        assert_pass(&run_preloaded(&prog, &[order], &[]), order);
    }
    // Without the drop-in the same program fails at once (no /dev/vfio here).
    let out = Command::new(&prog).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn cpp_program_passes() {
    let prog = build("g++", &["-x", "c++", "-std=gnu++17"], "vfio_basic_cpp");
    assert_pass(&run_preloaded(&prog, &["group-first"], &[]), "C++");
}

#[test]
fn rust_program_passes() {
    let out = run_preloaded(Path::new(env!("CARGO_BIN_EXE_vfio-probe")), &["7"], &[]);
    assert_pass(&out, "Rust");
}

#[test]
fn trace_records_every_vfio_ioctl_as_json_lines() {
    let prog = build("gcc", &["-x", "c"], "vfio_basic_trace");
    let trace = std::env::temp_dir().join(format!("type1-trace-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&trace);
    let out = run_preloaded(
        &prog,
        &["group-first"],
        &[("TYPE1_TRACE", trace.to_str().unwrap())],
    );
    assert_pass(&out, "traced");
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 50, "{} lines", lines.len());
    let map = lines
        .iter()
        .find(|l| l["request"] == "VFIO_IOMMU_MAP_DMA" && l["errno"] == 17)
        .expect("the EEXIST map is traced");
    assert_eq!(map["result"], -1);
    assert!(map["args"]["size"].is_string() && map["duration_ns"].is_u64());
    let _ = std::fs::remove_file(trace);
}

#[test]
fn ordinary_programs_are_unaffected() {
    let out = Command::new("sh")
        .args([
            "-c",
            "echo hello > /dev/null; ls / > /dev/null && cat /proc/self/status | head -1",
        ])
        .env("LD_PRELOAD", preload_lib())
        .env("TYPE1_GROUPS", "7:iommu")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Name:"));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn malformed_configuration_warns_on_stderr_only() {
    let out = Command::new(env!("CARGO_BIN_EXE_vfio-probe"))
        .arg("7")
        .env("LD_PRELOAD", preload_lib())
        .env("TYPE1_GROUPS", "7:iommu,oops")
        .output()
        .unwrap();
    assert_pass(&out, "with a malformed entry");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignoring malformed TYPE1_GROUPS"));
}
