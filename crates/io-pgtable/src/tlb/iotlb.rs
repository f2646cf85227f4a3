//! An IOTLB model: the per-domain translation cache a device consults before walking.
//!
//! One direct-mapped array per leaf size (smallest first). Each entry is a tag (leaf base |
//! valid), a data word (output base | permission bits) and a sequence counter; lookups are
//! lock-free seqlock reads, so a hit costs a few loads. Fills and invalidations serialise on one
//! *fill lock*, and a device walk (miss path) runs with that lock held. That gives the hardware
//! guarantee the page table relies on (`__arm_lpae_unmap` frees a table right after
//! `io_pgtable_tlb_flush_walk` returns, in strict and lazy mode alike, v6.18): when an
//! invalidation returns, no walk that could have read the old entries is still in flight, and
//! none can insert a stale entry afterwards. In particular a table is never followed after the
//! walk flush that precedes its freeing.
//!
//! Cached permissions are what a *cached* hardware entry would allow: a write hits only if the
//! leaf was writable-dirty (or writable without DBM) when filled; a write to a writable-clean
//! leaf misses and walks, which lets the walker record dirty state (an SMMUv3
//! with HTTU updates a DBM leaf only on a walk).

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::gather::Gather;
use super::ops::FlushOps;
use crate::addr::Iova;
use crate::prot::Access;

const VALID: u64 = 1;
/// Data bit: reads allowed.
const PERM_READ: u64 = 1 << 0;
/// Data bit: writes allowed without a walk.
const PERM_WRITE: u64 = 1 << 1;

/// IOTLB sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IotlbConfig {
    /// Entries per leaf size (rounded up to a power of two, at least 1).
    pub entries_per_size: usize,
}

impl Default for IotlbConfig {
    fn default() -> Self {
        IotlbConfig {
            entries_per_size: 4096,
        }
    }
}

/// Counters of an [`Iotlb`] (misses and invalidations; hits are not counted, to keep the hit
/// path free of shared writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IotlbStats {
    /// Lookups that walked the table.
    pub misses: u64,
    /// Range invalidations (walk flushes and syncs).
    pub range_invalidations: u64,
    /// Whole-context invalidations.
    pub full_invalidations: u64,
}

#[derive(Debug, Default)]
#[repr(align(32))]
struct Entry {
    seq: AtomicU64,
    tag: AtomicU64,
    data: AtomicU64,
}

#[derive(Debug)]
struct LeafCache {
    shift: u32,
    mask: u64,
    entries: Box<[Entry]>,
}

impl LeafCache {
    #[inline]
    fn slot(&self, iova: u64) -> &Entry {
        &self.entries[crate::to_usize((iova >> self.shift) & self.mask)]
    }
}

/// The translation cache of one domain; also its [`FlushOps`].
#[derive(Debug)]
pub struct Iotlb {
    caches: Box<[LeafCache]>,
    fill: Mutex<()>,
    /// Valid entries over all sizes. Changed only with the fill lock held (fills and
    /// invalidations), so a load and a store update it; an invalidation that finds it zero
    /// (no device has translated since the last invalidation) scans no entry.
    valid: AtomicU64,
    misses: AtomicU64,
    range_invalidations: AtomicU64,
    full_invalidations: AtomicU64,
}

/// Proof that the fill lock is held (returned by [`Iotlb::lock_fill`]).
#[derive(Debug)]
pub struct FillGuard<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl Iotlb {
    /// A cache for leaves of the sizes in `pgsize_bitmap`.
    #[must_use]
    pub fn new(pgsize_bitmap: u64, cfg: IotlbConfig) -> Self {
        let n = cfg.entries_per_size.max(1).next_power_of_two();
        let caches = (0..64)
            .filter(|b| pgsize_bitmap & (1u64 << b) != 0)
            .map(|shift| LeafCache {
                shift,
                mask: n as u64 - 1,
                entries: (0..n).map(|_| Entry::default()).collect(),
            })
            .collect();
        Iotlb {
            caches,
            fill: Mutex::new(()),
            valid: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            range_invalidations: AtomicU64::new(0),
            full_invalidations: AtomicU64::new(0),
        }
    }

