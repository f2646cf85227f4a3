//! [`step`]: one operation applied to the engine and the model, and every observable compared.

use super::*;

fn dev_fault(e: DmaError) -> DevFault {
    match e {
        DmaError::Fault(Fault::NotMapped { iova }) => DevFault::NotMapped(iova.raw()),
        DmaError::Fault(Fault::Permission { iova, .. }) => DevFault::Permission(iova.raw()),
        DmaError::Detached => DevFault::Detached,
        DmaError::Memory { pa } => panic!("DMA reached unbacked memory at {pa}"),
    }
}

/// Applies `op` to the engine and the model and compares everything.
///
/// # Panics
/// On the first difference (that is the point).
#[allow(clippy::too_many_lines)]
pub fn step(r: &mut Rig, op: &Op) {
    let debug = std::env::var_os("TYPE1_DIFF_DEBUG").is_some();
    if debug {
        eprintln!("op {op:?} mappings {:?}", r.m.mappings());
    }
    let c = &r.c.clone();
    match *op {
        Op::Map {
            slot,
            src,
            off,
            pages,
            flags,
        } => {
            let vaddr = [RAM, SCATTERED, RO, 0x1000_0000][usize::from(src % 4)] + off * SZ_4K;
            let f = MapFlags::from_bits_truncate(u32::from(flags));
            let (iova, size) = (iova_of(slot), pages * SZ_4K);
            let got = errno(c.map_dma(&MapDma {
                vaddr: Vaddr(vaddr),
                iova: Iova(iova),
                size,
                flags: f,
            }))
            .map(|()| 0);
            let want = r.m.map(
                vaddr,
                iova,
                size,
                f.contains(MapFlags::READ),
                f.contains(MapFlags::WRITE),
                f.contains(MapFlags::VADDR),
                &RigMemory,
            );
            if debug {
                eprintln!("  -> {want:?}");
            }
            assert_eq!(got, want, "{op:?}");
        }
        Op::Unmap { at, pages, flags } => {
            let f = UnmapFlags::from_bits_truncate(u32::from(flags));
            let (iova, size) = if f.contains(UnmapFlags::ALL) {
                (0, 0)
            } else {
                (at * SZ_4K, pages * SZ_4K)
            };
            let want = r.m.unmap(
                iova,
                size,
                f.contains(UnmapFlags::ALL),
                f.contains(UnmapFlags::VADDR),
                f.contains(UnmapFlags::GET_DIRTY_BITMAP),
            );
            let got = if f.contains(UnmapFlags::GET_DIRTY_BITMAP) {
                if f.intersects(UnmapFlags::ALL | UnmapFlags::VADDR) || size == 0 {
                    Err(libc::EINVAL)
                } else {
                    errno(c.unmap_dma_dirty(Iova(iova), size, SZ_4K))
                        .map(|(n, w)| (n, bits_of(&w, size / SZ_4K)))
                }
            } else {
                errno(c.unmap_dma(&UnmapDma {
                    iova: Iova(iova),
                    size,
                    flags: f,
                    bitmap_pgsize: 0,
                }))
                .map(|n| (n, BTreeSet::new()))
            };
            if debug {
                eprintln!("  -> {want:?}");
            }
            assert_eq!(got, want, "{op:?}");
        }
        Op::Pin { dev, at, n, prot } => {
            let (dev, md) = r.device(dev);
            let p = match prot {
                1 => Perm::READ,
                2 => Perm::WRITE,
                _ => Perm::RW,
            };
            let got = errno(c.pin_pages(dev, Iova(at * SZ_4K), n, p)).map(|v| v.len() as u64);
            let want =
                r.m.pin(md, at * SZ_4K, n, prot & 1 != 0, prot & 2 != 0, &RigMemory);
            if debug {
                eprintln!("  -> {want:?}");
            }
            assert_eq!(got, want, "{op:?}");
        }
        Op::Unpin { dev, at, n } => {
            let (dev, md) = r.device(dev);
            let got = errno(c.unpin_pages(dev, Iova(at * SZ_4K), n)).map(|()| n);
            let want = r.m.unpin(md, at * SZ_4K, n);
            assert_eq!(got.is_ok(), want.is_ok(), "{op:?}: {got:?} vs {want:?}");
        }
        Op::Rw { at, len } => {
            let (dev, md) = r.device(0);
            let mut buf = vec![0xa5u8; usize::try_from(len).unwrap()];
            let got = errno(c.dma_rw(dev, Iova(at), &mut buf, Access::Write)).map(|()| len);
            let want = r.m.rw_write(md, at, len, &RigMemory);
            if debug {
                eprintln!("  -> {want:?}");
            }
            assert_eq!(got, want, "{op:?}");
        }
        Op::Dma {
            b,
            nth,
            off,
            len,
            write,
        } => {
            let maps = r.m.mappings();
            let at = match maps.len() {
                0 => off,
                n => maps[usize::from(nth) % n].0 + off,
            };
            let d = if b && r.cfg.second_domain {
                Dom::B
            } else {
                Dom::A
            };
            // Lazy invalidation leaves stale translations of unmapped ranges until the flush:
            // what a DMA does there is not specified, so none is issued.
            if r.m.stale_window(d, at, len) {
                if debug {
                    eprintln!("  -> skipped: stale window");
                }
            } else {
                let got = match c.dma_engine(group_id(d)) {
                    Err(_) => Err(DevFault::Detached),
                    Ok(e) => {
                        let mut buf = vec![0x5au8; usize::try_from(len).unwrap()];
                        if write {
                            e.write(Iova(at), &buf)
                        } else {
                            e.read(Iova(at), &mut buf)
                        }
                        .map_err(dev_fault)
                    }
                };
                let want = r.m.device_dma(d, at, len, write);
                if debug {
                    eprintln!("  -> {want:?}");
                }
                assert_eq!(got, want, "{op:?}");
            }
        }
        Op::Start => assert_eq!(errno(c.dirty_start()).map(|()| 0), r.m.set_tracking(true)),
        Op::Stop => assert_eq!(errno(c.dirty_stop()).map(|()| 0), r.m.set_tracking(false)),
        Op::Get { at, pages } => {
            let (iova, size) = (at * SZ_4K, pages * SZ_4K);
            let got = errno(c.dirty_bitmap(Iova(iova), size, SZ_4K)).map(|w| bits_of(&w, pages));
            let want = r.m.get_bitmap(iova, size);
            if debug {
                eprintln!("  -> {want:?}");
            }
            assert_eq!(got, want, "{op:?}");
        }
        Op::Detach { b } => {
            let d = if b { Dom::B } else { Dom::A };
            if r.may_detach(d) {
                c.unset_group(group_id(d)).unwrap();
                r.m.detach(d);
            }
        }
        Op::Attach { b } => {
            let d = if b { Dom::B } else { Dom::A };
            if (d == Dom::A || r.cfg.second_domain) && !r.m.attached(d) {
                let got = errno(c.set_group(spec(d))).map(|()| 0);
                let want = r.m.attach(d, &RigMemory);
                // The device stays registered across its group's unset and set.
                if debug {
                    eprintln!("  -> {want:?}");
                }
                assert_eq!(got, want, "{op:?}");
            }
        }
        Op::Tick { ms } => {
            r.clock.advance(Duration::from_millis(ms));
            // Every container operation runs the flush timers; the model at once.
            r.m.tick(ms);
        }
        Op::Flush => {
            c.flush();
            r.m.flush();
        }
        Op::Reregister { dev } => {
            let (id, md) = r.device(dev);
            let (group, stubborn, present) = match md {
                ModelDevice::Emulated => (
                    GROUP_EMULATED,
                    r.cfg.stubborn_emulated,
                    r.m.emulated_attached(),
                ),
                ModelDevice::Iommu(d) => (group_id(d).0, false, r.m.attached(d)),
            };
            // Registering needs the group in the container.
            if !present {
                return finish(r, op);
            }
            c.unregister_device(id).unwrap();
            r.m.unregister(md);
            let counter = (md == ModelDevice::Iommu(Dom::A)).then(|| r.notifications.clone());
            let new = register(c, group, stubborn, counter);
            match md {
                ModelDevice::Emulated => r.emu = Some(new),
                ModelDevice::Iommu(Dom::A) => r.dev_a = new,
                ModelDevice::Iommu(Dom::B) => r.dev_b = Some(new),
            }
        }
    }
    finish(r, op);
}

