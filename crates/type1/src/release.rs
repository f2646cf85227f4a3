//! Releasing what was pinned and charged for DMA: one path, [`release_pins`], for every pin.
//!
//! MAP pins a mapping's runs and charges them to its owner (`vfio_pin_pages_remote`,
//! `vfio_lock_acct`, v6.18). They may be released only once no IOTLB can still translate to
//! them: under strict invalidation right after the domains' unmaps return (each has synced its
//! IOTLB), under lazy invalidation when the last domain's flush drops the [`Token`] the unmap
//! handed it (a [`PinRelease`]). Both moments call [`release_pins`]; so does the last unpin of a
//! device's page.

use std::sync::Arc;

use crate::mm::{Mm, PinnedRun};

/// The runs of one mapping: a mapping of contiguous memory is one run, held inline (no
/// allocation per MAP).
pub(crate) type Runs = smallvec::SmallVec<[PinnedRun; 1]>;

/// Unpins `runs` from the address space that pinned them and uncharges `pages` from the owner
/// charged for them (`vfio_unpin_pages_remote` and `vfio_lock_acct` with a negative count).
pub(crate) fn release_pins(pinned_by: &Mm, charged: &Mm, runs: &[PinnedRun], pages: u64) {
    for r in runs {
        pinned_by.space().unpin_run(r);
    }
    charged.uncharge(pages);
}

/// Pins waiting for every domain to release them: unpinned and uncharged when dropped.
#[derive(Debug)]
pub(crate) struct PinRelease {
    /// (address space that pinned the runs, owner charged for them)
    owner: Option<(Arc<Mm>, Arc<Mm>)>,
    runs: Runs,
    pages: u64,
}

impl PinRelease {
    pub(crate) fn new(pinned_by: Arc<Mm>, charged: Arc<Mm>, runs: Runs, pages: u64) -> Token {
        charged.add_pending(pages);
        Some(Arc::new(PinRelease {
            owner: Some((pinned_by, charged)),
            runs,
            pages,
        }))
    }

    /// A token that releases nothing (for ranges whose pins belong to someone else, and for
    /// strict unmaps, whose pins go right after the unmap): no allocation, and cloning or
    /// dropping it touches no reference count.
    pub(crate) fn none() -> Token {
        None
    }
}

impl Drop for PinRelease {
    fn drop(&mut self) {
        if let Some((pinned_by, charged)) = &self.owner {
            release_pins(pinned_by, charged, &self.runs, self.pages);
            charged.sub_pending(self.pages);
        }
    }
}

/// What a domain holds until its IOTLB no longer translates an unmapped range (`None`: nothing
/// to release).
pub(crate) type Token = Option<Arc<PinRelease>>;
