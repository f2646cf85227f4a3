//! The engine against the reference model, operation by operation: the driver shared by the
//! differential property test and the `ops_vs_model` fuzz target.
//!
//! A [`Rig`] holds an engine container (over a [`FakeMemory`] with a contiguous RAM region, a
//! scattered region and a read-only region) and a [`Model`] of the same setup; [`step`] applies
//! one [`Op`] to both and panics on the first difference in a result, errno, returned size,
//! bitmap, mapping list, `dma_avail`, locked-memory charge or engine invariant.
#![allow(clippy::missing_panics_doc, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use super::{Model, ModelDevice};
use crate::dirty::test_bit;
use crate::mm::{Backing, FakeMemory, FakeRegion, Layout, LockCapability, Mm, Writable};
use crate::{
    Container, ContainerConfig, DeviceId, DmaUnmapHandler, GroupId, GroupSpec, MapDma, MapFlags,
    PinProt, RwDirection, UnmapDma, UnmapFlags, Version,
};

const SZ_4K: u64 = 4096;
/// Contiguous RAM (64 MiB).
pub const RAM: u64 = 0x7f00_0000_0000;
const RAM_LEN: u64 = 64 << 20;
/// 1 MiB of physically scattered pages.
pub const SCATTERED: u64 = 0x7e00_0000_0000;
/// 1 MiB, read-only.
pub const RO: u64 = 0x7d00_0000_0000;
/// Mapping slots.
pub const SLOTS: u64 = 24;
/// Bytes per slot.
pub const SLOT: u64 = 16 * SZ_4K;

/// Whether the rig's memory can pin `vaddr` for `write`.
#[must_use]
pub fn mem(vaddr: u64, write: bool) -> bool {
    let inr = |base: u64, len: u64| vaddr >= base && vaddr < base + len;
    inr(RAM, RAM_LEN) || inr(SCATTERED, 1 << 20) || (inr(RO, 1 << 20) && !write)
}

/// The IOVA of a slot: mostly low addresses; two slots straddle or follow the MSI window.
#[must_use]
pub fn iova_of(slot: u64) -> u64 {
    match slot {
        22 => 0xfee0_0000 - 8 * SZ_4K,
        23 => 0xfef0_0000,
        s => s * SLOT,
    }
}

/// One operation on both sides.
#[derive(Debug, Clone)]
pub enum Op {
    /// MAP_DMA from source `src` (0 RAM, 1 scattered, 2 read-only, 3 unbacked) at page `off`.
    Map {
        /// Slot.
        slot: u64,
        /// Source region.
        src: u8,
        /// Page offset in it.
        off: u64,
        /// Pages.
        pages: u64,
        /// `VFIO_DMA_MAP_FLAG_*` bits.
        flags: u8,
    },
    /// UNMAP_DMA at page `at`.
    Unmap {
        /// Page.
        at: u64,
        /// Pages.
        pages: u64,
        /// `VFIO_DMA_UNMAP_FLAG_*` bits.
        flags: u8,
    },
    /// `pin_pages` by the IOMMU group's or the emulated group's device.
    Pin {
        /// The IOMMU group's device (else the emulated one, if present).
        iommu_dev: bool,
        /// Page.
        at: u64,
        /// Pages.
        n: u64,
        /// 1 read, 2 write, 3 both.
        prot: u8,
    },
    /// `unpin_pages`.
    Unpin {
        /// Which device.
        iommu_dev: bool,
        /// Page.
        at: u64,
        /// Pages.
        n: u64,
    },
    /// `dma_rw` write of `len` bytes at `at`.
    Rw {
        /// IOVA.
        at: u64,
        /// Bytes.
        len: u64,
    },
    /// DIRTY_PAGES START.
    Start,
    /// DIRTY_PAGES STOP.
    Stop,
    /// GET_BITMAP.
    Get {
        /// Page.
        at: u64,
        /// Pages.
        pages: u64,
    },
    /// Detach the IOMMU group (only with an emulated group).
    Detach,
    /// Attach it again.
    Attach,
}

/// Releases every pin its device holds in an unmapped range, like a real mdev driver.
#[derive(Debug, Default)]
struct Cooperative {
    c: Mutex<Option<Weak<Container>>>,
    id: Mutex<Option<DeviceId>>,
}

impl DmaUnmapHandler for Cooperative {
    fn dma_unmap(&self, iova: u64, length: u64) {
        let c = self
            .c
            .lock()
            .unwrap()
            .as_ref()
            .and_then(Weak::upgrade)
            .unwrap();
        let id = self.id.lock().unwrap().unwrap();
        for p in (iova..iova + length).step_by(4096) {
            while c.unpin_pages(id, p, 1).is_ok() {}
        }
    }
}

