//! The device fd's ioctls, byte-level: request numbers and argument bytes exactly as the
//! kernel receives them, user memory through [`type1::UserMemory`] (a failed copy is
//! `EFAULT`).
//!
//! Each handler is the kernel function named on it (v6.18 `drivers/vfio/pci/vfio_pci_core.c`,
//! `drivers/vfio/vfio_main.c`), with its `argsz`/`minsz` rules, flag checks, check order and
//! write-back. Struct sizes and field offsets come from `vfio-bindings` through `offset_of!` and
//! `size_of`.

use std::mem::{offset_of, size_of};

use type1::uapi::{get_u32, get_u64, put_u16, put_u32, put_u64, vfio_io};
use type1::UserMemory;
use vfio_bindings::bindings::vfio::{
    vfio_device_feature, vfio_device_feature_dma_logging_control,
    vfio_device_feature_dma_logging_range, vfio_device_feature_dma_logging_report,
    vfio_device_feature_mig_data_size, vfio_device_feature_mig_state,
    vfio_device_feature_migration, vfio_device_info, vfio_irq_info, vfio_irq_set,
    vfio_pci_dependent_device, vfio_pci_hot_reset, vfio_pci_hot_reset_info, vfio_precopy_info,
    vfio_region_info, VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START, VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
    VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_MASK, VFIO_DEVICE_FEATURE_MIGRATION,
    VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET, VFIO_DEVICE_FLAGS_PCI,
    VFIO_DEVICE_FLAGS_RESET, VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD,
    VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_INFO_NORESIZE,
};

use crate::device::Device;
use crate::dma::logging;
use crate::error::{Error, Result};
use crate::irq::set::{self, IrqData, SetIrqsHeader};
use crate::irq::{IrqIndex, NUM_IRQS};
use crate::migration::{DataFile, MigState};
use crate::region::{RegionIndex, REGION_INFO_SIZE};

/// `VFIO_DEVICE_GET_INFO`.
pub const VFIO_DEVICE_GET_INFO: u64 = vfio_io(7);
/// `VFIO_DEVICE_GET_REGION_INFO`.
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
/// `VFIO_DEVICE_GET_IRQ_INFO`.
pub const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
/// `VFIO_DEVICE_SET_IRQS`.
pub const VFIO_DEVICE_SET_IRQS: u64 = vfio_io(10);
/// `VFIO_DEVICE_RESET`.
pub const VFIO_DEVICE_RESET: u64 = vfio_io(11);
/// `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` (same number as `VFIO_IOMMU_GET_INFO`).
pub const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: u64 = vfio_io(12);
/// `VFIO_DEVICE_PCI_HOT_RESET`.
pub const VFIO_DEVICE_PCI_HOT_RESET: u64 = vfio_io(13);
/// `VFIO_DEVICE_IOEVENTFD`.
pub const VFIO_DEVICE_IOEVENTFD: u64 = vfio_io(16);
/// `VFIO_DEVICE_FEATURE`.
pub const VFIO_DEVICE_FEATURE: u64 = vfio_io(17);
/// `VFIO_MIG_GET_PRECOPY_INFO` (on a migration data fd).
pub const VFIO_MIG_GET_PRECOPY_INFO: u64 = vfio_io(21);

#[allow(clippy::cast_possible_truncation)]
const fn u32_of(n: usize) -> u32 {
    n as u32
}

/// `offsetofend(struct vfio_device_info, num_irqs)`.
const INFO_MINSZ: u32 = u32_of(offset_of!(vfio_device_info, num_irqs) + 4);
/// `offsetofend(struct vfio_region_info, offset)`.
const REGION_MINSZ: u32 = u32_of(offset_of!(vfio_region_info, offset) + 8);
/// `offsetofend(struct vfio_irq_info, count)`.
const IRQ_INFO_MINSZ: u32 = u32_of(offset_of!(vfio_irq_info, count) + 4);
/// `offsetofend(struct vfio_pci_hot_reset_info, count)`.
const HOT_INFO_MINSZ: u32 = u32_of(offset_of!(vfio_pci_hot_reset_info, count) + 4);
/// `offsetofend(struct vfio_pci_hot_reset, count)`.
const HOT_RESET_MINSZ: u32 = u32_of(offset_of!(vfio_pci_hot_reset, count) + 4);
/// `offsetofend(struct vfio_device_feature, flags)`.
const FEATURE_MINSZ: u32 = u32_of(offset_of!(vfio_device_feature, flags) + 4);

