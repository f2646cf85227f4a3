//! The drop-in's configuration from the environment, read once when `libtype1_preload.so` first
//! intercepts a call.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TYPE1_GROUPS` | groups that exist: `N:iommu,M:emulated` | none (only `/dev/vfio/vfio`) |
//! | `TYPE1_DEVICES` | PCI devices, their group and options: `0000:00:04.0@N[,model=testdev][,migration=v1][,writer=BASE+SIZE[,writer-rate=N][,writer-seed=N]],...` (each a device in the group: see [`parse_device_option`]) | none |
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
//! Each variable has one parser here (`parse_*`, returning a message on a bad value), used both
//! by [`Config::from_lookup`] and by `type1 run`, which refuses a bad option before it starts
//! the program. Set by hand, a malformed value is reported once on stderr and replaced by its
//! default: the host program is never aborted.

#![warn(missing_docs)]

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
    /// PCI address → its options.
    pub device_options: BTreeMap<String, DeviceOptions>,
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

/// `N:iommu` or `N:emulated` (one item of `TYPE1_GROUPS` / `--group`).
///
/// # Errors
/// A message naming what is wrong with `s`.
pub fn parse_group(s: &str) -> Result<(u32, Kind), String> {
    let (n, k) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected N:iommu or N:emulated"))?;
    let kind = match k.trim() {
        "iommu" => Kind::Iommu,
        "emulated" => Kind::Emulated,
        _ => return Err(format!("{s:?}: expected N:iommu or N:emulated")),
    };
    let n = parse_decimal(n.trim())
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{s:?}: the group number must be a decimal u32"))?;
    Ok((n, kind))
}

/// What a device's options chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceOptions {
    /// `migration=v1`: also offer the deprecated v1 migration region (QEMU 5.2–7.2 with
    /// `x-enable-migration=on`); the v2 migration feature is always offered.
    pub v1_migration: bool,
    /// `writer=BASE+SIZE`: start the test device's autonomous writer on this IOVA window once
    /// the program has enabled bus mastering and mapped the whole window (for VMMs whose guest
    /// has no driver for the device).
    pub writer: Option<WriterWindow>,
    /// `writer-rate=N`: the autostarted writer's pages per second ([`DEFAULT_WRITER_RATE`]
    /// when not given; 0 is refused: an unthrottled writer would take a core).
    pub writer_rate: Option<u32>,
    /// `writer-seed=N`: the autostarted writer's seed ([`DEFAULT_WRITER_SEED`] when not given).
    pub writer_seed: Option<u64>,
}

/// The IOVA window of an autostarted writer: page aligned, whole pages, not empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterWindow {
    /// First IOVA.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Pages per second of an autostarted writer without `writer-rate`.
pub const DEFAULT_WRITER_RATE: u32 = 1000;
/// Seed of an autostarted writer without `writer-seed`.
pub const DEFAULT_WRITER_SEED: u64 = 1;

/// `BASE+SIZE` of `writer=`: hex (`0x`) or decimal, 4 KiB aligned, not empty, not wrapping.
fn parse_writer_window(v: &str) -> Result<WriterWindow, String> {
    let bad = || format!("writer={v:?}: expected BASE+SIZE, e.g. writer=0x1000000+0x400000");
    let (b, s) = v.split_once('+').ok_or_else(bad)?;
    let num = |t: &str| parse_number(t).map_err(|e| format!("{}: {e}", bad()));
    let (base, size) = (num(b)?, num(s)?);
    if size == 0 || base % 4096 != 0 || size % 4096 != 0 {
        return Err(format!(
            "writer={v:?}: the window must be 4 KiB aligned whole pages, not empty"
        ));
    }
    if base.checked_add(size).is_none() {
        return Err(format!("writer={v:?}: the window wraps the IOVA space"));
    }
    Ok(WriterWindow { base, size })
}

