//! What the drop-in's test harnesses share: finding the library, building C programs, and
//! running them under it with a hard timeout.

#![allow(dead_code)] // each test binary uses a part

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `libtype1_preload.so` of this build.
pub(crate) fn preload_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for cand in [
        deps.join("libtype1_preload.so"),
        deps.join("../libtype1_preload.so"),
    ] {
        if cand.is_file() {
            return cand;
        }
    }
    panic!("libtype1_preload.so not found near {}", deps.display());
}

/// Compiles `tests/c/<name>.c` with gcc (`-std=gnu11 -O1 -Wall -Werror -U_FORTIFY_SOURCE`,
/// then `extra`) into a binary of its own: parallel tests may build the same program, and
/// executing a file another test's gcc is writing fails with ETXTBSY.
pub(crate) fn build_c(name: &str, extra: &[&str]) -> PathBuf {
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = std::env::temp_dir().join(format!("type1-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}-{}", BUILDS.fetch_add(1, Ordering::Relaxed)));
    let o = Command::new("gcc")
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-U_FORTIFY_SOURCE"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("gcc is needed to build {name}: {e}"));
    assert!(
        o.status.success(),
        "gcc failed on {name}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// What a program did.
pub(crate) struct Run {
    /// How it ended.
    pub(crate) status: ExitStatus,
    /// Its stdout.
    pub(crate) stdout: String,
    /// Its stderr.
    pub(crate) stderr: String,
}

impl Run {
    /// Everything, for a failure message.
    pub(crate) fn describe(&self) -> String {
        format!(
            "status {:?} (signal {:?})\n--- stdout\n{}--- stderr\n{}",
            self.status.code(),
            self.status.signal(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `prog` under the drop-in with `env` (every other `TYPE1_*` setting removed), in its
/// own process group, killing the group if it has not finished within `timeout` (a hang fails
/// the test).
pub(crate) fn run_preloaded(
    prog: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Run {
    let mut cmd = Command::new(prog);
    cmd.args(args).env("LD_PRELOAD", preload_lib());
    for (k, _) in std::env::vars() {
        if k.starts_with("TYPE1_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let pgid = i32::try_from(child.id()).unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            // SAFETY: kill(2) on the process group this test created; no memory is involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "{} hung: killed after {timeout:?}",
                prog.file_name().unwrap().to_string_lossy()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Leftover children (a fork that outlived its parent) would hold the pipes open.
    // SAFETY: kill(2) on the process group this test created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    Run {
        status,
        stdout: String::from_utf8_lossy(&out_t.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    }
}

/// Exit 0, stdout exactly `PASS`, and the program's summary line (`<name>: N checks`) on
/// stderr. Returns the other stderr lines.
pub(crate) fn assert_pass(name: &str, run: &Run) -> Vec<String> {
    assert!(
        run.status.success() && run.stdout == "PASS\n",
        "{name} failed: {}",
        run.describe()
    );
    let summary = format!("{name}: ");
    let (ours, rest): (Vec<&str>, Vec<&str>) = run
        .stderr
        .lines()
        .partition(|l| l.starts_with(&summary) && l.ends_with(" checks"));
    assert_eq!(ours.len(), 1, "{name}: no summary line: {}", run.describe());
    rest.into_iter().map(str::to_owned).collect()
}

/// The program passes and nothing else (the drop-in, a device) wrote on stderr.
pub(crate) fn assert_pass_quiet(name: &str, run: &Run) {
    let rest = assert_pass(name, run);
    assert!(
        rest.is_empty(),
        "{name}: unexpected stderr from the library: {rest:?}"
    );
}

/// The dynamic symbols `prog` imports (`nm -D --undefined-only`), to check that a build
/// really goes through fortified or legacy entry points.
pub(crate) fn undefined_symbols(prog: &Path) -> String {
    let nm = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(prog)
        .output()
        .expect("nm (binutils) is needed");
    String::from_utf8_lossy(&nm.stdout).into_owned()
}
