//! Devices behind the fake groups: the emulated PCI functions of `vfio-device`, opened through
//! `VFIO_GROUP_GET_DEVICE_FD` as vfio-pci presents them (`drivers/vfio/group.c`,
//! `vfio_main.c`, v6.18).
//!
//! - A device is created, attached to its group's container for DMA, when its first fd is
//!   opened (the kernel's `vfio_df_open` → `open_device`, which resets the function), and
//!   released when its last fd closes. Further `GET_DEVICE_FD` calls share it.
//! - Every device fd is a duplicate of the device's memfd (`type1-vfio-device`), so `mmap` of
//!   an mmap-able BAR maps the very pages the device uses.
//! - An open device keeps its group in use: `VFIO_GROUP_UNSET_CONTAINER` is `EBUSY` and the
//!   group stays attached until the device closes (the device file holds the group file, as
//!   `vfio_device_open_file` does).
//!
//! Concurrency: the group's device map is one mutex, taken with signals blocked, never while a
//! device runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use vfio_device::{Dma, Location};

use crate::config::Config;
use crate::objects::{ContainerFile, DeviceHandle, GroupFile};

/// `(segment, bus, dev, fn)` of a `DDDD:BB:DD.F` name.
fn parse_bdf(name: &str) -> Option<(u16, u8, u8, u8)> {
    let b = name.as_bytes();
    if b.len() != 12 || b[4] != b':' || b[7] != b':' || b[10] != b'.' {
        return None;
    }
    let seg = u16::from_str_radix(&name[0..4], 16).ok()?;
    let bus = u8::from_str_radix(&name[5..7], 16).ok()?;
    let dev = u8::from_str_radix(&name[8..10], 16).ok()?;
    let func = u8::from_str_radix(&name[11..12], 16).ok()?;
    (dev < 32 && func < 8).then_some((seg, bus, dev, func))
}

/// The location of a configured device.
pub fn location(name: &str, group: u32) -> Option<Location> {
    let (segment, bus, dev, func) = parse_bdf(name)?;
    Some(Location {
        group,
        segment,
        bus,
        devfn: (dev << 3) | func,
    })
}

/// `vfio_group_ioctl_get_device_fd` after the name was read: the device named `name` in group
/// `g`, opened (created on first open). Errors: `ENODEV` for a name not in the group (the
/// kernel's `vfio_device_get_from_name`), `EINVAL` when the group has no container
/// (`vfio_df_group_open`), or the device's own errno.
pub fn open(
    cfg: &Config,
    g: &Arc<GroupFile>,
    container: Option<Arc<ContainerFile>>,
    buf: &str,
) -> Result<Arc<DeviceHandle>, i32> {
    // `vfio_device_get_from_name`: each device of the group matches the string in turn.
    let mut found = None;
    for (name, _) in cfg.devices.iter().filter(|(_, &n)| n == g.spec.id.0) {
        if matches_name(name, buf)? {
            found = Some(name.clone());
            break;
        }
    }
    let name = found.ok_or(libc::ENODEV)?;
    let name = name.as_str();
    // `vfio_df_group_open`: a group without a container is EINVAL; `vfio_group_use_container`:
    // a container without an IOMMU driver too.
    let container = container.ok_or(libc::EINVAL)?;
    if !container.c.has_iommu() {
        return Err(libc::EINVAL);
    }
    let mut open = g.devices.map();
    if let Some(h) = open.get(name).and_then(Weak::upgrade) {
        return Ok(h);
    }
    let loc = location(name, g.spec.id.0).ok_or(libc::ENODEV)?;
    let dma = Dma::attach(&container.c, g.spec.id).map_err(|e| e.errno())?;
    let v1 = cfg.device_options.get(name).is_some_and(|o| o.v1_migration);
    let migration = vfio_device::migration::MigrationSpec::full(v1);
    let dev = vfio_device::testdev::create_with(loc, dma, migration).map_err(|e| e.errno())?;
    let h = Arc::new(DeviceHandle {
        dev,
        group: g.clone(),
        container,
        name: name.to_string(),
    });
    open.insert(name.to_string(), Arc::downgrade(&h));
    if let Some(opts) = cfg.device_options.get(name) {
        autostart_writer(&h, opts);
    }
    live()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.to_string(), Arc::downgrade(&h));
    Ok(h)
}

