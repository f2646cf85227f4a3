//! [`FakeMemory`]: a deterministic [`AddressSpace`] for tests, with contiguous, scattered or
//! chunked physical layouts, reserved (PFNMAP) regions and a failure injected after k pinned
//! pages. It keeps a ledger of pins so tests can prove nothing leaks. Pages are 4 KiB; ranges
//! are `[start, end)`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};

use io_pgtable::PhysAddr;

use super::{Access, AddressSpace, PinnedRun};
use crate::usercopy::Direction;

/// How a fake region's pages sit in physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Page `i` at `pa + i * page`: one run.
    Contiguous,
    /// Page `i` at `pa + 2 * i * page`: every page its own run.
    Scattered,
    /// Contiguous chunks of `pages` pages, placed in reverse order.
    Chunked {
        /// Pages per chunk (at least 1).
        pages: u64,
    },
}

/// Whether a fake region is ordinary memory or reserved (PFNMAP, e.g. a BAR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Ordinary, accounted memory.
    Normal,
    /// Reserved pages: pinnable for MAP, never accounted.
    Reserved,
}

/// Whether a fake region may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writable {
    /// Read-only (a writable pin faults).
    No,
    /// Read-write.
    Yes,
}

/// One mapped region of a [`FakeMemory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeRegion {
    /// Start (page aligned).
    pub vaddr: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
    /// Physical base.
    pub pa: u64,
    /// Physical layout.
    pub layout: Layout,
    /// Ordinary or reserved.
    pub backing: Backing,
    /// Read-only or read-write.
    pub writable: Writable,
}

/// The ledger's hash: the words of a key (a page-aligned physical address and a page count)
/// folded with a multiply each (Fibonacci hashing); the table takes the top bits through
/// `finish`'s rotate. Only the test model's bookkeeping uses it: its keys are ours, not an
/// adversary's.
#[derive(Debug, Default, Clone, Copy)]
struct RunHasher(u64);

impl Hasher for RunHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        // The table indexes by the low bits; the product's best-mixed bits are the high ones.
        self.0.rotate_left(26)
    }
}

#[derive(Debug, Default)]
struct FakeState {
    regions: BTreeMap<u64, FakeRegion>,
    /// (pa, npages) → outstanding pins. A hash map (no order is ever asked of it) with a
    /// multiplicative hash of the two words: every pin and unpin of a run goes through it, and
    /// a `BTreeMap` search over thousands of runs was a fifth of a strict MAP+UNMAP pair
    /// (docs/PERFORMANCE.md).
    ledger: HashMap<(u64, u64), u64, BuildHasherDefault<RunHasher>>,
    pinned_pages: u64,
    pinned_ever: u64,
    fail_after: Option<u64>,
    bad_unpins: u64,
    /// Contents of physical pages ever written, by page address (others read as zero).
    pages: HashMap<u64, Box<[u8]>>,
    /// Bound on `pages` (bytes), so a runaway test cannot exhaust memory.
    page_budget: u64,
}

/// A deterministic address space for tests.
#[derive(Debug, Default)]
pub struct FakeMemory {
    state: Mutex<FakeState>,
}

pub(super) const FAKE_PAGE: u64 = 4096;

impl FakeMemory {
    /// An empty address space.
    #[must_use]
    pub fn new() -> Self {
        let m = Self::default();
        m.st().page_budget = 1 << 30;
        m
    }

