//! Geometry, concatenation and register outputs: `arm_lpae_restrict_pgsizes`,
//! `arm_lpae_alloc_pgtable`, `arm_64_lpae_alloc_pgtable_s1/_s2` and `arm_lpae_concat_mandatory`
//! in `drivers/iommu/io-pgtable-arm.c`, v6.18 (the legacy concatenation rule as up to v6.13).

use io_pgtable::cfg::{S1Registers, S2Registers, MAIR_S1};
use io_pgtable::{ConcatRule, Config, Error, Format, Geometry, Granule, Quirks, Registers};

const SZ_4K: u64 = 1 << 12;
const SZ_16K: u64 = 1 << 14;
const SZ_64K: u64 = 1 << 16;
const B4K: u64 = SZ_4K | (1 << 21) | (1 << 30);
const B16K: u64 = SZ_16K | (1 << 25);
const B64K: u64 = SZ_64K | (1 << 29);

fn geo(format: Format, bitmap: u64, ias: u32, oas: u32) -> Geometry {
    Geometry::new(&Config::new(format, bitmap, ias, oas)).unwrap()
}

#[test]
fn levels_start_level_and_pgd_entries_per_granule_and_input_size() {
    // (bitmap, ias, levels, start, pgd entries)
    let rows = [
        (B4K, 32, 3, 1, 4),
        (B4K, 36, 3, 1, 64),
        (B4K, 39, 3, 1, 512),
        (B4K, 40, 4, 0, 2),
        (B4K, 42, 4, 0, 8),
        (B4K, 44, 4, 0, 32),
        (B4K, 48, 4, 0, 512),
        (B16K, 32, 2, 2, 128),
        (B16K, 36, 2, 2, 2048),
        (B16K, 40, 3, 1, 16),
        (B16K, 42, 3, 1, 64),
        (B16K, 44, 3, 1, 256),
        (B16K, 48, 4, 0, 2),
        (B64K, 32, 2, 2, 8),
        (B64K, 36, 2, 2, 128),
        (B64K, 40, 2, 2, 2048),
        (B64K, 42, 2, 2, 8192),
        (B64K, 44, 3, 1, 4),
        (B64K, 48, 3, 1, 64),
        (B64K, 52, 3, 1, 1024),
    ];
    for (bitmap, ias, levels, start, entries) in rows {
        let g = geo(
            Format::ArmLpaeS1,
            bitmap,
            ias,
            52.min(if bitmap == B64K { 52 } else { 48 }),
        );
        assert_eq!(g.start_level, start, "{bitmap:#x} ias {ias}");
        assert_eq!(4 - g.start_level, levels);
        assert_eq!(g.pgd_entries(), entries, "{bitmap:#x} ias {ias}");
        assert_eq!(g.pgd_bytes(), 8 * entries as u64);
    }
}

#[test]
fn level_shifts_per_granule() {
    let g4 = geo(Format::ArmLpaeS1, B4K, 48, 48);
    assert_eq!([0, 1, 2, 3].map(|l| g4.lvl_shift(l)), [39, 30, 21, 12]);
    let g16 = geo(Format::ArmLpaeS1, B16K, 48, 48);
    assert_eq!([0, 1, 2, 3].map(|l| g16.lvl_shift(l)), [47, 36, 25, 14]);
    let g64 = geo(Format::ArmLpaeS1, B64K, 48, 48);
    assert_eq!([0, 1, 2, 3].map(|l| g64.lvl_shift(l)), [55, 42, 29, 16]);
    assert!(g4.leaf_allowed(1) && g4.leaf_allowed(2) && g4.leaf_allowed(3));
    assert!(!g4.leaf_allowed(0));
    assert!(!g16.leaf_allowed(1));
}

#[test]
fn index_decode_masks_the_pgd_and_handles_concatenation() {
    let g = geo(Format::ArmLpaeS1, B4K, 32, 48);
    assert_eq!(g.lvl_idx(3 << 30, 1), 3);
    assert_eq!(g.lvl_idx(0x1234_5000, 3), 0x145);
    // Concatenated S2 PGD: 4K, ias 40, oas 40 -> start 1 with 1024 entries over 2 pages.
    let s2 = geo(Format::ArmLpaeS2, B4K, 40, 40);
    assert_eq!((s2.start_level, s2.pgd_entries()), (1, 1024));
    assert_eq!(s2.lvl_idx(600 << 30, 1), 600);
    assert_eq!(s2.max_entries(600), 512 - (600 - 512));
}

#[test]
fn granule_selection_follows_the_cpu_page_size() {
    // 4K CPU page with 16K|64K hardware: the smallest size >= PAGE_SIZE.
    let g = geo(Format::ArmLpaeS1, SZ_16K | SZ_64K | (1 << 25), 48, 48);
    assert_eq!(g.granule, Granule::Size16K);
    assert_eq!(g.pgsize_bitmap, SZ_16K | (1 << 25));
    // 64K CPU page: 64K chosen even though 4K is available.
    let mut cfg = Config::new(Format::ArmLpaeS1, B4K | B64K, 48, 48);
    cfg.cpu_page_size = SZ_64K;
    let g = Geometry::new(&cfg).unwrap();
    assert_eq!(g.granule, Granule::Size64K);
    assert_eq!(g.pgsize_bitmap, B64K);
    // 64K CPU page with only 4K|16K: the largest size below PAGE_SIZE.
    let mut cfg = Config::new(Format::ArmLpaeS1, SZ_4K | SZ_16K, 48, 48);
    cfg.cpu_page_size = SZ_64K;
    assert_eq!(Geometry::new(&cfg).unwrap().granule, Granule::Size16K);
    // 64K granule with a 52-bit output gains the 4T block.
    let g = geo(Format::ArmLpaeS1, B64K | (1 << 42), 52, 52);
    assert_eq!(g.pgsize_bitmap, B64K | (1 << 42));
    let g = geo(Format::ArmLpaeS1, B64K | (1 << 42), 48, 48);
    assert_eq!(g.pgsize_bitmap, B64K);
    // ias/oas are clamped to 48 for 4K.
    let g = geo(Format::ArmLpaeS1, B4K, 52, 52);
    assert_eq!((g.ias, g.oas), (48, 48));
}

