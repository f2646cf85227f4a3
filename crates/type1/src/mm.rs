//! The user's memory behind `vaddr`: pinning and locked-memory accounting (`vfio_pin_pages_remote`,
//! `vfio_lock_acct`, `mm_lock_acct`, v6.18; our rules: docs/SEMANTICS.md, "Locked-memory
//! accounting and long-term pin rules").
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
//! `locked_vm` charge, checked at each charge against the limit (RLIMIT_MEMLOCK) and the memory
//! the process locked by itself, unless the mapping was made with the lock capability
//! (CAP_IPC_LOCK). Where those three come from is a [`LockLimits`]: read live from this process
//! ([`ProcessLimits`]) or fixed ([`FixedLimits`]).
//! Addresses are byte addresses; runs are `(pa, npages)` of `page_size()` pages.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use io_pgtable::PhysAddr;

use crate::error::{Error, Result};

mod gup;
mod limits;
pub mod procmap;

pub use limits::{process_memlock_limit, FixedLimits, LockLimits, ProcessLimits};

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

    /// Pages of the pins this address space holds that the operating system already counts as
    /// locked memory of the process (`VmLck`), e.g. because [`MlockPolicy::Lock`] `mlock`ed them.
    /// [`Mm::charge`] subtracts them from [`LockLimits::mlocked_bytes`] so they are not counted
    /// twice. Default: none.
    fn os_locked_pages(&self) -> u64 {
        0
    }

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

    /// Device writes of physical memory, in order: each `(pa, data)` as by
    /// [`AddressSpace::write_phys`] (one system call for all of them in [`ProcessMemory`]).
    ///
    /// # Errors
    /// `Err((index, pa))`: the first write that did not land whole and the first address of it
    /// nothing backs; the writes before it landed.
    fn write_phys_vectored(&self, writes: &[(u64, &[u8])]) -> Result<(), (usize, u64)> {
        for (k, &(pa, data)) in writes.iter().enumerate() {
            self.write_phys(pa, data).map_err(|a| (k, a))?;
        }
        Ok(())
    }
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
    fn os_locked_pages(&self) -> u64 {
        (**self).os_locked_pages()
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
    fn write_phys_vectored(&self, writes: &[(u64, &[u8])]) -> Result<(), (usize, u64)> {
        (**self).write_phys_vectored(writes)
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
    limits: Box<dyn LockLimits>,
    locked: AtomicU64,
    pending: AtomicU64,
}

impl Mm {
    /// An owner of `space` with a fixed locked-memory limit of `limit_bytes` (`None`:
    /// unlimited) and a fixed capability: for tests, benches and fake address spaces. A real
    /// process uses [`Mm::with_limits`] and [`ProcessLimits`].
    #[must_use]
    pub fn new(
        space: Box<dyn AddressSpace>,
        limit_bytes: Option<u64>,
        capability: LockCapability,
    ) -> Self {
        Mm::with_limits(
            space,
            Box::new(FixedLimits {
                memlock_bytes: limit_bytes,
                capability,
                mlocked_bytes: 0,
            }),
        )
    }

    /// An owner of `space` whose limit, capability and self-locked memory are read from
    /// `limits` whenever the accounting needs them.
    #[must_use]
    pub fn with_limits(space: Box<dyn AddressSpace>, limits: Box<dyn LockLimits>) -> Self {
        Mm {
            space,
            limits,
            locked: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// The address space.
    #[must_use]
    pub fn space(&self) -> &dyn AddressSpace {
        &*self.space
    }

    /// Where the limits come from.
    #[must_use]
    pub fn limits(&self) -> &dyn LockLimits {
        &*self.limits
    }

    /// The lock capability *now* (`capable(CAP_IPC_LOCK)`): MAP_DMA records it in each new
    /// mapping (`vfio_dma_do_map`), which then charges with the recorded value.
    #[must_use]
    pub fn capability(&self) -> LockCapability {
        self.limits.capability()
    }

    /// Pages currently charged (`locked_vm`, without memory the process locked by itself).
    #[must_use]
    pub fn locked_pages(&self) -> u64 {
        self.locked.load(Ordering::SeqCst)
    }

    /// Pages whose release waits for an IOTLB flush (lazy invalidation).
    #[must_use]
    pub fn pending_pages(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// `__account_locked_vm(mm, n, inc=true, ..., lock_cap)`: without the capability the limit
    /// is read now, and the charge must fit beside our other charges *and* the memory the
    /// process locked by itself (both are `mm->locked_vm` in the kernel).
    ///
    /// # Errors
    /// [`Error::LockedMemoryLimit`] if the charge would exceed the limit without the capability;
    /// `locked` then counts our charges plus the self-locked pages.
    pub fn charge(&self, pages: u64, capability: LockCapability) -> Result<()> {
        if pages == 0 {
            return Ok(());
        }
        let page = self.space.page_size();
        let limit = match capability {
            LockCapability::Limited => self.limits.memlock_bytes().map(|b| b / page),
            LockCapability::Unlimited => None,
        };
        let Some(limit) = limit else {
            return self
                .locked
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_add(pages))
                .map(|_| ())
                .map_err(|locked| Error::LockedMemoryLimit {
                    locked,
                    more: pages,
                    limit: u64::MAX,
                });
        };
        // The self-locked memory is read only when our own charges leave room for the
        // request: a charge that fails on them alone needs no /proc read.
        let own = self.locked.load(Ordering::SeqCst);
        let others = if own.saturating_add(pages) > limit {
            0
        } else {
            (self.limits.mlocked_bytes() / page).saturating_sub(self.space.os_locked_pages())
        };
        let room = limit.saturating_sub(others);
        self.locked
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |locked| {
                locked.checked_add(pages).filter(|&n| n <= room)
            })
            .map(|_| ())
            .map_err(|locked| Error::LockedMemoryLimit {
                locked: locked.saturating_add(others),
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

/// This process's memory, pinned by the kernel's rules for long-term pins (see the `gup`
/// module: `check_vma_flags` in mm/gup.c and vfio's `VM_PFNMAP` fallback), asked of the kernel
/// at every pin (`PROCMAP_QUERY` on Linux ≥ 6.11, one area at a time; else the text of
/// `/proc/self/maps`): nothing about the mappings is cached.
#[derive(Debug, Default)]
pub struct ProcessMemory {
    mlock: MlockPolicy,
    /// Pages this address space `mlock`ed and has not `munlock`ed ([`MlockPolicy::Lock`]).
    mlocked: AtomicU64,
    /// Ranges the owner declared PFNMAP-like: `start → end`, disjoint and not touching.
    reserved: Mutex<BTreeMap<u64, u64>>,
}

/// The pages of `[at, ..)` and whether they are marked reserved: `(reserved, end of that
/// state)`, never past `limit`.
fn mark_at(marks: &BTreeMap<u64, u64>, at: u64, limit: u64) -> (bool, u64) {
    if let Some((_, &end)) = marks.range(..=at).next_back() {
        if at < end {
            return (true, end.min(limit));
        }
    }
    let next = marks.range(at..).next().map_or(limit, |(&s, _)| s);
    (false, next.min(limit))
}

impl ProcessMemory {
    /// This process's memory with the given mlock policy.
    #[must_use]
    pub fn new(mlock: MlockPolicy) -> Self {
        ProcessMemory {
            mlock,
            ..ProcessMemory::default()
        }
    }

    fn marks(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        self.reserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Declares `[start, start + len)` a PFNMAP-like area (e.g. a device BAR backed by a memfd):
    /// pins there give reserved pages, never pinned, `mlock`ed nor charged, and refused to
    /// `vfio_pin_pages` (as a `VM_PFNMAP` area is in the kernel). The pages must still be
    /// mapped with the protection a pin asks for. Overlapping or adjacent marks merge; a zero
    /// or wrapping length does nothing. Pins taken before the call keep their kind.
    pub fn mark_reserved(&self, start: u64, len: u64) {
        let Some(mut end) = start.checked_add(len).filter(|_| len > 0) else {
            return;
        };
        let mut start = start;
        let mut m = self.marks();
        let touching: Vec<(u64, u64)> = m
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            m.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        m.insert(start, end);
    }

    /// Removes `[start, start + len)` from the reserved marks (parts outside any mark are
    /// ignored).
    pub fn unmark_reserved(&self, start: u64, len: u64) {
        let Some(end) = start.checked_add(len).filter(|_| len > 0) else {
            return;
        };
        let mut m = self.marks();
        let hit: Vec<(u64, u64)> = m
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            m.remove(&s);
            if s < start {
                m.insert(s, start);
            }
            if e > end {
                m.insert(end, e);
            }
        }
    }

    /// The marked ranges, `[start, end)`, in order.
    #[must_use]
    pub fn reserved_ranges(&self) -> Vec<(u64, u64)> {
        self.marks().iter().map(|(&s, &e)| (s, e)).collect()
    }

    /// The longest run at `vaddr` whose areas all give the same verdict (pinned or reserved):
    /// `(end of the run, verdict)`, `None` if `vaddr` itself cannot be pinned. Areas are asked
    /// of the kernel one by one (`PROCMAP_QUERY`), or read from the maps text where that ioctl
    /// is missing.
    fn scan(&self, vaddr: u64, want_end: u64, access: PinAccess) -> Option<(u64, gup::Verdict)> {
        let marks = self.marks().clone();
        let mut run = Run {
            at: vaddr,
            kind: None,
        };
        if let Some(fd) = procmap::CACHE.fd() {
            let mut name = procmap::NameBuf::new();
            loop {
                if run.at >= want_end {
                    return run.result();
                }
                match procmap::query_fd(fd, run.at, &mut name) {
                    procmap::Answer::Area(line) => {
                        if !run.extend(&marks, &line, want_end, access) {
                            return run.result();
                        }
                    }
                    procmap::Answer::Unmapped => return run.result(),
                    // Fall back to the text, from where the queries got to.
                    procmap::Answer::Unsupported => break,
                }
            }
        }
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        for line in maps.lines().filter_map(gup::parse_maps_line) {
            if run.at >= want_end || line.start > run.at {
                break;
            }
            if line.end <= run.at {
                continue;
            }
            if !run.extend(&marks, &line, want_end, access) {
                break;
            }
        }
        run.result()
    }
}

/// A run being scanned: `[start, at)` so far, all with verdict `kind`.
struct Run {
    at: u64,
    kind: Option<gup::Verdict>,
}

impl Run {
    /// Extends the run over `line` (which contains `at`); false when the run ends inside it.
    fn extend(
        &mut self,
        marks: &BTreeMap<u64, u64>,
        line: &gup::MapsLine<'_>,
        want_end: u64,
        access: PinAccess,
    ) -> bool {
        let area_end = line.end.min(want_end);
        let mut plain = None;
        while self.at < area_end {
            let (marked, piece_end) = mark_at(marks, self.at, area_end);
            let v = if marked {
                gup::pfnmap_verdict(line, access)
            } else {
                *plain.get_or_insert_with(|| gup::verdict(line, access, &gup::LiveProbe))
            };
            if v == gup::Verdict::Fault || self.kind.is_some_and(|k| k != v) {
                return false;
            }
            self.kind = Some(v);
            self.at = piece_end;
        }
        true
    }

    fn result(&self) -> Option<(u64, gup::Verdict)> {
        self.kind.map(|k| (self.at, k))
    }
}

impl AddressSpace for ProcessMemory {
    fn pin_run(&self, vaddr: u64, max_pages: u64, access: PinAccess) -> Result<PinnedRun, u64> {
        let page = self.page_size();
        let want_end = vaddr.saturating_add(max_pages.saturating_mul(page));
        // Adjacent areas continue the run: it is virtually (hence "physically") contiguous.
        let Some((at, kind)) = self.scan(vaddr, want_end, access) else {
            return Err(vaddr);
        };
        let npages = (at - vaddr) / page;
        if npages == 0 {
            return Err(vaddr);
        }
        let reserved = kind == gup::Verdict::Reserved;
        if self.mlock == MlockPolicy::Lock && !reserved {
            let len = usize::try_from(npages * page).map_err(|_| vaddr)?;
            // SAFETY: mlock only changes residency of pages that the check above found mapped;
            // it does not access memory through the pointer.
            let r = unsafe { libc::mlock(vaddr as *const libc::c_void, len) };
            if r != 0 {
                return Err(vaddr);
            }
            self.mlocked.fetch_add(npages, Ordering::SeqCst);
        }
        Ok(PinnedRun {
            pa: PhysAddr(vaddr),
            npages,
            reserved,
        })
    }

    fn os_locked_pages(&self) -> u64 {
        self.mlocked.load(Ordering::SeqCst)
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

    fn write_phys_vectored(&self, writes: &[(u64, &[u8])]) -> Result<(), (usize, u64)> {
        crate::usercopy::copy_to_process_vectored(writes)
    }

    fn unpin_run(&self, run: &PinnedRun) {
        if self.mlock == MlockPolicy::Lock && !run.reserved {
            if let Ok(len) = usize::try_from(run.npages * self.page_size()) {
                // SAFETY: munlock does not access memory; unlocking an unmapped range only fails.
                unsafe { libc::munlock(run.pa.raw() as *const libc::c_void, len) };
            }
            let _ = self
                .mlocked
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(run.npages))
                });
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

    /// Limits a test changes while an [`Mm`] uses them.
    #[derive(Debug)]
    struct Adjustable(Mutex<FixedLimits>);

    impl Adjustable {
        fn new(pages: u64) -> std::sync::Arc<Self> {
            std::sync::Arc::new(Adjustable(Mutex::new(FixedLimits {
                memlock_bytes: Some(pages * FAKE_PAGE),
                capability: LockCapability::Limited,
                mlocked_bytes: 0,
            })))
        }
        fn set(&self, f: impl FnOnce(&mut FixedLimits)) {
            f(&mut self.0.lock().unwrap());
        }
    }

    impl LockLimits for Adjustable {
        fn memlock_bytes(&self) -> Option<u64> {
            self.0.lock().unwrap().memlock_bytes
        }
        fn capability(&self) -> LockCapability {
            self.0.lock().unwrap().capability
        }
        fn mlocked_bytes(&self) -> u64 {
            self.0.lock().unwrap().mlocked_bytes
        }
    }

    fn live_mm(limits: &std::sync::Arc<Adjustable>) -> Mm {
        Mm::with_limits(Box::new(FakeMemory::new()), Box::new(limits.clone()))
    }

    mod live_limits {
        use super::*;

        #[test]
        fn the_limit_is_read_at_each_charge() {
            // __account_locked_vm reads task_rlimit(RLIMIT_MEMLOCK) every time.
            let limits = Adjustable::new(4);
            let mm = live_mm(&limits);
            mm.charge(4, LockCapability::Limited).unwrap();
            assert!(mm.charge(1, LockCapability::Limited).is_err());
            limits.set(|l| l.memlock_bytes = Some(8 * FAKE_PAGE));
            mm.charge(4, LockCapability::Limited).unwrap();
            limits.set(|l| l.memlock_bytes = None);
            mm.charge(100, LockCapability::Limited).unwrap();
            assert_eq!(mm.locked_pages(), 108);
        }

        #[test]
        fn mlocked_memory_shares_the_limit() {
            // mlock and vfio both charge mm->locked_vm.
            let limits = Adjustable::new(10);
            let mm = live_mm(&limits);
            limits.set(|l| l.mlocked_bytes = 6 * FAKE_PAGE);
            assert!(matches!(
                mm.charge(5, LockCapability::Limited),
                Err(Error::LockedMemoryLimit {
                    locked: 6,
                    more: 5,
                    limit: 10
                })
            ));
            mm.charge(4, LockCapability::Limited).unwrap();
            limits.set(|l| l.mlocked_bytes = 0);
            mm.charge(6, LockCapability::Limited).unwrap();
            assert_eq!(mm.locked_pages(), 10);
        }

        #[test]
        fn the_capability_is_read_when_asked_and_exempts_the_charge() {
            let limits = Adjustable::new(1);
            let mm = live_mm(&limits);
            assert_eq!(mm.capability(), LockCapability::Limited);
            limits.set(|l| l.capability = LockCapability::Unlimited);
            assert_eq!(mm.capability(), LockCapability::Unlimited);
            mm.charge(50, mm.capability()).unwrap();
            // A charge made with the capability still counts for later limited charges.
            assert!(mm.charge(1, LockCapability::Limited).is_err());
        }
    }

    mod reserved_marks {
        use super::*;

        #[test]
        fn overlapping_and_adjacent_marks_merge() {
            let pm = ProcessMemory::default();
            pm.mark_reserved(0x1000, 0x1000);
            pm.mark_reserved(0x3000, 0x1000);
            pm.mark_reserved(0x2000, 0x1000);
            pm.mark_reserved(0x8000, 0x2000);
            pm.mark_reserved(0x9000, 0x2000);
            assert_eq!(
                pm.reserved_ranges(),
                vec![(0x1000, 0x4000), (0x8000, 0xb000)]
            );
        }

        #[test]
        fn unmark_splits_a_mark() {
            let pm = ProcessMemory::default();
            pm.mark_reserved(0x1000, 0x4000);
            pm.unmark_reserved(0x2000, 0x1000);
            assert_eq!(
                pm.reserved_ranges(),
                vec![(0x1000, 0x2000), (0x3000, 0x5000)]
            );
            pm.unmark_reserved(0, 0x10000);
            assert!(pm.reserved_ranges().is_empty());
        }

        #[test]
        fn zero_or_wrapping_lengths_do_nothing() {
            let pm = ProcessMemory::default();
            pm.mark_reserved(0x1000, 0);
            pm.mark_reserved(u64::MAX - 0xfff, 0x2000);
            assert!(pm.reserved_ranges().is_empty());
        }

        #[test]
        fn a_marked_range_pins_as_reserved_and_splits_runs() {
            // vaddr_get_pfns: a VM_PFNMAP page is reserved; a run never mixes reserved and
            // ordinary pages (vfio_pin_pages_remote stops where is_invalid_reserved_pfn changes).
            let pm = ProcessMemory::default();
            let v = vec![0u8; 5 * 4096];
            let addr = (v.as_ptr() as u64 + 4095) & !4095;
            pm.mark_reserved(addr + 4096, 2 * 4096);
            let r = pm.pin_run(addr, 4, PinAccess::Write).unwrap();
            assert_eq!((r.npages, r.reserved), (1, false));
            let r = pm.pin_run(addr + 4096, 3, PinAccess::Write).unwrap();
            assert_eq!((r.pa.raw(), r.npages, r.reserved), (addr + 4096, 2, true));
            pm.unmark_reserved(addr, 4 * 4096);
            let r = pm.pin_run(addr, 4, PinAccess::Write).unwrap();
            assert_eq!((r.npages, r.reserved), (4, false));
        }
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
