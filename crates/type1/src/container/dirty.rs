//! The container's dirty-tracking API (`VFIO_IOMMU_DIRTY_PAGES` and UNMAP_DMA with
//! GET_DIRTY_BITMAP: `vfio_iommu_type1_dirty_pages`, `vfio_iova_dirty_bitmap`,
//! `vfio_dma_do_unmap`, v6.18) over caller-owned words; the ioctl layer serves the same
//! operations over user memory.

use std::ops::Range;

use super::Container;
use crate::addr::Iova;
use crate::api::{UnmapDma, UnmapFlags};
use crate::dirty::BitmapSink;
use crate::error::{Error, Result};
use crate::type1::BitmapDest;

impl Container {
    /// `VFIO_IOMMU_DIRTY_PAGES` START.
    ///
    /// # Errors
    /// `EACCES` on v1; `EINVAL` for a mapping too large for a bitmap; `ENOMEM`.
    pub fn dirty_start(&self) -> Result<()> {
        self.with_iommu(|t, _| t.dirty_start())
    }

    /// `VFIO_IOMMU_DIRTY_PAGES` STOP.
    ///
    /// # Errors
    /// `EACCES` on v1.
    pub fn dirty_stop(&self) -> Result<()> {
        self.with_iommu(|t, _| t.dirty_stop())
    }

    /// True while dirty tracking is on.
    #[must_use]
    pub fn dirty_tracking(&self) -> bool {
        self.lock().iommu.as_ref().is_some_and(|t| t.dirty_tracking)
    }

    /// GET_BITMAP into a fresh bitmap (bit 0 = `iova`, one bit per `pgsize`).
    ///
    /// # Errors
    /// The errors of GET_BITMAP in `vfio_iommu_type1_dirty_pages` and `vfio_iova_dirty_bitmap`.
    pub fn dirty_bitmap(&self, iova: Iova, size: u64, pgsize: u64) -> Result<Vec<u64>> {
        Self::check_range(iova, size)?;
        let mut words = vec![0u64; Self::bitmap_words(size, pgsize)?];
        let mut sink = CallerWords::new(&mut words);
        self.dirty_bitmap_sink(iova, size, pgsize, &mut sink)?;
        sink.finish();
        Ok(words)
    }

    /// GET_BITMAP into the caller's words: bit `i` of `out` (LSB-first in each word) is the page
    /// at `iova + i * pgsize`. The words the range needs (`size / pgsize` bits, rounded up to a
    /// word) are overwritten; words past them are untouched.
    ///
    /// # Errors
    /// The errors of GET_BITMAP in `vfio_iommu_type1_dirty_pages` and `vfio_iova_dirty_bitmap`;
    /// `EINVAL` ([`Error::InvalidBitmap`]) if `out` is shorter than the range needs. Nothing is
    /// written on error.
    pub fn dirty_bitmap_into(
        &self,
        iova: Iova,
        size: u64,
        pgsize: u64,
        out: &mut [u64],
    ) -> Result<()> {
        Self::check_range(iova, size)?;
        let n = Self::bitmap_words(size, pgsize)?;
        let Some(words) = out.get_mut(..n) else {
            return Err(Error::InvalidBitmap {
                reason: "bitmap too small for the range",
            });
        };
        let mut sink = CallerWords::new(words);
        self.dirty_bitmap_sink(iova, size, pgsize, &mut sink)?;
        sink.finish();
        Ok(())
    }

    /// The wrapper's range checks of GET_BITMAP (`vfio_iommu_type1_dirty_pages`).
    fn check_range(iova: Iova, size: u64) -> Result<()> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        iova.checked_add(size - 1).ok_or(Error::Overflow {
            start: iova.raw(),
            size,
        })?;
        Ok(())
    }

    /// GET_BITMAP into `sink` (after the ioctl wrapper's checks).
    pub(crate) fn dirty_bitmap_sink(
        &self,
        iova: Iova,
        size: u64,
        pgsize: u64,
        sink: &mut dyn BitmapSink,
    ) -> Result<()> {
        let iova = iova.raw();
        self.with_iommu(|t, _| {
            let mut dest = BitmapDest { sink, base: iova };
            t.dirty_get_bitmap(iova, size, pgsize, &mut dest)
        })
    }

    /// UNMAP_DMA with GET_DIRTY_BITMAP into a fresh bitmap (bit 0 = `iova`, one bit per
    /// `pgsize`). Returns the bytes unmapped and the bitmap.
    ///
    /// # Errors
    /// As [`Container::unmap_dma`], plus the bitmap rules of `vfio_iommu_type1_unmap_dma`
    /// (`verify_bitmap_size`) and `vfio_dma_do_unmap`.
    pub fn unmap_dma_dirty(&self, iova: Iova, size: u64, pgsize: u64) -> Result<(u64, Vec<u64>)> {
        let mut words = vec![0u64; Self::bitmap_words(size, pgsize)?];
        let req = UnmapDma {
            iova,
            size,
            flags: UnmapFlags::GET_DIRTY_BITMAP,
            bitmap_pgsize: pgsize,
        };
        let mut sink = CallerWords::new(&mut words);
        let n = self.unmap_loop(&req, Some(&mut sink))?;
        sink.finish();
        Ok((n, words))
    }

    /// The words of a bitmap for `size` bytes at `pgsize` granularity (`verify_bitmap_size`).
    fn bitmap_words(size: u64, pgsize: u64) -> Result<usize> {
        let npages = size.checked_shr(pgsize.trailing_zeros()).unwrap_or(0);
        let bytes = crate::dirty::dirty_bitmap_bytes(npages);
        if npages == 0 || bytes > crate::api::DIRTY_BITMAP_SIZE_MAX {
            return Err(Error::InvalidBitmap {
                reason: "bitmap size does not fit the range",
            });
        }
        Ok(crate::to_usize(bytes / 8))
    }
}

/// A caller's words, filled report by report: the words between reports (and the first word of
/// a report that does not share it with the previous one) are cleared as the reports reach them,
/// the rest by [`CallerWords::finish`], so each word is written once and an error before the
/// first report leaves them as they were.
struct CallerWords<'a> {
    words: &'a mut [u64],
    /// Words `[0, defined)` hold their final value so far.
    defined: usize,
}

impl<'a> CallerWords<'a> {
    fn new(words: &'a mut [u64]) -> Self {
        CallerWords { words, defined: 0 }
    }

    /// Clears the words no report reached.
    fn finish(self) {
        if let Some(rest) = self.words.get_mut(self.defined..) {
            rest.fill(0);
        }
    }
}

impl BitmapSink for CallerWords<'_> {
    fn words(&mut self, span: Range<usize>) -> Result<&mut [u64]> {
        if span.start >= self.defined && span.start < span.end {
            // A gap before the report, and its first word (ORed, not overwritten) start clear.
            let clear = self.defined..(span.start + 1).min(self.words.len());
            if let Some(gap) = self.words.get_mut(clear) {
                gap.fill(0);
            }
        }
        self.defined = self.defined.max(span.end.min(self.words.len()));
        Ok(&mut *self.words)
    }
}
