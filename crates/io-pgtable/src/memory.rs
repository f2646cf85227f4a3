//! Table memory owned by the page table.
//!
//! Every non-root table lives in a [`TableArena`] and is named by a *table address*: a
//! granule-aligned value in a private table-memory address space, which is what table
//! descriptors hold in their address bits (spec §1.8, §3.5). The arena maps a table address back
//! to its entries without a lock, so a device walker can follow table descriptors while another
//! thread installs or frees tables elsewhere.
//!
//! Memory is grown in segments that are never moved or released before the arena is dropped:
//! segment `k` holds `2^k` tables. A freed table goes on a free list and is zeroed when reused,
//! so a reference obtained from [`TableArena::table`] is always to valid memory; whether its
//! contents are still meaningful is the page table's business (a table is only freed after the
//! walk-cache flush that makes it unreachable, §4.1).
//!
//! The arena bounds memory (`max_tables`) and can inject allocation failures for tests
//! ([`TableArena::set_alloc_budget`]).

use std::alloc::{self, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::error::Error;

/// What a freed table is filled with: at level 3 a page mapping [`POISON_PA`], at levels 0-2 a
/// table descriptor naming no table (a walk through it faults). A walker that followed a freed
/// table would translate to the poison address or fault, which the stress tests detect.
pub const POISON_PTE: u64 = POISON_PA | 0b11;
/// Output address of [`POISON_PTE`].
pub const POISON_PA: u64 = 0x0000_dead_0000_0000;

/// Number of segments: segment `k` holds `2^k` tables, so the arena can address `2^40 - 1`.
const SEGMENTS: usize = 40;
/// Table addresses start here, so that a table address is never 0.
const TABLE_BASE_INDEX: u64 = 1;

/// A zeroed, never-moving block of atomics.
fn alloc_zeroed_atomics(len: usize) -> Option<Box<[AtomicU64]>> {
    let layout = Layout::array::<AtomicU64>(len).ok()?;
    if layout.size() == 0 {
        return Some(Box::new([]));
    }
    // SAFETY: the layout has a non-zero size, as `alloc_zeroed` requires.
    let ptr = unsafe { alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
    if ptr.is_null() {
        return None;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr, len);
    // SAFETY: `ptr` came from the global allocator with the layout of `[AtomicU64; len]`, which
    // is what `Box<[AtomicU64]>` frees with; all-zero bytes are a valid `AtomicU64` (it has the
    // same bit validity as `u64`); the memory is owned by nothing else.
    Some(unsafe { Box::from_raw(slice) })
}

#[derive(Debug, Default)]
struct ArenaState {
    /// Next never-used table id.
    next_id: u64,
    /// Ids of freed tables, reused (after zeroing) before fresh ones.
    free: Vec<u64>,
    /// Tables currently handed out.
    live: u64,
    /// Remaining successful allocations before an injected failure, if set.
    budget: Option<u64>,
    /// Allocations ever made (fresh or reused), for tests and statistics.
    allocations: u64,
}

/// Granule-sized tables addressed by table address.
#[derive(Debug)]
pub struct TableArena {
    entries_per_table: usize,
    granule_shift: u32,
    max_tables: u64,
    segments: Box<[OnceLock<Box<[AtomicU64]>>]>,
    state: Mutex<ArenaState>,
}

impl TableArena {
    /// An empty arena of tables of `entries_per_table` entries, each `granule` bytes (a power of
    /// two), holding at most `max_tables` at once.
    #[must_use]
    pub fn new(entries_per_table: usize, granule: u64, max_tables: u64) -> Self {
        debug_assert!(granule.is_power_of_two());
        TableArena {
            entries_per_table,
            granule_shift: granule.trailing_zeros(),
            max_tables,
            segments: (0..SEGMENTS).map(|_| OnceLock::new()).collect(),
            state: Mutex::new(ArenaState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, ArenaState> {
        // A panic while holding this lock cannot leave the state half-updated (every update
        // is a single field write), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// (segment, index in segment) of table `id`.
    #[inline]
    fn locate(id: u64) -> (usize, usize) {
        let n = id + 1;
        let seg = 63 - n.leading_zeros();
        (
            crate::to_usize(u64::from(seg)),
            crate::to_usize(n - (1u64 << seg)),
        )
    }

    #[inline]
    fn addr_of(&self, id: u64) -> u64 {
        (id + TABLE_BASE_INDEX) << self.granule_shift
    }

    #[inline]
    fn id_of(&self, addr: u64) -> Option<u64> {
        if addr & ((1u64 << self.granule_shift) - 1) != 0 {
            return None;
        }
        (addr >> self.granule_shift).checked_sub(TABLE_BASE_INDEX)
    }

    /// Allocates a zeroed table and returns its table address.
    ///
    /// # Errors
    /// [`Error::NoMemory`] past `max_tables`, when the injected budget is spent, or when the
    /// system allocator fails.
    pub fn alloc(&self) -> Result<u64, Error> {
        let mut st = self.state();
        if st.live >= self.max_tables {
            return Err(Error::NoMemory);
        }
        if let Some(b) = st.budget.as_mut() {
            if *b == 0 {
                return Err(Error::NoMemory);
            }
            *b -= 1;
        }
        let id = if let Some(id) = st.free.pop() {
            for e in self.entries(id) {
                e.store(0, Ordering::Relaxed);
            }
            id
        } else {
            let id = st.next_id;
            let (seg, _) = Self::locate(id);
            if seg >= SEGMENTS {
                return Err(Error::NoMemory);
            }
            if self.segments[seg].get().is_none() {
                let len = (1usize << seg).checked_mul(self.entries_per_table);
                let mem = len.and_then(alloc_zeroed_atomics).ok_or(Error::NoMemory)?;
                // Only this thread (holding `state`) initialises segments.
                let _ = self.segments[seg].set(mem);
            }
            st.next_id += 1;
            id
        };
        st.live += 1;
        st.allocations += 1;
        Ok(self.addr_of(id))
    }

    /// Returns the table at `addr` to the free list. The caller guarantees no walker can still
    /// reach it (the walk-cache flush for it has completed).
    pub fn free(&self, addr: u64) {
        let Some(id) = self.id_of(addr) else { return };
        for e in self.entries(id) {
            e.store(POISON_PTE, Ordering::Relaxed);
        }
        let mut st = self.state();
        debug_assert!(
            id < st.next_id && !st.free.contains(&id),
            "double free of table {addr:#x}"
        );
        st.free.push(id);
        st.live -= 1;
    }

    fn entries(&self, id: u64) -> &[AtomicU64] {
        let (seg, idx) = Self::locate(id);
        match self.segments.get(seg).and_then(OnceLock::get) {
            Some(mem) => {
                let start = idx * self.entries_per_table;
                &mem[start..start + self.entries_per_table]
            }
            None => &[],
        }
    }

    /// The entries of the table at `addr`; empty if `addr` names no allocated table.
    #[inline]
    #[must_use]
    pub fn table(&self, addr: u64) -> &[AtomicU64] {
        match self.id_of(addr) {
            Some(id) => self.entries(id),
            None => &[],
        }
    }

    /// Tables currently allocated.
    #[must_use]
    pub fn live(&self) -> u64 {
        self.state().live
    }

    /// Allocations made so far (each reuse counts).
    #[must_use]
    pub fn allocations(&self) -> u64 {
        self.state().allocations
    }

    /// Lets the next `budget` allocations succeed and fails every one after with `ENOMEM`;
    /// `None` removes the limit. For fault-injection tests.
    pub fn set_alloc_budget(&self, budget: Option<u64>) {
        self.state().budget = budget;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_zeroed_distinct_and_reused() {
        let a = TableArena::new(512, 4096, 100);
        let t1 = a.alloc().unwrap();
        let t2 = a.alloc().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(t1 % 4096, 0);
        assert_ne!(t1, 0);
        a.table(t1)[7].store(42, Ordering::Relaxed);
        assert_eq!(a.table(t2)[7].load(Ordering::Relaxed), 0);
        a.free(t1);
        assert_eq!(a.live(), 1);
        let t3 = a.alloc().unwrap();
        assert_eq!(t3, t1, "freed tables are reused");
        assert!(a.table(t3).iter().all(|e| e.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn limit_and_budget_give_enomem() {
        let a = TableArena::new(8, 64, 2);
        a.alloc().unwrap();
        a.alloc().unwrap();
        assert_eq!(a.alloc(), Err(Error::NoMemory));
        let b = TableArena::new(8, 64, 100);
        b.set_alloc_budget(Some(1));
        b.alloc().unwrap();
        assert_eq!(b.alloc(), Err(Error::NoMemory));
        b.set_alloc_budget(None);
        b.alloc().unwrap();
    }

    #[test]
    fn unknown_addresses_resolve_to_nothing() {
        let a = TableArena::new(8, 64, 100);
        assert!(a.table(0).is_empty());
        assert!(a.table(12345).is_empty());
        assert!(a.table(64 * 1000).is_empty());
        let t = a.alloc().unwrap();
        assert_eq!(a.table(t).len(), 8);
    }

    #[test]
    fn many_tables_span_segments() {
        let a = TableArena::new(4, 64, 10_000);
        let addrs: Vec<u64> = (0..1000).map(|_| a.alloc().unwrap()).collect();
        for (i, &t) in addrs.iter().enumerate() {
            a.table(t)[0].store(i as u64 + 1, Ordering::Relaxed);
        }
        for (i, &t) in addrs.iter().enumerate() {
            assert_eq!(a.table(t)[0].load(Ordering::Relaxed), i as u64 + 1);
        }
    }
}
