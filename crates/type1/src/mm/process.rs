//! [`ProcessMemory`]: this process's memory as an [`AddressSpace`]. A range must be mapped (and
//! writable for a writable pin) by the kernel's rules for long-term pins (the `gup` module:
//! `check_vma_flags` in mm/gup.c, v6.18, and vfio's `VM_PFNMAP` fallback), asked of the kernel at
//! every pin (`PROCMAP_QUERY` on Linux >= 6.11, else `/proc/self/maps`), else `EFAULT`; pages can
//! optionally be `mlock`ed. The "physical address" of a page is its host virtual address,
//! stable for the life of the mapping, so a simulated device writing to it writes the real
//! memory. Ranges are `[start, end)`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use io_pgtable::PhysAddr;

use super::{gup, procmap, Access, AddressSpace, PinnedRun};

/// Whether [`ProcessMemory`] really locks pinned pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MlockPolicy {
    /// Only check the mapping (the default: no privileges needed).
    #[default]
    CheckOnly,
    /// Also `mlock` every pinned run, and `munlock` it on release.
    Lock,
}

/// This process's memory, pinned by the kernel's rules for long-term pins (see the `gup`
/// module: `check_vma_flags` in mm/gup.c and vfio's `VM_PFNMAP` fallback), asked of the kernel
/// at every pin (`PROCMAP_QUERY` on Linux ≥ 6.11, one area at a time; else the text of
/// `/proc/self/maps`): nothing about the mappings is cached.
#[derive(Debug, Default)]
pub struct ProcessMemory {
    mlock: MlockPolicy,
    /// Pages this address space `mlock`ed and has not `munlock`ed ([`MlockPolicy::Lock`]).
    mlocked: AtomicU64,
    /// Ranges the owner declared PFNMAP-like: `start → end`, disjoint and not touching.
    reserved: Mutex<BTreeMap<u64, u64>>,
}

/// The pages of `[at, ..)` and whether they are marked reserved: `(reserved, end of that
/// state)`, never past `limit`.
fn mark_at(marks: &BTreeMap<u64, u64>, at: u64, limit: u64) -> (bool, u64) {
    if let Some((_, &end)) = marks.range(..=at).next_back() {
        if at < end {
            return (true, end.min(limit));
        }
    }
    let next = marks.range(at..).next().map_or(limit, |(&s, _)| s);
    (false, next.min(limit))
}

impl ProcessMemory {
    /// This process's memory with the given mlock policy.
    #[must_use]
    pub fn new(mlock: MlockPolicy) -> Self {
        ProcessMemory {
            mlock,
            ..ProcessMemory::default()
        }
    }

    fn marks(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        self.reserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Declares `[start, start + len)` a PFNMAP-like area (e.g. a device BAR backed by a memfd):
    /// pins there give reserved pages, never pinned, `mlock`ed nor charged, and refused to
    /// `vfio_pin_pages` (as a `VM_PFNMAP` area is in the kernel). The pages must still be
    /// mapped with the protection a pin asks for. Overlapping or adjacent marks merge; a zero
    /// or wrapping length does nothing. Pins taken before the call keep their kind.
    pub fn mark_reserved(&self, start: u64, len: u64) {
        let Some(mut end) = start.checked_add(len).filter(|_| len > 0) else {
            return;
        };
        let mut start = start;
        let mut m = self.marks();
        let touching: Vec<(u64, u64)> = m
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            m.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        m.insert(start, end);
    }

    /// Removes `[start, start + len)` from the reserved marks (parts outside any mark are
    /// ignored).
    pub fn unmark_reserved(&self, start: u64, len: u64) {
        let Some(end) = start.checked_add(len).filter(|_| len > 0) else {
            return;
        };
        let mut m = self.marks();
        let hit: Vec<(u64, u64)> = m
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            m.remove(&s);
            if s < start {
                m.insert(s, start);
            }
            if e > end {
                m.insert(end, e);
            }
        }
    }

    /// The marked ranges, `[start, end)`, in order.
    #[must_use]
    pub fn reserved_ranges(&self) -> Vec<(u64, u64)> {
        self.marks().iter().map(|(&s, &e)| (s, e)).collect()
    }

