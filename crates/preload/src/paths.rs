//! The files this library pretends exist: `/dev/vfio` with `vfio` and the configured groups,
//! and the sysfs nodes that lead from a PCI address to its group.
//!
//! Paths are resolved as the kernel's lookup would for these nodes: repeated slashes and `.`
//! components are dropped, `..` goes up one component, a trailing slash demands a directory
//! (`ENOTDIR` on a device node), and a group number is a canonical decimal (no sign, no leading
//! zero), as the kernel names `/dev/vfio/<N>` with `%d`. Inside `/dev/vfio` every name this
//! library does not serve is `ENOENT`; under `/sys` only the nodes it serves are answered and
//! everything else is left to the real file system. Relative paths are never ours.

use crate::config::Config;

/// The misc minor of `/dev/vfio/vfio` (`VFIO_MINOR`, 196) on major 10.
const VFIO_CONTAINER_DEV: (u32, u32) = (10, 196);
/// Group devices get a dynamic major; this one stands for it.
const VFIO_GROUP_MAJOR: u32 = 243;

/// A fake file system node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `/dev/vfio/vfio`.
    Container,
    /// `/dev/vfio/<N>`.
    Group(u32),
    /// `/dev/vfio`.
    VfioDir,
    /// `/sys/kernel/iommu_groups/<N>`.
    GroupDir(u32),
    /// `/sys/kernel/iommu_groups/<N>/devices`.
    GroupDevicesDir(u32),
    /// `/sys/bus/pci/devices/<BDF>` (and `/sys/kernel/iommu_groups/<N>/devices/<BDF>`).
    DeviceDir(String),
    /// `/sys/bus/pci/devices/<BDF>/iommu_group`: a symlink to the group directory.
    GroupLink(u32),
    /// `/sys/bus/pci/devices/<BDF>/driver`: a symlink to the vfio-pci driver.
    DriverLink(String),
    /// `/sys/bus/pci/devices/<BDF>/subsystem`: a symlink to the PCI bus.
    SubsystemLink(String),
    /// `/sys/kernel/iommu_groups/<N>/devices/<BDF>`: a symlink to the device.
    DeviceLink(String),
    /// `/sys/bus/pci/devices/<BDF>/<attribute>`: a regular file.
    DeviceAttr(String, Attr),
}

/// A PCI device's sysfs attribute files (`drivers/pci/pci-sysfs.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// `vendor`: `0x%04x`.
    Vendor,
    /// `device`.
    Device,
    /// `subsystem_vendor`.
    SubsystemVendor,
    /// `subsystem_device`.
    SubsystemDevice,
    /// `class`: `0x%06x`.
    Class,
    /// `revision`: `0x%02x`.
    Revision,
    /// `config`: the binary config space.
    Config,
}

impl Attr {
    /// Every attribute, with its file name.
    pub const ALL: [(Attr, &'static str); 7] = [
        (Attr::Vendor, "vendor"),
        (Attr::Device, "device"),
        (Attr::SubsystemVendor, "subsystem_vendor"),
        (Attr::SubsystemDevice, "subsystem_device"),
        (Attr::Class, "class"),
        (Attr::Revision, "revision"),
        (Attr::Config, "config"),
    ];

    fn named(name: &[u8]) -> Option<Attr> {
        Attr::ALL
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map(|(a, _)| *a)
    }
}

impl Node {
    /// True for symbolic links.
    #[must_use]
    pub fn is_link(&self) -> bool {
        matches!(
            self,
            Node::GroupLink(_) | Node::DriverLink(_) | Node::SubsystemLink(_) | Node::DeviceLink(_)
        )
    }

    /// What `readlink` returns for a link (relative, as sysfs writes them).
    #[must_use]
    pub fn link_target(&self) -> Option<String> {
        match self {
            Node::GroupLink(n) => Some(link_target(*n)),
            Node::DriverLink(_) => Some("../../../bus/pci/drivers/vfio-pci".into()),
            Node::SubsystemLink(_) => Some("../../../bus/pci".into()),
            Node::DeviceLink(bdf) => Some(format!("../../../../devices/{}/{bdf}", pci_root(bdf))),
            _ => None,
        }
    }

