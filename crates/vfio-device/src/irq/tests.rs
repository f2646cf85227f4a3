//! Behaviour of the SET_IRQS handlers and delivery, case by case against vfio-pci.

use super::*;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_MASK as MASK, VFIO_IRQ_SET_ACTION_TRIGGER as TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK as UNMASK, VFIO_IRQ_SET_DATA_BOOL as BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD as EVENTFD, VFIO_IRQ_SET_DATA_NONE as NONE,
};

const INTX: u32 = 0;
const MSI: u32 = 1;
const MSIX: u32 = 2;
const ERR: u32 = 3;
const REQ: u32 = 4;

fn irqs() -> Arc<Interrupts> {
    let counts = IrqCounts {
        intx: 1,
        msi: 4,
        msix: 8,
        err: 0,
    };
    let table = MsixTable::new(Store::Local(vec![0; 8 * 16]), Store::Local(vec![0; 8]), 8);
    Interrupts::new(counts, Some(table))
}

fn efd() -> EventFd {
    EventFd::new().unwrap()
}

fn fds(e: &[&EventFd]) -> IrqData {
    IrqData::Eventfd(e.iter().map(|e| e.as_raw()).collect())
}

fn errno(r: Result<()>) -> i32 {
    r.unwrap_err().errno()
}

mod intx {
    use super::*;

    fn enabled() -> (Arc<Interrupts>, EventFd) {
        let i = irqs();
        let t = efd();
        i.set_irqs(INTX, EVENTFD | TRIGGER, 0, 1, &fds(&[&t]))
            .unwrap();
        (i, t)
    }

    /// `vfio_intx_handler`: one signal per rising line, automasked until unmasked.
    #[test]
    fn assert_signals_once_and_automasks() {
        let (i, t) = enabled();
        assert_eq!(i.set_intx(Level::High), Delivery::Signalled);
        assert_eq!(t.read(), Some(1));
        i.set_intx(Level::Low);
        assert_eq!(i.set_intx(Level::High), Delivery::Held);
        assert_eq!(t.read(), None);
    }

    /// `vfio_pci_intx_unmask_handler`: still asserted -> signal again, stay masked.
    #[test]
    fn unmask_while_asserted_signals_again() {
        let (i, t) = enabled();
        i.set_intx(Level::High);
        let _ = t.read();
        i.set_irqs(INTX, NONE | UNMASK, 0, 1, &IrqData::None)
            .unwrap();
        assert_eq!(t.read(), Some(1));
        assert!(i.intx_masked());
        i.set_intx(Level::Low);
        i.set_irqs(INTX, NONE | UNMASK, 0, 1, &IrqData::None)
            .unwrap();
        assert_eq!(t.read(), None);
        assert!(!i.intx_masked());
    }

    #[test]
    fn mask_holds_assertions() {
        let (i, t) = enabled();
        i.set_irqs(INTX, BOOL | MASK, 0, 1, &IrqData::Bool(vec![1]))
            .unwrap();
        assert_eq!(i.set_intx(Level::High), Delivery::Held);
        assert_eq!(t.read(), None);
    }

    #[test]
    fn mask_and_unmask_need_intx_enabled() {
        let i = irqs();
        assert_eq!(
            errno(i.set_irqs(INTX, NONE | MASK, 0, 1, &IrqData::None)),
            libc::EINVAL
        );
        assert_eq!(
            errno(i.set_irqs(INTX, NONE | TRIGGER, 0, 0, &IrqData::None)),
            libc::EINVAL
        );
    }

    #[test]
    fn eventfd_mask_is_enotty() {
        let (i, t) = enabled();
        assert_eq!(
            errno(i.set_irqs(INTX, EVENTFD | MASK, 0, 1, &fds(&[&t]))),
            libc::ENOTTY
        );
    }

    #[test]
    fn none_trigger_count_0_disables() {
        let (i, _t) = enabled();
        i.set_irqs(INTX, NONE | TRIGGER, 0, 0, &IrqData::None)
            .unwrap();
        assert_eq!(i.enabled(), Enabled::None);
    }

    /// `vfio_send_intx_eventfd`: the loopback signals without masking.
    #[test]
    fn loopback_signals_without_masking() {
        let (i, t) = enabled();
        i.set_irqs(INTX, NONE | TRIGGER, 0, 1, &IrqData::None)
            .unwrap();
        assert_eq!(t.read(), Some(1));
        assert!(!i.intx_masked());
    }

    /// Command INTx-disable: silent while set; clearing it while asserted signals.
    #[test]
    fn intx_disable_silences_and_clearing_it_delivers() {
        let (i, t) = enabled();
        i.set_virq_disabled(true);
        assert_eq!(i.set_intx(Level::High), Delivery::Dropped);
        assert_eq!(t.read(), None);
        i.set_virq_disabled(false);
        assert_eq!(t.read(), Some(1));
    }