    /// The longest run at `vaddr` whose areas all give the same verdict (pinned or reserved):
    /// `(end of the run, verdict)`, `None` if `vaddr` itself cannot be pinned. Areas are asked
    /// of the kernel one by one (`PROCMAP_QUERY`), or read from the maps text where that ioctl
    /// is missing.
    fn scan(&self, vaddr: u64, want_end: u64, access: Access) -> Option<(u64, gup::Verdict)> {
        let marks = self.marks().clone();
        let mut run = Run {
            at: vaddr,
            kind: None,
        };
        if let Some(fd) = procmap::CACHE.fd() {
            let mut name = procmap::NameBuf::new();
            loop {
                if run.at >= want_end {
                    return run.result();
                }
                match procmap::query_fd(fd, run.at, &mut name) {
                    procmap::Answer::Area(line) => {
                        if !run.extend(&marks, &line, want_end, access) {
                            return run.result();
                        }
                    }
                    procmap::Answer::Unmapped => return run.result(),
                    // Fall back to the text, from where the queries got to.
                    procmap::Answer::Unsupported => break,
                }
            }
        }
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        for line in maps.lines().filter_map(gup::parse_maps_line) {
            if run.at >= want_end || line.start > run.at {
                break;
            }
            if line.end <= run.at {
                continue;
            }
            if !run.extend(&marks, &line, want_end, access) {
                break;
            }
        }
        run.result()
    }
}

/// A run being scanned: `[start, at)` so far, all with verdict `kind`.
struct Run {
    at: u64,
    kind: Option<gup::Verdict>,
}

impl Run {
    /// Extends the run over `line` (which contains `at`); false when the run ends inside it.
    fn extend(
        &mut self,
        marks: &BTreeMap<u64, u64>,
        line: &gup::MapsLine<'_>,
        want_end: u64,
        access: Access,
    ) -> bool {
        let area_end = line.end.min(want_end);
        let mut plain = None;
        while self.at < area_end {
            let (marked, piece_end) = mark_at(marks, self.at, area_end);
            let v = if marked {
                gup::pfnmap_verdict(line, access)
            } else {
                *plain.get_or_insert_with(|| gup::verdict(line, access, &gup::LiveProbe))
            };
            if v == gup::Verdict::Fault || self.kind.is_some_and(|k| k != v) {
                return false;
            }
            self.kind = Some(v);
            self.at = piece_end;
        }
        true
    }

    fn result(&self) -> Option<(u64, gup::Verdict)> {
        self.kind.map(|k| (self.at, k))
    }
}

impl AddressSpace for ProcessMemory {
    fn pin_run(&self, vaddr: u64, max_pages: u64, access: Access) -> Result<PinnedRun, u64> {
        let page = self.page_size();
        let want_end = vaddr.saturating_add(max_pages.saturating_mul(page));
        // Adjacent areas continue the run: it is virtually (hence "physically") contiguous.
        let Some((at, kind)) = self.scan(vaddr, want_end, access) else {
            return Err(vaddr);
        };
        let npages = (at - vaddr) / page;
        if npages == 0 {
            return Err(vaddr);
        }
        let reserved = kind == gup::Verdict::Reserved;
        if self.mlock == MlockPolicy::Lock && !reserved {
            let len = usize::try_from(npages * page).map_err(|_| vaddr)?;
            // SAFETY: mlock only changes residency of pages that the check above found mapped;
            // it does not access memory through the pointer.
            let r = unsafe { libc::mlock(vaddr as *const libc::c_void, len) };
            if r != 0 {
                return Err(vaddr);
            }
            self.mlocked.fetch_add(npages, Ordering::SeqCst);
        }
        Ok(PinnedRun {
            pa: PhysAddr(vaddr),
            npages,
            reserved,
        })
    }

