//! The pages devices pinned in one mapping (`dma->pfn_list` of `vfio_iommu_type1_pin_pages` and
//! `vfio_iommu_type1_unpin_pages`, v6.18), stored
//! densely.
//!
//! The kernel keeps one `struct vfio_pfn` (an rb-tree node of about 56 bytes) per pinned page. Here
//! pages are grouped in chunks of [`CHUNK_PAGES`] consecutive IOVA pages: each holds the physical
//! address (8 bytes) and a packed word (4 bytes) of every page — the owning device, its number of
//! pins and which address space pinned it — so a densely pinned range costs about 12.3 bytes of
//! tracking per page. A page that does not fit the packed word (pinned by a second device, more
//! than [`MAX_PACKED_REFS`] pins, a device id above `u16::MAX`, more than [`MAX_SPACES`] address
//! spaces) moves to a per-page record ("spilled") and stays there until it is unpinned. A page is
//! in exactly one of the two places.
//!
//! Addresses are IOVAs of 4 KiB pages ([`PAGE_SIZE`]-aligned; the pin path checks).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::PAGE_SIZE;
use crate::device::DeviceId;
use crate::mm::Mm;

/// IOVA pages per chunk (one bit each in the chunk's presence word).
pub const CHUNK_PAGES: u64 = 64;
/// Pins of one page by its one device that the packed word can count.
pub const MAX_PACKED_REFS: u32 = (1 << REFS_BITS) - 1;
/// Address spaces a set can name in packed words (more only after repeated vaddr updates to new
/// owners while pins are held; those pages spill).
pub const MAX_SPACES: usize = 1 << SPACE_BITS;

/// [`CHUNK_PAGES`] as an array length.
const SLOTS: usize = 64;
const _: () = assert!(SLOTS as u64 == CHUNK_PAGES);
const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();
const CHUNK_SHIFT: u32 = PAGE_SHIFT + CHUNK_PAGES.trailing_zeros();
const OWNER_BITS: u32 = 16;
const REFS_BITS: u32 = 12;
const SPACE_BITS: u32 = 4;
const _: () = assert!(OWNER_BITS + REFS_BITS + SPACE_BITS == 32);

/// A page whose last pin was dropped: the caller returns it to `space`.
#[derive(Debug)]
pub struct Released {
    /// The IOVA of the page.
    pub iova: u64,
    /// Its physical address.
    pub pa: u64,
    /// The address space that pinned it.
    pub space: Arc<Mm>,
}

/// One pinned page, as [`PinSet::iter`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedPage {
    /// The IOVA of the page.
    pub iova: u64,
    /// Its physical address.
    pub pa: u64,
    /// Pins held on it, all devices together (the kernel's `ref_count`).
    pub refs: u64,
}

/// 64 consecutive IOVA pages.
#[derive(Debug)]
struct Chunk {
    /// Bit `i`: page `i` is pinned and held here.
    present: u64,
    pa: [u64; SLOTS],
    /// `owner | refs << 16 | space << 28`.
    meta: [u32; SLOTS],
}

/// A page pinned by several devices or beyond what a packed word holds.
#[derive(Debug)]
struct Spilled {
    pa: u64,
    owners: Vec<(DeviceId, u32)>,
    space: Arc<Mm>,
}

/// The pinned pages of one mapping. See the module documentation. One pointer wide while no
/// page is pinned (most mappings never see a device pin).
#[derive(Debug, Default)]
pub struct PinSet {
    inner: Option<Box<Pins>>,
}

#[derive(Debug, Default)]
struct Pins {
    chunks: BTreeMap<u64, Box<Chunk>>,
    spill: BTreeMap<u64, Spilled>,
    /// Address spaces named by packed words, by index.
    spaces: Vec<Arc<Mm>>,
    len: u64,
}

fn split(iova: u64) -> (u64, usize) {
    // The remainder is below CHUNK_PAGES, so the cast is lossless.
    #[allow(clippy::cast_possible_truncation)]
    let slot = ((iova >> PAGE_SHIFT) % CHUNK_PAGES) as usize;
    (iova >> CHUNK_SHIFT, slot)
}