    fn st(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a region (replacing any region starting at the same address).
    pub fn add_region(&self, region: FakeRegion) {
        self.st().regions.insert(region.vaddr, region);
    }

    /// A contiguous, writable, normal region at `vaddr` backed from `pa`.
    pub fn add_ram(&self, vaddr: u64, len: u64, pa: u64) {
        self.add_region(FakeRegion {
            vaddr,
            len,
            pa,
            layout: Layout::Contiguous,
            backing: Backing::Normal,
            writable: Writable::Yes,
        });
    }

    /// Removes the region starting at `vaddr` (pins into it stay in the ledger).
    pub fn remove_region(&self, vaddr: u64) {
        self.st().regions.remove(&vaddr);
    }

    /// Makes pinning fail once `pages` more pages have been pinned (`None`: never).
    pub fn fail_after_pages(&self, pages: Option<u64>) {
        let mut st = self.st();
        let base = st.pinned_ever;
        st.fail_after = pages.map(|p| base + p);
    }

    /// Non-reserved pages currently pinned.
    #[must_use]
    pub fn pinned_pages(&self) -> u64 {
        self.st().pinned_pages
    }

    /// Runs currently pinned (any backing), counted with multiplicity.
    #[must_use]
    pub fn pinned_runs(&self) -> u64 {
        self.st().ledger.values().sum()
    }

    /// Unpins of runs that were not pinned (must stay 0).
    #[must_use]
    pub fn bad_unpins(&self) -> u64 {
        self.st().bad_unpins
    }

    /// The physical address of `vaddr`, if mapped.
    #[must_use]
    pub fn translate(&self, vaddr: u64) -> Option<u64> {
        Self::translate_in(&self.st(), vaddr).map(|(pa, _)| pa)
    }

    fn translate_in(st: &FakeState, vaddr: u64) -> Option<(u64, Writable)> {
        let (_, r) = st.regions.range(..=vaddr).next_back()?;
        if vaddr >= r.vaddr + r.len {
            return None;
        }
        let i = (vaddr - r.vaddr) / FAKE_PAGE;
        Some((page_pa(r, i) + vaddr % FAKE_PAGE, r.writable))
    }

    /// Limits the bytes of page contents kept (default 1 GiB); writes past it fail.
    pub fn set_page_budget(&self, bytes: u64) {
        self.st().page_budget = bytes;
    }

    fn copy_phys(st: &mut FakeState, pa: u64, buf: &mut [u8], dir: Direction) -> Result<(), u64> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = pa + done as u64;
            let page = at & !(FAKE_PAGE - 1);
            let off = crate::to_usize(at - page);
            let n = (crate::to_usize(FAKE_PAGE) - off).min(buf.len() - done);
            match dir {
                Direction::Read => match st.pages.get(&page) {
                    Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                    None => buf[done..done + n].fill(0),
                },
                Direction::Write => {
                    if !st.pages.contains_key(&page) {
                        let used = st.pages.len() as u64 * FAKE_PAGE;
                        if used + FAKE_PAGE > st.page_budget {
                            return Err(at);
                        }
                        st.pages.insert(
                            page,
                            vec![0u8; crate::to_usize(FAKE_PAGE)].into_boxed_slice(),
                        );
                    }
                    if let Some(p) = st.pages.get_mut(&page) {
                        p[off..off + n].copy_from_slice(&buf[done..done + n]);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    fn copy_user(&self, vaddr: u64, buf: &mut [u8], dir: Direction) -> Result<(), u64> {
        let mut st = self.st();
        let mut done = 0usize;
        while done < buf.len() {
            let at = vaddr + done as u64;
            let Some((pa, writable)) = Self::translate_in(&st, at) else {
                return Err(at);
            };
            if dir == Direction::Write && writable == Writable::No {
                return Err(at);
            }
            let n = (crate::to_usize(FAKE_PAGE - at % FAKE_PAGE)).min(buf.len() - done);
            Self::copy_phys(&mut st, pa, &mut buf[done..done + n], dir)?;
            done += n;
        }
        Ok(())
    }
}

fn page_pa(r: &FakeRegion, i: u64) -> u64 {
    let page_index = match r.layout {
        Layout::Contiguous => i,
        Layout::Scattered => 2 * i,
        Layout::Chunked { pages } => {
            let k = pages.max(1);
            let nchunks = (r.len / FAKE_PAGE).div_ceil(k);
            (nchunks - 1 - i / k) * k + i % k
        }
    };
    r.pa + page_index * FAKE_PAGE
}

impl AddressSpace for FakeMemory {
    fn page_size(&self) -> u64 {
        FAKE_PAGE
    }

    fn pin_run(&self, vaddr: u64, max_pages: u64, access: Access) -> Result<PinnedRun, u64> {
        let mut st = self.st();
        let Some((_, r)) = st.regions.range(..=vaddr).next_back() else {
            return Err(vaddr);
        };
        let r = *r;
        if vaddr >= r.vaddr + r.len || max_pages == 0 {
            return Err(vaddr);
        }
        if access == Access::Write && r.writable == Writable::No {
            return Err(vaddr);
        }
        let i = (vaddr - r.vaddr) / FAKE_PAGE;
        let avail = r.len / FAKE_PAGE - i;
        let mut n = match r.layout {
            Layout::Contiguous => avail,
            Layout::Scattered => 1,
            Layout::Chunked { pages } => pages.max(1) - i % pages.max(1),
        }
        .min(avail)
        .min(max_pages);
        if let Some(limit) = st.fail_after {
            let left = limit.saturating_sub(st.pinned_ever);
            if left == 0 {
                return Err(vaddr);
            }
            n = n.min(left);
        }
        let run = PinnedRun {
            pa: PhysAddr(page_pa(&r, i)),
            npages: n,
            reserved: r.backing == Backing::Reserved,
        };
        *st.ledger.entry((run.pa.raw(), n)).or_insert(0) += 1;
        st.pinned_ever += n;
        if !run.reserved {
            st.pinned_pages += n;
        }
        Ok(run)
    }

    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), u64> {
        self.copy_user(vaddr, buf, Direction::Read)
    }

    fn write(&self, vaddr: u64, data: &[u8]) -> Result<(), u64> {
        let mut tmp = data.to_vec();
        self.copy_user(vaddr, &mut tmp, Direction::Write)
    }

    fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<(), u64> {
        Self::copy_phys(&mut self.st(), pa, buf, Direction::Read)
    }

    fn write_phys(&self, pa: u64, data: &[u8]) -> Result<(), u64> {
        let mut tmp = data.to_vec();
        Self::copy_phys(&mut self.st(), pa, &mut tmp, Direction::Write)
    }

    fn unpin_run(&self, run: &PinnedRun) {
        let mut st = self.st();
        let key = (run.pa.raw(), run.npages);
        match st.ledger.get_mut(&key) {
            Some(c) if *c > 0 => {
                *c -= 1;
                if *c == 0 {
                    st.ledger.remove(&key);
                }
                if !run.reserved {
                    st.pinned_pages -= run.npages;
                }
            }
            _ => st.bad_unpins += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_layouts_give_the_expected_runs() {
        let m = FakeMemory::new();
        m.add_ram(0x10000, 16 * FAKE_PAGE, 0x100_0000);
        let r = m.pin_run(0x10000, 100, Access::Write).unwrap();
        assert_eq!((r.pa.raw(), r.npages), (0x100_0000, 16));
        m.add_region(FakeRegion {
            vaddr: 0x100000,
            len: 8 * FAKE_PAGE,
            pa: 0x200_0000,
            layout: Layout::Chunked { pages: 4 },
            backing: Backing::Normal,
            writable: Writable::No,
        });
        assert_eq!(m.pin_run(0x100000, 8, Access::Write), Err(0x100000));
        let r = m.pin_run(0x101000, 8, Access::Read).unwrap();
        assert_eq!((r.pa.raw(), r.npages), (0x200_0000 + 5 * FAKE_PAGE, 3));
        let r2 = m.pin_run(0x104000, 8, Access::Read).unwrap();
        assert_eq!((r2.pa.raw(), r2.npages), (0x200_0000, 4));
        assert_eq!(m.pinned_pages(), 23);
        m.unpin_run(&r2);
        m.unpin_run(&r2);
        assert_eq!(m.bad_unpins(), 1);
    }

    #[test]
    fn fake_memory_reads_back_writes_through_vaddr_and_pa() {
        let m = FakeMemory::new();
        m.add_ram(0x10000, 4 * FAKE_PAGE, 0x100_0000);
        m.write(0x10ffe, b"abcd").unwrap();
        let mut b = [0u8; 4];
        m.read_phys(0x100_0ffe, &mut b).unwrap();
        assert_eq!(&b, b"abcd");
        assert_eq!(m.read(0x20000, &mut b), Err(0x20000));
        m.set_page_budget(FAKE_PAGE);
        assert!(m.write(0x12000, b"x").is_err(), "page budget");
    }

    #[test]
    fn failure_injection_truncates_then_faults() {
        let m = FakeMemory::new();
        m.add_ram(0, 64 * FAKE_PAGE, 0);
        m.fail_after_pages(Some(10));
        assert_eq!(m.pin_run(0, 64, Access::Read).unwrap().npages, 10);
        assert_eq!(
            m.pin_run(10 * FAKE_PAGE, 1, Access::Read),
            Err(10 * FAKE_PAGE)
        );
    }
}
