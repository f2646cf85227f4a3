//! Adversarial host programs under the drop-in (issue 11): concurrency classes. Each C program
//! in `tests/c/hostile_*.c` asserts the kernel's result for every call and prints `PASS`; the
//! harness runs it under the preload with a hard timeout, kills its whole process group when
//! the timeout passes and reports a hang.
//!
//! - `hostile_signals`: a 20 kHz signal handler calling `close`/`dup`/`ioctl` for 5 s while the
//!   main thread drives VFIO and non-VFIO fds;
//! - `hostile_fork`: 200 forks while another thread maps and unmaps;
//! - `hostile_trace`: two processes tracing into one file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vfio_bindings::bindings::vfio as uapi;

use common::preload_lib;

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("type1-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/c/<name>.c` into `dir`.
fn build(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out = dir.join(name);
    let st = Command::new("gcc")
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("gcc is needed to build the test program: {e}"));
    assert!(st.success(), "gcc failed on {}", src.display());
    out
}

/// A program under the preload, in its own process group, its output in files (a pipe would
/// stay open in any grandchild left behind).
struct Run {
    child: Child,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a run ended.
#[derive(Debug)]
struct Finished {
    name: String,
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// Panics with the program's output unless it exited 0 and printed `PASS`.
    fn assert_pass(&self) {
        assert!(
            self.success && self.stdout.starts_with("PASS"),
            "{}: {}\nstdout: {}\nstderr: {}",
            self.name,
            self.status,
            self.stdout,
            tail(&self.stderr)
        );
    }
}

/// The last lines of a long stderr.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(20);
    lines[from..].join("\n")
}

fn start(prog: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path, tag: &str) -> Run {
    let stdout = dir.join(format!("{tag}.out"));
    let stderr = dir.join(format!("{tag}.err"));
    let mut c = Command::new(prog);
    c.args(args)
        .env("LD_PRELOAD", preload_lib())
        .env("TYPE1_GROUPS", "7:iommu")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    Run {
        child: c.spawn().unwrap(),
        name: tag.to_string(),
        stdout,
        stderr,
    }
}

