//! Which areas of this process a long-term pin may take, decided from `/proc/self/maps` as the
//! kernel decides from `vm_area_struct` (mm/gup.c `check_vma_flags`, v6.18, for
//! `pin_user_pages_remote(.., FOLL_LONGTERM | FOLL_WRITE?)` as `vaddr_get_pfns` calls it, then
//! vfio's own fallback for `VM_PFNMAP` areas).
//!
//! Per area, in the kernel's order:
//! 1. `VM_IO | VM_PFNMAP`: GUP refuses (`EFAULT`); vfio then follows the PFN of a `VM_PFNMAP` area
//!    (`follow_fault_pfn`, faulting it in for the access asked) and takes it as a *reserved* page:
//!    mapped, never pinned nor charged. A `VM_IO` area without `VM_PFNMAP` stays `EFAULT`.
//! 2. secret memory (`memfd_secret`): `EFAULT` (`vma_is_secretmem`).
//! 3. a write pin of a file mapping the file system must track dirty pages for: `EFAULT`
//!    (`writable_file_mapping_allowed` → `vma_needs_dirty_tracking`: the area is shared and
//!    writable, and its file system notifies writes (`page_mkwrite`) or writes back). Shmem
//!    (tmpfs, memfd, shared anonymous, SysV), hugetlbfs and device files do not; regular files on
//!    disk file systems (ext4, xfs, btrfs, overlay, NFS, FUSE, ramfs through
//!    `generic_file_vm_ops`, …) do. Private mappings never do.
//! 4. a write pin needs `VM_WRITE` (not `VM_READ`: a `PROT_WRITE`-only area pins for write);
//!    a read pin needs `VM_READ`. `PROT_NONE` fails both.
//!
//! What a maps line does not show is looked up only when the rule needs it, and never cached:
//! - `VmFlags` (`io`, `pf`) from `/proc/self/smaps`, only for areas that can be `VM_IO`/`VM_PFNMAP`
//!   at all: device files (`/dev/…` except `/dev/shm`), sysfs files (a PCI BAR's `resourceN`),
//!   anonymous-inode files (`anon_inode:…`, a vfio device fd's region), dma-bufs and the kernel's
//!   special mappings (`[vvar]` …). Ordinary memory (anonymous, heap, stack, files, shmem) is
//!   never `VM_IO`/`VM_PFNMAP` in a user process, so pinning it never reads smaps, which is
//!   costly for a large process.
//! - The file system type, only for a *write* pin of a *shared, writable* file mapping: the
//!   maps line's device number looked up in `/proc/self/mountinfo`; if the device is not mounted
//!   in our namespace (an overlay's upper layer, a file received from another namespace),
//!   `statfs` of `/proc/self/map_files/<range>` (needs CAP_SYS_ADMIN or
//!   CAP_CHECKPOINT_RESTORE); failing both, the file is taken to need dirty tracking (refused),
//!   since every file system that does not is a memory file system normally visible there.
//! - Shmem's internal mounts (memfd, shared anonymous memory, SysV, `MAP_HUGETLB`) are not in
//!   mountinfo; they are recognised by the names the kernel gives their files (`/memfd:…`,
//!   `/dev/zero (deleted)`, `[anon_shmem:…]`, `/SYSV…`, `/anon_hugepage`), and secret memory by
//!   `/secretmem`. A real file at `/` with such a name would be misjudged: accepted.
//!
//! Not modelled: DAX (`vma_is_fsdax`, `EOPNOTSUPP`), shadow stacks, a `VM_PFNMAP` area whose PFN
//! is a valid, non-reserved page (`EFAULT` in vfio; we cannot see PFNs, so every `VM_PFNMAP` page
//! is reserved), and memory-protection keys.

use super::Access;

/// One line of `/proc/self/maps`. Addresses are `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapsLine<'a> {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// `VM_READ`.
    pub(crate) read: bool,
    /// `VM_WRITE`.
    pub(crate) write: bool,
    /// `VM_MAYSHARE` (`s`): a `MAP_SHARED` mapping.
    pub(crate) shared: bool,
    /// The file's device (major, minor); `(0, 0)` for anonymous memory.
    pub(crate) dev: (u32, u32),
    /// The file's inode; 0 for anonymous memory.
    pub(crate) inode: u64,
    /// The path or pseudo-name, possibly empty or ending in ` (deleted)`.
    pub(crate) path: &'a str,
}

