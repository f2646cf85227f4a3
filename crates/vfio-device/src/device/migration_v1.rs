//! The device's side of the deprecated v1 migration region: `pread`/`pwrite` of its header
//! fields and data section (layout and state bits in [`crate::migration::v1`]).

use crate::error::Result;
use crate::migration::v1::{
    bad, bits_of, saving, state_of, DATA_OFFSET, DATA_SIZE, HEADER, OFFSET, PENDING, REGION_SIZE,
    RESERVED, SIZE, STATE,
};
use crate::migration::{Direction, MigState};

use super::Device;

impl Device {
    fn v1_range(pos: u64, len: usize) -> Result<()> {
        match pos.checked_add(len as u64) {
            Some(end) if end <= REGION_SIZE => {}
            _ => return Err(bad("v1 region access past the region")),
        }
        if pos < DATA_OFFSET && (pos >= HEADER || pos + len as u64 > HEADER) {
            return Err(bad(
                "v1 region access outside the header and the data section",
            ));
        }
        Ok(())
    }

    /// `pread` of the v1 region at `pos`.
    pub(crate) fn v1_read(&self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        Self::v1_range(pos, buf.len())?;
        let mut core = self.mig();
        if pos >= DATA_OFFSET {
            let at = usize::try_from(pos - DATA_OFFSET).unwrap_or(0);
            let area = core.v1.area();
            buf.copy_from_slice(&area[at..at + buf.len()]);
            return Ok(buf.len());
        }
        let v: u64 = match (pos, buf.len()) {
            (STATE, 4) => u64::from(bits_of(core.state)),
            (RESERVED, 4) => 0,
            (PENDING, 8) => {
                // Reading pending_bytes acknowledges an outstanding chunk.
                core.v1.out = None;
                match &core.transfer {
                    Some(t) if saving(core.state) && t.direction() == Direction::Save => {
                        t.pending()
                    }
                    _ => 0,
                }
            }
            (OFFSET, 8) => {
                if saving(core.state) && core.v1.out.is_none() {
                    let t = core
                        .transfer
                        .clone()
                        .filter(|t| t.direction() == Direction::Save);
                    let n = match t {
                        Some(t) => t.read(core.v1.area()).unwrap_or(0),
                        None => 0,
                    };
                    core.v1.out = Some(n);
                }
                DATA_OFFSET
            }
            (SIZE, 8) => core.v1.out.unwrap_or(0) as u64,
            _ => return Err(bad("v1 header access must be one whole field")),
        };
        let b = v.to_le_bytes();
        let n = buf.len();
        buf.copy_from_slice(&b[..n]);
        Ok(n)
    }

    /// `pwrite` of the v1 region at `pos`.
    pub(crate) fn v1_write(&self, pos: u64, data: &[u8]) -> Result<usize> {
        Self::v1_range(pos, data.len())?;
        let mut core = self.mig();
        if pos >= DATA_OFFSET {
            let at = usize::try_from(pos - DATA_OFFSET).unwrap_or(0);
            core.v1.area()[at..at + data.len()].copy_from_slice(data);
            return Ok(data.len());
        }
        match (pos, data) {
            (STATE, &[a, b, c, d]) => {
                let want = state_of(u32::from_le_bytes([a, b, c, d]))
                    .ok_or(bad("v1 device_state value is invalid"))?;
                self.walk(&mut core, want.raw())?;
                Ok(4)
            }
            (RESERVED, &[_, _, _, _]) => Ok(4),
            (SIZE, d) if d.len() == 8 => {
                let mut w = [0u8; 8];
                w.copy_from_slice(d);
                let size = u64::from_le_bytes(w);
                if core.state != MigState::Resuming {
                    return Err(bad("v1 data_size written while not resuming"));
                }
                if size > DATA_SIZE {
                    return Err(bad("v1 data_size larger than the data section"));
                }
                let t = core
                    .transfer
                    .clone()
                    .filter(|t| t.direction() == Direction::Resume)
                    .ok_or(bad("v1 resume without a transfer"))?;
                let n = usize::try_from(size).unwrap_or(0);
                t.write(&core.v1.area()[..n])?;
                Ok(8)
            }
            (PENDING | OFFSET, d) if d.len() == 8 => Err(bad("v1 field is read-only")),
            _ => Err(bad("v1 header access must be one whole field")),
        }
    }
}