/// What an fd passed to `PCI_HOT_RESET` is, as the caller's fd table knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// Not open (`EBADF`).
    NotOpen,
    /// Open, but not a VFIO group (`EINVAL`).
    NotGroup,
    /// A VFIO group fd of this group number.
    Group(u32),
}

/// Resolves fds of the calling process for `PCI_HOT_RESET` (the drop-in knows which fds are
/// its groups).
pub trait GroupFds {
    /// What `fd` is.
    fn kind(&self, fd: i32) -> FdKind;
}

/// A process with no VFIO group fds: open fds are [`FdKind::NotGroup`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGroupFds;

impl GroupFds for NoGroupFds {
    fn kind(&self, fd: i32) -> FdKind {
        if fd >= 0 && std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok() {
            FdKind::NotGroup
        } else {
            FdKind::NotOpen
        }
    }
}

fn copy_from(user: &dyn UserMemory, addr: u64, buf: &mut [u8]) -> Result<()> {
    user.read(addr, buf)
        .map_err(|a| Error::BadAddress { addr: a })
}

fn copy_to(user: &mut dyn UserMemory, addr: u64, data: &[u8]) -> Result<()> {
    user.write(addr, data)
        .map_err(|a| Error::BadAddress { addr: a })
}

fn argsz_check(argsz: u32, minsz: u32) -> Result<()> {
    if argsz < minsz {
        Err(Error::ArgszTooSmall { argsz, minsz })
    } else {
        Ok(())
    }
}

impl Device {
    /// The device fd's `ioctl(fd, request, arg)`: returns the ioctl's non-negative result.
    /// `groups` resolves the group fds of `PCI_HOT_RESET`.
    ///
    /// # Errors
    /// The kernel's error for the request; [`Error::errno`] gives the errno. Unknown requests
    /// (and `VFIO_DEVICE_IOEVENTFD`, not implemented) are `ENOTTY`.
    pub fn ioctl(
        &self,
        request: u64,
        arg: u64,
        user: &mut dyn UserMemory,
        groups: &dyn GroupFds,
    ) -> Result<i64> {
        match request {
            VFIO_DEVICE_GET_INFO => self.ioctl_get_info(arg, user),
            VFIO_DEVICE_GET_REGION_INFO => self.ioctl_region_info(arg, user),
            VFIO_DEVICE_GET_IRQ_INFO => self.ioctl_irq_info(arg, user),
            VFIO_DEVICE_SET_IRQS => self.ioctl_set_irqs(arg, user),
            VFIO_DEVICE_RESET => self.reset(),
            VFIO_DEVICE_GET_PCI_HOT_RESET_INFO => self.ioctl_hot_reset_info(arg, user),
            VFIO_DEVICE_PCI_HOT_RESET => self.ioctl_hot_reset(arg, user, groups),
            VFIO_DEVICE_FEATURE => self.ioctl_feature(arg, user),
            _ => Err(Error::NotTty { request }),
        }
        .map(|()| 0)
    }

    /// `vfio_pci_ioctl_get_info`: writes back `min(argsz, sizeof)` bytes; no capabilities.
    fn ioctl_get_info(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut head = [0u8; INFO_MINSZ as usize];
        copy_from(user, arg, &mut head)?;
        let argsz = get_u32(&head, offset_of!(vfio_device_info, argsz));
        argsz_check(argsz, INFO_MINSZ)?;
        let n = (argsz as usize).min(size_of::<vfio_device_info>());
        let mut out = [0u8; size_of::<vfio_device_info>()];
        out[..head.len()].copy_from_slice(&head);
        let mut flags = VFIO_DEVICE_FLAGS_PCI;
        if self.reset_works() {
            flags |= VFIO_DEVICE_FLAGS_RESET;
        }
        put_u32(&mut out, offset_of!(vfio_device_info, flags), flags);
        put_u32(
            &mut out,
            offset_of!(vfio_device_info, num_regions),
            self.regions().count(),
        );
        put_u32(&mut out, offset_of!(vfio_device_info, num_irqs), NUM_IRQS);
        put_u32(&mut out, offset_of!(vfio_device_info, cap_offset), 0);
        copy_to(user, arg, &out[..n])
    }

