//! The files this library pretends exist: `/dev/vfio/vfio`, `/dev/vfio/<N>` for configured
//! groups, and the sysfs nodes that lead from a PCI address to its group.

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
    /// A directory: `/dev/vfio`, `/sys/bus/pci/devices/<BDF>`, `/sys/kernel/iommu_groups/<N>`.
    Dir,
    /// `/sys/bus/pci/devices/<BDF>/iommu_group`: a symlink to the group directory.
    GroupLink(u32),
}

/// Classifies an absolute path; `None` for anything this library does not serve.
pub fn classify(cfg: &Config, path: &str) -> Option<Node> {
    let path = path.trim_end_matches('/');
    if path == "/dev/vfio" {
        return Some(Node::Dir);
    }
    if let Some(rest) = path.strip_prefix("/dev/vfio/") {
        if rest == "vfio" {
            return Some(Node::Container);
        }
        let n: u32 = rest.parse().ok()?;
        return cfg.groups.contains_key(&n).then_some(Node::Group(n));
    }
    if let Some(rest) = path.strip_prefix("/sys/kernel/iommu_groups/") {
        let n: u32 = rest.parse().ok()?;
        return cfg.groups.contains_key(&n).then_some(Node::Dir);
    }
    if let Some(rest) = path.strip_prefix("/sys/bus/pci/devices/") {
        let (bdf, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let n = *cfg.devices.get(bdf)?;
        return match tail {
            "" => Some(Node::Dir),
            "iommu_group" => Some(Node::GroupLink(n)),
            _ => None,
        };
    }
    None
}

/// Quick filter: could this path be ours? (Avoids touching the configuration otherwise.)
pub fn maybe_ours(path: &[u8]) -> bool {
    path.starts_with(b"/dev/vfio") || path.starts_with(b"/sys/")
}

/// The target `readlink` returns for a group link.
pub fn link_target(n: u32) -> String {
    format!("../../../kernel/iommu_groups/{n}")
}

/// What `realpath` resolves a node's path to.
pub fn resolve(cfg: &Config, path: &str) -> Option<String> {
    match classify(cfg, path)? {
        Node::GroupLink(n) => Some(format!("/sys/kernel/iommu_groups/{n}")),
        Node::Dir => {
            let p = path.trim_end_matches('/');
            match p.strip_prefix("/sys/bus/pci/devices/") {
                Some(bdf) => Some(format!(
                    "/sys/devices/pci{}:{}/{bdf}",
                    &bdf[..4],
                    &bdf[5..7]
                )),
                None => Some(p.to_string()),
            }
        }
        Node::Container | Node::Group(_) => Some(path.to_string()),
    }
}

/// `(st_mode, st_rdev major, minor)` of a node; `follow` resolves the group link.
pub fn mode_of(node: &Node, follow: bool) -> (u32, u32, u32) {
    match node {
        Node::Container => (
            libc::S_IFCHR | 0o666,
            VFIO_CONTAINER_DEV.0,
            VFIO_CONTAINER_DEV.1,
        ),
        Node::Group(n) => (libc::S_IFCHR | 0o600, VFIO_GROUP_MAJOR, *n),
        Node::Dir => (libc::S_IFDIR | 0o755, 0, 0),
        Node::GroupLink(_) if follow => (libc::S_IFDIR | 0o755, 0, 0),
        Node::GroupLink(_) => (libc::S_IFLNK | 0o777, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_lookup(&|k| match k {
            "TYPE1_GROUPS" => Some("7:iommu".into()),
            "TYPE1_DEVICES" => Some("0000:00:04.0@7".into()),
            _ => None,
        })
    }

    #[test]
    fn classification() {
        let c = cfg();
        assert_eq!(classify(&c, "/dev/vfio/vfio"), Some(Node::Container));
        assert_eq!(classify(&c, "/dev/vfio/7"), Some(Node::Group(7)));
        assert_eq!(classify(&c, "/dev/vfio/8"), None);
        assert_eq!(classify(&c, "/dev/vfio/"), Some(Node::Dir));
        assert_eq!(
            classify(&c, "/sys/bus/pci/devices/0000:00:04.0/iommu_group"),
            Some(Node::GroupLink(7))
        );
        assert_eq!(
            classify(&c, "/sys/bus/pci/devices/0000:00:05.0/iommu_group"),
            None
        );
        assert_eq!(classify(&c, "/sys/kernel/iommu_groups/7"), Some(Node::Dir));
        assert_eq!(
            resolve(&c, "/sys/bus/pci/devices/0000:00:04.0/iommu_group").as_deref(),
            Some("/sys/kernel/iommu_groups/7")
        );
        assert_eq!(link_target(7), "../../../kernel/iommu_groups/7");
    }
}
