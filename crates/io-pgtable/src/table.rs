//! The ARM LPAE I/O page table: `map_pages`, `unmap_pages` with block splitting,
//! `iova_to_phys` and the walkers.
//!
//! Algorithms follow `drivers/iommu/io-pgtable-arm.c` of v6.18; block splitting on a partial
//! unmap is the v5.15–v6.12 `arm_lpae_split_blk_unmap`, which the kernel dropped in v6.13
//! (33729a5fc0ca) and we keep. Differences from the kernel, all deliberate (docs/SEMANTICS.md,
//! "The page table"):
//! - a failed leaf install changes nothing: every slot is checked for a leaf before any subtree
//!   is replaced (the kernel may tear down a table and then fail with `-EEXIST` on the next slot);
//! - `map_pages` checks both ends of the run against ias/oas, and never writes past the PGD of a
//!   small start level (the kernel relies on its callers for both);
//! - a split keeps every attribute of the block, DBM and the dirty state included (the v6.12
//!   split's `iopte_prot()` masks dropped DBM);
//! - `iova_to_phys` returns `Option` and treats an out-of-range input as unmapped instead of
//!   aliasing it (the kernel's 0 also means physical address 0).
//!
//! Table descriptors hold the host address of the next table (see [`crate::memory`]), so a walk
//! is one load and one mask per level, like the kernel's `__va(iopte_to_paddr(pte))`. Argument
//! checks stay exact but cost little on the common path: [`IoPageTable::map_pages`] tests the
//! last byte of the run on both sides and falls back to the full, ordered checks only to pick
//! the error. With the common geometry (4K granule, four levels from level 0), one 4K page is
//! mapped or unmapped by a walk with constant shifts that follows table descriptors down to
//! level 3 and there loads and stores one entry; anything else on the way (a table to allocate,
//! a block to split, a leaf in the way, dirty state to report) goes to the general walk, which
//! decides. A run of cleared leaves is gathered inline for flush ops that keep the plain
//! `tlb_add_page` ([`crate::FlushOps::add_page_is_gather`]), one call per leaf otherwise.
//!
//! Concurrency (as `arm_lpae_install_table`): entries are atomics. Tables are published with a
//! release CAS after being zeroed, and walkers load with acquire, so a walker never sees a table
//! before its contents. Freed tables stay allocated (poisoned, then reused) until the page table
//! drops, so a walker that races with a free reads poison or a reused table, never freed memory.
//! Concurrent map and unmap of *disjoint* ranges are supported; overlapping ones are the caller's
//! bug (memory-safe, but the mapping result is unspecified), exactly as in the kernel. Ranges in
//! this module are `(start, length)` with an exclusive end; walkers use inclusive `last` internally
//! so a range may end at `u64::MAX`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::addr::{Iova, PhysAddr};
use crate::cfg::{Config, Geometry};
use crate::error::Error;
use crate::memory::{TableArena, POISON_BLOCK, POISON_PTE};
use crate::prot::Prot;
use crate::pte::{self, Descriptor};
use crate::tlb::{FlushOps, Gather};

/// Hard cap on `max_tables` (16 TiB of 4K tables).
const MAX_TABLES_CAP: u64 = 1 << 32;

/// Counts of entries by level, from [`IoPageTable::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Non-root tables whose parent entry sits at each level (index = level of the parent).
    pub tables: [u64; 4],
    /// Leaves at each level (blocks at 0-2, pages at 3).
    pub leaves: [u64; 4],
}

/// The descriptors met on the way to an address (`pgtable_walk`, v6.18): `ptes[lvl]` for every
/// level from the start level down to the leaf or hole; other levels are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalkData {
    /// Raw descriptors by absolute level.
    pub ptes: [u64; 4],
    /// Level at which the walk stopped (a leaf or a hole).
    pub last_level: u32,
}

/// A leaf found by a device walk.
#[derive(Debug)]
pub(crate) struct LeafRef<'a> {
    pub(crate) slot: &'a AtomicU64,
    pub(crate) pte: u64,
    pub(crate) lvl: u32,
}

/// How a range walk treats an entry that is neither leaf nor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holes {
    /// Stop with `Err(first unmapped address)` (the kernel's `-EINVAL`).
    Fail,
    /// Step over it.
    Skip,
}

/// Receives `(iova, len)` of every writable-dirty leaf an unmap removes.
pub type DirtySink<'a> = Option<&'a mut dyn FnMut(Iova, u64)>;

/// An ARM LPAE I/O page table (`struct arm_lpae_io_pgtable` with its `io_pgtable_ops`).
#[derive(Debug)]
pub struct IoPageTable {
    geo: Geometry,
    pgd: Box<[AtomicU64]>,
    arena: TableArena,
    tlb: Arc<dyn FlushOps>,
    /// New DBM leaves start writable-clean (dirty tracking is on) instead of dirty.
    clean_start: AtomicBool,
    /// `map` uses only the smallest page size (per-page dirty state while tracking).
    page_granular: AtomicBool,
    /// Index shift and mask of each level (`ARM_LPAE_LVL_IDX` precomputed, the PGD's included).
    idx: [(u32, u64); 4],
    /// Level + 1 of each supported page size by log2, 0 for an unsupported size.
    level_by_shift: [u8; 64],
    /// 4K granule, start level 0 and a 512-entry PGD: walks use constant shifts.
    four_level_4k: bool,
    /// The table serves the upper half of the input space (`Quirks::ARM_TTBR1`).
    ttbr1: bool,
    /// `pte::prot_to_pte` of every protection (indexed by its bits).
    attrs_by_prot: [u64; 64],
    /// `tlb.tlb_add_page` is the plain gather (`FlushOps::add_page_is_gather`): a run of cleared
    /// leaves is gathered inline, with no call per leaf.
    inline_gather: bool,
}

