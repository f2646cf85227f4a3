//! The drop-in's cost on calls that are not VFIO (issue 11): a VMM issues an `ioctl` per vCPU
//! exit (`KVM_RUN`) through the interposer, so a call on an fd that is not ours must cost what
//! it costs without the preload.
//!
//! `type1 bench` runs this same executable as a child (`type1 bench --fd-call-cost KIND`) that
//! loops one call for a time budget and prints ns per call, once with `LD_PRELOAD` naming the
//! drop-in and once without, interleaved over three rounds so machine noise hits both alike.
//! The `type1` executable does not link the interposers itself, so the child without
//! `LD_PRELOAD` calls libc directly.

use std::ffi::CString;
#[cfg(feature = "bench-baselines")]
use std::path::Path;
#[cfg(feature = "bench-baselines")]
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[cfg(feature = "bench-baselines")]
use crate::figure::Figure;

#[cfg(feature = "bench-baselines")]
/// Rounds of (without, with) pairs.
const ROUNDS: usize = 3;
/// Calls between two clock reads in the child.
const CHUNK: u64 = 1000;
#[cfg(feature = "bench-baselines")]
/// The bound on the preload's overhead for a call that is not ours.
const TARGET_RATIO: f64 = 1.10;

/// A call the child loops (`type1 bench --fd-call-cost KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FdCall {
    /// `ioctl(TCGETS)` on a pipe (ENOTTY).
    TcgetsPipe,
    /// `ioctl(TCGETS)` on a pty master.
    TcgetsPty,
    /// `open` + `close` of a regular file.
    OpenClose,
}

#[cfg(feature = "bench-baselines")]
/// The calls measured: `(kind, figure name, whether the 10% target applies)`.
const KINDS: [(FdCall, &str, bool); 3] = [
    (
        FdCall::TcgetsPipe,
        "ioctl(TCGETS) on a pipe (ENOTTY), preloaded",
        true,
    ),
    (
        FdCall::TcgetsPty,
        "ioctl(TCGETS) on a pty master, preloaded",
        true,
    ),
    (
        FdCall::OpenClose,
        "open+close of a regular file (path check), preloaded",
        false,
    ),
];

/// Runs `one` in chunks until `budget` has passed; ns per call.
fn time_calls(budget: Duration, mut one: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..CHUNK / 10 {
        one()?; // warm-up: the preload resolves its state on the first call
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget {
        for _ in 0..CHUNK {
            one()?;
        }
        n += CHUNK;
    }
    Ok(t.elapsed().as_nanos() as f64 / n as f64)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The child: loops the call `kind` names for `budget` and returns ns per call.
///
/// # Errors
/// A call that does not give the expected result.
pub fn child(kind: FdCall, budget: Duration) -> Result<f64> {
    // SAFETY: `termios` is plain old data; all-zero is a valid value.
    let mut tio: libc::termios = unsafe { std::mem::zeroed() };
    match kind {
        FdCall::TcgetsPipe => {
            let mut fds = [0i32; 2];
            // SAFETY: pipe writes two fds to a valid array of two.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                bail!("pipe: {}", std::io::Error::last_os_error());
            }
            time_calls(budget, || {
                // SAFETY: TCGETS writes one `termios` to a valid pointer (or fails first).
                let r = unsafe { libc::ioctl(fds[0], libc::TCGETS, &mut tio) };
                // vfs_ioctl: a pipe has no unlocked_ioctl for TCGETS, ENOTTY.
                if r != -1 || errno() != libc::ENOTTY {
                    bail!("TCGETS on a pipe returned {r}, errno {}", errno());
                }
                Ok(())
            })
        }
        FdCall::TcgetsPty => {
            // SAFETY: posix_openpt takes flags only.
            let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
            if fd < 0 {
                bail!("posix_openpt: {}", std::io::Error::last_os_error());
            }
            time_calls(budget, || {
                // SAFETY: as above.
                let r = unsafe { libc::ioctl(fd, libc::TCGETS, &mut tio) };
                if r != 0 {
                    bail!(
                        "TCGETS on a pty master: {}",
                        std::io::Error::last_os_error()
                    );
                }
                Ok(())
            })
        }
        FdCall::OpenClose => {
            let path = std::env::temp_dir().join(format!("type1-bench-{}", std::process::id()));
            std::fs::write(&path, b"x").context("creating the file to open")?;
            let c = CString::new(path.as_os_str().as_encoded_bytes())?;
            let r = time_calls(budget, || {
                // SAFETY: a NUL-terminated path; the fd is closed at once.
                let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                // SAFETY: closes the fd just opened (or fails with EBADF for -1).
                if fd < 0 || unsafe { libc::close(fd) } != 0 {
                    bail!("open+close: {}", std::io::Error::last_os_error());
                }
                Ok(())
            });
            let _ = std::fs::remove_file(&path);
            r
        }
    }
}

#[cfg(feature = "bench-baselines")]
/// One child run of this executable: ns per call.
fn run_child(kind: FdCall, budget: Duration, preload: Option<&Path>) -> Result<f64> {
    let exe = std::env::current_exe().context("locating the type1 executable")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "bench",
        "--fd-call-cost",
        &crate::run::value_name(&kind),
        "--budget-ms",
    ])
    .arg(budget.as_millis().to_string());
    match preload {
        Some(lib) => cmd.env("LD_PRELOAD", lib).env("TYPE1_GROUPS", "7:iommu"),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("the child printed {text:?}"))
}

