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

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use io_pgtable::PhysAddr;

use crate::error::{Error, Result};

mod fake;
mod gup;
mod limits;
mod process;
pub mod procmap;

pub use fake::{Backing, FakeMemory, FakeRegion, Layout, Writable};
pub use limits::{process_memlock_limit, FixedLimits, LockLimits, ProcessLimits};
pub use process::{MlockPolicy, ProcessMemory};

/// The access a pin needs: [`Access::Write`] needs writable memory (`FOLL_WRITE`), a
/// read-only pin [`Access::Read`]. The crate's one access type ([`crate::Access`]).
pub use io_pgtable::Access;

/// A physically contiguous run of pinned pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PinnedRun {
    /// Output address of the first page: what the IOMMU maps the iova to and a device reaches
    /// (with [`ProcessMemory`] numerically the page's host virtual address, see
    /// [`crate::PhysAddr`]; never a user address to copy from).
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
    fn pin_run(&self, vaddr: u64, max_pages: u64, access: Access) -> Result<PinnedRun, u64>;

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
    fn pin_run(&self, vaddr: u64, max_pages: u64, access: Access) -> Result<PinnedRun, u64> {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::fake::FAKE_PAGE;
    use super::*;

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