    /// The node a link leads to when it is in our tree.
    #[must_use]
    pub fn follow(&self) -> Option<Node> {
        match self {
            Node::GroupLink(n) => Some(Node::GroupDir(*n)),
            Node::DeviceLink(bdf) => Some(Node::DeviceDir(bdf.clone())),
            _ => None,
        }
    }

    /// True for directories.
    #[must_use]
    pub fn is_dir(&self) -> bool {
        matches!(
            self,
            Node::VfioDir | Node::GroupDir(_) | Node::GroupDevicesDir(_) | Node::DeviceDir(_)
        )
    }
}

/// The result of resolving a path that is ours.
pub type Lookup = Result<Node, i32>;

/// The path's components after `.`, `..` and repeated slashes; `None` for relative paths.
fn components(path: &[u8]) -> Option<(Vec<&[u8]>, bool)> {
    if path.first() != Some(&b'/') {
        return None;
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    // A path ending in `/`, `/.` or `/..` names a directory.
    let dir_only = path.ends_with(b"/") || path.ends_with(b"/.") || path.ends_with(b"/..");
    Some((out, dir_only))
}

/// A canonical decimal `u32` (`0`, or no leading zero), as the kernel prints group numbers.
fn canonical_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || (s.len() > 1 && s[0] == b'0') || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Resolves an absolute path: `None` if this library does not serve it, else the node or the
/// errno the kernel's lookup would give.
#[must_use]
pub fn classify(cfg: &Config, path: &[u8]) -> Option<Lookup> {
    let (comps, dir_only) = components(path)?;
    let node = match comps.as_slice() {
        [b"dev", b"vfio"] => Ok(Node::VfioDir),
        [b"dev", b"vfio", b"vfio"] => Ok(Node::Container),
        [b"dev", b"vfio", n] => match canonical_u32(n) {
            Some(n) if cfg.groups.contains_key(&n) => Ok(Node::Group(n)),
            _ => Err(libc::ENOENT),
        },
        [b"dev", b"vfio", first, _, ..] => {
            let first = *first;
            let exists = first == b"vfio"
                || canonical_u32(first).is_some_and(|n| cfg.groups.contains_key(&n));
            Err(if exists { libc::ENOTDIR } else { libc::ENOENT })
        }
        [b"sys", b"kernel", b"iommu_groups", n, rest @ ..] => {
            let n = canonical_u32(n).filter(|n| cfg.groups.contains_key(n))?;
            match rest {
                [] => Ok(Node::GroupDir(n)),
                [b"devices"] => Ok(Node::GroupDevicesDir(n)),
                [b"devices", bdf] => {
                    let bdf = std::str::from_utf8(bdf).ok()?;
                    if cfg.devices.get(bdf) != Some(&n) {
                        return None;
                    }
                    Ok(Node::DeviceLink(bdf.to_string()))
                }
                _ => return None,
            }
        }
        [b"sys", b"bus", b"pci", b"devices", bdf, rest @ ..] => {
            let bdf = std::str::from_utf8(bdf).ok()?;
            let n = *cfg.devices.get(bdf)?;
            match rest {
                [] => Ok(Node::DeviceDir(bdf.to_string())),
                [b"iommu_group"] => Ok(Node::GroupLink(n)),
                [b"driver"] => Ok(Node::DriverLink(bdf.to_string())),
                [b"subsystem"] => Ok(Node::SubsystemLink(bdf.to_string())),
                [a] => Ok(Node::DeviceAttr(bdf.to_string(), Attr::named(a)?)),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(match node {
        Ok(n) if dir_only && !n.is_dir() && !n.is_link() => Err(libc::ENOTDIR),
        other => other,
    })
}

/// A path that passes through one of our directories and leaves it with `..` (say
/// `/dev/vfio/..`): the lexically resolved path, for the real file system to answer, since the
/// real file system has no `/dev/vfio` to walk through. `None` for any other path.
#[must_use]
pub fn escape(cfg: &Config, path: &[u8]) -> Option<Vec<u8>> {
    if !path.windows(3).any(|w| w == b"/..") {
        return None;
    }
    let (comps, dir_only) = components(path)?;
    let mut out = Vec::with_capacity(path.len());
    for c in &comps {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() || dir_only {
        out.push(b'/');
    }
    // Only a path that really went through a fake directory is rewritten.
    let mut prefix = Vec::new();
    let through = path.split(|&b| b == b'/').any(|c| {
        if !prefix.is_empty() || c.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(c);
        matches!(classify(cfg, &prefix), Some(Ok(ref n)) if n.is_dir())
    });
    (through && classify(cfg, &out).is_none()).then_some(out)
}

/// Quick filter on the first bytes of a path: could it be ours?
#[must_use]
pub fn maybe_ours(prefix: &[u8]) -> bool {
    if prefix.first() != Some(&b'/') {
        return false;
    }
    // Skip the `/`, `.` and `..` a path may start with (`//dev`, `/./dev`, `/../sys`).
    let rest = &prefix[prefix
        .iter()
        .position(|&b| b != b'/' && b != b'.')
        .unwrap_or(prefix.len())..];
    let could_be = |name: &[u8]| {
        if rest.len() < name.len() {
            name.starts_with(rest)
        } else {
            rest.starts_with(name)
        }
    };
    could_be(b"dev") || could_be(b"sys")
}

/// The target `readlink` returns for a group link.
#[must_use]
pub fn link_target(n: u32) -> String {
    format!("../../../kernel/iommu_groups/{n}")
}

/// The canonical path of a node (what `realpath` returns).
#[must_use]
pub fn canonical(node: &Node) -> String {
    match node {
        Node::Container => "/dev/vfio/vfio".into(),
        Node::Group(n) => format!("/dev/vfio/{n}"),
        Node::VfioDir => "/dev/vfio".into(),
        Node::GroupDir(n) | Node::GroupLink(n) => format!("/sys/kernel/iommu_groups/{n}"),
        Node::DriverLink(_) => "/sys/bus/pci/drivers/vfio-pci".into(),
        Node::SubsystemLink(_) => "/sys/bus/pci".into(),
        Node::DeviceLink(bdf) => canonical(&Node::DeviceDir(bdf.clone())),
        Node::DeviceAttr(bdf, a) => {
            let name = Attr::ALL
                .iter()
                .find(|(x, _)| x == a)
                .map_or("", |(_, n)| n);
            format!("{}/{name}", canonical(&Node::DeviceDir(bdf.clone())))
        }
        Node::GroupDevicesDir(n) => format!("/sys/kernel/iommu_groups/{n}/devices"),
        Node::DeviceDir(bdf) => {
            let (domain, bus) = (
                bdf.get(..4).unwrap_or("0000"),
                bdf.get(5..7).unwrap_or("00"),
            );
            format!("/sys/devices/pci{domain}:{bus}/{bdf}")
        }
    }
}

/// `pci<domain>:<bus>`, the root a device hangs from in `/sys/devices`.
fn pci_root(bdf: &str) -> String {
    let (domain, bus) = (
        bdf.get(..4).unwrap_or("0000"),
        bdf.get(5..7).unwrap_or("00"),
    );
    format!("pci{domain}:{bus}")
}

/// The entries of a directory node (without `.` and `..`), with their `d_type`.
#[must_use]
pub fn entries(cfg: &Config, node: &Node) -> Vec<(String, u8)> {
    match node {
        Node::VfioDir => std::iter::once(("vfio".to_string(), libc::DT_CHR))
            .chain(cfg.groups.keys().map(|n| (n.to_string(), libc::DT_CHR)))
            .collect(),
        Node::GroupDir(_) => vec![("devices".into(), libc::DT_DIR)],
        Node::GroupDevicesDir(n) => cfg
            .devices
            .iter()
            .filter(|(_, g)| *g == n)
            .map(|(bdf, _)| (bdf.clone(), libc::DT_LNK))
            .collect(),
        Node::DeviceDir(_) => ["iommu_group", "driver", "subsystem"]
            .iter()
            .map(|n| ((*n).to_string(), libc::DT_LNK))
            .chain(
                Attr::ALL
                    .iter()
                    .map(|(_, n)| ((*n).to_string(), libc::DT_REG)),
            )
            .collect(),
        _ => Vec::new(),
    }
}

/// `(st_mode, st_rdev major, minor)` of a node; `follow` resolves the group link.
#[must_use]
pub fn mode_of(node: &Node, follow: bool) -> (u32, u32, u32) {
    match node {
        Node::Container => (
            libc::S_IFCHR | 0o666,
            VFIO_CONTAINER_DEV.0,
            VFIO_CONTAINER_DEV.1,
        ),
        Node::Group(n) => (libc::S_IFCHR | 0o600, VFIO_GROUP_MAJOR, *n),
        n if n.is_link() && !follow => (libc::S_IFLNK | 0o777, 0, 0),
        Node::DeviceAttr(_, Attr::Config) => (libc::S_IFREG | 0o644, 0, 0),
        Node::DeviceAttr(..) => (libc::S_IFREG | 0o444, 0, 0),
        _ => (libc::S_IFDIR | 0o755, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_lookup(&|k| match k {
            "TYPE1_GROUPS" => Some("7:iommu,0:iommu".into()),
            "TYPE1_DEVICES" => Some("0000:00:04.0@7".into()),
            _ => None,
        })
    }

    fn c(p: &str) -> Option<Lookup> {
        classify(&cfg(), p.as_bytes())
    }

    #[test]
    fn device_nodes_resolve_like_the_kernels_lookup() {
        assert_eq!(c("/dev/vfio/vfio"), Some(Ok(Node::Container)));
        assert_eq!(c("/dev//vfio/./vfio"), Some(Ok(Node::Container)));
        assert_eq!(c("/dev/vfio/../vfio/7"), Some(Ok(Node::Group(7))));
        assert_eq!(c("/dev/vfio/0"), Some(Ok(Node::Group(0))));
        assert_eq!(c("/dev/vfio"), Some(Ok(Node::VfioDir)));
        assert_eq!(c("/dev/vfio/"), Some(Ok(Node::VfioDir)));
        assert_eq!(c("/dev/null"), None);
        assert_eq!(c("dev/vfio/vfio"), None);
    }

    #[test]
    fn group_numbers_are_canonical_decimals() {
        for p in [
            "/dev/vfio/007",
            "/dev/vfio/+7",
            "/dev/vfio/ 7",
            "/dev/vfio/8",
            "/dev/vfio/7x",
        ] {
            assert_eq!(c(p), Some(Err(libc::ENOENT)), "{p}");
        }
    }

    #[test]
    fn trailing_slash_on_a_device_node_is_enotdir() {
        assert_eq!(c("/dev/vfio/vfio/"), Some(Err(libc::ENOTDIR)));
        assert_eq!(c("/dev/vfio/7/."), Some(Err(libc::ENOTDIR)));
        assert_eq!(c("/dev/vfio/vfio/x"), Some(Err(libc::ENOTDIR)));
        assert_eq!(c("/dev/vfio/9/x"), Some(Err(libc::ENOENT)));
    }

    #[test]
    fn sysfs_nodes() {
        assert_eq!(
            c("/sys/bus/pci/devices/0000:00:04.0/iommu_group"),
            Some(Ok(Node::GroupLink(7)))
        );
        assert_eq!(c("/sys/bus/pci/devices/0000:00:05.0/iommu_group"), None);
        assert_eq!(c("/sys/kernel/iommu_groups/7"), Some(Ok(Node::GroupDir(7))));
        assert_eq!(
            c("/sys/kernel/iommu_groups/7/devices/0000:00:04.0"),
            Some(Ok(Node::DeviceLink("0000:00:04.0".into())))
        );
        assert_eq!(
            c("/sys/bus/pci/devices/0000:00:04.0/vendor"),
            Some(Ok(Node::DeviceAttr("0000:00:04.0".into(), Attr::Vendor)))
        );
        assert_eq!(c("/sys/bus/pci/devices/0000:00:04.0/resource"), None);
        assert_eq!(
            Node::DeviceLink("0000:00:04.0".into())
                .link_target()
                .as_deref(),
            Some("../../../../devices/pci0000:00/0000:00:04.0")
        );
        assert_eq!(c("/sys/kernel/iommu_groups/7/type"), None);
        assert_eq!(escape(&cfg(), b"/dev/vfio/.."), Some(b"/dev/".to_vec()));
        assert_eq!(
            escape(&cfg(), b"/dev/vfio/../null"),
            Some(b"/dev/null".to_vec())
        );
        assert_eq!(escape(&cfg(), b"/dev/../dev/null"), None);
        assert_eq!(canonical(&Node::GroupLink(7)), "/sys/kernel/iommu_groups/7");
        assert_eq!(link_target(7), "../../../kernel/iommu_groups/7");
        let e = entries(&cfg(), &Node::VfioDir);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["vfio", "0", "7"]);
    }
}