/// How often the autostart watcher looks at the command register and the mappings.
const AUTOSTART_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// `writer=BASE+SIZE`: a thread (all signals blocked) that waits until the program has set
/// the command register's bus-master bit and the container maps the whole window writable,
/// then programs the test device's writer through BAR0 as a driver would (window, rate, seed,
/// run), and ends. It holds the device weakly and ends when the device is closed first. If
/// the device is in a migration state without DMA by then, the writer starts when the device
/// runs again, as for a driver's write.
fn autostart_writer(h: &Arc<DeviceHandle>, opts: &crate::config::DeviceOptions) {
    let Some(win) = opts.writer else {
        return;
    };
    let rate = opts
        .writer_rate
        .unwrap_or(crate::config::DEFAULT_WRITER_RATE);
    let seed = opts
        .writer_seed
        .unwrap_or(crate::config::DEFAULT_WRITER_SEED);
    let weak = Arc::downgrade(h);
    let spawned = vfio_device::thread::spawn("type1-writer-autostart", move || loop {
        std::thread::sleep(AUTOSTART_POLL);
        let Some(h) = weak.upgrade() else {
            return;
        };
        let mut cmd = [0u8; 2];
        let master = h
            .dev
            .config_read(vfio_device::pci::regs::COMMAND as u64, &mut cmd)
            == Ok(2)
            && u16::from_le_bytes(cmd) & vfio_device::pci::regs::COMMAND_MASTER != 0;
        if !master || !window_mapped(&h.container, win.base, win.size) {
            continue;
        }
        use vfio_device::testdev::reg;
        let bar0 = vfio_device::RegionIndex::bar(0).offset();
        let writes: [(u64, &[u8]); 5] = [
            (reg::WRITER_BASE, &win.base.to_le_bytes()),
            (reg::WRITER_SIZE, &win.size.to_le_bytes()),
            (reg::WRITER_RATE, &rate.to_le_bytes()),
            (reg::WRITER_SEED, &seed.to_le_bytes()),
            (reg::WRITER_CTRL, &1u32.to_le_bytes()),
        ];
        for (off, data) in writes {
            if h.dev.write(bar0 + off, data).is_err() {
                eprintln!(
                    "type1: {}: could not start the writer (BAR0 {off:#x})",
                    h.name
                );
                return;
            }
        }
        return;
    });
    if spawned.is_err() {
        eprintln!(
            "type1: {}: could not start the writer's watcher thread",
            h.name
        );
    }
}

/// Whether the container's mappings cover `[base, base + size)` with device write access.
fn window_mapped(c: &ContainerFile, base: u64, size: u64) -> bool {
    let end = base.saturating_add(size);
    let mut at = base;
    for m in c.c.mappings() {
        let (start, end_m) = (m.iova.raw(), m.iova.raw().saturating_add(m.size));
        if start <= at && at < end_m && m.perm.contains(type1::Perm::WRITE) {
            at = end_m;
            if at >= end {
                return true;
            }
        }
    }
    false
}

/// Every open device by name (for sysfs, which shows the function as it is now).
fn live() -> &'static Mutex<HashMap<String, Weak<DeviceHandle>>> {
    static LIVE: std::sync::OnceLock<Mutex<HashMap<String, Weak<DeviceHandle>>>> =
        std::sync::OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// `vfio_pci_core_match` (v6.18): the PCI name, then nothing, or a space and then only spaces
