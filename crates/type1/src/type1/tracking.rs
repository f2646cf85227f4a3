//! Dirty page tracking (`VFIO_IOMMU_DIRTY_PAGES`: `vfio_iommu_type1_dirty_pages`,
//! `vfio_dma_bitmap_alloc_all`, `vfio_iova_dirty_bitmap`, `update_user_bitmap`, v6.18) and the
//! reports that GET_BITMAP and UNMAP_DMA with GET_DIRTY_BITMAP produce.
//!
//! A page is reported dirty iff: it is pinned now; or since the mapping's last report it
//! was pinned, written with `dma_rw`, or covered by the detach of a group that escaped tracking;
//! or (kernel-exact mode) its mapping is IOMMU-mapped while an IOMMU-backed group has never
//! pinned; or (precise mode) a device wrote it through the page table (hardware dirty bits).

use std::ops::Range;

use super::{Type1, Version};
use crate::dirty::{self, BitmapSink, DirtyMode};
use crate::dma::Dma;
use crate::error::{Error, Result};

/// Where a request's reports go: the words of its sink, whose bit 0 is the page at `base`.
pub(crate) struct BitmapDest<'a> {
    pub(crate) sink: &'a mut dyn BitmapSink,
    pub(crate) base: u64,
}

impl BitmapDest<'_> {
    /// The sink's words for a report of `nbits` bits at `bit_offset`, and the span of them the
    /// report writes.
    ///
    /// # Errors
    /// The sink's error, or [`Error::InvalidBitmap`] if its words are too few.
    fn words_for(&mut self, nbits: u64, bit_offset: u64) -> Result<(Range<usize>, &mut [u64])> {
        let too_few = Error::InvalidBitmap {
            reason: "bitmap too small for the range",
        };
        let span = dirty::report_span(nbits, bit_offset).ok_or(too_few.clone())?;
        let words = self.sink.words(span.clone())?;
        if span.end > words.len() {
            return Err(too_few);
        }
        Ok((span, words))
    }
}

impl Type1 {
    /// True if the mapping must be reported fully dirty (`update_user_bitmap` sets every bit while
    /// `num_non_pinned_groups` is non-zero and the mapping is IOMMU-mapped, or its precise-mode
    /// equivalent for domains without hardware dirty bits).
    pub(crate) fn full_dirty(&self, dma: &Dma) -> bool {
        if !dma.iommu_mapped {
            return false;
        }
        match self.cfg_dirty_mode() {
            DirtyMode::KernelExact => self.num_non_pinned_groups > 0,
            DirtyMode::Precise => self.domains.iter().any(|d| {
                !d.domain.has_dirty_tracking()
                    && d.groups.iter().any(|g| !g.pinned_page_dirty_scope)
            }),
        }
    }

    fn precise(&self) -> bool {
        self.dirty_tracking && self.cfg_dirty_mode() == DirtyMode::Precise
    }

    /// Moves hardware dirty state of the mapping at `key` into its bitmap (precise mode).
    fn harvest(&mut self, key: u64) {
        if !self.precise() {
            return;
        }
        let shift = self.min_pgsize().trailing_zeros();
        let domains: Vec<_> = self
            .domains
            .iter()
            .filter(|d| d.domain.has_dirty_tracking())
            .map(|d| d.domain.clone())
            .collect();
        let Some(dma) = self.dmas.get_mut(key) else {
            return;
        };
        let (iova, size) = (dma.iova, dma.size);
        let Some(bm) = dma.bitmap.as_mut() else {
            return;
        };
        for d in domains {
            let r = d.read_and_clear_dirty(
                io_pgtable::Iova(iova),
                size,
                io_pgtable::DirtyFlags::empty(),
                &mut |at, len| bm.set_span(iova, shift, at.raw(), len),
            );
            if let Err(e) = r {
                // A mapping is always fully mapped in every domain; a hole is a bug.
                log::error!("dirty harvest of {iova:#x}+{size:#x} failed: {e}");
            }
        }
    }

    /// `vfio_dma_populate_bitmap`: pinned pages are dirty.
    fn populate_from_pins(&mut self, key: u64) {
        let shift = self.min_pgsize().trailing_zeros();
        if let Some(dma) = self.dmas.get_mut(key) {
            let iova = dma.iova;
            if let Some(bm) = dma.bitmap.as_mut() {
                for p in dma.pfn_list.iter() {
                    let r = bm.set((p.iova - iova) >> shift, 1);
                    debug_assert!(r.is_ok(), "{r:?}");
                }
            }
        }
    }

    /// `DIRTY_PAGES` START: a bitmap for every mapping, populated from pinned pages. Idempotent.
    pub(crate) fn dirty_start(&mut self) -> Result<()> {
        if self.version != Version::V2 {
            return Err(Error::NotV2);
        }
        if self.dirty_tracking {
            return Ok(());
        }
        let mut bitmaps = Vec::with_capacity(self.dmas.len());
        let keys = self.dmas.keys();
        for key in keys {
            let Some(dma) = self.dmas.get(key) else {
                continue;
            };
            // On failure the bitmaps allocated so far are dropped: tracking stays off.
            bitmaps.push(self.bitmap_for(dma)?);
            self.bitmap_allocated();
        }
        for (dma, bm) in self.dmas.iter_mut().zip(bitmaps) {
            dma.bitmap = Some(bm);
        }
        for key in self.dmas.keys() {
            self.populate_from_pins(key);
        }
        self.dirty_tracking = true;
        if self.precise() {
            for d in &self.domains {
                d.domain.start_dirty_tracking();
            }
        }
        Ok(())
    }

