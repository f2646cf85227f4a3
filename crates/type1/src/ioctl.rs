//! The ioctl entry: request numbers and argument bytes exactly as the kernel receives them.
//!
//! `arg` is a user address (or, for CHECK_EXTENSION and SET_IOMMU, a plain value). Reads and
//! writes of user memory go through [`UserMemory`], the `copy_from_user`/`copy_to_user` seam: a
//! failure is `EFAULT`. Each wrapper checks `argsz` against its `minsz`, the flag mask, and writes
//! back exactly what the kernel writes back (`vfio_iommu_type1_get_info`,
//! `vfio_iommu_type1_map_dma`, `vfio_iommu_type1_unmap_dma`, `vfio_iommu_type1_dirty_pages`,
//! v6.18), and then calls the same typed operation a library user calls.

use std::ops::Range;

use crate::addr::{Iova, Vaddr};
use crate::api::{Info, MapDma, MapFlags, UnmapDma, UnmapFlags, Version, DIRTY_BITMAP_SIZE_MAX};
use crate::container::Container;
use crate::dirty::{dirty_bitmap_bytes, BitmapSink};
use crate::error::{Error, Result};
use crate::uaccess::{access_ok, UserMemory};
use crate::uapi::{self, get_u32, get_u64, off, put_u16, put_u32, put_u64, raw};
use crate::usercopy::{words_as_bytes, words_as_bytes_mut};

fn copy_from(user: &dyn UserMemory, addr: u64, buf: &mut [u8]) -> Result<()> {
    user.read(addr, buf)
        .map_err(|a| Error::BadAddress { addr: a })
}

fn copy_to(user: &mut dyn UserMemory, addr: u64, data: &[u8]) -> Result<()> {
    user.write(addr, data)
        .map_err(|a| Error::BadAddress { addr: a })
}

/// A length as a `u32` field, saturating (buffers here are far below 4 GiB).
fn u32_of(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// `verify_bitmap_size`.
fn verify_bitmap_size(npages: u64, bitmap_size: u64) -> Result<()> {
    if npages == 0
        || bitmap_size == 0
        || bitmap_size > DIRTY_BITMAP_SIZE_MAX
        || bitmap_size < dirty_bitmap_bytes(npages)
    {
        return Err(Error::InvalidBitmap {
            reason: "bitmap size does not fit the range",
        });
    }
    Ok(())
}

/// `size >> __ffs(pgsize)` with `__ffs(0)` treated as "no pages".
fn pages_of(size: u64, pgsize: u64) -> u64 {
    size.checked_shr(pgsize.trailing_zeros()).unwrap_or(0)
}

/// Words of the bitmap of `size` bytes at `pgsize` (`DIRTY_BITMAP_BYTES` of its pages).
fn bitmap_words(size: u64, pgsize: u64) -> usize {
    crate::to_usize(dirty_bitmap_bytes(pages_of(size, pgsize)) / 8)
}

/// How a request's reports reach the user's bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// UNMAP with GET_DIRTY_BITMAP: at the first report the bitmap is read whole and written
    /// back unchanged, so a bitmap that cannot be read or written fails with `EFAULT` before any
    /// mapping is removed (the page-table unmap runs before the report); the reports are written
    /// once at the end ([`UserBitmap::finish`]).
    Probed,
    /// GET_BITMAP: each report is written when it is complete ([`BitmapSink::commit`]), before
    /// its mapping's dirty state is reset, as `update_user_bitmap`'s `copy_to_user`; a report's
    /// first word is read first (its low bits are ORed) unless an earlier report wrote it.
    EachReport,
}

/// The user's bitmap at `data` as the sink of a request's reports (`update_user_bitmap`'s
/// `copy_from_user`/`copy_to_user`), delivered as [`Delivery`] says. A request with no mapping
/// in its range never touches the bitmap, as in the kernel.
struct UserBitmap<'a> {
    user: &'a mut dyn UserMemory,
    data: u64,
    nwords: usize,
    delivery: Delivery,
    words: Option<Vec<u64>>,
    /// Words `[0, defined)` hold what the user's bitmap holds or will (each report's span).
    defined: usize,
}

impl<'a> UserBitmap<'a> {
    fn new(user: &'a mut dyn UserMemory, data: u64, nwords: usize, delivery: Delivery) -> Self {
        UserBitmap {
            user,
            data,
            nwords,
            delivery,
            words: None,
            defined: 0,
        }
    }

    /// Writes the reports back ([`Delivery::Probed`], if any report asked for the words).
    fn finish(self) -> Result<()> {
        match (self.delivery, self.words) {
            (Delivery::Probed, Some(words)) => {
                copy_to(self.user, self.data, words_as_bytes(&words))
            }
            _ => Ok(()),
        }
    }

