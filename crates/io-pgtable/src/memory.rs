//! Table memory owned by the page table.
//!
//! Every non-root table lives in a [`TableArena`] and is named by its *table address*: the host
//! address of its first entry, granule-aligned and below 2^48, which is what table descriptors
//! hold in their address bits, as the kernel's hold the physical address of the next table
//! (`arm_lpae_install_table`, `paddr_to_iopte`, v6.18). A walker turns a table descriptor into
//! the next table with a mask and no lookup, so a walk costs one dependent load per level, like
//! the hardware's (and the kernel's `__va(iopte_to_paddr(pte))`).
//!
//! Memory is grown in segments that are never moved or released before the arena is dropped:
//! segment `k` holds `u * 2^k` tables, `u` being one table on the heap ([`TableMemory::Heap`])
//! and 2 MiB of tables with [`TableMemory::HugePages`]. A freed table is filled with poison (never a table
//! descriptor, so nothing is ever followed out of it) and goes on a free list; it is zeroed when
//! reused. So a table address, once handed out, names valid memory for the arena's whole life:
//! a walker that raced with a free reads poison or a reused table, never freed memory. Whether
//! the contents are still meaningful is the page table's business (a table is only freed after
//! the walk-cache flush that makes it unreachable, as `__arm_lpae_unmap` calls
//! `io_pgtable_tlb_flush_walk` before freeing a table, v6.18).
//!
//! Concurrency: allocation, free and the statistics take one mutex; [`TableArena::table`] and
//! the walkers' table access take none.
//!
//! With [`TableMemory::HugePages`] each segment is its own 2 MiB-aligned anonymous mapping with
//! `madvise(MADV_HUGEPAGE)`, so the kernel backs it with transparent huge pages (when THP is
//! enabled, `always` or `madvise`): a walk over many tables then misses the TLB once per 2 MiB
//! of tables instead of once per table. This is how the kernel's own tables are reached
//! (allocated from the page allocator and used through the linear map, which is mapped with
//! 1G/2M pages). The price is memory: the first table of a segment faults in 2 MiB.
//!
//! The arena bounds memory (`max_tables`) and can inject allocation failures for tests
//! ([`TableArena::set_alloc_budget`]).

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::error::Error;

/// What a freed level-3 table is filled with: pages mapping [`POISON_PA`]. A walker that
/// followed a freed table would translate to the poison address, which the stress tests detect.
pub const POISON_PTE: u64 = POISON_PA | 0b11;
/// What a freed table of levels 0-2 is filled with: blocks mapping [`POISON_PA`] (a table
/// descriptor would have to name a table, and a freed table must lead nowhere).
pub const POISON_BLOCK: u64 = POISON_PA | 0b01;
/// Output address of [`POISON_PTE`] and [`POISON_BLOCK`].
pub const POISON_PA: u64 = 0x0000_dead_0000_0000;

/// Number of segments: segment `k` holds `u * 2^k` tables, so the arena can address
/// `u * (2^40 - 1)`.
const SEGMENTS: usize = 40;
/// The huge page size [`TableMemory::HugePages`] aligns segments to (x86-64 and arm64 with
/// 4K base pages: PMD size).
const HUGE_PAGE: usize = 2 << 20;

/// Where an arena's table memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableMemory {
    /// Heap segments doubling from one table; tables not yet used stay unfaulted, so a small
    /// page table costs a few 4K pages.
    #[default]
    Heap,
    /// Segments of at least 2 MiB, each a 2 MiB-aligned anonymous mapping advised
    /// `MADV_HUGEPAGE` (transparent huge pages): one TLB entry per 2 MiB of tables, like the
    /// kernel's linear map. The first table of a segment faults in 2 MiB. Where THP is
    /// disabled the advice fails silently and the memory is 4K pages, as with `Heap`.
    HugePages,
}
/// Table addresses must fit the descriptors' address field (bits 47:12).
const TABLE_ADDR_LIMIT: u64 = 1 << 48;

/// How a segment's memory was obtained, and so how it is released.
#[derive(Debug)]
enum Backing {
    /// `alloc_zeroed` with `layout`, starting at `ptr`: `calloc`'d with one granule of slack
    /// for the alignment (an aligned allocation would be zeroed with a `memset`, faulting in
    /// every page of the segment at once; `calloc`'d pages are faulted in as tables are used).
    Heap { ptr: NonNull<u8>, layout: Layout },
    /// An anonymous mapping of `len` bytes at the segment's first table (2 MiB-aligned).
    Mapped { len: usize },
}

