//! The invariants of a [`Type1`] backend, checked by tests, the differential rig and the fuzz
//! targets after every operation: the counts `struct vfio_iommu` keeps (free slots plus mappings
//! equal the limit, the invalid-vaddr and non-pinned-group counts), and our "nothing lost" rules
//! (every domain's page table holds exactly the mappings, with their protection). A concern of
//! its own, kept out of the operations in `type1.rs`; it only reads.

use super::*;

impl Type1 {
    /// Checks the invariants `struct vfio_iommu` keeps (free slots plus mappings equal the limit,
    /// the invalid-vaddr and non-pinned-group counts match) and the project's "nothing lost"
    /// rules.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub(crate) fn check_invariants(&self) -> std::result::Result<(), String> {
        self.dmas.check()?;
        let non_pinned = self
            .domains
            .iter()
            .flat_map(|d| d.groups.iter())
            .filter(|g| !g.pinned_page_dirty_scope)
            .count() as u64;
        if non_pinned != u64::from(self.num_non_pinned_groups) {
            return Err(format!(
                "num_non_pinned_groups {} != {non_pinned}",
                self.num_non_pinned_groups
            ));
        }
        let mut prev_last: Option<u64> = None;
        for d in self.dmas.iter() {
            if d.size == 0 {
                return Err(format!("empty mapping at {:#x}", d.iova));
            }
            if prev_last.is_some_and(|p| p >= d.iova) {
                return Err(format!("overlapping mapping at {:#x}", d.iova));
            }
            prev_last = Some(d.last());
            let run_bytes: u64 = d.runs.iter().map(|r| r.npages * PAGE_SIZE).sum();
            if self.domains.is_empty() {
                if d.iommu_mapped || !d.runs.is_empty() {
                    return Err(format!("mapping {:#x} pinned without a domain", d.iova));
                }
            } else if !d.iommu_mapped || run_bytes != d.size {
                return Err(format!(
                    "mapping {:#x}: iommu_mapped {} runs {run_bytes:#x} size {:#x}",
                    d.iova, d.iommu_mapped, d.size
                ));
            }
            let expect = if d.iommu_mapped {
                run_pages(&d.runs)
            } else {
                d.device_pinned_in(d.iova, d.size)
            };
            if d.locked_vm != expect {
                return Err(format!(
                    "mapping {:#x}: locked_vm {} != expected {expect}",
                    d.iova, d.locked_vm
                ));
            }
            if self.dirty_tracking != d.bitmap.is_some() {
                return Err(format!("mapping {:#x}: bitmap vs tracking", d.iova));
            }
            if d.pfn_list.iter().count() as u64 != d.pfn_list.len() {
                return Err(format!("mapping {:#x}: pinned-page count", d.iova));
            }
            for p in d.pfn_list.iter() {
                if p.iova < d.iova || p.iova > d.last() || p.refs == 0 {
                    return Err(format!(
                        "mapping {:#x}: bad pinned page {:#x}",
                        d.iova, p.iova
                    ));
                }
            }
        }
        self.check_domains()?;
        // Locked-memory charge of every owner = its mappings' charges + pending releases.
        let mut owners: Vec<&Arc<Mm>> = Vec::new();
        for d in self.dmas.iter() {
            if !owners.iter().any(|m| Arc::ptr_eq(m, &d.mm)) {
                owners.push(&d.mm);
            }
        }
        for mm in owners {
            let charged: u64 = self
                .dmas
                .iter()
                .filter(|d| Arc::ptr_eq(&d.mm, mm))
                .map(|d| d.locked_vm)
                .sum();
            if mm.locked_pages() != charged + mm.pending_pages() {
                return Err(format!(
                    "locked_vm {} != mappings {charged} + pending {}",
                    mm.locked_pages(),
                    mm.pending_pages()
                ));
            }
        }
        Ok(())
    }

    /// Each domain's page table holds exactly the mapped ranges with their physical pages and
    /// permissions: write as mapped, read as mapped where the format can say so (stage 2); a
    /// stage-1 leaf is always readable (`arm_lpae_prot_to_pte`, v6.18, has no "no read" bit for
    /// stage 1), so there a mapping reads whenever it has any permission.
    fn check_domains(&self) -> std::result::Result<(), String> {
        for dom in &self.domains {
            let fmt = dom.domain.table().geometry().format;
            let mut want: Vec<(u64, u64, u64, DmaProt)> = Vec::new();
            for d in self.dmas.iter() {
                let prot = DmaProt {
                    read: match fmt {
                        io_pgtable::Format::ArmLpaeS1 => d.prot.read || d.prot.write,
                        io_pgtable::Format::ArmLpaeS2 => d.prot.read,
                    },
                    write: d.prot.write,
                };
                let mut off = 0;
                for r in &d.runs {
                    want.push((d.iova + off, r.npages * PAGE_SIZE, r.pa.raw(), prot));
                    off += r.npages * PAGE_SIZE;
                }
            }
            let want = merge_runs(want);
            let leaves: Vec<(u64, u64, u64, DmaProt)> = dom
                .domain
                .table()
                .leaves()
                .into_iter()
                .map(|(i, l, p, pte)| {
                    let perms = io_pgtable::pte::leaf_perms(fmt, pte);
                    (
                        i.raw(),
                        l,
                        p.raw(),
                        DmaProt {
                            read: perms.read,
                            write: perms.write,
                        },
                    )
                })
                .collect();
            let got = merge_runs(leaves);
            if got != want {
                let at = got
                    .iter()
                    .zip(&want)
                    .find(|(g, w)| g != w)
                    .map_or(0, |(g, w)| g.0.min(w.0));
                return Err(format!(
                    "domain page table differs from the mappings: {} runs vs {} expected, \
                     first difference at or after {at:#x}",
                    got.len(),
                    want.len()
                ));
            }
        }
        Ok(())
    }
}

