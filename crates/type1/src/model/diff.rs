//! The engine against the reference model, operation by operation: the driver shared by the
//! differential property test and the `ops_vs_model` fuzz target.
//!
//! A [`Rig`] holds an engine container (over a [`FakeMemory`] with a contiguous RAM region, a
//! scattered region and a read-only region, and a [`ManualClock`]) and a [`Model`] of the same
//! setup ([`RigConfig`]); [`step`] applies one [`Op`] to both and panics on the first
//! difference in a result, errno, returned size, bitmap, device DMA outcome, mapping list,
//! `dma_avail`, domain count, locked-memory charge, pending release or engine invariant.
//!
//! Panicking is the point here: this is a test driver, built only with `test-support`.
#![allow(clippy::missing_panics_doc, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use io_pgtable::testing::ManualClock;
use io_pgtable::tlb::FlushQueueConfig;
use io_pgtable::{Fault, InvalidationPolicy};

use super::{DevFault, Dom, Lazy, Model, ModelConfig, ModelDevice, ModelMemory};

mod apply;

use crate::dirty::test_bit;
use crate::mm::{Backing, FakeMemory, FakeRegion, Layout, LockCapability, Mm, Writable};
use crate::{
    Access, Container, ContainerConfig, DeviceId, DirtyMode, DmaError, DmaUnmapHandler, GroupId,
    GroupKind, GroupSpec, IommuDesc, Iova, MapDma, MapFlags, Perm, UnmapDma, UnmapFlags, Vaddr,
    Version,
};
use apply::finish;
pub use apply::step;

const SZ_4K: u64 = 4096;
/// Contiguous RAM (64 MiB).
pub const RAM: u64 = 0x7f00_0000_0000;
const RAM_LEN: u64 = 64 << 20;
/// 1 MiB of physically scattered pages.
pub const SCATTERED: u64 = 0x7e00_0000_0000;
/// 1 MiB, read-only.
pub const RO: u64 = 0x7d00_0000_0000;
/// Mapping slots.
pub const SLOTS: u64 = 27;
/// The slot for mappings of 2 MiB and more (IOVA 1 GiB), so domains map blocks.
pub const BIG_SLOT: u64 = 26;
/// Bytes per slot.
pub const SLOT: u64 = 16 * SZ_4K;
/// `dma_entry_limit` of the rig.
pub const DMA_LIMIT: u32 = 20;
/// Lazy invalidation: ring size (it holds one entry less) and timer, in milliseconds.
pub const FQ_SIZE: usize = 4;
/// Timer of the lazy flush ring, in milliseconds of the manual clock.
pub const FQ_TIMEOUT_MS: u64 = 10;

const GROUP_A: u32 = 1;
const GROUP_EMULATED: u32 = 2;
const GROUP_B: u32 = 3;

/// The rig's address space, as the model sees it.
#[derive(Debug, Clone, Copy)]
pub struct RigMemory;

fn in_region(vaddr: u64, base: u64, len: u64) -> bool {
    vaddr >= base && vaddr < base + len
}

impl ModelMemory for RigMemory {
    fn pinnable(&self, vaddr: u64, write: bool) -> bool {
        in_region(vaddr, RAM, RAM_LEN)
            || in_region(vaddr, SCATTERED, 1 << 20)
            || (in_region(vaddr, RO, 1 << 20) && !write)
    }

    fn continues_run(&self, vaddr: u64) -> bool {
        let prev = vaddr.wrapping_sub(SZ_4K);
        (in_region(vaddr, RAM, RAM_LEN) && in_region(prev, RAM, RAM_LEN))
            || (in_region(vaddr, RO, 1 << 20) && in_region(prev, RO, 1 << 20))
    }
}

/// Whether the rig's memory can pin `vaddr` for `write`.
#[must_use]
pub fn mem(vaddr: u64, write: bool) -> bool {
    RigMemory.pinnable(vaddr, write)
}

/// The IOVA of a slot: mostly low addresses; two slots straddle or follow the MSI window, one
/// is above group B's aperture, one above every aperture (valid only without IOMMU groups), and
/// [`BIG_SLOT`] is at 1 GiB.
#[must_use]
pub fn iova_of(slot: u64) -> u64 {
    match slot {
        22 => 0xfee0_0000 - 8 * SZ_4K,
        23 => 0xfef0_0000,
        24 => 1 << 40,
        25 => 1 << 50,
        BIG_SLOT => 1 << 30,
        s => s * SLOT,
    }
}

/// A rig setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RigConfig {
    /// Type1 or type1v2.
    pub version: Version,
    /// An emulated group (group 2) with a device.
    pub emulated: bool,
    /// A second IOMMU-backed group (group 3, stage 2, no hardware dirty bits, 39-bit aperture:
    /// its own domain).
    pub second_domain: bool,
    /// Precise dirty mode.
    pub precise: bool,
    /// Lazy invalidation ([`FQ_SIZE`], [`FQ_TIMEOUT_MS`]).
    pub lazy: bool,
    /// Locked-memory limit in pages.
    pub memlock_pages: Option<u64>,
    /// The emulated device ignores unmap notifications (a driver that does not unpin).
    pub stubborn_emulated: bool,
}