/// and at most one `vf_token=<UUID>` option. This function is no VF and has no VFs, so a token
/// is refused (`vfio_pci_validate_vf_token`: EINVAL); so is any other option.
fn matches_name(name: &str, buf: &str) -> Result<bool, i32> {
    let Some(rest) = buf.strip_prefix(name) else {
        return Ok(false);
    };
    if rest.is_empty() {
        return Ok(true);
    }
    if !rest.starts_with(' ') {
        return Ok(false);
    }
    let mut rest = rest;
    let mut token = false;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        let Some(t) = rest.strip_prefix("vf_token=").filter(|_| !token) else {
            return Err(libc::EINVAL);
        };
        // UUID_STRING_LEN: 36 characters, then parsed (uuid_parse: EINVAL when malformed).
        let uuid = t.get(..36).ok_or(libc::EINVAL)?;
        let ok = uuid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
        if !ok {
            return Err(libc::EINVAL);
        }
        token = true;
        rest = &t[36..];
    }
    // A token for a function that is neither a VF nor a PF with VFs.
    if token {
        return Err(libc::EINVAL);
    }
    Ok(true)
}

/// The power-on config space of a configured device (for sysfs `config`), from a device that
/// is never opened: the identity and capabilities are the model's.
pub fn power_on_config(name: &str, group: u32) -> Option<Vec<u8>> {
    let dev = vfio_device::testdev::create(location(name, group)?, Dma::none()).ok()?;
    let mut buf = vec![0u8; usize::try_from(dev.regions().config_size()).ok()?];
    let n = dev.config_read(0, &mut buf).ok()?;
    buf.truncate(n);
    dev.release();
    Some(buf)
}

/// The contents of a sysfs attribute file of a configured device (`drivers/pci/pci-sysfs.c`
/// formats).
pub fn attr_contents(name: &str, group: u32, attr: crate::paths::Attr) -> Option<Vec<u8>> {
    use crate::paths::Attr;
    let id = vfio_device::testdev::function().identity;
    Some(
        match attr {
            Attr::Vendor => format!("0x{:04x}\n", id.vendor_id),
            Attr::Device => format!("0x{:04x}\n", id.device_id),
            Attr::SubsystemVendor => format!("0x{:04x}\n", id.subsystem_vendor_id),
            Attr::SubsystemDevice => format!("0x{:04x}\n", id.subsystem_id),
            Attr::Class => format!("0x{:06x}\n", id.class_code),
            Attr::Revision => format!("0x{:02x}\n", id.revision),
            Attr::Config => {
                // sysfs reads the function itself: an open device's current config space.
                let open = live()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(name)
                    .and_then(Weak::upgrade);
                return match open {
                    Some(h) => {
                        let size = usize::try_from(h.dev.regions().config_size()).ok()?;
                        let mut buf = vec![0u8; size];
                        let n = h.dev.config_read(0, &mut buf).ok()?;
                        buf.truncate(n);
                        Some(buf)
                    }
                    None => power_on_config(name, group),
                };
            }
        }
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_match_as_vfio_pci_core_match_does() {
        let n = "0000:00:1f.0";
        assert_eq!(matches_name(n, "0000:00:1f.0"), Ok(true));
        assert_eq!(matches_name(n, "0000:00:1f.0   "), Ok(true));
        assert_eq!(matches_name(n, "0000:00:1f.00"), Ok(false));
        assert_eq!(matches_name(n, "0000:00:1f"), Ok(false));
        assert_eq!(matches_name(n, "0000:00:1f.0 x"), Err(libc::EINVAL));
        let tok = "0000:00:1f.0 vf_token=2ab74924-c335-45f4-9b16-8569e5b08258";
        assert_eq!(matches_name(n, tok), Err(libc::EINVAL));
        assert_eq!(
            matches_name(n, "0000:00:1f.0 vf_token=zz"),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn pci_names_parse_like_the_kernels_dev_name() {
        assert_eq!(parse_bdf("0000:00:1f.0"), Some((0, 0, 0x1f, 0)));
        assert_eq!(parse_bdf("0001:3a:02.7"), Some((1, 0x3a, 2, 7)));
        assert_eq!(parse_bdf("0000:00:20.0"), None);
        assert_eq!(parse_bdf("0000:00:1f.8"), None);
        assert_eq!(parse_bdf("0000:00:1f"), None);
        let l = location("0000:00:1f.3", 5).unwrap();
        assert_eq!((l.group, l.bus, l.devfn), (5, 0, (0x1f << 3) | 3));
    }
}
