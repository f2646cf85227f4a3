//! The model's lazy invalidation: flush rings per domain, the timer, and which pins wait for
//! which domain (`InvalidationPolicy::Lazy`; docs/SEMANTICS.md, "The page table").

use super::*;

impl Model {
    // ----- lazy invalidation -----

    /// Domain `d` flushes: it lets go of every entry it holds; entries no domain holds are
    /// released (unpinned, uncharged).
    pub(super) fn flush_domain(&mut self, d: Dom) {
        for p in &mut self.pending {
            p.holders.remove(&d);
        }
        self.pending.retain(|p| !p.holders.is_empty());
    }

    /// The pins of `[iova, iova + size)` (`pages` charged) leave every domain: released now
    /// under strict invalidation, queued in every domain's ring under lazy.
    pub(super) fn release(&mut self, iova: u64, size: u64, pages: u64) {
        let Some(lazy) = self.cfg.lazy else { return };
        if !self.iommu() || size == 0 {
            return;
        }
        let doms: Vec<Dom> = self.groups.keys().copied().collect();
        for &d in &doms {
            // A full ring is flushed before the entry goes in; the timer stays as it was.
            let queued = self
                .pending
                .iter()
                .filter(|p| p.holders.contains(&d))
                .count();
            if queued >= lazy.capacity {
                self.flush_domain(d);
            }
        }
        self.pending.push(Pending {
            iova,
            size,
            pages,
            holders: doms.iter().copied().collect(),
        });
        let deadline = self.now + lazy.timeout;
        for g in self.groups.values_mut() {
            g.deadline.get_or_insert(deadline);
        }
    }

    /// The clock moves `ticks` on; expired timers flush their domain (every container
    /// operation runs them).
    pub fn tick(&mut self, ticks: u64) {
        self.now += ticks;
        let expired: Vec<Dom> = self
            .groups
            .iter()
            .filter(|(_, g)| g.deadline.is_some_and(|t| self.now >= t))
            .map(|(&d, _)| d)
            .collect();
        for d in expired {
            self.flush_domain(d);
            if let Some(g) = self.groups.get_mut(&d) {
                g.deadline = None;
            }
        }
    }

    /// Every domain flushes now.
    pub fn flush(&mut self) {
        let doms: Vec<Dom> = self.groups.keys().copied().collect();
        for d in doms {
            self.flush_domain(d);
            if let Some(g) = self.groups.get_mut(&d) {
                g.deadline = None;
            }
        }
    }

    /// True if a device of `d` could still reach `[iova, iova + len)` through a translation
    /// whose invalidation is pending (lazy mode's window): what it does there is not specified.
    #[must_use]
    pub fn stale_window(&self, d: Dom, iova: u64, len: u64) -> bool {
        self.pending
            .iter()
            .any(|p| p.holders.contains(&d) && overlaps(p.iova, p.size, iova, len))
    }
}
