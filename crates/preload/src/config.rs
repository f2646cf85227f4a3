//! Configuration from the environment, read once when the library first intercepts a call.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TYPE1_GROUPS` | groups that exist: `N:iommu,M:emulated` | none (only `/dev/vfio/vfio`) |
//! | `TYPE1_DEVICES` | PCI devices and their group: `0000:00:04.0@N,...` | none |
//! | `TYPE1_DMA_ENTRY_LIMIT` | `dma_entry_limit` | 65535 |
//! | `TYPE1_MEMLOCK` | locked-memory limit in bytes, or `unlimited` | RLIMIT_MEMLOCK |
//! | `TYPE1_DIRTY_MODE` | `kernel-exact` or `precise` | kernel-exact |
//! | `TYPE1_INVALIDATION` | `strict` or `lazy` | strict |
//! | `TYPE1_PGSIZES` | IOMMU page sizes, `4K,2M,1G` | 4K,2M,1G |
//! | `TYPE1_IOVA_BITS` | aperture width in bits | 48 |
//! | `TYPE1_RESERVED` | reserved IOVA ranges `0xfee00000-0xfeefffff,...` or `none` | the x86 MSI window |
//! | `TYPE1_ALLOW_UNSAFE_INTERRUPTS` | `1` to accept groups without isolated MSI | 0 |
//! | `TYPE1_TRACE` | file to append JSON lines to, one per intercepted ioctl | none |
//!
//! A malformed value is reported once on stderr and replaced by its default: the host program
//! is never aborted.

use std::collections::BTreeMap;

use type1::group::{Aperture, IommuDesc, ReservedRegion, ResvKind};
use type1::{DirtyMode, GroupKind, GroupSpec};

/// A group's kind as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// IOMMU-backed, with the configured IOMMU description.
    Iommu,
    /// Emulated (mdev-style).
    Emulated,
}

/// Everything the environment says.
#[derive(Debug, Clone)]
pub struct Config {
    /// Group number → kind.
    pub groups: BTreeMap<u32, Kind>,
    /// PCI address → group number.
    pub devices: BTreeMap<String, u32>,
    /// `dma_entry_limit`.
    pub dma_entry_limit: u32,
    /// Locked-memory limit in bytes (`None`: unlimited).
    pub memlock: Option<u64>,
    /// Dirty mode.
    pub dirty_mode: DirtyMode,
    /// Lazy IOTLB invalidation.
    pub lazy: bool,
    /// IOMMU page sizes.
    pub pgsizes: u64,
    /// Aperture bits.
    pub iova_bits: u32,
    /// Reserved IOVA ranges, inclusive.
    pub reserved: Vec<(u64, u64)>,
    /// `allow_unsafe_interrupts`.
    pub allow_unsafe_interrupts: bool,
    /// Trace file.
    pub trace: Option<String>,
    /// Problems found while parsing (reported once).
    pub warnings: Vec<String>,
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `4K`, `2M`, `1G`, or a plain number.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    parse_u64(num)?.checked_mul(1 << shift)
}

