//! The pages devices pinned in one mapping (`dma->pfn_list` of `vfio_iommu_type1_pin_pages` and
//! `vfio_iommu_type1_unpin_pages`, v6.18), stored
//! densely.
//!
//! The kernel keeps one `struct vfio_pfn` (an rb-tree node of about 56 bytes) per pinned page. Here
//! pages are grouped in chunks of [`CHUNK_PAGES`](packed::CHUNK_PAGES) consecutive IOVA pages: each holds the physical
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

mod packed;

use packed::{bits, owner_of, pack, page_iova, refs_of, space_of, split, Chunk, OWNER_BITS, SLOTS};
pub(crate) use packed::{MAX_PACKED_REFS, MAX_SPACES};

/// A page whose last pin was dropped: the caller returns it to `space`.
#[derive(Debug)]
pub(crate) struct Released {
    /// The IOVA of the page (the tests check it; the release path needs only `pa`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) iova: u64,
    /// Its physical address.
    pub(crate) pa: u64,
    /// The address space that pinned it.
    pub(crate) space: Arc<Mm>,
}

/// One pinned page, as [`PinSet::iter`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PinnedPage {
    /// The IOVA of the page.
    pub(crate) iova: u64,
    /// Its physical address.
    pub(crate) pa: u64,
    /// Pins held on it, all devices together (the kernel's `ref_count`).
    pub(crate) refs: u64,
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
pub(crate) struct PinSet {
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

impl PinSet {
    /// An empty set.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of pinned pages.
    #[must_use]
    pub(crate) fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |p| p.len)
    }

    /// No page is pinned.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pins held on the page at `iova`, all devices together; 0 if it is not pinned.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn refs(&self, iova: u64) -> u64 {
        self.inner.as_ref().map_or(0, |p| p.refs(iova))
    }

    /// Whether `dev` holds at least one pin on the page at `iova`.
    #[must_use]
    pub(crate) fn holds(&self, iova: u64, dev: DeviceId) -> bool {
        self.inner.as_ref().is_some_and(|p| p.holds(iova, dev))
    }

    /// Takes another pin on an already pinned page for `dev`. Returns its physical address, or
    /// `None` (and changes nothing) if the page is not pinned.
    pub(crate) fn add_ref(&mut self, iova: u64, dev: DeviceId) -> Option<u64> {
        self.inner.as_mut()?.add_ref(iova, dev)
    }

    /// Records a newly pinned page at `iova` with one pin by `dev`, pinned in `space`. The page
    /// must not be pinned already (callers try [`PinSet::add_ref`] first).
    pub(crate) fn insert(&mut self, iova: u64, pa: u64, dev: DeviceId, space: &Arc<Mm>) {
        self.inner
            .get_or_insert_with(Box::default)
            .insert(iova, pa, dev, space);
    }

    /// Drops one of `dev`'s pins on the page at `iova`. Returns the page if that was its last pin
    /// (it is no longer in the set); `None` if pins remain or `dev` held none (nothing changes).
    pub(crate) fn drop_ref(&mut self, iova: u64, dev: DeviceId) -> Option<Released> {
        let p = self.inner.as_mut()?;
        let r = p.drop_ref(iova, dev);
        if p.len == 0 {
            self.inner = None;
        }
        r
    }

    /// Every pinned page and the pins `dev` holds on it, for pages where it holds any.
    #[must_use]
    pub(crate) fn held_by(&self, dev: DeviceId) -> Vec<(u64, u32)> {
        self.inner
            .as_ref()
            .map_or_else(Vec::new, |p| p.held_by(dev))
    }

    /// Every pinned page: chunked pages in IOVA order, then spilled ones in IOVA order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = PinnedPage> + '_ {
        self.inner.iter().flat_map(|p| p.iter())
    }

    /// Pinned pages in `[iova, iova + len)` (an empty range holds none).
    #[must_use]
    pub(crate) fn count_in(&self, iova: u64, len: u64) -> u64 {
        self.inner.as_ref().map_or(0, |p| p.count_in(iova, len))
    }

    /// Removes every page, returning them for release.
    pub(crate) fn drain(&mut self) -> Vec<Released> {
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

#[cfg(test)]
mod tests;