/// The engine and the model, side by side.
#[derive(Debug)]
pub struct Rig {
    c: Arc<Container>,
    mem: Arc<FakeMemory>,
    mm: Arc<Mm>,
    m: Model,
    emu: Option<DeviceId>,
    iommu: DeviceId,
    with_emulated: bool,
}

fn register(c: &Arc<Container>, group: u32) -> DeviceId {
    let d = Arc::new(Cooperative::default());
    *d.c.lock().unwrap() = Some(Arc::downgrade(c));
    let id = c.register_device(GroupId(group), Some(d.clone())).unwrap();
    *d.id.lock().unwrap() = Some(id);
    id
}

/// A rig: IOMMU group 1 and (if `with_emulated`) emulated group 2, one device each, a limit of
/// 20 mappings, no locked-memory limit, strict invalidation.
///
/// # Panics
/// Never for these constant setups.
#[must_use]
pub fn rig(version: Version, with_emulated: bool) -> Rig {
    let ty = match version {
        Version::V2 => crate::uapi::raw::VFIO_TYPE1v2_IOMMU,
        Version::V1 => crate::uapi::raw::VFIO_TYPE1_IOMMU,
    };
    let mem = Arc::new(FakeMemory::new());
    mem.add_ram(RAM, RAM_LEN, 0x1_0000_0000);
    for (vaddr, pa, layout, writable) in [
        (SCATTERED, 0x2_0000_0000, Layout::Scattered, Writable::Yes),
        (RO, 0x3_0000_0000, Layout::Contiguous, Writable::No),
    ] {
        mem.add_region(FakeRegion {
            vaddr,
            len: 1 << 20,
            pa,
            layout,
            backing: Backing::Normal,
            writable,
        });
    }
    let mm = Arc::new(Mm::new(
        Box::new(mem.clone()),
        None,
        LockCapability::Limited,
    ));
    let cfg = ContainerConfig {
        dma_entry_limit: 20,
        ..ContainerConfig::default()
    };
    let c = Arc::new(Container::new(cfg, mm.clone()));
    c.set_group(GroupSpec::iommu(1)).unwrap();
    if with_emulated {
        c.set_group(GroupSpec::emulated(2)).unwrap();
    }
    c.set_iommu(u64::from(ty)).unwrap();
    let iommu = register(&c, 1);
    let emu = with_emulated.then(|| register(&c, 2));
    Rig {
        m: Model::new(version, 20, None, true, with_emulated),
        c,
        mem,
        mm,
        emu,
        iommu,
        with_emulated,
    }
}

fn bits_of(words: &[u64], n: u64) -> BTreeSet<u64> {
    (0..n).filter(|&i| test_bit(words, i)).collect()
}