/// Parses one maps line: `start-end perms offset major:minor inode [path]`.
pub(crate) fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut rest = line;
    let mut field = || {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        Some(f).filter(|f| !f.is_empty())
    };
    let range = field()?;
    let perms = field()?.as_bytes();
    let _offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let (s, e) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    if perms.len() < 4 {
        return None;
    }
    Some(MapsLine {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        shared: perms[3] == b's',
        dev: (
            u32::from_str_radix(maj, 16).ok()?,
            u32::from_str_radix(min, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: rest.trim_start_matches(' '),
    })
}

/// What backs an area, as far as the pin rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    /// Anonymous memory (private), heap, stack.
    Anon,
    /// Shmem or hugetlbfs without a visible mount: memfd, shared anonymous, SysV, MAP_HUGETLB.
    Shmem,
    /// `memfd_secret` memory.
    Secret,
    /// Something that may be `VM_IO`/`VM_PFNMAP`: a device, sysfs or anon-inode file, a special
    /// kernel mapping. Its `VmFlags` decide.
    Special,
    /// A file on a mounted file system.
    File,
}

/// Classifies an area by its maps line.
pub(crate) fn backing(l: &MapsLine<'_>) -> Backing {
    let p = l.path;
    if p.is_empty() {
        return if l.inode == 0 {
            Backing::Anon
        } else {
            Backing::File
        };
    }
    if p.starts_with("[anon_shmem:") {
        Backing::Shmem
    } else if p == "[heap]" || p.starts_with("[stack") || p.starts_with("[anon:") {
        Backing::Anon
    } else if p.starts_with('[') || p.starts_with("anon_inode:") || p.starts_with("/dmabuf:") {
        Backing::Special
    } else if p.starts_with("/memfd:")
        || p.starts_with("/SYSV")
        || p == "/dev/zero (deleted)"
        || p.starts_with("/anon_hugepage")
    {
        Backing::Shmem
    } else if p.starts_with("/secretmem") {
        Backing::Secret
    } else if (p.starts_with("/dev/") && !p.starts_with("/dev/shm/")) || p.starts_with("/sys/") {
        Backing::Special
    } else {
        Backing::File
    }
}

/// `VM_IO` and `VM_PFNMAP` of an area (smaps `VmFlags: io pf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IoFlags {
    /// `VM_IO`.
    pub(crate) io: bool,
    /// `VM_PFNMAP`.
    pub(crate) pfnmap: bool,
}

/// Whether a shared writable file mapping's file system tracks dirty pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirtyTracking {
    /// Writes must be seen by the file system: long-term write pins are refused.
    Needed,
    /// Memory file systems (shmem, hugetlbfs).
    NotNeeded,
}

/// What the maps line does not say, looked up on demand.
pub(crate) trait VmaProbe {
    /// `VmFlags` of the area starting at `start` (`None`: unknown, taken as neither flag).
    fn io_flags(&self, line: &MapsLine<'_>) -> Option<IoFlags>;
    /// Whether the file system of a file mapping tracks dirty pages.
    fn dirty_tracking(&self, line: &MapsLine<'_>) -> DirtyTracking;
}

/// How one area answers a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Ordinary pages: pinned and charged.
    Pin,
    /// PFNMAP pages: mapped, never pinned nor charged.
    Reserved,
    /// `EFAULT`.
    Fault,
}

/// The permission half of the rules: `VM_WRITE` for a write pin, `VM_READ` for a read pin.
fn permits(l: &MapsLine<'_>, access: Access) -> bool {
    match access {
        Access::Write => l.write,
        Access::Read => l.read,
    }
}

/// A `VM_PFNMAP` area: `follow_fault_pfn` faults the page in for the access asked, which the
/// area's protection must allow.
pub(crate) fn pfnmap_verdict(l: &MapsLine<'_>, access: Access) -> Verdict {
    if permits(l, access) {
        Verdict::Reserved
    } else {
        Verdict::Fault
    }
}

/// The rules for one area, in the kernel's order (module docs).
pub(crate) fn verdict(l: &MapsLine<'_>, access: Access, probe: &dyn VmaProbe) -> Verdict {
    let kind = backing(l);
    if kind == Backing::Special {
        let f = probe.io_flags(l).unwrap_or_default();
        if f.pfnmap {
            return pfnmap_verdict(l, access);
        }
        if f.io {
            return Verdict::Fault;
        }
    }
    if kind == Backing::Secret {
        return Verdict::Fault;
    }
    if access == Access::Write
        && kind == Backing::File
        && l.shared
        && l.write
        && probe.dirty_tracking(l) == DirtyTracking::Needed
    {
        return Verdict::Fault;
    }
    if permits(l, access) {
        Verdict::Pin
    } else {
        Verdict::Fault
    }
}

/// The `VmFlags` of the smaps entry for `[start, end)`.
pub(crate) fn smaps_io_flags(smaps: &str, start: u64, end: u64) -> Option<IoFlags> {
    let mut inside = false;
    for line in smaps.lines() {
        if let Some(l) = parse_maps_line(line) {
            inside = l.start == start && l.end == end;
            continue;
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                let mut f = IoFlags::default();
                for w in flags.split_whitespace() {
                    match w {
                        "io" => f.io = true,
                        "pf" => f.pfnmap = true,
                        _ => {}
                    }
                }
                return Some(f);
            }
        }
    }
    None
}

