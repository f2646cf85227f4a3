//! Adversarial acceptance suite for the drop-in (issue 11): small C programs, one per class,
//! run under `libtype1_preload.so`, each asserting the kernel's result and errno with the kernel
//! rule cited at every check (`tests/c/adv_<class>.c`, shared macros in `tests/c/adv_check.h`).
//!
//! Every program is built with `gcc -O1 -Wall -Werror` against the system `<linux/vfio.h>`, run
//! with `TYPE1_GROUPS="7:iommu,8:emulated" TYPE1_DEVICES="0000:00:04.0@7"` under a hard timeout
//! (a hang is killed and fails), and must exit 0 with stdout exactly `PASS`. Its stderr holds one
//! summary line (`adv_<class>: N checks`) and whatever the class requires; a failing check
//! prints the line, expression, result, errno and kernel rule there.
//!
//! | class | kernel rules (v6.18) |
//! |---|---|
//! | `bad_pointers` | `getname_flags` (EFAULT before lookup); `cp_new_stat`/`cp_statx` copy_to_user; `readlink_copy` copies `min(len, bufsiz)`; `do_readlinkat` bufsiz ≤ 0 → EINVAL; VFIO ioctls: copy_from_user of minsz, `get_user`, `strndup_user`, write-back copy_to_user (UNMAP has already unmapped); no driver → EINVAL (`vfio_fops_unl_ioctl`) |
//! | `fd_reuse` | a raw-closed number is whatever file reuses it (`pipe_ioctl` → ENOTTY, `/dev/null` → ENOTTY), or EBADF; `vfio_group_ioctl_set_container` on a foreign fd → EBADFD; `vfio_group_fops_release` frees the group |
//! | `exec` | the documented difference: inherited container/group fds → EBADFD with one stderr line per fd (naming it, "inherited", "README"); own fds work |
//! | `fortify` | `__open_2`, `__openat_2`, `__open64_2`, `__openat64_2`, `__readlink_chk`, `__realpath_chk`, `stat64`, `fstatat64`, `__xstat` family: one kernel path, same answers |
//! | `paths` | `walk_component` ENOENT; trailing slash / `O_DIRECTORY` → ENOTDIR; `O_CREAT\|O_EXCL` → EEXIST; `//`, `.`, `..` resolve; PATH_MAX → ENAMETOOLONG; `dcache_readdir`; stdio and dirent over the fake files |
//! | `vfs` | `do_vfs_ioctl` FIOCLEX/FIONCLEX/FIONBIO/FIOASYNC (no `->fasync` → ENOTTY)/FIOQSIZE; `vfs_read`/`vfs_write`/`vfs_readv` → EINVAL (no `->read`), EBADF for the wrong access mode; `vfs_llseek` → ESPIPE; `do_mmap` → ENODEV |
//! | `seccomp` | with `process_vm_readv`/`writev` denied (EPERM), the container sequence and the EFAULT rules are unchanged |
//! | `stack_args` | MAP/UNMAP/GET_INFO structures on the stack and on the heap: copy_from_user, copy_to_user of the write-back, EFAULT for a bad pointer; with every copy path denied, stack structures are still served |

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{assert_pass, assert_pass_quiet, Run};

/// A program that has not exited by then is hung: it is killed and the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The suite's configuration.
const ENV: [(&str, &str); 2] = [
    ("TYPE1_GROUPS", "7:iommu,8:emulated"),
    ("TYPE1_DEVICES", "0000:00:04.0@7"),
];

fn build(name: &str, extra: &[&str]) -> PathBuf {
    common::build_c(name, extra)
}

fn run_preloaded(prog: &Path, args: &[&str]) -> Run {
    common::run_preloaded(prog, args, &ENV, TIMEOUT)
}

#[test]
fn bad_pointers_give_efault_at_every_entry_point_and_never_crash() {
    let prog = build("adv_bad_pointers", &[]);
    assert_pass_quiet("adv_bad_pointers", &run_preloaded(&prog, &[]));
}

#[test]
fn fd_reused_after_an_unseen_close_answers_as_the_new_file() {
    let prog = build("adv_fd_reuse", &[]);
    assert_pass_quiet("adv_fd_reuse", &run_preloaded(&prog, &[]));
}