    fn os_locked_pages(&self) -> u64 {
        self.mlocked.load(Ordering::SeqCst)
    }

    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), u64> {
        crate::usercopy::copy(
            vaddr,
            buf.as_mut_ptr(),
            buf.len(),
            crate::usercopy::Direction::Read,
        )
    }

    fn write(&self, vaddr: u64, data: &[u8]) -> Result<(), u64> {
        // process_vm_writev honours page protections: writing read-only memory fails (EFAULT).
        crate::usercopy::copy(
            vaddr,
            data.as_ptr().cast_mut(),
            data.len(),
            crate::usercopy::Direction::Write,
        )
    }

    fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<(), u64> {
        self.read(pa, buf)
    }

    fn write_phys(&self, pa: u64, data: &[u8]) -> Result<(), u64> {
        self.write(pa, data)
    }

    fn write_phys_vectored(&self, writes: &[(u64, &[u8])]) -> Result<(), (usize, u64)> {
        crate::usercopy::copy_to_process_vectored(writes)
    }

    fn unpin_run(&self, run: &PinnedRun) {
        if self.mlock == MlockPolicy::Lock && !run.reserved {
            if let Ok(len) = usize::try_from(run.npages * self.page_size()) {
                // SAFETY: munlock does not access memory; unlocking an unmapped range only fails.
                unsafe { libc::munlock(run.pa.raw() as *const libc::c_void, len) };
            }
            let _ = self
                .mlocked
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(run.npages))
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_memory_copies_and_reports_faults() {
        let pm = ProcessMemory::default();
        let mut v = vec![0u8; 64];
        let addr = v.as_mut_ptr() as u64;
        pm.write(addr + 8, b"hello").unwrap();
        let mut b = [0u8; 5];
        pm.read(addr + 8, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(v[8], b'h');
        assert_eq!(pm.read(8, &mut b), Err(8));
        let text = process_memory_copies_and_reports_faults as *const () as u64;
        assert!(pm.write(text, b"x").is_err(), "text is read-only");
    }

    #[test]
    fn process_memory_checks_mapping_and_write_permission() {
        let pm = ProcessMemory::default();
        let v = vec![0u8; 3 * 4096];
        let addr = (v.as_ptr() as u64 + 4095) & !4095;
        let r = pm.pin_run(addr, 1, Access::Write).unwrap();
        assert_eq!(r.pa.raw(), addr);
        // Page 0 is never mapped.
        assert_eq!(pm.pin_run(0, 1, Access::Read), Err(0));
        // Text is mapped read-only/executable: a write pin faults.
        let text = process_memory_checks_mapping_and_write_permission as *const () as u64 & !4095;
        assert_eq!(pm.pin_run(text, 1, Access::Write), Err(text));
        pm.pin_run(text, 1, Access::Read).unwrap();
    }

    mod reserved_marks {
        use super::*;

        #[test]
        fn overlapping_and_adjacent_marks_merge() {
            let pm = ProcessMemory::default();
            pm.mark_reserved(0x1000, 0x1000);
            pm.mark_reserved(0x3000, 0x1000);
            pm.mark_reserved(0x2000, 0x1000);
            pm.mark_reserved(0x8000, 0x2000);
            pm.mark_reserved(0x9000, 0x2000);
            assert_eq!(
                pm.reserved_ranges(),
                vec![(0x1000, 0x4000), (0x8000, 0xb000)]
            );
        }

        #[test]
        fn unmark_splits_a_mark() {
            let pm = ProcessMemory::default();
            pm.mark_reserved(0x1000, 0x4000);
            pm.unmark_reserved(0x2000, 0x1000);
            assert_eq!(
                pm.reserved_ranges(),
                vec![(0x1000, 0x2000), (0x3000, 0x5000)]
            );
            pm.unmark_reserved(0, 0x10000);
            assert!(pm.reserved_ranges().is_empty());
        }

        #[test]
        fn zero_or_wrapping_lengths_do_nothing() {
            let pm = ProcessMemory::default();
            pm.mark_reserved(0x1000, 0);
            pm.mark_reserved(u64::MAX - 0xfff, 0x2000);
            assert!(pm.reserved_ranges().is_empty());
        }

        #[test]
        fn a_marked_range_pins_as_reserved_and_splits_runs() {
            // vaddr_get_pfns: a VM_PFNMAP page is reserved; a run never mixes reserved and
            // ordinary pages (vfio_pin_pages_remote stops where is_invalid_reserved_pfn changes).
            let pm = ProcessMemory::default();
            let v = vec![0u8; 5 * 4096];
            let addr = (v.as_ptr() as u64 + 4095) & !4095;
            pm.mark_reserved(addr + 4096, 2 * 4096);
            let r = pm.pin_run(addr, 4, Access::Write).unwrap();
            assert_eq!((r.npages, r.reserved), (1, false));
            let r = pm.pin_run(addr + 4096, 3, Access::Write).unwrap();
            assert_eq!((r.pa.raw(), r.npages, r.reserved), (addr + 4096, 2, true));
            pm.unmark_reserved(addr, 4 * 4096);
            let r = pm.pin_run(addr, 4, Access::Write).unwrap();
            assert_eq!((r.npages, r.reserved), (4, false));
        }
    }
}
