//! An IOMMU domain: a page table, its IOTLB, and an invalidation policy.
//!
//! This is the unit an IOMMU-backed group maps into. [`Domain::map`] and [`Domain::unmap`] are
//! `iommu_map` / `iommu_unmap` with the TLB maintenance of the chosen
//! [`InvalidationPolicy`] (strict as `iommu_unmap`, lazy as the flush queue of `dma-iommu.c`,
//! v6.18); [`Domain::translate`] is what a device does on every DMA: IOTLB, then a walk that
//! records hardware dirty state on writes, as an SMMUv3 with HTTU does for a DBM leaf.
//!
//! Unmapped memory is handed back through tokens: [`Domain::unmap`] takes a token for the range
//! (say, the pinned pages behind it) and returns the tokens whose invalidation has completed.
//! Under `Strict` that is the token just given; under `Lazy` tokens come back only after a flush
//! that covers them, from a later `unmap`, [`Domain::poll`] or [`Domain::flush`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::addr::{Iova, PhysAddr};
use crate::cfg::Config;
use crate::dirty::DirtyFlags;
use crate::error::Error;
use crate::prot::{Access, Prot};
use crate::pte;
use crate::table::IoPageTable;
use crate::tlb::{
    Clock, FlushOps, FlushQueue, FlushQueueConfig, Gather, InFlight, Iotlb, IotlbConfig,
    Transaction,
};

/// When leaf invalidations happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidationPolicy {
    /// Every unmap invalidates the IOTLB before it returns (`IOMMU_DOMAIN_DMA`; what VFIO uses).
    #[default]
    Strict,
    /// Leaf invalidations are deferred to a flush queue (`IOMMU_DOMAIN_DMA_FQ`): faster, but a
    /// device may reach unmapped memory until the flush (the isolation cost the kernel's
    /// `IOMMU_DEFAULT_DMA_LAZY` help text names). Walk flushes stay synchronous.
    Lazy(FlushQueueConfig),
}

/// Everything needed to create a [`Domain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainConfig {
    /// The page table.
    pub table: Config,
    /// Invalidation policy.
    pub policy: InvalidationPolicy,
    /// IOTLB sizing.
    pub iotlb: IotlbConfig,
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Where the access lands.
    pub pa: PhysAddr,
    /// Bytes from `pa` to the end of the leaf (contiguous output).
    pub len: u64,
}

/// A translation fault, as the IOMMU would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// No leaf maps the address.
    #[error("translation fault at {iova}: not mapped")]
    NotMapped {
        /// The faulting address.
        iova: Iova,
    },
    /// The leaf does not allow the access.
    #[error("permission fault at {iova}: {access:?} not allowed")]
    Permission {
        /// The faulting address.
        iova: Iova,
        /// The access attempted.
        access: Access,
    },
}

/// The tokens an unmap hands back: usually none or one, held inline.
pub type Released<T> = smallvec::SmallVec<[T; 1]>;

/// The result of [`Domain::unmap`].
#[derive(Debug, PartialEq, Eq)]
pub struct Unmapped<T> {
    /// Bytes unmapped (stops at the first hole, like `iommu_unmap`).
    pub bytes: u64,
    /// Tokens whose memory may now be reused (one inline: a strict unmap allocates nothing).
    pub released: Released<T>,
}

/// An IOMMU domain. `T` is the token type of memory waiting for an invalidation.
#[derive(Debug)]
pub struct Domain<T = ()> {
    table: IoPageTable,
    iotlb: Arc<Iotlb>,
    policy: InvalidationPolicy,
    fq: Mutex<FlushQueue<T>>,
    clock: Arc<dyn Clock>,
    inflight: InFlight,
}

impl<T> Domain<T> {
    /// A new, empty domain.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad table or flush-queue configuration.
    pub fn new(cfg: &DomainConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let geo = crate::cfg::Geometry::new(&cfg.table)?;
        let iotlb = Arc::new(Iotlb::new(geo.pgsize_bitmap, cfg.iotlb));
        let table = IoPageTable::new(&cfg.table, iotlb.clone())?;
        let fq_cfg = match cfg.policy {
            InvalidationPolicy::Strict => FlushQueueConfig::default(),
            InvalidationPolicy::Lazy(c) => c,
        };
        Ok(Domain {
            table,
            iotlb,
            policy: cfg.policy,
            fq: Mutex::new(FlushQueue::new(fq_cfg)?),
            clock,
            inflight: InFlight::default(),
        })
    }

