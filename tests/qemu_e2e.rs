//! QEMU 7.2 end to end (issue 12): unmodified `qemu-system-x86_64` attaches the built-in DMA test
//! device with `-device vfio-pci` under `type1 run`, with no hardware, module or IOMMU.
//!
//! Each test starts QEMU (KVM when `/dev/kvm` opens read-write, TCG otherwise; the choice is
//! printed) with a QMP unix socket and checks, every wait bounded and QEMU killed on failure:
//! - `query-pci` shows the device with the test device's identity and BAR layout, at addresses
//!   the firmware (SeaBIOS) assigned;
//! - the trace shows guest RAM mapped with `VFIO_IOMMU_MAP_DMA` and the BAR mmap mapped at its
//!   guest-physical address (QEMU's peer-to-peer mapping, what `vfio_listener_region_add` does);
//! - `system_reset` reaches `VFIO_DEVICE_RESET` (QEMU's `vfio_pci_reset`), and the firmware
//!   maps the BAR again;
//! - `quit` makes QEMU exit 0; what it left mapped is exactly what the exit line reports, the BAR
//!   mmaps among it are not charged (the kernel's reserved-pfn rule for a VM_PFNMAP mapping,
//!   `vaddr_get_pfns`/`is_invalid_reserved_pfn`, v6.18), and once its files are released
//!   (`vfio_iommu_type1_release` unmaps every `vfio_dma`) nothing stays charged or pending;
//! - no QEMU stderr line mentions VFIO.
//!
//! The second test puts an emulated VT-d (`intel-iommu,caching-mode=on`) in front of the device,
//! with no guest driver, so the device's address space is the vIOMMU's pass-through alias.
//!
//! QEMU is never optional: when `qemu-system-x86_64` is missing the tests fail and say how to
//! install it (`.ci/run` installs the Debian package `qemu-system-x86`).

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::preload_lib;
use common::qmp::Qmp;
use serde_json::Value;

const QEMU: &str = "qemu-system-x86_64";
const BDF: &str = "0000:00:1f.0";
/// Guest RAM (`-m 256M`), mapped at IOVA 0.
const RAM_BYTES: u64 = 256 << 20;
/// x86-64 host pages, the unit of the exit line's page counts.
const PAGE: u64 = 4096;