fn pack(owner: u16, refs: u32, space: usize) -> u32 {
    debug_assert!(refs <= MAX_PACKED_REFS && space < MAX_SPACES);
    #[allow(clippy::cast_possible_truncation)]
    let space = space as u32;
    u32::from(owner) | refs << OWNER_BITS | space << (OWNER_BITS + REFS_BITS)
}

fn owner_of(meta: u32) -> DeviceId {
    DeviceId(meta & 0xffff)
}

fn refs_of(meta: u32) -> u32 {
    (meta >> OWNER_BITS) & MAX_PACKED_REFS
}

fn space_of(meta: u32) -> usize {
    crate::to_usize(u64::from(meta >> (OWNER_BITS + REFS_BITS)))
}

impl PinSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of pinned pages.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |p| p.len)
    }

    /// No page is pinned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pins held on the page at `iova`, all devices together; 0 if it is not pinned.
    #[must_use]
    pub fn refs(&self, iova: u64) -> u64 {
        self.inner.as_ref().map_or(0, |p| p.refs(iova))
    }

    /// Whether `dev` holds at least one pin on the page at `iova`.
    #[must_use]
    pub fn holds(&self, iova: u64, dev: DeviceId) -> bool {
        self.inner.as_ref().is_some_and(|p| p.holds(iova, dev))
    }

    /// Takes another pin on an already pinned page for `dev`. Returns its physical address, or
    /// `None` (and changes nothing) if the page is not pinned.
    pub fn add_ref(&mut self, iova: u64, dev: DeviceId) -> Option<u64> {
        self.inner.as_mut()?.add_ref(iova, dev)
    }

    /// Records a newly pinned page at `iova` with one pin by `dev`, pinned in `space`. The page
    /// must not be pinned already (callers try [`PinSet::add_ref`] first).
    pub fn insert(&mut self, iova: u64, pa: u64, dev: DeviceId, space: &Arc<Mm>) {
        self.inner
            .get_or_insert_with(Box::default)
            .insert(iova, pa, dev, space);
    }

    /// Drops one of `dev`'s pins on the page at `iova`. Returns the page if that was its last pin
    /// (it is no longer in the set); `None` if pins remain or `dev` held none (nothing changes).
    pub fn drop_ref(&mut self, iova: u64, dev: DeviceId) -> Option<Released> {
        let p = self.inner.as_mut()?;
        let r = p.drop_ref(iova, dev);
        if p.len == 0 {
            self.inner = None;
        }
        r
    }

    /// Every pinned page and the pins `dev` holds on it, for pages where it holds any.
    #[must_use]
    pub fn held_by(&self, dev: DeviceId) -> Vec<(u64, u32)> {
        self.inner
            .as_ref()
            .map_or_else(Vec::new, |p| p.held_by(dev))
    }

    /// Every pinned page: chunked pages in IOVA order, then spilled ones in IOVA order.
    pub fn iter(&self) -> impl Iterator<Item = PinnedPage> + '_ {
        self.inner.iter().flat_map(|p| p.iter())
    }

    /// Pinned pages in `[iova, iova + len)` (an empty range holds none).
    #[must_use]
    pub fn count_in(&self, iova: u64, len: u64) -> u64 {
        self.inner.as_ref().map_or(0, |p| p.count_in(iova, len))
    }

    /// Removes every page, returning them for release.
    pub fn drain(&mut self) -> Vec<Released> {
        self.inner.take().map_or_else(Vec::new, |mut p| p.drain())
    }
}

impl Pins {
    /// Pins held on the page at `iova`, all devices together; 0 if it is not pinned.
    #[must_use]
    fn refs(&self, iova: u64) -> u64 {
        if let Some(s) = self.spill.get(&iova) {
            return s.owners.iter().map(|&(_, n)| u64::from(n)).sum();
        }
        let (c, i) = split(iova);
        match self.chunks.get(&c) {
            Some(ch) if ch.present >> i & 1 == 1 => u64::from(refs_of(ch.meta[i])),
            _ => 0,
        }
    }