impl Config {
    /// Reads the configuration through `get` (the environment in production).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Config {
        let mut c = Config {
            groups: BTreeMap::new(),
            devices: BTreeMap::new(),
            dma_entry_limit: type1::DEFAULT_DMA_ENTRY_LIMIT,
            memlock: type1::mm::process_memlock_limit(),
            dirty_mode: DirtyMode::KernelExact,
            lazy: false,
            pgsizes: (1 << 12) | (1 << 21) | (1 << 30),
            iova_bits: 48,
            reserved: vec![(0xfee0_0000, 0xfeef_ffff)],
            allow_unsafe_interrupts: false,
            trace: None,
            warnings: Vec::new(),
        };
        if let Some(v) = get("TYPE1_GROUPS") {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let parsed = item.split_once(':').and_then(|(n, k)| {
                    let kind = match k.trim() {
                        "iommu" => Kind::Iommu,
                        "emulated" => Kind::Emulated,
                        _ => return None,
                    };
                    Some((n.trim().parse::<u32>().ok()?, kind))
                });
                match parsed {
                    Some((n, k)) => {
                        c.groups.insert(n, k);
                    }
                    None => c.warnings.push(c_warn("TYPE1_GROUPS", item)),
                }
            }
        }
        if let Some(v) = get("TYPE1_DEVICES") {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match item
                    .rsplit_once('@')
                    .and_then(|(b, n)| Some((b, n.parse::<u32>().ok()?)))
                {
                    Some((bdf, n)) if is_bdf(bdf) => {
                        c.devices.insert(bdf.to_string(), n);
                    }
                    _ => c.warnings.push(c_warn("TYPE1_DEVICES", item)),
                }
            }
        }
        if let Some(v) = get("TYPE1_DMA_ENTRY_LIMIT") {
            match v.trim().parse() {
                Ok(n) => c.dma_entry_limit = n,
                Err(_) => c.warnings.push(c_warn("TYPE1_DMA_ENTRY_LIMIT", &v)),
            }
        }
        if let Some(v) = get("TYPE1_MEMLOCK") {
            if v.trim() == "unlimited" {
                c.memlock = None;
            } else {
                match parse_size(&v) {
                    Some(n) => c.memlock = Some(n),
                    None => c.warnings.push(c_warn("TYPE1_MEMLOCK", &v)),
                }
            }
        }
        if let Some(v) = get("TYPE1_DIRTY_MODE") {
            match v.trim() {
                "kernel-exact" => c.dirty_mode = DirtyMode::KernelExact,
                "precise" => c.dirty_mode = DirtyMode::Precise,
                _ => c.warnings.push(c_warn("TYPE1_DIRTY_MODE", &v)),
            }
        }
        if let Some(v) = get("TYPE1_INVALIDATION") {
            match v.trim() {
                "strict" => c.lazy = false,
                "lazy" => c.lazy = true,
                _ => c.warnings.push(c_warn("TYPE1_INVALIDATION", &v)),
            }
        }
        if let Some(v) = get("TYPE1_PGSIZES") {
            let sizes: Option<Vec<u64>> = v.split(',').map(parse_size).collect();
            match sizes {
                Some(s) if !s.is_empty() && s.iter().all(|x| x.is_power_of_two()) => {
                    c.pgsizes = s.iter().fold(0, |a, b| a | b);
                }
                _ => c.warnings.push(c_warn("TYPE1_PGSIZES", &v)),
            }
        }
        if let Some(v) = get("TYPE1_IOVA_BITS") {
            match v.trim().parse::<u32>() {
                Ok(n) if (32..=52).contains(&n) => c.iova_bits = n,
                _ => c.warnings.push(c_warn("TYPE1_IOVA_BITS", &v)),
            }
        }
        if let Some(v) = get("TYPE1_RESERVED") {
            if v.trim() == "none" {
                c.reserved.clear();
            } else {
                let ranges: Option<Vec<(u64, u64)>> = v
                    .split(',')
                    .map(|r| {
                        let (a, b) = r.split_once('-')?;
                        let (a, b) = (parse_u64(a)?, parse_u64(b)?);
                        (a <= b).then_some((a, b))
                    })
                    .collect();
                match ranges {
                    Some(r) => c.reserved = r,
                    None => c.warnings.push(c_warn("TYPE1_RESERVED", &v)),
                }
            }
        }
        if let Some(v) = get("TYPE1_ALLOW_UNSAFE_INTERRUPTS") {
            c.allow_unsafe_interrupts = matches!(v.trim(), "1" | "true" | "yes");
        }
        c.trace = get("TYPE1_TRACE").filter(|s| !s.is_empty());
        c
    }

    /// The group spec for group `n`, if it exists.
    pub fn group_spec(&self, n: u32) -> Option<GroupSpec> {
        let kind = match self.groups.get(&n)? {
            Kind::Emulated => GroupKind::Emulated,
            Kind::Iommu => GroupKind::Iommu(self.iommu_desc()),
        };
        Some(GroupSpec {
            id: type1::GroupId(n),
            kind,
        })
    }

    /// The IOMMU description every IOMMU-backed group gets.
    pub fn iommu_desc(&self) -> IommuDesc {
        let mut d = IommuDesc::x86_default();
        d.table.pgsize_bitmap = self.pgsizes;
        d.table.ias = self.iova_bits.min(48);
        d.aperture = Aperture {
            start: 0,
            end: (1u64 << self.iova_bits) - 1,
        };
        d.reserved = self
            .reserved
            .iter()
            .map(|&(s, e)| ReservedRegion {
                start: s,
                len: e - s + 1,
                kind: ResvKind::Msi,
            })
            .collect();
        d
    }
}

fn c_warn(name: &str, v: &str) -> String {
    format!("type1-preload: ignoring malformed {name}={v:?}")
}

/// `DDDD:BB:DD.F`.
pub fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, ch)| matches!(i, 4 | 7 | 10) || ch.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_lookup(&|k| vars.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()))
    }

    #[test]
    fn parses_groups_devices_and_limits() {
        let c = cfg(&[
            ("TYPE1_GROUPS", "7:iommu, 8:emulated"),
            ("TYPE1_DEVICES", "0000:00:04.0@7"),
            ("TYPE1_MEMLOCK", "64M"),
            ("TYPE1_PGSIZES", "4K,2M"),
            ("TYPE1_RESERVED", "0x1000-0x1fff"),
        ]);
        assert_eq!(c.groups.get(&7), Some(&Kind::Iommu));
        assert_eq!(c.groups.get(&8), Some(&Kind::Emulated));
        assert_eq!(c.devices.get("0000:00:04.0"), Some(&7));
        assert_eq!(c.memlock, Some(64 << 20));
        assert_eq!(c.pgsizes, (1 << 12) | (1 << 21));
        assert_eq!(c.reserved, vec![(0x1000, 0x1fff)]);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn malformed_values_warn_and_keep_defaults() {
        let c = cfg(&[
            ("TYPE1_GROUPS", "x:iommu,3:weird"),
            ("TYPE1_DEVICES", "pci@1"),
            ("TYPE1_IOVA_BITS", "99"),
            ("TYPE1_DIRTY_MODE", "psychic"),
        ]);
        assert!(c.groups.is_empty());
        assert_eq!(c.iova_bits, 48);
        assert_eq!(c.warnings.len(), 5);
    }
}