// Test device identity and BARs, as `crates/vfio-device/src/testdev/mod.rs` documents them.
const VENDOR: u64 = 0x1234;
const DEVICE: u64 = 0x11e8;
const SUBSYSTEM_VENDOR: u64 = 0x1af4;
const SUBSYSTEM: u64 = 0x1100;
/// Class code 0x00ff00: QEMU reports base class and subclass.
const CLASS: u64 = 0x00ff;
/// BAR0: 32-bit MMIO registers, 1 MiB.
const BAR0_SIZE: u64 = 1 << 20;
/// BAR2/3: 64-bit prefetchable device memory, mmap-able, 16 MiB.
const BAR2_SIZE: u64 = 16 << 20;
/// BAR4: 32-bit MSI-X table and PBA, 16 KiB.
const BAR4_SIZE: u64 = 16 << 10;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)` of `<linux/vfio.h>`: VFIO_TYPE is `';'`, VFIO_BASE 100.
const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}
const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
const VFIO_DEVICE_RESET: u64 = vfio_io(11);
const VFIO_IOMMU_MAP_DMA: u64 = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: u64 = vfio_io(14);
const VFIO_DMA_MAP_FLAG_READ_WRITE: u64 = 3;
const EINVAL: i64 = 22;

/// QEMU up to the QMP socket, and its answer to `qmp_capabilities`.
const STARTUP: Duration = Duration::from_secs(30);
/// SeaBIOS assigning the BARs, QEMU mapping them, a reset (TCG on a loaded 2-core machine).
const FIRMWARE: Duration = Duration::from_secs(90);
/// A QMP command's answer.
const REPLY: Duration = Duration::from_secs(30);
/// The trace unchanged this long: the firmware is done (SeaBIOS idles without a boot device).
const SETTLE: Duration = Duration::from_millis(500);
/// QEMU's exit after `quit`.
const EXIT: Duration = Duration::from_secs(30);

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
            "{QEMU} is required by the QEMU end-to-end tests and could not be run ({e}): install \
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

/// The request number of a trace line (device-fd requests may be named "unknown").
fn request_nr(l: &Value) -> Option<u64> {
    num(&l["request_nr"])
}

fn ok(l: &Value) -> bool {
    l["errno"].as_i64() == Some(0) && l["result"].as_i64().is_some_and(|r| r >= 0)
}

/// Successful MAP_DMA lines at index `from` or later: (iova, size, flags).
fn maps_from(trace: &[Value], from: usize) -> Vec<(u64, u64, u64)> {
    trace[from.min(trace.len())..]
        .iter()
        .filter(|l| request_nr(l) == Some(VFIO_IOMMU_MAP_DMA) && ok(l))
        .filter_map(|l| {
            let a = &l["args"];
            Some((num(&a["iova"])?, num(&a["size"])?, num(&a["flags"])?))
        })
        .collect()
}

/// Guest mappings live after a trace, and the bytes mapped and unmapped on the way.
struct Replay {
    /// iova → size.
    live: BTreeMap<u64, u64>,
    mapped: u64,
    unmapped: u64,
}

/// Replays successful MAP_DMA and UNMAP_DMA (QEMU unmaps whole mappings); an UNMAP's written-back
/// size must be the sum of the mappings it covers, as `vfio_dma_do_unmap` reports it.
fn replay(trace: &[Value]) -> Result<Replay, String> {
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut mapped, mut unmapped) = (0u64, 0u64);
    for l in trace.iter().filter(|l| ok(l)) {
        match request_nr(l) {
            Some(VFIO_IOMMU_MAP_DMA) => {
                let (iova, size) = (num(&l["args"]["iova"]), num(&l["args"]["size"]));
                let (Some(iova), Some(size)) = (iova, size) else {
                    return Err(format!("MAP_DMA without iova/size: {l}"));
                };
                if live.insert(iova, size).is_some() {
                    return Err(format!("MAP_DMA succeeded over a live mapping: {l}"));
                }
                mapped = mapped.saturating_add(size);
            }
            Some(VFIO_IOMMU_UNMAP_DMA) => {
                let (iova, size) = (num(&l["args"]["iova"]), num(&l["args"]["size"]));
                let (Some(iova), Some(size), Some(done)) = (iova, size, num(&l["out"]["size"]))
                else {
                    return Err(format!("UNMAP_DMA without iova/size/out.size: {l}"));
                };
                let end = iova.saturating_add(size);
                let gone: Vec<u64> = live
                    .range(iova..end)
                    .filter(|(&a, &s)| a.saturating_add(s) <= end)
                    .map(|(&a, _)| a)
                    .collect();
                let bytes: u64 = gone.iter().map(|a| live.remove(a).unwrap_or(0)).sum();
                if bytes != done {
                    return Err(format!(
                        "UNMAP_DMA wrote back {done:#x} bytes, the mappings it covers are \
                         {bytes:#x}: {l}"
                    ));
                }
                unmapped = unmapped.saturating_add(done);
            }
            _ => {}
        }
    }
    Ok(Replay {
        live,
        mapped,
        unmapped,
    })
}

/// A device BAR as `query-pci` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bar {
    index: u64,
    address: u64,
    size: u64,
    is_64: bool,
    prefetch: bool,
}

impl Bar {
    /// Firmware-assigned: QEMU reports 0 or all-ones (`PCI_BAR_UNMAPPED`) for an unassigned BAR.
    fn assigned(&self) -> bool {
        self.address != 0 && self.address != u64::MAX && self.address % self.size == 0
    }

    fn contains(&self, iova: u64) -> bool {
        iova >= self.address && iova - self.address < self.size
    }
}

/// QEMU under `type1 run`, killed when dropped.
struct Vm {
    name: &'static str,
    accel: &'static str,
    version: String,
    dir: PathBuf,
    command: String,
    child: Child,
    qmp: Option<Qmp>,
}

impl Vm {
    /// Starts `type1 run ... -- qemu-system-x86_64 ...`; `viommu` puts an intel-iommu in front.
    fn start(name: &'static str, viommu: bool) -> Vm {
        let version = qemu_version();
        let (accel, why) = accel();
        let dir = std::env::temp_dir().join(format!("type1-qemu-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let machine = if viommu {
            // QEMU requires the split irqchip for intel-iommu with KVM; TCG accepts it.
            format!("q35,accel={accel},kernel-irqchip=split")
        } else {
            format!("q35,accel={accel}")
        };
        let mut args: Vec<String> = vec!["run".into(), "--group".into(), "5:iommu".into()];
        args.extend(["--device".into(), format!("{BDF}@5")]);
        args.extend([
            "--trace".into(),
            dir.join("trace.jsonl").display().to_string(),
        ]);
        if !has_ipc_lock() {
            args.extend(["--memlock".into(), "1G".into()]);
        }
        args.extend(["--".into(), QEMU.into(), "-machine".into(), machine]);
        for a in ["-m", "256M", "-nodefaults", "-nographic", "-serial", "none"] {
            args.push(a.into());
        }
        args.extend(["-monitor".into(), "none".into()]);
        if viommu {
            args.extend(["-device".into(), "intel-iommu,caching-mode=on".into()]);
        }
        args.extend(["-device".into(), format!("vfio-pci,host={BDF},id=dut")]);
        let sock = dir.join("qmp.sock");
        args.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", sock.display()),
        ]);
        let command = format!("type1 {}", args.join(" "));
        eprintln!("qemu_e2e {name}: {version}; accel={accel} ({why})\n  {command}");
        let child = Command::new(env!("CARGO_BIN_EXE_type1"))
            .args(&args)
            .env("TYPE1_PRELOAD_LIB", preload_lib())
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("stdout")).unwrap())
            .stderr(File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut vm = Vm {
            name,
            accel,
            version,
            dir,
            command,
            child,
            qmp: None,
        };
        let stream = vm.wait("QEMU's QMP socket", STARTUP, |vm| {
            Ok(UnixStream::connect(vm.dir.join("qmp.sock")).ok())
        });
        let writer = stream.try_clone().unwrap();
        let mut qmp = Qmp {
            reply: REPLY,
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read(Instant::now() + STARTUP);
        let r = greeting.and_then(|g| {
            g.get("QMP")
                .map(|_| ())
                .ok_or_else(|| format!("not a QMP greeting: {g}"))?;
            qmp.execute("qmp_capabilities", None)
        });
        vm.qmp = Some(qmp);
        if let Err(e) = r {
            vm.fail(&e);
        }
        vm
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The trace so far; a last line still being written is left out.
    fn trace(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join("trace.jsonl")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            match serde_json::from_str(l) {
                Ok(v) => out.push(v),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => panic!("{}: trace line {}: {e}: {l}", self.name, i + 1),
            }
        }
        out
    }

    /// Kills QEMU and fails with what it printed and the trace's last lines.
    fn fail(&mut self, msg: &str) -> ! {
        // Events QEMU sent that no command read yet (a SHUTDOWN says why it stopped).
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
        let text = std::fs::read_to_string(self.dir.join("trace.jsonl")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n");
        let events = self.qmp.as_ref().map(|q| q.events.join(", "));
        panic!(
            "{} ({}, accel={}): {msg}\n{status}\ncommand: {}\nQMP events: {}\nQEMU stderr:\n{}\n\
             trace ({} lines), last lines:\n{tail}",
            self.name,
            self.version,
            self.accel,
            self.command,
            events.unwrap_or_default(),
            self.stderr(),
            lines.len()
        );
    }

    /// Polls `f` every 20 ms until it returns a value; fails on error, timeout or QEMU's exit.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&mut Vm) -> Result<Option<T>, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match f(self) {
                Ok(Some(v)) => return v,
                Ok(None) => {}
                Err(e) => self.fail(&format!("waiting for {what}: {e}")),
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.fail(&format!("QEMU exited ({st}) while waiting for {what}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn execute(&mut self, command: &str) -> Value {
        let r = self.qmp.as_mut().unwrap().execute(command, None);
        r.unwrap_or_else(|e| self.fail(&e))
    }

    /// The device `dut` in `query-pci`, with its BARs.
    fn dut(&mut self) -> Result<(Value, Vec<Bar>), String> {
        let r = self.qmp.as_mut().unwrap().execute("query-pci", None)?;
        let dev = r
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|bus| bus["devices"].as_array().into_iter().flatten())
            .find(|d| d["qdev_id"] == "dut")
            .ok_or_else(|| format!("no device \"dut\" in query-pci: {r}"))?
            .clone();
        let bars = dev["regions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| Bar {
                index: b["bar"].as_u64().unwrap_or(u64::MAX),
                address: b["address"].as_u64().unwrap_or(0),
                size: b["size"].as_u64().unwrap_or(0),
                is_64: b["mem_type_64"].as_bool().unwrap_or(false),
                prefetch: b["prefetch"].as_bool().unwrap_or(false),
            })
            .collect();
        Ok((dev, bars))
    }

    /// Waits until the firmware has assigned every BAR, then checks identity and layout.
    fn assigned_bars(&mut self) -> Vec<Bar> {
        let (dev, bars) = self.wait("the firmware to assign the BARs", FIRMWARE, |vm| {
            let (dev, bars) = vm.dut()?;
            let all = !bars.is_empty() && bars.iter().all(Bar::assigned);
            Ok(all.then_some((dev, bars)))
        });
        let id = &dev["id"];
        let identity = (
            id["vendor"].as_u64(),
            id["device"].as_u64(),
            id["subsystem-vendor"].as_u64(),
            id["subsystem"].as_u64(),
            dev["class_info"]["class"].as_u64(),
        );
        let want = (
            Some(VENDOR),
            Some(DEVICE),
            Some(SUBSYSTEM_VENDOR),
            Some(SUBSYSTEM),
            Some(CLASS),
        );
        if identity != want {
            self.fail(&format!(
                "the device's identity (vendor, device, subsystem vendor, subsystem, class) is \
                 {identity:x?}, not {want:x?}: {dev}"
            ));
        }
        let layout: Vec<_> = bars
            .iter()
            .map(|b| (b.index, b.size, b.is_64, b.prefetch))
            .collect();
        let want = vec![
            (0, BAR0_SIZE, false, false),
            (2, BAR2_SIZE, true, true),
            (4, BAR4_SIZE, false, false),
        ];
        if layout != want {
            self.fail(&format!(
                "BARs (index, size, 64-bit, prefetchable) {layout:x?}, not {want:x?}"
            ));
        }
        eprintln!(
            "qemu_e2e {}: device {VENDOR:04x}:{DEVICE:04x} BARs {}",
            self.name,
            bars.iter()
                .map(|b| format!("{}@{:#x}", b.index, b.address))
                .collect::<Vec<_>>()
                .join(" ")
        );
        bars
    }

    /// Waits until the trace, from line `from`, shows BAR2 (the mmap-able device memory) mapped
    /// for DMA at its guest-physical address, still mapped, and the trace quiet for `SETTLE`:
    /// after a reset SeaBIOS resets the machine again (once under KVM, a few times under TCG),
    /// and each reset unmaps the BARs until the firmware has assigned them again.
    fn wait_bar_mapped(&mut self, bar2: Bar, from: usize) {
        let mut last = (usize::MAX, Instant::now());
        self.wait("QEMU to map the BAR2 mmap for DMA", FIRMWARE, |vm| {
            let t = vm.trace();
            if t.len() != last.0 {
                last = (t.len(), Instant::now());
                return Ok(None);
            }
            let mapped_since = maps_from(&t, from)
                .iter()
                .any(|&(iova, size, _)| iova == bar2.address && size == bar2.size);
            let live = replay(&t)?.live.get(&bar2.address) == Some(&bar2.size);
            Ok((mapped_since && live && last.1.elapsed() >= SETTLE).then_some(()))
        });
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The whole run: realize, firmware, DMA mappings, reset, quit, then the trace and stderr.
fn attach_reset_quit(name: &'static str, viommu: bool) {
    let mut vm = Vm::start(name, viommu);
    let bars = vm.assigned_bars();
    let bar2 = bars[1];
    vm.wait_bar_mapped(bar2, 0);

    // system_reset: QEMU's vfio_pci_reset issues VFIO_DEVICE_RESET (FLR-capable device), then
    // the firmware runs again and QEMU maps the BAR again.
    let before = vm.trace().len();
    vm.execute("system_reset");
    let reset_at = vm.wait("VFIO_DEVICE_RESET after system_reset", FIRMWARE, |vm| {
        let t = vm.trace();
        Ok(t.iter()
            .enumerate()
            .skip(before)
            .find(|(_, l)| request_nr(l) == Some(VFIO_DEVICE_RESET))
            .map(|(i, l)| (i, l.clone())))
    });
    if !ok(&reset_at.1) {
        vm.fail(&format!("VFIO_DEVICE_RESET failed: {}", reset_at.1));
    }
    let bars = vm.assigned_bars();
    vm.wait_bar_mapped(bars[1], reset_at.0 + 1);

    vm.execute("quit");
    let status = vm.wait("QEMU to exit after quit", EXIT, |vm| {
        vm.child.try_wait().map_err(|e| e.to_string())
    });
    if !status.success() {
        vm.fail(&format!("QEMU exited with {status} after quit"));
    }
    if let Err(e) = check_trace_and_stderr(&vm.trace(), &vm.stderr(), &bars) {
        vm.fail(&e);
    }
    eprintln!("qemu_e2e {name}: passed (accel={})", vm.accel);
}

/// What the finished run's trace and QEMU's stderr must show.
fn check_trace_and_stderr(trace: &[Value], stderr: &str, bars: &[Bar]) -> Result<(), String> {
    if let Some(l) = stderr
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("vfio"))
    {
        return Err(format!("QEMU printed a line about VFIO: {l}"));
    }
    // QEMU probes the ERR IRQ index, which a conventional PCI function does not have
    // (`vfio_pci_ioctl_get_irq_info`: EINVAL); every other request must succeed.
    let requests: Vec<&Value> = trace.iter().filter(|l| l.get("event").is_none()).collect();
    let err_probe =
        |l: &Value| request_nr(l) == Some(VFIO_DEVICE_GET_IRQ_INFO) && l["errno"] == EINVAL;
    if let Some(l) = requests.iter().find(|l| !ok(l) && !err_probe(l)) {
        return Err(format!("a VFIO request failed: {l}"));
    }
    if !requests.iter().any(|l| {
        request_nr(l) == Some(VFIO_GROUP_GET_DEVICE_FD) && l["args"]["name"] == BDF && ok(l)
    }) {
        return Err(format!("no successful VFIO_GROUP_GET_DEVICE_FD(\"{BDF}\")"));
    }
    let maps = maps_from(trace, 0);
    if maps.first() != Some(&(0, RAM_BYTES, VFIO_DMA_MAP_FLAG_READ_WRITE)) {
        return Err(format!(
            "the first MAP_DMA is {:x?}, not guest RAM (iova 0, 256 MiB, read-write)",
            maps.first()
        ));
    }
    if maps.len() < 2 {
        return Err("guest RAM is the only mapping: no firmware or BAR mapping".into());
    }

    let Replay {
        live,
        mapped,
        unmapped,
    } = replay(trace)?;
    let Some(still_mapped) = mapped.checked_sub(unmapped) else {
        return Err(format!(
            "UNMAP_DMA removed {unmapped:#x} bytes of {mapped:#x} mapped"
        ));
    };
    let is_bar = |iova: u64| bars.iter().any(|b| b.contains(iova));
    let live_bytes: u64 = live.values().sum();
    let live_bar_bytes: u64 = live
        .iter()
        .filter(|(&a, _)| is_bar(a))
        .map(|(_, s)| s)
        .sum();
    if live_bar_bytes < BAR2_SIZE {
        return Err(format!("the BAR mmaps were not mapped at exit: {live:x?}"));
    }

    let exit = trace
        .iter()
        .find(|l| l["event"] == "exit")
        .ok_or("no exit line in the trace")?;
    let field = |name: &str| num(&exit[name]).unwrap_or(u64::MAX);
    let got = (
        field("containers"),
        field("mappings"),
        field("mapped_bytes"),
        field("locked_pages").saturating_mul(PAGE),
        field("device_pinned_pages"),
        field("iommu_pinned_pages").saturating_mul(PAGE),
        field("iommu_reserved_pages").saturating_mul(PAGE),
    );
    // QEMU 7.2 issues no UNMAP at quit: what it mapped and did not unmap is still mapped at
    // exit; guest RAM and firmware are pinned and charged, the BAR mmaps (reserved pfns) are
    // mapped without either.
    let want = (
        1,
        live.len() as u64,
        still_mapped,
        live_bytes - live_bar_bytes,
        0,
        live_bytes - live_bar_bytes,
        live_bar_bytes,
    );
    if got != want || live_bytes != still_mapped {
        return Err(format!(
            "exit line (containers, mappings, mapped bytes, locked bytes, device-pinned pages, \
             IOMMU-pinned bytes, IOMMU-reserved bytes) \
             {got:#x?}, the trace's MAP/UNMAP say {want:#x?} (mapped {mapped:#x}, unmapped \
             {unmapped:#x}, live {live:x?}): {exit}"
        ));
    }
    let released = trace
        .iter()
        .find(|l| l["event"] == "released")
        .ok_or("no released line in the trace")?;
    if num(&released["locked_pages"]) != Some(0) || num(&released["pending_pages"]) != Some(0) {
        return Err(format!(
            "something stays charged once QEMU's files are released: {released}"
        ));
    }
    Ok(())
}

#[test]
fn qemu_realizes_the_test_device_maps_guest_ram_and_bars_resets_and_quits_clean() {
    attach_reset_quit("plain", false);
}

#[test]
fn qemu_with_intel_iommu_caching_mode_realizes_resets_and_quits_clean() {
    attach_reset_quit("viommu", true);
}