impl Run {
    /// Waits until `deadline`; past it, kills the process group and panics: a hang.
    fn finish(mut self, deadline: Instant) -> Finished {
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let pgid = i32::try_from(self.child.id()).unwrap();
                // SAFETY: kill has no memory effects; the group is the one this test spawned.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = self.child.wait();
                panic!(
                    "{}: HANG, killed at the timeout\nstdout: {}\nstderr: {}",
                    self.name,
                    std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    tail(&std::fs::read_to_string(&self.stderr).unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Anything the program left in its group (a child it could not reap) goes too.
        let pgid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: as above; ESRCH when the group is already empty.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        Finished {
            name: self.name,
            success: status.success(),
            status: format!("{status}"),
            stdout: std::fs::read_to_string(&self.stdout).unwrap(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap(),
        }
    }
}

/// A signal handler may call `close`, `dup` and `ioctl` while the thread it interrupted is
/// inside an interposed call, on VFIO and non-VFIO fds alike: the kernel serves each from any
/// context (`close_fd`, `vfs_ioctl`, `vfio_fops_unl_ioctl`, v6.18), so the program finishes, with
/// errno preserved across the handler and every result the kernel's.
#[test]
fn signal_handler_calling_close_and_ioctl_never_deadlocks() {
    let dir = scratch("signals");
    let prog = build("hostile_signals", &dir);
    let run = start(&prog, &[], &[], &dir, "hostile_signals");
    // 5 s of signals, plus room for a debug build on a loaded 2-core machine.
    run.finish(Instant::now() + Duration::from_secs(60))
        .assert_pass();
    let _ = std::fs::remove_dir_all(dir);
}

/// A signal handler that calls the drop-in while the thread it interrupted is inside a device
/// register access served with signals open (issue 12): each of its calls gets the kernel's
/// answer (`vfio_pci_bar_rw`, `vfio_fops_unl_ioctl`, `close_fd`, v6.18) or `EDEADLK` (the
/// documented rule: our locks may be held below it), never a hang; the interrupted loop's
/// results and errno stay exact.
#[test]
fn signal_handler_during_a_device_register_access_gets_an_answer_or_edeadlk() {
    let dir = scratch("device-signals");
    let prog = build("hostile_device_signals", &dir);
    let env = [("TYPE1_DEVICES", "0000:00:04.0@7")];
    let run = start(&prog, &[], &env, &dir, "hostile_device_signals");
    // 3 s of signals, plus room for a debug build on a loaded 2-core machine.
    run.finish(Instant::now() + Duration::from_secs(60))
        .assert_pass();
    let _ = std::fs::remove_dir_all(dir);
}

/// `fork` while another thread maps and unmaps leaves each child usable: its own new container
/// answers GET_API_VERSION and CHECK_EXTENSION (`vfio_fops_unl_ioctl`), and the container fd it
/// inherited fails with EBADFD instead of serving a silent private copy (README: the drop-in
/// cannot share a container across processes). All 200 children exit 0.
#[test]
fn fork_while_another_thread_maps_leaves_children_usable() {
    let dir = scratch("fork");
    let prog = build("hostile_fork", &dir);
    let run = start(&prog, &[], &[], &dir, "hostile_fork");
    // The program's own deadline for its children is 30 s.
    run.finish(Instant::now() + Duration::from_secs(90))
        .assert_pass();
    let _ = std::fs::remove_dir_all(dir);
}

/// A u64 written either as a JSON number or as a `0x` string.
fn json_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => u64::from_str_radix(s.strip_prefix("0x")?, 16).ok(),
        _ => None,
    }
}

/// Iterations of `hostile_trace` (5 ioctls each, about 2000 in all per process).
const TRACE_ITERATIONS: u64 = 400;
/// Pages `hostile_trace` maps, unmaps and reads the dirty bitmap of.
const TRACE_PAGES: u64 = 16;

/// Checks one trace line of a request `hostile_trace` issues: decoded inputs, the outputs the
/// kernel writes back, errno and duration. Returns which of the per-iteration requests it is.
fn check_trace_line(l: &serde_json::Value) -> Option<&'static str> {
    let request = l["request"].as_str().unwrap_or_default();
    let errno = l["errno"].as_u64().unwrap_or_else(|| panic!("errno: {l}"));
    assert!(l["duration_ns"].is_u64(), "duration_ns: {l}");
    assert!(l.get("args").is_some(), "args: {l}");
    match (request, errno) {
        ("VFIO_IOMMU_MAP_DMA", 0) => {
            assert_eq!(
                json_u64(&l["args"]["size"]),
                Some(TRACE_PAGES * 4096),
                "{l}"
            );
            Some("map")
        }
        // vfio_dma_do_map: an overlapping mapping is EEXIST.
        ("VFIO_IOMMU_MAP_DMA", e) => {
            let eexist = u64::from(libc::EEXIST.unsigned_abs());
            assert_eq!((e, l["result"].as_i64()), (eexist, Some(-1)), "{l}");
            Some("map EEXIST")
        }
        // vfio_dma_do_unmap writes the unmapped size back.
        ("VFIO_IOMMU_UNMAP_DMA", 0) => {
            assert_eq!(json_u64(&l["out"]["size"]), Some(TRACE_PAGES * 4096), "{l}");
            Some("unmap")
        }
        // vfio_iommu_type1_get_info: the IOVA ranges, migration and DMA-available caps.
        ("VFIO_IOMMU_GET_INFO", 0) => {
            let ids: BTreeSet<u64> = l["out"]["caps"]
                .as_array()
                .unwrap_or_else(|| panic!("out.caps: {l}"))
                .iter()
                .filter_map(|c| c["id"].as_u64())
                .collect();
            let want: BTreeSet<u64> = [
                uapi::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                uapi::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
                uapi::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
            ]
            .into_iter()
            .map(u64::from)
            .collect();
            assert_eq!(ids, want, "{l}");
            Some("get_info")
        }
        // vfio_iova_dirty_bitmap: the IOMMU-backed group never pinned, so every page is dirty.
        ("VFIO_IOMMU_DIRTY_PAGES", 0)
            if l["args"]["flags"].as_u64()
                == Some(u64::from(uapi::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)) =>
        {
            assert_eq!(
                l["out"]["bitmap_popcount"].as_u64(),
                Some(TRACE_PAGES),
                "{l}"
            );
            Some("get_bitmap")
        }
        (
            "VFIO_IOMMU_DIRTY_PAGES"
            | "VFIO_GROUP_SET_CONTAINER"
            | "VFIO_GROUP_UNSET_CONTAINER"
            | "VFIO_SET_IOMMU",
            0,
        ) => None,
        _ => panic!("a request hostile_trace does not issue, or an unexpected error: {l}"),
    }
}

