//! The iommu core's side of mapping: block-size selection (`iommu_pgsize`) and the
//! `__iommu_map` / `__iommu_unmap` loops (`drivers/iommu/iommu.c`, v6.18).
//!
//! io-pgtable installs a leaf only when asked for exactly its block size; choosing the largest
//! block that size and alignment allow is the core's job, ported here so `map` and `unmap`
//! behave like `iommu_map` and `iommu_unmap`. Ranges are `(start, length)`, exclusive end.

use crate::addr::{last_of, Iova, PhysAddr};
use crate::error::Error;
use crate::prot::Prot;
use crate::table::IoPageTable;
use crate::tlb::Gather;

/// Bits `0..=h` set.
const fn genmask_low(h: u32) -> u64 {
    if h >= 63 {
        u64::MAX
    } else {
        (1u64 << (h + 1)) - 1
    }
}

/// `iommu_pgsize`: the page size to use at (`iova`, `paddr`) for a `size`-byte request, and how
/// many of them to map before a larger size becomes usable. `None` if no supported size fits
/// (the kernel's `BUG_ON`; callers check alignment first so it cannot happen through them).
#[must_use]
pub fn iommu_pgsize(pgsize_bitmap: u64, iova: u64, paddr: u64, size: u64) -> Option<(u64, u64)> {
    if size == 0 {
        return None;
    }
    let addr_merge = paddr | iova;
    let mut pgsizes = pgsize_bitmap & genmask_low(63 - size.leading_zeros());
    if addr_merge != 0 {
        pgsizes &= genmask_low(addr_merge.trailing_zeros());
    }
    if pgsizes == 0 {
        return None;
    }
    let pgsize_idx = 63 - pgsizes.leading_zeros();
    let pgsize = 1u64 << pgsize_idx;
    let mut size = size;
    let bigger = pgsize_bitmap & !genmask_low(pgsize_idx);
    if bigger != 0 {
        let next = 1u64 << bigger.trailing_zeros();
        if (iova ^ paddr) & (next - 1) == 0 {
            let offset = next - (addr_merge & (next - 1));
            if offset + next <= size {
                size = offset;
            }
        }
    }
    Some((pgsize, size >> pgsize_idx))
}

impl IoPageTable {
    /// `iommu_map`: maps `[iova, iova + size)` to `[paddr, paddr + size)` with the largest blocks
    /// alignment allows. All or nothing: on failure whatever this call mapped is unmapped again
    /// (with a strict TLB sync) before the error is returned.
    ///
    /// # Errors
    /// [`Error::EmptyRange`], [`Error::Overflow`], [`Error::Unaligned`] (to the smallest page
    /// size) before anything is touched; then any error of [`IoPageTable::map_pages`].
    pub fn map(&self, iova: Iova, paddr: PhysAddr, size: u64, prot: Prot) -> Result<(), Error> {
        let geo = self.geometry();
        let min = geo.min_pgsize();
        if size == 0 {
            return Err(Error::EmptyRange);
        }
        for (what, value) in [("iova", iova.raw()), ("paddr", paddr.raw()), ("size", size)] {
            if value & (min - 1) != 0 {
                return Err(Error::Unaligned {
                    what,
                    value,
                    align: min,
                });
            }
        }
        if last_of(iova.raw(), size).is_none() || last_of(paddr.raw(), size).is_none() {
            return Err(Error::Overflow {
                start: iova.raw(),
                len: size,
            });
        }
        let bitmap = if self.page_granular() {
            min
        } else {
            geo.pgsize_bitmap
        };
        let mut done = 0u64;
        while done < size {
            let (i, p) = (iova.raw() + done, paddr.raw() + done);
            let result = match iommu_pgsize(bitmap, i, p, size - done) {
                Some((pgsize, count)) => self.map_pages(Iova(i), PhysAddr(p), pgsize, count, prot),
                None => Err(Error::Unaligned {
                    what: "size",
                    value: size - done,
                    align: min,
                }),
            };
            match result {
                Ok(mapped) if mapped > 0 => done += mapped,
                Ok(_) => {
                    self.rollback(iova, done);
                    return Err(Error::NoMemory);
                }
                Err(e) => {
                    self.rollback(iova, done);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn rollback(&self, iova: Iova, len: u64) {
        if len > 0 {
            let mut g = Gather::new();
            self.unmap(iova, len, Some(&mut g));
            if !g.is_empty() {
                self.flush_ops().iotlb_sync(&g);
            }
        }
    }

    /// `iommu_unmap_fast`: unmaps `[iova, iova + size)` piecewise with the sizes `iommu_pgsize`
    /// picks, splitting blocks where the range ends inside one. Returns the bytes unmapped; stops
    /// at the first hole. 0 for an empty, unaligned or wrapping request. The caller syncs
    /// `gather`.
    pub fn unmap(&self, iova: Iova, size: u64, gather: Option<&mut Gather>) -> u64 {
        self.unmap_dirty(iova, size, gather, None)
    }

    /// [`IoPageTable::unmap`] reporting the writable-dirty leaves it removes (see
    /// [`IoPageTable::unmap_pages_dirty`]).
    pub fn unmap_dirty(
        &self,
        iova: Iova,
        size: u64,
        mut gather: Option<&mut Gather>,
        mut dirty: crate::table::DirtySink<'_>,
    ) -> u64 {
        let geo = self.geometry();
        let min = geo.min_pgsize();
        if size == 0 || (iova.raw() | size) & (min - 1) != 0 || last_of(iova.raw(), size).is_none()
        {
            return 0;
        }
        let bitmap = geo.pgsize_bitmap;
        let mut done = 0u64;
        while done < size {
            let at = iova.raw() + done;
            let Some((pgsize, count)) = iommu_pgsize(bitmap, at, at, size - done) else {
                break;
            };
            let n = self.unmap_pages_dirty(
                Iova(at),
                pgsize,
                count,
                gather.as_deref_mut(),
                dirty
                    .as_mut()
                    .map(|d| &mut **d as &mut dyn FnMut(Iova, u64)),
            );
            if n == 0 {
                break;
            }
            done += n;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = (1 << 12) | (1 << 21) | (1 << 30);

    #[test]
    fn pgsize_picks_largest_aligned_block() {
        assert_eq!(iommu_pgsize(B, 0, 0, 1 << 30), Some((1 << 30, 1)));
        assert_eq!(
            iommu_pgsize(B, 0x20_0000, 0x20_0000, 8 << 20),
            Some((1 << 21, 4))
        );
        // 4K pages only up to the next 2M boundary, then 2M blocks.
        assert_eq!(
            iommu_pgsize(B, 0x1000, 0x1000, 4 << 20),
            Some((0x1000, 511))
        );
        // iova and paddr disagree mod 2M: never reach a bigger page, so all 4K.
        assert_eq!(
            iommu_pgsize(B, 0x1000, 0x2000, 4 << 20),
            Some((0x1000, 1024))
        );
        assert_eq!(iommu_pgsize(B, 0x800, 0, 0x1000), None);
        assert_eq!(iommu_pgsize(B, 0, 0, 0), None);
    }

    #[test]
    fn pgsize_at_the_top_of_the_address_space() {
        let top = u64::MAX - (1 << 30) + 1;
        assert_eq!(iommu_pgsize(B, top, top, 1 << 30), Some((1 << 30, 1)));
    }
}
