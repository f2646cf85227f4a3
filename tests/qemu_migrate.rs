//! QEMU 7.2 live migration end to end (issue 13): two unmodified `qemu-system-x86_64` processes,
//! each under `type1 run` with the DMA test device offering the legacy v1 migration region
//! (`--device BDF@5,migration=v1`, QEMU's `x-enable-migration=on`), migrate over a unix socket
//! while the source's device writes guest RAM.
//!
//! Per case (precise, kernel-exact, and precise with a dropped dirty bit), every wait bounded
//! and both QEMUs killed on failure with their stderr in the message:
//! - the source boots until the firmware has assigned the device's BARs and its trace is quiet;
//!   the destination is started with `-S -incoming unix:...`, so it stays paused once the
//!   migration is in (`paused`, not `running`: its RAM is compared while nothing runs);
//! - the device writes guest RAM throughout pre-copy with no guest driver: the source's device
//!   option `writer=BASE+SIZE,writer-rate,writer-seed` makes the drop-in start the device's
//!   autonomous writer once bus mastering is on and the window is mapped (QEMU maps all guest
//!   RAM when it realizes the device). SeaBIOS leaves bus mastering off for a function it does
//!   not drive, so the test sets it as a guest driver's `pci_set_master` would, with config
//!   cycles through ports 0xcf8/0xcfc (HMP `o`/`i` over QMP). The writer's counters are read
//!   from BAR0 through the guest's memory map (HMP `xp`), and must have grown during the
//!   migration;
//! - QMP `migrate-set-parameters` (bandwidth, downtime limit) and `migrate` run a live migration
//!   of the running source, which must complete within `MIGRATION`; the source is then
//!   `postmigrate`, the destination `paused`;
//! - QMP `pmemsave` of all guest RAM on both sides, compared page by page (the legacy
//!   0xA0000–0xFFFFF window reads through chipset routing, not RAM, and is left out): a
//!   mismatch names the pages (guest-physical addresses); the writer's window must hold exactly
//!   what its writes 1..=n leave, n its final count on the source (its sequence is
//!   deterministic: xorshift64 from the seed);
//! - the writer's migrated position: QEMU 7.2 keeps the paused destination's device in
//!   `_RESUMING` until the VM runs (`vfio_vmstate_change`), and the device applies the state on
//!   that transition, so the destination is resumed (`cont`), left to write a little, stopped,
//!   and its window must hold exactly what writes 1..=m leave, m its count: the source's writes
//!   through the migrated RAM, the destination's continuing the same sequence (a writer that
//!   restarted or lost its position leaves other pages);
//! - the dropped-dirty-bit case: the source's container runs with the test-only fault
//!   `TYPE1_TEST_FAULT_DROP_DIRTY_IOVA` (debug builds only, `crates/type1/src/tracking.rs`),
//!   which never reports one page of a two-page writer window dirty; the comparison must then
//!   find exactly that page different and name it. Release builds have no such fault, and the
//!   same run must come out identical there;
//! - the source's trace shows type1 dirty tracking as QEMU 7.2 drives it for a VFIO device
//!   (`vfio_set_dirty_page_tracking`, `vfio_get_dirty_bitmap`): `VFIO_IOMMU_DIRTY_PAGES` START,
//!   GET_BITMAP over the mapped RAM, and STOP. QEMU postpones the log stop while the VM is not
//!   running (`memory_global_dirty_log_stop`), so STOP comes when the source is resumed with
//!   `cont`. Kernel-exact reports every page of a mapping dirty at every GET_BITMAP, as the
//!   kernel does while a group cannot scope its dirty pages (`update_user_bitmap`, v6.18);
//!   precise reports only pages the device wrote (none outside the writer's window, some in
//!   all);
//! - the v1 region itself is read through the device fd, which the trace does not show, and
//!   QEMU 7.2's `query-migrate` has no VFIO section: that the migration completes at all is the
//!   evidence (without a migration-capable device QEMU 7.2 blocks migration);
//! - `query-migrate`'s figures (total time, downtime, bytes transferred, dirty-sync count) and
//!   the pages the device wrote during the migration are printed per case (`--nocapture`);
//! - both QEMUs `quit` and exit 0; no QEMU stderr line mentions VFIO or dirty bitmaps but the
//!   one below; every VFIO request
//!   succeeds but QEMU's probe of the ERR IRQ index and one GET_REGION_INFO: looking for the
//!   migration region, QEMU's `vfio_get_dev_region_info` asks every region index, and the VGA
//!   index of a function without VGA is EINVAL (`vfio_pci_ioctl_get_region_info`). Under TCG
//!   QEMU 7.2 also syncs the dirty log of the BAR4 section past the MSI-X table, a range that
//!   is not a multiple of the page size: the kernel rejects that GET_BITMAP with EINVAL
//!   (`vfio_iommu_type1_dirty_pages`, v6.18), so do we, and QEMU prints "Failed to get dirty
//!   bitmap for iova: ... err: 22" and carries on; those lines and requests are allowed.
//!
//! KVM is used when `/dev/kvm` opens read-write, TCG otherwise (`TYPE1_TEST_ACCEL` forces one).
//! QEMU is never optional: when `qemu-system-x86_64` is missing the tests fail.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::preload_lib;
use common::qmp::Qmp;