/// One segment: `tables` zeroed, granule-aligned tables in memory that never moves and is
/// released only when the arena drops.
#[derive(Debug)]
struct Segment {
    /// The first table (granule-aligned).
    first: NonNull<AtomicU64>,
    /// Entries from `first` to the end of the last table.
    len: usize,
    tables: usize,
    /// Table address of the first table (its host address, provenance exposed).
    base: u64,
    backing: Backing,
}

// SAFETY: a `Segment` owns its memory, which holds only atomics; sharing or sending it is
// sharing or sending `[AtomicU64]`, which is `Send + Sync`.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// `tables` zeroed tables of `granule` bytes, aligned to `granule`, from `memory`.
    fn new(tables: usize, granule: usize, memory: TableMemory) -> Option<Self> {
        let entry = std::mem::size_of::<AtomicU64>();
        if granule < entry {
            return None;
        }
        let bytes = tables.checked_mul(granule)?;
        let seg = match memory {
            TableMemory::Heap => Self::heap(bytes, granule)?,
            TableMemory::HugePages => Self::mapped(bytes, granule)?,
        };
        let mut seg = seg;
        seg.tables = tables;
        // Freed on return (by `Drop`) if it does not fit the descriptors' address field.
        (seg.base.checked_add(bytes as u64)? <= TABLE_ADDR_LIMIT).then_some(seg)
    }

    fn heap(bytes: usize, granule: usize) -> Option<Self> {
        let entry = std::mem::size_of::<AtomicU64>();
        let size = bytes.checked_add(granule - entry)?;
        let layout = Layout::from_size_align(size, std::mem::align_of::<AtomicU64>()).ok()?;
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size, as `alloc_zeroed` requires.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })?;
        let at = ptr.as_ptr().expose_provenance();
        let skip = at.next_multiple_of(granule) - at;
        // SAFETY: `skip < granule <= size`, so the result is inside the allocation.
        let first = unsafe { ptr.add(skip) }.cast::<AtomicU64>();
        Some(Segment {
            first,
            len: bytes / entry,
            tables: 0,
            base: (at + skip) as u64,
            backing: Backing::Heap { ptr, layout },
        })
    }

    fn mapped(bytes: usize, granule: usize) -> Option<Self> {
        let align = HUGE_PAGE.max(granule);
        let len = bytes.checked_next_multiple_of(align)?;
        let span = len.checked_add(align)?;
        // SAFETY: a fresh private anonymous mapping (no address hint, no fd): it aliases nothing.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let at = raw.expose_provenance();
        let head = at.next_multiple_of(align) - at;
        let tail = span - head - len;
        // SAFETY: `head + len + tail == span`, so each range is inside the mapping just made,
        // which nothing else references; trimming the slack leaves `[at + head, +len)` mapped.
        unsafe {
            let first = raw.cast::<u8>().add(head);
            if head != 0 {
                libc::munmap(raw, head);
            }
            if tail != 0 {
                libc::munmap(first.add(len).cast(), tail);
            }
            // Advice only: without THP the memory is 4K pages, which is still correct.
            libc::madvise(first.cast(), len, libc::MADV_HUGEPAGE);
        }
        let first = NonNull::new(raw.cast::<u8>().wrapping_add(head))?;
        Some(Segment {
            first: first.cast(),
            len: bytes / std::mem::size_of::<AtomicU64>(),
            tables: 0,
            base: (at + head) as u64,
            backing: Backing::Mapped { len },
        })
    }

    /// The entries of the segment's tables.
    fn entries(&self) -> &[AtomicU64] {
        // SAFETY: `first..first + len` lies in memory owned by `self` (allocated or mapped in
        // `new`), zero-initialised when made and since accessed only through atomics; all-zero
        // bytes and every later value are valid `AtomicU64`s; the slice borrows `self`, which
        // releases the memory only on drop.
        unsafe { std::slice::from_raw_parts(self.first.as_ptr(), self.len) }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        match self.backing {
            // SAFETY: `ptr` came from `alloc_zeroed` with `layout` and is freed only here, once.
            Backing::Heap { ptr, layout } => unsafe { alloc::dealloc(ptr.as_ptr(), layout) },
            // SAFETY: `first` starts the `len`-byte mapping made in `mapped`, unmapped only
            // here, once.
            Backing::Mapped { len } => unsafe {
                libc::munmap(self.first.as_ptr().cast(), len);
            },
        }
    }
}

#[derive(Debug, Default)]
struct ArenaState {
    /// Next never-used table id (segment `k` holds ids `2^k - 1 ..= 2^(k+1) - 2`).
    next_id: u64,
    /// Addresses of freed tables, reused (after zeroing) before fresh ones.
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
    memory: TableMemory,
    /// Segment `k` holds `2^(unit_shift + k)` tables.
    unit_shift: u32,
    granule: u64,
    max_tables: u64,
    segments: Box<[OnceLock<Segment>]>,
    state: Mutex<ArenaState>,
}