    /// Whether `dev` holds at least one pin on the page at `iova`.
    #[must_use]
    fn holds(&self, iova: u64, dev: DeviceId) -> bool {
        if let Some(s) = self.spill.get(&iova) {
            return s.owners.iter().any(|&(d, n)| d == dev && n > 0);
        }
        let (c, i) = split(iova);
        matches!(self.chunks.get(&c), Some(ch) if ch.present >> i & 1 == 1 && owner_of(ch.meta[i]) == dev)
    }

    /// Takes another pin on an already pinned page for `dev`. Returns its physical address, or
    /// `None` (and changes nothing) if the page is not pinned.
    fn add_ref(&mut self, iova: u64, dev: DeviceId) -> Option<u64> {
        if let Some(s) = self.spill.get_mut(&iova) {
            match s.owners.iter_mut().find(|(d, _)| *d == dev) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => s.owners.push((dev, 1)),
            }
            return Some(s.pa);
        }
        let (c, i) = split(iova);
        let ch = self.chunks.get_mut(&c)?;
        if ch.present >> i & 1 == 0 {
            return None;
        }
        let meta = ch.meta[i];
        let pa = ch.pa[i];
        let (owner, refs) = (owner_of(meta), refs_of(meta));
        if owner == dev && refs < MAX_PACKED_REFS {
            ch.meta[i] = meta + (1 << OWNER_BITS);
            return Some(pa);
        }
        // Spill: a second device, or more pins than the word counts.
        let space = Arc::clone(&self.spaces[space_of(meta)]);
        let owners = if owner == dev {
            vec![(owner, refs + 1)]
        } else {
            vec![(owner, refs), (dev, 1)]
        };
        self.remove_packed(c, i);
        self.forget_spaces_if_empty();
        self.spill.insert(iova, Spilled { pa, owners, space });
        Some(pa)
    }

    /// Records a newly pinned page at `iova` with one pin by `dev`, pinned in `space`. The page
    /// must not be pinned already (callers try [`PinSet::add_ref`] first).
    fn insert(&mut self, iova: u64, pa: u64, dev: DeviceId, space: &Arc<Mm>) {
        debug_assert_eq!(self.refs(iova), 0, "page {iova:#x} inserted twice");
        self.len += 1;
        let packed_space = match self.spaces.iter().position(|s| Arc::ptr_eq(s, space)) {
            Some(k) => Some(k),
            None if self.spaces.len() < MAX_SPACES => {
                self.spaces.push(Arc::clone(space));
                Some(self.spaces.len() - 1)
            }
            None => None,
        };
        match (u16::try_from(dev.0), packed_space) {
            (Ok(owner), Some(k)) => {
                let (c, i) = split(iova);
                let ch = self.chunks.entry(c).or_insert_with(|| {
                    Box::new(Chunk {
                        present: 0,
                        pa: [0; SLOTS],
                        meta: [0; SLOTS],
                    })
                });
                ch.present |= 1 << i;
                ch.pa[i] = pa;
                ch.meta[i] = pack(owner, 1, k);
            }
            _ => {
                self.spill.insert(
                    iova,
                    Spilled {
                        pa,
                        owners: vec![(dev, 1)],
                        space: Arc::clone(space),
                    },
                );
            }
        }
    }

    /// Drops one of `dev`'s pins on the page at `iova`. Returns the page if that was its last pin
    /// (it is no longer in the set); `None` if pins remain or `dev` held none (nothing changes).
    fn drop_ref(&mut self, iova: u64, dev: DeviceId) -> Option<Released> {
        if let Some(s) = self.spill.get_mut(&iova) {
            let pos = s.owners.iter().position(|&(d, _)| d == dev)?;
            s.owners[pos].1 -= 1;
            if s.owners[pos].1 == 0 {
                s.owners.swap_remove(pos);
            }
            if !s.owners.is_empty() {
                return None;
            }
            let s = self.spill.remove(&iova)?;
            self.len -= 1;
            self.forget_spaces_if_empty();
            return Some(Released {
                iova,
                pa: s.pa,
                space: s.space,
            });
        }
        let (c, i) = split(iova);
        let ch = self.chunks.get_mut(&c)?;
        if ch.present >> i & 1 == 0 || owner_of(ch.meta[i]) != dev {
            return None;
        }
        if refs_of(ch.meta[i]) > 1 {
            ch.meta[i] -= 1 << OWNER_BITS;
            return None;
        }
        let released = Released {
            iova,
            pa: ch.pa[i],
            space: Arc::clone(&self.spaces[space_of(ch.meta[i])]),
        };
        self.remove_packed(c, i);
        self.len -= 1;
        self.forget_spaces_if_empty();
        Some(released)
    }

    /// Every pinned page and the pins `dev` holds on it, for pages where it holds any.
    #[must_use]
    fn held_by(&self, dev: DeviceId) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        for (&c, ch) in &self.chunks {
            for i in bits(ch.present) {
                if owner_of(ch.meta[i]) == dev {
                    out.push((page_iova(c, i), refs_of(ch.meta[i])));
                }
            }
        }
        for (&iova, s) in &self.spill {
            if let Some(&(_, n)) = s.owners.iter().find(|(d, _)| *d == dev) {
                out.push((iova, n));
            }
        }
        out
    }

    /// Every pinned page: chunked pages in IOVA order, then spilled ones in IOVA order.
    fn iter(&self) -> impl Iterator<Item = PinnedPage> + '_ {
        let packed = self.chunks.iter().flat_map(|(&c, ch)| {
            bits(ch.present).map(move |i| PinnedPage {
                iova: page_iova(c, i),
                pa: ch.pa[i],
                refs: u64::from(refs_of(ch.meta[i])),
            })
        });
        let spilled = self.spill.iter().map(|(&iova, s)| PinnedPage {
            iova,
            pa: s.pa,
            refs: s.owners.iter().map(|&(_, n)| u64::from(n)).sum(),
        });
        packed.chain(spilled)
    }

    /// Pinned pages in `[iova, iova + len)` (an empty range holds none).
    #[must_use]
    fn count_in(&self, iova: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let last = iova.saturating_add(len - 1);
        let spilled = self.spill.range(iova..=last).count() as u64;
        // Pages whose IOVA lies in the range: the first starts at or after `iova`.
        let Some(first) = iova.checked_next_multiple_of(PAGE_SIZE) else {
            return spilled;
        };
        if first > last {
            return spilled;
        }
        let (first_c, first_slot) = split(first);
        let (last_c, last_slot) = split(last);
        let mut n = 0u64;
        for (&c, ch) in self.chunks.range(first_c..=last_c) {
            let mut mask = ch.present;
            if c == first_c {
                mask &= u64::MAX << first_slot;
            }
            if c == last_c && last_slot < 63 {
                mask &= (1u64 << (last_slot + 1)) - 1;
            }
            n += u64::from(mask.count_ones());
        }
        n + spilled
    }

    /// Removes every page, returning them for release.
    fn drain(&mut self) -> Vec<Released> {
        let mut out = Vec::with_capacity(crate::to_usize(self.len));
        for (c, ch) in std::mem::take(&mut self.chunks) {
            for i in bits(ch.present) {
                out.push(Released {
                    iova: page_iova(c, i),
                    pa: ch.pa[i],
                    space: Arc::clone(&self.spaces[space_of(ch.meta[i])]),
                });
            }
        }
        for (iova, s) in std::mem::take(&mut self.spill) {
            out.push(Released {
                iova,
                pa: s.pa,
                space: s.space,
            });
        }
        self.len = 0;
        self.spaces.clear();
        out
    }

    /// Clears slot `i` of chunk `c`, freeing the chunk when it empties.
    fn remove_packed(&mut self, c: u64, i: usize) {
        if let Some(ch) = self.chunks.get_mut(&c) {
            ch.present &= !(1 << i);
            ch.meta[i] = 0;
            if ch.present == 0 {
                self.chunks.remove(&c);
            }
        }
    }

    /// Address-space indices are only reused from scratch, once no packed word names them.
    fn forget_spaces_if_empty(&mut self) {
        if self.chunks.is_empty() {
            self.spaces.clear();
        }
    }
}

