//! Dirty bitmaps (`dma->bitmap` and `update_user_bitmap`, v6.18): the per-mapping bitmap and the
//! report of it into a request's bitmap.
//!
//! A bitmap has one bit per `pgsize` page (the IOMMU minimum page size), LSB-first in `u64`
//! words, exactly the layout of the user's `__u64 *data`. A mapping's bitmap is a
//! [`DirtyBitmap`], which refuses bits past its length. `report` is `update_user_bitmap` on
//! the request's words: it shifts the mapping's bits to their place relative to the request's
//! base IOVA, ORs the whole first word in when the shift is not zero (so mappings sharing a word
//! "club" together), and overwrites every later word. Unlike the kernel, the mapping's bitmap is
//! cleared whole after a report, so no shifted-out bit can leak into a later report.
//!
//! Where the request's words live is a `BitmapSink`: a caller's slice for the typed API, the
//! user's memory for the ioctl layer (read at the first report, written back once at the end).

use std::ops::Range;

use crate::error::{Error, Result};

/// How dirty pages of IOMMU-backed groups are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirtyMode {
    /// As the kernel: while an IOMMU-backed group has never pinned pages, every page of every
    /// IOMMU-mapped mapping is dirty in every report (`update_user_bitmap`).
    #[default]
    KernelExact,
    /// Beyond type1: pages IOMMU-backed devices wrote are read from the page table's hardware
    /// dirty bits (DBM), so only written pages are reported. Domains without dirty bits fall
    /// back to the kernel's rule.
    Precise,
}

/// Maximum pages a mapping may have to get a bitmap (`DIRTY_BITMAP_PAGES_MAX` = `INT_MAX`).
pub const DIRTY_BITMAP_PAGES_MAX: u64 = i32::MAX as u64;

/// `DIRTY_BITMAP_BYTES(n)`: `ALIGN(n, 64) / 8`.
#[must_use]
pub fn dirty_bitmap_bytes(npages: u64) -> u64 {
    npages.div_ceil(64) * 8
}

/// A bit range outside a [`DirtyBitmap`] (a bug in the caller: the bitmap is left unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bits {first}..{end} are outside a bitmap of {len} bits")]
pub struct OutOfRange {
    /// First bit asked for.
    pub first: u64,
    /// One past the last bit asked for (saturating).
    pub end: u64,
    /// The bitmap's length in bits.
    pub len: u64,
}

/// A bitmap of `len` pages: bit `i` is page `i`, LSB-first in `u64` words. Bits at or past
/// `len` never exist: setting one is refused ([`OutOfRange`]) and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    words: Box<[u64]>,
    len: u64,
}

impl DirtyBitmap {
    /// A clear bitmap of `len` bits (`vfio_dma_bitmap_alloc`).
    ///
    /// # Errors
    /// [`Error::NoMemory`] if the allocation fails.
    pub fn new(len: u64) -> Result<Self> {
        let words = usize::try_from(len.div_ceil(64)).map_err(|_| Error::NoMemory)?;
        let mut v = Vec::new();
        v.try_reserve_exact(words).map_err(|_| Error::NoMemory)?;
        v.resize(words, 0);
        Ok(DirtyBitmap {
            words: v.into_boxed_slice(),
            len,
        })
    }

    /// Length in bits.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a bitmap of no bits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets bits `[first, first + n)`.
    ///
    /// # Errors
    /// [`OutOfRange`] (nothing set) if the range reaches past [`DirtyBitmap::len`].
    pub fn set(&mut self, first: u64, n: u64) -> Result<(), OutOfRange> {
        let end = first.saturating_add(n);
        if end > self.len || first.checked_add(n).is_none() {
            return Err(OutOfRange {
                first,
                end,
                len: self.len,
            });
        }
        set_bits(&mut self.words, first, n);
        Ok(())
    }

