//! Device DMA logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT`, v6.18
//! `vfio_ioctl_device_feature_logging_*` in `drivers/vfio/vfio_main.c`, the driver side as
//! mlx5's page tracker): the device records the pages it DMA-writes inside the ranges the VMM
//! asked for, and reports them as a bitmap.
//!
//! The log is fed from the one place device writes go, [`Dma::write`](super::Dma::write), after the write
//! landed: what is logged is exactly what the device wrote (a write a racing unmap cut short is
//! not logged; its IOVAs were unmapped). Tracking granularity is the page size chosen at START:
//! the requested size when it is a power of two of at least 4 KiB, else 4 KiB for smaller
//! sizes and the power of two below it otherwise; it is written back to `page_size`.
//!
//! A report sets bit *i* (of little-endian u64 words) for the report page
//! `[iova + i·page_size, +page_size)` if the device wrote any byte of it since START or since
//! the report that last covered it; bits are only set (the caller zeroes the buffer), and the
//! tracked pages wholly inside the reported range are cleared (a tracked page larger than the
//! report range keeps its mark for its other part).

use std::collections::BTreeSet;

/// `LOG_MAX_RANGES`: `PAGE_SIZE / sizeof(struct vfio_device_feature_dma_logging_range)`.
pub const MAX_RANGES: u32 = 4096 / 16;

/// The smallest tracking page size.
pub const MIN_PAGE: u64 = 4096;

/// The page size the device tracks at for a requested `page_size`.
#[must_use]
pub fn chosen_page_size(page_size: u64) -> u64 {
    if page_size <= MIN_PAGE {
        MIN_PAGE
    } else if page_size.is_power_of_two() {
        page_size
    } else {
        1u64 << (63 - page_size.leading_zeros())
    }
}

/// An active log.
#[derive(Debug, Clone)]
pub struct DirtyLog {
    page_size: u64,
    /// `[start, end)` in IOVA, sorted, disjoint.
    ranges: Vec<(u64, u64)>,
    /// Tracked page numbers (`iova / page_size`) written since their last report.
    dirty: BTreeSet<u64>,
}

impl DirtyLog {
    /// A log of `ranges` (`(iova, length)`, already checked) at `page_size` (from
    /// [`chosen_page_size`]).
    #[must_use]
    pub fn new(page_size: u64, ranges: &[(u64, u64)]) -> Self {
        let mut r: Vec<(u64, u64)> = ranges
            .iter()
            .map(|&(s, l)| (s, s.saturating_add(l)))
            .collect();
        r.sort_unstable();
        DirtyLog {
            page_size,
            ranges: r,
            dirty: BTreeSet::new(),
        }
    }

    /// The tracking page size.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Records a device write of `len` bytes at `iova`.
    pub fn mark(&mut self, iova: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = iova.saturating_add(len);
        for &(s, e) in &self.ranges {
            let (a, b) = (iova.max(s), end.min(e));
            if a >= b {
                continue;
            }
            for p in a / self.page_size..=(b - 1) / self.page_size {
                self.dirty.insert(p);
            }
        }
    }

    /// Reads and clears the log for `[iova, iova + length)` at `page_size` (a power of two ≥
    /// 4 KiB): returns `(word index, bits)` pairs to OR into the caller's bitmap, in order.
    pub fn report(&mut self, iova: u64, length: u64, page_size: u64) -> Vec<(u64, u64)> {
        let mut words: Vec<(u64, u64)> = Vec::new();
        if length == 0 {
            return words;
        }
        let end = iova.saturating_add(length);
        let ps = self.page_size;
        let hits: Vec<u64> = self
            .dirty
            .range(iova / ps..=(end - 1) / ps)
            .copied()
            .collect();
        for tp in hits {
            let ts = tp * ps;
            let te = ts.saturating_add(ps);
            let (a, b) = (ts.max(iova), te.min(end));
            if a >= b {
                continue;
            }
            for bit in (a - iova) / page_size..=(b - 1 - iova) / page_size {
                let (w, m) = (bit / 64, 1u64 << (bit % 64));
                match words.last_mut() {
                    Some((lw, lm)) if *lw == w => *lm |= m,
                    _ => match words.binary_search_by_key(&w, |&(k, _)| k) {
                        Ok(i) => words[i].1 |= m,
                        Err(i) => words.insert(i, (w, m)),
                    },
                }
            }
            if ts >= iova && te <= end {
                self.dirty.remove(&tp);
            }
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_choice_rounds_to_a_supported_power_of_two() {
        assert_eq!(chosen_page_size(0), 4096);
        assert_eq!(chosen_page_size(512), 4096);
        assert_eq!(chosen_page_size(4096), 4096);
        assert_eq!(chosen_page_size(2 << 20), 2 << 20);
        assert_eq!(chosen_page_size(12288), 8192);
    }

    #[test]
    fn writes_outside_the_ranges_are_not_logged() {
        let mut l = DirtyLog::new(4096, &[(0x10000, 0x10000)]);
        l.mark(0, 0x1000);
        l.mark(0x20000, 0x1000);
        assert!(l.report(0, 1 << 20, 4096).is_empty());
    }

    #[test]
    fn a_report_sets_the_written_pages_and_clears_them() {
        let mut l = DirtyLog::new(4096, &[(0, 1 << 30)]);
        l.mark(0x3000, 1);
        l.mark(0x41fff, 2); // straddles pages 0x41 and 0x42
        assert_eq!(
            l.report(0, 1 << 20, 4096),
            vec![(0, 1 << 3), (1, 0b11 << 1)]
        );
        assert!(l.report(0, 1 << 20, 4096).is_empty());
        // 2 MiB report pages: one bit for any write inside.
        l.mark(0x20_0000 + 5, 1);
        assert_eq!(l.report(0, 1 << 30, 2 << 20), vec![(0, 1 << 1)]);
    }
}
