//! Lock-free sets of fd numbers: the membership test every interposer makes before anything
//! else, so calls on fds that are not ours (a VMM's `KVM_RUN`, a pipe's `read`) cost one atomic
//! load and never take a lock.
//!
//! fds below [`DIRECT`] live in a static bitmap of atomic words. Larger fds (rare: a program
//! that raised RLIMIT_NOFILE and holds tens of thousands of files) go to a locked set, consulted
//! only while it is non-empty (an atomic count says so).
//!
//! Concurrency: `insert`/`remove` are atomic per fd; a lookup racing with an insert of the same
//! fd number may miss it, which cannot happen for a real program (it has no fd number to use
//! before `open` returns it). The locked set is touched with every signal blocked (callers hold
//! [`crate::sys::SignalsBlocked`]) and is never held across `fork` by the caller's thread.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// fds below this are in the bitmap.
pub(crate) const DIRECT: usize = 1 << 16;
const WORDS: usize = DIRECT / 64;

/// A set of fd numbers.
#[derive(Debug)]
pub(crate) struct FdSet {
    words: [AtomicU64; WORDS],
    high: Mutex<BTreeSet<i32>>,
    high_count: AtomicUsize,
}

impl FdSet {
    /// The empty set.
    pub(crate) const fn new() -> Self {
        FdSet {
            words: [const { AtomicU64::new(0) }; WORDS],
            high: Mutex::new(BTreeSet::new()),
            high_count: AtomicUsize::new(0),
        }
    }

    fn slot(fd: i32) -> Option<(usize, u64)> {
        let i = usize::try_from(fd).ok()?;
        (i < DIRECT).then_some((i / 64, 1u64 << (i % 64)))
    }

    fn high(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.high
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True if `fd` is in the set.
    #[inline]
    pub(crate) fn contains(&self, fd: i32) -> bool {
        match Self::slot(fd) {
            Some((w, bit)) => self.words[w].load(Ordering::Acquire) & bit != 0,
            None => {
                fd >= 0 && self.high_count.load(Ordering::Acquire) != 0 && self.high().contains(&fd)
            }
        }
    }

    /// Adds `fd`.
    pub(crate) fn insert(&self, fd: i32) {
        match Self::slot(fd) {
            Some((w, bit)) => {
                self.words[w].fetch_or(bit, Ordering::AcqRel);
            }
            None if fd >= 0 && self.high().insert(fd) => {
                self.high_count.fetch_add(1, Ordering::AcqRel);
            }
            None => {}
        }
    }

    /// Removes `fd`; returns whether it was there.
    pub(crate) fn remove(&self, fd: i32) -> bool {
        match Self::slot(fd) {
            Some((w, bit)) => self.words[w].fetch_and(!bit, Ordering::AcqRel) & bit != 0,
            None => {
                let was = fd >= 0
                    && self.high_count.load(Ordering::Acquire) != 0
                    && self.high().remove(&fd);
                if was {
                    self.high_count.fetch_sub(1, Ordering::AcqRel);
                }
                was
            }
        }
    }

    /// The members in `[first, last]`, ascending.
    pub(crate) fn in_range(&self, first: u32, last: u32) -> Vec<i32> {
        let mut out = Vec::new();
        let lo = usize::try_from(first).unwrap_or(usize::MAX);
        let hi = usize::try_from(last).unwrap_or(usize::MAX).min(DIRECT - 1);
        if lo <= hi {
            for w in lo / 64..=hi / 64 {
                let mut bits = self.words[w].load(Ordering::Acquire);
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let fd = w * 64 + b;
                    if (lo..=hi).contains(&fd) {
                        out.extend(i32::try_from(fd).ok());
                    }
                }
            }
        }
        if self.high_count.load(Ordering::Acquire) != 0 {
            out.extend(
                self.high()
                    .iter()
                    .copied()
                    .filter(|&fd| u32::try_from(fd).is_ok_and(|f| f >= first && f <= last)),
            );
        }
        out
    }

    /// Moves every member into `other` and empties this set (after `fork`, in the child, whose
    /// only thread is the caller: no lock can be held).
    pub(crate) fn move_all_into(&self, other: &FdSet) {
        for (w, o) in self.words.iter().zip(other.words.iter()) {
            let bits = w.swap(0, Ordering::AcqRel);
            o.fetch_or(bits, Ordering::AcqRel);
        }
        if self.high_count.swap(0, Ordering::AcqRel) != 0 {
            if let Ok(mut h) = self.high.try_lock() {
                for fd in std::mem::take(&mut *h) {
                    other.insert(fd);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_low_and_high_fds() {
        let s = FdSet::new();
        for fd in [0, 63, 64, 65_535, 65_536, 1 << 20] {
            assert!(!s.contains(fd));
            s.insert(fd);
            assert!(s.contains(fd));
        }
        assert!(!s.contains(-1) && !s.contains(1));
        assert_eq!(s.in_range(60, 70_000), vec![63, 64, 65_535, 65_536]);
        assert!(s.remove(64) && !s.remove(64));
        assert!(s.remove(1 << 20) && !s.contains(1 << 20));
        let t = FdSet::new();
        s.move_all_into(&t);
        assert!(!s.contains(63) && t.contains(63) && t.contains(65_536));
    }
}