    /// `vfio_pci_ioctl_get_region_info`: a chain that does not fit grows `argsz` (return 0,
    /// `cap_offset` 0); one that fits goes to `arg + sizeof`.
    fn ioctl_region_info(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut b = [0u8; REGION_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, offset_of!(vfio_region_info, argsz));
        argsz_check(argsz, REGION_MINSZ)?;
        let index = get_u32(&b, offset_of!(vfio_region_info, index));
        let info = self.region_info(RegionIndex(index))?;
        put_u32(&mut b, offset_of!(vfio_region_info, flags), info.flags);
        put_u64(&mut b, offset_of!(vfio_region_info, size), info.size);
        put_u64(&mut b, offset_of!(vfio_region_info, offset), info.offset);
        put_u32(&mut b, offset_of!(vfio_region_info, cap_offset), 0);
        if !info.caps.is_empty() {
            let total = REGION_INFO_SIZE + info.caps.len();
            if (argsz as usize) < total {
                put_u32(&mut b, offset_of!(vfio_region_info, argsz), u32_of(total));
            } else {
                let mut caps = info.caps.clone();
                // `vfio_info_cap_shift`: the (single-capability) chain ends with next 0.
                put_u32(&mut caps, 4, 0);
                copy_to(user, arg + REGION_INFO_SIZE as u64, &caps)?;
                put_u32(
                    &mut b,
                    offset_of!(vfio_region_info, cap_offset),
                    u32_of(REGION_INFO_SIZE),
                );
            }
        }
        copy_to(user, arg, &b)
    }

    /// `vfio_pci_ioctl_get_irq_info`.
    fn ioctl_irq_info(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut b = [0u8; IRQ_INFO_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, offset_of!(vfio_irq_info, argsz));
        let index = get_u32(&b, offset_of!(vfio_irq_info, index));
        if argsz < IRQ_INFO_MINSZ || index >= NUM_IRQS {
            argsz_check(argsz, IRQ_INFO_MINSZ)?;
            return Err(Error::NoIrqIndex { index });
        }
        let counts = self.irqs().counts();
        let kind = IrqIndex::from_raw(index);
        if kind == Some(IrqIndex::Err) && counts.err == 0 {
            return Err(Error::NoIrqIndex { index });
        }
        let mut flags = VFIO_IRQ_INFO_EVENTFD;
        if kind == Some(IrqIndex::Intx) {
            flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
        } else {
            // Static MSI-X allocation: no dynamic resizing.
            flags |= VFIO_IRQ_INFO_NORESIZE;
        }
        put_u32(&mut b, offset_of!(vfio_irq_info, flags), flags);
        put_u32(&mut b, offset_of!(vfio_irq_info, count), counts.of(index));
        copy_to(user, arg, &b)
    }