/// The fd numbers named by one stderr line among `fds`.
fn fds_named(line: &str, fds: &[u32]) -> Vec<u32> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse::<u32>().ok())
        .filter(|n| fds.contains(n))
        .collect()
}

#[test]
fn inherited_fds_fail_with_ebadfd_and_one_line_per_fd_after_exec_and_fork() {
    let prog = build("adv_exec", &[]);
    let run = run_preloaded(&prog, &[]);
    let lines = assert_pass("adv_exec", &run);
    // 40: the container and 41: group 7, inherited through exec; 42: the fork child's dup.
    let fds = [40, 41, 42];
    for l in &lines {
        assert!(
            l.contains("inherited") && l.contains("README"),
            "adv_exec: a stderr line that is not an inherited-fd notice: {l:?}\n{}",
            run.describe()
        );
        assert_eq!(
            fds_named(l, &fds).len(),
            1,
            "adv_exec: the line must name exactly one of fds {fds:?}: {l:?}"
        );
    }
    for fd in fds {
        let n = lines.iter().filter(|l| fds_named(l, &[fd]) == [fd]).count();
        assert_eq!(
            n,
            1,
            "adv_exec: expected exactly one line for fd {fd}:\n{}",
            run.describe()
        );
    }
}

#[test]
fn fortified_lfs_and_legacy_entry_points_match_the_plain_ones() {
    let prog = build("adv_fortify", &["-O2", "-D_FORTIFY_SOURCE=2"]);
    // The binary really goes through the fortified and legacy symbols.
    let syms = common::undefined_symbols(&prog);
    for s in [
        "__open_2",
        "__openat_2",
        "__open64_2",
        "__openat64_2",
        "__readlink_chk",
        "__realpath_chk",
        "stat64",
        "fstatat64",
        "__xstat@",
        "__lxstat@",
        "__fxstat@",
        "__fxstatat@",
        "__xstat64@",
    ] {
        assert!(
            syms.lines().any(|l| l
                .split_whitespace()
                .last()
                .is_some_and(|n| n.starts_with(s))),
            "adv_fortify does not reference {s}:\n{syms}"
        );
    }
    assert_pass_quiet("adv_fortify", &run_preloaded(&prog, &[]));
}

#[test]
fn paths_are_parsed_as_strictly_as_the_kernel_walks_them_and_stdio_dirent_work() {
    let prog = build("adv_paths", &[]);
    assert_pass_quiet("adv_paths", &run_preloaded(&prog, &[]));
}

#[test]
fn container_and_group_fds_have_the_vfs_behaviour_of_vfio_files() {
    let prog = build("adv_vfs", &[]);
    assert_pass_quiet("adv_vfs", &run_preloaded(&prog, &[]));
}

#[test]
fn seccomp_denying_process_vm_readv_writev_changes_nothing() {
    let prog = build("adv_seccomp", &[]);
    assert_pass_quiet("adv_seccomp", &run_preloaded(&prog, &[]));
}

/// `copy_from_user`/`copy_to_user` of the argument structure: one on the caller's stack and
/// one on the heap give the kernel's results; a bad pointer is `EFAULT`. Under a filter that
/// leaves no copy path (`process_vm_readv`/`writev`, `pipe`, `pipe2` denied) a heap structure
/// is `EFAULT` while stack structures are still served: they are read and written directly.
#[test]
fn ioctl_structures_on_the_stack_are_served_without_a_copy_and_bad_pointers_still_fault() {
    let prog = build("adv_stack_args", &[]);
    assert_pass_quiet("adv_stack_args", &run_preloaded(&prog, &[]));
}

#[test]
fn kvm_vfio_device_accepts_our_group_fds_and_the_kernel_answers_the_rest() {
    let prog = build("adv_kvm", &[]);
    let run = run_preloaded(&prog, &[]);
    if run.status.code() == Some(2) && !Path::new("/dev/kvm").exists() {
        // Reported, not silent: this machine has no KVM, so there is no pseudo-device to ask.
        eprintln!("adv_kvm: not run: this machine has no /dev/kvm");
        return;
    }
    assert_pass_quiet("adv_kvm", &run);
}