    /// Looks `iova` up for `access`: `Some((pa, bytes left in the leaf))` on a hit that allows
    /// the access, `None` otherwise (the caller walks).
    #[inline]
    #[must_use]
    pub fn lookup(&self, iova: Iova, access: Access) -> Option<(u64, u64)> {
        let iova = iova.raw();
        let need = match access {
            Access::Read => PERM_READ,
            Access::Write => PERM_WRITE,
        };
        for c in self.caches.iter() {
            let e = c.slot(iova);
            let s1 = e.seq.load(Ordering::Acquire);
            let tag = e.tag.load(Ordering::Relaxed);
            let data = e.data.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let s2 = e.seq.load(Ordering::Relaxed);
            let size = 1u64 << c.shift;
            let base = iova & !(size - 1);
            if s1 & 1 != 0 || s1 != s2 || tag != (base | VALID) {
                continue;
            }
            if data & need == 0 {
                return None;
            }
            let off = iova - base;
            return Some(((data & !(size - 1)) + off, size - off));
        }
        None
    }

    /// Takes the fill lock: walks that may fill the cache run under it.
    pub fn lock_fill(&self) -> FillGuard<'_> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        FillGuard(
            self.fill
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn lock_quiet(&self) -> MutexGuard<'_, ()> {
        self.fill
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Caches the leaf `[base, base + size)` → `pa_base` with the given permissions. Sizes the
    /// cache does not hold are ignored.
    pub fn insert(
        &self,
        _guard: &FillGuard<'_>,
        base: Iova,
        size: u64,
        pa_base: u64,
        read: bool,
        write: bool,
    ) {
        let Some(c) = self.caches.iter().find(|c| 1u64 << c.shift == size) else {
            return;
        };
        let data = pa_base | if read { PERM_READ } else { 0 } | if write { PERM_WRITE } else { 0 };
        let e = c.slot(base.raw());
        if e.tag.load(Ordering::Relaxed) & VALID == 0 {
            self.add_valid(1);
        }
        Self::write_entry(e, base.raw() | VALID, data);
    }

    /// Adds `delta` (wrapping: minus one is `u64::MAX`) to the valid count; fill lock held.
    fn add_valid(&self, delta: u64) {
        let v = self.valid.load(Ordering::Relaxed);
        self.valid.store(v.wrapping_add(delta), Ordering::Relaxed);
    }

    fn write_entry(e: &Entry, tag: u64, data: u64) {
        let s = e.seq.load(Ordering::Relaxed);
        e.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        e.tag.store(tag, Ordering::Relaxed);
        e.data.store(data, Ordering::Relaxed);
        e.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Drops every cached translation overlapping `[start, last]` (inclusive).
    pub fn invalidate_range(&self, start: u64, last: u64) {
        let _g = self.lock_quiet();
        // Under the fill lock, which every writer of the counters holds: a load and a store.
        let n = self.range_invalidations.load(Ordering::Relaxed);
        self.range_invalidations
            .store(n.wrapping_add(1), Ordering::Relaxed);
        // Nothing cached (the lock is still taken: it waits for a walk in flight, whose fill
        // the caller's invalidation must not miss).
        if self.valid.load(Ordering::Relaxed) == 0 {
            return;
        }
        for c in self.caches.iter() {
            let size = 1u64 << c.shift;
            let overlaps = |tag: u64| {
                if tag & VALID == 0 {
                    return false;
                }
                let base = tag & !VALID;
                base <= last && base + (size - 1) >= start
            };
            let slots = (last >> c.shift) - (start >> c.shift);
            if slots >= c.mask {
                for e in c.entries.iter() {
                    if overlaps(e.tag.load(Ordering::Relaxed)) {
                        Self::write_entry(e, 0, 0);
                        self.add_valid(u64::MAX);
                    }
                }
            } else {
                for k in 0..=slots {
                    let e = c.slot((start & !(size - 1)).wrapping_add(k << c.shift));
                    if overlaps(e.tag.load(Ordering::Relaxed)) {
                        Self::write_entry(e, 0, 0);
                        self.add_valid(u64::MAX);
                    }
                }
            }
        }
    }

    /// Drops every cached translation.
    pub fn invalidate_all(&self) {
        let _g = self.lock_quiet();
        self.full_invalidations.fetch_add(1, Ordering::Relaxed);
        for c in self.caches.iter() {
            for e in c.entries.iter() {
                if e.tag.load(Ordering::Relaxed) != 0 {
                    Self::write_entry(e, 0, 0);
                }
            }
        }
        self.valid.store(0, Ordering::Relaxed);
    }

    /// Valid entries currently cached (for tests).
    #[must_use]
    pub fn cached_entries(&self) -> usize {
        self.caches
            .iter()
            .flat_map(|c| c.entries.iter())
            .filter(|e| e.tag.load(Ordering::Relaxed) & VALID != 0)
            .count()
    }

    /// Miss and invalidation counters.
    #[must_use]
    pub fn stats(&self) -> IotlbStats {
        IotlbStats {
            misses: self.misses.load(Ordering::Relaxed),
            range_invalidations: self.range_invalidations.load(Ordering::Relaxed),
            full_invalidations: self.full_invalidations.load(Ordering::Relaxed),
        }
    }
}

impl FlushOps for Iotlb {
    fn add_page_is_gather(&self) -> bool {
        true
    }