/// Applies one device option after `BDF@N` to `opts`:
/// - `model=testdev`: the built-in DMA test device (`vfio_device::testdev`), the default and
///   only model today;
/// - `migration=v2` (the default: the v2 feature only) or `migration=v1` (also the v1 region);
/// - `writer=BASE+SIZE` (IOVA window, hex or decimal, 4 KiB aligned), `writer-rate=N` (pages
///   per second, 1 or more), `writer-seed=N`: the drop-in starts the test device's autonomous
///   writer itself (as a driver would by programming BAR0 0xa0–0xb8) once the program has set
///   the command register's bus-master bit and the container maps the whole window, so a VMM
///   whose guest has no driver for the device still sees it write guest RAM.
///
/// # Errors
/// A message naming the unknown option or value.
pub fn parse_device_option(o: &str, opts: &mut DeviceOptions) -> Result<(), String> {
    match o.trim().split_once('=') {
        Some(("writer", v)) => {
            opts.writer = Some(parse_writer_window(v)?);
            Ok(())
        }
        Some(("writer-rate", v)) => {
            let r = parse_decimal(v.trim())
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    format!("writer-rate={v:?}: expected pages per second, 1 or more")
                })?;
            opts.writer_rate = Some(r);
            Ok(())
        }
        Some(("writer-seed", v)) => {
            let n = parse_number(v).map_err(|e| format!("writer-seed={v:?}: {e}"))?;
            opts.writer_seed = Some(n);
            Ok(())
        }
        Some(("model", "testdev")) => Ok(()),
        Some(("model", m)) => Err(format!("unknown device model {m:?} (models: testdev)")),
        Some(("migration", "v1")) => {
            opts.v1_migration = true;
            Ok(())
        }
        Some(("migration", "v2")) => {
            opts.v1_migration = false;
            Ok(())
        }
        Some(("migration", m)) => Err(format!("unknown migration {m:?} (v1 or v2)")),
        _ => Err(format!(
            "unknown device option {o:?} (options: model=testdev, migration=v1|v2, \
             writer=BASE+SIZE, writer-rate=N, writer-seed=N)"
        )),
    }
}

/// `DDDD:BB:DD.F@N[,key=value...]` (one `--device`): a device at that PCI address in group N,
/// with options ([`parse_device_option`]).
///
/// # Errors
/// A message naming what is wrong with `s`.
pub fn parse_device(s: &str) -> Result<(String, u32), String> {
    parse_device_with(s, &mut DeviceOptions::default())
}

/// [`parse_device`], also returning the options in `opts`.
///
/// # Errors
/// A message naming what is wrong with `s`.
pub fn parse_device_with(s: &str, opts: &mut DeviceOptions) -> Result<(String, u32), String> {
    let mut parts = s.split(',');
    let first = parts.next().unwrap_or_default();
    for o in parts {
        parse_device_option(o, opts)?;
    }
    let s = first;
    let bad = || format!("{s:?}: expected a PCI address and a group, e.g. 0000:00:04.0@7");
    let (bdf, n) = s.trim().rsplit_once('@').ok_or_else(bad)?;
    let n = parse_decimal(n)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)?;
    if !is_bdf(bdf) {
        return Err(bad());
    }
    Ok((bdf.to_string(), n))
}

/// A decimal u64 of ASCII digits only (no sign, no blanks).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A number: decimal digits, or `0x` and hexadecimal digits. No sign, no blanks inside.
///
/// # Errors
/// A message for an empty, malformed or overflowing number.
pub fn parse_number(s: &str) -> Result<u64, String> {
    number(s.trim())
}

/// Why a number was refused.
enum NumberError {
    /// Empty, or not all digits of its radix.
    Malformed,
    /// Above `u64::MAX`.
    TooBig,
}

/// Decimal digits, or `0x`/`0X` and hexadecimal digits.
fn digits(t: &str) -> Result<u64, NumberError> {
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
    let (digits, radix) = match hex {
        Some(h) => (h, 16),
        None => (t, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumberError::Malformed);
    }
    u64::from_str_radix(digits, radix).map_err(|_| NumberError::TooBig)
}

fn number(t: &str) -> Result<u64, String> {
    digits(t).map_err(|e| match e {
        NumberError::Malformed => format!("{t:?} is not a number (e.g. 4096 or 0x1000)"),
        NumberError::TooBig => format!("{t:?} does not fit in 64 bits"),
    })
}

