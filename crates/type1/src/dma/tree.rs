//! The mapping tree (`iommu->dma_list`, an rb-tree of `struct vfio_dma` in v6.18) and the counts
//! the kernel keeps beside it (`iommu->dma_avail`, `iommu->vaddr_invalid_count`).
//!
//! Layout, chosen for cache behaviour (docs/PERFORMANCE.md, "The mapping tree"):
//! - the mappings themselves live in a slab (`Vec<Option<Dma>>` and a LIFO free list), so a
//!   mapping never moves once inserted and a slot freed by an UNMAP is the next MAP's, still in
//!   cache;
//! - the order lives in a two-level index of small keys: sorted blocks of at most `B` (64)
//!   entries (first IOVA, inclusive last IOVA, slot: 20 bytes an entry), and above them the
//!   sorted first IOVA of every block (8 bytes a block, about 16 KiB at 65 535 mappings), and
//!   above those every `T`-th (16th) minimum. A search is a binary search over that top level
//!   (about 1 KiB at 65 535 mappings, hot in the first-level cache), a count over one run of
//!   `T` minima (two lines, read together) and one in-order scan of one block's ranges (first
//!   and last IOVA side by side, at most 1 KiB); it never touches a mapping it does not return.
//!
//! A full block splits in two halves; a removal that leaves a block under a quarter full merges
//! it with a neighbour when the two hold at most `B / 2` entries together, so a MAP+UNMAP pair at
//! one place never splits and merges the same block back and forth, and most removals read no
//! other block. With `n` mappings an insertion or removal moves at most `B` entries, plus
//! `n / B` block minima and `n / (B * T)` top-level entries when a block splits or merges. A block left under a quarter full has
//! neighbours over a quarter full (else they would have merged), so blocks hold more than `B / 8`
//! entries on average.
//!
//! MAP needs one search: [`DmaTree::vacancy`] decides the overlap (`EEXIST`) and the free-slot
//! check (`ENOSPC`) and returns the insertion position, which [`DmaTree::insert`] uses without
//! searching again (unless the tree changed in between). A search remembers where it ended (the
//! finger), so removing the mapping an UNMAP has just found does not search again either.
//!
//! Ranges are inclusive (`last = iova + size - 1`), as in the rest of this module.

use std::cell::Cell;

use super::Dma;
use crate::error::{Error, Result};

/// Entries per block at most.
const B: usize = 64;

/// Block minima per entry of the top level (`DmaTree::top`).
const T: usize = 16;

/// Values of `v` that are `<= x`, for a short `v` (one or two cache lines): independent
/// comparisons, no dependent branch.
fn count_le(v: &[u64], x: u64) -> usize {
    v.iter().map(|&m| usize::from(m <= x)).sum()
}

/// An entry's range: first and inclusive last IOVA.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    first: u64,
    last: u64,
}

/// One block of the index: entries sorted by first IOVA, `len` of them valid. The length sits
/// in the first cache line of the spans, and an entry's last IOVA beside its first, so a search
/// reads one run of consecutive lines (which the hardware fetches in parallel) and decides
/// the overlap from what it read; only a search that returns a mapping reads its slot.
#[derive(Debug)]
#[repr(C)]
struct Block {
    len: usize,
    span: [Span; B],
    slot: [u32; B],
}

impl Block {
    fn new() -> Box<Self> {
        Box::new(Block {
            len: 0,
            span: [Span::default(); B],
            slot: [0; B],
        })
    }

    /// Entries whose first IOVA is `<= x` (a count over the whole valid prefix: sequential
    /// reads the compiler vectorises, no dependent branch per probe).
    fn count_le(&self, x: u64) -> usize {
        // Four independent counts: no dependency chain from one comparison to the next.
        let spans = &self.span[..self.len];
        let mut c = [0usize; 4];
        let mut quads = spans.chunks_exact(4);
        for q in &mut quads {
            c[0] += usize::from(q[0].first <= x);
            c[1] += usize::from(q[1].first <= x);
            c[2] += usize::from(q[2].first <= x);
            c[3] += usize::from(q[3].first <= x);
        }
        let rest: usize = quads
            .remainder()
            .iter()
            .map(|s| usize::from(s.first <= x))
            .sum();
        c[0] + c[1] + c[2] + c[3] + rest
    }

    fn insert(&mut self, i: usize, first: u64, last: u64, slot: u32) {
        let n = self.len;
        self.span.copy_within(i..n, i + 1);
        self.slot.copy_within(i..n, i + 1);
        self.span[i] = Span { first, last };
        self.slot[i] = slot;
        self.len = n + 1;
    }

