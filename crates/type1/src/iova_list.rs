//! The container's list of valid IOVA ranges (`iommu->iova_list`: `vfio_iommu_iova_dma_valid`,
//! `vfio_iommu_aper_resize`, `vfio_iommu_resv_exclude`, `vfio_iommu_aper_expand`, v6.18).
//!
//! Nodes are `[start, end]` with an **inclusive** end (so a range may end at `u64::MAX`), sorted
//! and disjoint. An empty list means "no restriction": it is empty only until the first IOMMU
//! domain is attached.

/// Sorted, disjoint, inclusive IOVA ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IovaList {
    nodes: Vec<(u64, u64)>,
}

impl IovaList {
    /// The ranges, ascending.
    #[must_use]
    pub(crate) fn ranges(&self) -> &[(u64, u64)] {
        &self.nodes
    }

    /// True if there is no restriction (no domain was ever attached).
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `vfio_iommu_iova_dma_valid`: one node contains `[start, end]`, or the list is empty.
    #[must_use]
    pub(crate) fn contains(&self, start: u64, end: u64) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// First start and last end, if any.
    #[must_use]
    pub(crate) fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.nodes.first()?.0, self.nodes.last()?.1))
    }

    /// `vfio_iommu_aper_resize`: clip to `[start, end]`; an empty list becomes that range.
    pub(crate) fn resize(&mut self, start: u64, end: u64) {
        if self.nodes.is_empty() {
            self.nodes.push((start, end));
            return;
        }
        self.nodes = self
            .nodes
            .iter()
            .filter(|&&(s, e)| e >= start && s <= end)
            .map(|&(s, e)| (s.max(start), e.min(end)))
            .collect();
    }

    /// Removes `[start, end]` from every node, splitting where needed (`vfio_iommu_resv_exclude`
    /// for one region).
    pub(crate) fn exclude(&mut self, start: u64, end: u64) {
        let mut out = Vec::with_capacity(self.nodes.len() + 1);
        for &(s, e) in &self.nodes {
            if e < start || s > end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start - 1));
            }
            if e > end {
                out.push((end + 1, e));
            }
        }
        self.nodes = out;
    }

    /// Sets the first node's start and the last node's end (`vfio_iommu_aper_expand`).
    pub(crate) fn expand(&mut self, start: u64, end: u64) {
        if let Some(first) = self.nodes.first_mut() {
            first.0 = start;
        }
        if let Some(last) = self.nodes.last_mut() {
            last.1 = end;
        }
    }

    /// A list of the single range `[start, end]`.
    #[must_use]
    pub(crate) fn single(start: u64, end: u64) -> Self {
        IovaList {
            nodes: vec![(start, end)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_list_accepts_everything_and_resize_creates_it() {
        let mut l = IovaList::default();
        assert!(l.contains(0, u64::MAX));
        l.resize(0x1000, 0xffff);
        assert_eq!(l.ranges(), &[(0x1000, 0xffff)]);
        assert!(!l.contains(0, 0x1fff));
    }

    #[test]
    fn exclude_splits_and_drops() {
        let mut l = IovaList::single(0, u64::MAX);
        l.exclude(0xfee0_0000, 0xfeef_ffff);
        assert_eq!(l.ranges(), &[(0, 0xfedf_ffff), (0xfef0_0000, u64::MAX)]);
        assert!(
            !l.contains(0xfed0_0000, 0xfef0_0000),
            "must lie in one node"
        );
        l.exclude(0, 0xfedf_ffff);
        assert_eq!(l.ranges(), &[(0xfef0_0000, u64::MAX)]);
        l.exclude(0, u64::MAX);
        assert!(l.is_empty());
    }

    #[test]
    fn resize_clips_and_expand_widens_the_ends() {
        let mut l = IovaList::single(0, u64::MAX);
        l.exclude(0x1000, 0x1fff);
        l.resize(0x800, 0x3fff);
        assert_eq!(l.ranges(), &[(0x800, 0xfff), (0x2000, 0x3fff)]);
        l.expand(0, u64::MAX);
        assert_eq!(l.ranges(), &[(0, 0xfff), (0x2000, u64::MAX)]);
    }
}