/// A byte size: a [number](parse_number) with an optional `K`, `M`, `G` or `T` suffix (powers of
/// 1024, either case): `4096`, `0x1000`, `64K`, `2M`, `1G`, `0x10K`; blanks around it are
/// ignored. The one size grammar of the project: every `TYPE1_*` variable and every `type1`
/// option that takes a size parses it here.
///
/// # Errors
/// "that is not a size" for an empty or malformed size (a sign, a fraction, blanks inside, a
/// unit other than one letter); "does not fit in 64 bits" when the number or the number times
/// its unit exceeds `u64::MAX`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n = digits(num).map_err(|e| match e {
        NumberError::Malformed => "that is not a size (e.g. 4096, 0x1000, 64K, 2M, 1G)",
        NumberError::TooBig => "does not fit in 64 bits",
    })?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| "does not fit in 64 bits".to_string())
}

/// `dma_entry_limit`: a decimal u32, as the kernel's module parameter.
///
/// # Errors
/// A message when `s` is not a decimal u32.
pub fn parse_dma_entry_limit(s: &str) -> Result<u32, String> {
    parse_decimal(s.trim())
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("not a decimal number up to {}", u32::MAX))
}

/// The locked-memory limit: a [size](parse_size), or `unlimited` (`None`).
///
/// # Errors
/// A message when `s` is neither.
pub fn parse_memlock(s: &str) -> Result<Option<u64>, String> {
    if s.trim() == "unlimited" {
        return Ok(None);
    }
    parse_size(s)
        .map(Some)
        .map_err(|e| format!("{e}, or `unlimited`"))
}

/// `kernel-exact` or `precise`.
///
/// # Errors
/// A message when `s` is neither.
pub fn parse_dirty_mode(s: &str) -> Result<DirtyMode, String> {
    match s.trim() {
        "kernel-exact" => Ok(DirtyMode::KernelExact),
        "precise" => Ok(DirtyMode::Precise),
        _ => Err("expected kernel-exact or precise".to_string()),
    }
}

/// IOTLB invalidation policy of every domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Invalidate before every unmap returns.
    Strict,
    /// Defer to a flush queue.
    Lazy,
}

/// `strict` or `lazy`.
///
/// # Errors
/// A message when `s` is neither.
pub fn parse_invalidation(s: &str) -> Result<Invalidation, String> {
    match s.trim() {
        "strict" => Ok(Invalidation::Strict),
        "lazy" => Ok(Invalidation::Lazy),
        _ => Err("expected strict or lazy".to_string()),
    }
}

/// The CPU page size granule selection starts from (4K, as on x86-64 hosts).
const CPU_PAGE_SIZE: u64 = 1 << 12;
/// The output address size of every table (the x86 default description's).
const TABLE_OAS: u32 = 48;

/// The page-table configuration every IOMMU-backed group gets.
fn table_config(pgsizes: u64, iova_bits: u32) -> io_pgtable::Config {
    let mut t = IommuDesc::x86_default().table;
    t.pgsize_bitmap = pgsizes;
    t.ias = iova_bits;
    t.oas = TABLE_OAS;
    t.cpu_page_size = CPU_PAGE_SIZE;
    t
}