    /// The user address of word `i`.
    fn word_addr(&self, i: usize) -> u64 {
        self.data + 8 * i as u64
    }
}

impl BitmapSink for UserBitmap<'_> {
    fn words(&mut self, span: Range<usize>) -> Result<&mut [u64]> {
        if self.words.is_none() {
            let mut words = Vec::new();
            words
                .try_reserve_exact(self.nwords)
                .map_err(|_| Error::NoMemory)?;
            words.resize(self.nwords, 0);
            if self.delivery == Delivery::Probed {
                // Read in place and written back unchanged: the probe.
                copy_from(self.user, self.data, words_as_bytes_mut(&mut words))?;
                copy_to(self.user, self.data, words_as_bytes(&words))?;
            }
            self.words = Some(words);
        }
        if self.delivery == Delivery::EachReport
            && span.start < span.end
            && span.start >= self.defined
            && span.start < self.nwords
        {
            let mut first = [0u8; 8];
            copy_from(self.user, self.word_addr(span.start), &mut first)?;
            if let Some(w) = self.words.as_mut().and_then(|w| w.get_mut(span.start)) {
                *w = u64::from_ne_bytes(first);
            }
            self.defined = span.end.min(self.nwords);
        }
        Ok(self.words.as_deref_mut().unwrap_or_default())
    }

    fn commit(&mut self, span: Range<usize>) -> Result<()> {
        if self.delivery != Delivery::EachReport {
            return Ok(());
        }
        let addr = self.word_addr(span.start);
        let Some(words) = self.words.as_deref().and_then(|w| w.get(span)) else {
            return Ok(());
        };
        copy_to(self.user, addr, words_as_bytes(words))
    }
}

/// A decoded `struct vfio_bitmap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BitmapArg {
    /// Page size each bit stands for.
    pub pgsize: u64,
    /// Bytes of the user bitmap.
    pub size: u64,
    /// User address of the bitmap.
    pub data: u64,
}

impl BitmapArg {
    fn decode(b: &[u8]) -> Self {
        BitmapArg {
            pgsize: get_u64(b, off::BITMAP_PGSIZE),
            size: get_u64(b, off::BITMAP_SIZE),
            data: get_u64(b, off::BITMAP_DATA),
        }
    }

    /// The wrapper checks shared by unmap and GET_BITMAP: `access_ok` and `verify_bitmap_size`.
    fn check(&self, range_size: u64) -> Result<()> {
        if !access_ok(self.data, self.size) {
            return Err(Error::InvalidBitmap {
                reason: "bitmap data is not a user address",
            });
        }
        verify_bitmap_size(pages_of(range_size, self.pgsize), self.size)
    }
}

impl Container {
    /// The container fd's `ioctl(fd, request, arg)`. Returns the ioctl's non-negative result.
    ///
    /// # Errors
    /// The kernel's error for the request; [`Error::errno`] gives the errno.
    pub fn ioctl(&self, request: u64, arg: u64, user: &mut dyn UserMemory) -> Result<i64> {
        match request {
            uapi::VFIO_GET_API_VERSION => Ok(i64::from(self.api_version())),
            uapi::VFIO_CHECK_EXTENSION => Ok(i64::from(self.check_extension(arg))),
            uapi::VFIO_SET_IOMMU => self.set_iommu_type(arg).map(|()| 0),
            uapi::VFIO_IOMMU_GET_INFO
            | uapi::VFIO_IOMMU_MAP_DMA
            | uapi::VFIO_IOMMU_UNMAP_DMA
            | uapi::VFIO_IOMMU_DIRTY_PAGES => {
                let r = match request {
                    uapi::VFIO_IOMMU_GET_INFO => self.ioctl_get_info(arg, user),
                    uapi::VFIO_IOMMU_MAP_DMA => self.ioctl_map(arg, user),
                    uapi::VFIO_IOMMU_UNMAP_DMA => self.ioctl_unmap(arg, user),
                    _ => self.ioctl_dirty(arg, user),
                };
                self.backend_first(r).map(|()| 0)
            }
            _ if !self.has_iommu() => Err(Error::NoIommu),
            _ => Err(Error::NotTty { request }),
        }
    }

    /// `vfio_fops_unl_ioctl` (v6.18) passes these requests to the backend only when one is set,
    /// so without a backend the answer is `EINVAL` before the argument is read. The operations
    /// read the argument without side effects and fail with [`Error::NoIommu`] under the
    /// container's lock, which they take once; the backend is asked for again only when the
    /// request failed for another reason, to give the missing backend's error first.
    fn backend_first(&self, r: Result<()>) -> Result<()> {
        match r {
            Err(e) if !matches!(e, Error::NoIommu) && !self.has_iommu() => Err(Error::NoIommu),
            r => r,
        }
    }