fn errno<T>(r: crate::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

impl Rig {
    /// The engine's GET_BITMAP over `pages` pages from page `at` (for debugging).
    pub fn debug_bitmap(
        &self,
        at: u64,
        pages: u64,
    ) -> (crate::Result<Vec<u64>>, Vec<crate::MappingInfo>) {
        (
            self.c.dirty_bitmap(at * SZ_4K, pages * SZ_4K, SZ_4K),
            self.c.mappings(),
        )
    }
}

/// Applies `op` to the engine and the model and compares everything.
///
/// # Panics
/// On the first difference (that is the point).
pub fn step(r: &mut Rig, op: &Op) {
    if std::env::var_os("TYPE1_DIFF_DEBUG").is_some() {
        eprintln!("op {op:?} mappings {:?}", r.m.mappings());
    }
    let c = &r.c;
    match *op {
        Op::Map {
            slot,
            src,
            off,
            pages,
            flags,
        } => {
            let vaddr = [RAM, SCATTERED, RO, 0x1000_0000][usize::from(src)] + off * SZ_4K;
            let f = MapFlags::from_bits_truncate(u32::from(flags));
            let (iova, size) = (iova_of(slot), pages * SZ_4K);
            let got = errno(c.map_dma(&MapDma {
                vaddr,
                iova,
                size,
                flags: f,
            }))
            .map(|()| 0);
            let want = r.m.map(
                vaddr,
                iova,
                size,
                f.contains(MapFlags::READ),
                f.contains(MapFlags::WRITE),
                f.contains(MapFlags::VADDR),
                &mem,
            );
            assert_eq!(got, want, "{op:?}");
        }
        Op::Unmap { at, pages, flags } => {
            let f = UnmapFlags::from_bits_truncate(u32::from(flags));
            let (iova, size) = if f.contains(UnmapFlags::ALL) {
                (0, 0)
            } else {
                (at * SZ_4K, pages * SZ_4K)
            };
            let want = r.m.unmap(
                iova,
                size,
                f.contains(UnmapFlags::ALL),
                f.contains(UnmapFlags::VADDR),
                f.contains(UnmapFlags::GET_DIRTY_BITMAP),
            );
            let got = if f.contains(UnmapFlags::GET_DIRTY_BITMAP) {
                if f.intersects(UnmapFlags::ALL | UnmapFlags::VADDR) || size == 0 {
                    Err(libc::EINVAL)
                } else {
                    errno(c.unmap_dma_dirty(iova, size, SZ_4K))
                        .map(|(n, w)| (n, bits_of(&w, size / SZ_4K)))
                }
            } else {
                errno(c.unmap_dma(&UnmapDma {
                    iova,
                    size,
                    flags: f,
                    bitmap_pgsize: 0,
                }))
                .map(|n| (n, BTreeSet::new()))
            };
            assert_eq!(got, want, "{op:?}");
        }
        Op::Pin {
            iommu_dev,
            at,
            n,
            prot,
        } => {
            let (dev, md) = match (iommu_dev, r.emu) {
                (false, Some(e)) => (e, ModelDevice::Emulated),
                _ => (r.iommu, ModelDevice::Iommu),
            };
            let p = match prot {
                1 => PinProt::Read,
                2 => PinProt::Write,
                _ => PinProt::ReadWrite,
            };
            let got = errno(c.pin_pages(dev, at * SZ_4K, n, p)).map(|v| v.len() as u64);
            let want =
                r.m.pin(md, at * SZ_4K, n, prot & 1 != 0, prot & 2 != 0, &mem);
            assert_eq!(got, want, "{op:?}");
        }
        Op::Unpin { iommu_dev, at, n } => {
            let (dev, md) = match (iommu_dev, r.emu) {
                (false, Some(e)) => (e, ModelDevice::Emulated),
                _ => (r.iommu, ModelDevice::Iommu),
            };
            let got = errno(c.unpin_pages(dev, at * SZ_4K, n)).map(|()| n);
            let want = r.m.unpin(md, at * SZ_4K, n);
            assert_eq!(got.is_ok(), want.is_ok(), "{op:?}: {got:?} vs {want:?}");
        }
        Op::Rw { at, len } => {
            let (dev, md) = match r.emu {
                Some(e) => (e, ModelDevice::Emulated),
                None => (r.iommu, ModelDevice::Iommu),
            };
            let mut buf = vec![0xa5u8; usize::try_from(len).unwrap()];
            let got = errno(c.dma_rw(dev, at, &mut buf, RwDirection::Write)).map(|()| len);
            let want = r.m.rw_write(md, at, len, &mem);
            assert_eq!(got, want, "{op:?}");
        }
        Op::Start => assert_eq!(errno(c.dirty_start()).map(|()| 0), r.m.set_tracking(true)),
        Op::Stop => assert_eq!(errno(c.dirty_stop()).map(|()| 0), r.m.set_tracking(false)),
        Op::Get { at, pages } => {
            let (iova, size) = (at * SZ_4K, pages * SZ_4K);
            let got = errno(c.dirty_bitmap(iova, size, SZ_4K)).map(|w| bits_of(&w, pages));
            let want = r.m.get_bitmap(iova, size);
            assert_eq!(got, want, "{op:?}");
        }
        Op::Detach => {
            if r.with_emulated && c.groups().contains(&GroupId(1)) {
                c.unset_group(GroupId(1)).unwrap();
                r.m.detach_iommu();
            }
        }
        Op::Attach => {
            if r.with_emulated && !c.groups().contains(&GroupId(1)) {
                let got = errno(c.set_group(GroupSpec::iommu(1))).map(|()| 0);
                let want = r.m.attach_iommu(&mem);
                // The device stays registered across its group's unset and set.
                assert_eq!(got, want, "{op:?}");
            }
        }
    }
    // Observable state agrees, and the engine's invariants hold.
    if let Err(e) = c.check_invariants() {
        panic!("invariant broken after {op:?}: {e}");
    }
    assert_eq!(r.mem.bad_unpins(), 0, "unbalanced unpin after {op:?}");
    let got: Vec<(u64, u64)> = c.mappings().iter().map(|m| (m.iova, m.size)).collect();
    assert_eq!(got, r.m.mappings(), "mappings after {op:?}");
    assert_eq!(u64::from(c.info().unwrap().dma_avail), r.m.dma_avail());
    assert_eq!(
        r.mm.locked_pages(),
        r.m.locked_pages(),
        "locked pages after {op:?}"
    );
}