fn page_iova(chunk: u64, slot: usize) -> u64 {
    (chunk << CHUNK_SHIFT) | ((slot as u64) << PAGE_SHIFT)
}

/// Indices of the set bits of `word`, ascending.
fn bits(mut word: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if word == 0 {
            return None;
        }
        let i = word.trailing_zeros();
        word &= word - 1;
        Some(crate::to_usize(u64::from(i)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::{FakeMemory, LockCapability};

    fn space() -> Arc<Mm> {
        Arc::new(Mm::new(
            Box::new(FakeMemory::new()),
            None,
            LockCapability::Limited,
        ))
    }

    const A: DeviceId = DeviceId(1);
    const B: DeviceId = DeviceId(2);

    #[test]
    fn a_page_pinned_twice_by_one_device_is_released_by_its_second_unpin() {
        let mm = space();
        let mut s = PinSet::new();
        s.insert(0x5000, 0xa000, A, &mm);
        assert_eq!(s.add_ref(0x5000, A), Some(0xa000));
        assert_eq!(s.refs(0x5000), 2);
        assert!(s.drop_ref(0x5000, A).is_none());
        let r = s.drop_ref(0x5000, A).expect("last pin releases");
        assert_eq!((r.iova, r.pa), (0x5000, 0xa000));
        assert!(Arc::ptr_eq(&r.space, &mm));
        assert!(s.is_empty());
        assert!(s.inner.is_none(), "an empty set frees its storage");
    }

    #[test]
    fn a_second_device_spills_the_page_and_each_device_drops_only_its_own_pins() {
        let mm = space();
        let mut s = PinSet::new();
        s.insert(0x1000, 0xb000, A, &mm);
        assert_eq!(s.add_ref(0x1000, B), Some(0xb000));
        assert_eq!(s.refs(0x1000), 2);
        assert!(s.holds(0x1000, A) && s.holds(0x1000, B));
        assert!(s.drop_ref(0x1000, DeviceId(3)).is_none());
        assert!(s.drop_ref(0x1000, A).is_none());
        assert!(!s.holds(0x1000, A));
        assert!(s.drop_ref(0x1000, A).is_none(), "A holds nothing any more");
        assert!(s.drop_ref(0x1000, B).is_some());
        assert!(s.is_empty());
    }

    #[test]
    fn another_device_cannot_drop_a_packed_pin() {
        let mm = space();
        let mut s = PinSet::new();
        s.insert(0x1000, 0xb000, A, &mm);
        assert!(s.drop_ref(0x1000, B).is_none());
        assert_eq!(s.refs(0x1000), 1);
        assert!(s.holds(0x1000, A) && !s.holds(0x1000, B));
    }

    #[test]
    fn pins_beyond_the_packed_count_spill_without_losing_any() {
        let mm = space();
        let mut s = PinSet::new();
        s.insert(0, 0x1000, A, &mm);
        let total = u64::from(MAX_PACKED_REFS) + 10;
        for _ in 1..total {
            assert_eq!(s.add_ref(0, A), Some(0x1000));
        }
        assert_eq!(s.refs(0), total);
        for _ in 1..total {
            assert!(s.drop_ref(0, A).is_none());
        }
        assert!(s.drop_ref(0, A).is_some());
        assert!(s.is_empty());
    }

    #[test]
    fn device_ids_beyond_sixteen_bits_and_many_spaces_are_kept_exactly() {
        let mut s = PinSet::new();
        let big = DeviceId(1 << 20);
        let mm = space();
        s.insert(0x2000, 0xc000, big, &mm);
        assert!(s.holds(0x2000, big) && !s.holds(0x2000, DeviceId(0)));
        let spaces: Vec<Arc<Mm>> = (0..MAX_SPACES + 3).map(|_| space()).collect();
        for (k, mm) in spaces.iter().enumerate() {
            s.insert(0x10_0000 + k as u64 * PAGE_SIZE, k as u64, A, mm);
        }
        let mut released = s.drain();
        released.sort_by_key(|r| r.iova);
        assert_eq!(released.len(), MAX_SPACES + 4);
        for (k, mm) in spaces.iter().enumerate() {
            assert!(Arc::ptr_eq(&released[k + 1].space, mm), "page {k}");
        }
        assert!(s.is_empty() && s.inner.is_none());
    }

    #[test]
    fn count_in_counts_partial_chunks_and_spilled_pages() {
        let mm = space();
        let mut s = PinSet::new();
        for p in 0..200u64 {
            s.insert(p * PAGE_SIZE, p, A, &mm);
        }
        s.add_ref(70 * PAGE_SIZE, B); // spills page 70
        assert_eq!(s.count_in(0, 200 * PAGE_SIZE), 200);
        assert_eq!(s.count_in(63 * PAGE_SIZE, 2 * PAGE_SIZE), 2);
        assert_eq!(s.count_in(65 * PAGE_SIZE, 10 * PAGE_SIZE), 10);
        assert_eq!(s.count_in(64 * PAGE_SIZE, 64 * PAGE_SIZE), 64);
        assert_eq!(s.count_in(199 * PAGE_SIZE + 1, u64::MAX), 0);
        assert_eq!(s.count_in(0, 0), 0);
        assert_eq!(
            s.count_in(PAGE_SIZE - 1, 2),
            1,
            "page 1 starts inside the range"
        );
        assert_eq!(s.count_in(u64::MAX, 1), 0);
        assert_eq!(s.count_in(0, u64::MAX), 200);
        assert_eq!(s.len(), 200);
        let held = s.held_by(B);
        assert_eq!(held, vec![(70 * PAGE_SIZE, 1)]);
        assert_eq!(s.held_by(A).len(), 200);
        assert_eq!(s.iter().count(), 200);
    }

    /// Against a map of per-page, per-device counts: random inserts, refs and drops.
    #[test]
    fn random_operations_match_a_plain_map() {
        use std::collections::HashMap;
        let spaces = [space(), space()];
        let mut s = PinSet::new();
        let mut model: HashMap<u64, (u64, HashMap<u32, u32>)> = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000u64 {
            let page = (next() % 300) * PAGE_SIZE;
            let dev = DeviceId(u32::try_from(next() % 3).unwrap_or(0) * 40_000);
            match next() % 3 {
                0 | 1 => {
                    if s.add_ref(page, dev).is_none() {
                        assert!(!model.contains_key(&page));
                        let sp = &spaces[crate::to_usize(next() % 2)];
                        s.insert(page, step, dev, sp);
                        model.insert(page, (step, HashMap::from([(dev.0, 1)])));
                    } else {
                        *model
                            .get_mut(&page)
                            .map(|e| e.1.entry(dev.0).or_insert(0))
                            .expect("model has the page") += 1;
                    }
                }
                _ => {
                    let r = s.drop_ref(page, dev);
                    let held = model
                        .get(&page)
                        .and_then(|e| e.1.get(&dev.0))
                        .copied()
                        .unwrap_or(0);
                    if held == 0 {
                        assert!(r.is_none());
                        continue;
                    }
                    let e = model.get_mut(&page).expect("present");
                    *e.1.get_mut(&dev.0).expect("held") -= 1;
                    e.1.retain(|_, n| *n > 0);
                    if e.1.is_empty() {
                        let (pa, _) = model.remove(&page).expect("present");
                        assert_eq!(r.map(|r| r.pa), Some(pa));
                    } else {
                        assert!(r.is_none());
                    }
                }
            }
            assert_eq!(s.len(), model.len() as u64);
        }
        for _ in 0..2_000 {
            let iova = next() % (310 * PAGE_SIZE);
            let len = next() % (200 * PAGE_SIZE);
            let want = model
                .keys()
                .filter(|&&p| len > 0 && p >= iova && p <= iova + (len - 1))
                .count() as u64;
            assert_eq!(s.count_in(iova, len), want, "count_in({iova:#x}, {len:#x})");
        }
        for (&page, (pa, owners)) in &model {
            let total: u64 = owners.values().map(|&n| u64::from(n)).sum();
            assert_eq!(s.refs(page), total);
            assert!(s
                .iter()
                .any(|p| p.iova == page && p.pa == *pa && p.refs == total));
        }
    }
}
