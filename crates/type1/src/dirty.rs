//! Dirty bitmaps (`dma->bitmap` and `update_user_bitmap`, v6.18): the per-mapping bitmap and the
//! copy to the user's bitmap.
//!
//! A mapping's bitmap has one bit per `pgsize` page (the IOMMU minimum page size), LSB-first in
//! `u64` words, exactly the layout of the user's `__u64 *data`. `report` is
//! `update_user_bitmap`: it shifts the mapping's bits to their place relative to the request's
//! base IOVA, ORs the whole first user word in when the shift is not zero (so mappings sharing a
//! word "club" together), and overwrites every later word. Unlike the kernel, the mapping's
//! buffer is cleared whole after a report, so no shifted-out bit can leak into a later report.

use crate::error::{Error, Result};
use crate::uaccess::UserMemory;

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

/// Allocates a zeroed bitmap of `nbits` bits.
///
/// # Errors
/// [`Error::NoMemory`] if the allocation fails.
pub(crate) fn alloc_bitmap(nbits: u64) -> Result<Vec<u64>> {
    let words = crate::to_usize(nbits.div_ceil(64));
    let mut v = Vec::new();
    v.try_reserve_exact(words).map_err(|_| Error::NoMemory)?;
    v.resize(words, 0);
    Ok(v)
}

/// Sets bits `[start, start + n)`.
pub(crate) fn set_bits(bm: &mut [u64], start: u64, n: u64) {
    let mut i = start;
    let end = start + n;
    while i < end {
        let w = crate::to_usize(i / 64);
        let b = i % 64;
        let take = (64 - b).min(end - i);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << b
        };
        if let Some(word) = bm.get_mut(w) {
            *word |= mask;
        }
        i += take;
    }
}

/// True if bit `i` is set.
#[must_use]
pub fn test_bit(bm: &[u64], i: u64) -> bool {
    bm.get(crate::to_usize(i / 64))
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn write_words(user: &mut dyn UserMemory, addr: u64, words: &[u64]) -> Result<()> {
    let mut buf = [0u8; 4096];
    let mut at = addr;
    for chunk in words.chunks(buf.len() / 8) {
        let bytes = &mut buf[..chunk.len() * 8];
        for (dst, w) in bytes.chunks_exact_mut(8).zip(chunk) {
            dst.copy_from_slice(&w.to_ne_bytes());
        }
        user.write(at, bytes)
            .map_err(|a| Error::BadAddress { addr: a })?;
        at += bytes.len() as u64;
    }
    Ok(())
}

/// `update_user_bitmap`: copies a mapping's `nbits` dirty bits (all ones if `full`) to the
/// user bitmap at `data`, placed at `bit_offset` bits from the start.
///
/// # Errors
/// [`Error::BadAddress`] if the user bitmap cannot be read or written.
pub(crate) fn report(
    user: &mut dyn UserMemory,
    data: u64,
    bits: &[u64],
    nbits: u64,
    bit_offset: u64,
    full: bool,
) -> Result<()> {
    let copy_offset = bit_offset / 64;
    let shift = bit_offset % 64;
    let words = crate::to_usize((nbits + shift).div_ceil(64));
    let addr = data + copy_offset * 8;
    if shift == 0 && !full && bits.len() >= words {
        return write_words(user, addr, &bits[..words]);
    }
    let mut out = vec![0u64; words];
    if full {
        set_bits(&mut out, shift, nbits);
    } else {
        for (i, &w) in bits.iter().enumerate().take(words) {
            out[i] |= w << shift;
            if shift != 0 && i + 1 < words {
                out[i + 1] |= w >> (64 - shift);
            }
        }
        // Bits past nbits never exist in `bits` (cleared whole); mask anyway.
        let last_bit = nbits + shift;
        if last_bit % 64 != 0 {
            if let Some(l) = out.last_mut() {
                *l &= (1u64 << (last_bit % 64)) - 1;
            }
        }
    }
    if shift != 0 {
        let mut w = [0u8; 8];
        user.read(addr, &mut w)
            .map_err(|a| Error::BadAddress { addr: a })?;
        out[0] |= u64::from_ne_bytes(w);
    }
    write_words(user, addr, &out)
}

/// Like [`report`] but ORs every covered word into the user bitmap (for bits found after a
/// mapping was already reported).
///
/// # Errors
/// [`Error::BadAddress`] if the user bitmap cannot be read or written.
pub(crate) fn report_or(
    user: &mut dyn UserMemory,
    data: u64,
    bits: &[u64],
    nbits: u64,
    bit_offset: u64,
) -> Result<()> {
    let copy_offset = bit_offset / 64;
    let shift = bit_offset % 64;
    let words = crate::to_usize((nbits + shift).div_ceil(64));
    let addr = data + copy_offset * 8;
    let mut out = vec![0u64; words];
    for (i, &w) in bits.iter().enumerate().take(words) {
        out[i] |= w << shift;
        if shift != 0 && i + 1 < words {
            out[i + 1] |= w >> (64 - shift);
        }
    }
    let mut cur = vec![0u8; words * 8];
    user.read(addr, &mut cur)
        .map_err(|a| Error::BadAddress { addr: a })?;
    for (o, c) in out.iter_mut().zip(cur.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        *o |= u64::from_ne_bytes(w);
    }
    write_words(user, addr, &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uaccess::UserBuffer;

    fn words(u: &UserBuffer) -> Vec<u64> {
        u.bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn set_bits_spans_words() {
        let mut bm = vec![0u64; 3];
        set_bits(&mut bm, 60, 70);
        assert_eq!(bm, vec![0xf000_0000_0000_0000, u64::MAX, 0x3]);
        assert!(test_bit(&bm, 60) && test_bit(&bm, 129) && !test_bit(&bm, 130));
    }

    #[test]
    fn shifted_reports_club_into_the_first_word() {
        let mut u = UserBuffer::new(0x1000, 32);
        // Mapping 1: 3 pages at bit 0, pages 0 and 2 dirty.
        report(&mut u, 0x1000, &[0b101], 3, 0, false).unwrap();
        // Mapping 2: 70 pages at bit 10, first and last dirty.
        let mut bm = vec![0u64; 2];
        set_bits(&mut bm, 0, 1);
        set_bits(&mut bm, 69, 1);
        report(&mut u, 0x1000, &bm, 70, 10, false).unwrap();
        assert_eq!(words(&u), vec![0b101 | 1 << 10, 1 << 15, 0, 0]);
        // Full report of 4 pages at bit 130.
        report(&mut u, 0x1000, &[], 4, 130, true).unwrap();
        assert_eq!(words(&u)[2], 0b1111 << 2);
    }

    #[test]
    fn faults_are_reported() {
        let mut u = UserBuffer::new(0x1000, 8);
        assert!(matches!(
            report(&mut u, 0x1000, &[1, 1], 128, 0, false),
            Err(Error::BadAddress { .. })
        ));
    }
}