    fn tlb_flush_all(&self) {
        self.invalidate_all();
    }

    fn tlb_flush_walk(&self, iova: Iova, size: u64, _granule: u64) {
        if size > 0 {
            self.invalidate_range(iova.raw(), iova.raw().saturating_add(size - 1));
        }
    }

    fn iotlb_sync(&self, gather: &Gather) {
        if !gather.is_empty() {
            self.invalidate_range(gather.start, gather.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = (1 << 12) | (1 << 21) | (1 << 30);

    #[test]
    fn hit_after_insert_and_miss_after_invalidate() {
        let t = Iotlb::new(B, IotlbConfig::default());
        assert_eq!(t.lookup(Iova(0x1234), Access::Read), None);
        {
            let g = t.lock_fill();
            t.insert(&g, Iova(0x1000), 0x1000, 0x8000, true, false);
        }
        assert_eq!(t.lookup(Iova(0x1234), Access::Read), Some((0x8234, 0xdcc)));
        assert_eq!(
            t.lookup(Iova(0x1234), Access::Write),
            None,
            "no cached write permission"
        );
        t.invalidate_range(0x1fff, 0x1fff);
        assert_eq!(t.lookup(Iova(0x1234), Access::Read), None);
    }

    #[test]
    fn block_entries_are_dropped_by_a_page_invalidation_inside_them() {
        let t = Iotlb::new(B, IotlbConfig::default());
        {
            let g = t.lock_fill();
            t.insert(&g, Iova(0x20_0000), 0x20_0000, 0x4000_0000, true, true);
        }
        assert_eq!(
            t.lookup(Iova(0x30_0000), Access::Write),
            Some((0x4010_0000, 0x10_0000))
        );
        t.invalidate_range(0x3f_f000, 0x3f_ffff);
        assert_eq!(t.lookup(Iova(0x20_0000), Access::Read), None);
        assert_eq!(t.cached_entries(), 0);
    }

    #[test]
    fn huge_invalidation_scans_instead_of_iterating() {
        let t = Iotlb::new(
            B,
            IotlbConfig {
                entries_per_size: 8,
            },
        );
        {
            let g = t.lock_fill();
            t.insert(&g, Iova(0xffff_f000), 0x1000, 0x1000, true, true);
        }
        t.invalidate_range(0, u64::MAX);
        assert_eq!(t.cached_entries(), 0);
    }

    #[test]
    fn an_invalidation_after_an_empty_one_still_drops_a_fill_made_between_them() {
        let t = Iotlb::new(B, IotlbConfig::default());
        t.invalidate_range(0x1000, 0x1fff);
        {
            let g = t.lock_fill();
            t.insert(&g, Iova(0x1000), 0x1000, 0x8000, true, true);
            // A refill of the same slot counts once.
            t.insert(&g, Iova(0x1000), 0x1000, 0x9000, true, true);
            t.insert(&g, Iova(0x20_0000), 0x20_0000, 0x4000_0000, true, true);
        }
        t.invalidate_range(0x1000, 0x1fff);
        assert_eq!(t.lookup(Iova(0x1000), Access::Read), None);
        assert_eq!(t.cached_entries(), 1);
        t.invalidate_range(0x20_0000, 0x20_0fff);
        assert_eq!(t.cached_entries(), 0);
        {
            let g = t.lock_fill();
            t.insert(&g, Iova(0x3000), 0x1000, 0x8000, true, true);
        }
        t.invalidate_all();
        {
            let g = t.lock_fill();
            t.insert(&g, Iova(0x5000), 0x1000, 0x8000, true, true);
        }
        t.invalidate_range(0x5000, 0x5fff);
        assert_eq!(t.lookup(Iova(0x5000), Access::Read), None);
        assert_eq!(t.stats().range_invalidations, 4);
    }
}