const QEMU: &str = "qemu-system-x86_64";
const BDF: &str = "0000:00:1f.0";
/// Guest RAM (`-m 256M`): all of it below 4 GiB on q35, at guest-physical 0.
const RAM_BYTES: u64 = 256 << 20;
const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;
/// The legacy VGA/ROM/BIOS-shadow window, routed by the chipset (PAM), not compared.
const LEGACY: std::ops::Range<u64> = 0xA0000..0x10_0000;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)` of `<linux/vfio.h>`: VFIO_TYPE is `';'`, VFIO_BASE 100.
const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}
const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
const VFIO_IOMMU_DIRTY_PAGES: u64 = vfio_io(17);
// `VFIO_IOMMU_DIRTY_PAGES_FLAG_*` of `<linux/vfio.h>`.
const DIRTY_START: u64 = 1;
const DIRTY_STOP: u64 = 2;
const DIRTY_GET_BITMAP: u64 = 4;
const EINVAL: i64 = 22;

/// QEMU up to the QMP socket, and its answer to `qmp_capabilities`.
const STARTUP: Duration = Duration::from_secs(30);
/// SeaBIOS assigning the BARs (TCG on a loaded 2-core machine).
const FIRMWARE: Duration = Duration::from_secs(90);
/// A QMP command's answer (`pmemsave` of 256 MiB included).
const REPLY: Duration = Duration::from_secs(60);
/// SeaBIOS's last debug line without a boot device (`boot_fail`), printed after its POST made
/// the shadowed BIOS read-only.
const FIRMWARE_DONE: &str = "No bootable device";
/// The trace unchanged this long: the firmware is done (SeaBIOS idles without a boot device).
const SETTLE: Duration = Duration::from_millis(500);
/// The whole migration, from `migrate` to `completed`.
const MIGRATION: Duration = Duration::from_secs(60);
/// QEMU's exit after `quit`.
const EXIT: Duration = Duration::from_secs(30);
/// Bandwidth for the migration stream (4 GiB/s: a local socket).
const MAX_BANDWIDTH: u64 = 4 << 30;

/// The source's autonomous writer (device options `writer=BASE+SIZE,writer-rate,writer-seed`),
/// which the drop-in starts once bus mastering is on and the window is mapped.
#[derive(Debug, Clone, Copy)]
struct WriterCfg {
    base: u64,
    size: u64,
    rate: u32,
    seed: u64,
}

/// 1024 pages from 16 MiB (guest RAM SeaBIOS leaves alone), 2000 pages per second.
const WRITER: WriterCfg = WriterCfg {
    base: 0x100_0000,
    size: 0x40_0000,
    rate: 2000,
    seed: 0x7e57_0001,
};
/// The dropped-dirty-bit case: two pages, each rewritten about every millisecond, so the page
/// whose dirty bit is dropped is rewritten after QEMU's first pass copied it.
const FAULT_WRITER: WriterCfg = WriterCfg {
    base: 0x100_0000,
    size: 2 * PAGE,
    rate: 2000,
    seed: 0x7e57_0002,
};
/// The test-only fault of the container (debug builds only): never report this IOVA's page
/// dirty (`crates/type1/src/tracking.rs`).
const FAULT_ENV: &str = "TYPE1_TEST_FAULT_DROP_DIRTY_IOVA";
/// The writer running: its page count above 0.
const WRITER_START: Duration = Duration::from_secs(20);
/// BAR0 registers of the test device (`vfio_device::testdev::reg`).
const REG_WRITER_PAGES: u64 = 0xc0;
const REG_WRITER_FAULTS: u64 = 0xc8;

/// The two modes run one after the other: four QEMUs at once on a 2-core machine would only
/// stretch every timeout.
static SERIAL: Mutex<()> = Mutex::new(());

/// The accelerator: KVM when `/dev/kvm` opens read-write, TCG otherwise, with the reason;
/// `TYPE1_TEST_ACCEL=kvm|tcg` forces one.
fn accel() -> (&'static str, String) {
    match std::env::var("TYPE1_TEST_ACCEL").as_deref() {
        Ok("tcg") => return ("tcg", "TYPE1_TEST_ACCEL=tcg".to_string()),
        Ok("kvm") => return ("kvm", "TYPE1_TEST_ACCEL=kvm".to_string()),
        _ => {}
    }
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => ("kvm", "/dev/kvm is usable".to_string()),
        Err(e) => ("tcg", format!("/dev/kvm: {e}")),
    }
}

/// QEMU's version line; fails (never skips) when QEMU is missing.
fn qemu_version() -> String {
    match Command::new(QEMU).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        Ok(o) => panic!(
            "`{QEMU} --version` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "{QEMU} is required by the QEMU migration tests and could not be run ({e}): install \
             the Debian package qemu-system-x86 (`apt-get install qemu-system-x86`; .ci/run does)"
        ),
    }
}

/// Whether this process has CAP_IPC_LOCK (bit 14 of CapEff), which exempts it from
/// RLIMIT_MEMLOCK as in the kernel. Without it, 256 MiB of pinned guest RAM needs `--memlock`.
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// A number in the trace: JSON number, or a string in hex (`0x...`) or decimal.
fn num(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

fn request_nr(l: &Value) -> Option<u64> {
    num(&l["request_nr"])
}

fn ok(l: &Value) -> bool {
    l["errno"].as_i64() == Some(0) && l["result"].as_i64().is_some_and(|r| r >= 0)
}

/// `VFIO_IOMMU_DIRTY_PAGES` lines with exactly flag `flag`.
fn dirty_pages(trace: &[Value], flag: u64) -> Vec<&Value> {
    trace
        .iter()
        .filter(|l| request_nr(l) == Some(VFIO_IOMMU_DIRTY_PAGES))
        .filter(|l| num(&l["args"]["flags"]) == Some(flag))
        .collect()
}

/// A GET_BITMAP the kernel rejects because its range is not a multiple of the page size
/// (`vfio_iommu_type1_dirty_pages`, v6.18: EINVAL), as QEMU 7.2 under TCG asks for the BAR4
/// section past the MSI-X table (TCG syncs the dirty log of RAM-device regions too): its
/// (iova, size).
fn unaligned_bitmap(l: &Value) -> Option<(u64, u64)> {
    let a = &l["args"];
    let (iova, size) = (num(&a["iova"])?, num(&a["size"])?);
    let misaligned = iova % PAGE != 0 || size % PAGE != 0;
    (request_nr(l) == Some(VFIO_IOMMU_DIRTY_PAGES)
        && num(&a["flags"]) == Some(DIRTY_GET_BITMAP)
        && l["errno"] == EINVAL
        && misaligned)
        .then_some((iova, size))
}

/// One QEMU under `type1 run`, killed when dropped.
struct Vm {
    name: String,
    dir: PathBuf,
    command: String,
    child: Child,
    qmp: Option<Qmp>,
}

impl Vm {
    /// Starts `type1 run --dirty-mode MODE ... -- qemu-system-x86_64 ...` in `dir`, named
    /// `name` (`src`, `dst`); `incoming` makes it a paused destination (`-S -incoming`);
    /// `writer` autostarts the device's writer; `env` is added to type1's environment.
    fn start(
        name: &str,
        dir: &Path,
        mode: &str,
        accel: &str,
        incoming: Option<&Path>,
        writer: Option<WriterCfg>,
        env: &[(&str, String)],
    ) -> Result<Vm, String> {
        let mut args: Vec<String> = vec!["run".into(), "--dirty-mode".into(), mode.into()];
        args.extend(["--group".into(), "5:iommu".into()]);
        let mut device = format!("{BDF}@5,migration=v1");
        if let Some(w) = writer {
            device += &format!(
                ",writer={:#x}+{:#x},writer-rate={},writer-seed={:#x}",
                w.base, w.size, w.rate, w.seed
            );
        }
        args.extend(["--device".into(), device]);
        let trace = dir.join(format!("{name}.jsonl"));
        args.extend(["--trace".into(), trace.display().to_string()]);
        if !has_ipc_lock() {
            args.extend(["--memlock".into(), "1G".into()]);
        }
        args.extend(["--".into(), QEMU.into(), "-machine".into()]);
        args.push(format!("q35,accel={accel}"));
        for a in ["-m", "256M", "-nodefaults", "-nographic", "-serial", "none"] {
            args.push(a.into());
        }
        // SeaBIOS's debug output (port 0x402): `wait_firmware` waits for its last line.
        let firmware_log = dir.join(format!("{name}.firmware.log"));
        args.extend(["-chardev".into()]);
        args.push(format!("file,id=fwlog,path={}", firmware_log.display()));
        args.extend([
            "-device".into(),
            "isa-debugcon,iobase=0x402,chardev=fwlog".into(),
        ]);
        args.extend(["-monitor".into(), "none".into(), "-device".into()]);
        args.push(format!("vfio-pci,host={BDF},id=dut,x-enable-migration=on"));
        let sock = dir.join(format!("{name}.sock"));
        args.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", sock.display()),
        ]);
        if let Some(mig) = incoming {
            args.extend(["-S".into(), "-incoming".into()]);
            args.push(format!("unix:{}", mig.display()));
        }
        let vars: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let command = format!("{vars}type1 {}", args.join(" "));
        eprintln!("qemu_migrate {mode} {name}:\n  {command}");
        let child = Command::new(env!("CARGO_BIN_EXE_type1"))
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("TYPE1_PRELOAD_LIB", preload_lib())
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{name}.stdout"))).unwrap())
            .stderr(File::create(dir.join(format!("{name}.stderr"))).unwrap())
            .spawn()
            .map_err(|e| format!("spawning type1: {e}"))?;
        Ok(Vm {
            name: format!("{mode} {name}"),
            dir: dir.to_path_buf(),
            command,
            child,
            qmp: None,
        })
    }

    fn file(&self, ext: &str) -> PathBuf {
        let role = self.name.rsplit(' ').next().unwrap_or_default();
        self.dir.join(format!("{role}.{ext}"))
    }

    /// Connects QMP and negotiates capabilities.
    fn connect(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        let stream = loop {
            if let Ok(s) = UnixStream::connect(self.file("sock")) {
                break s;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("QEMU exited ({st}) before its QMP socket opened"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no QMP socket after {STARTUP:?}"));
            }
            sleep(Duration::from_millis(20));
        };
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reply: REPLY,
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let g = qmp.read(deadline)?;
        g.get("QMP")
            .ok_or_else(|| format!("not a QMP greeting: {g}"))?;
        qmp.execute("qmp_capabilities", None)?;
        self.qmp = Some(qmp);
        Ok(())
    }

    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let qmp = self.qmp.as_mut().ok_or("QMP not connected")?;
        qmp.execute(command, arguments)
            .map_err(|e| format!("{}: {e}", self.name))
    }

    /// An HMP command through QMP (`human-monitor-command`); its output.
    fn hmp(&mut self, line: &str) -> Result<String, String> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": line })),
        )?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// `dut` as the guest sees it: (bus, slot, function) and BAR0's guest-physical address.
    fn dut(&mut self) -> Result<((u64, u64, u64), u64), String> {
        let r = self.execute("query-pci", None)?;
        let d = r
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|bus| bus["devices"].as_array().into_iter().flatten())
            .find(|d| d["qdev_id"] == "dut")
            .ok_or_else(|| format!("{}: no dut in query-pci: {r}", self.name))?;
        let bar0 = d["regions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["bar"] == 0)
            .and_then(|b| b["address"].as_u64())
            .ok_or_else(|| format!("{}: dut without BAR0: {d}", self.name))?;
        let f = |k: &str| d[k].as_u64().ok_or_else(|| format!("dut without {k}: {d}"));
        Ok(((f("bus")?, f("slot")?, f("function")?), bar0))
    }

    /// Sets the bus-master bit of `dut`'s command register through the legacy configuration
    /// mechanism (ports 0xcf8/0xcfc, HMP `o`/`i`), as a guest driver's `pci_set_master` would:
    /// QEMU 7.2's guest has no driver for the device and SeaBIOS leaves bus mastering off for
    /// functions it does not drive.
    fn set_bus_master(&mut self) -> Result<(), String> {
        let ((bus, slot, func), _) = self.dut()?;
        let addr = 0x8000_0000 | (bus << 16) | (slot << 11) | (func << 8) | 0x04;
        // HMP sizes: `w` is 4 bytes, `h` 2.
        self.hmp(&format!("o /w 0xcf8 {addr:#x}"))?;
        let out = self.hmp("i /h 0xcfc")?;
        let cmd = out
            .rsplit("= 0x")
            .next()
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .ok_or_else(|| format!("{}: `i /w 0xcfc` said {out:?}", self.name))?;
        self.hmp(&format!("o /h 0xcfc {:#x}", cmd | 0x4))?;
        let out = self.hmp("i /h 0xcfc")?;
        if !out.trim_end().ends_with(&format!("{:04x}", cmd | 0x4)) {
            return Err(format!(
                "{}: the command register reads {out:?} after setting bus master",
                self.name
            ));
        }
        Ok(())
    }

    /// An 8-byte BAR0 register of `dut`, read through the guest's memory map (HMP `xp`, which
    /// QEMU turns into a read of the device's region).
    fn bar0_read(&mut self, off: u64) -> Result<u64, String> {
        let (_, bar0) = self.dut()?;
        let out = self.hmp(&format!("xp /1gx {:#x}", bar0 + off))?;
        out.rsplit(": 0x")
            .next()
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .ok_or_else(|| format!("{}: `xp` of BAR0 {off:#x} said {out:?}", self.name))
    }

    /// The writer's (pages written, DMA faults).
    fn writer_counts(&mut self) -> Result<(u64, u64), String> {
        Ok((
            self.bar0_read(REG_WRITER_PAGES)?,
            self.bar0_read(REG_WRITER_FAULTS)?,
        ))
    }

    fn status(&mut self) -> Result<String, String> {
        let r = self.execute("query-status", None)?;
        Ok(r["status"].as_str().unwrap_or_default().to_string())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.file("stderr")).unwrap_or_default()
    }

    /// The trace so far; a last line still being written is left out.
    fn trace(&self) -> Result<Vec<Value>, String> {
        let text = std::fs::read_to_string(self.file("jsonl")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            match serde_json::from_str(l) {
                Ok(v) => out.push(v),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => return Err(format!("{}: trace line {}: {e}: {l}", self.name, i + 1)),
            }
        }
        Ok(out)
    }

    /// Whether QEMU has exited, as an error naming `what` was awaited.
    fn alive(&mut self, what: &str) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Err(format!(
                "{}: QEMU exited ({st}) while waiting for {what}",
                self.name
            )),
            _ => Ok(()),
        }
    }

    /// Waits for the firmware to assign every BAR of `dut`, then for the trace to be quiet.
    fn wait_firmware(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + FIRMWARE;
        let mut last = (usize::MAX, Instant::now());
        loop {
            self.alive("the firmware")?;
            let r = self.execute("query-pci", None)?;
            let assigned = r
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|bus| bus["devices"].as_array().into_iter().flatten())
                .find(|d| d["qdev_id"] == "dut")
                .and_then(|d| d["regions"].as_array())
                .is_some_and(|bars| {
                    !bars.is_empty()
                        && bars.iter().all(|b| {
                            let (a, s) = (b["address"].as_u64(), b["size"].as_u64());
                            matches!((a, s), (Some(a), Some(s))
                                if a != 0 && a != u64::MAX && s != 0 && a % s == 0)
                        })
                });
            // The trace alone is not enough: under KVM SeaBIOS may stay quiet for more than
            // `SETTLE` between assigning the BARs and its last step before booting (making the
            // shadowed BIOS read-only, which QEMU turns into an UNMAP of all RAM and new MAPs:
            // a device writing then faults, as it would on a real IOMMU).
            let firmware_log = self.file("firmware.log");
            let booted =
                std::fs::read_to_string(&firmware_log).is_ok_and(|l| l.contains(FIRMWARE_DONE));
            let n = self.trace()?.len();
            if n != last.0 {
                last = (n, Instant::now());
            } else if assigned && booted && last.1.elapsed() >= SETTLE {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: firmware not done after {FIRMWARE:?} (BARs assigned: {assigned}, \
                     {FIRMWARE_DONE:?} in {}: {booted})",
                    self.name,
                    firmware_log.display()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// `quit`, then QEMU (and `type1 run`) must exit 0 within `EXIT`.
    fn quit(&mut self) -> Result<(), String> {
        self.execute("quit", None)?;
        let deadline = Instant::now() + EXIT;
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("{}: exited with {st} after quit", self.name))
                };
            }
            if Instant::now() >= deadline {
                return Err(format!("{}: still running {EXIT:?} after quit", self.name));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Kills QEMU if it runs; what it printed, for a failure message.
    fn post_mortem(&mut self) -> String {
        if let Some(q) = self.qmp.as_mut() {
            let deadline = Instant::now() + Duration::from_millis(200);
            while let Ok(v) = q.read(deadline) {
                q.events.push(match v["event"].as_str() {
                    Some(ev) => format!("{ev} {}", v["data"]),
                    None => format!("(unread reply) {v}"),
                });
            }
        }
        let status = match self.child.try_wait() {
            Ok(Some(st)) => format!("QEMU had exited: {st}"),
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "QEMU killed".to_string()
            }
        };
        let text = std::fs::read_to_string(self.file("jsonl")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        let events = self.qmp.as_ref().map(|q| q.events.join(", "));
        format!(
            "--- {}: {status}\ncommand: {}\nQMP events: {}\nQEMU stderr:\n{}\ntrace ({} lines), \
             last lines:\n{tail}",
            self.name,
            self.command,
            events.unwrap_or_default(),
            self.stderr(),
            lines.len()
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `pmemsave` of all guest RAM into `file`.
fn save_ram(vm: &mut Vm, file: &Path) -> Result<(), String> {
    vm.execute(
        "pmemsave",
        Some(json!({ "val": 0, "size": RAM_BYTES, "filename": file.display().to_string() })),
    )?;
    let len = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if len.len() != RAM_BYTES {
        return Err(format!(
            "{}: pmemsave wrote {} bytes, not {RAM_BYTES}",
            vm.name,
            len.len()
        ));
    }
    Ok(())
}

/// The guest-physical page numbers whose contents differ, the legacy window left out.
fn differing_pages(a: &Path, b: &Path) -> Result<Vec<u64>, String> {
    let open = |p: &Path| File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let chunk = 256 * PAGE_BYTES;
    let (mut ba, mut bb) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut diff = Vec::new();
    let mut at = 0u64;
    while at < RAM_BYTES {
        fa.read_exact(&mut ba).map_err(|e| e.to_string())?;
        fb.read_exact(&mut bb).map_err(|e| e.to_string())?;
        for (i, (pa, pb)) in ba.chunks(PAGE_BYTES).zip(bb.chunks(PAGE_BYTES)).enumerate() {
            let addr = at + i as u64 * PAGE;
            if pa != pb && !LEGACY.contains(&addr) {
                diff.push(addr / PAGE);
            }
        }
        at += chunk as u64;
    }
    Ok(diff)
}

/// What the source's trace must show of dirty tracking, per mode; the pages GET_BITMAP reported.
fn check_dirty_tracking(trace: &[Value], mode: &str, w: &WriterCfg) -> Result<u64, String> {
    let starts = dirty_pages(trace, DIRTY_START);
    let bitmaps = dirty_pages(trace, DIRTY_GET_BITMAP);
    let stops = dirty_pages(trace, DIRTY_STOP);
    if starts.len() != 1 || !ok(starts[0]) {
        return Err(format!("not one successful DIRTY_PAGES START: {starts:?}"));
    }
    if stops.len() != 1 || !ok(stops[0]) {
        return Err(format!("not one successful DIRTY_PAGES STOP: {stops:?}"));
    }
    let pos = |l: &Value| trace.iter().position(|x| std::ptr::eq(x, l));
    let (start_at, stop_at) = (pos(starts[0]), pos(stops[0]));
    if bitmaps.is_empty() {
        return Err("no DIRTY_PAGES GET_BITMAP".into());
    }
    let mut reported = 0u64;
    let mut ram_covered = false;
    for l in &bitmaps {
        if unaligned_bitmap(l).is_some() {
            continue;
        }
        if !ok(l) {
            return Err(format!("GET_BITMAP failed: {l}"));
        }
        let at = pos(l);
        if at <= start_at || at >= stop_at {
            return Err(format!("GET_BITMAP outside START..STOP: {l}"));
        }
        let a = &l["args"];
        let (Some(iova), Some(size), Some(pgsize), Some(pop)) = (
            num(&a["iova"]),
            num(&a["size"]),
            num(&a["pgsize"]),
            num(&l["out"]["bitmap_popcount"]),
        ) else {
            return Err(format!("GET_BITMAP without iova/size/pgsize/popcount: {l}"));
        };
        if pgsize != PAGE {
            return Err(format!("GET_BITMAP at page size {pgsize}: {l}"));
        }
        ram_covered |= iova <= 0x10_0000 && iova + size >= RAM_BYTES;
        // Kernel-exact: every page of a mapping dirty at every harvest while the group cannot
        // scope its dirty pages (`update_user_bitmap`, v6.18). Precise: only pages the device
        // wrote, all in the writer's window.
        if mode == "kernel-exact" {
            if pop != size / pgsize {
                return Err(format!(
                    "{mode}: GET_BITMAP reported {pop} dirty pages, not {}: {l}",
                    size / pgsize
                ));
            }
        } else {
            let lo = iova.max(w.base);
            let hi = (iova + size).min(w.base + w.size);
            let window = hi.saturating_sub(lo) / PAGE;
            if pop > window {
                return Err(format!(
                    "{mode}: GET_BITMAP reported {pop} dirty pages, more than the {window} of \
                     the writer's window in its range: {l}"
                ));
            }
        }
        reported += pop;
    }
    if !ram_covered {
        return Err("no GET_BITMAP covered guest RAM above 1 MiB".into());
    }
    if reported == 0 {
        return Err("GET_BITMAP never reported a dirty page while the device wrote".into());
    }
    Ok(reported)
}

/// No QEMU stderr line about VFIO; every VFIO request succeeded but the ERR IRQ probe
/// (`vfio_pci_ioctl_get_irq_info`: EINVAL for a conventional PCI function) and one
/// GET_REGION_INFO of the VGA index (`vfio_pci_ioctl_get_region_info`: EINVAL without VGA),
/// which QEMU's search for the migration region (`vfio_get_dev_region_info`) asks.
fn check_stderr_and_requests(vm: &Vm) -> Result<(), String> {
    let trace = vm.trace()?;
    // QEMU 7.2's report of a GET_BITMAP the kernel rejects too (`vfio_get_dirty_bitmap`).
    let rejected: Vec<String> = trace
        .iter()
        .filter_map(unaligned_bitmap)
        .map(|(iova, size)| {
            format!("Failed to get dirty bitmap for iova: {iova:#x} size: {size:#x} err: 22")
        })
        .collect();
    let stderr = vm.stderr();
    if let Some(l) = stderr.lines().find(|l| {
        let low = l.to_ascii_lowercase();
        (low.contains("vfio") || low.contains("dirty")) && !rejected.iter().any(|r| l.ends_with(r))
    }) {
        return Err(format!("{}: QEMU printed a line about VFIO: {l}", vm.name));
    }
    let err_probe =
        |l: &Value| request_nr(l) == Some(VFIO_DEVICE_GET_IRQ_INFO) && l["errno"] == EINVAL;
    let region_einval =
        |l: &Value| request_nr(l) == Some(VFIO_DEVICE_GET_REGION_INFO) && l["errno"] == EINVAL;
    let failed: Vec<&Value> = trace
        .iter()
        .filter(|l| l.get("event").is_none() && !ok(l) && !err_probe(l))
        .filter(|l| unaligned_bitmap(l).is_none())
        .collect();
    let vga = failed.iter().filter(|l| region_einval(l)).count();
    if let Some(l) = failed.iter().find(|l| !region_einval(l)) {
        return Err(format!("{}: a VFIO request failed: {l}", vm.name));
    }
    if vga > 1 {
        return Err(format!(
            "{}: {vga} GET_REGION_INFO failed with EINVAL, QEMU's search for the migration \
             region makes one (the VGA index): {failed:?}",
            vm.name
        ));
    }
    Ok(())
}

/// Polls `f` every 50 ms until it returns a value, for at most `timeout`.
fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        sleep(Duration::from_millis(50));
    }
}

/// One run: a dirty mode, the source's writer, and the test-only fault if any.
#[derive(Debug, Clone, Copy)]
struct Case {
    mode: &'static str,
    writer: WriterCfg,
    /// The guest-physical (= IOVA) address whose dirty bit the source's container drops.
    drop_dirty: Option<u64>,
}

/// xorshift64 (Marsaglia) as the test device's writer steps it (`vfio_device::testdev`).
fn xorshift(mut x: u64) -> u64 {
    if x == 0 {
        x = 0x9e37_79b9_7f4a_7c15;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The writer's first `n` writes (`vfio_device::testdev`: write `seq` goes to page
/// `state_seq % pages` of the window, `state_seq` the seed stepped `seq` times): for each page of
/// the window, the last write that reached it (0: none).
fn last_writes(w: &WriterCfg, n: u64) -> Vec<u64> {
    let pages = w.size / PAGE;
    let mut last = vec![0u64; usize::try_from(pages).unwrap()];
    let mut state = w.seed;
    for seq in 1..=n {
        state = xorshift(state);
        last[usize::try_from(state % pages).unwrap()] = seq;
    }
    last
}

/// The writer's window of a RAM dump (or of a dump of the window alone, `at` its address).
fn read_window(file: &Path, at: u64, w: &WriterCfg) -> Result<Vec<u8>, String> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    f.seek(SeekFrom::Start(w.base - at))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::try_from(w.size).unwrap()];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// `window` holds exactly what the writer's first `n` writes leave: each page written last by
/// write `k` holds `k` and the seed (little-endian u64s) and zeros after, each page never
/// written zeros (guest RAM SeaBIOS does not touch).
fn check_window(window: &[u8], w: &WriterCfg, n: u64) -> Result<(), String> {
    let last = last_writes(w, n);
    let mut bad = Vec::new();
    let mut want = vec![0u8; PAGE_BYTES];
    for (i, (page, &seq)) in window.chunks(PAGE_BYTES).zip(&last).enumerate() {
        want.fill(0);
        if seq != 0 {
            want[..8].copy_from_slice(&seq.to_le_bytes());
            want[8..16].copy_from_slice(&w.seed.to_le_bytes());
        }
        if page != want.as_slice() {
            let word = |r: std::ops::Range<usize>| {
                u64::from_le_bytes(page[r].try_into().unwrap_or_default())
            };
            bad.push(format!(
                "{:#x} holds ({}, {:#x}), not write {seq}",
                w.base + i as u64 * PAGE,
                word(0..8),
                word(8..16)
            ));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} of the writer's {} pages are not what its writes 1..={n} leave (page: (write, \
         seed) found): {}{}",
        bad.len(),
        last.len(),
        bad[..bad.len().min(8)].join("; "),
        if bad.len() > 8 { "; ..." } else { "" }
    ))
}

/// The message naming the guest pages that differ (guest-physical addresses).
fn differ_message(diff: &[u64]) -> String {
    let shown: Vec<String> = diff
        .iter()
        .take(32)
        .map(|p| format!("{:#x}", p * PAGE))
        .collect();
    format!(
        "{} guest page(s) differ between source and destination (guest-physical): {}{}",
        diff.len(),
        shown.join(" "),
        if diff.len() > 32 { " ..." } else { "" }
    )
}

/// The whole migration of `case` between `src` and `dst`.
fn migrate(case: &Case, dir: &Path, src: &mut Vm, dst: &mut Vm) -> Result<(), String> {
    let mode = case.mode;
    src.connect()?;
    dst.connect()?;
    src.wait_firmware()?;
    if src.status()? != "running" {
        return Err(format!("source is {}, not running", src.status()?));
    }
    if dst.status()? != "inmigrate" {
        return Err(format!("destination is {}, not inmigrate", dst.status()?));
    }
    // The writer: the drop-in starts it once bus mastering is on (the window is mapped: QEMU
    // maps all guest RAM when the device is realized).
    src.set_bus_master()?;
    let (before, _) = poll("the source's writer to write", WRITER_START, || {
        src.alive("the writer")?;
        let c = src.writer_counts()?;
        Ok((c.0 > 0).then_some(c))
    })?;
    // Kernel-exact resends every mapped page at each round: give its last round the time.
    let downtime_limit: u64 = if mode == "kernel-exact" { 30_000 } else { 300 };
    src.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": MAX_BANDWIDTH, "downtime-limit": downtime_limit })),
    )?;
    let mig = dir.join("mig.sock");
    let t0 = Instant::now();
    src.execute(
        "migrate",
        Some(json!({ "uri": format!("unix:{}", mig.display()) })),
    )?;
    let info = poll("the migration to complete", MIGRATION, || {
        src.alive("the migration")?;
        dst.alive("the migration")?;
        let r = src.execute("query-migrate", None)?;
        match r["status"].as_str() {
            Some("completed") => Ok(Some(r)),
            Some("failed") | Some("cancelled") => Err(format!("migration ended: {r}")),
            _ => Ok(None),
        }
    })?;
    let wall = t0.elapsed();
    let dst_status = poll("the destination to leave inmigrate", MIGRATION, || {
        dst.alive("the destination")?;
        let s = dst.status()?;
        Ok((s != "inmigrate").then_some(s))
    })?;
    if dst_status != "paused" {
        return Err(format!(
            "destination is {dst_status} after the migration, not paused"
        ));
    }
    let src_status = src.status()?;
    if src_status != "postmigrate" {
        return Err(format!(
            "source is {src_status} after the migration, not postmigrate"
        ));
    }

    // The source's writer stopped with the device (QEMU 7.2 clears `_RUNNING` before the
    // last pass) after writing during pre-copy. The paused destination's device is still
    // `_RESUMING`: QEMU 7.2 leaves that state only when the VM runs (`vfio_vmstate_change`),
    // and the state is applied on that transition, so its position is checked after `cont`.
    let (pages, faults) = src.writer_counts()?;
    if faults != 0 || pages <= before {
        return Err(format!(
            "the source's writer wrote {pages} pages ({faults} faults), {before} before the \
             migration: it did not write throughout pre-copy"
        ));
    }

    let (a, b) = (dir.join("src.ram"), dir.join("dst.ram"));
    save_ram(src, &a)?;
    save_ram(dst, &b)?;
    let diff = differing_pages(&a, &b)?;
    let window = read_window(&b, 0, &case.writer);
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    // The fault is compiled into debug builds only: a release build must ignore it.
    let armed = case.drop_dirty.filter(|_| cfg!(debug_assertions));
    match armed {
        None if !diff.is_empty() => return Err(differ_message(&diff)),
        None => check_window(&window?, &case.writer, pages)?,
        Some(gpa) => {
            let msg = differ_message(&diff);
            if diff != [gpa / PAGE] || !msg.contains(&format!("{gpa:#x}")) {
                return Err(format!(
                    "with the dirty bit of {gpa:#x} dropped, exactly that page must differ: \
                     {msg}"
                ));
            }
            eprintln!("qemu_migrate {mode}, dirty bit of {gpa:#x} dropped: {msg}");
        }
    }

    // The writer's migrated position: after `cont` the destination's writer counts on from
    // the source's `pages` and continues its sequence, so the window holds exactly what
    // writes 1..=m leave (1..=pages from the source through the migrated RAM, the rest from
    // the destination); a writer restarted or resumed elsewhere in its sequence leaves other
    // pages.
    if armed.is_none() {
        dst.execute("cont", None)?;
        poll("the destination's writer to write on", WRITER_START, || {
            dst.alive("the destination's writer")?;
            Ok((dst.writer_counts()?.0 >= pages + 64).then_some(()))
        })?;
        dst.execute("stop", None)?;
        let (m, f) = dst.writer_counts()?;
        let file = dir.join("dst.window");
        dst.execute(
            "pmemsave",
            Some(json!({ "val": case.writer.base, "size": case.writer.size,
                         "filename": file.display().to_string() })),
        )?;
        let window = read_window(&file, case.writer.base, &case.writer)?;
        let _ = std::fs::remove_file(&file);
        if f != 0 {
            return Err(format!("the destination's writer faulted {f} times"));
        }
        check_window(&window, &case.writer, m)
            .map_err(|e| format!("destination after cont, writer at {m}: {e}"))?;
    }

    // QEMU postponed the log stop while the source was not running: resuming it issues STOP.
    src.execute("cont", None)?;
    poll("DIRTY_PAGES STOP after cont", MIGRATION, || {
        src.alive("DIRTY_PAGES STOP")?;
        Ok((!dirty_pages(&src.trace()?, DIRTY_STOP).is_empty()).then_some(()))
    })?;
    let reported = check_dirty_tracking(&src.trace()?, mode, &case.writer)?;

    let ram = &info["ram"];
    eprintln!(
        "qemu_migrate {mode}: completed in {:.2} s (wall); query-migrate: total-time {} ms, \
         setup-time {} ms, downtime {} ms, transferred {} bytes, dirty-sync-count {}, \
         normal pages {}, duplicate (zero) pages {}; GET_BITMAP reported {reported} dirty pages; \
         the device wrote {} pages during the migration ({pages} in all)",
        wall.as_secs_f64(),
        info["total-time"],
        info["setup-time"],
        info["downtime"],
        ram["transferred"],
        ram["dirty-sync-count"],
        ram["normal"],
        ram["duplicate"],
        pages - before,
    );

    src.quit()?;
    dst.quit()?;
    check_stderr_and_requests(src)?;
    check_stderr_and_requests(dst)?;
    Ok(())
}

fn live_migrate(case: Case) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mode = case.mode;
    let version = qemu_version();
    let (accel, why) = accel();
    eprintln!("qemu_migrate {mode}: {version}; accel={accel} ({why}); {case:?}");
    let tag = if case.drop_dirty.is_some() {
        "-fault"
    } else {
        ""
    };
    let dir =
        std::env::temp_dir().join(format!("type1-migrate-{mode}{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mig = dir.join("mig.sock");
    let env: Vec<(&str, String)> = case
        .drop_dirty
        .map(|gpa| (FAULT_ENV, format!("{gpa:#x}")))
        .into_iter()
        .collect();
    let mut src = Vm::start("src", &dir, mode, accel, None, Some(case.writer), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut dst = match Vm::start("dst", &dir, mode, accel, Some(&mig), None, &[]) {
        Ok(v) => v,
        Err(e) => panic!("{e}\n{}", src.post_mortem()),
    };
    if let Err(e) = migrate(&case, &dir, &mut src, &mut dst) {
        panic!(
            "qemu_migrate {mode} ({version}, accel={accel}): {e}\n{}\n{}",
            src.post_mortem(),
            dst.post_mortem()
        );
    }
    drop((src, dst));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("qemu_migrate {mode}: passed (accel={accel})");
}

#[test]
fn qemu_live_migrates_the_test_device_writing_with_precise_dirty_tracking_ram_identical() {
    live_migrate(Case {
        mode: "precise",
        writer: WRITER,
        drop_dirty: None,
    });
}

#[test]
fn qemu_live_migrates_the_test_device_writing_with_kernel_exact_dirty_tracking_ram_identical() {
    live_migrate(Case {
        mode: "kernel-exact",
        writer: WRITER,
        drop_dirty: None,
    });
}

/// A container that loses one dirty bit loses that page's last writes: the comparison must
/// catch it and name the page (debug builds, where the test-only fault exists); a release build
/// has no such fault, so the same run must come out identical.
#[test]
fn a_dropped_dirty_bit_makes_exactly_its_page_differ_and_is_named_debug_builds_only() {
    live_migrate(Case {
        mode: "precise",
        writer: FAULT_WRITER,
        drop_dirty: Some(FAULT_WRITER.base),
    });
}