impl IoPageTable {
    /// Allocates an empty table (`alloc_io_pgtable_ops`) whose TLB maintenance goes to `tlb`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a configuration the kernel would refuse.
    pub fn new(cfg: &Config, tlb: Arc<dyn FlushOps>) -> Result<Self, Error> {
        let geo = Geometry::new(cfg)?;
        let pgd = (0..geo.pgd_entries()).map(|_| AtomicU64::new(0)).collect();
        let arena = TableArena::with_memory(
            geo.ptes_per_table(),
            geo.granule.bytes(),
            cfg.max_tables.min(MAX_TABLES_CAP),
            cfg.table_memory,
        );
        let mut idx = [(0, 0); 4];
        for (lvl, e) in (0u32..).zip(idx.iter_mut()) {
            if lvl >= geo.start_level {
                let bits = if lvl == geo.start_level {
                    geo.pgd_bits
                } else {
                    geo.bits_per_level
                };
                *e = (geo.lvl_shift(lvl), (1u64 << bits) - 1);
            }
        }
        let mut level_by_shift = [0u8; 64];
        for lvl in geo.start_level..=3 {
            let size = geo.block_size(lvl);
            if geo.pgsize_bitmap & size != 0 {
                level_by_shift[size.trailing_zeros() as usize] = u8::try_from(lvl + 1).unwrap_or(0);
            }
        }
        let inline_gather = tlb.add_page_is_gather();
        Ok(IoPageTable {
            geo,
            pgd,
            arena,
            tlb,
            clean_start: AtomicBool::new(false),
            page_granular: AtomicBool::new(false),
            ttbr1: geo.quirks.contains(crate::cfg::Quirks::ARM_TTBR1),
            attrs_by_prot: std::array::from_fn(|bits| {
                pte::prot_to_pte(
                    &geo,
                    Prot::from_bits_truncate(u32::try_from(bits).unwrap_or(0)),
                )
            }),
            four_level_4k: geo.granule == crate::cfg::Granule::Size4K
                && geo.start_level == 0
                && geo.pgd_bits == 9,
            idx,
            level_by_shift,
            inline_gather,
        })
    }

    /// The derived geometry and register outputs.
    #[must_use]
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The TLB this table drives.
    #[must_use]
    pub fn flush_ops(&self) -> &Arc<dyn FlushOps> {
        &self.tlb
    }

    /// Non-root table pages currently allocated.
    #[must_use]
    pub fn live_tables(&self) -> u64 {
        self.arena.live()
    }

    /// Bytes of table memory in use, the PGD included.
    #[must_use]
    pub fn table_bytes(&self) -> u64 {
        self.arena.live() * self.geo.granule.bytes() + self.geo.pgd_bytes().max(64)
    }

    /// Makes new writable DBM leaves start writable-clean (`true`, while dirty tracking is on)
    /// or writable-dirty (`false`, the kernel's behaviour with
    /// `IO_PGTABLE_QUIRK_ARM_HD`).
    pub fn set_clean_start(&self, clean: bool) {
        self.clean_start.store(clean, Ordering::Relaxed);
    }

    /// Makes [`IoPageTable::map`] use only the smallest page size (`true`) or the largest blocks
    /// alignment allows (`false`, the iommu core's behaviour).
    pub fn set_page_granular(&self, on: bool) {
        self.page_granular.store(on, Ordering::Relaxed);
    }

    /// True if `map` currently uses only the smallest page size.
    #[must_use]
    pub fn page_granular(&self) -> bool {
        self.page_granular.load(Ordering::Relaxed)
    }

    /// Replaces every block with a table of smallest-size leaves of identical attributes and
    /// output (eager splitting, as KVM does for dirty logging), so hardware dirty state is kept
    /// per page. Translations do not change. Stops early, leaving the remaining blocks whole
    /// (still correct, only coarser), when table memory runs out. Returns the blocks split. The
    /// caller flushes the IOTLB afterwards so no cached block entry outlives its split.
    pub fn split_blocks(&self) -> u64 {
        let mut n = 0;
        let _ = self.split_in(&self.pgd, self.geo.start_level, &mut n);
        n
    }

