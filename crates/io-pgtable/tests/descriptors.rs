//! Bit-exact descriptors: `arm_lpae_prot_to_pte`, `__arm_lpae_init_pte`, `paddr_to_iopte` and
//! `iopte_to_paddr` in `drivers/iommu/io-pgtable-arm.c`, v6.18.

use io_pgtable::pte::{self, Descriptor};
use io_pgtable::{Config, Format, Geometry, Granule, PhysAddr, Prot, Quirks};
use proptest::prelude::*;

const B4K: u64 = (1 << 12) | (1 << 21) | (1 << 30);
const PA: u64 = 0x1000_0000;

fn g(format: Format, quirks: Quirks) -> Geometry {
    Geometry::new(&Config::new(format, B4K, 48, 48).with_quirks(quirks)).unwrap()
}

#[test]
fn leaves_are_bit_exact_for_each_format_and_protection() {
    let s1 = g(Format::ArmLpaeS1, Quirks::empty());
    let s1hd = g(Format::ArmLpaeS1, Quirks::ARM_HD);
    let s2 = g(Format::ArmLpaeS2, Quirks::empty());
    let (r, w, c, x) = (Prot::READ, Prot::WRITE, Prot::CACHE, Prot::NOEXEC);
    let page = |geo: &Geometry, p| pte::make_leaf(pte::prot_to_pte(geo, p), 3, PA);
    assert_eq!(page(&s1, r | w | c | x), 0x0060_0000_1000_0F47);
    assert_eq!(page(&s1, r | c), 0x0000_0000_1000_0FC7);
    assert_eq!(page(&s1, r | w), 0x0000_0000_1000_0E43);
    assert_eq!(page(&s1hd, r | w | c), 0x0008_0000_1000_0F47);
    assert_eq!(page(&s2, r | w | c), 0x0000_0000_1000_07FF);
    assert_eq!(page(&s2, r | w | c | x), 0x0060_0000_1000_07FF);
    let block = pte::make_leaf(pte::prot_to_pte(&s1, r | w | c | x), 2, PA);
    assert_eq!(block, 0x0060_0000_1000_0F45);
    assert_eq!(pte::make_table(&s1, PA), PA | 3);
}

#[test]
fn quirks_set_their_descriptor_bits() {
    let ns = g(Format::ArmLpaeS1, Quirks::ARM_NS);
    assert_ne!(pte::prot_to_pte(&ns, Prot::READ) & pte::NS, 0);
    assert_ne!(pte::make_table(&ns, PA) & pte::NSTABLE, 0);
    let hd = g(Format::ArmLpaeS1, Quirks::ARM_HD);
    assert_eq!(
        pte::prot_to_pte(&hd, Prot::READ) & pte::DBM,
        0,
        "read-only: no DBM"
    );
    assert_ne!(pte::prot_to_pte(&hd, Prot::WRITE) & pte::DBM, 0);
    let fwb = g(Format::ArmLpaeS2, Quirks::ARM_S2FWB);
    assert_eq!(
        pte::prot_to_pte(&fwb, Prot::READ | Prot::CACHE) & (0xf << 2),
        pte::MEMATTR_FWB_WB
    );
    let s2 = g(Format::ArmLpaeS2, Quirks::empty());
    assert_eq!(
        pte::prot_to_pte(&s2, Prot::READ | Prot::MMIO) & (0xf << 2),
        pte::MEMATTR_DEV
    );
    assert_eq!(
        pte::prot_to_pte(&s2, Prot::READ) & (0xf << 2),
        pte::MEMATTR_NC
    );
    let s1 = g(Format::ArmLpaeS1, Quirks::empty());
    assert_eq!(
        pte::prot_to_pte(&s1, Prot::READ | Prot::MMIO) & (7 << 2),
        2 << 2
    );
    assert_eq!(
        pte::prot_to_pte(&s1, Prot::READ | Prot::PRIV) & pte::AP_UNPRIV,
        0
    );
}

#[test]
fn zero_is_invalid_at_every_level() {
    for lvl in 0..4 {
        assert_eq!(
            Descriptor::decode(0, lvl, Granule::Size4K),
            Descriptor::Invalid
        );
    }
    // Type 0b10 is reserved/invalid; a "table" at level 3 is a page.
    assert_eq!(
        Descriptor::decode(PA | 2, 2, Granule::Size4K),
        Descriptor::Invalid
    );
    assert!(matches!(
        Descriptor::decode(PA | 3, 3, Granule::Size4K),
        Descriptor::Leaf { lvl: 3, .. }
    ));
    assert!(matches!(
        Descriptor::decode(PA | 1, 3, Granule::Size4K),
        Descriptor::Invalid
    ));
}

#[test]
fn sixty_four_k_granule_packs_52_bit_addresses() {
    let pa = 0x000f_1234_5678_0000u64;
    let packed = pte::paddr_to_iopte(pa);
    assert_eq!(packed & !pte::ADDR_MASK, 0);
    assert_eq!(pte::iopte_to_paddr(packed, Granule::Size64K), pa);
}

proptest! {
    #[test]
    fn decode_encode_round_trips(
        pa_pages in 0u64..(1 << 36),
        lvl in 1u32..4,
        prot_bits in 0u32..64,
        stage2 in any::<bool>(),
        hd in any::<bool>(),
    ) {
        let (format, quirks) = if stage2 {
            (Format::ArmLpaeS2, Quirks::empty())
        } else if hd {
            (Format::ArmLpaeS1, Quirks::ARM_HD | Quirks::ARM_NS)
        } else {
            (Format::ArmLpaeS1, Quirks::empty())
        };
        let geo = g(format, quirks);
        let block = geo.block_size(lvl);
        let pa = (pa_pages << 12) & !(block - 1);
        let prot = Prot::from_bits_truncate(prot_bits) | Prot::READ;
        let raw = pte::make_leaf(pte::prot_to_pte(&geo, prot), lvl, pa);
        let d = Descriptor::decode(raw, lvl, geo.granule);
        prop_assert_eq!(d, Descriptor::Leaf { pa: PhysAddr(pa), lvl, attrs: raw & pte::LEAF_ATTR_MASK });
        prop_assert_eq!(d.encode(&geo), raw);
        if lvl < 3 {
            let t = pte::make_table(&geo, pa);
            let dt = Descriptor::decode(t, lvl, geo.granule);
            prop_assert_eq!(dt, Descriptor::Table { table: pa });
            prop_assert_eq!(dt.encode(&geo), t);
        }
    }
}