impl RigConfig {
    /// One IOMMU group, kernel-exact, strict, unlimited; `emulated` as given.
    #[must_use]
    pub fn basic(version: Version, emulated: bool) -> Self {
        RigConfig {
            version,
            emulated,
            second_domain: false,
            precise: false,
            lazy: false,
            memlock_pages: None,
            stubborn_emulated: false,
        }
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
    /// `pin_pages` by a device.
    Pin {
        /// 0: the emulated group's (or A's without one), 1: group A's, 2: group B's (or A's).
        dev: u8,
        /// Page.
        at: u64,
        /// Pages.
        n: u64,
        /// 1 read, 2 write, 3 both.
        prot: u8,
    },
    /// `unpin_pages`.
    Unpin {
        /// Which device, as for [`Op::Pin`].
        dev: u8,
        /// Page.
        at: u64,
        /// Pages.
        n: u64,
    },
    /// `dma_rw` write of `len` bytes at `at` (by the emulated device, else A's).
    Rw {
        /// IOVA.
        at: u64,
        /// Bytes.
        len: u64,
    },
    /// A DMA through an IOMMU domain by the device of group A (`b` false) or B, at `off` bytes
    /// from the start of the `nth` mapping (modulo their number; from IOVA 0 without any).
    Dma {
        /// Group B's device.
        b: bool,
        /// Which mapping.
        nth: u8,
        /// Offset from its start, in bytes.
        off: u64,
        /// Bytes.
        len: u64,
        /// Write (else read).
        write: bool,
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
    /// Detach IOMMU group A (`b` false) or B, unless it is the container's last group.
    Detach {
        /// Group B.
        b: bool,
    },
    /// Attach it again (if the rig has it).
    Attach {
        /// Group B.
        b: bool,
    },
    /// The manual clock moves on (lazy flush timers).
    Tick {
        /// Milliseconds.
        ms: u64,
    },
    /// Flush every domain now.
    Flush,
    /// A device unregisters (releasing its pins) and registers again.
    Reregister {
        /// Which device, as for [`Op::Pin`].
        dev: u8,
    },
}

/// Releases every pin its device holds in an unmapped range, like a real mdev driver, unless
/// `stubborn`.
#[derive(Debug, Default)]
struct Cooperative {
    c: Mutex<Option<Weak<Container>>>,
    id: Mutex<Option<DeviceId>>,
    stubborn: bool,
    /// Counts the notifications it gets.
    counter: Option<Arc<AtomicU64>>,
}

impl DmaUnmapHandler for Cooperative {
    fn dma_unmap(&self, iova: Iova, length: u64) {
        let iova = iova.raw();
        if let Some(n) = &self.counter {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if self.stubborn {
            return;
        }
        let c = self
            .c
            .lock()
            .unwrap()
            .as_ref()
            .and_then(Weak::upgrade)
            .unwrap();
        let id = self.id.lock().unwrap().unwrap();
        for p in (iova..iova + length).step_by(4096) {
            while c.unpin_pages(id, Iova(p), 1).is_ok() {}
        }
    }
}

/// The engine and the model, side by side.
#[derive(Debug)]
pub struct Rig {
    cfg: RigConfig,
    c: Arc<Container>,
    mem: Arc<FakeMemory>,
    mm: Arc<Mm>,
    clock: Arc<ManualClock>,
    m: Model,
    emu: Option<DeviceId>,
    dev_a: DeviceId,
    dev_b: Option<DeviceId>,
    /// Unmap notifications group A's device got (every device gets each one).
    notifications: Arc<AtomicU64>,
}

fn register(
    c: &Arc<Container>,
    group: u32,
    stubborn: bool,
    counter: Option<Arc<AtomicU64>>,
) -> DeviceId {
    let d = Arc::new(Cooperative {
        stubborn,
        counter,
        ..Cooperative::default()
    });
    *d.c.lock().unwrap() = Some(Arc::downgrade(c));
    let id = c.register_device(GroupId(group), Some(d.clone())).unwrap();
    *d.id.lock().unwrap() = Some(id);
    id
}

/// Group B: the x86 MSI window, a 39-bit aperture, a stage-2 table from another driver, so it
/// cannot share group A's domain, has no hardware dirty bits, and can map write-only.
fn group_b() -> GroupSpec {
    let mut desc = IommuDesc::x86_default();
    desc.ops = 2;
    desc.aperture.end = Dom::B.aperture_end();
    desc.table = io_pgtable::Config::new(
        io_pgtable::Format::ArmLpaeS2,
        (1 << 12) | (1 << 21) | (1 << 30),
        48,
        48,
    );
    GroupSpec {
        id: GroupId(GROUP_B),
        kind: GroupKind::Iommu(desc),
    }
}

fn spec(d: Dom) -> GroupSpec {
    match d {
        Dom::A => GroupSpec::iommu(GROUP_A),
        Dom::B => group_b(),
    }
}

fn group_id(d: Dom) -> GroupId {
    GroupId(match d {
        Dom::A => GROUP_A,
        Dom::B => GROUP_B,
    })
}

/// A rig of `cfg`: IOMMU group 1 (A), emulated group 2 and IOMMU group 3 (B) as configured, one
/// device each, a limit of [`DMA_LIMIT`] mappings.
///
/// # Panics
/// Never for these constant setups.
#[must_use]
pub fn rig_with(cfg: RigConfig) -> Rig {
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
        cfg.memlock_pages.map(|p| p * SZ_4K),
        LockCapability::Limited,
    ));
    let clock = Arc::new(ManualClock::default());
    let ccfg = ContainerConfig {
        dma_entry_limit: DMA_LIMIT,
        invalidation: if cfg.lazy {
            InvalidationPolicy::Lazy(FlushQueueConfig {
                size: FQ_SIZE,
                timeout: Duration::from_millis(FQ_TIMEOUT_MS),
            })
        } else {
            InvalidationPolicy::Strict
        },
        clock: clock.clone(),
        dirty_mode: if cfg.precise {
            DirtyMode::Precise
        } else {
            DirtyMode::KernelExact
        },
        ..ContainerConfig::default()
    };
    let c = Arc::new(Container::new(ccfg, mm.clone()));
    c.set_group(spec(Dom::A)).unwrap();
    if cfg.emulated {
        c.set_group(GroupSpec::emulated(GROUP_EMULATED)).unwrap();
    }
    if cfg.second_domain {
        c.set_group(group_b()).unwrap();
    }
    c.set_iommu(cfg.version).unwrap();
    let notifications = Arc::new(AtomicU64::new(0));
    let dev_a = register(&c, GROUP_A, false, Some(notifications.clone()));
    let emu = cfg
        .emulated
        .then(|| register(&c, GROUP_EMULATED, cfg.stubborn_emulated, None));
    let dev_b = cfg
        .second_domain
        .then(|| register(&c, GROUP_B, false, None));
    let m = Model::new(ModelConfig {
        version: cfg.version,
        dma_limit: DMA_LIMIT,
        locked_limit: cfg.memlock_pages,
        emulated: cfg.emulated,
        second_domain: cfg.second_domain,
        precise: cfg.precise,
        lazy: cfg.lazy.then_some(Lazy {
            capacity: FQ_SIZE - 1,
            timeout: FQ_TIMEOUT_MS,
        }),
        stubborn_emulated: cfg.stubborn_emulated,
    });
    Rig {
        cfg,
        c,
        mem,
        mm,
        clock,
        m,
        emu,
        dev_a,
        dev_b,
        notifications,
    }
}

/// A rig with IOMMU group A and (if `with_emulated`) an emulated group: kernel-exact dirty
/// mode, strict invalidation, no locked-memory limit.
#[must_use]
pub fn rig(version: Version, with_emulated: bool) -> Rig {
    rig_with(RigConfig::basic(version, with_emulated))
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
            self.c.dirty_bitmap(Iova(at * SZ_4K), pages * SZ_4K, SZ_4K),
            self.c.mappings(),
        )
    }

    /// The setup.
    #[must_use]
    pub fn config(&self) -> RigConfig {
        self.cfg
    }

    /// The engine's container.
    #[must_use]
    pub fn container(&self) -> &Arc<Container> {
        &self.c
    }

    /// GET_BITMAP over `pages` pages from page `at` on both sides (compared, as [`step`] does):
    /// the pages reported, relative to `at`.
    ///
    /// # Errors
    /// The errno both sides agree on.
    pub fn get_bitmap(&mut self, at: u64, pages: u64) -> Result<BTreeSet<u64>, i32> {
        let (iova, size) = (at * SZ_4K, pages * SZ_4K);
        let got = errno(self.c.dirty_bitmap(Iova(iova), size, SZ_4K)).map(|w| bits_of(&w, pages));
        let want = self.m.get_bitmap(iova, size);
        let op = Op::Get { at, pages };
        assert_eq!(got, want, "{op:?}");
        finish(self, &op);
        want
    }

    /// The engine's owner (locked and pending pages).
    #[must_use]
    pub fn mm(&self) -> &Arc<Mm> {
        &self.mm
    }

    /// The device for `dev` (see [`Op::Pin`]) on both sides.
    fn device(&self, dev: u8) -> (DeviceId, ModelDevice) {
        match (dev, self.emu, self.dev_b) {
            (0, Some(e), _) => (e, ModelDevice::Emulated),
            (2, _, Some(b)) => (b, ModelDevice::Iommu(Dom::B)),
            _ => (self.dev_a, ModelDevice::Iommu(Dom::A)),
        }
    }

    /// The container keeps a group if `d` leaves.
    fn may_detach(&self, d: Dom) -> bool {
        let others = [Dom::A, Dom::B]
            .into_iter()
            .filter(|&o| o != d && self.m.attached(o))
            .count();
        self.m.attached(d) && (others > 0 || self.m.emulated_attached())
    }
}
