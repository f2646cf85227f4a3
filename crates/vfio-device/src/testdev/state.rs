//! The test device's migration payload (inside a stream frame, which carries the version,
//! identity and checksum): its registers, its writer (configuration, run bit, counts and
//! position in the deterministic sequence), the work deferred while quiesced, and the nonzero
//! pages of device memory (BAR2). Little-endian:
//!
//! | Field | Bytes |
//! |---|---|
//! | liveness, status, IRQ status | 4 each |
//! | DMA source, destination, count, command | 8 each |
//! | writer base, size | 8 each |
//! | writer rate | 4 |
//! | writer seed | 8 |
//! | writer run bit, DMA pending, IRQ pending | 1 each (0 or 1) |
//! | writer pages, faults | 8 each |
//! | writer position: writes done, generator state | 8 each |
//! | nonzero pages | 4, then per page: index 4 + 4096 bytes, indexes strictly increasing |

use super::writer::{Position, WriterConfig};
use super::{Regs, MEM_SIZE};
use crate::memfd::SharedMemory;
use crate::PAGE_SIZE;

const PAGE: usize = 4096;

/// Device memory pages of a payload: (page index, 4096 bytes).
pub(super) type Pages<'a> = Vec<(u32, &'a [u8])>;
const PAGES: u64 = MEM_SIZE / PAGE_SIZE;

/// Everything of [`Regs`] that migrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Snapshot {
    liveness: u32,
    status: u32,
    irq_status: u32,
    src: u64,
    dst: u64,
    count: u64,
    cmd: u64,
    writer: WriterConfig,
    writer_on: bool,
    dma_pending: bool,
    irq_pending: bool,
    writer_done: (u64, u64),
    writer_pos: Position,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(format!(
                "test device state truncated at {what} (byte {} of {})",
                self.at,
                self.b.len()
            ));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn flag(&mut self, what: &str) -> Result<bool, String> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("test device state: {what} is {v}, not 0 or 1")),
        }
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let s = self.take(8, what)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(s);
        Ok(u64::from_le_bytes(w))
    }
}

impl Snapshot {
    pub(super) fn of(r: &Regs) -> Self {
        Snapshot {
            liveness: r.liveness,
            status: r.status,
            irq_status: r.irq_status,
            src: r.src,
            dst: r.dst,
            count: r.count,
            cmd: r.cmd,
            writer: r.writer,
            writer_on: r.writer_on,
            dma_pending: r.dma_pending,
            irq_pending: r.irq_pending,
            writer_done: r.writer_done,
            writer_pos: r.writer_pos,
        }
    }

    pub(super) fn apply(&self, r: &mut Regs) {
        r.liveness = self.liveness;
        r.status = self.status;
        r.irq_status = self.irq_status;
        r.src = self.src;
        r.dst = self.dst;
        r.count = self.count;
        r.cmd = self.cmd;
        r.writer = self.writer;
        r.writer_on = self.writer_on;
        r.dma_pending = self.dma_pending;
        r.irq_pending = self.irq_pending;
        r.writer_done = self.writer_done;
        r.writer_pos = self.writer_pos;
    }

    pub(super) fn encode(&self, mem: Option<&SharedMemory>) -> Vec<u8> {
        let mut v = Vec::with_capacity(160);
        for x in [self.liveness, self.status, self.irq_status] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in [self.src, self.dst, self.count, self.cmd] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&self.writer.base.to_le_bytes());
        v.extend_from_slice(&self.writer.size.to_le_bytes());
        v.extend_from_slice(&self.writer.rate.to_le_bytes());
        v.extend_from_slice(&self.writer.seed.to_le_bytes());
        v.extend([
            u8::from(self.writer_on),
            u8::from(self.dma_pending),
            u8::from(self.irq_pending),
        ]);
        for x in [
            self.writer_done.0,
            self.writer_done.1,
            self.writer_pos.seq,
            self.writer_pos.state,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let count_at = v.len();
        v.extend_from_slice(&0u32.to_le_bytes());
        let mut n = 0u32;
        if let Some(mem) = mem {
            let mut page = vec![0u8; PAGE];
            for i in 0..PAGES {
                if !mem.read(i * PAGE_SIZE, &mut page) || page.iter().all(|&b| b == 0) {
                    continue;
                }
                // `i < PAGES` (4096) fits in u32.
                v.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_le_bytes());
                v.extend_from_slice(&page);
                n += 1;
            }
        }
        v[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
        v
    }

    /// Parses a whole payload (nothing is applied).
    pub(super) fn decode(b: &[u8]) -> Result<(Snapshot, Pages<'_>), String> {
        let mut r = Reader { b, at: 0 };
        let snap = Snapshot {
            liveness: r.u32("liveness")?,
            status: r.u32("status")?,
            irq_status: r.u32("IRQ status")?,
            src: r.u64("DMA source")?,
            dst: r.u64("DMA destination")?,
            count: r.u64("DMA count")?,
            cmd: r.u64("DMA command")?,
            writer: WriterConfig {
                base: r.u64("writer base")?,
                size: r.u64("writer size")?,
                rate: r.u32("writer rate")?,
                seed: r.u64("writer seed")?,
            },
            writer_on: r.flag("writer run bit")?,
            dma_pending: r.flag("DMA pending")?,
            irq_pending: r.flag("IRQ pending")?,
            writer_done: (r.u64("writer pages")?, r.u64("writer faults")?),
            writer_pos: Position {
                seq: r.u64("writer position")?,
                state: r.u64("writer state")?,
            },
        };
        let n = r.u32("page count")?;
        if u64::from(n) > PAGES {
            return Err(format!(
                "test device state: {n} device memory pages, more than the {PAGES} of BAR2"
            ));
        }
        let mut pages = Vec::new();
        let mut last: Option<u32> = None;
        for _ in 0..n {
            let index = r.u32("page index")?;
            if u64::from(index) >= PAGES || last.is_some_and(|l| index <= l) {
                return Err(format!(
                    "test device state: device memory page index {index} out of range or out of order"
                ));
            }
            last = Some(index);
            pages.push((index, r.take(PAGE, "page data")?));
        }
        if r.at != b.len() {
            return Err(format!(
                "test device state: {} trailing byte(s)",
                b.len() - r.at
            ));
        }
        Ok((snap, pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_every_truncation_fails() {
        let regs = Regs {
            liveness: 7,
            writer_on: true,
            writer_pos: Position { seq: 9, state: 11 },
            ..Regs::default()
        };
        let b = Snapshot::of(&regs).encode(None);
        let (s, pages) = Snapshot::decode(&b).unwrap();
        assert_eq!(s, Snapshot::of(&regs));
        assert!(pages.is_empty());
        for cut in 0..b.len() {
            assert!(Snapshot::decode(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = b.clone();
        bad[4 * 3 + 8 * 6 + 4 + 8] = 2; // writer run bit
        assert!(Snapshot::decode(&bad).unwrap_err().contains("run bit"));
    }
}