/// The file-system type mounted from device `dev` (mountinfo's `major:minor` is decimal; the
/// type follows the ` - ` separator).
pub(crate) fn mountinfo_fstype(mountinfo: &str, dev: (u32, u32)) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mm = pre.split(' ').nth(2)?;
        let (maj, min) = mm.split_once(':')?;
        if (maj.parse().ok()?, min.parse().ok()?) != dev {
            return None;
        }
        post.split(' ').next()
    })
}

/// Memory file systems: no `page_mkwrite`, no writeback (`shmem_vm_ops`, `hugetlb_vm_ops`;
/// devtmpfs is shmem). ramfs is not among them: it maps through `generic_file_vm_ops`, whose
/// `page_mkwrite` asks for write notification.
pub(crate) fn fstype_dirty_tracking(fstype: &str) -> DirtyTracking {
    match fstype {
        "tmpfs" | "hugetlbfs" | "devtmpfs" => DirtyTracking::NotNeeded,
        _ => DirtyTracking::Needed,
    }
}

/// `statfs` magic numbers of the memory file systems (`<linux/magic.h>`).
fn magic_dirty_tracking(magic: i64) -> DirtyTracking {
    if magic == libc::TMPFS_MAGIC || magic == libc::HUGETLBFS_MAGIC {
        DirtyTracking::NotNeeded
    } else {
        DirtyTracking::Needed
    }
}

/// The probe of this process: reads smaps, mountinfo or statfs when asked.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LiveProbe;

impl VmaProbe for LiveProbe {
    fn io_flags(&self, line: &MapsLine<'_>) -> Option<IoFlags> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        smaps_io_flags(&smaps, line.start, line.end)
    }

    fn dirty_tracking(&self, line: &MapsLine<'_>) -> DirtyTracking {
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            if let Some(t) = mountinfo_fstype(&mi, line.dev) {
                return fstype_dirty_tracking(t);
            }
        }
        let link = format!("/proc/self/map_files/{:x}-{:x}", line.start, line.end);
        match statfs_magic(&link) {
            Some(m) => magic_dirty_tracking(m),
            None => DirtyTracking::Needed,
        }
    }
}

