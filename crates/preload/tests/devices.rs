//! Device acceptance suite (issue 12, scope 4): small C programs, one per class, run under
//! `libtype1_preload.so` against the built-in DMA test device, each asserting the kernel's result
//! and errno with the kernel rule cited at every check (`tests/c/dev_<class>.c`, shared setup in
//! `tests/c/dev_common.h`, macros in `tests/c/adv_check.h`).
//!
//! Every program is built with `gcc -O1 -Wall -Werror` against the system `<linux/vfio.h>`
//! (`dev_fortify` with `-O2 -D_FORTIFY_SOURCE=2`), run with
//! `TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6"` under a
//! hard timeout (a hang is killed and fails), and must exit 0 with stdout exactly `PASS`, one
//! summary line on stderr (`dev_<class>: N checks`) and nothing else there.
//!
//! | class | kernel rules (v6.18) |
//! |---|---|
//! | `open` | `vfio_group_ioctl_get_device_fd`: `strndup_user` (EFAULT), `vfio_device_get_from_name` / `vfio_pci_core_match` (ENODEV, EINVAL for options), `vfio_df_group_open` (no container: EINVAL), `vfio_group_use_container` (no IOMMU: EINVAL), O_CLOEXEC, a new fd per call; `vfio_group_ioctl_unset_container` EBUSY while a device is open; the device file holds the group file |
//! | `ioctls` | `vfio_pci_ioctl_get_info`, `_get_region_info` (MSIX_MAPPABLE chain), `_get_irq_info`, `vfio_set_irqs_validate_and_prepare` and the handler table, `_reset`, `_get_pci_hot_reset_info`, `_pci_hot_reset`, `vfio_ioctl_device_feature`, unknown requests ENOTTY |
//! | `config` | `vfio_pci_config_rw` / `vfio_config_do_rw` (EFAULT), `vfio_bar_fixup` (BAR and ROM sizing), bus master clear at open, `vfio_pci_bar_rw` (EINVAL, clipping, EIO with decode off, the MSI-X hole), ROM/VGA/beyond EINVAL; pread, pwrite, pread64, pwrite64, preadv, preadv64, pwritev |
//! | `mmap` | `vfio_pci_core_mmap` (every EINVAL in order), BAR2 shared with the device's DMA, BAR4 whole; a MAP_DMA of a BAR mmap is VM_PFNMAP (not charged, `TYPE1_MEMLOCK=64K`); the VMA holds the device file |
//! | `irqs` | `vfio_pci_set_msi_trigger` (enable, loopback, BOOL, unbind, disable, bad fds), the device's own interrupts, `vfio_intx_handler` automask, mask/unmask, the resample eventfd, REQ |
//! | `dma` | device DMA through the domain (group 5) or pin/dma_rw (group 6): copy with one MSI-X interrupt, faults on unmapped / partly mapped / read-only / just-unmapped IOVAs write nothing |
//! | `dirty` | `update_user_bitmap` (kernel-exact: every page), precise: the pages the device wrote; emulated: pinned-page dirty scope; strict invalidation against the autonomous writer |
//! | `sysfs` | pci-sysfs attributes and their formats, `iommu_group` and `driver` links, the group's `devices` link, `config`; values equal the config space read through the device fd |
//! | `fortify` | `__pread_chk`, `__pread64_chk` reach `vfio_pci_rw` with the same answers |
//! | `mig_v1` | the deprecated v1 migration region in QEMU 7.2's order (`vfio_save_setup`, `vfio_save_buffer`, `vfio_save_complete_precopy`, `vfio_load_buffer`, `vfio_vmstate_change`): region info and TYPE capability, whole-field header access, invalid states EINVAL and unchanged, state restored on 100 → 001, a cut stream EINVAL with the state still 100 (issue 13) |
//! | `autostart` | the drop-in's `writer=` device option: the writer starts once bus mastering is on and the whole window is mapped, not before either; registers as configured; pages only in the window (issue 13) |
//! | `mig_log` | `vfio_ioctl_device_feature_logging_start` / `_stop` / `_report`: the report is exactly the pages the device wrote inside the ranges (transfers, one crossing a page, one outside; the autonomous writer's pages from its seed), cleared by the report, at 4 KiB and 2 MiB tracking pages; no ranges, a second START, a bad page size, a REPORT after STOP EINVAL (issue 13) |
//! | `mig_v2` | `vfio_ioctl_device_feature_migration`, `vfio_ioctl_device_feature_mig_device_state` over every pair of states the system header names (`vfio_mig_get_next_state`: invalid targets EINVAL, state unchanged, the struct copied back), data fds (`vfio_ioct_mig_return_fd`: O_CLOEXEC, direction, ESPIPE, EOF), restore after reset, bad streams EINVAL and named on stderr (issue 13) |

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{assert_pass_quiet, Run};

/// A program that has not exited by then is hung: it is killed and the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The suite's groups and devices.
const GROUPS: (&str, &str) = ("TYPE1_GROUPS", "5:iommu,6:emulated");
const DEVICES: (&str, &str) = ("TYPE1_DEVICES", "0000:00:1f.0@5,0000:00:1e.0@6");

fn build(name: &str, extra: &[&str]) -> PathBuf {
    common::build_c(name, extra)
}

/// Runs `prog` under the drop-in with the suite's groups and devices plus `env`.
fn run_preloaded(prog: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec![GROUPS, DEVICES];
    all.extend_from_slice(env);
    common::run_preloaded(prog, args, &all, TIMEOUT)
}

