//! Operation sequences against the reference model: every byte string decodes to a sequence of
//! `type1::model::diff::Op`s run on the engine and the model side by side; `step` panics on any
//! difference or broken invariant.
#![cfg_attr(fuzzing, no_main)]

use type1::model::diff::{iova_of, rig, step, Op, SLOTS};
use type1::Version;

const PAGE: u64 = 4096;

fn decode(data: &[u8]) -> (Version, bool, Vec<Op>) {
    let Some((&head, mut rest)) = data.split_first() else {
        return (Version::V2, true, Vec::new());
    };
    let version = if head & 1 == 0 { Version::V2 } else { Version::V1 };
    let emulated = head & 2 == 0;
    let mut ops = Vec::new();
    while rest.len() >= 4 && ops.len() < 200 {
        let (k, a, b, f) = (rest[0], u64::from(rest[1]), u64::from(rest[2]), rest[3]);
        rest = &rest[4..];
        ops.push(match k % 11 {
            0 | 1 => Op::Map { slot: a % SLOTS, src: f & 3, off: b % 8, pages: 1 + b % 19, flags: if f & 0x80 != 0 { 3 } else { (f >> 2) & 7 } },
            2 => Op::Unmap { at: a * 2, pages: b % 40, flags: f & 7 },
            3 => Op::Pin { iommu_dev: f & 1 != 0, at: a * 2, n: b % 6, prot: 1 + f % 3 },
            4 => Op::Unpin { iommu_dev: f & 1 != 0, at: a * 2, n: b % 6 },
            5 => Op::Rw { at: iova_of(a % SLOTS) + b * 97, len: u64::from(f) * 61 },
            6 => Op::Start,
            7 => Op::Stop,
            8 => Op::Get { at: iova_of(a % SLOTS) / PAGE, pages: 1 + b % 63 },
            9 => Op::Detach,
            _ => Op::Attach,
        });
    }
    (version, emulated, ops)
}

fn run(data: &[u8]) {
    let (version, emulated, ops) = decode(data);
    #[cfg(not(fuzzing))]
    if std::env::var_os("TYPE1_FUZZ_PRINT").is_some() {
        eprintln!("{version:?}, emulated group: {emulated}");
        for op in &ops {
            eprintln!("  {op:?}");
        }
    }
    let mut r = rig(version, emulated);
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
