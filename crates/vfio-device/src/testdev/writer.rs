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
            let mut page = vec![0u8; PAGE_BYTES];
            let mut state = at.state;
            let t0 = Instant::now();
            let mut seq = at.seq;
            while !s.load(Ordering::Acquire) {
                if cfg.rate > 0 {
                    let due = (seq - at.seq).saturating_mul(1_000_000_000) / u64::from(cfg.rate);
                    let now = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    if now < due {
                        std::thread::sleep(Duration::from_nanos((due - now).min(1_000_000)));
                        continue;
                    }
                }
                seq += 1;
                state = xorshift(state);
                let iova = cfg.base + (state % npages) * PAGE_SIZE;
                page.fill(0);
                page[..8].copy_from_slice(&seq.to_le_bytes());
                page[8..16].copy_from_slice(&cfg.seed.to_le_bytes());
                match dma.write(Iova(iova), &page) {
                    Ok(()) => p.fetch_add(1, Ordering::AcqRel),
                    Err(_) => f.fetch_add(1, Ordering::AcqRel),
                };
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
