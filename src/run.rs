//! `type1 run -- PROGRAM`: runs an unmodified program with the drop-in preloaded, so its
//! `/dev/vfio/*` calls are served by type1.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use type1_preload_config as config;

use crate::migrate::Invalidation;

/// Dirty reporting of `type1 run` (`TYPE1_DIRTY_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirtyModeArg {
    /// The kernel's reporting: every IOMMU-mapped page dirty while an IOMMU group never pinned.
    KernelExact,
    /// Hardware dirty bits: only pages devices wrote.
    Precise,
}

/// Options of `type1 run`. Every value is checked with the parser the drop-in reads its
/// variable with (`type1_preload_config`), before the program starts.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A group that exists: `N:iommu` or `N:emulated` (repeatable).
    #[arg(long = "group", value_name = "N:KIND")]
    pub groups: Vec<String>,
    /// An emulated PCI device at that address in group N, the program's to open with
    /// VFIO_GROUP_GET_DEVICE_FD and to find in sysfs: `0000:00:04.0@N[,model=testdev]`
    /// (repeatable; the default model is the built-in DMA test device). Options:
    /// `migration=v1` (also the v1 migration region, for QEMU 7.2), `writer=BASE+SIZE` with
    /// `writer-rate=N` and `writer-seed=N` (start the device's writer on that IOVA window once
    /// bus mastering is on and the window is mapped, for guests without a driver).
    #[arg(long = "device", value_name = "BDF@N[,OPTS]")]
    pub devices: Vec<String>,
    /// Append one JSON line per VFIO ioctl to FILE (created if missing).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// `dma_entry_limit` of every container.
    #[arg(long, default_value = "65535", allow_hyphen_values = true)]
    pub dma_entry_limit: String,
    /// Locked-memory limit (bytes with K/M/G/T, or `unlimited`); default: RLIMIT_MEMLOCK.
    /// Exempt, as in the kernel, when the program runs with CAP_IPC_LOCK.
    #[arg(long)]
    pub memlock: Option<String>,
    /// Dirty reporting.
    #[arg(long, value_enum, default_value = "kernel-exact")]
    pub dirty_mode: DirtyModeArg,
    /// IOTLB invalidation.
    #[arg(long, value_enum, default_value = "strict")]
    pub invalidation: Invalidation,
    /// IOMMU page sizes: powers of two of at least 4K, the smallest a 4K, 16K or 64K granule and
    /// the others that granule's block sizes.
    #[arg(long, default_value = "4K,2M,1G")]
    pub pgsizes: String,
    /// IOVA aperture width in bits (13 to 48; 52 with a 64K granule).
    #[arg(long, default_value = "48", allow_hyphen_values = true)]
    pub iova_bits: String,
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

/// The name clap gives a value-enum variant (the string the drop-in parses).
fn value_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `CAP_IPC_LOCK` (<linux/capability.h>).
const CAP_IPC_LOCK: u32 = 14;
/// `SECBIT_NOROOT` (<linux/securebits.h>): uid 0 gets no capabilities at exec.
const SECBIT_NOROOT: libc::c_int = 1 << 0;

/// One hexadecimal capability set of /proc/self/status (`CapInh:`, ...).
fn cap_set(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// True if a program this process execs (without file capabilities: ld.so ignores
/// `LD_PRELOAD` for those anyway) will hold CAP_IPC_LOCK in its effective set, by the exec rules
/// of capabilities(7): for uid 0 (without SECBIT_NOROOT), P'(permitted) = P(inheritable) |
/// P(bounding), effective if the effective uid is 0; otherwise P'(effective) = P(ambient).
fn exec_keeps_ipc_lock() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bit = 1u64 << CAP_IPC_LOCK;
    // SAFETY: PR_GET_SECUREBITS takes no pointer and only returns a value.
    let securebits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    // SAFETY: getuid and geteuid cannot fail and touch no memory.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    let root = (uid == 0 || euid == 0) && securebits >= 0 && securebits & SECBIT_NOROOT == 0;
    let effective = if root {
        if euid == 0 {
            cap_set(&status, "CapInh:") | cap_set(&status, "CapBnd:")
        } else {
            0
        }
    } else {
        cap_set(&status, "CapAmb:")
    };
    effective & bit != 0
}

/// Checks every option with the drop-in's parser, as `TYPE1_*` will be read.
fn validate(a: &RunArgs) -> Result<()> {
    let opt = |name: &str, value: &str, e: String| anyhow!("--{name} {value:?}: {e}");
    for g in &a.groups {
        config::parse_group(g).map_err(|e| anyhow!("--group {e}"))?;
    }
    for d in &a.devices {
        config::parse_device(d).map_err(|e| anyhow!("--device {e}"))?;
    }
    config::parse_dma_entry_limit(&a.dma_entry_limit)
        .map_err(|e| opt("dma-entry-limit", &a.dma_entry_limit, e))?;
    if let Some(m) = &a.memlock {
        config::parse_memlock(m).map_err(|e| opt("memlock", m, e))?;
    }
    let pgsizes = config::parse_pgsizes(&a.pgsizes).map_err(|e| opt("pgsizes", &a.pgsizes, e))?;
    let bits =
        config::parse_iova_bits(&a.iova_bits).map_err(|e| opt("iova-bits", &a.iova_bits, e))?;
    let reserved =
        config::parse_reserved(&a.reserved).map_err(|e| opt("reserved", &a.reserved, e))?;
    config::check_iommu(pgsizes, bits, &reserved)
        .map_err(|e| anyhow!("--pgsizes, --iova-bits and --reserved: {e}"))?;
    config::parse_dirty_mode(&value_name(&a.dirty_mode))
        .and(config::parse_invalidation(&value_name(&a.invalidation)))
        .map_err(|e| anyhow!("internal: an option name the drop-in does not know: {e}"))?;
    if let Some(t) = &a.trace {
        let s = t
            .to_str()
            .with_context(|| format!("--trace {}: the path is not UTF-8", t.display()))?;
        config::parse_trace(s).map_err(|e| opt("trace", s, e))?;
    }
    Ok(())
}

/// Replaces this process with the program, preloaded. Returns only on error.
pub fn run(a: &RunArgs) -> Result<()> {
    validate(a)?;
    if a.memlock.is_some() && exec_keeps_ipc_lock() {
        eprintln!(
            "type1: warning: --memlock has no effect: the program will run with CAP_IPC_LOCK, \
             which exempts it from the locked-memory limit as in the kernel; drop the capability \
             (e.g. `setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock type1 run ...`, see the README)"
        );
    }
    let lib = crate::preload_lib::path()?;
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
        .env("TYPE1_DMA_ENTRY_LIMIT", &a.dma_entry_limit)
        .env("TYPE1_DIRTY_MODE", value_name(&a.dirty_mode))
        .env("TYPE1_INVALIDATION", value_name(&a.invalidation))
        .env("TYPE1_PGSIZES", &a.pgsizes)
        .env("TYPE1_IOVA_BITS", &a.iova_bits)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_enum_names_are_the_drop_ins_spellings() {
        for m in DirtyModeArg::value_variants() {
            assert!(config::parse_dirty_mode(&value_name(m)).is_ok(), "{m:?}");
        }
        for i in Invalidation::value_variants() {
            assert!(config::parse_invalidation(&value_name(i)).is_ok(), "{i:?}");
        }
    }

    #[test]
    fn capability_sets_are_read_from_proc_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t0000000000004000\n";
        assert_eq!(cap_set(status, "CapBnd:"), 1 << CAP_IPC_LOCK);
        assert_eq!(cap_set(status, "CapAmb:"), 0);
    }
}