    /// Sets the bits of the pages of `[at, at + len)` that fall in the bitmap, when bit 0 is the
    /// `1 << shift`-byte page at `base` (a range read from a page table, clipped to the mapping).
    pub fn set_span(&mut self, base: u64, shift: u32, at: u64, len: u64) {
        // Inclusive ends, so a mapping ending at `u64::MAX` is marked like any other.
        let span_last = self
            .len
            .checked_shl(shift)
            .filter(|&bytes| bytes >> shift == self.len)
            .and_then(|bytes| bytes.checked_sub(1))
            .and_then(|b| base.checked_add(b));
        let (Some(span_last), Some(len_m1)) = (span_last, len.checked_sub(1)) else {
            return;
        };
        let first = at.max(base);
        let last = at.saturating_add(len_m1).min(span_last);
        if first <= last {
            let (first, last) = ((first - base) >> shift, (last - base) >> shift);
            // In range by construction: [first, last] lies inside the bitmap's span.
            let r = self.set(first, last - first + 1);
            debug_assert!(r.is_ok(), "{r:?}");
        }
    }

    /// True if bit `i` is set (false past the end).
    #[must_use]
    pub fn test(&self, i: u64) -> bool {
        i < self.len && test_bit(&self.words, i)
    }

    /// True if any bit is set.
    #[must_use]
    pub fn any(&self) -> bool {
        self.words.iter().any(|&w| w != 0)
    }

    /// Clears every bit.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// The words, `len.div_ceil(64)` of them; bits past `len` are clear.
    #[must_use]
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

/// Sets bits `[start, start + n)` of `bm`; bits past its last word are ignored.
fn set_bits(bm: &mut [u64], start: u64, n: u64) {
    let mut i = start;
    let end = start.saturating_add(n);
    while i < end {
        let w = crate::to_usize(i / 64);
        let b = i % 64;
        let take = (64 - b).min(end - i);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << b
        };
        match bm.get_mut(w) {
            Some(word) => *word |= mask,
            None => return,
        }
        i += take;
    }
}

/// True if bit `i` of the words `bm` is set (false past the end).
#[must_use]
pub fn test_bit(bm: &[u64], i: u64) -> bool {
    bm.get(crate::to_usize(i / 64))
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Where a request's bitmap lives: its words (bit 0 = the request's base IOVA), handed out
/// report by report, in ascending order. The first call comes after every check of the request
/// passed and before any mapping is reset or removed, so a sink that cannot provide its words
/// fails the request with nothing changed.
pub(crate) trait BitmapSink {
    /// The request's words, at least as many as its pages need. The next report writes the
    /// words `span` (its first word ORed when its offset is not word-aligned, the others
    /// overwritten, as `update_user_bitmap` does); a sink may prepare them.
    ///
    /// # Errors
    /// The sink's failure (for user memory, [`Error::BadAddress`]).
    fn words(&mut self, span: Range<usize>) -> Result<&mut [u64]>;

    /// The report into the words `span` is complete; GET_BITMAP calls this before it resets the
    /// mapping's dirty state, so a sink that writes each report where it goes (the user's
    /// bitmap, as `update_user_bitmap`'s `copy_to_user` does) fails before anything is lost.
    ///
    /// # Errors
    /// The sink's failure (for user memory, [`Error::BadAddress`]).
    fn commit(&mut self, span: Range<usize>) -> Result<()> {
        let _ = span;
        Ok(())
    }
}

/// The words a report of `nbits` bits at `bit_offset` writes, or `None` past `usize`.
pub(crate) fn report_span(nbits: u64, bit_offset: u64) -> Option<Range<usize>> {
    let first = usize::try_from(bit_offset / 64).ok()?;
    let words = (bit_offset % 64).checked_add(nbits)?.div_ceil(64);
    let end = first.checked_add(usize::try_from(words).ok()?)?;
    Some(first..end)
}

