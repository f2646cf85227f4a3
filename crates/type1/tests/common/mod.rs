//! Test harness: a container over fake memory whose every step is checked.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use type1::mm::{Backing, FakeMemory, FakeRegion, Layout, LockCapability, Mm, Writable};
use type1::uapi::raw;
use type1::{
    Container, ContainerConfig, Error, GroupSpec, MapDma, MapFlags, Result, UnmapDma, UnmapFlags,
    Version,
};
use type1::{Iova, Vaddr};

pub const SZ_4K: u64 = 1 << 12;
pub const SZ_2M: u64 = 1 << 21;
pub const SZ_1G: u64 = 1 << 30;
/// Contiguous RAM: 64 MiB at this vaddr, physically at RAM_PA.
pub const RAM: u64 = 0x7f00_0000_0000;
pub const RAM_LEN: u64 = 64 << 20;
pub const RAM_PA: u64 = 0x1_0000_0000;
/// 1 MiB whose pages are all physically discontiguous.
pub const SCATTERED: u64 = 0x7e00_0000_0000;
/// 1 MiB read-only.
pub const RO: u64 = 0x7d00_0000_0000;
/// 1 MiB of reserved (PFNMAP) pages, e.g. a BAR.
pub const BAR: u64 = 0x7c00_0000_0000;
pub const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);
pub const V1: u64 = raw::VFIO_TYPE1_IOMMU as u64;
pub const V2: u64 = raw::VFIO_TYPE1v2_IOMMU as u64;

pub fn fake_memory() -> Arc<FakeMemory> {
    let m = Arc::new(FakeMemory::new());
    m.add_ram(RAM, RAM_LEN, RAM_PA);
    m.add_region(FakeRegion {
        vaddr: SCATTERED,
        len: 1 << 20,
        pa: 0x2_0000_0000,
        layout: Layout::Scattered,
        backing: Backing::Normal,
        writable: Writable::Yes,
    });
    m.add_region(FakeRegion {
        vaddr: RO,
        len: 1 << 20,
        pa: 0x3_0000_0000,
        layout: Layout::Contiguous,
        backing: Backing::Normal,
        writable: Writable::No,
    });
    m.add_region(FakeRegion {
        vaddr: BAR,
        len: 1 << 20,
        pa: 0x4_0000_0000,
        layout: Layout::Contiguous,
        backing: Backing::Reserved,
        writable: Writable::Yes,
    });
    m
}

pub struct H {
    pub c: Arc<Container>,
    pub mem: Arc<FakeMemory>,
    pub mm: Arc<Mm>,
}

impl H {
    /// A container with `groups` and the given type set, limit in bytes (None: unlimited).
    pub fn with(groups: Vec<GroupSpec>, ty: u64, limit: Option<u64>, cfg: ContainerConfig) -> H {
        let mem = fake_memory();
        let mm = Arc::new(Mm::new(
            Box::new(mem.clone()),
            limit,
            LockCapability::Limited,
        ));
        let c = Arc::new(Container::new(cfg, mm.clone()));
        for g in groups {
            c.set_group(g).unwrap();
        }
        let version = match u32::try_from(ty) {
            Ok(raw::VFIO_TYPE1_IOMMU) => Version::V1,
            Ok(raw::VFIO_TYPE1v2_IOMMU) => Version::V2,
            _ => panic!("not a type1 IOMMU type: {ty}"),
        };
        c.set_iommu(version).unwrap();
        let h = H { c, mem, mm };
        h.check();
        h
    }

    pub fn iommu(ty: u64) -> H {
        H::with(
            vec![GroupSpec::iommu(1)],
            ty,
            None,
            ContainerConfig::default(),
        )
    }

    pub fn emulated(ty: u64) -> H {
        H::with(
            vec![GroupSpec::emulated(1)],
            ty,
            None,
            ContainerConfig::default(),
        )
    }

    pub fn check(&self) {
        if let Err(e) = self.c.check_invariants() {
            panic!("invariant broken: {e}");
        }
        assert_eq!(self.mem.bad_unpins(), 0, "unbalanced unpin");
        // Every pinned page is charged once (the fake memory has one owner): IOMMU pins and
        // pending releases are charged; device pins are charged only without a domain.
        let device_pins_on_iommu: u64 = self
            .c
            .mappings()
            .iter()
            .filter(|m| m.iommu_mapped)
            .map(|m| m.device_pinned_pages)
            .sum();
        assert_eq!(
            self.mem.pinned_pages(),
            self.mm.locked_pages() + device_pins_on_iommu,
            "pinned pages != locked_vm + uncharged device pins"
        );
    }

    /// Runs `f`; on failure the observable state must be unchanged. Invariants always hold.
    pub fn step<T>(&self, f: impl FnOnce(&Container) -> Result<T>) -> Result<T> {
        let before = self.c.snapshot();
        let pinned = self.mem.pinned_pages();
        let r = f(&self.c);
        if r.is_err() {
            assert_eq!(
                self.c.snapshot(),
                before,
                "a failed operation changed state"
            );
            assert_eq!(
                self.mem.pinned_pages(),
                pinned,
                "a failed operation leaked pins"
            );
        }
        self.check();
        r
    }

    pub fn map(&self, iova: u64, vaddr: u64, size: u64, flags: MapFlags) -> Result<()> {
        self.step(|c| {
            c.map_dma(&MapDma {
                vaddr: Vaddr(vaddr),
                iova: Iova(iova),
                size,
                flags,
            })
        })
    }

    pub fn unmap(&self, iova: u64, size: u64, flags: UnmapFlags) -> Result<u64> {
        self.step(|c| {
            c.unmap_dma(&UnmapDma {
                iova: Iova(iova),
                size,
                flags,
                bitmap_pgsize: 0,
            })
        })
    }

    pub fn iovas(&self) -> Vec<(u64, u64)> {
        self.c
            .mappings()
            .iter()
            .map(|m| (m.iova.raw(), m.size))
            .collect()
    }
}

pub fn errno<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

pub fn err<T: std::fmt::Debug>(r: Result<T>) -> Error {
    r.expect_err("expected an error")
}