#[test]
fn allocation_refusals() {
    let bad = |cfg: Config| matches!(Geometry::new(&cfg), Err(Error::InvalidConfig { .. }));
    assert!(
        bad(Config::new(Format::ArmLpaeS1, 1 << 21, 48, 48)),
        "no granule"
    );
    assert!(bad(Config::new(Format::ArmLpaeS1, B4K, 53, 48)), "ias > 52");
    assert!(bad(Config::new(Format::ArmLpaeS1, B4K, 48, 53)), "oas > 52");
    assert!(
        bad(Config::new(Format::ArmLpaeS1, B4K, 48, 38)),
        "no IPS encoding"
    );
    assert!(
        bad(Config::new(Format::ArmLpaeS1, B4K, 12, 48)),
        "ias below a page"
    );
    assert!(bad(
        Config::new(Format::ArmLpaeS2, B4K, 48, 48).with_quirks(Quirks::ARM_HD)
    ));
    assert!(bad(
        Config::new(Format::ArmLpaeS1, B4K, 48, 48).with_quirks(Quirks::ARM_S2FWB)
    ));
    assert!(bad(
        Config::new(Format::ArmLpaeS1, B4K, 48, 48).with_quirks(Quirks::ARM_OUTER_WBWA)
    ));
}

#[test]
fn stage2_concatenates_only_where_the_architecture_requires_it() {
    // (bitmap, ias, oas, start, pgd bytes)
    let rows = [
        (B16K, 48, 48, 1, 32 << 10),
        (B4K, 40, 40, 1, 8 << 10),
        (B4K, 42, 42, 1, 32 << 10),
        (B4K, 40, 44, 0, 16), // the test is on oas: not concatenated
        (B16K, 40, 40, 2, 256 << 10),
        (B64K, 42, 42, 2, 64 << 10),
        (B4K, 48, 48, 0, 4 << 10),
    ];
    for (bitmap, ias, oas, start, bytes) in rows {
        let g = geo(Format::ArmLpaeS2, bitmap, ias, oas);
        assert_eq!(g.start_level, start, "{bitmap:#x} {ias}/{oas}");
        assert_eq!(g.pgd_bytes(), bytes, "{bitmap:#x} {ias}/{oas}");
    }
}

#[test]
fn stage2_legacy_rule_concatenates_every_small_start_level_0_pgd() {
    let legacy = |bitmap, ias, oas| {
        let mut cfg = Config::new(Format::ArmLpaeS2, bitmap, ias, oas);
        cfg.concat = ConcatRule::Legacy;
        Geometry::new(&cfg).unwrap()
    };
    // Legacy concatenates 4K ias 40 whatever oas is, and never 16K ias 40.
    assert_eq!(legacy(B4K, 40, 44).start_level, 1);
    assert_eq!(legacy(B16K, 40, 40).start_level, 1);
    assert_eq!(legacy(B4K, 48, 48).start_level, 0, "512 entries: too many");
}

#[test]
fn register_outputs_tcr_vtcr_and_mair() {
    let g = geo(Format::ArmLpaeS1, B4K, 48, 48);
    assert_eq!(
        g.registers,
        Registers::S1(S1Registers {
            ips: 5,
            tg: 0,
            sh: 3,
            orgn: 1,
            irgn: 1,
            tsz: 16,
            mair: MAIR_S1
        })
    );
    assert_eq!(MAIR_S1, 0xf404_ff44);
    let ttbr1 =
        Geometry::new(&Config::new(Format::ArmLpaeS1, B16K, 48, 48).with_quirks(Quirks::ARM_TTBR1))
            .unwrap();
    assert!(matches!(
        ttbr1.registers,
        Registers::S1(S1Registers { tg: 1, .. })
    ));
    let s2 = |bitmap, ias, oas| match geo(Format::ArmLpaeS2, bitmap, ias, oas).registers {
        Registers::S2(r) => r,
        Registers::S1(_) => panic!("stage 2 expected"),
    };
    // 4K: start 0 -> SL0=2; start 1 -> 1; start 2 -> 0.
    assert_eq!(s2(B4K, 48, 48).sl, 2);
    assert_eq!(s2(B4K, 40, 40).sl, 1);
    assert_eq!(s2(B4K, 32, 48).sl, 1);
    // 64K start 2 -> 1; start 1 -> 2.
    assert_eq!(s2(B64K, 36, 48).sl, 1);
    assert_eq!(s2(B64K, 48, 48).sl, 2);
    assert_eq!(
        s2(B16K, 40, 40),
        S2Registers {
            ps: 2,
            tg: 2,
            sh: 3,
            orgn: 1,
            irgn: 1,
            sl: 1,
            tsz: 24
        }
    );
}