impl TableArena {
    /// An empty arena of tables of `entries_per_table` entries, each `granule` bytes (a power of
    /// two, at least `8 * entries_per_table`), holding at most `max_tables` at once.
    #[must_use]
    pub fn new(entries_per_table: usize, granule: u64, max_tables: u64) -> Self {
        Self::with_memory(entries_per_table, granule, max_tables, TableMemory::Heap)
    }

    /// [`TableArena::new`] with its memory from `memory`.
    #[must_use]
    pub fn with_memory(
        entries_per_table: usize,
        granule: u64,
        max_tables: u64,
        memory: TableMemory,
    ) -> Self {
        debug_assert!(granule.is_power_of_two());
        debug_assert!(granule >= 8 * entries_per_table as u64);
        let unit_shift = match memory {
            TableMemory::Heap => 0,
            TableMemory::HugePages => (HUGE_PAGE as u64 / granule.max(1)).max(1).trailing_zeros(),
        };
        TableArena {
            entries_per_table,
            memory,
            unit_shift,
            granule,
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
    fn locate(&self, id: u64) -> (usize, usize) {
        let n = (id >> self.unit_shift) + 1;
        let seg = 63 - n.leading_zeros();
        let first = ((1u64 << seg) - 1) << self.unit_shift;
        (crate::to_usize(u64::from(seg)), crate::to_usize(id - first))
    }

    /// Allocates a zeroed table and returns its table address.
    ///
    /// # Errors
    /// [`Error::NoMemory`] past `max_tables`, when the injected budget is spent, or when the
    /// system allocator fails (or returns memory above the descriptors' 48-bit address field).
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
        let addr = if let Some(addr) = st.free.pop() {
            for e in self.table(addr) {
                e.store(0, Ordering::Relaxed);
            }
            addr
        } else {
            let id = st.next_id;
            let (seg, idx) = self.locate(id);
            if seg >= SEGMENTS {
                return Err(Error::NoMemory);
            }
            let segment = match self.segments[seg].get() {
                Some(s) => s,
                None => {
                    let s = Segment::new(
                        1usize << (seg + self.unit_shift as usize),
                        crate::to_usize(self.granule),
                        self.memory,
                    )
                    .ok_or(Error::NoMemory)?;
                    // Only this thread (holding `state`) initialises segments.
                    self.segments[seg].get_or_init(|| s)
                }
            };
            st.next_id += 1;
            segment.base + idx as u64 * self.granule
        };
        st.live += 1;
        st.allocations += 1;
        Ok(addr)
    }

    /// Returns the table at `addr` to the free list, filled with `poison` ([`POISON_PTE`] for a
    /// level-3 table, [`POISON_BLOCK`] above; never a table descriptor). The caller guarantees
    /// no walker can still reach it (the walk-cache flush for it has completed). An address that
    /// names no table of this arena is ignored.
    pub fn free(&self, addr: u64, poison: u64) {
        let entries = self.table(addr);
        if entries.is_empty() {
            return;
        }
        for e in entries {
            e.store(poison, Ordering::Relaxed);
        }
        let mut st = self.state();
        debug_assert!(!st.free.contains(&addr), "double free of table {addr:#x}");
        st.free.push(addr);
        st.live -= 1;
    }

    /// The entries of the table at `addr`; empty if `addr` names no table this arena has
    /// handed out. Checked: it searches the segments. Walkers use `TableArena::table_unchecked`.
    #[must_use]
    pub fn table(&self, addr: u64) -> &[AtomicU64] {
        for seg in self.segments.iter().filter_map(OnceLock::get) {
            let Some(off) = addr.checked_sub(seg.base) else {
                continue;
            };
            if off % self.granule != 0 {
                continue;
            }
            let idx = crate::to_usize(off / self.granule);
            if idx < seg.tables {
                let start = idx * (crate::to_usize(self.granule) / 8);
                return &seg.entries()[start..start + self.entries_per_table];
            }
        }
        &[]
    }

    /// The entries of the table at `addr`, without a check.
    ///
    /// # Safety
    /// `addr` is a table address this arena's [`TableArena::alloc`] returned (freed since or
    /// not).
    #[inline]
    #[must_use]
    pub(crate) unsafe fn table_unchecked(&self, addr: u64) -> &[AtomicU64] {
        let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(crate::to_usize(addr));
        // SAFETY: by the contract `addr` is the first entry of a table inside a segment of this
        // arena: `entries_per_table` initialised atomics, exposed when the segment was made, in
        // memory never moved or released while `self` lives (the slice borrows `self`). Atomics
        // are only ever accessed atomically, so shared references to them are sound.
        unsafe { std::slice::from_raw_parts(ptr, self.entries_per_table) }
    }

    /// [`TableArena::table_unchecked`] with the caller's copy of the entry count (a walker keeps
    /// it in a register rather than reloading it after each acquire load).
    ///
    /// # Safety
    /// As [`TableArena::table_unchecked`], and `entries` is this arena's entries per table.
    #[inline]
    #[must_use]
    pub(crate) unsafe fn table_unchecked_len(&self, addr: u64, entries: usize) -> &[AtomicU64] {
        debug_assert_eq!(entries, self.entries_per_table);
        let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(crate::to_usize(addr));
        // SAFETY: as in `table_unchecked`; `entries` is the table's length by the contract.
        unsafe { std::slice::from_raw_parts(ptr, entries) }
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
        a.free(t1, POISON_PTE);
        assert_eq!(a.live(), 1);
        let t3 = a.alloc().unwrap();
        assert_eq!(t3, t1, "freed tables are reused");
        assert!(a.table(t3).iter().all(|e| e.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn freed_tables_hold_the_poison_and_stay_addressable() {
        let a = TableArena::new(512, 4096, 100);
        let t = a.alloc().unwrap();
        assert!(t < TABLE_ADDR_LIMIT, "fits the descriptor address field");
        a.free(t, POISON_BLOCK);
        assert_eq!(a.live(), 0);
        // Still the arena's memory: a walker racing with the free reads the poison.
        assert!(a
            .table(t)
            .iter()
            .all(|e| e.load(Ordering::Relaxed) == POISON_BLOCK));
        // SAFETY: `t` came from `a.alloc()`.
        let raw = unsafe { a.table_unchecked(t) };
        assert_eq!(raw.as_ptr(), a.table(t).as_ptr());
        assert_eq!(
            POISON_BLOCK & 0b11,
            0b01,
            "a block, never a table descriptor"
        );
        a.free(t + 4096 * 1000, POISON_PTE);
        assert_eq!(a.live(), 0, "an address naming no table is ignored");
    }

    #[test]
    fn tables_are_granule_aligned_for_every_granule() {
        for granule in [4096u64, 16384, 65536] {
            let a = TableArena::new(crate::to_usize(granule / 8), granule, 100);
            for _ in 0..5 {
                let t = a.alloc().unwrap();
                assert_eq!(t % granule, 0);
                assert_eq!(a.table(t).len(), crate::to_usize(granule / 8));
            }
        }
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
    fn huge_page_segments_are_2m_aligned_zeroed_and_span_segments() {
        let a = TableArena::with_memory(512, 4096, 10_000, TableMemory::HugePages);
        let addrs: Vec<u64> = (0..1200).map(|_| a.alloc().unwrap()).collect();
        // Segment 0 holds the first 512 tables (2 MiB), segment 1 the next 1 024.
        assert_eq!(
            addrs[0] % HUGE_PAGE as u64,
            0,
            "first segment 2 MiB-aligned"
        );
        assert_eq!(
            addrs[512] % HUGE_PAGE as u64,
            0,
            "second segment 2 MiB-aligned"
        );
        assert_eq!(
            addrs[511],
            addrs[0] + 511 * 4096,
            "one segment for the first 512"
        );
        assert_eq!(addrs[1199], addrs[512] + 687 * 4096);
        for (i, &t) in addrs.iter().enumerate() {
            assert!(a.table(t).iter().all(|e| e.load(Ordering::Relaxed) == 0));
            a.table(t)[511].store(i as u64 + 1, Ordering::Relaxed);
        }
        for (i, &t) in addrs.iter().enumerate() {
            assert_eq!(a.table(t)[511].load(Ordering::Relaxed), i as u64 + 1);
        }
        a.free(addrs[700], POISON_PTE);
        assert_eq!(a.alloc().unwrap(), addrs[700], "freed tables are reused");
        assert_eq!(a.live(), 1200);
    }

    #[test]
    fn huge_page_segments_hold_at_least_one_table_of_every_granule() {
        for granule in [4096u64, 16384, 65536] {
            let a = TableArena::with_memory(
                crate::to_usize(granule / 8),
                granule,
                100,
                TableMemory::HugePages,
            );
            let t: Vec<u64> = (0..40).map(|_| a.alloc().unwrap()).collect();
            assert!(t.iter().all(|&t| t % granule == 0 && t < TABLE_ADDR_LIMIT));
            assert_eq!(t[0] % HUGE_PAGE as u64, 0);
            assert_eq!(a.table(t[39]).len(), crate::to_usize(granule / 8));
        }
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