/// Compares the state after `op`.
pub(super) fn finish(r: &mut Rig, op: &Op) {
    let debug = std::env::var_os("TYPE1_DIFF_DEBUG").is_some();
    let c = &r.c;
    // Observable state agrees, and the engine's invariants hold. `info` runs the flush timers
    // first, as every operation does.
    assert_eq!(
        u64::from(c.info().unwrap().dma_avail),
        r.m.dma_avail(),
        "dma_avail after {op:?}"
    );
    if let Err(e) = c.check_invariants() {
        panic!("invariant broken after {op:?}: {e}");
    }
    assert_eq!(r.mem.bad_unpins(), 0, "unbalanced unpin after {op:?}");
    let got: Vec<(u64, u64)> = c
        .mappings()
        .iter()
        .map(|m| (m.iova.raw(), m.size))
        .collect();
    assert_eq!(got, r.m.mappings(), "mappings after {op:?}");
    assert_eq!(c.domain_count(), r.m.domains(), "domains after {op:?}");
    assert_eq!(
        r.notifications.load(Ordering::Relaxed),
        r.m.notifications(),
        "unmap notifications after {op:?}"
    );
    assert_eq!(
        r.mm.locked_pages(),
        r.m.locked_pages(),
        "locked pages after {op:?}"
    );
    if debug {
        eprintln!(
            "  locked {} pending {}",
            r.m.locked_pages(),
            r.m.pending_pages()
        );
    }
    assert_eq!(
        r.mm.pending_pages(),
        r.m.pending_pages(),
        "pages waiting for a flush after {op:?}"
    );
}