    /// `vfio_iommu_type1_get_info`, v6.18 (capabilities 8-byte aligned since v6.6).
    fn ioctl_get_info(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut head = [0u8; uapi::INFO_MINSZ as usize];
        copy_from(user, arg, &mut head)?;
        let argsz = get_u32(&head, off::ARGSZ);
        if argsz < uapi::INFO_MINSZ {
            return Err(Error::ArgszTooSmall {
                argsz,
                minsz: uapi::INFO_MINSZ,
            });
        }
        let minsz = argsz.min(uapi::INFO_SIZE) as usize;
        let info = self.info()?;
        let caps = build_caps(&info);
        let mut out = [0u8; uapi::INFO_SIZE as usize];
        out[..head.len()].copy_from_slice(&head);
        put_u32(
            &mut out,
            off::FLAGS,
            raw::VFIO_IOMMU_INFO_PGSIZES | raw::VFIO_IOMMU_INFO_CAPS,
        );
        put_u64(&mut out, off::INFO_PGSIZES, info.iova_pgsizes);
        let total = uapi::INFO_SIZE.saturating_add(u32_of(caps.len()));
        if argsz < total {
            put_u32(&mut out, off::ARGSZ, total);
        } else {
            copy_to(user, arg + u64::from(uapi::INFO_SIZE), &caps)?;
            put_u32(&mut out, off::INFO_CAP_OFFSET, uapi::INFO_SIZE);
        }
        copy_to(user, arg, &out[..minsz])
    }

    /// `vfio_iommu_type1_map_dma` (v6.18), the wrapper before `vfio_dma_do_map`.
    fn ioctl_map(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut b = [0u8; uapi::MAP_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, off::ARGSZ);
        let flags = get_u32(&b, off::FLAGS);
        if argsz < uapi::MAP_MINSZ {
            return Err(Error::ArgszTooSmall {
                argsz,
                minsz: uapi::MAP_MINSZ,
            });
        }
        let Some(flags) = MapFlags::from_bits(flags) else {
            return Err(Error::UnknownFlags { flags });
        };
        // The raw fields become typed addresses here; every u64 is one, so the kernel's checks
        // (`vfio_dma_do_map`) all stay in the typed operation, in its order.
        self.map_dma(&MapDma {
            vaddr: Vaddr(get_u64(&b, off::MAP_VADDR)),
            iova: Iova(get_u64(&b, off::MAP_IOVA)),
            size: get_u64(&b, off::MAP_SIZE),
            flags,
        })
    }

    /// `vfio_iommu_type1_unmap_dma` (v6.18), the wrapper before `vfio_dma_do_unmap`: nothing is
    /// written back on error.
    fn ioctl_unmap(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        let mut b = [0u8; uapi::UNMAP_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, off::ARGSZ);
        let raw_flags = get_u32(&b, off::FLAGS);
        if argsz < uapi::UNMAP_MINSZ {
            return Err(Error::ArgszTooSmall {
                argsz,
                minsz: uapi::UNMAP_MINSZ,
            });
        }
        let Some(flags) = UnmapFlags::from_bits(raw_flags) else {
            return Err(Error::UnknownFlags { flags: raw_flags });
        };
        let iova = get_u64(&b, off::UNMAP_IOVA);
        let size = get_u64(&b, off::UNMAP_SIZE);
        let mut bitmap_pgsize = 0;
        let mut bitmap_data = None;
        if flags.contains(UnmapFlags::GET_DIRTY_BITMAP) {
            if flags.intersects(UnmapFlags::ALL | UnmapFlags::VADDR) {
                return Err(Error::InvalidFlags { flags: raw_flags });
            }
            let minsz = uapi::UNMAP_MINSZ + uapi::BITMAP_SIZE;
            if argsz < minsz {
                return Err(Error::ArgszTooSmall { argsz, minsz });
            }
            let mut bb = [0u8; uapi::BITMAP_SIZE as usize];
            copy_from(user, arg + off::UNMAP_DATA as u64, &mut bb)?;
            let bitmap = BitmapArg::decode(&bb);
            bitmap.check(size)?;
            bitmap_pgsize = bitmap.pgsize;
            bitmap_data = Some(bitmap.data);
        }
        let req = UnmapDma {
            iova: Iova(iova),
            size,
            flags,
            bitmap_pgsize,
        };
        let unmapped = match bitmap_data {
            Some(data) => {
                let words = bitmap_words(size, bitmap_pgsize);
                let mut sink = UserBitmap::new(&mut *user, data, words, Delivery::Probed);
                let r = self.unmap_loop(&req, Some(&mut sink));
                // The reports of mappings removed before an error are written too, as the kernel
                // writes each one before it removes the next.
                let written = sink.finish();
                let n = r?;
                written?;
                n
            }
            None => self.unmap_loop(&req, None)?,
        };
        put_u64(&mut b, off::UNMAP_SIZE, unmapped);
        copy_to(user, arg, &b)
    }
}