    /// `DIRTY_PAGES` STOP: bitmaps freed. Idempotent.
    pub(crate) fn dirty_stop(&mut self) -> Result<()> {
        if self.version != Version::V2 {
            return Err(Error::NotV2);
        }
        if self.dirty_tracking {
            for d in &self.domains {
                d.domain.stop_dirty_tracking();
            }
            for dma in self.dmas.iter_mut() {
                dma.bitmap = None;
            }
            self.dirty_tracking = false;
        }
        Ok(())
    }

    /// Reports the mapping at `key`'s dirty state into `dest` (`update_user_bitmap`) and
    /// returns the words it wrote. Nothing changes if the sink cannot give its words or they are
    /// too few.
    pub(crate) fn report_dma(
        &mut self,
        key: u64,
        dest: &mut BitmapDest<'_>,
    ) -> Result<Option<Range<usize>>> {
        let shift = self.min_pgsize().trailing_zeros();
        let Some(dma) = self.dmas.get(key) else {
            return Ok(None);
        };
        let (nbits, bit_offset) = (dma.size >> shift, (dma.iova - dest.base) >> shift);
        let (span, words) = dest.words_for(nbits, bit_offset)?;
        self.harvest(key);
        let Some(dma) = self.dmas.get(key) else {
            return Ok(None);
        };
        let full = self.full_dirty(dma);
        dirty::report(words, dma.bitmap.as_ref(), nbits, bit_offset, full)?;
        Ok(Some(span))
    }

    /// Clears the mapping's bitmap whole and repopulates it from its pins (after GET_BITMAP).
    fn reset_bitmap(&mut self, key: u64) {
        if let Some(bm) = self.dmas.get_mut(key).and_then(|d| d.bitmap.as_mut()) {
            bm.clear();
        }
        self.populate_from_pins(key);
    }

    /// GET_BITMAP from the checks under the lock on (`vfio_iommu_type1_dirty_pages` then
    /// `vfio_iova_dirty_bitmap`, v6.18), after the wrapper's checks.
    pub(crate) fn dirty_get_bitmap(
        &mut self,
        iova: u64,
        size: u64,
        pgsize: u64,
        dest: &mut BitmapDest<'_>,
    ) -> Result<()> {
        let min = self.min_pgsize();
        if pgsize != min {
            return Err(Error::InvalidBitmap {
                reason: "pgsize is not the IOMMU minimum page size",
            });
        }
        for (what, value) in [("iova", iova), ("size", size)] {
            if value & (min - 1) != 0 {
                return Err(Error::Unaligned {
                    what,
                    value,
                    align: min,
                });
            }
        }
        if !self.dirty_tracking {
            return Err(Error::NotTracking);
        }
        let last = iova + (size - 1);
        self.check_bisection(iova, last)?;
        let keys = self.dmas.overlapping_keys(iova, last);
        for &key in &keys {
            let span = self.report_dma(key, dest)?;
            #[cfg(debug_assertions)]
            test_fault_drop_dirty(iova, size, min, dest.sink.words(0..0)?);
            // Delivered before the reset, as `update_user_bitmap` copies before the bitmap is
            // cleared: a sink that fails here loses nothing.
            if let Some(span) = span {
                dest.sink.commit(span)?;
            }
            self.reset_bitmap(key);
        }
        Ok(())
    }

    /// Removes the mapping at `key` and reports it into `dest` (the GET_DIRTY_BITMAP branch of
    /// `vfio_dma_do_unmap`). The page-table unmap runs first: in precise mode it records every
    /// dirty leaf in the mapping's bitmap as it clears it, so writes up to the unmap are kept;
    /// then the bitmap is reported once. Nothing changes if the sink cannot give its words or
    /// they are too few.
    pub(crate) fn report_and_remove(&mut self, key: u64, dest: &mut BitmapDest<'_>) -> Result<u64> {
        let shift = self.min_pgsize().trailing_zeros();
        let dma = self.dmas.get(key).ok_or(Error::NotMapped { iova: key })?;
        let (nbits, bit_offset) = (dma.size >> shift, (dma.iova - dest.base) >> shift);
        let (_, words) = dest.words_for(nbits, bit_offset)?;
        let mut dma = self
            .dmas
            .remove(key)
            .ok_or(Error::NotMapped { iova: key })?;
        // Before the unmap, which clears `iommu_mapped`.
        let full = self.full_dirty(&dma);
        self.unmap_unpin(&mut dma);
        let reported = dirty::report(words, dma.bitmap.as_ref(), nbits, bit_offset, full);
        let size = self.retire_dma(dma);
        reported.map(|()| size)
    }

    fn cfg_dirty_mode(&self) -> DirtyMode {
        self.dirty_mode()
    }
}

/// Test-only fault, compiled into debug builds only (`debug_assertions`): with
/// `TYPE1_TEST_FAULT_DROP_DIRTY_IOVA=<iova>` in the environment (hex `0x...` or decimal, read
/// once), GET_BITMAP never reports the page holding that IOVA dirty. The QEMU migration test
/// uses it to show that one lost dirty bit is caught and named; release builds have no such
/// path, so no production container can lose a bit this way.
#[cfg(debug_assertions)]
fn test_fault_drop_dirty(iova: u64, size: u64, pgsize: u64, words: &mut [u64]) {
    static DROP: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let drop = *DROP.get_or_init(|| {
        let v = std::env::var("TYPE1_TEST_FAULT_DROP_DIRTY_IOVA").ok()?;
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    });
    let Some(at) = drop.filter(|&a| a >= iova && a - iova < size) else {
        return;
    };
    let bit = (at - iova) / pgsize;
    if let Some(w) = words.get_mut(crate::to_usize(bit / 64)) {
        *w &= !(1u64 << (bit % 64));
    }
}
