//! Walkers translating while another thread maps and unmaps other ranges (lockless table
//! publication as `arm_lpae_install_table`, and a table freed only after its walk flush as in
//! `__arm_lpae_unmap`, v6.18): no torn entry, no stale table followed. Freed tables are
//! poisoned (see `memory::POISON_PTE`), so following one would produce a wrong address or a
//! fault.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_pgtable::testing::ManualClock;
use io_pgtable::{
    Access, Config, Domain, DomainConfig, Fault, Format, InvalidationPolicy, IotlbConfig, Iova,
    PhysAddr, Prot,
};

const SZ_4K: u64 = 1 << 12;
const SZ_2M: u64 = 1 << 21;
const B4K: u64 = SZ_4K | SZ_2M | (1 << 30);
const RW: Prot = Prot::READ.union(Prot::WRITE);
/// Stable mappings translate to iova + STABLE_OFF; churned ones to iova + CHURN_OFF.
const STABLE_OFF: u64 = 0x10_0000_0000;
const CHURN_OFF: u64 = 0x20_0000_0000;
/// Even 2M slots stay mapped; odd 2M slots are churned (same L2 table, neighbouring L3 tables).
const SLOTS: u64 = 64;

fn run(policy: InvalidationPolicy, duration: Duration) {
    let cfg = DomainConfig {
        table: Config::new(Format::ArmLpaeS1, B4K, 48, 48),
        policy,
        iotlb: IotlbConfig {
            entries_per_size: 64,
        },
    };
    let d: Arc<Domain<u64>> =
        Arc::new(Domain::new(&cfg, Arc::new(ManualClock::default())).unwrap());
    for s in (0..SLOTS).step_by(2) {
        let iova = s * SZ_2M;
        // 4K pages: an L3 table per slot.
        d.map(
            Iova(iova),
            PhysAddr(iova + STABLE_OFF + SZ_4K),
            511 * SZ_4K,
            RW,
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let walkers: Vec<_> = (0..2u64)
        .map(|w| {
            let (d, stop, checked) = (d.clone(), stop.clone(), checked.clone());
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let slot = x % SLOTS;
                    let iova = slot * SZ_2M + ((x >> 20) % 511) * SZ_4K + (x >> 40) % SZ_4K;
                    let access = if x & 1 == 0 {
                        Access::Read
                    } else {
                        Access::Write
                    };
                    match d.translate(Iova(iova), access) {
                        Ok(t) if slot % 2 == 0 => {
                            assert_eq!(t.pa.raw(), iova + STABLE_OFF + SZ_4K, "stable mapping");
                        }
                        Ok(t) => {
                            assert_eq!(t.pa.raw(), iova + CHURN_OFF, "churned mapping");
                        }
                        Err(Fault::NotMapped { .. }) if slot % 2 == 1 => {}
                        Err(f) => panic!("fault {f} on a stable mapping"),
                    }
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < duration {
        for s in (1..SLOTS).step_by(2) {
            let iova = s * SZ_2M;
            match round % 3 {
                // 4K pages: table allocation, then a 2M unmap frees the L3 table.
                0 => d
                    .map(Iova(iova), PhysAddr(iova + CHURN_OFF), 64 * SZ_4K, RW)
                    .unwrap(),
                // A 2M block, later split by a partial unmap.
                1 => d
                    .map(Iova(iova), PhysAddr(iova + CHURN_OFF), SZ_2M, RW)
                    .unwrap(),
                _ => {}
            }
        }
        for s in (1..SLOTS).step_by(2) {
            let iova = s * SZ_2M;
            if round % 3 == 1 {
                d.unmap(Iova(iova + 8 * SZ_4K), SZ_4K, 0);
            }
            d.unmap(Iova(iova), SZ_2M, 0);
        }
        d.poll();
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in walkers {
        w.join().unwrap();
    }
    d.flush();
    assert!(round > 3, "the mutator made progress ({round} rounds)");
    assert!(checked.load(Ordering::Relaxed) > 1000);
}

#[test]
fn walkers_never_see_torn_entries_or_freed_tables_strict() {
    run(InvalidationPolicy::Strict, Duration::from_millis(1500));
}

#[test]
fn walkers_never_see_torn_entries_or_freed_tables_lazy() {
    run(
        InvalidationPolicy::Lazy(io_pgtable::FlushQueueConfig::default()),
        Duration::from_millis(1500),
    );
}