impl Container {
    /// `vfio_iommu_type1_dirty_pages` (v6.18).
    fn ioctl_dirty(&self, arg: u64, user: &mut dyn UserMemory) -> Result<()> {
        if self.version() != Some(Version::V2) {
            return Err(Error::NotV2);
        }
        let mut b = [0u8; uapi::DIRTY_MINSZ as usize];
        copy_from(user, arg, &mut b)?;
        let argsz = get_u32(&b, off::ARGSZ);
        let flags = get_u32(&b, off::FLAGS);
        if argsz < uapi::DIRTY_MINSZ {
            return Err(Error::ArgszTooSmall {
                argsz,
                minsz: uapi::DIRTY_MINSZ,
            });
        }
        let mask = raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_START
            | raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
            | raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
        if flags & !mask != 0 {
            return Err(Error::UnknownFlags { flags });
        }
        if flags.count_ones() != 1 {
            return Err(Error::InvalidFlags { flags });
        }
        match flags {
            raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_START => self.dirty_start(),
            raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP => self.dirty_stop(),
            _ => {
                let minsz = uapi::DIRTY_MINSZ + uapi::DIRTY_GET_SIZE;
                if argsz < minsz {
                    return Err(Error::ArgszTooSmall { argsz, minsz });
                }
                let mut g = [0u8; uapi::DIRTY_GET_SIZE as usize];
                copy_from(user, arg + off::DIRTY_DATA as u64, &mut g)?;
                let iova = get_u64(&g, off::GET_IOVA);
                let size = get_u64(&g, off::GET_SIZE);
                let bitmap = BitmapArg::decode(&g[off::GET_BITMAP..]);
                if size == 0 {
                    return Err(Error::ZeroSize);
                }
                iova.checked_add(size - 1)
                    .ok_or(Error::Overflow { start: iova, size })?;
                bitmap.check(size)?;
                let words = bitmap_words(size, bitmap.pgsize);
                let mut sink = UserBitmap::new(user, bitmap.data, words, Delivery::EachReport);
                let r = self.dirty_bitmap_sink(Iova(iova), size, bitmap.pgsize, &mut sink);
                let written = sink.finish();
                r?;
                written
            }
        }
    }
}

/// The GET_INFO capability chain in the v6.6+ layout: MIGRATION, DMA_AVAIL (padded to 8),
/// IOVA_RANGE (if any ranges); `next` offsets count from the start of the info buffer.
#[must_use]
pub(crate) fn build_caps(info: &Info) -> Vec<u8> {
    let base = uapi::INFO_SIZE as usize;
    let mig = uapi::CAP_MIGRATION_SIZE as usize;
    let avail = (uapi::CAP_DMA_AVAIL_SIZE as usize).next_multiple_of(8);
    let iova = if info.iova_ranges.is_empty() {
        0
    } else {
        uapi::CAP_IOVA_RANGE_SIZE as usize + uapi::IOVA_RANGE_SIZE as usize * info.iova_ranges.len()
    };
    let mut caps = vec![0u8; mig + avail + iova];
    let header = |c: &mut [u8], at: usize, id: u32, next: usize| {
        put_u16(c, at + off::CAP_ID, u16::try_from(id).unwrap_or(u16::MAX));
        put_u16(c, at + off::CAP_VERSION, 1);
        put_u32(c, at + off::CAP_NEXT, u32_of(next));
    };
    header(
        &mut caps,
        0,
        raw::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
        base + mig,
    );
    put_u32(&mut caps, off::MIG_FLAGS, 0);
    put_u64(&mut caps, off::MIG_PGSIZE, info.migration_pgsize);
    put_u64(&mut caps, off::MIG_MAX, info.max_dirty_bitmap_size);
    let at = mig;
    let next = if iova == 0 { 0 } else { base + mig + avail };
    header(&mut caps, at, raw::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, next);
    put_u32(&mut caps, at + off::AVAIL, info.dma_avail);
    if iova > 0 {
        let at = mig + avail;
        header(&mut caps, at, raw::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0);
        put_u32(
            &mut caps,
            at + off::NR_IOVAS,
            u32_of(info.iova_ranges.len()),
        );
        for (k, &(s, e)) in info.iova_ranges.iter().enumerate() {
            let r = at + off::IOVA_RANGES + k * uapi::IOVA_RANGE_SIZE as usize;
            put_u64(&mut caps, r + off::RANGE_START, s);
            put_u64(&mut caps, r + off::RANGE_END, e);
        }
    }
    caps
}