    fn remove(&mut self, i: usize) {
        let n = self.len;
        self.span.copy_within(i + 1..n, i);
        self.slot.copy_within(i + 1..n, i);
        self.len = n - 1;
    }

    /// Moves entries `from..` of `self` to the end of `dst`.
    fn move_tail(&mut self, from: usize, dst: &mut Block) {
        let (n, d) = (self.len, dst.len);
        let k = n - from;
        dst.span[d..d + k].copy_from_slice(&self.span[from..n]);
        dst.slot[d..d + k].copy_from_slice(&self.slot[from..n]);
        dst.len = d + k;
        self.len = from;
    }
}

/// An entry's place in the index: block, index in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    block: usize,
    idx: usize,
}

/// Where [`DmaTree::vacancy`] found room for a new mapping; valid until the tree changes (a
/// stale one is searched again by [`DmaTree::insert`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vacancy {
    pos: Pos,
    iova: u64,
    last: u64,
    generation: u64,
}

/// The mapping tree, with the slot count (`dma_avail`) and the invalid-vaddr count it owns.
#[derive(Debug)]
pub(crate) struct DmaTree {
    /// `mins[b] == blocks[b].span[0].first`; every block holds at least one entry.
    mins: Vec<u64>,
    /// `top[t] == mins[t * T]`: a search reads this array (1 KiB at 65 535 mappings, which
    /// every search reads and so stays in the first-level cache) and then one run of `T`
    /// minima (two lines, fetched together), not a binary search's chain of dependent loads
    /// over all the minima.
    top: Vec<u64>,
    /// Boxed: a split or merge shifts the list by pointers, not by blocks of 1.3 KiB.
    #[allow(clippy::vec_box)]
    blocks: Vec<Box<Block>>,
    /// A block kept after the last one went, so an empty tree allocates nothing on its next MAP.
    spare: Option<Box<Block>>,
    slab: Vec<Option<Dma>>,
    free: Vec<u32>,
    len: usize,
    limit: u32,
    avail: u32,
    vaddr_invalid: u32,
    /// Bumped by every insertion and removal (a [`Vacancy`] from before is stale).
    generation: u64,
    /// Where the last search ended, checked before use.
    finger: Cell<Pos>,
}

impl DmaTree {
    /// An empty tree with `limit` mapping slots (`dma_entry_limit`).
    pub(crate) fn new(limit: u32) -> Self {
        DmaTree {
            mins: Vec::new(),
            top: Vec::new(),
            blocks: Vec::new(),
            spare: None,
            slab: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit,
            avail: limit,
            vaddr_invalid: 0,
            generation: 0,
            finger: Cell::new(Pos { block: 0, idx: 0 }),
        }
    }

    /// Number of mappings.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Free mapping slots (`iommu->dma_avail`).
    #[must_use]
    pub(crate) fn avail(&self) -> u32 {
        self.avail
    }

    /// Mappings whose vaddr is invalid (`iommu->vaddr_invalid_count`).
    #[must_use]
    pub(crate) fn vaddr_invalid_count(&self) -> u32 {
        self.vaddr_invalid
    }

    // ----- the index -----

    /// The entry with the largest first IOVA `<= x`.
    fn floor(&self, x: u64) -> Option<Pos> {
        let t = self.top.partition_point(|&m| m <= x).checked_sub(1)?;
        let run = self.mins.get(t * T..self.mins.len().min(t * T + T))?;
        // `run[0] == top[t] <= x`, so the count is at least one.
        let b = t * T + count_le(run, x).checked_sub(1)?;
        let idx = self.blocks[b].count_le(x).checked_sub(1)?;
        let p = Pos { block: b, idx };
        self.finger.set(p);
        Some(p)
    }

    /// The entry after `p`.
    fn next(&self, p: Pos) -> Option<Pos> {
        if p.idx + 1 < self.blocks[p.block].len {
            Some(Pos {
                block: p.block,
                idx: p.idx + 1,
            })
        } else if p.block + 1 < self.blocks.len() {
            Some(Pos {
                block: p.block + 1,
                idx: 0,
            })
        } else {
            None
        }
    }

    /// The first entry, if any.
    fn first_pos(&self) -> Option<Pos> {
        (!self.blocks.is_empty()).then_some(Pos { block: 0, idx: 0 })
    }

    fn first_at(&self, p: Pos) -> u64 {
        self.blocks[p.block].span[p.idx].first
    }

    fn last_at(&self, p: Pos) -> u64 {
        self.blocks[p.block].span[p.idx].last
    }

    fn slot_at(&self, p: Pos) -> usize {
        self.blocks[p.block].slot[p.idx] as usize
    }

