//! The flush queue of lazy invalidation (`drivers/iommu/dma-iommu.c`, v6.18: `queue_iova`,
//! `fq_ring_free_locked`, `fq_flush_timeout`).
//!
//! In lazy mode an unmap clears PTEs at once but defers the leaf IOTLB invalidation: the range
//! and a *token* standing for whatever must not be reused yet (pinned pages, an IOVA) go on a
//! ring. Tokens come back only from a flush that *started* after they were queued, via the
//! kernel's start/finish counter protocol, so memory is never handed back while a stale
//! translation could still reach it. A flush happens when the ring is full (capacity
//! `size - 1`, as the kernel's ring), when the timer set at the first enqueue expires, or on
//! demand. Time comes from a [`Clock`], so tests drive it by hand and never sleep.
//!
//! The kernel keeps one ring per CPU; the domain here has one ring, because every operation on
//! it is already serialised by its owner. The exposure bound is the same: at most `size - 1`
//! unmaps or `timeout` after the first of them (once the owner polls).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::addr::Iova;
use crate::error::Error;

/// A monotonic time source.
pub trait Clock: Send + Sync + Debug {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Flush-queue parameters (`IOVA_DEFAULT_FQ_SIZE`, `IOVA_DEFAULT_FQ_TIMEOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushQueueConfig {
    /// Ring size, a power of two ≥ 2; it holds `size - 1` entries.
    pub size: usize,
    /// Time after the first queued entry at which the queue is flushed.
    pub timeout: Duration,
}

impl Default for FlushQueueConfig {
    fn default() -> Self {
        FlushQueueConfig {
            size: 256,
            timeout: Duration::from_millis(10),
        }
    }
}

#[derive(Debug)]
struct Entry<T> {
    iova: Iova,
    len: u64,
    counter: u64,
    token: T,
}

/// Deferred invalidations and the tokens waiting on them.
#[derive(Debug)]
pub struct FlushQueue<T> {
    cfg: FlushQueueConfig,
    ring: VecDeque<Entry<T>>,
    start_cnt: u64,
    finish_cnt: u64,
    deadline: Option<Duration>,
}

impl<T> FlushQueue<T> {
    /// An empty queue.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `size` is not a power of two ≥ 2.
    pub fn new(cfg: FlushQueueConfig) -> Result<Self, Error> {
        if cfg.size < 2 || !cfg.size.is_power_of_two() {
            return Err(Error::InvalidConfig {
                reason: "flush queue size must be a power of two >= 2",
            });
        }
        Ok(FlushQueue {
            cfg,
            ring: VecDeque::with_capacity(cfg.size - 1),
            start_cnt: 0,
            finish_cnt: 0,
            deadline: None,
        })
    }

    /// Entries the ring holds at most.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.cfg.size - 1
    }

    /// Entries waiting for a flush.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True if nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Flushes performed so far.
    #[must_use]
    pub fn flushes(&self) -> u64 {
        self.finish_cnt
    }

    /// When the armed timer fires, if armed.
    #[must_use]
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The ranges whose invalidation is still pending.
    pub fn pending(&self) -> impl Iterator<Item = (Iova, u64)> + '_ {
        self.ring.iter().map(|e| (e.iova, e.len))
    }

    fn flush(&mut self, flush_all: &dyn Fn()) {
        self.start_cnt += 1;
        flush_all();
        self.finish_cnt += 1;
    }

    /// `fq_ring_free_locked`: hands back every token a finished flush covers.
    fn reap(&mut self, out: &mut Vec<T>) {
        while let Some(e) = self.ring.front() {
            if e.counter >= self.finish_cnt {
                break;
            }
            if let Some(e) = self.ring.pop_front() {
                out.push(e.token);
            }
        }
    }

    /// `queue_iova`: defers the invalidation of `[iova, iova + len)` and the release of `token`.
    /// Returns the tokens released on the way (a full ring forces a synchronous `flush_all`).
    pub fn queue(
        &mut self,
        now: Duration,
        iova: Iova,
        len: u64,
        token: T,
        flush_all: &dyn Fn(),
    ) -> Vec<T> {
        let mut out = Vec::new();
        self.reap(&mut out);
        if self.ring.len() >= self.capacity() {
            self.flush(flush_all);
            self.reap(&mut out);
        }
        self.ring.push_back(Entry {
            iova,
            len,
            counter: self.start_cnt,
            token,
        });
        if self.deadline.is_none() {
            self.deadline = Some(now.saturating_add(self.cfg.timeout));
        }
        out
    }

    /// `fq_flush_timeout`: if the timer has expired at `now`, flushes and releases everything.
    pub fn poll(&mut self, now: Duration, flush_all: &dyn Fn()) -> Vec<T> {
        match self.deadline {
            Some(d) if now >= d => self.flush_now(flush_all),
            _ => Vec::new(),
        }
    }

    /// Flushes at once and releases everything queued.
    pub fn flush_now(&mut self, flush_all: &dyn Fn()) -> Vec<T> {
        self.deadline = None;
        let mut out = Vec::new();
        if !self.ring.is_empty() {
            self.flush(flush_all);
            self.reap(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn full_ring_forces_a_flush_and_releases_only_covered_entries() {
        let mut q = FlushQueue::new(FlushQueueConfig {
            size: 4,
            timeout: Duration::from_millis(10),
        })
        .unwrap();
        let flushes = Cell::new(0);
        let f = || flushes.set(flushes.get() + 1);
        let t0 = Duration::ZERO;
        for i in 0..3 {
            assert!(q.queue(t0, Iova(i), 1, i, &f).is_empty());
        }
        assert_eq!(q.len(), 3, "capacity is size - 1");
        let released = q.queue(t0, Iova(3), 1, 3, &f);
        assert_eq!(released, vec![0, 1, 2]);
        assert_eq!(flushes.get(), 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn timer_flushes_after_timeout_only() {
        let mut q = FlushQueue::new(FlushQueueConfig::default()).unwrap();
        let f = || {};
        q.queue(Duration::from_millis(5), Iova(0), 1, 'a', &f);
        assert!(q.poll(Duration::from_millis(14), &f).is_empty());
        assert_eq!(q.poll(Duration::from_millis(15), &f), vec!['a']);
        assert_eq!(q.deadline(), None);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for size in [0, 1, 3, 100] {
            let cfg = FlushQueueConfig {
                size,
                ..FlushQueueConfig::default()
            };
            FlushQueue::<()>::new(cfg).unwrap_err();
        }
    }
}