    #[test]
    fn resample_eventfd_unmasks() {
        let (i, t) = enabled();
        let u = efd();
        i.set_irqs(INTX, EVENTFD | UNMASK, 0, 1, &fds(&[&u]))
            .unwrap();
        i.set_intx(Level::High);
        assert_eq!(t.read(), Some(1));
        // Still asserted: the resample signals again within a bounded wait.
        u.signal();
        let mut got = None;
        for _ in 0..200 {
            got = t.read();
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, Some(1));
        i.set_irqs(INTX, EVENTFD | UNMASK, 0, 1, &IrqData::Eventfd(vec![-1]))
            .unwrap();
    }

    /// The trigger eventfd given as the resample eventfd too, with the line asserted: each
    /// unmask (`vfio_pci_intx_unmask_handler`) signals the trigger, which fires the resample
    /// again, without end. Disabling the resample (`vfio_virqfd_disable`) must still return.
    /// Found by the `device_bytes` fuzzer: the watcher thread never looked at its stop
    /// eventfd while the resample eventfd stayed readable, and the disable joined it forever.
    #[test]
    fn disabling_a_resample_that_is_its_own_trigger_returns() {
        let (i, t) = enabled();
        i.set_irqs(INTX, EVENTFD | UNMASK, 0, 1, &fds(&[&t]))
            .unwrap();
        i.set_intx(Level::High);
        t.signal();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (tx, rx) = std::sync::mpsc::channel();
        let i2 = i.clone();
        std::thread::spawn(move || {
            let r = i2.set_irqs(INTX, EVENTFD | UNMASK, 0, 1, &IrqData::Eventfd(vec![-1]));
            let _ = tx.send(r);
        });
        let r = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            r,
            Ok(Ok(())),
            "disabling the resample eventfd did not return"
        );
    }

    #[test]
    fn a_bad_trigger_fd_leaves_intx_disabled() {
        let i = irqs();
        assert_eq!(
            errno(i.set_irqs(
                INTX,
                EVENTFD | TRIGGER,
                0,
                1,
                &IrqData::Eventfd(vec![999_999])
            )),
            libc::EBADF
        );
        assert_eq!(i.enabled(), Enabled::None);
    }
}

mod msi {
    use super::*;

    /// Selftest `enable_trigger_disable`: enable four, nothing pending, loopback each.
    #[test]
    fn enable_then_loopback_signals_exactly_once() {
        let i = irqs();
        let e: Vec<EventFd> = (0..4).map(|_| efd()).collect();
        let r: Vec<&EventFd> = e.iter().collect();
        i.set_irqs(MSI, EVENTFD | TRIGGER, 0, 4, &fds(&r)).unwrap();
        assert!(e.iter().all(|x| x.read().is_none()));
        i.set_irqs(MSI, NONE | TRIGGER, 2, 1, &IrqData::None)
            .unwrap();
        assert_eq!(e[2].read(), Some(1));
        assert_eq!(e[1].read(), None);
        assert_eq!(i.view().msi_qmax, Some(2));
    }

    #[test]
    fn another_type_enabled_is_einval() {
        let i = irqs();
        let a = efd();
        i.set_irqs(MSI, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))
            .unwrap();
        assert_eq!(
            errno(i.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))),
            libc::EINVAL
        );
        assert_eq!(
            errno(i.set_irqs(INTX, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))),
            libc::EINVAL
        );
    }

    #[test]
    fn disable_twice_is_einval_the_second_time() {
        let i = irqs();
        let a = efd();
        i.set_irqs(MSI, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))
            .unwrap();
        i.set_irqs(MSI, NONE | TRIGGER, 0, 0, &IrqData::None)
            .unwrap();
        assert_eq!(
            errno(i.set_irqs(MSI, NONE | TRIGGER, 0, 0, &IrqData::None)),
            libc::EINVAL
        );
    }

    #[test]
    fn masking_is_enotty() {
        let i = irqs();
        assert_eq!(
            errno(i.set_irqs(MSI, NONE | MASK, 0, 1, &IrqData::None)),
            libc::ENOTTY
        );
        assert_eq!(
            errno(i.set_irqs(MSIX, NONE | UNMASK, 0, 1, &IrqData::None)),
            libc::ENOTTY
        );
        assert_eq!(
            errno(i.set_irqs(MSI, NONE | MASK | TRIGGER, 0, 1, &IrqData::None)),
            libc::ENOTTY
        );
        assert_eq!(
            errno(i.set_irqs(MSI, NONE, 0, 1, &IrqData::None)),
            libc::ENOTTY
        );
    }
}

