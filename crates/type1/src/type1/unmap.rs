//! `VFIO_IOMMU_UNMAP_DMA` on a [`Type1`] backend: `vfio_dma_do_unmap` (v6.18) pass by pass
//! (the container drops its lock between passes to notify devices that still pin pages), its
//! argument checks, the v2 "no bisection" rule shared with GET_BITMAP, and UNMAP|VADDR.

use super::*;

impl Type1 {
    /// One pass of `vfio_dma_do_unmap` (v6.18). Returns `Done(bytes)` or asks the caller to
    /// notify devices about a mapping that still holds pins, drop the lock, and call again with
    /// the same `progress` (the kernel's `goto again`).
    pub(crate) fn unmap_pass(
        &mut self,
        req: &UnmapDma,
        mut dest: Option<&mut BitmapDest<'_>>,
        progress: &mut UnmapProgress,
    ) -> Result<UnmapStep> {
        let UnmapDma {
            iova, size, flags, ..
        } = *req;
        let iova = iova.raw();
        let vaddr = flags.contains(UnmapFlags::VADDR);
        let all = flags.contains(UnmapFlags::ALL);
        let pgsize = self.min_pgsize();
        let last = if progress.passes == 0 {
            self.unmap_checks(req, pgsize)?
        } else if all {
            u64::MAX
        } else {
            iova + (size - 1)
        };
        progress.passes += 1;
        // What the walk needs of a mapping, taken by the search that finds it (no second
        // lookup): start (its key), last byte, size, and whether devices still pin in it.
        fn found(d: &Dma) -> (u64, u64, u64, bool) {
            (d.iova, d.last(), d.size, !d.pfn_list.is_empty())
        }
        // The mapping containing `iova`: the v2 check's first half, and the walk's start.
        let at_start = self.dmas.containing(iova).map(found);
        if self.version == Version::V2 && !all {
            let span = at_start.map(|(start, end, ..)| (start, end));
            if let Err(e) = self.check_bisection_from(iova, last, span) {
                // The kernel's `ret` is already 0 on a retry pass: success with what was done.
                return if progress.passes > 1 {
                    Ok(UnmapStep::Done(progress.unmapped))
                } else {
                    Err(e)
                };
            }
        }
        if vaddr {
            let keys = self.dmas.overlapping_keys(iova, last);
            return self.invalidate_vaddrs(iova, &keys).map(UnmapStep::Done);
        }
        // Walk upwards from the first overlapping mapping, one search per mapping (the tree
        // changes as mappings go).
        let mut next = match at_start {
            Some(f) => Some(f),
            None => self.dmas.first_starting_in(iova, last).map(found),
        };
        while let Some((key, dma_last, dma_size, pinned)) = next {
            if self.version == Version::V1 && iova > key {
                break;
            }
            if pinned {
                if progress.dma_last == Some(key) {
                    progress.retries += 1;
                    if progress.retries > UNMAP_RETRIES {
                        return Err(Error::UnmapBusy {
                            iova: key,
                            size: dma_size,
                        });
                    }
                } else {
                    progress.dma_last = Some(key);
                    progress.retries = 0;
                }
                return Ok(UnmapStep::Notify {
                    iova: key,
                    size: dma_size,
                });
            }
            progress.unmapped += match dest.as_deref_mut() {
                Some(d) if flags.contains(UnmapFlags::GET_DIRTY_BITMAP) => {
                    self.report_and_remove(key, d)?
                }
                _ => self.remove_dma(key).unwrap_or(0),
            };
            next = if dma_last >= last {
                None
            } else {
                self.dmas.first_starting_in(dma_last + 1, last).map(found)
            };
        }
        Ok(UnmapStep::Done(progress.unmapped))
    }

    /// The argument checks of `vfio_dma_do_unmap`, in its order, up to the dirty-bitmap check;
    /// returns the inclusive end.
    pub(super) fn unmap_checks(&self, req: &UnmapDma, pgsize: u64) -> Result<u64> {
        let UnmapDma {
            iova, size, flags, ..
        } = *req;
        let iova = iova.raw();
        if flags.contains(UnmapFlags::VADDR) && !self.emulated.is_empty() {
            return Err(Error::VaddrWithEmulatedGroups);
        }
        if iova & (pgsize - 1) != 0 {
            return Err(Error::Unaligned {
                what: "iova",
                value: iova,
                align: pgsize,
            });
        }
        let last = if flags.contains(UnmapFlags::ALL) {
            if iova != 0 || size != 0 {
                return Err(Error::InvalidFlags {
                    flags: flags.bits(),
                });
            }
            u64::MAX
        } else {
            if size == 0 {
                return Err(Error::ZeroSize);
            }
            if size & (pgsize - 1) != 0 {
                return Err(Error::Unaligned {
                    what: "size",
                    value: size,
                    align: pgsize,
                });
            }
            iova.checked_add(size - 1)
                .ok_or(Error::Overflow { start: iova, size })?
        };
        if flags.contains(UnmapFlags::GET_DIRTY_BITMAP) {
            if !self.dirty_tracking {
                return Err(Error::NotTracking);
            }
            if req.bitmap_pgsize != pgsize {
                return Err(Error::InvalidBitmap {
                    reason: "pgsize is not the IOMMU minimum page size",
                });
            }
        }
        Ok(last)
    }

    /// The v2 bisection check of `vfio_dma_do_unmap`, shared with GET_BITMAP
    /// (`vfio_iova_dirty_bitmap`).
    pub(crate) fn check_bisection(&self, iova: u64, last: u64) -> Result<()> {
        let at_start = self.dmas.containing(iova).map(|d| (d.iova, d.last()));
        self.check_bisection_from(iova, last, at_start)
    }

    /// The bisection check given the mapping containing `iova` (start, last), if any.
    pub(super) fn check_bisection_from(
        &self,
        iova: u64,
        last: u64,
        at_start: Option<(u64, u64)>,
    ) -> Result<()> {
        if let Some((start, end)) = at_start {
            if start < iova {
                return Err(Error::Bisects { iova });
            }
            // The same mapping also holds `last`: decided without a second query.
            if end >= last {
                return if end > last {
                    Err(Error::Bisects { iova: last + 1 })
                } else {
                    Ok(())
                };
            }
        }
        if let Some(d) = self.dmas.containing(last) {
            if d.last() > last {
                return Err(Error::Bisects { iova: last + 1 });
            }
        }
        Ok(())
    }

    /// UNMAP_DMA|VADDR: invalidate whole mappings, all or nothing.
    pub(super) fn invalidate_vaddrs(&mut self, iova: u64, keys: &[u64]) -> Result<u64> {
        let mut done: Vec<u64> = Vec::new();
        let mut unmapped = 0u64;
        let mut failure = None;
        for &key in keys {
            if self.version == Version::V1 && iova > key {
                break;
            }
            let Some(size) = self.dmas.get(key).map(|d| d.size) else {
                continue;
            };
            if self.dmas.set_vaddr_invalid(key, true) == Some(true) {
                failure = Some(Error::VaddrAlreadyInvalid { iova: key });
                break;
            }
            unmapped += size;
            done.push(key);
        }
        if let Some(e) = failure {
            for key in done {
                self.dmas.set_vaddr_invalid(key, false);
            }
            return Err(e);
        }
        Ok(unmapped)
    }
}
