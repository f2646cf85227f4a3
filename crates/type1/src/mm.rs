//! The user's memory behind `vaddr`: pinning and locked-memory accounting (spec type1.md §8,
//! §12 "pluggable seams").
//!
//! An [`AddressSpace`] pins *runs*: the longest physically contiguous stretch at an address, so a
//! mapping of contiguous memory is pinned, accounted and mapped in one step however large it is.
//! Two implementations:
//! - [`ProcessMemory`]: this process. A range must be mapped (and writable for a writable pin)
//!   according to `/proc/self/maps`, else `EFAULT`; pages can optionally be `mlock`ed; the
//!   "physical address" of a page is its host virtual address, stable for the life of the
//!   mapping, so a simulated device writing to it writes the real memory.
//! - [`FakeMemory`]: a deterministic model for tests, with contiguous, scattered or chunked
//!   physical layouts, reserved (PFNMAP) regions and a failure injected after k pinned pages. It
//!   keeps a ledger of pins so tests can prove nothing leaks.
//!
//! [`Mm`] is the kernel's `mm_struct` as far as type1 cares: an address space plus the
//! `locked_vm` charge, its limit (RLIMIT_MEMLOCK) and the lock capability (CAP_IPC_LOCK).
//! Addresses are byte addresses; runs are `(pa, npages)` of `page_size()` pages.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use io_pgtable::PhysAddr;

use crate::error::{Error, Result};

/// The access a pin needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinAccess {
    /// The device only reads the pages.
    Read,
    /// The device may write the pages (the memory must be writable).
    Write,
}

/// A physically contiguous run of pinned pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PinnedRun {
    /// Physical address of the first page.
    pub pa: PhysAddr,
    /// Number of pages.
    pub npages: u64,
    /// Reserved (PFNMAP/MMIO) pages: never accounted, not pinnable by `vfio_pin_pages`.
    pub reserved: bool,
}

/// Pins user memory.
pub trait AddressSpace: Send + Sync + Debug {
    /// Bytes per page (the CPU `PAGE_SIZE`).
    fn page_size(&self) -> u64 {
        4096
    }

    /// Pins the longest physically contiguous run of at most `max_pages` pages starting at the
    /// page-aligned `vaddr` (`vaddr_get_pfns` plus batching).
    ///
    /// # Errors
    /// `Err(addr)` with the first address that cannot be pinned for `access` (`EFAULT`).
    fn pin_run(&self, vaddr: u64, max_pages: u64, access: PinAccess) -> Result<PinnedRun, u64>;

    /// Releases a run returned by [`AddressSpace::pin_run`] (`put_pfn`).
    fn unpin_run(&self, run: &PinnedRun);

    /// `copy_from_user` in this address space: fills `buf` from `vaddr`.
    ///
    /// # Errors
    /// `Err(addr)` of the first byte that cannot be read.
    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), u64>;

    /// `copy_to_user` in this address space.
    ///
    /// # Errors
    /// `Err(addr)` of the first byte that cannot be written (unmapped or read-only).
    fn write(&self, vaddr: u64, data: &[u8]) -> Result<(), u64>;

    /// A device read of physical memory at `pa` (a pinned page).
    ///
    /// # Errors
    /// `Err(pa)` if nothing backs the address.
    fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<(), u64>;

    /// A device write of physical memory at `pa` (a pinned page).
    ///
    /// # Errors
    /// `Err(pa)` if nothing backs the address.
    fn write_phys(&self, pa: u64, data: &[u8]) -> Result<(), u64>;
}