    fn split_in(&self, table: &[AtomicU64], lvl: u32, n: &mut u64) -> Result<(), Error> {
        if lvl >= 3 {
            return Ok(());
        }
        for slot in table {
            let mut cur = slot.load(Ordering::Acquire);
            for _ in 0..8 {
                if !pte::is_leaf(cur, lvl) {
                    break;
                }
                let t = self.arena.alloc()?;
                let entries = self.table_at(t);
                let child = lvl + 1;
                let sz = self.geo.block_size(child);
                let pa = pte::iopte_to_paddr(cur, self.geo.granule);
                let attrs = cur & pte::LEAF_ATTR_MASK;
                for (i, e) in entries.iter().enumerate() {
                    e.store(
                        pte::make_leaf(attrs, child, pa + i as u64 * sz),
                        Ordering::Relaxed,
                    );
                }
                let new = pte::make_table(&self.geo, t);
                match slot.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        *n += 1;
                        cur = new;
                    }
                    Err(now) => {
                        // A device marked it dirty meanwhile: retry with the new value.
                        self.free_table(t, child);
                        cur = now;
                    }
                }
            }
            if pte::is_table(cur, lvl) {
                self.split_in(self.child(cur), lvl + 1, n)?;
            }
        }
        Ok(())
    }

    /// Lets the next `budget` table allocations succeed and fails later ones with `ENOMEM`
    /// (`None`: no limit). For fault-injection tests.
    pub fn set_table_alloc_budget(&self, budget: Option<u64>) {
        self.arena.set_alloc_budget(budget);
    }

    /// The level of `pgsize` if it is exactly one supported size.
    #[inline]
    fn level_for_pgsize(&self, pgsize: u64) -> Option<u32> {
        if !pgsize.is_power_of_two() {
            return None;
        }
        match self.level_by_shift[pgsize.trailing_zeros() as usize] {
            0 => None,
            l => Some(u32::from(l) - 1),
        }
    }

    /// `ARM_LPAE_LVL_IDX(iova, lvl)` from the precomputed shifts and masks.
    #[inline]
    fn lvl_idx(&self, iova: u64, lvl: u32) -> usize {
        let (shift, mask) = self.idx[lvl as usize & 3];
        crate::to_usize((iova >> shift) & mask)
    }

    /// Adds the `n` leaves of `size` cleared from `iova` on to `g` (`tlb_add_page` for each).
    /// Always inlined: for one leaf with the plain gather it is a compare and two stores.
    #[inline(always)]
    fn gather_leaves(&self, g: &mut Gather, iova: u64, size: u64, n: usize) {
        if n == 0 {
            return;
        }
        if self.inline_gather {
            // What `n` calls of the plain `tlb_add_page` do: only the first page can need a
            // sync (the rest are contiguous and of the same size).
            if g.needs_sync_before(Iova(iova), size) {
                self.tlb.iotlb_sync(g);
                g.reset();
            }
            g.pgsize = size;
            g.add_range(Iova(iova), n as u64 * size);
        } else {
            for j in 0..n {
                self.tlb.tlb_add_page(g, Iova(iova + j as u64 * size), size);
            }
        }
    }

    /// The table a table descriptor read from one of this page table's tables points to: one
    /// mask, no lookup. Only called on a descriptor that `pte::is_table` accepted at its level.
    /// Table addresses are below 2^48 (`TableArena` guarantees it), so the 64K granule's
    /// PA\[51:48\] packing never applies to them: the address is the masked descriptor.
    #[inline]
    fn child(&self, pte: u64) -> &[AtomicU64] {
        self.table_at(pte & pte::ADDR_MASK)
    }

    /// The entries of the table at `addr`, an address from `self.arena.alloc()` (directly, or
    /// decoded from a table descriptor of this page table).
    #[inline]
    fn table_at(&self, addr: u64) -> &[AtomicU64] {
        // SAFETY: every table descriptor this page table holds was made by `pte::make_table`
        // from an address `self.arena.alloc()` returned (`map_at`, `split_in`,
        // `split_block_unmap` are the only writers of table descriptors, and the PGD and the
        // tables are private); freed tables are filled with `POISON_PTE` / `POISON_BLOCK`, which
        // are never table descriptors, so a walker racing with a free reads a leaf, a hole or a
        // reused table of the same arena, never an address the arena did not hand out.
        unsafe { self.arena.table_unchecked(addr) }
    }

    /// Frees the table at `addr`, which sits at `lvl` (its poison depends on the level).
    fn free_table(&self, addr: u64, lvl: u32) {
        let poison = if lvl == 3 { POISON_PTE } else { POISON_BLOCK };
        self.arena.free(addr, poison);
    }

    /// `arm_lpae_map_pages` (with `__arm_lpae_map` and `arm_lpae_init_pte`, v6.18): maps up to
    /// `pgcount` pages of `pgsize` at `iova`, stopping at the end of the table page reached.
    /// Returns the bytes mapped.
    ///
    /// # Errors
    /// - [`Error::InvalidPageSize`] if `pgsize` is not exactly one supported size;
    /// - [`Error::IovaOutOfRange`] / [`Error::PhysOutOfRange`] if either end of the run is out of
    ///   range, [`Error::Overflow`] if the run wraps;
    /// - [`Error::NoAccess`] if `prot` has neither READ nor WRITE;
    /// - [`Error::NoMemory`] if a table cannot be allocated;
    /// - [`Error::Exists`] if a leaf already maps any part of the run. Nothing changes then.
    #[inline]
    pub fn map_pages(
        &self,
        iova: Iova,
        paddr: PhysAddr,
        pgsize: u64,
        pgcount: u64,
        prot: Prot,
    ) -> Result<u64, Error> {
        // The common case in a few instructions: a supported size, a non-empty run whose last
        // byte (hence its first: no TTBR1 sign extension) is in range on both sides, and some
        // access. Anything else takes the full checks below, which decide the exact error.
        if let Some(target) = self.level_for_pgsize(pgsize) {
            if pgcount != 0 && !self.ttbr1 && prot.intersects(Prot::READ | Prot::WRITE) {
                let last = pgsize.checked_mul(pgcount).and_then(|len| {
                    Some((
                        iova.raw().checked_add(len - 1)?,
                        paddr.raw().checked_add(len - 1)?,
                    ))
                });
                if let Some((last_iova, last_pa)) = last {
                    if last_iova >> self.geo.ias == 0 && self.geo.paddr_in_range(last_pa) {
                        let attrs = self.leaf_attrs(prot);
                        if self.four_level_4k && target == 3 && pgcount == 1 {
                            return self.map_one_4k(iova.raw(), paddr.raw(), attrs);
                        }
                        return self.map_at(
                            iova.raw(),
                            paddr.raw(),
                            pgsize,
                            target,
                            pgcount,
                            attrs,
                        );
                    }
                }
            }
        }
        self.map_pages_checked(iova, paddr, pgsize, pgcount, prot)
    }

    /// The leaf attributes for `prot` (`arm_lpae_prot_to_pte`, precomputed per protection),
    /// writable-clean when new DBM leaves start clean.
    #[inline]
    fn leaf_attrs(&self, prot: Prot) -> u64 {
        let mut attrs = self.attrs_by_prot[(prot.bits() & 63) as usize];
        if attrs & pte::DBM != 0 && self.clean_start.load(Ordering::Relaxed) {
            attrs |= pte::AP_RDONLY;
        }
        attrs
    }

    /// [`IoPageTable::map_pages`] with every check, in the kernel's order.
    #[cold]
    fn map_pages_checked(
        &self,
        iova: Iova,
        paddr: PhysAddr,
        pgsize: u64,
        pgcount: u64,
        prot: Prot,
    ) -> Result<u64, Error> {
        let Some(target) = self.level_for_pgsize(pgsize) else {
            return Err(Error::InvalidPageSize { pgsize });
        };
        if !self.geo.iova_in_range(iova.raw()) {
            return Err(Error::IovaOutOfRange {
                iova,
                ias: self.geo.ias,
            });
        }
        if !self.geo.paddr_in_range(paddr.raw()) {
            return Err(Error::PhysOutOfRange {
                paddr,
                oas: self.geo.oas,
            });
        }
        if !prot.intersects(Prot::READ | Prot::WRITE) {
            return Err(Error::NoAccess);
        }
        if pgcount == 0 {
            return Ok(0);
        }
        let len = pgsize.checked_mul(pgcount).ok_or(Error::Overflow {
            start: iova.raw(),
            len: u64::MAX,
        })?;
        let overflow = Error::Overflow {
            start: iova.raw(),
            len,
        };
        let last_iova = crate::addr::last_of(iova.raw(), len).ok_or(overflow.clone())?;
        let last_pa = crate::addr::last_of(paddr.raw(), len).ok_or(overflow)?;
        if !self.geo.iova_in_range(last_iova) {
            return Err(Error::IovaOutOfRange {
                iova: Iova(last_iova),
                ias: self.geo.ias,
            });
        }
        if !self.geo.paddr_in_range(last_pa) {
            return Err(Error::PhysOutOfRange {
                paddr: PhysAddr(last_pa),
                oas: self.geo.oas,
            });
        }
        let attrs = self.leaf_attrs(prot);
        self.map_at(iova.raw(), paddr.raw(), pgsize, target, pgcount, attrs)
    }

    fn map_at(
        &self,
        iova: u64,
        pa: u64,
        size: u64,
        target: u32,
        pgcount: u64,
        attrs: u64,
    ) -> Result<u64, Error> {
        let mut table: &[AtomicU64] = &self.pgd;
        let mut lvl = self.geo.start_level;
        loop {
            let idx = self.lvl_idx(iova, lvl);
            if lvl == target {
                let n = crate::to_usize(pgcount)
                    .min(self.geo.max_entries(idx))
                    .min(table.len() - idx);
                self.install_leaves(&table[idx..idx + n], lvl, iova, pa, attrs)?;
                return Ok(n as u64 * size);
            }
            let slot = &table[idx];
            let mut cur = slot.load(Ordering::Acquire);
            if cur == 0 {
                let t = self.arena.alloc()?;
                let new = pte::make_table(&self.geo, t);
                // Release: the zeroed table is visible before the pointer to it
                // (`arm_lpae_install_table`).
                match slot.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => cur = new,
                    Err(winner) => {
                        // Lost the race to another mapper: use its table.
                        self.free_table(t, lvl + 1);
                        cur = winner;
                    }
                }
            }
            if pte::is_table(cur, lvl) {
                table = self.child(cur);
                lvl += 1;
            } else {
                return Err(Error::Exists {
                    iova: Iova(iova & !(self.geo.block_size(lvl) - 1)),
                });
            }
        }
    }

    /// The PGD as the 512 entries of the common geometry (`four_level_4k`).
    #[inline]
    fn pgd_4k(&self) -> Option<&[AtomicU64; 512]> {
        (*self.pgd).try_into().ok()
    }

    /// The level-3 table holding `iova` with the common geometry (`four_level_4k`), if table
    /// descriptors lead to it from the PGD: constant shifts, one load and one mask per level.
    #[inline]
    fn last_table_4k(&self, iova: u64) -> Option<&[AtomicU64; 512]> {
        let mut table = self.pgd_4k()?;
        for lvl in 0..3u32 {
            let cur =
                table[crate::to_usize((iova >> (39 - 9 * lvl)) & 511)].load(Ordering::Acquire);
            if !pte::is_table(cur, lvl) {
                return None;
            }
            // SAFETY: as in `table_at`: a table descriptor of this page table names a table of
            // `self.arena`, of 512 entries with this geometry, living as long as `self`.
            let next = unsafe { self.arena.table_unchecked_len(cur & pte::ADDR_MASK, 512) };
            table = next.try_into().ok()?;
        }
        Some(table)
    }

    /// [`IoPageTable::map_at`] of one 4K page with the common geometry (`four_level_4k`): the
    /// tables present and a hole at level 3 take one load per level and one store; anything
    /// else (a table to allocate, a block or leaf in the way) goes to `map_at`, which decides.
    #[inline]
    fn map_one_4k(&self, iova: u64, pa: u64, attrs: u64) -> Result<u64, Error> {
        const SZ_4K: u64 = 1 << 12;
        if let Some(table) = self.last_table_4k(iova) {
            let slot = &table[crate::to_usize((iova >> 12) & 511)];
            if !pte::is_leaf(slot.load(Ordering::Acquire), 3) {
                slot.store(pte::make_leaf(attrs, 3, pa), Ordering::Release);
                return Ok(SZ_4K);
            }
        }
        self.map_at(iova, pa, SZ_4K, 3, 1, attrs)
    }

    /// `arm_lpae_init_pte`: writes `slots.len()` leaves, replacing any tables under them.
    fn install_leaves(
        &self,
        slots: &[AtomicU64],
        lvl: u32,
        iova: u64,
        pa: u64,
        attrs: u64,
    ) -> Result<(), Error> {
        if let [s] = slots {
            // One leaf into a hole (the common 4K map): one load, one store.
            let cur = s.load(Ordering::Acquire);
            if cur == 0 || !(pte::is_leaf(cur, lvl) || pte::is_table(cur, lvl)) {
                s.store(pte::make_leaf(attrs, lvl, pa), Ordering::Release);
                return Ok(());
            }
        }
        let size = self.geo.block_size(lvl);
        for (i, s) in slots.iter().enumerate() {
            if pte::is_leaf(s.load(Ordering::Acquire), lvl) {
                return Err(Error::Exists {
                    iova: Iova(iova + i as u64 * size),
                });
            }
        }
        for (i, s) in slots.iter().enumerate() {
            let cur = s.load(Ordering::Acquire);
            if pte::is_table(cur, lvl) {
                // A block mapped over smaller mappings replaces them (`arm_lpae_init_pte`).
                s.store(0, Ordering::Release);
                self.tlb
                    .tlb_flush_walk(Iova(iova + i as u64 * size), size, self.geo.min_pgsize());
                self.free_subtree(pte::iopte_to_paddr(cur, self.geo.granule), lvl + 1);
            }
        }
        for (i, s) in slots.iter().enumerate() {
            let off = i as u64 * size;
            s.store(pte::make_leaf(attrs, lvl, pa + off), Ordering::Release);
        }
        Ok(())
    }

    /// Frees the table at `addr` (which sits at `lvl`) and every table under it, post-order
    /// (`__arm_lpae_free_pgtable`). The caller has made it unreachable and flushed walk caches.
    fn free_subtree(&self, addr: u64, lvl: u32) {
        if lvl < 3 {
            for e in self.table_at(addr) {
                let p = e.load(Ordering::Acquire);
                if pte::is_table(p, lvl) {
                    self.free_subtree(pte::iopte_to_paddr(p, self.geo.granule), lvl + 1);
                }
            }
        }
        self.free_table(addr, lvl);
    }

    /// `arm_lpae_unmap_pages` (v6.18, with the v6.12 split `arm_lpae_split_blk_unmap`): unmaps up
    /// to `pgcount` pages of `pgsize` at `iova` and returns the bytes unmapped. Stops at the end of
    /// a table page or at a hole; 0 for bad arguments or a hole at `iova`. Leaf invalidations go to
    /// `gather` unless it is `queued`; walk flushes for freed tables are issued synchronously.
    #[inline]
    pub fn unmap_pages(
        &self,
        iova: Iova,
        pgsize: u64,
        pgcount: u64,
        gather: Option<&mut Gather>,
    ) -> u64 {
        // The one-page fast path here, inlined into the caller; the rest out of line.
        if self.four_level_4k
            && pgcount == 1
            && self.level_for_pgsize(pgsize) == Some(3)
            && self.geo.iova_in_range(iova.raw())
        {
            if let Some(table) = self.last_table_4k(iova.raw()) {
                return self.clear_one_4k(table, iova.raw(), gather);
            }
        }
        self.unmap_pages_dirty(iova, pgsize, pgcount, gather, None)
    }

    /// Clears the 4K leaf of `iova` in its level-3 `table` (`clear_entries` for one entry,
    /// nobody collecting dirty state): 0 if there is none.
    #[inline(always)]
    fn clear_one_4k(
        &self,
        table: &[AtomicU64; 512],
        iova: u64,
        gather: Option<&mut Gather>,
    ) -> u64 {
        const SZ_4K: u64 = 1 << 12;
        let slot = &table[crate::to_usize((iova >> 12) & 511)];
        if !pte::is_leaf(slot.load(Ordering::Acquire), 3) {
            return 0;
        }
        slot.store(0, Ordering::Release);
        if let Some(g) = gather {
            if !g.queued {
                self.gather_leaves(g, iova, SZ_4K, 1);
            }
        }
        SZ_4K
    }

    /// [`IoPageTable::unmap_pages`] that also reports every writable-dirty leaf it removes to
    /// `dirty` (whole leaves; a split block's hole counts as dirty if the block was). Leaves are
    /// cleared with an atomic swap, so a device's concurrent dirty update is never lost.
    pub fn unmap_pages_dirty(
        &self,
        iova: Iova,
        pgsize: u64,
        pgcount: u64,
        gather: Option<&mut Gather>,
        mut dirty: DirtySink<'_>,
    ) -> u64 {
        let Some(target) = self.level_for_pgsize(pgsize) else {
            return 0;
        };
        if pgcount == 0 || !self.geo.iova_in_range(iova.raw()) {
            return 0;
        }
        if self.four_level_4k && target == 3 && pgcount == 1 && dirty.is_none() {
            if let Some(table) = self.last_table_4k(iova.raw()) {
                return self.clear_one_4k(table, iova.raw(), gather);
            }
        }
        self.unmap_at(
            &self.pgd,
            self.geo.start_level,
            iova.raw(),
            target,
            pgcount,
            gather,
            &mut dirty,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn unmap_at<'a>(
        &'a self,
        mut table: &'a [AtomicU64],
        mut lvl: u32,
        iova: u64,
        target: u32,
        pgcount: u64,
        gather: Option<&mut Gather>,
        dirty: &mut DirtySink<'_>,
    ) -> u64 {
        loop {
            let idx = self.lvl_idx(iova, lvl);
            let Some(slot) = table.get(idx) else { return 0 };
            let cur = slot.load(Ordering::Acquire);
            if lvl == target {
                return self.clear_entries(table, idx, lvl, iova, pgcount, gather, dirty);
            }
            if pte::is_leaf(cur, lvl) {
                return self
                    .split_block_unmap(slot, lvl, cur, iova, target, pgcount, gather, dirty);
            }
            if !pte::is_table(cur, lvl) {
                return 0;
            }
            table = self.child(cur);
            lvl += 1;
        }
    }

    /// Clears up to `pgcount` consecutive entries at `lvl`, the block-size branch of
    /// `__arm_lpae_unmap`.
    #[allow(clippy::too_many_arguments)]
    fn clear_entries(
        &self,
        table: &[AtomicU64],
        idx: usize,
        lvl: u32,
        iova: u64,
        pgcount: u64,
        gather: Option<&mut Gather>,
        dirty: &mut DirtySink<'_>,
    ) -> u64 {
        let size = self.geo.block_size(lvl);
        let n = crate::to_usize(pgcount)
            .min(self.geo.max_entries(idx))
            .min(table.len() - idx);
        let run = &table[idx..idx + n];
        let mut cleared = 0;
        for (i, s) in run.iter().enumerate() {
            let cur = s.load(Ordering::Acquire);
            if pte::is_table(cur, lvl) {
                s.store(0, Ordering::Release);
                let at = iova + i as u64 * size;
                self.tlb
                    .tlb_flush_walk(Iova(at), size, self.geo.min_pgsize());
                let child = pte::iopte_to_paddr(cur, self.geo.granule);
                if let Some(sink) = dirty.as_mut() {
                    // Unreachable now (walk flushed): its dirty state is final.
                    self.collect_dirty(child, lvl + 1, at, &mut **sink);
                }
                self.free_subtree(child, lvl + 1);
            } else if !pte::is_leaf(cur, lvl) {
                break;
            }
            cleared += 1;
        }
        if let Some(sink) = dirty.as_mut() {
            for (i, s) in run[..cleared].iter().enumerate() {
                // A swap, so a device's concurrent dirty update is reported, not lost.
                let old = s.swap(0, Ordering::AcqRel);
                if pte::is_leaf(old, lvl) && pte::is_writable_dirty(old) {
                    sink(Iova(iova + i as u64 * size), size);
                }
            }
        } else {
            // Nobody reads the old dirty state: a plain release store (`__arm_lpae_clear_pte`).
            for s in &run[..cleared] {
                s.store(0, Ordering::Release);
            }
        }
        if let Some(g) = gather {
            if !g.queued {
                self.gather_leaves(g, iova, size, cleared);
            }
        }
        cleared as u64 * size
    }

    /// `arm_lpae_split_blk_unmap` (as in v6.12, removed in v6.13): replaces the block in `slot` (at
    /// `blk_lvl`) by a table of the next level holding the same translation minus the piece being
    /// unmapped, then continues the unmap in it (splitting again if the request is smaller still).
    #[allow(clippy::too_many_arguments)]
    fn split_block_unmap(
        &self,
        slot: &AtomicU64,
        blk_lvl: u32,
        blk_pte: u64,
        iova: u64,
        target: u32,
        pgcount: u64,
        mut gather: Option<&mut Gather>,
        dirty: &mut DirtySink<'_>,
    ) -> u64 {
        let lvl = blk_lvl + 1;
        if lvl > 3 {
            return 0;
        }
        let Ok(t) = self.arena.alloc() else {
            return 0;
        };
        let entries = self.table_at(t);
        let split_sz = self.geo.block_size(lvl);
        let hole = if lvl == target {
            let start = self.lvl_idx(iova, lvl);
            let num = crate::to_usize(pgcount).min(entries.len() - start);
            start..start + num
        } else {
            0..0
        };
        let blk_pa = pte::iopte_to_paddr(blk_pte, self.geo.granule);
        let attrs = blk_pte & pte::LEAF_ATTR_MASK;
        for (i, e) in entries.iter().enumerate() {
            if !hole.contains(&i) {
                let pa = blk_pa + i as u64 * split_sz;
                e.store(pte::make_leaf(attrs, lvl, pa), Ordering::Relaxed);
            }
        }
        let new = pte::make_table(&self.geo, t);
        let table = match slot.compare_exchange(blk_pte, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if !hole.is_empty() {
                    if pte::is_writable_dirty(blk_pte) {
                        if let Some(sink) = dirty.as_mut() {
                            sink(Iova(iova), hole.len() as u64 * split_sz);
                        }
                    }
                    if let Some(g) = gather.as_deref_mut() {
                        if !g.queued {
                            self.gather_leaves(g, iova, split_sz, hole.len());
                        }
                    }
                    return hole.len() as u64 * split_sz;
                }
                entries
            }
            Err(now) => {
                // Raced with another splitter: use its table if it installed one.
                self.free_table(t, lvl);
                if !pte::is_table(now, blk_lvl) {
                    return 0;
                }
                self.child(now)
            }
        };
        self.unmap_at(table, lvl, iova, target, pgcount, gather, dirty)
    }

    /// Reports the writable-dirty leaves of the unreachable subtree at `addr` (level `lvl`,
    /// covering from `base`).
    fn collect_dirty(&self, addr: u64, lvl: u32, base: u64, sink: &mut dyn FnMut(Iova, u64)) {
        let bs = self.geo.block_size(lvl);
        for (i, e) in self.table_at(addr).iter().enumerate() {
            let p = e.load(Ordering::Acquire);
            let at = base + i as u64 * bs;
            if pte::is_leaf(p, lvl) {
                if pte::is_writable_dirty(p) {
                    sink(Iova(at), bs);
                }
            } else if pte::is_table(p, lvl) {
                self.collect_dirty(pte::iopte_to_paddr(p, self.geo.granule), lvl + 1, at, sink);
            }
        }
    }

    /// `arm_lpae_iova_to_phys` (v6.18): the output address of `iova`, or `None` if it is unmapped
    /// or out of the input range.
    #[inline]
    #[must_use]
    pub fn iova_to_phys(&self, iova: Iova) -> Option<PhysAddr> {
        if self.four_level_4k {
            return self.iova_to_phys_4k(iova.raw());
        }
        let leaf = self.find_leaf(iova.raw())?;
        let off = iova.raw() & ((1u64 << self.idx[leaf.lvl as usize & 3].0) - 1);
        Some(PhysAddr(
            pte::iopte_to_paddr(leaf.pte, self.geo.granule) | off,
        ))
    }

    /// [`IoPageTable::iova_to_phys`] for the common geometry (`four_level_4k`): constant shifts,
    /// one load and one mask per level, the output address taken straight from the leaf.
    #[inline]
    fn iova_to_phys_4k(&self, iova: u64) -> Option<PhysAddr> {
        if !self.geo.iova_in_range(iova) {
            return None;
        }
        let mut table = self.pgd_4k()?;
        for lvl in 0..4u32 {
            let shift = 39 - 9 * lvl;
            let cur = table[crate::to_usize((iova >> shift) & 511)].load(Ordering::Acquire);
            if !pte::is_table(cur, lvl) {
                let off = iova & ((1u64 << shift) - 1);
                return pte::is_leaf(cur, lvl).then_some(PhysAddr((cur & pte::ADDR_MASK) | off));
            }
            // SAFETY: as in `table_at`: a table descriptor of this page table names a table of
            // `self.arena`, of 512 entries with this geometry, living as long as `self`.
            let next = unsafe { self.arena.table_unchecked_len(cur & pte::ADDR_MASK, 512) };
            table = next.try_into().ok()?;
        }
        None
    }

    /// The leaf translating `iova`, if any: one load per level, and the next table is the
    /// descriptor's address bits.
    #[inline]
    pub(crate) fn find_leaf(&self, iova: u64) -> Option<LeafRef<'_>> {
        if !self.geo.iova_in_range(iova) {
            return None;
        }
        if self.four_level_4k {
            return self.find_leaf_4k(iova);
        }
        let mut table: &[AtomicU64] = &self.pgd;
        let mut lvl = self.geo.start_level;
        loop {
            let slot = table.get(self.lvl_idx(iova, lvl))?;
            let cur = slot.load(Ordering::Acquire);
            if !pte::is_table(cur, lvl) {
                return pte::is_leaf(cur, lvl).then_some(LeafRef {
                    slot,
                    pte: cur,
                    lvl,
                });
            }
            table = self.child(cur);
            lvl += 1;
        }
    }

    /// [`IoPageTable::find_leaf`] for the common geometry (4K granule, four levels from level
    /// 0, a 512-entry PGD): constant shifts and masks, unrolled.
    #[inline]
    fn find_leaf_4k(&self, iova: u64) -> Option<LeafRef<'_>> {
        let mut table: &[AtomicU64] = &self.pgd;
        for lvl in 0..4u32 {
            let slot = table.get(crate::to_usize((iova >> (39 - 9 * lvl)) & 511))?;
            let cur = slot.load(Ordering::Acquire);
            if !pte::is_table(cur, lvl) {
                return pte::is_leaf(cur, lvl).then_some(LeafRef {
                    slot,
                    pte: cur,
                    lvl,
                });
            }
            // SAFETY: as in `table_at`: a table descriptor of this page table names a table of
            // `self.arena`, of 512 entries with this geometry, living as long as `self`.
            table = unsafe { self.arena.table_unchecked_len(cur & pte::ADDR_MASK, 512) };
        }
        None
    }

    /// `arm_lpae_pgtable_walk` (v6.18): the descriptors from the start level to the leaf or hole.
    #[must_use]
    pub fn walk(&self, iova: Iova) -> WalkData {
        let mut data = WalkData {
            last_level: self.geo.start_level,
            ..WalkData::default()
        };
        if !self.geo.iova_in_range(iova.raw()) {
            return data;
        }
        let mut table: &[AtomicU64] = &self.pgd;
        let mut lvl = self.geo.start_level;
        loop {
            let Some(slot) = table.get(self.lvl_idx(iova.raw(), lvl)) else {
                return data;
            };
            let cur = slot.load(Ordering::Acquire);
            data.ptes[lvl as usize] = cur;
            data.last_level = lvl;
            if !pte::is_table(cur, lvl) {
                return data;
            }
            table = self.child(cur);
            lvl += 1;
        }
    }

    /// Decodes the descriptor of `iova` at `lvl` as met on a walk (for inspection and tests).
    #[must_use]
    pub fn descriptor(&self, iova: Iova, lvl: u32) -> Descriptor {
        let w = self.walk(iova);
        if lvl < self.geo.start_level || lvl > w.last_level {
            return Descriptor::Invalid;
        }
        Descriptor::decode(w.ptes[lvl as usize], lvl, self.geo.granule)
    }

    /// Visits every leaf overlapping `[start, last]` in ascending order with
    /// `(slot, pte, block start, level)`. Returns `Err(addr)` at the first hole if `holes` is
    /// [`Holes::Fail`]. Block starts are aligned, so a walk that begins inside a block still
    /// reports that whole block and then continues at the next one (the kernel's
    /// `__arm_lpae_iopte_walk` keeps an unaligned cursor and can skip the tail).
    pub(crate) fn for_each_leaf(
        &self,
        start: u64,
        last: u64,
        holes: Holes,
        f: &mut dyn FnMut(&AtomicU64, u64, u64, u32),
    ) -> Result<(), u64> {
        let span = 1u64 << self.geo.ias;
        let base = start & !(span - 1);
        self.visit_table(&self.pgd, self.geo.start_level, base, start, last, holes, f)
    }

    #[allow(clippy::too_many_arguments)]
    fn visit_table(
        &self,
        table: &[AtomicU64],
        lvl: u32,
        table_base: u64,
        start: u64,
        last: u64,
        holes: Holes,
        f: &mut dyn FnMut(&AtomicU64, u64, u64, u32),
    ) -> Result<(), u64> {
        let bs = self.geo.block_size(lvl);
        let first = crate::to_usize(start.saturating_sub(table_base) / bs);
        for (i, slot) in table.iter().enumerate().skip(first) {
            let block_start = table_base + i as u64 * bs;
            if block_start > last {
                break;
            }
            let cur = slot.load(Ordering::Acquire);
            if pte::is_leaf(cur, lvl) {
                f(slot, cur, block_start, lvl);
            } else if pte::is_table(cur, lvl) {
                let child = self.child(cur);
                let block_last = block_start + (bs - 1);
                self.visit_table(
                    child,
                    lvl + 1,
                    block_start,
                    start.max(block_start),
                    last.min(block_last),
                    holes,
                    f,
                )?;
            } else if holes == Holes::Fail {
                return Err(start.max(block_start));
            }
        }
        Ok(())
    }

    /// Counts tables and leaves per level.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        self.count(&self.pgd, self.geo.start_level, &mut s);
        s
    }

    fn count(&self, table: &[AtomicU64], lvl: u32, s: &mut Stats) {
        for e in table {
            let cur = e.load(Ordering::Acquire);
            if pte::is_leaf(cur, lvl) {
                s.leaves[lvl as usize] += 1;
            } else if pte::is_table(cur, lvl) {
                s.tables[lvl as usize] += 1;
                self.count(self.child(cur), lvl + 1, s);
            }
        }
    }

    /// Every leaf as `(iova, length, pa, raw pte)`, in ascending order (for invariant checks).
    #[must_use]
    pub fn leaves(&self) -> Vec<(Iova, u64, PhysAddr, u64)> {
        let mut out = Vec::new();
        let span = 1u64 << self.geo.ias;
        let (start, last) = if self.geo.iova_in_range(0) {
            (0, span - 1)
        } else {
            (span.wrapping_neg(), u64::MAX)
        };
        let _ = self.for_each_leaf(start, last, Holes::Skip, &mut |_, p, base, lvl| {
            out.push((
                Iova(base),
                self.geo.block_size(lvl),
                PhysAddr(pte::iopte_to_paddr(p, self.geo.granule)),
                p,
            ));
        });
        out
    }
}

impl Drop for IoPageTable {
    /// `free_io_pgtable_ops`: flush the whole context, then release every table
    /// (`arm_lpae_free_pgtable`, v6.18).
    fn drop(&mut self) {
        self.tlb.tlb_flush_all();
    }
}