#[cfg(feature = "bench-baselines")]
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

#[cfg(feature = "bench-baselines")]
fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

#[cfg(feature = "bench-baselines")]
/// One figure per call kind: ns per call with the drop-in, beside the same call without it
/// measured in the same run, and the ratio with its min–max over the rounds. A kind the machine
/// cannot run (no pty) is reported on stderr and skipped.
///
/// # Errors
/// A child that fails for a reason other than its call being unavailable.
pub fn figures(budget: Duration, lib: &Path) -> Result<Vec<Figure>> {
    let child_budget = (budget / 2).max(Duration::from_millis(50));
    let mut out = Vec::new();
    for (kind, name, targeted) in KINDS {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate which goes first, so a drift in machine load favours neither.
            let order = if round % 2 == 0 {
                [None, Some(lib)]
            } else {
                [Some(lib), None]
            };
            for preload in order {
                match run_child(kind, child_budget, preload) {
                    Ok(ns) if preload.is_some() => with.push(ns),
                    Ok(ns) => without.push(ns),
                    Err(e) if kind == FdCall::TcgetsPty => {
                        eprintln!("type1 bench: skipping {kind:?}: {e:#}");
                        break;
                    }
                    Err(e) => return Err(e.context(format!("measuring {kind:?}"))),
                }
            }
        }
        if with.len() != ROUNDS || without.len() != ROUNDS {
            continue;
        }
        let ratios: Vec<f64> = with.iter().zip(&without).map(|(w, o)| w / o).collect();
        let ratio = median(&ratios);
        let (lo, hi) = spread(&ratios);
        let (wlo, whi) = spread(&with);
        let (olo, ohi) = spread(&without);
        let summary = format!(
            "{ratio:.2}x (min–max {lo:.2}–{hi:.2}; ns with {wlo:.0}–{whi:.0}, without {olo:.0}–{ohi:.0})"
        );
        let (baseline, target) = if targeted {
            (
                "same call without the preload, ns".to_string(),
                Some((
                    format!("within 10% of no preload: {summary}"),
                    ratio <= TARGET_RATIO,
                )),
            )
        } else {
            (
                format!("without the preload, ns; with/without {summary}"),
                None,
            )
        };
        out.push(Figure {
            name: name.to_string(),
            value: median(&with),
            unit: "ns",
            baseline: Some((baseline, median(&without))),
            target,
        });
    }
    Ok(out)
}
