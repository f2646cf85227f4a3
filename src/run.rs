//! `type1 run -- PROGRAM`: runs an unmodified program with the drop-in preloaded, so its
//! `/dev/vfio/*` calls are served by type1.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

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

/// An option value checked by clap with the parser the drop-in reads its `TYPE1_*` variable with
/// (`type1_preload_config`), and the text as given, which is what the variable receives: the
/// program's drop-in parses exactly what was checked.
#[derive(Debug, Clone)]
pub struct Checked<T> {
    /// The value as the drop-in will read it.
    pub value: T,
    /// The option's text, passed on unchanged.
    pub text: String,
}

/// A clap value parser: `parse`, keeping the text.
fn checked<T>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Checked<T>, String> + Clone {
    move |s| {
        parse(s).map(|value| Checked {
            value,
            text: s.to_string(),
        })
    }
}

/// Options of `type1 run`. Every value is checked by clap with the parser the drop-in reads its
/// variable with (`type1_preload_config`), before the program starts.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A group that exists: `N:iommu` or `N:emulated` (repeatable).
    #[arg(long = "group", value_name = "N:KIND", value_parser = checked(config::parse_group))]
    pub groups: Vec<Checked<(u32, config::Kind)>>,
    /// An emulated PCI device at that address in group N, the program's to open with
    /// VFIO_GROUP_GET_DEVICE_FD and to find in sysfs: `0000:00:04.0@N[,model=testdev]`
    /// (repeatable; the default model is the built-in DMA test device). Options:
    /// `migration=v1` (also the v1 migration region, for QEMU 7.2), `writer=BASE+SIZE` with
    /// `writer-rate=N` and `writer-seed=N` (start the device's writer on that IOVA window once
    /// bus mastering is on and the window is mapped, for guests without a driver).
    #[arg(long = "device", value_name = "BDF@N[,OPTS]", value_parser = checked(config::parse_device))]
    pub devices: Vec<Checked<(String, u32)>>,
    /// Append one JSON line per VFIO ioctl to FILE (created if missing).
    #[arg(long, value_name = "FILE", value_parser = checked(config::parse_trace))]
    pub trace: Option<Checked<String>>,
    /// `dma_entry_limit` of every container.
    #[arg(long, default_value = "65535", allow_hyphen_values = true,
          value_parser = checked(config::parse_dma_entry_limit))]
    pub dma_entry_limit: Checked<u32>,
    /// Locked-memory limit (bytes with K/M/G/T, or `unlimited`); default: RLIMIT_MEMLOCK.
    /// Exempt, as in the kernel, when the program runs with CAP_IPC_LOCK.
    #[arg(long, value_parser = checked(config::parse_memlock))]
    pub memlock: Option<Checked<Option<u64>>>,
    /// Dirty reporting.
    #[arg(long, value_enum, default_value = "kernel-exact")]
    pub dirty_mode: DirtyModeArg,
    /// IOTLB invalidation.
    #[arg(long, value_enum, default_value = "strict")]
    pub invalidation: Invalidation,
    /// IOMMU page sizes: powers of two of at least 4K, the smallest a 4K, 16K or 64K granule and
    /// the others that granule's block sizes.
    #[arg(long, default_value = "4K,2M,1G", value_parser = checked(config::parse_pgsizes))]
    pub pgsizes: Checked<u64>,
    /// IOVA aperture width in bits (13 to 48; 52 with a 64K granule).
    #[arg(long, default_value = "48", allow_hyphen_values = true,
          value_parser = checked(config::parse_iova_bits))]
    pub iova_bits: Checked<u32>,
    /// Reserved IOVA ranges (`start-end,...`, inclusive, or `none`).
    #[arg(long, default_value = "0xfee00000-0xfeefffff", value_parser = checked(config::parse_reserved))]
    pub reserved: Checked<Vec<(u64, u64)>>,
    /// Accept groups without isolated MSI.
    #[arg(long)]
    pub allow_unsafe_interrupts: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub program: Vec<OsString>,
}

/// The name clap gives a value-enum variant (the string the drop-in parses).
pub fn value_name<T: ValueEnum>(v: &T) -> String {
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

/// The checks that need several options together (clap has checked each alone), and that the
/// drop-in knows the modes' names.
fn validate(a: &RunArgs) -> Result<()> {
    config::check_iommu(a.pgsizes.value, a.iova_bits.value, &a.reserved.value)
        .map_err(|e| anyhow!("--pgsizes, --iova-bits and --reserved: {e}"))?;
    config::parse_dirty_mode(&value_name(&a.dirty_mode))
        .and(config::parse_invalidation(&value_name(&a.invalidation)))
        .map_err(|e| anyhow!("internal: an option name the drop-in does not know: {e}"))?;
    Ok(())
}

/// The texts of repeated options, comma-separated (the variable's list syntax).
fn list<T>(v: &[Checked<T>]) -> String {
    v.iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(",")
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
        .env("TYPE1_GROUPS", list(&a.groups))
        .env("TYPE1_DEVICES", list(&a.devices))
        .env("TYPE1_DMA_ENTRY_LIMIT", &a.dma_entry_limit.text)
        .env("TYPE1_DIRTY_MODE", value_name(&a.dirty_mode))
        .env("TYPE1_INVALIDATION", value_name(&a.invalidation))
        .env("TYPE1_PGSIZES", &a.pgsizes.text)
        .env("TYPE1_IOVA_BITS", &a.iova_bits.text)
        .env("TYPE1_RESERVED", &a.reserved.text)
        .env(
            "TYPE1_ALLOW_UNSAFE_INTERRUPTS",
            if a.allow_unsafe_interrupts { "1" } else { "0" },
        );
    if let Some(m) = &a.memlock {
        cmd.env("TYPE1_MEMLOCK", &m.text);
    }
    if let Some(t) = &a.trace {
        cmd.env("TYPE1_TRACE", &t.text);
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