    /// `vfio_pci_ioctl_set_irqs`: validate, copy the data, dispatch.
    fn ioctl_set_irqs(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut b = [0u8; set::SET_IRQS_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let hdr = SetIrqsHeader {
            argsz: get_u32(&b, offset_of!(vfio_irq_set, argsz)),
            flags: get_u32(&b, offset_of!(vfio_irq_set, flags)),
            index: get_u32(&b, offset_of!(vfio_irq_set, index)),
            start: get_u32(&b, offset_of!(vfio_irq_set, start)),
            count: get_u32(&b, offset_of!(vfio_irq_set, count)),
        };
        let max = self.irqs().counts().of(hdr.index);
        let (ty, size) = set::validate(&hdr, max)?;
        let mut data = vec![0u8; usize::try_from(size).unwrap_or(0)];
        if size > 0 {
            copy_from(user, arg + offset_of!(vfio_irq_set, data) as u64, &mut data)?;
        }
        let data = IrqData::decode(ty, &data);
        self.irqs()
            .set_irqs(hdr.index, hdr.flags, hdr.start, hdr.count, &data)
    }

    /// `vfio_pci_ioctl_get_pci_hot_reset_info` for a function alone on a resettable slot.
    fn ioctl_hot_reset_info(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut b = [0u8; HOT_INFO_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, offset_of!(vfio_pci_hot_reset_info, argsz));
        argsz_check(argsz, HOT_INFO_MINSZ)?;
        put_u32(&mut b, offset_of!(vfio_pci_hot_reset_info, flags), 0);
        if !self.reset_works() {
            return Err(Error::Os {
                op: "hot reset",
                errno: libc::ENODEV,
            });
        }
        let count = 1u32;
        put_u32(&mut b, offset_of!(vfio_pci_hot_reset_info, count), count);
        let entry = u32_of(size_of::<vfio_pci_dependent_device>());
        let result = if count > (argsz - HOT_INFO_MINSZ) / entry {
            Err(Error::HotResetNoSpace { count })
        } else {
            let loc = self.spec().location;
            let mut d = [0u8; size_of::<vfio_pci_dependent_device>()];
            put_u32(&mut d, 0, loc.group);
            put_u16(
                &mut d,
                offset_of!(vfio_pci_dependent_device, segment),
                loc.segment,
            );
            d[offset_of!(vfio_pci_dependent_device, bus)] = loc.bus;
            d[offset_of!(vfio_pci_dependent_device, devfn)] = loc.devfn;
            copy_to(
                user,
                arg + offset_of!(vfio_pci_hot_reset_info, devices) as u64,
                &d,
            )
        };
        copy_to(user, arg, &b)?;
        result
    }

    /// `vfio_pci_ioctl_pci_hot_reset` with group fds (`vfio_pci_ioctl_pci_hot_reset_groups`).
    fn ioctl_hot_reset(
        &self,
        arg: u64,
        user: &mut dyn UserMemory,
        groups: &dyn GroupFds,
    ) -> Result<()> {
        let mut b = [0u8; HOT_RESET_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, offset_of!(vfio_pci_hot_reset, argsz));
        let flags = get_u32(&b, offset_of!(vfio_pci_hot_reset, flags));
        let count = get_u32(&b, offset_of!(vfio_pci_hot_reset, count));
        argsz_check(argsz, HOT_RESET_MINSZ)?;
        if flags != 0 {
            return Err(Error::InvalidFlags { flags });
        }
        // A group-opened device needs a non-empty array (empty is for cdev-opened devices).
        if count == 0 {
            return Err(Error::HotReset {
                reason: "zero-length group array",
            });
        }
        if !self.reset_works() {
            return Err(Error::Os {
                op: "hot reset",
                errno: libc::ENODEV,
            });
        }
        // One function affected: more fds than that is EINVAL.
        if count > 1 {
            return Err(Error::HotReset {
                reason: "more group fds than affected groups",
            });
        }
        // `__s32 group_fds[]`: the first one (one group per function here).
        let mut fdb = [0u8; size_of::<i32>()];
        copy_from(
            user,
            arg + offset_of!(vfio_pci_hot_reset, group_fds) as u64,
            &mut fdb,
        )?;
        let fd = i32::from_ne_bytes(fdb);
        match groups.kind(fd) {
            FdKind::NotOpen => Err(Error::BadFd { fd }),
            FdKind::NotGroup => Err(Error::NotGroup { fd }),
            FdKind::Group(g) if g != self.spec().location.group => Err(Error::HotReset {
                reason: "the device's group is not among the fds",
            }),
            FdKind::Group(_) => self.reset(),
        }
    }

    /// `vfio_ioctl_device_feature`: the wrapper's checks, then the migration and logging
    /// features (`vfio_ioctl_device_feature_migration`, `…_mig_device_state`,
    /// `…_migration_data_size`, `…_logging_start/stop/report`); any other index is `ENOTTY`
    /// (`vfio_pci_core_ioctl_feature`'s default).
    fn ioctl_feature(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut b = [0u8; FEATURE_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, offset_of!(vfio_device_feature, argsz));
        let flags = get_u32(&b, offset_of!(vfio_device_feature, flags));
        argsz_check(argsz, FEATURE_MINSZ)?;
        let known = VFIO_DEVICE_FEATURE_MASK
            | VFIO_DEVICE_FEATURE_SET
            | VFIO_DEVICE_FEATURE_GET
            | VFIO_DEVICE_FEATURE_PROBE;
        if flags & !known != 0 {
            return Err(Error::UnknownFlags { flags });
        }
        if flags & VFIO_DEVICE_FEATURE_PROBE == 0
            && flags & VFIO_DEVICE_FEATURE_SET != 0
            && flags & VFIO_DEVICE_FEATURE_GET != 0
        {
            return Err(Error::InvalidFlags { flags });
        }
        let feature = flags & VFIO_DEVICE_FEATURE_MASK;
        let data = arg + u64::from(FEATURE_MINSZ);
        let f = Feature {
            flags,
            argsz: argsz - FEATURE_MINSZ,
            data,
        };
        let mig = self.migration_flags() != 0;
        let log = self.spec().migration.dma_logging;
        let absent = Err(Error::NoFeature { feature });
        match feature {
            VFIO_DEVICE_FEATURE_MIGRATION if mig => self.feature_migration(&f, user),
            VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE if mig => self.feature_mig_state(&f, user),
            VFIO_DEVICE_FEATURE_MIG_DATA_SIZE if mig => self.feature_data_size(&f, user),
            VFIO_DEVICE_FEATURE_DMA_LOGGING_START if log => self.feature_log_start(&f, user),
            VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP if log => {
                if !f.check(VFIO_DEVICE_FEATURE_SET, 0)? {
                    return Ok(());
                }
                *self.dma().log() = None;
                Ok(())
            }
            VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT if log => self.feature_log_report(&f, user),
            _ => absent,
        }
    }

    /// `vfio_ioctl_device_feature_migration`: GET the flags.
    fn feature_migration(&self, f: &Feature, user: &mut dyn UserMemory) -> Result<()> {
        if !f.check(
            VFIO_DEVICE_FEATURE_GET,
            size_of::<vfio_device_feature_migration>(),
        )? {
            return Ok(());
        }
        let mut out = [0u8; size_of::<vfio_device_feature_migration>()];
        put_u64(
            &mut out,
            offset_of!(vfio_device_feature_migration, flags),
            u64::from(self.migration_flags()),
        );
        copy_to(user, f.data, &out)
    }

    /// `vfio_ioctl_device_feature_mig_device_state`: GET gives the state with `data_fd` −1;
    /// SET walks to the target and returns the new data fd of the last arc (else −1). On
    /// failure the struct is still copied back (the requested state, fd −1) before the error.
    fn feature_mig_state(&self, f: &Feature, user: &mut dyn UserMemory) -> Result<()> {
        const SZ: usize = size_of::<vfio_device_feature_mig_state>();
        if !f.check(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET, SZ)? {
            return Ok(());
        }
        let mut m = [0u8; SZ];
        copy_from(user, f.data, &mut m)?;
        let st = offset_of!(vfio_device_feature_mig_state, device_state);
        let fd_at = offset_of!(vfio_device_feature_mig_state, data_fd);
        put_u32(&mut m, fd_at, u32::MAX); // -1
        if f.flags & VFIO_DEVICE_FEATURE_GET != 0 {
            put_u32(&mut m, st, self.migration_state().raw());
            return copy_to(user, f.data, &m);
        }
        let target = get_u32(&m, st);
        match self.set_migration_state_v2(target) {
            Ok(Some(file)) => {
                m[fd_at..fd_at + 4].copy_from_slice(&file.fd().to_ne_bytes());
                if let Err(e) = copy_to(user, f.data, &m) {
                    // `vfio_ioct_mig_return_fd`: the fd is not installed, the file released.
                    self.drop_data_file(&file);
                    return Err(e);
                }
                Ok(())
            }
            Ok(None) => copy_to(user, f.data, &m),
            Err(e) => {
                copy_to(user, f.data, &m)?;
                Err(e)
            }
        }
    }

    /// `vfio_ioctl_device_feature_migration_data_size`.
    fn feature_data_size(&self, f: &Feature, user: &mut dyn UserMemory) -> Result<()> {
        const SZ: usize = size_of::<vfio_device_feature_mig_data_size>();
        if !f.check(VFIO_DEVICE_FEATURE_GET, SZ)? {
            return Ok(());
        }
        let mut out = [0u8; SZ];
        put_u64(
            &mut out,
            offset_of!(vfio_device_feature_mig_data_size, stop_copy_length),
            self.migration_data_size(),
        );
        copy_to(user, f.data, &out)
    }

    /// `vfio_ioctl_device_feature_logging_start`, then the driver's `log_start`.
    fn feature_log_start(&self, f: &Feature, user: &mut dyn UserMemory) -> Result<()> {
        type C = vfio_device_feature_dma_logging_control;
        type R = vfio_device_feature_dma_logging_range;
        if !f.check(VFIO_DEVICE_FEATURE_SET, size_of::<C>())? {
            return Ok(());
        }
        let mut c = [0u8; size_of::<C>()];
        copy_from(user, f.data, &mut c)?;
        let page_size = get_u64(&c, offset_of!(C, page_size));
        let count = get_u32(&c, offset_of!(C, num_ranges));
        let ranges_at = get_u64(&c, offset_of!(C, ranges));
        if count == 0 {
            return Err(Error::Logging {
                reason: "no ranges",
            });
        }
        if count > logging::MAX_RANGES {
            return Err(Error::TooManyRanges {
                count,
                max: logging::MAX_RANGES,
            });
        }
        let mask = page_size.wrapping_sub(1);
        // (start, last) as the kernel's interval-tree nodes, wrapping included.
        let mut nodes: Vec<(u64, u64)> = Vec::new();
        for i in 0..u64::from(count) {
            let mut r = [0u8; size_of::<R>()];
            copy_from(
                user,
                ranges_at.wrapping_add(i * size_of::<R>() as u64),
                &mut r,
            )?;
            let iova = get_u64(&r, offset_of!(R, iova));
            let length = get_u64(&r, offset_of!(R, length));
            if iova & mask != 0 || length & mask != 0 {
                return Err(Error::Logging {
                    reason: "range not aligned to page_size",
                });
            }
            if iova.checked_add(length).is_none() {
                return Err(Error::RangeOverflow { iova, length });
            }
            let node = (iova, iova.wrapping_add(length).wrapping_sub(1));
            if nodes.iter().any(|&(s, l)| s <= node.1 && l >= node.0) {
                return Err(Error::Logging {
                    reason: "overlapping ranges",
                });
            }
            nodes.push(node);
        }
        let chosen = logging::chosen_page_size(page_size);
        {
            let mut log = self.dma().log();
            if log.is_some() {
                return Err(Error::Logging {
                    reason: "already started",
                });
            }
            let ranges: Vec<(u64, u64)> = nodes
                .iter()
                .filter(|&&(s, l)| l >= s)
                .map(|&(s, l)| (s, l - s + 1))
                .collect();
            *log = Some(logging::DirtyLog::new(chosen, &ranges));
        }
        put_u64(&mut c, offset_of!(C, page_size), chosen);
        if let Err(e) = copy_to(user, f.data, &c) {
            *self.dma().log() = None;
            return Err(e);
        }
        Ok(())
    }

    /// `vfio_ioctl_device_feature_logging_report`, then the driver's `log_read_and_clear`.
    fn feature_log_report(&self, f: &Feature, user: &mut dyn UserMemory) -> Result<()> {
        type P = vfio_device_feature_dma_logging_report;
        if !f.check(VFIO_DEVICE_FEATURE_GET, size_of::<P>())? {
            return Ok(());
        }
        let mut p = [0u8; size_of::<P>()];
        copy_from(user, f.data, &mut p)?;
        let iova = get_u64(&p, offset_of!(P, iova));
        let length = get_u64(&p, offset_of!(P, length));
        let page_size = get_u64(&p, offset_of!(P, page_size));
        let bitmap = get_u64(&p, offset_of!(P, bitmap));
        if page_size < logging::MIN_PAGE || !page_size.is_power_of_two() {
            return Err(Error::Logging {
                reason: "report page_size below 4 KiB or not a power of two",
            });
        }
        if iova.checked_add(length).is_none() {
            return Err(Error::RangeOverflow { iova, length });
        }
        let mut log = self.dma().log();
        let Some(l) = log.as_mut() else {
            return Err(Error::Logging {
                reason: "report before START",
            });
        };
        if length == 0 {
            return Ok(());
        }
        // `iova_bitmap_get` pins the bitmap before reading the log: a bad pointer faults
        // with the log intact.
        let mut first = [0u8; 8];
        copy_from(user, bitmap, &mut first)?;
        copy_to(user, bitmap, &first)?;
        for (w, bits) in l.report(iova, length, page_size) {
            let at = bitmap.wrapping_add(w * 8);
            let mut cur = [0u8; 8];
            copy_from(user, at, &mut cur)?;
            let v = u64::from_le_bytes(cur) | bits;
            copy_to(user, at, &v.to_le_bytes())?;
        }
        Ok(())
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO` (and every other ioctl) on a data fd: what the drop-in
    /// calls when it routes an `ioctl` on `file`'s fd (mtty's `mtty_precopy_ioctl`).
    ///
    /// # Errors
    /// `ENOTTY` for another request, `EFAULT`, `EINVAL` for a short `argsz` or outside
    /// PRE_COPY/PRE_COPY_P2P, `ENODEV` once the transfer ended.
    pub fn data_file_ioctl(
        &self,
        file: &DataFile,
        request: u64,
        arg: u64,
        user: &mut dyn UserMemory,
    ) -> Result<i64> {
        const SZ: usize = size_of::<vfio_precopy_info>();
        if request != VFIO_MIG_GET_PRECOPY_INFO {
            return Err(Error::NotTty { request });
        }
        let mut b = [0u8; SZ];
        copy_from(user, arg, &mut b)?;
        argsz_check(
            get_u32(&b, offset_of!(vfio_precopy_info, argsz)),
            u32_of(SZ),
        )?;
        if !matches!(
            self.migration_state(),
            MigState::PreCopy | MigState::PreCopyP2p
        ) {
            return Err(Error::Migration {
                reason: "PRECOPY_INFO outside PRE_COPY and PRE_COPY_P2P",
            });
        }
        let (initial, dirty) = file.transfer().precopy_info()?;
        put_u64(
            &mut b,
            offset_of!(vfio_precopy_info, initial_bytes),
            initial,
        );
        put_u64(&mut b, offset_of!(vfio_precopy_info, dirty_bytes), dirty);
        copy_to(user, arg, &b)?;
        Ok(0)
    }
}

/// A feature call: flags, payload size and address.
struct Feature {
    flags: u32,
    argsz: u32,
    data: u64,
}

impl Feature {
    /// `vfio_check_feature`: `Ok(false)` for PROBE (the ioctl returns 0), `Ok(true)` to go on.
    fn check(&self, supported: u32, minsz: usize) -> Result<bool> {
        let ops = self.flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET);
        if ops & !supported != 0 {
            return Err(Error::InvalidFlags { flags: self.flags });
        }
        if self.flags & VFIO_DEVICE_FEATURE_PROBE != 0 {
            return Ok(false);
        }
        if ops == 0 {
            return Err(Error::InvalidFlags { flags: self.flags });
        }
        if (self.argsz as usize) < minsz {
            return Err(Error::ArgszTooSmall {
                argsz: self.argsz,
                minsz: u32_of(minsz),
            });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_uapi() {
        assert_eq!(VFIO_DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, 0x3b70);
        assert_eq!(VFIO_DEVICE_PCI_HOT_RESET, 0x3b71);
        assert_eq!(VFIO_DEVICE_FEATURE, 0x3b75);
        assert_eq!(VFIO_MIG_GET_PRECOPY_INFO, 0x3b79);
    }

    #[test]
    fn minimum_sizes_match_the_uapi() {
        assert_eq!(INFO_MINSZ, 16);
        assert_eq!(REGION_MINSZ, 32);
        assert_eq!(IRQ_INFO_MINSZ, 16);
        assert_eq!(HOT_INFO_MINSZ, 12);
        assert_eq!(HOT_RESET_MINSZ, 12);
        assert_eq!(FEATURE_MINSZ, 8);
    }
}