    fn dma_at(&self, p: Pos) -> Option<&Dma> {
        self.slab.get(self.slot_at(p)).and_then(Option::as_ref)
    }

    fn dma_at_mut(&mut self, p: Pos) -> Option<&mut Dma> {
        let s = self.slot_at(p);
        self.slab.get_mut(s).and_then(Option::as_mut)
    }

    /// The position of the entry starting at `key`: the finger if it is there, else a search.
    fn exact(&self, key: u64) -> Option<Pos> {
        let f = self.finger.get();
        if f.block < self.blocks.len()
            && f.idx < self.blocks[f.block].len
            && self.first_at(f) == key
        {
            return Some(f);
        }
        self.floor(key).filter(|&p| self.first_at(p) == key)
    }

    /// The entry overlapping `[start, last]` with the highest first IOVA.
    fn find_pos(&self, start: u64, last: u64) -> Option<Pos> {
        // Mappings do not overlap: the one starting last at or below `last` is the only
        // candidate that can still reach `start`.
        self.floor(last).filter(|&p| self.last_at(p) >= start)
    }

    /// The first entry starting in `[start, last]`.
    fn first_starting_in_pos(&self, start: u64, last: u64) -> Option<Pos> {
        let p = match start.checked_sub(1).and_then(|s| self.floor(s)) {
            Some(p) => self.next(p),
            None => self.first_pos(),
        }?;
        (self.first_at(p) <= last).then_some(p)
    }

    // ----- queries -----

    /// `vfio_find_dma`: some mapping overlapping `[start, last]` (the highest one).
    #[must_use]
    pub(crate) fn find(&self, start: u64, last: u64) -> Option<&Dma> {
        self.find_pos(start, last).and_then(|p| self.dma_at(p))
    }

    /// The mapping starting at `iova`.
    #[must_use]
    pub(crate) fn get(&self, iova: u64) -> Option<&Dma> {
        self.exact(iova).and_then(|p| self.dma_at(p))
    }

    /// The mapping starting at `iova`, mutably.
    pub(crate) fn get_mut(&mut self, iova: u64) -> Option<&mut Dma> {
        let p = self.exact(iova)?;
        self.dma_at_mut(p)
    }

    /// The first mapping starting in `[start, last]`.
    #[must_use]
    pub(crate) fn first_starting_in(&self, start: u64, last: u64) -> Option<&Dma> {
        self.first_starting_in_pos(start, last)
            .and_then(|p| self.dma_at(p))
    }

    /// `vfio_find_dma_first_node`: the lowest mapping whose end is ≥ `start` and whose start is
    /// ≤ `last`.
    fn first_overlapping_pos(&self, start: u64, last: u64) -> Option<Pos> {
        match self.floor(start) {
            Some(p) if self.last_at(p) >= start => Some(p),
            Some(p) => self.next(p).filter(|&n| self.first_at(n) <= last),
            None => self.first_pos().filter(|&n| self.first_at(n) <= last),
        }
    }

    /// Starts of every mapping overlapping `[start, last]`, ascending.
    #[must_use]
    pub(crate) fn overlapping_keys(&self, start: u64, last: u64) -> Vec<u64> {
        let mut keys = Vec::new();
        let mut p = self.first_overlapping_pos(start, last);
        while let Some(q) = p.filter(|&q| self.first_at(q) <= last) {
            keys.push(self.first_at(q));
            p = self.next(q);
        }
        keys
    }

    /// The mapping containing `iova`.
    #[must_use]
    pub(crate) fn containing(&self, iova: u64) -> Option<&Dma> {
        self.find_pos(iova, iova).and_then(|p| self.dma_at(p))
    }

    /// The mapping containing `iova`, mutably.
    pub(crate) fn containing_mut(&mut self, iova: u64) -> Option<&mut Dma> {
        let p = self.find_pos(iova, iova)?;
        self.dma_at_mut(p)
    }