/// The size as `4K`/`2M`/`1G`/... when it is a whole number of those units.
fn size_name(bytes: u64) -> String {
    for (shift, unit) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn size_list(bitmap: u64) -> String {
    let sizes: Vec<String> = (0..64)
        .map(|b| 1u64 << b)
        .filter(|s| bitmap & s != 0)
        .map(size_name)
        .collect();
    sizes.join(",")
}

/// IOMMU page sizes, `4K,2M,1G`: each a power-of-two [size](parse_size) of at least 4K; the
/// smallest picks the granule (4K, 16K or 64K: `arm_lpae_restrict_pgsizes`, v6.18) and every
/// other size must be a block size of that granule (4K: 2M, 1G; 16K: 32M; 64K: 512M), because
/// io-pgtable would silently drop it.
///
/// # Errors
/// A message naming the first size that breaks a rule.
pub fn parse_pgsizes(s: &str) -> Result<u64, String> {
    let mut bitmap = 0u64;
    for item in s.split(',') {
        let size = parse_size(item).map_err(|e| format!("{:?}: {e}", item.trim()))?;
        if !size.is_power_of_two() {
            return Err(format!(
                "{:?} ({size} bytes) is not a power of two",
                item.trim()
            ));
        }
        if size < CPU_PAGE_SIZE {
            return Err(format!("{:?} is smaller than 4K", item.trim()));
        }
        bitmap |= size;
    }
    let geometry = io_pgtable::Geometry::new(&table_config(bitmap, TABLE_OAS))
        .map_err(|e| format!("{}: {e} (a 4K, 16K or 64K granule is needed)", s.trim()))?;
    let dropped = bitmap & !geometry.pgsize_bitmap;
    if dropped != 0 {
        return Err(format!(
            "{} is not a page or block size of the {} granule (which allows {})",
            size_list(dropped),
            size_name(geometry.granule.bytes()),
            size_list(granule_sizes(geometry.granule))
        ));
    }
    Ok(bitmap)
}

/// The page and block sizes a granule's table supports (`arm_lpae_restrict_pgsizes`, v6.18,
/// with a 48-bit output: no 4T blocks).
fn granule_sizes(granule: io_pgtable::Granule) -> u64 {
    let g = granule.bytes();
    match granule {
        io_pgtable::Granule::Size4K => g | (1 << 21) | (1 << 30),
        io_pgtable::Granule::Size16K => g | (1 << 25),
        io_pgtable::Granule::Size64K => g | (1 << 29),
    }
}

/// Smallest aperture width accepted: the table must translate more than one 4K page
/// (io-pgtable refuses `ias <= pg_shift`).
pub const MIN_IOVA_BITS: u32 = 13;

/// The aperture width in bits: a decimal number from [`MIN_IOVA_BITS`] to 52
/// ([`io_pgtable::cfg::MAX_ADDR_BITS`]). Whether the page sizes' granule can translate that
/// many bits is checked by [`check_iommu`].
///
/// # Errors
/// A message when `s` is not such a number.
pub fn parse_iova_bits(s: &str) -> Result<u32, String> {
    let max = io_pgtable::cfg::MAX_ADDR_BITS;
    parse_decimal(s.trim())
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (MIN_IOVA_BITS..=max).contains(n))
        .ok_or_else(|| format!("expected a number of bits from {MIN_IOVA_BITS} to {max}"))
}

/// Reserved IOVA ranges: `start-end,...` (inclusive [numbers](parse_number), `start <= end`),
/// or `none`.
///
/// # Errors
/// A message naming the first bad range.
pub fn parse_reserved(s: &str) -> Result<Vec<(u64, u64)>, String> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|r| {
            let r = r.trim();
            let (a, b) = r
                .split_once('-')
                .ok_or_else(|| format!("{r:?}: expected start-end (inclusive), or `none`"))?;
            let (a, b) = (parse_number(a)?, parse_number(b)?);
            if a > b {
                return Err(format!("{r:?}: the start is above the end"));
            }
            if a == 0 && b == u64::MAX {
                return Err(format!("{r:?}: covers the whole 64-bit space"));
            }
            Ok((a, b))
        })
        .collect()
}

/// `1`/`true`/`yes` or `0`/`false`/`no`.
///
/// # Errors
/// A message when `s` is none of these.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" | "" => Ok(false),
        _ => Err("expected 1 or 0".to_string()),
    }
}

/// The trace file: a non-empty path that can be opened for appending (it is created if
/// missing, as the library would). Returns the path.
///
/// # Errors
/// A message with the reason the file cannot be opened.
pub fn parse_trace(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty path".to_string());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("cannot open for appending: {e}"))
}

