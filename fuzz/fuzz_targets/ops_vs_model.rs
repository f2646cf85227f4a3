//! Operation sequences against the reference model: every byte string decodes to a setup and a
//! sequence of `type1::model::diff::Op`s run on the engine and the model side by side; `step`
//! panics on any difference or broken invariant.
//!
//! The first byte picks the setup: bit 0 v1, bit 1 no emulated group, bit 2 a second IOMMU
//! domain, bit 3 precise dirty mode, bit 4 lazy invalidation, bit 5 a locked-memory limit (of
//! 8 to 135 pages, from the second byte), bit 6 an emulated device that keeps its pins. Then 4
//! bytes per operation.
#![cfg_attr(fuzzing, no_main)]

use type1::model::diff::{iova_of, rig_with, step, Op, RigConfig, BIG_SLOT, SLOTS};
use type1::Version;

const PAGE: u64 = 4096;

fn decode(data: &[u8]) -> (RigConfig, Vec<Op>) {
    let (head, limit, mut rest) = match data {
        [h, l, rest @ ..] => (*h, *l, rest),
        _ => return (RigConfig::basic(Version::V2, true), Vec::new()),
    };
    let cfg = RigConfig {
        version: if head & 1 == 0 { Version::V2 } else { Version::V1 },
        emulated: head & 2 == 0,
        second_domain: head & 4 != 0,
        precise: head & 8 != 0,
        lazy: head & 16 != 0,
        memlock_pages: (head & 32 != 0).then(|| 8 + u64::from(limit & 127)),
        stubborn_emulated: head & 64 != 0,
    };
    let mut ops = Vec::new();
    while rest.len() >= 4 && ops.len() < 200 {
        let (k, a, b, f) = (rest[0], u64::from(rest[1]), u64::from(rest[2]), rest[3]);
        rest = &rest[4..];
        ops.push(match k % 16 {
            0 | 1 if a % SLOTS == BIG_SLOT => Op::Map { slot: BIG_SLOT, src: 0, off: [0, 1, 512][usize::from(f % 3)], pages: match b % 3 { 0 => 512, 1 => 513, _ => 1024 }, flags: 3 },
            0 | 1 => Op::Map { slot: a % SLOTS, src: f & 3, off: b % 8, pages: 1 + b % 19, flags: if f & 0x80 != 0 { 3 } else { (f >> 2) & 7 } },
            2 => Op::Unmap { at: a * 2, pages: b % 40, flags: f & 7 },
            3 => Op::Pin { dev: f % 3, at: a * 2, n: b % 6, prot: 1 + (f >> 2) % 3 },
            4 => Op::Unpin { dev: f % 3, at: a * 2, n: b % 6 },
            5 => Op::Rw { at: iova_of(a % SLOTS) + b * 97, len: u64::from(f) * 61 },
            6 => Op::Start,
            7 => Op::Stop,
            8 => Op::Get { at: iova_of(a % SLOTS) / PAGE, pages: if a % SLOTS == BIG_SLOT { 512 << (b & 1) } else { 1 + b % 63 } },
            9 => Op::Detach { b: f & 1 != 0 },
            10 => Op::Attach { b: f & 1 != 0 },
            11 | 12 => Op::Dma { b: f & 1 != 0, nth: u8::try_from(a).unwrap_or(0), off: b * 389, len: 1 + u64::from(f >> 1) * 97, write: f & 0x80 == 0 },
            13 => Op::Tick { ms: 1 + b % 16 },
            14 => Op::Flush,
            _ => Op::Reregister { dev: f % 3 },
        });
    }
    (cfg, ops)
}

fn run(data: &[u8]) {
    let (cfg, ops) = decode(data);
    #[cfg(not(fuzzing))]
    if std::env::var_os("TYPE1_FUZZ_PRINT").is_some() {
        eprintln!("{cfg:?}");
        for op in &ops {
            eprintln!("  {op:?}");
        }
    }
    let mut r = rig_with(cfg);
    for op in &ops {
        step(&mut r, op);
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// Stable build: replays every file given on the command line.
#[cfg(not(fuzzing))]
fn main() {
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(data) => {
                run(&data);
                println!("{path}: ok");
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
