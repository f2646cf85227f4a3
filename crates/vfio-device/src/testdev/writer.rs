//! The autonomous writer: whole-page DMA writes at deterministic pseudo-random pages of an
//! IOVA window, at a configured rate, on a thread with every signal blocked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_pgtable::Iova;

use crate::dma::Dma;
use crate::PAGE_SIZE;

const PAGE_BYTES: usize = 4096;
const _: () = assert!(PAGE_BYTES as u64 == PAGE_SIZE);

/// Pages written per batch ([`Dma::write_batch`]: one device transaction, one vectored store
/// in an IOMMU domain). At a configured rate a batch holds only the writes already due.
const BATCH: usize = 64;

/// Writer parameters (BAR0 0xa0–0xb8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WriterConfig {
    pub(crate) base: u64,
    pub(crate) size: u64,
    pub(crate) rate: u32,
    pub(crate) seed: u64,
}

/// xorshift64 (Marsaglia); a zero seed is replaced by a fixed odd constant.
pub(crate) fn xorshift(mut x: u64) -> u64 {
    if x == 0 {
        x = 0x9e37_79b9_7f4a_7c15;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Where the writer is in its sequence: writes done (`seq`) and the generator state after
/// the last one. A writer started at a position continues the sequence exactly (write
/// `seq + 1` goes to the page the uninterrupted writer would have written next).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) seq: u64,
    pub(crate) state: u64,
}

impl Position {
    /// The start of the sequence for `seed`.
    pub(crate) fn start(seed: u64) -> Self {
        Position {
            seq: 0,
            state: seed,
        }
    }
}

/// The page index of write `seq` (`seq` from 1) is `state_seq % pages`.
#[derive(Debug)]
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    pages: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
    /// (seq, state) after the last write.
    pos: Arc<std::sync::Mutex<Position>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Starts writing at `at`; `Err` for an empty or unaligned window or if the thread cannot
    /// start.
    pub(crate) fn start(cfg: WriterConfig, dma: Arc<Dma>, at: Position) -> Result<Writer, ()> {
        let npages = cfg.size / PAGE_SIZE;
        if npages == 0 || cfg.base % PAGE_SIZE != 0 || cfg.base.checked_add(cfg.size).is_none() {
            return Err(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pages = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(AtomicU64::new(0));
        let pos = Arc::new(std::sync::Mutex::new(at));
        let (s, p, f, ps) = (stop.clone(), pages.clone(), faults.clone(), pos.clone());
        let thread = crate::thread::spawn("vfio-testdev-writer", move || {
            // One zeroed page per write of a batch; only the 16-byte headers change.
            let mut pages = vec![0u8; BATCH * PAGE_BYTES];
            let mut iovas = [0u64; BATCH];
            let mut state = at.state;
            let t0 = Instant::now();
            let mut seq = at.seq;
            while !s.load(Ordering::Acquire) {
                let mut n = BATCH;
                if cfg.rate > 0 {
                    // Write k (from 0) is due at k / rate seconds: those due by now, less
                    // those written.
                    let now = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let due = u128::from(now) * u128::from(cfg.rate) / 1_000_000_000 + 1;
                    let due = u64::try_from(due).unwrap_or(u64::MAX);
                    let left = due.saturating_sub(seq - at.seq);
                    if left == 0 {
                        let next =
                            (seq - at.seq).saturating_mul(1_000_000_000) / u64::from(cfg.rate);
                        std::thread::sleep(Duration::from_nanos(
                            next.saturating_sub(now).clamp(1, 1_000_000),
                        ));
                        continue;
                    }
                    n = usize::try_from(left).unwrap_or(BATCH).min(BATCH);
                }
                for (iova, page) in iovas
                    .iter_mut()
                    .zip(pages.chunks_exact_mut(PAGE_BYTES))
                    .take(n)
                {
                    seq += 1;
                    state = xorshift(state);
                    *iova = cfg.base + (state % npages) * PAGE_SIZE;
                    page[..8].copy_from_slice(&seq.to_le_bytes());
                    page[8..16].copy_from_slice(&cfg.seed.to_le_bytes());
                }
                let writes: Vec<(Iova, &[u8])> = iovas
                    .iter()
                    .zip(pages.chunks_exact(PAGE_BYTES))
                    .take(n)
                    .map(|(&iova, page)| (Iova(iova), page))
                    .collect();
                let done = dma.write_batch(&writes);
                let ok = done.iter().filter(|r| r.is_ok()).count() as u64;
                p.fetch_add(ok, Ordering::AcqRel);
                f.fetch_add(n as u64 - ok, Ordering::AcqRel);
                *ps.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Position { seq, state };
            }
        })
        .map_err(|_| ())?;
        Ok(Writer {
            stop,
            pages,
            faults,
            pos,
            thread: Some(thread),
        })
    }

    /// The position after the last write (final once stopped).
    pub(crate) fn position(&self) -> Position {
        *self
            .pos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops and joins the thread; returns the final (pages written, faults) and position.
    pub(crate) fn stop(mut self) -> ((u64, u64), Position) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.counts(), self.position())
    }

    /// (pages written, faults).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.pages.load(Ordering::Acquire),
            self.faults.load(Ordering::Acquire),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic_and_never_sticks_at_zero() {
        assert_eq!(xorshift(1), xorshift(1));
        assert_ne!(xorshift(0), 0);
        assert_ne!(xorshift(1), 1);
    }
}