/// The checks that need several variables together, as attaching a group would fail: the page
/// sizes' granule translates `iova_bits` (io-pgtable clamps 4K and 16K tables to 48 bits), and
/// the reserved ranges leave some of the aperture (else `VFIO_GROUP_SET_CONTAINER` could never
/// succeed).
///
/// # Errors
/// A message naming the conflict.
pub fn check_iommu(pgsizes: u64, iova_bits: u32, reserved: &[(u64, u64)]) -> Result<(), String> {
    let geometry = io_pgtable::Geometry::new(&table_config(pgsizes, iova_bits)).map_err(|e| {
        format!(
            "{iova_bits} IOVA bits with page sizes {}: {e}",
            size_list(pgsizes)
        )
    })?;
    if geometry.ias != iova_bits {
        return Err(format!(
            "{iova_bits} IOVA bits: a table with the {} granule translates at most {} bits",
            size_name(geometry.granule.bytes()),
            geometry.ias
        ));
    }
    let end = aperture_end(iova_bits);
    let mut covered = reserved.to_vec();
    covered.sort_unstable();
    let mut next = 0u64; // first address not yet known to be reserved
    for (s, e) in covered {
        if s > next {
            return Ok(());
        }
        match e.checked_add(1) {
            Some(n) => next = next.max(n),
            None => {
                return Err(format!(
                    "the reserved ranges cover the whole {iova_bits}-bit aperture"
                ))
            }
        }
        if next > end {
            return Err(format!(
                "the reserved ranges cover the whole {iova_bits}-bit aperture"
            ));
        }
    }
    Ok(())
}

/// The last address of an `iova_bits`-wide aperture.
fn aperture_end(iova_bits: u32) -> u64 {
    1u64.checked_shl(iova_bits).map_or(u64::MAX, |v| v - 1)
}

/// Default IOMMU page sizes: 4K, 2M, 1G.
pub const DEFAULT_PGSIZES: u64 = (1 << 12) | (1 << 21) | (1 << 30);
/// Default aperture width.
pub const DEFAULT_IOVA_BITS: u32 = 48;
/// Default reserved range: the x86 MSI window.
pub const DEFAULT_RESERVED: (u64, u64) = (0xfee0_0000, 0xfeef_ffff);

impl Config {
    /// Reads the configuration through `get` (the environment in production). Each variable goes
    /// through the same parser `type1 run` validates its options with; a bad value becomes one
    /// warning and the default (the host program is never aborted).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Config {
        let mut c = Config {
            groups: BTreeMap::new(),
            devices: BTreeMap::new(),
            device_options: BTreeMap::new(),
            dma_entry_limit: type1::DEFAULT_DMA_ENTRY_LIMIT,
            memlock: type1::mm::process_memlock_limit(),
            dirty_mode: DirtyMode::KernelExact,
            lazy: false,
            pgsizes: DEFAULT_PGSIZES,
            iova_bits: DEFAULT_IOVA_BITS,
            reserved: vec![DEFAULT_RESERVED],
            allow_unsafe_interrupts: false,
            trace: None,
            warnings: Vec::new(),
        };
        let mut warnings = Vec::new();
        let mut read = |name: &str, apply: &mut dyn FnMut(&str) -> Result<(), String>| {
            if let Some(v) = get(name) {
                if let Err(e) = apply(&v) {
                    warnings.push(c_warn(name, &v, &e));
                }
            }
        };
        read("TYPE1_GROUPS", &mut |v| {
            let mut errs = Vec::new();
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match parse_group(item) {
                    Ok((n, k)) => {
                        c.groups.insert(n, k);
                    }
                    Err(e) => errs.push(e),
                }
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; "))
            }
        });
        read("TYPE1_DEVICES", &mut |v| {
            let mut errs = Vec::new();
            // Items with `@` are devices; `key=value` items are options of the device before.
            let mut last: Option<String> = None;
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !item.contains('@') && item.contains('=') {
                    let Some(bdf) = &last else {
                        errs.push(format!("{item:?}: an option before any device"));
                        continue;
                    };
                    let opts = c.device_options.entry(bdf.clone()).or_default();
                    if let Err(e) = parse_device_option(item, opts) {
                        errs.push(e);
                    }
                    continue;
                }
                match parse_device(item) {
                    Ok((bdf, n)) => {
                        c.devices.insert(bdf.clone(), n);
                        c.device_options
                            .insert(bdf.clone(), DeviceOptions::default());
                        last = Some(bdf);
                    }
                    Err(e) => errs.push(e),
                }
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; "))
            }
        });
        read("TYPE1_DMA_ENTRY_LIMIT", &mut |v| {
            c.dma_entry_limit = parse_dma_entry_limit(v)?;
            Ok(())
        });
        read("TYPE1_MEMLOCK", &mut |v| {
            c.memlock = parse_memlock(v)?;
            Ok(())
        });
        read("TYPE1_DIRTY_MODE", &mut |v| {
            c.dirty_mode = parse_dirty_mode(v)?;
            Ok(())
        });
        read("TYPE1_INVALIDATION", &mut |v| {
            c.lazy = parse_invalidation(v)? == Invalidation::Lazy;
            Ok(())
        });
        read("TYPE1_PGSIZES", &mut |v| {
            c.pgsizes = parse_pgsizes(v)?;
            Ok(())
        });
        read("TYPE1_IOVA_BITS", &mut |v| {
            c.iova_bits = parse_iova_bits(v)?;
            Ok(())
        });
        read("TYPE1_RESERVED", &mut |v| {
            c.reserved = parse_reserved(v)?;
            Ok(())
        });
        read("TYPE1_ALLOW_UNSAFE_INTERRUPTS", &mut |v| {
            c.allow_unsafe_interrupts = parse_bool(v)?;
            Ok(())
        });
        read("TYPE1_TRACE", &mut |v| {
            if !v.is_empty() {
                c.trace = Some(parse_trace(v)?);
            }
            Ok(())
        });
        if let Err(e) = check_iommu(c.pgsizes, c.iova_bits, &c.reserved) {
            warnings.push(format!(
                "type1-preload: ignoring TYPE1_PGSIZES, TYPE1_IOVA_BITS and TYPE1_RESERVED: {e}"
            ));
            c.pgsizes = DEFAULT_PGSIZES;
            c.iova_bits = DEFAULT_IOVA_BITS;
            c.reserved = vec![DEFAULT_RESERVED];
        }
        c.warnings = warnings;
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
        d.table = table_config(self.pgsizes, self.iova_bits);
        d.aperture = Aperture {
            start: 0,
            end: aperture_end(self.iova_bits),
        };
        // `parse_reserved` refuses the one range whose length does not fit (0 to u64::MAX).
        d.reserved = self
            .reserved
            .iter()
            .filter_map(|&(s, e)| {
                Some(ReservedRegion {
                    start: s,
                    len: e.checked_sub(s)?.checked_add(1)?,
                    kind: ResvKind::Msi,
                })
            })
            .collect();
        d
    }
}