    /// Slots in key order.
    fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.blocks
            .iter()
            .flat_map(|b| b.slot[..b.len].iter().map(|&s| s as usize))
    }

    /// All mappings, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Dma> {
        self.slots()
            .filter_map(|s| self.slab.get(s).and_then(Option::as_ref))
    }

    /// All mappings, ascending, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Dma> {
        let order: Vec<usize> = self.slots().collect();
        let mut by_slot: Vec<Option<&mut Dma>> = self.slab.iter_mut().map(Option::as_mut).collect();
        order
            .into_iter()
            .filter_map(move |s| by_slot.get_mut(s).and_then(Option::take))
    }

    /// All keys, ascending.
    #[must_use]
    pub(crate) fn keys(&self) -> Vec<u64> {
        self.blocks
            .iter()
            .flat_map(|b| b.span[..b.len].iter().map(|s| s.first))
            .collect()
    }

    // ----- changes -----

    /// The MAP checks on the tree in `vfio_dma_do_map`'s order, in one search: `EEXIST` if a
    /// mapping overlaps `[iova, last]`, then `ENOSPC` without a free slot. Returns where the
    /// mapping goes, for [`DmaTree::insert`].
    ///
    /// # Errors
    /// [`Error::Exists`] or [`Error::NoSlots`].
    pub(crate) fn vacancy(&self, iova: u64, last: u64) -> Result<Vacancy> {
        let pos = match self.floor(last) {
            Some(p) if self.last_at(p) >= iova => {
                return Err(Error::Exists {
                    iova,
                    size: last - iova + 1,
                })
            }
            Some(p) => Pos {
                block: p.block,
                idx: p.idx + 1,
            },
            None => Pos { block: 0, idx: 0 },
        };
        if self.avail == 0 {
            return Err(Error::NoSlots { limit: self.limit });
        }
        Ok(Vacancy {
            pos,
            iova,
            last,
            generation: self.generation,
        })
    }

    /// Links `dma` at `at` (from [`DmaTree::vacancy`] for `dma`'s range) and takes a slot.
    /// Returns `None`, or `Some(dma)` back, unlinked, if the range is taken or no slot is free
    /// (which a vacancy from an unchanged tree rules out).
    #[must_use]
    pub(crate) fn insert(&mut self, at: Vacancy, dma: Dma) -> Option<Dma> {
        let at = if at.generation == self.generation && at.iova == dma.iova {
            at
        } else {
            match self.vacancy(dma.iova, dma.last()) {
                Ok(v) => v,
                Err(_) => return Some(dma),
            }
        };
        if self.avail == 0 || at.last != dma.last() {
            return Some(dma);
        }
        let invalid = dma.vaddr_invalid;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(dma);
                s
            }
            None => {
                let Ok(s) = u32::try_from(self.slab.len()) else {
                    return Some(dma);
                };
                self.slab.push(Some(dma));
                s
            }
        };
        self.link(at.pos, at.iova, at.last, slot);
        self.avail -= 1;
        self.len += 1;
        self.vaddr_invalid += u32::from(invalid);
        self.generation += 1;
        None
    }

    /// Links `dma`, searching for its place (cold paths that take a mapping out and put it
    /// back). Returns `Some(dma)` back if its range is taken or no slot is free.
    #[must_use]
    pub(crate) fn reinsert(&mut self, dma: Dma) -> Option<Dma> {
        match self.vacancy(dma.iova, dma.last()) {
            Ok(v) => self.insert(v, dma),
            Err(_) => Some(dma),
        }
    }

    /// Puts an entry at `p` in the index (`p.idx` may be the block's length).
    fn link(&mut self, p: Pos, first: u64, last: u64, slot: u32) {
        if self.blocks.is_empty() {
            let mut b = self.spare.take().unwrap_or_else(Block::new);
            b.len = 0;
            b.insert(0, first, last, slot);
            self.blocks.push(b);
            self.mins.push(first);
            self.top.push(first);
            self.finger.set(Pos { block: 0, idx: 0 });
            return;
        }
        let Pos { block, mut idx } = p;
        let mut block = block;
        if self.blocks[block].len == B {
            // Split the full block: its upper half becomes a new block after it.
            let mut upper = Block::new();
            self.blocks[block].move_tail(B / 2, &mut upper);
            self.mins.insert(block + 1, upper.span[0].first);
            self.rebuild_top(block + 1);
            self.blocks.insert(block + 1, upper);
            if idx > B / 2 {
                block += 1;
                idx -= B / 2;
            }
        }
        self.blocks[block].insert(idx, first, last, slot);
        if idx == 0 {
            self.set_min(block, first);
        }
        self.finger.set(Pos { block, idx });
    }

    /// Unlinks the mapping starting at `iova` and frees its slot (`vfio_unlink_dma` and the
    /// counts of `vfio_remove_dma`).
    pub(crate) fn remove(&mut self, iova: u64) -> Option<Dma> {
        let p = self.exact(iova)?;
        let slot = self.slot_at(p);
        let dma = self.slab.get_mut(slot).and_then(Option::take)?;
        self.unlink(p);
        // `slot` came from a u32.
        self.free.push(u32::try_from(slot).unwrap_or(u32::MAX));
        self.avail += 1;
        self.len -= 1;
        self.vaddr_invalid -= u32::from(dma.vaddr_invalid);
        self.generation += 1;
        Some(dma)
    }

    fn unlink(&mut self, p: Pos) {
        let b = p.block;
        self.blocks[b].remove(p.idx);
        let len = self.blocks[b].len;
        if len == 0 {
            self.drop_block(b);
            return;
        }
        if p.idx == 0 {
            self.set_min(b, self.blocks[b].span[0].first);
        }
        // Only a block under a quarter full looks at its neighbours (each a cache line this
        // removal has not touched yet).
        if len >= B / 4 {
            return;
        }
        if b + 1 < self.blocks.len() && len + self.blocks[b + 1].len <= B / 2 {
            self.merge_next(b);
        } else if b > 0 && self.blocks[b - 1].len + len <= B / 2 {
            self.merge_next(b - 1);
        }
    }

    /// Appends block `b + 1` to block `b` and drops it.
    fn merge_next(&mut self, b: usize) {
        let (lo, hi) = self.blocks.split_at_mut(b + 1);
        hi[0].move_tail(0, &mut lo[b]);
        self.drop_block(b + 1);
    }

    fn drop_block(&mut self, b: usize) {
        self.mins.remove(b);
        self.rebuild_top(b);
        let blk = self.blocks.remove(b);
        if self.spare.is_none() {
            self.spare = Some(blk);
        }
    }

    /// Sets block `b`'s minimum, and the top level's copy if it has one.
    fn set_min(&mut self, b: usize, first: u64) {
        self.mins[b] = first;
        if b % T == 0 {
            self.top[b / T] = first;
        }
    }

    /// Rebuilds the top level from block `from` on, after minima moved (a split or a merge:
    /// `n / (B * T)` entries at most, beside the `n / B` minima the move itself shifted).
    fn rebuild_top(&mut self, from: usize) {
        let t = from / T;
        self.top.truncate(t);
        self.top.extend(self.mins[t * T..].iter().step_by(T));
    }

    /// Marks the vaddr of the mapping starting at `iova` invalid or valid, keeping the count.
    /// Returns the previous state, or `None` if no mapping starts there.
    pub(crate) fn set_vaddr_invalid(&mut self, iova: u64, invalid: bool) -> Option<bool> {
        let dma = self.get_mut(iova)?;
        let was = dma.vaddr_invalid;
        dma.vaddr_invalid = invalid;
        match (was, invalid) {
            (false, true) => self.vaddr_invalid += 1,
            (true, false) => self.vaddr_invalid -= 1,
            _ => {}
        }
        Some(was)
    }

    /// Checks the index against the slab and the counts against the mappings.
    ///
    /// # Errors
    /// A description of the first inconsistency.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.mins.len() != self.blocks.len() {
            return Err("block minima and blocks differ in number".into());
        }
        if !self
            .top
            .iter()
            .copied()
            .eq(self.mins.iter().copied().step_by(T))
        {
            return Err("the top level is not every T-th block minimum".into());
        }
        let mut n = 0usize;
        let mut prev: Option<u64> = None;
        let mut invalid = 0u32;
        let mut seen = vec![false; self.slab.len()];
        for (b, blk) in self.blocks.iter().enumerate() {
            if blk.len == 0 || blk.len > B || self.mins[b] != blk.span[0].first {
                return Err(format!("block {b}: length {} or minimum wrong", blk.len));
            }
            for i in 0..blk.len {
                let (f, l, s) = (blk.span[i].first, blk.span[i].last, blk.slot[i] as usize);
                if prev.is_some_and(|p| p >= f) || l < f {
                    return Err(format!("index out of order at {f:#x}"));
                }
                prev = Some(l);
                let Some(d) = self.slab.get(s).and_then(Option::as_ref) else {
                    return Err(format!("index entry {f:#x} names an empty slot {s}"));
                };
                if seen[s] || d.iova != f || d.last() != l {
                    return Err(format!("slot {s} does not hold the mapping at {f:#x}"));
                }
                seen[s] = true;
                invalid += u32::from(d.vaddr_invalid);
                n += 1;
            }
        }
        if n != self.len || n + self.free.len() != self.slab.len() {
            return Err(format!(
                "{n} indexed, {} counted, {} free of {} slots",
                self.len,
                self.free.len(),
                self.slab.len()
            ));
        }
        if u64::from(self.avail) + n as u64 != u64::from(self.limit) {
            return Err(format!(
                "dma_avail {} + {n} mappings != limit {}",
                self.avail, self.limit
            ));
        }
        if invalid != self.vaddr_invalid {
            return Err(format!(
                "vaddr_invalid_count {} != {invalid}",
                self.vaddr_invalid
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