mod msix {
    use super::*;

    /// Static allocation: binding a vector past the enabled count fails; -1 unbinds.
    #[test]
    fn rebinding_within_the_enabled_vectors_only() {
        let i = irqs();
        let (a, b) = (efd(), efd());
        i.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 2, &fds(&[&a, &b]))
            .unwrap();
        assert_eq!(
            errno(i.set_irqs(MSIX, EVENTFD | TRIGGER, 2, 1, &fds(&[&a]))),
            libc::EINVAL
        );
        i.set_irqs(MSIX, EVENTFD | TRIGGER, 1, 1, &IrqData::Eventfd(vec![-1]))
            .unwrap();
        i.set_irqs(MSIX, NONE | TRIGGER, 1, 1, &IrqData::None)
            .unwrap();
        assert_eq!(b.read(), None);
    }

    #[test]
    fn bool_loopback_signals_the_set_bytes_only() {
        let i = irqs();
        let (a, b) = (efd(), efd());
        let data = IrqData::Eventfd(vec![a.as_raw(), -1, b.as_raw()]);
        i.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 3, &data).unwrap();
        i.set_irqs(MSIX, BOOL | TRIGGER, 0, 3, &IrqData::Bool(vec![1, 1, 0]))
            .unwrap();
        assert_eq!(a.read(), Some(1));
        assert_eq!(b.read(), None);
    }

    #[test]
    fn a_bad_fd_unbinds_the_calls_earlier_vectors_and_disables() {
        let i = irqs();
        let a = efd();
        let data = IrqData::Eventfd(vec![a.as_raw(), 999_999]);
        assert_eq!(
            errno(i.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 2, &data)),
            libc::EBADF
        );
        assert_eq!(i.enabled(), Enabled::None);
    }

    /// A masked table entry holds the vector in the PBA; unmasking delivers it once.
    #[test]
    fn masked_entry_sets_pending_and_unmask_delivers() {
        let i = irqs();
        let a = efd();
        i.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))
            .unwrap();
        assert_eq!(i.msix(0), Delivery::Signalled);
        assert_eq!(a.read(), Some(1));
        i.lock().msix.as_mut().unwrap().set_masked(0, true);
        assert_eq!(i.msix(0), Delivery::Held);
        let mut pba = [0u8; 1];
        i.read_pba(0, &mut pba);
        assert_eq!(pba[0], 1);
        i.lock().msix.as_mut().unwrap().set_masked(0, false);
        i.msix_poll();
        assert_eq!(a.read(), Some(1));
        i.msix_poll();
        assert_eq!(a.read(), None);
    }

    #[test]
    fn view_reports_msix_enabled() {
        let i = irqs();
        let a = efd();
        i.set_irqs(MSIX, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))
            .unwrap();
        assert!(i.view().msix_enabled);
        i.set_irqs(MSIX, NONE | TRIGGER, 0, 0, &IrqData::None)
            .unwrap();
        assert!(!i.view().msix_enabled);
    }
}

mod err_req {
    use super::*;

    #[test]
    fn err_without_pcie_has_no_handler() {
        let i = irqs();
        let a = efd();
        assert_eq!(
            errno(i.set_irqs(ERR, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))),
            libc::ENOTTY
        );
    }

    /// `vfio_pci_set_ctx_trigger_single`, case by case.
    #[test]
    fn req_follows_ctx_trigger_single() {
        let i = irqs();
        let a = efd();
        assert_eq!(
            errno(i.set_irqs(REQ, EVENTFD | TRIGGER, 0, 0, &IrqData::Eventfd(vec![]))),
            libc::EINVAL
        );
        assert_eq!(
            errno(i.set_irqs(REQ, NONE | TRIGGER, 0, 1, &IrqData::None)),
            libc::EINVAL
        );
        i.set_irqs(REQ, EVENTFD | TRIGGER, 0, 1, &fds(&[&a]))
            .unwrap();
        i.set_irqs(REQ, EVENTFD | TRIGGER, 0, 1, &IrqData::Eventfd(vec![-2]))
            .unwrap();
        i.set_irqs(REQ, NONE | TRIGGER, 0, 1, &IrqData::None)
            .unwrap();
        assert_eq!(a.read(), Some(1));
        assert_eq!(i.req(), Delivery::Signalled);
        assert_eq!(a.read(), Some(1));
        i.set_irqs(REQ, NONE | TRIGGER, 0, 0, &IrqData::None)
            .unwrap();
        assert_eq!(i.req(), Delivery::Dropped);
        assert_eq!(
            errno(i.set_irqs(REQ, BOOL | TRIGGER, 0, 0, &IrqData::Bool(vec![]))),
            libc::EINVAL
        );
    }
}