fn c_warn(name: &str, v: &str, why: &str) -> String {
    format!("type1-preload: ignoring malformed {name}={v:?}: {why}")
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
mod device_option_tests {
    use super::*;

    #[test]
    fn device_options_follow_their_device() {
        assert_eq!(
            parse_device("0000:00:1f.0@5,model=testdev"),
            Ok(("0000:00:1f.0".into(), 5))
        );
        assert!(parse_device("0000:00:1f.0@5,model=nic")
            .unwrap_err()
            .contains("unknown device model"));
        let mut o = DeviceOptions::default();
        assert_eq!(
            parse_device_with("0000:00:1f.0@5,migration=v1", &mut o),
            Ok(("0000:00:1f.0".into(), 5))
        );
        assert!(o.v1_migration);
        assert!(parse_device("0000:00:1f.0@5,migration=v3").is_err_and(|e| e.contains("v1 or v2")));
        assert!(parse_device("0000:00:1f.0@5,speed=9")
            .unwrap_err()
            .contains("unknown device option"));
        let c = Config::from_lookup(&|k| match k {
            "TYPE1_DEVICES" => Some("0000:00:1f.0@5,model=testdev,0000:00:1e.0@6".into()),
            _ => None,
        });
        assert_eq!(c.devices.len(), 2);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn writer_options_take_an_aligned_window_a_positive_rate_and_a_seed() {
        let mut o = DeviceOptions::default();
        parse_device_with(
            "0000:00:1f.0@5,writer=0x1000000+0x400000,writer-rate=2000,writer-seed=0x2a",
            &mut o,
        )
        .unwrap();
        let w = o.writer.unwrap();
        assert_eq!((w.base, w.size), (0x100_0000, 0x40_0000));
        assert_eq!((o.writer_rate, o.writer_seed), (Some(2000), Some(42)));
        for bad in [
            "writer=0x1000+0",
            "writer=0x1001+0x1000",
            "writer=4096+100",
            "writer=0x1000",
            "writer=0xfffffffffffff000+0x2000",
            "writer=0x+0x1000",
            "writer-rate=0",
            "writer-rate=-1",
            "writer-seed=x",
        ] {
            let e = parse_device(&format!("0000:00:1f.0@5,{bad}")).unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }
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
        // One warning per variable, naming every bad item.
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("\"x:iommu\"") && c.warnings[0].contains("\"3:weird\""));
    }

    mod parsers {
        use super::super::*;

        #[test]
        fn sizes_share_one_grammar_with_suffixes_and_hex() {
            assert_eq!(parse_size("4096"), Ok(4096));
            assert_eq!(parse_size("0x1000"), Ok(4096));
            assert_eq!(parse_size("0X1000"), Ok(4096));
            assert_eq!(parse_size("64k"), Ok(64 << 10));
            assert_eq!(parse_size("2m"), Ok(2 << 20));
            assert_eq!(parse_size("2G"), Ok(2 << 30));
            assert_eq!(parse_size("1T"), Ok(1 << 40));
            // A hexadecimal number takes a unit too; blanks around the size are ignored.
            assert_eq!(parse_size("0x10K"), Ok(16 << 10));
            assert_eq!(parse_size(" 2M\t"), Ok(2 << 20));
            assert_eq!(parse_size("0"), Ok(0));
            assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
        }

        #[test]
        fn malformed_or_overflowing_sizes_are_refused() {
            for bad in [
                "", " ", "K", "lots", "2X", "-1", "+4", "4 K", "0x", "0xK", "1.5M", "4KB", "4KiB",
                "2MM", "0b101", "1e3",
            ] {
                assert!(
                    parse_size(bad).unwrap_err().contains("not a size"),
                    "{bad:?}"
                );
            }
            // Too big as a number, or once multiplied by its unit.
            for big in [
                "99999999999999999999",
                "0x10000000000000000",
                "16777216T",
                "99999999999T",
            ] {
                assert_eq!(
                    parse_size(big),
                    Err("does not fit in 64 bits".into()),
                    "{big}"
                );
            }
            assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
            assert!(parse_pgsizes("4K,2X")
                .unwrap_err()
                .contains("\"2X\": that is not a size"));
        }

        #[test]
        fn pgsizes_need_powers_of_two_of_at_least_4k() {
            assert_eq!(parse_pgsizes("4K,2M,1G"), Ok(DEFAULT_PGSIZES));
            assert!(parse_pgsizes("4K,3K")
                .unwrap_err()
                .contains("not a power of two"));
            assert!(parse_pgsizes("2K").unwrap_err().contains("smaller than 4K"));
            assert!(parse_pgsizes("4K,,2M").unwrap_err().contains("not a size"));
        }

        #[test]
        fn pgsizes_follow_the_granule_io_pgtable_picks() {
            // arm_lpae_restrict_pgsizes (v6.18): the 4K CPU page picks the 4K granule when
            // present, else the smallest size above it; only that granule's blocks remain.
            assert_eq!(parse_pgsizes("16K,32M"), Ok((1 << 14) | (1 << 25)));
            assert_eq!(parse_pgsizes("64K,512M"), Ok((1 << 16) | (1 << 29)));
            let e = parse_pgsizes("4K,32M").unwrap_err();
            assert!(
                e.contains("32M is not a page or block size of the 4K granule"),
                "{e}"
            );
            assert!(parse_pgsizes("2M").unwrap_err().contains("granule"));
        }

        #[test]
        fn iova_bits_are_bounded_by_io_pgtable() {
            assert_eq!(parse_iova_bits("48"), Ok(48));
            assert_eq!(parse_iova_bits("52"), Ok(52));
            for bad in ["53", "12", "0", "x", "-48", "4294967344"] {
                assert!(
                    parse_iova_bits(bad).unwrap_err().contains("from 13 to 52"),
                    "{bad}"
                );
            }
        }

        #[test]
        fn iova_bits_must_fit_the_granule() {
            assert_eq!(check_iommu(DEFAULT_PGSIZES, 48, &[]), Ok(()));
            assert_eq!(check_iommu((1 << 16) | (1 << 29), 52, &[]), Ok(()));
            let e = check_iommu(DEFAULT_PGSIZES, 52, &[]).unwrap_err();
            assert!(e.contains("4K granule translates at most 48 bits"), "{e}");
            check_iommu(1 << 16, 16, &[]).unwrap_err();
        }

        #[test]
        fn reserved_ranges_must_leave_part_of_the_aperture() {
            assert_eq!(
                check_iommu(DEFAULT_PGSIZES, 32, &[(0, 0xffff_fffe)]),
                Ok(())
            );
            let e =
                check_iommu(DEFAULT_PGSIZES, 32, &[(0x1000, 0xffff_ffff), (0, 0xfff)]).unwrap_err();
            assert!(e.contains("cover the whole 32-bit aperture"), "{e}");
        }

        #[test]
        fn reserved_ranges_parse_inclusive_or_none() {
            assert_eq!(parse_reserved("none"), Ok(vec![]));
            assert_eq!(
                parse_reserved("0x1000-0x1fff, 8192-8192"),
                Ok(vec![(0x1000, 0x1fff), (0x2000, 0x2000)])
            );
            assert!(parse_reserved("0x2000-0x1000")
                .unwrap_err()
                .contains("start is above"));
            assert!(parse_reserved("0x1000").unwrap_err().contains("start-end"));
            assert!(parse_reserved("0x1000-zz")
                .unwrap_err()
                .contains("not a number"));
            assert!(parse_reserved("0-0xffffffffffffffff")
                .unwrap_err()
                .contains("whole"));
        }

        #[test]
        fn memlock_is_a_size_or_unlimited() {
            assert_eq!(parse_memlock("unlimited"), Ok(None));
            assert_eq!(parse_memlock("64M"), Ok(Some(64 << 20)));
            assert!(parse_memlock("lots").unwrap_err().contains("unlimited"));
        }

        #[test]
        fn modes_and_limits_parse_exactly() {
            assert_eq!(parse_dirty_mode("precise"), Ok(DirtyMode::Precise));
            parse_dirty_mode("psychic").unwrap_err();
            assert_eq!(parse_invalidation("lazy"), Ok(Invalidation::Lazy));
            parse_invalidation("eager").unwrap_err();
            assert_eq!(parse_dma_entry_limit("0"), Ok(0));
            parse_dma_entry_limit("4294967296").unwrap_err();
            parse_dma_entry_limit("+5").unwrap_err();
            assert_eq!(parse_bool("yes"), Ok(true));
            parse_bool("maybe").unwrap_err();
        }

        #[test]
        fn groups_and_devices_parse_strictly() {
            assert_eq!(parse_group("7:iommu"), Ok((7, Kind::Iommu)));
            parse_group("+7:iommu").unwrap_err();
            assert!(parse_group("7").unwrap_err().contains("N:iommu"));
            assert_eq!(
                parse_device("0000:00:04.0@7"),
                Ok(("0000:00:04.0".to_string(), 7))
            );
            parse_device("0000x00:04.0@7").unwrap_err();
        }

        #[test]
        fn trace_file_must_be_appendable() {
            let dir = std::env::temp_dir().join(format!("type1-cfg-trace-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ok = dir.join("t.jsonl");
            assert_eq!(
                parse_trace(ok.to_str().unwrap()),
                Ok(ok.to_str().unwrap().to_string())
            );
            parse_trace("").unwrap_err();
            // A directory cannot be opened for appending (EISDIR).
            assert!(parse_trace(dir.to_str().unwrap())
                .unwrap_err()
                .contains("cannot open for appending"));
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn conflicting_iommu_variables_warn_and_fall_back_together() {
        let c = cfg(&[("TYPE1_IOVA_BITS", "52")]);
        assert_eq!(c.iova_bits, DEFAULT_IOVA_BITS);
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("at most 48 bits"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn iommu_description_follows_the_variables() {
        let c = cfg(&[
            ("TYPE1_PGSIZES", "64K,512M"),
            ("TYPE1_IOVA_BITS", "52"),
            ("TYPE1_RESERVED", "none"),
        ]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let d = c.iommu_desc();
        assert_eq!(d.table.ias, 52);
        assert_eq!(d.aperture.end, (1 << 52) - 1);
        assert!(d.reserved.is_empty());
        io_pgtable::Geometry::new(&d.table).unwrap();
    }
}