/// `update_user_bitmap`: places a mapping's `nbits` dirty bits (all ones if `full`) at
/// `bit_offset` bits into `out`: the first word is ORed when the offset is not word-aligned, the
/// later ones overwritten.
///
/// # Errors
/// [`Error::InvalidBitmap`] (nothing written) if `out` is too short for the mapping's words.
pub(crate) fn report(
    out: &mut [u64],
    bits: Option<&DirtyBitmap>,
    nbits: u64,
    bit_offset: u64,
    full: bool,
) -> Result<()> {
    let Some(out) = report_span(nbits, bit_offset).and_then(|span| out.get_mut(span)) else {
        return Err(Error::InvalidBitmap {
            reason: "bitmap too small for the range",
        });
    };
    let shift = bit_offset % 64;
    let Some(&first) = out.first() else {
        // No bits: nothing to write.
        return Ok(());
    };
    let leftover = if shift == 0 { 0 } else { first };
    match bits {
        Some(bits) if !full && shift == 0 => {
            // Aligned: the mapping's words as they are.
            let src = bits.words();
            let n = src.len().min(out.len());
            out[..n].copy_from_slice(&src[..n]);
            out[n..].fill(0);
        }
        Some(bits) if !full => {
            out.fill(0);
            let words = out.len();
            for (i, &w) in bits.words().iter().enumerate().take(words) {
                out[i] |= w << shift;
                if i + 1 < words {
                    out[i + 1] |= w >> (64 - shift);
                }
            }
        }
        _ => {
            out.fill(0);
            if full {
                set_bits(out, shift, nbits);
            }
        }
    }
    // Bits past nbits never exist in `bits`; mask anyway.
    let last_bit = nbits + shift;
    if last_bit % 64 != 0 {
        if let Some(l) = out.last_mut() {
            *l &= (1u64 << (last_bit % 64)) - 1;
        }
    }
    if let Some(w) = out.first_mut() {
        *w |= leftover;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bits_spans_words() {
        let mut bm = DirtyBitmap::new(192).unwrap();
        bm.set(60, 70).unwrap();
        assert_eq!(bm.words(), &[0xf000_0000_0000_0000, u64::MAX, 0x3]);
        assert!(bm.test(60) && bm.test(129) && !bm.test(130));
    }

    #[test]
    fn a_bit_past_the_end_is_refused_and_nothing_is_set() {
        // 70 bits: word 1 has room for 64 more, but bits 70.. do not exist.
        let mut bm = DirtyBitmap::new(70).unwrap();
        assert_eq!(
            bm.set(68, 3),
            Err(OutOfRange {
                first: 68,
                end: 71,
                len: 70
            })
        );
        assert!(bm.set(u64::MAX, 2).is_err(), "wrapping range");
        assert!(!bm.any());
        bm.set(69, 1).unwrap();
        assert!(bm.test(69) && !bm.test(70));
    }

    #[test]
    fn set_span_clips_to_the_bitmap() {
        // 4 pages of 4 KiB at 0x10000; a span from below to past the end sets all four.
        let mut bm = DirtyBitmap::new(4).unwrap();
        bm.set_span(0x10000, 12, 0x8000, 0x20000);
        assert_eq!(bm.words(), &[0b1111]);
        let mut bm = DirtyBitmap::new(4).unwrap();
        bm.set_span(0x10000, 12, 0x11800, 1);
        assert_eq!(bm.words(), &[0b10]);
    }

    #[test]
    fn shifted_reports_club_into_the_first_word() {
        let mut out = vec![0u64; 4];
        // Mapping 1: 3 pages at bit 0, pages 0 and 2 dirty.
        let mut m1 = DirtyBitmap::new(3).unwrap();
        m1.set(0, 1).unwrap();
        m1.set(2, 1).unwrap();
        report(&mut out, Some(&m1), 3, 0, false).unwrap();
        // Mapping 2: 70 pages at bit 10, first and last dirty.
        let mut m2 = DirtyBitmap::new(70).unwrap();
        m2.set(0, 1).unwrap();
        m2.set(69, 1).unwrap();
        report(&mut out, Some(&m2), 70, 10, false).unwrap();
        assert_eq!(out, vec![0b101 | 1 << 10, 1 << 15, 0, 0]);
        // Full report of 4 pages at bit 130.
        report(&mut out, None, 4, 130, true).unwrap();
        assert_eq!(out[2], 0b1111 << 2);
    }

    #[test]
    fn a_report_of_no_bits_writes_nothing() {
        let mut out = vec![7u64; 1];
        report(&mut out, None, 0, 64, true).unwrap();
        assert_eq!(out, vec![7]);
    }

    #[test]
    fn a_report_past_the_words_is_refused() {
        let mut out = vec![0u64; 1];
        let bm = DirtyBitmap::new(128).unwrap();
        assert!(matches!(
            report(&mut out, Some(&bm), 128, 0, false),
            Err(Error::InvalidBitmap { .. })
        ));
    }
}
