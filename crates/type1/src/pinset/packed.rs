//! The packed form of [`PinSet`](super::PinSet): chunks of [`CHUNK_PAGES`] consecutive IOVA
//! pages, each page's owner, pin count and pinning address space in one `u32` word.

use crate::api::PAGE_SIZE;
use crate::device::DeviceId;

/// IOVA pages per chunk (one bit each in the chunk's presence word).
pub(crate) const CHUNK_PAGES: u64 = 64;
/// Pins of one page by its one device that the packed word can count.
pub(crate) const MAX_PACKED_REFS: u32 = (1 << REFS_BITS) - 1;
/// Address spaces a set can name in packed words (more only after repeated vaddr updates to new
/// owners while pins are held; those pages spill).
pub(crate) const MAX_SPACES: usize = 1 << SPACE_BITS;

/// [`CHUNK_PAGES`] as an array length.
pub(super) const SLOTS: usize = 64;
const _: () = assert!(SLOTS as u64 == CHUNK_PAGES);
pub(super) const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();
pub(super) const CHUNK_SHIFT: u32 = PAGE_SHIFT + CHUNK_PAGES.trailing_zeros();
pub(super) const OWNER_BITS: u32 = 16;
pub(super) const REFS_BITS: u32 = 12;
pub(super) const SPACE_BITS: u32 = 4;
const _: () = assert!(OWNER_BITS + REFS_BITS + SPACE_BITS == 32);

/// 64 consecutive IOVA pages.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Bit `i`: page `i` is pinned and held here.
    pub(super) present: u64,
    pub(super) pa: [u64; SLOTS],
    /// `owner | refs << 16 | space << 28`.
    pub(super) meta: [u32; SLOTS],
}

pub(super) fn split(iova: u64) -> (u64, usize) {
    // The remainder is below CHUNK_PAGES, so the cast is lossless.
    #[allow(clippy::cast_possible_truncation)]
    let slot = ((iova >> PAGE_SHIFT) % CHUNK_PAGES) as usize;
    (iova >> CHUNK_SHIFT, slot)
}

pub(super) fn pack(owner: u16, refs: u32, space: usize) -> u32 {
    debug_assert!(refs <= MAX_PACKED_REFS && space < MAX_SPACES);
    #[allow(clippy::cast_possible_truncation)]
    let space = space as u32;
    u32::from(owner) | refs << OWNER_BITS | space << (OWNER_BITS + REFS_BITS)
}

pub(super) fn owner_of(meta: u32) -> DeviceId {
    DeviceId(meta & 0xffff)
}

pub(super) fn refs_of(meta: u32) -> u32 {
    (meta >> OWNER_BITS) & MAX_PACKED_REFS
}

pub(super) fn space_of(meta: u32) -> usize {
    crate::to_usize(u64::from(meta >> (OWNER_BITS + REFS_BITS)))
}

pub(super) fn page_iova(chunk: u64, slot: usize) -> u64 {
    (chunk << CHUNK_SHIFT) | ((slot as u64) << PAGE_SHIFT)
}

/// Indices of the set bits of `word`, ascending.
pub(super) fn bits(mut word: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if word == 0 {
            return None;
        }
        let i = word.trailing_zeros();
        word &= word - 1;
        Some(crate::to_usize(u64::from(i)))
    })
}