impl<T: AddressSpace + ?Sized> AddressSpace for std::sync::Arc<T> {
    fn page_size(&self) -> u64 {
        (**self).page_size()
    }
    fn pin_run(&self, vaddr: u64, max_pages: u64, access: PinAccess) -> Result<PinnedRun, u64> {
        (**self).pin_run(vaddr, max_pages, access)
    }
    fn unpin_run(&self, run: &PinnedRun) {
        (**self).unpin_run(run);
    }
    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), u64> {
        (**self).read(vaddr, buf)
    }
    fn write(&self, vaddr: u64, data: &[u8]) -> Result<(), u64> {
        (**self).write(vaddr, data)
    }
    fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<(), u64> {
        (**self).read_phys(pa, buf)
    }
    fn write_phys(&self, pa: u64, data: &[u8]) -> Result<(), u64> {
        (**self).write_phys(pa, data)
    }
}

/// Whether the owner may lock memory beyond its limit (`capable(CAP_IPC_LOCK)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockCapability {
    /// RLIMIT_MEMLOCK applies.
    Limited,
    /// RLIMIT_MEMLOCK is not enforced.
    Unlimited,
}

/// An address space and its locked-memory account (`struct mm_struct`'s `locked_vm`).
#[derive(Debug)]
pub struct Mm {
    space: Box<dyn AddressSpace>,
    limit_pages: Option<u64>,
    capability: LockCapability,
    locked: AtomicU64,
    pending: AtomicU64,
}