/// Two processes tracing into one file: each line is one `write(2)` on an O_APPEND fd, so
/// lines never interleave (whole under PIPE_BUF, as `pipe_write`/`generic_perform_write` under
/// `inode_lock` give); every line parses, and the count per process is the count it issued.
#[test]
fn two_processes_tracing_to_one_file_write_whole_lines() {
    let dir = scratch("trace");
    let prog = build("hostile_trace", &dir);
    let trace = dir.join("trace.jsonl");
    let env = [("TYPE1_TRACE", trace.to_str().unwrap())];
    let iterations = TRACE_ITERATIONS.to_string();
    let runs: Vec<Run> = (0..2)
        .map(|i| {
            start(
                &prog,
                &[&iterations],
                &env,
                &dir,
                &format!("hostile_trace_{i}"),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut issued = BTreeMap::new();
    for r in runs {
        let f = r.finish(deadline);
        f.assert_pass();
        let field = |k: &str| -> u64 {
            f.stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {:?}", f.stdout))
        };
        issued.insert(field("pid="), field("ioctls="));
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.ends_with('\n'), "the trace ends in a partial line");
    let mut per_pid: BTreeMap<u64, u64> = BTreeMap::new();
    let mut kinds: BTreeMap<(u64, &str), u64> = BTreeMap::new();
    let mut released: BTreeMap<u64, u64> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let l: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} does not parse ({e}): {line}", n + 1));
        let pid = l["pid"].as_u64().unwrap_or_else(|| panic!("pid: {l}"));
        // The two lines each process writes at exit: what it left, then what stays charged
        // after its files are released (nothing).
        match l["event"].as_str() {
            Some("exit") => continue,
            Some("released") => {
                released.insert(pid, l["locked_pages"].as_u64().unwrap_or(u64::MAX));
                continue;
            }
            Some(other) => panic!("unknown trace event {other}: {l}"),
            None => {}
        }
        *per_pid.entry(pid).or_default() += 1;
        if let Some(kind) = check_trace_line(&l) {
            *kinds.entry((pid, kind)).or_default() += 1;
        }
    }
    assert_eq!(per_pid, issued, "trace lines per pid vs ioctls each issued");
    let none_left: BTreeMap<u64, u64> = issued.keys().map(|&p| (p, 0)).collect();
    assert_eq!(
        released, none_left,
        "pages still charged after each process's release"
    );
    assert!(issued.values().all(|&n| n >= 2000), "{issued:?}");
    // Each iteration issues each of the five once: every one was decoded and checked.
    assert_eq!(kinds.len(), 5 * issued.len(), "{kinds:?}");
    assert!(kinds.values().all(|&n| n == TRACE_ITERATIONS), "{kinds:?}");
    let _ = std::fs::remove_dir_all(dir);
}