/// `statfs(path).f_type`.
fn statfs_magic(path: &str) -> Option<i64> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable `statfs`.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (r == 0).then_some(st.f_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe with fixed answers that counts its lookups.
    #[derive(Debug, Default)]
    struct Probe {
        io: Option<IoFlags>,
        tracking: Option<DirtyTracking>,
        lookups: std::cell::Cell<u32>,
    }

    impl VmaProbe for Probe {
        fn io_flags(&self, _: &MapsLine<'_>) -> Option<IoFlags> {
            self.lookups.set(self.lookups.get() + 1);
            self.io
        }
        fn dirty_tracking(&self, _: &MapsLine<'_>) -> DirtyTracking {
            self.lookups.set(self.lookups.get() + 1);
            self.tracking.unwrap_or(DirtyTracking::Needed)
        }
    }

    fn line(text: &str) -> MapsLine<'_> {
        parse_maps_line(text).unwrap()
    }

    const EXT4_SHARED_RW: &str = "7f0000000000-7f0000002000 rw-s 00000000 fe:00 1234 /data/f";

    mod parsing {
        use super::*;

        #[test]
        fn a_file_line_gives_range_perms_device_inode_and_path() {
            let l = line("7f12a000-7f12c000 rw-s 00001000 fe:01 9876   /var/tmp/a b (deleted)");
            assert_eq!(
                l,
                MapsLine {
                    start: 0x7f12_a000,
                    end: 0x7f12_c000,
                    read: true,
                    write: true,
                    shared: true,
                    dev: (0xfe, 1),
                    inode: 9876,
                    path: "/var/tmp/a b (deleted)",
                }
            );
        }

        #[test]
        fn an_anonymous_line_has_no_path() {
            let l = line("00400000-00401000 -w-p 00000000 00:00 0 ");
            assert!(!l.read && l.write && !l.shared && l.path.is_empty());
            assert_eq!(backing(&l), Backing::Anon);
        }

        #[test]
        fn a_truncated_line_is_rejected() {
            assert_eq!(parse_maps_line("00400000-00401000 rw-p"), None);
            assert_eq!(parse_maps_line("zz-00401000 rw-p 0 00:00 0"), None);
        }

        #[test]
        fn pseudo_names_classify_as_the_kernel_backs_them() {
            let cases = [
                ("[heap]", Backing::Anon),
                ("[stack]", Backing::Anon),
                ("[anon:guest ram]", Backing::Anon),
                ("[anon_shmem:bar]", Backing::Shmem),
                ("/memfd:guest (deleted)", Backing::Shmem),
                ("/dev/zero (deleted)", Backing::Shmem),
                ("/SYSV00000000 (deleted)", Backing::Shmem),
                ("/anon_hugepage (deleted)", Backing::Shmem),
                ("/secretmem (deleted)", Backing::Secret),
                ("[vvar]", Backing::Special),
                ("anon_inode:[vfio-device]", Backing::Special),
                ("/dev/vfio/devices/vfio0", Backing::Special),
                (
                    "/sys/bus/pci/devices/0000:00:04.0/resource0",
                    Backing::Special,
                ),
                ("/dev/shm/ram", Backing::File),
                ("/home/u/disk.img", Backing::File),
            ];
            for (path, want) in cases {
                let text = format!("1000-2000 rw-s 00000000 00:05 7 {path}");
                assert_eq!(backing(&line(&text)), want, "{path}");
            }
        }

        #[test]
        fn smaps_vm_flags_are_found_for_the_exact_area() {
            let smaps = "1000-2000 rw-s 00000000 00:05 7 /dev/x\nSize: 4 kB\nVmFlags: rd wr sh mr mw me ms io pf dd\n\
                         2000-3000 rw-p 00000000 00:00 0 \nVmFlags: rd wr mr mw me ac\n";
            assert_eq!(
                smaps_io_flags(smaps, 0x1000, 0x2000),
                Some(IoFlags {
                    io: true,
                    pfnmap: true
                })
            );
            assert_eq!(
                smaps_io_flags(smaps, 0x2000, 0x3000),
                Some(IoFlags::default())
            );
            assert_eq!(smaps_io_flags(smaps, 0x1000, 0x3000), None);
        }

        #[test]
        fn mountinfo_maps_a_decimal_device_to_its_fstype() {
            let mi = "24 27 0:6 / /dev rw - devtmpfs devtmpfs rw\n\
                      27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n";
            assert_eq!(mountinfo_fstype(mi, (254, 0)), Some("ext4"));
            assert_eq!(mountinfo_fstype(mi, (0, 6)), Some("devtmpfs"));
            assert_eq!(mountinfo_fstype(mi, (0, 7)), None);
        }
    }

    mod rules {
        use super::*;

        #[test]
        fn write_pin_of_a_shared_disk_file_faults() {
            // check_vma_flags: FOLL_WRITE on a non-anonymous area needs
            // writable_file_mapping_allowed, false when vma_needs_dirty_tracking.
            let p = Probe::default();
            assert_eq!(
                verdict(&line(EXT4_SHARED_RW), Access::Write, &p),
                Verdict::Fault
            );
        }

        #[test]
        fn read_pin_of_a_shared_disk_file_is_allowed_without_a_lookup() {
            // Only FOLL_WRITE pins consult writable_file_mapping_allowed.
            let p = Probe::default();
            assert_eq!(
                verdict(&line(EXT4_SHARED_RW), Access::Read, &p),
                Verdict::Pin
            );
            assert_eq!(p.lookups.get(), 0);
        }

        #[test]
        fn write_pin_of_a_shared_tmpfs_file_is_allowed() {
            // shmem has neither page_mkwrite nor writeback: no dirty tracking.
            let p = Probe {
                tracking: Some(DirtyTracking::NotNeeded),
                ..Probe::default()
            };
            assert_eq!(
                verdict(&line(EXT4_SHARED_RW), Access::Write, &p),
                Verdict::Pin
            );
        }

        #[test]
        fn write_pin_of_memfd_and_shared_anonymous_memory_needs_no_lookup() {
            let p = Probe::default();
            for path in ["/memfd:ram (deleted)", "/dev/zero (deleted)"] {
                let text = format!("1000-2000 rw-s 00000000 00:01 7 {path}");
                assert_eq!(verdict(&line(&text), Access::Write, &p), Verdict::Pin);
            }
            assert_eq!(p.lookups.get(), 0);
        }

        #[test]
        fn write_pin_of_a_private_file_mapping_is_allowed() {
            // vma_needs_dirty_tracking: only shared, writable areas need it.
            let p = Probe::default();
            let l = line("1000-2000 rw-p 00000000 fe:00 1234 /data/f");
            assert_eq!(verdict(&l, Access::Write, &p), Verdict::Pin);
            assert_eq!(p.lookups.get(), 0);
        }

        #[test]
        fn write_only_memory_pins_for_write_but_not_for_read() {
            // FOLL_WRITE needs VM_WRITE only; a read pin needs VM_READ.
            let p = Probe::default();
            let l = line("1000-2000 -w-p 00000000 00:00 0 ");
            assert_eq!(verdict(&l, Access::Write, &p), Verdict::Pin);
            assert_eq!(verdict(&l, Access::Read, &p), Verdict::Fault);
        }

        #[test]
        fn prot_none_memory_faults_for_both_accesses() {
            let p = Probe::default();
            let l = line("1000-2000 ---p 00000000 00:00 0 ");
            assert_eq!(verdict(&l, Access::Write, &p), Verdict::Fault);
            assert_eq!(verdict(&l, Access::Read, &p), Verdict::Fault);
        }

        #[test]
        fn read_only_memory_faults_a_write_pin() {
            let p = Probe::default();
            let l = line("1000-2000 r--p 00000000 00:00 0 ");
            assert_eq!(verdict(&l, Access::Write, &p), Verdict::Fault);
            assert_eq!(verdict(&l, Access::Read, &p), Verdict::Pin);
        }

        #[test]
        fn secret_memory_faults() {
            // vma_is_secretmem.
            let p = Probe::default();
            let l = line("1000-2000 rw-s 00000000 00:0d 5 /secretmem (deleted)");
            assert_eq!(verdict(&l, Access::Read, &p), Verdict::Fault);
        }

        #[test]
        fn a_pfnmap_device_area_is_reserved_if_its_protection_allows_the_access() {
            // vaddr_get_pfns: GUP fails on VM_PFNMAP, follow_fault_pfn takes the PFN.
            let p = Probe {
                io: Some(IoFlags {
                    io: true,
                    pfnmap: true,
                }),
                ..Probe::default()
            };
            let rw = line("1000-2000 rw-s 00000000 00:06 3 /dev/bar");
            assert_eq!(verdict(&rw, Access::Write, &p), Verdict::Reserved);
            let ro = line("1000-2000 r--s 00000000 00:06 3 /dev/bar");
            assert_eq!(verdict(&ro, Access::Write, &p), Verdict::Fault);
            assert_eq!(verdict(&ro, Access::Read, &p), Verdict::Reserved);
        }

        #[test]
        fn a_vm_io_area_without_pfnmap_faults() {
            // check_vma_flags refuses VM_IO; vfio's fallback only follows VM_PFNMAP.
            let p = Probe {
                io: Some(IoFlags {
                    io: true,
                    pfnmap: false,
                }),
                ..Probe::default()
            };
            let l = line("1000-2000 rw-s 00000000 00:06 3 /dev/mixed");
            assert_eq!(verdict(&l, Access::Read, &p), Verdict::Fault);
        }

        #[test]
        fn a_device_file_without_io_flags_pins_like_shmem() {
            // Device files are on devtmpfs: no writeback, no dirty tracking.
            let p = Probe {
                io: Some(IoFlags::default()),
                ..Probe::default()
            };
            let l = line("1000-2000 rw-s 00000000 00:06 3 /dev/dri/card0");
            assert_eq!(verdict(&l, Access::Write, &p), Verdict::Pin);
            assert_eq!(p.lookups.get(), 1, "only smaps was read");
        }

        #[test]
        fn memory_file_systems_need_no_dirty_tracking_and_others_do() {
            for t in ["tmpfs", "hugetlbfs", "devtmpfs"] {
                assert_eq!(fstype_dirty_tracking(t), DirtyTracking::NotNeeded, "{t}");
            }
            for t in ["ext4", "xfs", "btrfs", "overlay", "nfs4", "fuse", "ramfs"] {
                assert_eq!(fstype_dirty_tracking(t), DirtyTracking::Needed, "{t}");
            }
        }
    }
}