/// RLIMIT_MEMLOCK of this process in bytes, `None` if unlimited.
#[must_use]
pub fn process_memlock_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` to a valid pointer.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if r != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(rl.rlim_cur)
    }
}

impl Mm {
    /// An owner of `space` with a locked-memory limit of `limit_bytes` (`None`: unlimited).
    #[must_use]
    pub fn new(
        space: Box<dyn AddressSpace>,
        limit_bytes: Option<u64>,
        capability: LockCapability,
    ) -> Self {
        let page = space.page_size();
        Mm {
            space,
            limit_pages: limit_bytes.map(|b| b / page),
            capability,
            locked: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// The address space.
    #[must_use]
    pub fn space(&self) -> &dyn AddressSpace {
        &*self.space
    }

    /// The lock capability.
    #[must_use]
    pub fn capability(&self) -> LockCapability {
        self.capability
    }

    /// Pages currently charged (`locked_vm`).
    #[must_use]
    pub fn locked_pages(&self) -> u64 {
        self.locked.load(Ordering::SeqCst)
    }

    /// Pages whose release waits for an IOTLB flush (lazy invalidation).
    #[must_use]
    pub fn pending_pages(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// `__account_locked_vm(mm, n, inc=true, ..., lock_cap)`.
    ///
    /// # Errors
    /// [`Error::LockedMemoryLimit`] if the charge would exceed the limit without the capability.
    pub fn charge(&self, pages: u64, capability: LockCapability) -> Result<()> {
        if pages == 0 {
            return Ok(());
        }
        let limit = match (capability, self.limit_pages) {
            (LockCapability::Limited, Some(limit)) => limit,
            _ => u64::MAX,
        };
        self.locked
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |locked| {
                locked.checked_add(pages).filter(|&n| n <= limit)
            })
            .map(|_| ())
            .map_err(|locked| Error::LockedMemoryLimit {
                locked,
                more: pages,
                limit,
            })
    }

    /// `__account_locked_vm(mm, n, inc=false, ...)`; never fails.
    pub fn uncharge(&self, pages: u64) {
        if pages == 0 {
            return;
        }
        let r = self
            .locked
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l.saturating_sub(pages))
            });
        debug_assert!(r.is_ok_and(|l| l >= pages), "locked_vm underflow");
    }

    pub(crate) fn add_pending(&self, pages: u64) {
        self.pending.fetch_add(pages, Ordering::SeqCst);
    }

    pub(crate) fn sub_pending(&self, pages: u64) {
        self.pending.fetch_sub(pages, Ordering::SeqCst);
    }
}

/// Whether [`ProcessMemory`] really locks pinned pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MlockPolicy {
    /// Only check the mapping (the default: no privileges needed).
    #[default]
    CheckOnly,
    /// Also `mlock` every pinned run, and `munlock` it on release.
    Lock,
}

/// This process's memory.
#[derive(Debug, Default)]
pub struct ProcessMemory {
    mlock: MlockPolicy,
}

/// One line of `/proc/self/maps`: `[start, end)` and its permissions.
#[derive(Debug, Clone, Copy)]
struct Vma {
    start: u64,
    end: u64,
    read: bool,
    write: bool,
}

fn parse_maps(maps: &str) -> Vec<Vma> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?.as_bytes();
            let (s, e) = range.split_once('-')?;
            Some(Vma {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                read: perms.first() == Some(&b'r'),
                write: perms.get(1) == Some(&b'w'),
            })
        })
        .collect()
}

impl ProcessMemory {
    /// This process's memory with the given mlock policy.
    #[must_use]
    pub fn new(mlock: MlockPolicy) -> Self {
        ProcessMemory { mlock }
    }
}

impl AddressSpace for ProcessMemory {
    fn pin_run(&self, vaddr: u64, max_pages: u64, access: PinAccess) -> Result<PinnedRun, u64> {
        let page = self.page_size();
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|_| vaddr)?;
        let vmas = parse_maps(&maps);
        let want_end = vaddr.saturating_add(max_pages.saturating_mul(page));
        // Follow adjacent VMAs: the run is virtually (hence "physically") contiguous.
        let mut at = vaddr;
        while at < want_end {
            let Some(v) = vmas.iter().find(|v| v.start <= at && at < v.end) else {
                break;
            };
            let ok = v.read && (access == PinAccess::Read || v.write);
            if !ok {
                break;
            }
            at = v.end.min(want_end);
        }
        if at == vaddr {
            return Err(vaddr);
        }
        let npages = (at - vaddr) / page;
        if self.mlock == MlockPolicy::Lock {
            let len = usize::try_from(at - vaddr).map_err(|_| vaddr)?;
            // SAFETY: mlock only changes residency of pages that the check above found mapped;
            // it does not access memory through the pointer.
            let r = unsafe { libc::mlock(vaddr as *const libc::c_void, len) };
            if r != 0 {
                return Err(vaddr);
            }
        }
        Ok(PinnedRun {
            pa: PhysAddr(vaddr),
            npages,
            reserved: false,
        })
    }

    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), u64> {
        process_vm(vaddr, buf.as_mut_ptr(), buf.len(), Direction::Read)
    }

    fn write(&self, vaddr: u64, data: &[u8]) -> Result<(), u64> {
        // process_vm_writev honours page protections: writing read-only memory fails (EFAULT).
        process_vm(
            vaddr,
            data.as_ptr().cast_mut(),
            data.len(),
            Direction::Write,
        )
    }

    fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<(), u64> {
        self.read(pa, buf)
    }

    fn write_phys(&self, pa: u64, data: &[u8]) -> Result<(), u64> {
        self.write(pa, data)
    }

    fn unpin_run(&self, run: &PinnedRun) {
        if self.mlock == MlockPolicy::Lock {
            if let Ok(len) = usize::try_from(run.npages * self.page_size()) {
                // SAFETY: munlock does not access memory; unlocking an unmapped range only fails.
                unsafe { libc::munlock(run.pa.raw() as *const libc::c_void, len) };
            }
        }
    }
}

pub(crate) use crate::usercopy::Direction;

/// Copies between `local` and this process's `remote` address without dereferencing `remote`
/// (see [`crate::usercopy`]: `process_vm_readv/writev`, or a pipe under seccomp).
pub(crate) fn process_vm(
    remote: u64,
    local: *mut u8,
    len: usize,
    dir: Direction,
) -> Result<(), u64> {
    crate::usercopy::copy(remote, local, len, dir)
}

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

#[derive(Debug, Default)]
struct FakeState {
    regions: BTreeMap<u64, FakeRegion>,
    /// (pa, npages) → outstanding pins.
    ledger: BTreeMap<(u64, u64), u64>,
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

const FAKE_PAGE: u64 = 4096;

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

    fn pin_run(&self, vaddr: u64, max_pages: u64, access: PinAccess) -> Result<PinnedRun, u64> {
        let mut st = self.st();
        let Some((_, r)) = st.regions.range(..=vaddr).next_back() else {
            return Err(vaddr);
        };
        let r = *r;
        if vaddr >= r.vaddr + r.len || max_pages == 0 {
            return Err(vaddr);
        }
        if access == PinAccess::Write && r.writable == Writable::No {
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
        let r = m.pin_run(0x10000, 100, PinAccess::Write).unwrap();
        assert_eq!((r.pa.raw(), r.npages), (0x100_0000, 16));
        m.add_region(FakeRegion {
            vaddr: 0x100000,
            len: 8 * FAKE_PAGE,
            pa: 0x200_0000,
            layout: Layout::Chunked { pages: 4 },
            backing: Backing::Normal,
            writable: Writable::No,
        });
        assert_eq!(m.pin_run(0x100000, 8, PinAccess::Write), Err(0x100000));
        let r = m.pin_run(0x101000, 8, PinAccess::Read).unwrap();
        assert_eq!((r.pa.raw(), r.npages), (0x200_0000 + 5 * FAKE_PAGE, 3));
        let r2 = m.pin_run(0x104000, 8, PinAccess::Read).unwrap();
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
    fn process_memory_copies_and_reports_faults() {
        let pm = ProcessMemory::default();
        let mut v = vec![0u8; 64];
        let addr = v.as_mut_ptr() as u64;
        pm.write(addr + 8, b"hello").unwrap();
        let mut b = [0u8; 5];
        pm.read(addr + 8, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(v[8], b'h');
        assert_eq!(pm.read(8, &mut b), Err(8));
        let text = process_memory_copies_and_reports_faults as *const () as u64;
        assert!(pm.write(text, b"x").is_err(), "text is read-only");
    }

    #[test]
    fn failure_injection_truncates_then_faults() {
        let m = FakeMemory::new();
        m.add_ram(0, 64 * FAKE_PAGE, 0);
        m.fail_after_pages(Some(10));
        assert_eq!(m.pin_run(0, 64, PinAccess::Read).unwrap().npages, 10);
        assert_eq!(
            m.pin_run(10 * FAKE_PAGE, 1, PinAccess::Read),
            Err(10 * FAKE_PAGE)
        );
    }

    #[test]
    fn process_memory_checks_mapping_and_write_permission() {
        let pm = ProcessMemory::default();
        let v = vec![0u8; 3 * 4096];
        let addr = (v.as_ptr() as u64 + 4095) & !4095;
        let r = pm.pin_run(addr, 1, PinAccess::Write).unwrap();
        assert_eq!(r.pa.raw(), addr);
        // Page 0 is never mapped.
        assert_eq!(pm.pin_run(0, 1, PinAccess::Read), Err(0));
        // Text is mapped read-only/executable: a write pin faults.
        let text = process_memory_checks_mapping_and_write_permission as *const () as u64 & !4095;
        assert_eq!(pm.pin_run(text, 1, PinAccess::Write), Err(text));
        pm.pin_run(text, 1, PinAccess::Read).unwrap();
    }

    #[test]
    fn accounting_enforces_the_limit_unless_capable() {
        let mm = Mm::new(
            Box::new(FakeMemory::new()),
            Some(10 * 4096),
            LockCapability::Limited,
        );
        mm.charge(10, LockCapability::Limited).unwrap();
        assert!(matches!(
            mm.charge(1, LockCapability::Limited),
            Err(Error::LockedMemoryLimit {
                locked: 10,
                more: 1,
                limit: 10
            })
        ));
        mm.charge(5, LockCapability::Unlimited).unwrap();
        mm.uncharge(15);
        assert_eq!(mm.locked_pages(), 0);
    }
}