    /// Starts a device transaction: a translation and the memory access it leads to, done
    /// before the guard drops, complete before any invalidation that follows returns (as the
    /// IOMMU's invalidation completion waits for in-flight DMA). A simulated device brackets
    /// each access with one.
    pub fn transaction(&self) -> Transaction<'_> {
        self.inflight.enter()
    }

    /// Waits for the device transactions begun before this call (after a device lost its access
    /// some other way, say its group detached).
    pub fn drain_transactions(&self) {
        self.inflight.drain();
    }

    /// The IOTLB invalidated, then the device transactions begun before it drained: after
    /// this, nothing can reach memory through a translation that is gone.
    fn invalidate_all_and_drain(&self) {
        self.iotlb.invalidate_all();
        self.inflight.drain();
    }

    /// The page table.
    #[must_use]
    pub fn table(&self) -> &IoPageTable {
        &self.table
    }

    /// The IOTLB.
    #[must_use]
    pub fn iotlb(&self) -> &Iotlb {
        &self.iotlb
    }

    /// The invalidation policy.
    #[must_use]
    pub fn policy(&self) -> InvalidationPolicy {
        self.policy
    }

    fn queue(&self) -> MutexGuard<'_, FlushQueue<T>> {
        self.fq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `iommu_map` (`__iommu_map`, v6.18): all or nothing. Also runs the flush-queue timer.
    ///
    /// # Errors
    /// As [`IoPageTable::map`].
    pub fn map(&self, iova: Iova, pa: PhysAddr, size: u64, prot: Prot) -> Result<(), Error> {
        self.table.map(iova, pa, size, prot)
    }

    /// `iommu_unmap` with this domain's policy. `token` stands for the memory behind the range;
    /// the returned `released` tokens may be reused now (see the module docs).
    pub fn unmap(&self, iova: Iova, size: u64, token: T) -> Unmapped<T> {
        self.unmap_read_dirty(iova, size, token, None)
    }

    /// [`Domain::unmap`] that also reports `(iova, len)` of every writable-dirty leaf it removes,
    /// read atomically as the leaf is cleared: a write that reached the page table before the
    /// unmap is reported, and none can follow it (the walker marks dirty with a CAS).
    pub fn unmap_read_dirty(
        &self,
        iova: Iova,
        size: u64,
        token: T,
        dirty: crate::table::DirtySink<'_>,
    ) -> Unmapped<T> {
        match self.policy {
            InvalidationPolicy::Strict => {
                let mut g = Gather::new();
                let bytes = self.table.unmap_dirty(iova, size, Some(&mut g), dirty);
                self.iotlb.iotlb_sync(&g);
                self.inflight.drain();
                Unmapped {
                    bytes,
                    released: smallvec::smallvec![token],
                }
            }
            InvalidationPolicy::Lazy(_) => {
                let mut g = Gather::queued();
                let bytes = self.table.unmap_dirty(iova, size, Some(&mut g), dirty);
                let now = self.clock.now();
                let mut q = self.queue();
                let mut released: Released<T> = q
                    .poll(now, &|| self.invalidate_all_and_drain())
                    .into_iter()
                    .collect();
                if bytes == 0 {
                    released.push(token);
                } else {
                    released.extend(q.queue(now, iova, bytes, token, &|| {
                        self.invalidate_all_and_drain();
                    }));
                }
                Unmapped { bytes, released }
            }
        }
    }

    /// Runs the flush-queue timer: if it has expired, flushes and returns the released tokens.
    /// A lazy domain's owner calls this periodically (every container operation does); the
    /// exposure window is bounded by the timeout only as long as somebody polls.
    pub fn poll(&self) -> Vec<T> {
        if self.policy == InvalidationPolicy::Strict {
            return Vec::new();
        }
        let now = self.clock.now();
        self.queue().poll(now, &|| self.invalidate_all_and_drain())
    }

    /// Flushes the IOTLB now and returns every token still queued.
    pub fn flush(&self) -> Vec<T> {
        self.queue().flush_now(&|| self.invalidate_all_and_drain())
    }

    /// Unmapped ranges whose invalidation is still pending (lazy mode).
    #[must_use]
    pub fn pending_invalidations(&self) -> Vec<(Iova, u64)> {
        self.queue().pending().collect()
    }

    /// A device access at `iova`: IOTLB hit, or a walk that fills the IOTLB. A write through a
    /// writable-clean DBM leaf marks it dirty atomically (clears AP\[2\], as the SMMU does).
    ///
    /// # Errors
    /// [`Fault::NotMapped`] or [`Fault::Permission`].
    #[inline]
    pub fn translate(&self, iova: Iova, access: Access) -> Result<Translation, Fault> {
        if let Some((pa, len)) = self.iotlb.lookup(iova, access) {
            return Ok(Translation {
                pa: PhysAddr(pa),
                len,
            });
        }
        self.translate_slow(iova, access)
    }

    #[cold]
    fn translate_slow(&self, iova: Iova, access: Access) -> Result<Translation, Fault> {
        let guard = self.iotlb.lock_fill();
        let geo = self.table.geometry();
        loop {
            let leaf = self
                .table
                .find_leaf(iova.raw())
                .ok_or(Fault::NotMapped { iova })?;
            let perms = pte::leaf_perms(geo.format, leaf.pte);
            let allowed = match access {
                Access::Read => perms.read,
                Access::Write => perms.write,
            };
            if !allowed {
                return Err(Fault::Permission { iova, access });
            }
            let mut dirty_now = !perms.write_needs_dirty;
            if access == Access::Write && perms.write_needs_dirty {
                // Mark dirty only on the entry we walked: if an unmap or a split replaced it
                // meanwhile, walk again, so the mark is never lost.
                let marked = leaf.pte & !pte::AP_RDONLY;
                if leaf
                    .slot
                    .compare_exchange(leaf.pte, marked, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                dirty_now = true;
            }
            let size = geo.block_size(leaf.lvl);
            let base = iova.raw() & !(size - 1);
            let pa_base = pte::iopte_to_paddr(leaf.pte, geo.granule);
            self.iotlb.insert(
                &guard,
                Iova(base),
                size,
                pa_base,
                perms.read,
                perms.write && dirty_now,
            );
            let off = iova.raw() - base;
            return Ok(Translation {
                pa: PhysAddr(pa_base + off),
                len: size - off,
            });
        }
    }

    /// Reports and (unless `NO_CLEAR`) cleans dirty leaves in `[iova, iova + size)`, then syncs
    /// the IOTLB for what was cleaned, so later writes are recorded again (as iommufd's
    /// `iopt_read_and_clear_dirty_data` syncs after `read_and_clear_dirty`, v6.18).
    ///
    /// # Errors
    /// As [`IoPageTable::read_and_clear_dirty`].
    pub fn read_and_clear_dirty(
        &self,
        iova: Iova,
        size: u64,
        flags: DirtyFlags,
        record: &mut dyn FnMut(Iova, u64),
    ) -> Result<(), Error> {
        let mut g = Gather::new();
        let r = self
            .table
            .read_and_clear_dirty(iova, size, flags, &mut g, record);
        if !flags.contains(DirtyFlags::NO_CLEAR) {
            self.iotlb.iotlb_sync(&g);
        }
        r
    }

    /// Starts hardware dirty tracking: blocks are split into pages and new mappings use pages
    /// (so dirty state is per page, not per 2M or 1G block), new leaves start writable-clean,
    /// the initial "dirty" state of every writable leaf is cleaned and the IOTLB flushed
    /// (as iommufd's `iopt_set_dirty_tracking` does first, v6.18), so only writes from now on
    /// are reported, page by page (pages only: docs/SEMANTICS.md, "The page table").
    pub fn start_dirty_tracking(&self) {
        self.table.set_clean_start(true);
        self.table.set_page_granular(true);
        self.table.split_blocks();
        self.table.clear_all_dirty();
        self.iotlb.invalidate_all();
    }

    /// Stops hardware dirty tracking: new leaves start dirty again and new mappings use blocks,
    /// as the kernel maps them (split blocks stay split).
    pub fn stop_dirty_tracking(&self) {
        self.table.set_clean_start(false);
        self.table.set_page_granular(false);
    }

    /// True if the table records hardware dirty state (stage 1 with `ARM_HD`).
    #[must_use]
    pub fn has_dirty_tracking(&self) -> bool {
        let geo = self.table.geometry();
        geo.format == crate::cfg::Format::ArmLpaeS1
            && geo.quirks.contains(crate::cfg::Quirks::ARM_HD)
    }
}