/// Builds `name` and runs it with `args` and `env`; it must pass quietly.
fn pass(name: &str, args: &[&str], env: &[(&str, &str)]) {
    let prog = build(name, &[]);
    assert_pass_quiet(name, &run_preloaded(&prog, args, env));
}

#[test]
fn get_device_fd_follows_the_group_rules_and_device_fds_keep_the_group_busy() {
    pass("dev_open", &[], &[]);
}

#[test]
fn device_ioctls_answer_as_vfio_pci_with_every_errno() {
    pass("dev_ioctls", &[], &[]);
}

#[test]
fn config_space_is_virtualised_and_every_pread_pwrite_form_reaches_the_device() {
    pass("dev_config", &[], &[]);
}

#[test]
fn bar_mmap_shares_device_memory_and_its_map_dma_is_not_charged() {
    pass("dev_mmap", &[], &[("TYPE1_MEMLOCK", "64K")]);
}

#[test]
fn msi_msix_intx_and_req_signal_their_eventfds_exactly_once() {
    pass("dev_irqs", &["iommu"], &[]);
}

#[test]
fn interrupts_of_the_emulated_group_device_signal_exactly_once() {
    pass("dev_irqs", &["emulated"], &[]);
}

#[test]
fn dma_copy_through_the_iommu_domain_interrupts_once_and_faults_write_nothing() {
    pass("dev_dma", &["iommu"], &[]);
}

#[test]
fn dma_copy_through_pin_and_dma_rw_interrupts_once_and_faults_write_nothing() {
    pass("dev_dma", &["emulated"], &[]);
}

#[test]
fn precise_dirty_bitmap_holds_exactly_the_pages_the_device_wrote() {
    pass(
        "dev_dirty",
        &["precise", "iommu"],
        &[("TYPE1_DIRTY_MODE", "precise")],
    );
}

#[test]
fn kernel_exact_dirty_bitmap_holds_every_mapped_page_of_an_iommu_group() {
    pass(
        "dev_dirty",
        &["kernel-exact", "iommu"],
        &[("TYPE1_DIRTY_MODE", "kernel-exact")],
    );
}

#[test]
fn emulated_group_dirty_bitmap_is_pinned_page_scoped_in_both_modes() {
    for mode in ["precise", "kernel-exact"] {
        pass(
            "dev_dirty",
            &[mode, "emulated"],
            &[("TYPE1_DIRTY_MODE", mode)],
        );
    }
}

#[test]
fn sysfs_presents_the_devices_as_vfio_pci_bound_functions() {
    pass("dev_sysfs", &[], &[]);
}

#[test]
fn fortified_pread_chk_entry_points_reach_the_device() {
    let prog = build("dev_fortify", &["-O2", "-D_FORTIFY_SOURCE=2"]);
    let syms = common::undefined_symbols(&prog);
    for s in ["__pread_chk", "__pread64_chk"] {
        assert!(
            syms.lines().any(|l| l
                .split_whitespace()
                .last()
                .is_some_and(|n| n.starts_with(s))),
            "dev_fortify does not reference {s}:\n{syms}"
        );
    }
    assert_pass_quiet("dev_fortify", &run_preloaded(&prog, &[], &[]));
}

/// The five bad streams of `dev_mig_v2` are each named on stderr, once, by the device
/// (docs/SEMANTICS.md: a refused stream, one line naming what was wrong).
#[test]
fn v2_migration_walks_every_arc_refuses_every_invalid_target_and_restores_through_data_fds() {
    let prog = build("dev_mig_v2", &[]);
    let rest = common::assert_pass("dev_mig_v2", &run_preloaded(&prog, &[], &[]));
    let prefix = "type1 vfio-device 0000:00:1f.0: RESUMING: device state stream rejected: ";
    let why: Vec<&str> = rest.iter().filter_map(|l| l.strip_prefix(prefix)).collect();
    assert_eq!(why.len(), rest.len(), "other stderr lines: {rest:?}");
    let want = [
        "empty stream",
        "truncated",
        "truncated",
        "truncated",
        "checksum mismatch",
    ];
    assert_eq!(why.len(), want.len(), "{rest:?}");
    for (w, line) in want.iter().zip(&why) {
        assert!(line.contains(w), "wanted {w:?}: {line}");
    }
}

/// QEMU 7.2's order over the v1 region; the cut stream is named once on stderr.
#[test]
fn v1_region_saves_and_restores_in_qemu_7_2_order_and_refuses_bad_states_and_streams() {
    let prog = build("dev_mig_v1", &[]);
    let env = [(
        "TYPE1_DEVICES",
        "0000:00:1f.0@5,migration=v1,0000:00:1e.0@6",
    )];
    let rest = common::assert_pass("dev_mig_v1", &run_preloaded(&prog, &[], &env));
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(
        rest[0].starts_with(
            "type1 vfio-device 0000:00:1f.0: RESUMING: device state stream rejected: truncated"
        ),
        "{rest:?}"
    );
}

#[test]
fn dma_logging_reports_exactly_the_pages_the_device_wrote_at_4k_and_2m() {
    pass("dev_mig_log", &[], &[]);
}

#[test]
fn writer_option_starts_the_writer_once_bus_master_is_on_and_the_window_is_mapped() {
    let env = [(
        "TYPE1_DEVICES",
        "0000:00:1f.0@5,writer=0x200000+0x10000,writer-rate=5000,writer-seed=0x77,0000:00:1e.0@6",
    )];
    pass("dev_autostart", &[], &env);
}
