//! A spinning lock for the library's own tables, safe to hand over across `fork`.
//!
//! A sleeping mutex (std's, parking_lot's) records its waiters; if the process forks while one
//! thread holds it and another waits, the child inherits a lock word that says "someone is
//! waiting" for a thread that does not exist there, and unlocking it in the child does not
//! make it usable. This lock is one flag: the `pthread_atfork` prepare handler takes it, and
//! both processes release it with a plain store. It is held only for a table lookup or update
//! (never across a system call of the host program or the engine), always with every signal
//! blocked, so spinning (then yielding) costs nothing measurable.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// A spinning lock around `T`.
#[derive(Debug, Default)]
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by `locked` (acquire on lock, release on unlock).
unsafe impl<T: Send> Sync for SpinLock<T> {}

/// The lock held; released when dropped.
#[derive(Debug)]
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    pub(crate) const fn new(data: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            data: UnsafeCell::new(data),
        }
    }

    /// Takes the lock.
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if spins < 100 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        SpinGuard { lock: self }
    }

    /// Takes the lock and keeps it (the `fork` prepare handler).
    pub(crate) fn lock_forever(&self) {
        std::mem::forget(self.lock());
    }

    /// Releases a lock taken by [`SpinLock::lock_forever`].
    ///
    /// # Safety
    /// The caller holds the lock through `lock_forever` (or is the only thread of a forked
    /// child whose parent held it so).
    pub(crate) unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// The data, for a caller that holds the lock through `lock_forever`.
    ///
    /// # Safety
    /// As for [`SpinLock::force_unlock`], and no other reference to the data exists.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn data_mut(&self) -> &mut T {
        // SAFETY: the caller holds the lock exclusively (see above).
        unsafe { &mut *self.data.get() }
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock exclusively.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_lock_serialises_updates_and_a_forced_unlock_frees_it() {
        let l = Arc::new(SpinLock::new(0u64));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*l.lock(), 40_000);
        l.lock_forever();
        // SAFETY: held through lock_forever just above.
        unsafe { l.force_unlock() };
        assert_eq!(*l.lock(), 40_000);
    }
}
