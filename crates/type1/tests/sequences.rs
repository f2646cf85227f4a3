//! Random sequences of container operations: invariants after every step, and no trace of any
//! failed operation (`vfio_dma_do_map`, `vfio_dma_do_unmap`, attach and detach, locked-memory
//! accounting; v6.18).

mod common;
use common::*;
use proptest::prelude::*;
use type1::group::{Aperture, IommuDesc};
use type1::{ContainerConfig, GroupId, GroupKind, GroupSpec, MapFlags, UnmapFlags};

#[derive(Debug, Clone)]
enum Op {
    Map {
        iova: u64,
        src: u8,
        off: u64,
        pages: u64,
        flags: u8,
    },
    Unmap {
        iova: u64,
        pages: u64,
        flags: u8,
    },
    Attach(u8),
    Detach(u8),
    Fail(Option<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..64, 0u8..4, 0u64..32, 1u64..48, 0u8..8)
            .prop_map(|(i, src, off, pages, flags)| Op::Map { iova: i * 8 * SZ_4K, src, off, pages, flags }),
        4 => (0u64..512, 0u64..96, 0u8..8).prop_map(|(i, pages, flags)| Op::Unmap { iova: i * SZ_4K, pages, flags }),
        1 => (1u8..5).prop_map(Op::Attach),
        1 => (1u8..5).prop_map(Op::Detach),
        1 => prop_oneof![Just(None), (0u64..40).prop_map(Some)].prop_map(Op::Fail),
    ]
}

fn group(n: u8) -> GroupSpec {
    match n {
        1 | 2 => GroupSpec::iommu(u32::from(n)),
        3 => GroupSpec::emulated(3),
        _ => GroupSpec {
            id: GroupId(u32::from(n)),
            kind: GroupKind::Iommu(IommuDesc {
                ops: 9,
                aperture: Aperture {
                    start: 0,
                    end: (1 << 40) - 1,
                },
                ..IommuDesc::x86_default()
            }),
        },
    }
}

fn run(ty: u64, ops: Vec<Op>, limit: Option<u64>) {
    let cfg = ContainerConfig {
        dma_entry_limit: 24,
        ..ContainerConfig::default()
    };
    let h = H::with(vec![GroupSpec::emulated(99)], ty, limit, cfg);
    for op in ops {
        match op {
            Op::Map {
                iova,
                src,
                off,
                pages,
                flags,
            } => {
                let base = [RAM, SCATTERED, RO, BAR][usize::from(src)];
                let f = MapFlags::from_bits_truncate(u32::from(flags));
                let _ = h.map(iova, base + off * SZ_4K, pages * SZ_4K, f);
            }
            Op::Unmap { iova, pages, flags } => {
                let f = UnmapFlags::from_bits_truncate(u32::from(flags) & 6);
                let (i, s) = if f.contains(UnmapFlags::ALL) {
                    (0, 0)
                } else {
                    (iova, pages * SZ_4K)
                };
                let _ = h.unmap(i, s, f);
            }
            Op::Attach(n) => {
                let _ = h.step(|c| c.set_group(group(n)));
            }
            Op::Detach(n) => {
                let _ = h.step(|c| c.unset_group(GroupId(u32::from(n))));
            }
            Op::Fail(k) => h.mem.fail_after_pages(k),
        }
    }
    h.mem.fail_after_pages(None);
    // Restore every vaddr, then release: nothing may stay pinned or charged.
    for m in h.c.mappings().into_iter().filter(|m| m.vaddr_invalid) {
        let _ = h.map(m.iova.raw(), m.vaddr.raw(), m.size, MapFlags::VADDR);
    }
    let ids = h.c.groups();
    for id in ids {
        h.step(|c| c.unset_group(id)).unwrap();
    }
    assert_eq!(h.mem.pinned_pages(), 0);
    assert_eq!(h.mm.locked_pages(), 0);
    assert_eq!(h.mem.pinned_runs(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_keep_every_invariant_v2(ops in proptest::collection::vec(op(), 1..60)) {
        run(V2, ops, None);
    }

    #[test]
    fn random_sequences_keep_every_invariant_v1_with_limit(ops in proptest::collection::vec(op(), 1..60)) {
        run(V1, ops, Some(200 * SZ_4K));
    }
}
