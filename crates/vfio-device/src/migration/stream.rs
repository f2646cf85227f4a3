//! The device state stream: what a data fd (v2) or the v1 data section carries from the source
//! device to the destination device.
//!
//! The stream is a sequence of frames. Each frame is a 40-byte header followed by its payload
//! (all integers little-endian):
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 8 | magic `b"T1VFIOST"` |
//! | 8 | 4 | format version ([`VERSION`]) |
//! | 12 | 4 | kind: 1 pre-copy, 2 final |
//! | 16 | 8 | device identity: vendor, device, subsystem vendor, subsystem (u16 each) |
//! | 24 | 8 | payload length |
//! | 32 | 4 | CRC-32 (IEEE 802.3) of the header with this field zero, then the payload |
//! | 36 | 4 | reserved, 0 |
//!
//! A save in PRE_COPY produces one pre-copy frame; STOP_COPY appends (or, from STOP, starts
//! with) the final frame, which holds the whole device state. A valid stream is zero or more
//! pre-copy frames, then exactly one final frame, then nothing: the destination checks every
//! frame and applies the final frame's payload through the model. The payload is the model's
//! own bytes ([`crate::DeviceModel::save_state`]).
//!
//! [`decode`] never panics: a truncated, corrupted or foreign stream is an `Err` naming what
//! was wrong.

/// Frame magic.
pub const MAGIC: [u8; 8] = *b"T1VFIOST";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 40;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// State sent while the device still runs (superseded by the final frame).
    PreCopy = 1,
    /// The whole device state, sent once the device is stopped.
    Final = 2,
}

/// The identity a stream is bound to: a stream only restores into the same kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamIdentity {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)]
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`) continued from `crc`.
#[must_use]
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn header(kind: FrameKind, id: StreamIdentity, len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    h[16..18].copy_from_slice(&id.vendor.to_le_bytes());
    h[18..20].copy_from_slice(&id.device.to_le_bytes());
    h[20..22].copy_from_slice(&id.subsystem_vendor.to_le_bytes());
    h[22..24].copy_from_slice(&id.subsystem.to_le_bytes());
    h[24..32].copy_from_slice(&len.to_le_bytes());
    h
}

/// One frame: header and payload.
#[must_use]
pub fn encode(kind: FrameKind, id: StreamIdentity, payload: &[u8]) -> Vec<u8> {
    let mut h = header(kind, id, payload.len() as u64);
    let crc = crc32_update(crc32_update(0, &h), payload);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&h);
    v.extend_from_slice(payload);
    v
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Checks a whole stream and returns the final frame's payload.
///
/// # Errors
/// A message naming the problem: empty, truncated (header or payload), bad magic (foreign),
/// unsupported version, another device's identity, checksum mismatch (corrupted), unknown
/// frame kind, nonzero reserved field, no final frame, or bytes after it.
pub fn decode(stream: &[u8], expect: StreamIdentity) -> Result<&[u8], String> {
    if stream.is_empty() {
        return Err("empty stream (no frame)".into());
    }
    let mut at = 0usize;
    let mut frame = 0usize;
    loop {
        let rest = &stream[at..];
        if rest.is_empty() {
            return Err(format!(
                "truncated: no final frame after {frame} pre-copy frame(s)"
            ));
        }
        if rest.len() < HEADER_LEN {
            return Err(format!(
                "truncated: frame {frame} header has {} of {HEADER_LEN} bytes",
                rest.len()
            ));
        }
        let h = &rest[..HEADER_LEN];
        if h[0..8] != MAGIC {
            return Err(format!(
                "frame {frame}: bad magic {:02x?}, not a type1 device state stream",
                &h[0..8]
            ));
        }
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(format!(
                "frame {frame}: format version {version}, this build reads {VERSION}"
            ));
        }
        let id = StreamIdentity {
            vendor: u16_at(h, 16),
            device: u16_at(h, 18),
            subsystem_vendor: u16_at(h, 20),
            subsystem: u16_at(h, 22),
        };
        if id != expect {
            return Err(format!(
                "frame {frame}: state of device {:04x}:{:04x} (subsystem {:04x}:{:04x}), this is {:04x}:{:04x} (subsystem {:04x}:{:04x})",
                id.vendor,
                id.device,
                id.subsystem_vendor,
                id.subsystem,
                expect.vendor,
                expect.device,
                expect.subsystem_vendor,
                expect.subsystem
            ));
        }
        let len = u64_at(h, 24);
        let avail = (rest.len() - HEADER_LEN) as u64;
        if len > avail {
            return Err(format!(
                "truncated: frame {frame} payload has {avail} of {len} bytes"
            ));
        }
        // `len <= avail`, which fits in usize.
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        let payload = &rest[HEADER_LEN..HEADER_LEN + n];
        let mut zeroed = [0u8; HEADER_LEN];
        zeroed.copy_from_slice(h);
        zeroed[32..36].fill(0);
        let crc = crc32_update(crc32_update(0, &zeroed), payload);
        let stored = u32_at(h, 32);
        if crc != stored {
            return Err(format!(
                "frame {frame}: checksum mismatch (stored {stored:#010x}, computed {crc:#010x}): corrupted"
            ));
        }
        if u32_at(h, 36) != 0 {
            return Err(format!("frame {frame}: reserved header field is not zero"));
        }
        match u32_at(h, 12) {
            k if k == FrameKind::PreCopy as u32 => {}
            k if k == FrameKind::Final as u32 => {
                let end = at + HEADER_LEN + n;
                if end != stream.len() {
                    return Err(format!(
                        "{} trailing byte(s) after the final frame",
                        stream.len() - end
                    ));
                }
                return Ok(payload);
            }
            k => return Err(format!("frame {frame}: unknown frame kind {k}")),
        }
        at += HEADER_LEN + n;
        frame += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: StreamIdentity = StreamIdentity {
        vendor: 0x1234,
        device: 0x11e8,
        subsystem_vendor: 0x1af4,
        subsystem: 0x1100,
    };

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32_update(0, b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn a_final_frame_after_pre_copy_frames_round_trips() {
        let mut s = encode(FrameKind::PreCopy, ID, b"early");
        s.extend(encode(FrameKind::Final, ID, b"whole state"));
        assert_eq!(decode(&s, ID).unwrap(), b"whole state");
    }

    #[test]
    fn every_truncation_is_refused_with_a_message() {
        let mut s = encode(FrameKind::PreCopy, ID, b"early");
        s.extend(encode(FrameKind::Final, ID, &[7u8; 100]));
        for cut in 0..s.len() {
            let e = decode(&s[..cut], ID).unwrap_err();
            assert!(
                e.contains("truncated") || e.contains("empty"),
                "cut {cut}: {e}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let s = encode(FrameKind::Final, ID, &[0x5a; 64]);
        for byte in 0..s.len() {
            for bit in 0..8 {
                let mut c = s.clone();
                c[byte] ^= 1 << bit;
                assert!(decode(&c, ID).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn foreign_streams_name_the_problem() {
        let s = encode(FrameKind::Final, ID, b"x");
        let other = StreamIdentity { device: 1, ..ID };
        assert!(decode(&s, other).unwrap_err().contains("1234:11e8"));
        let mut m = s.clone();
        m[0] = b'X';
        assert!(decode(&m, ID).unwrap_err().contains("bad magic"));
        let mut v = encode(FrameKind::Final, ID, b"x");
        v[8] = 9;
        assert!(decode(&v, ID).unwrap_err().contains("version 9"));
        let mut t = s.clone();
        t.push(0);
        assert!(decode(&t, ID).unwrap_err().contains("trailing"));
    }
}