/// Merges runs contiguous in iova and pa with equal protection.
fn merge_runs(v: Vec<(u64, u64, u64, DmaProt)>) -> Vec<(u64, u64, u64, DmaProt)> {
    let mut out: Vec<(u64, u64, u64, DmaProt)> = Vec::new();
    for (i, l, p, pr) in v {
        if let Some(last) = out.last_mut() {
            if last.0 + last.1 == i && last.2 + last.1 == p && last.3 == pr {
                last.1 += l;
                continue;
            }
        }
        out.push((i, l, p, pr));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::{FakeMemory, LockCapability};

    /// A v2 backend with one stage-2 IOMMU group (a format that can say "write, no read") and
    /// one mapping with `flags` of 4 pages at IOVA 0.
    fn on_stage2(flags: MapFlags) -> Type1 {
        let mem = FakeMemory::new();
        mem.add_ram(0x7f00_0000_0000, 1 << 20, 0x1_0000_0000);
        let mm = Arc::new(Mm::new(Box::new(mem), None, LockCapability::Limited));
        let mut desc = IommuDesc::x86_default();
        desc.table = io_pgtable::Config::new(io_pgtable::Format::ArmLpaeS2, 1 << 12, 48, 48);
        let mut t = Type1::new(Version::V2, ContainerConfig::default());
        t.attach_group(&GroupSpec {
            id: GroupId(1),
            kind: GroupKind::Iommu(desc),
        })
        .unwrap();
        let req = MapDma {
            vaddr: crate::Vaddr(0x7f00_0000_0000),
            iova: crate::Iova(0),
            size: 4 * PAGE_SIZE,
            flags,
        };
        t.map_dma(&req, &mm).unwrap();
        t.check_invariants().unwrap();
        t
    }

    /// Re-maps page 1 of the mapping at IOVA 0 in the first domain with `prot`.
    fn remap_page_1(t: &Type1, prot: Prot) {
        let d = &t.domains[0].domain;
        let pa = d.table().iova_to_phys(Iova(PAGE_SIZE)).unwrap();
        drop(d.unmap(Iova(PAGE_SIZE), PAGE_SIZE, PinRelease::none()));
        d.map(Iova(PAGE_SIZE), pa, PAGE_SIZE, Prot::CACHE | prot)
            .unwrap();
    }

    /// `vfio_pin_map_dma` (v6.18) maps with `dma->prot` exactly: a leaf that grants read to a
    /// write-only mapping breaks the invariant (the checker used to compare write only).
    #[test]
    fn invariants_catch_a_leaf_that_grants_read_to_a_write_only_mapping() {
        let t = on_stage2(MapFlags::WRITE);
        remap_page_1(&t, Prot::WRITE);
        t.check_invariants().unwrap();
        remap_page_1(&t, Prot::READ | Prot::WRITE);
        let e = t.check_invariants().unwrap_err();
        assert!(e.contains("page table differs"), "{e}");
    }

    /// The converse: a leaf of a read-write mapping that lost read is caught too.
    #[test]
    fn invariants_catch_a_leaf_that_lost_read() {
        let t = on_stage2(MapFlags::READ | MapFlags::WRITE);
        remap_page_1(&t, Prot::WRITE);
        assert!(t.check_invariants().is_err());
    }
}
