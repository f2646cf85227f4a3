//! `type1 run -- PROGRAM`: runs an unmodified program with the drop-in preloaded, so its
//! `/dev/vfio/*` calls are served by type1.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Options of `type1 run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A group that exists: `N:iommu` or `N:emulated` (repeatable).
    #[arg(long = "group", value_name = "N:KIND")]
    pub groups: Vec<String>,
    /// A PCI device and its group, for sysfs lookups: `0000:00:04.0@N` (repeatable).
    #[arg(long = "device", value_name = "BDF@N")]
    pub devices: Vec<String>,
    /// Append one JSON line per VFIO ioctl to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// `dma_entry_limit` of every container.
    #[arg(long, default_value_t = 65535)]
    pub dma_entry_limit: u32,
    /// Locked-memory limit (bytes with K/M/G, or `unlimited`); default: RLIMIT_MEMLOCK.
    #[arg(long)]
    pub memlock: Option<String>,
    /// Dirty reporting: `kernel-exact` or `precise`.
    #[arg(long, default_value = "kernel-exact")]
    pub dirty_mode: String,
    /// IOTLB invalidation: `strict` or `lazy`.
    #[arg(long, default_value = "strict")]
    pub invalidation: String,
    /// IOMMU page sizes.
    #[arg(long, default_value = "4K,2M,1G")]
    pub pgsizes: String,
    /// IOVA aperture width in bits.
    #[arg(long, default_value_t = 48)]
    pub iova_bits: u32,
    /// Reserved IOVA ranges (`start-end,...`, inclusive, or `none`).
    #[arg(long, default_value = "0xfee00000-0xfeefffff")]
    pub reserved: String,
    /// Accept groups without isolated MSI.
    #[arg(long)]
    pub allow_unsafe_interrupts: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub program: Vec<OsString>,
}

/// Where the drop-in library is: `TYPE1_PRELOAD_LIB`, or beside this executable.
fn preload_lib() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TYPE1_PRELOAD_LIB") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the type1 executable")?;
    let dir = exe
        .parent()
        .context("the type1 executable has no directory")?;
    for cand in [
        dir.join("libtype1_preload.so"),
        dir.join("deps/libtype1_preload.so"),
    ] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!(
        "libtype1_preload.so not found beside {} (build it with `cargo build --release`, or set TYPE1_PRELOAD_LIB)",
        exe.display()
    )
}

fn check_group(g: &str) -> Result<()> {
    match g.split_once(':') {
        Some((n, "iommu" | "emulated")) if n.parse::<u32>().is_ok() => Ok(()),
        _ => bail!("--group {g:?}: expected N:iommu or N:emulated"),
    }
}

fn check_device(d: &str) -> Result<()> {
    match d.rsplit_once('@') {
        Some((bdf, n)) if bdf.len() == 12 && n.parse::<u32>().is_ok() => Ok(()),
        _ => bail!("--device {d:?}: expected a PCI address and a group, e.g. 0000:00:04.0@7"),
    }
}

/// Replaces this process with the program, preloaded. Returns only on error.
pub fn run(a: &RunArgs) -> Result<()> {
    for g in &a.groups {
        check_group(g)?;
    }
    for d in &a.devices {
        check_device(d)?;
    }
    if !matches!(a.dirty_mode.as_str(), "kernel-exact" | "precise") {
        bail!("--dirty-mode must be kernel-exact or precise");
    }
    if !matches!(a.invalidation.as_str(), "strict" | "lazy") {
        bail!("--invalidation must be strict or lazy");
    }
    let lib = preload_lib()?;
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let (prog, args) = a.program.split_first().context("no program to run")?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .env("TYPE1_GROUPS", a.groups.join(","))
        .env("TYPE1_DEVICES", a.devices.join(","))
        .env("TYPE1_DMA_ENTRY_LIMIT", a.dma_entry_limit.to_string())
        .env("TYPE1_DIRTY_MODE", &a.dirty_mode)
        .env("TYPE1_INVALIDATION", &a.invalidation)
        .env("TYPE1_PGSIZES", &a.pgsizes)
        .env("TYPE1_IOVA_BITS", a.iova_bits.to_string())
        .env("TYPE1_RESERVED", &a.reserved)
        .env(
            "TYPE1_ALLOW_UNSAFE_INTERRUPTS",
            if a.allow_unsafe_interrupts { "1" } else { "0" },
        );
    if let Some(m) = &a.memlock {
        cmd.env("TYPE1_MEMLOCK", m);
    }
    if let Some(t) = &a.trace {
        cmd.env("TYPE1_TRACE", t);
    }
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot run {}", prog.to_string_lossy()))
}
