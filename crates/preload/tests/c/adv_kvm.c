/*
 * KVM's VFIO pseudo-device handed our fds (issue 11/12: QEMU's vfio_kvm_device_add_group).
 *
 * A VMM tells KVM about each VFIO group it uses: KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO), then
 * KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_GROUP, KVM_DEV_VFIO_GROUP_ADD/DEL, &group_fd) (named
 * KVM_DEV_VFIO_FILE* since v6.6, same values; Debian 12 headers have the old names). Our group fds
 * are memfds the kernel would refuse (EINVAL), so the drop-in answers 0 for them without
 * reaching the kernel; every other fd still gets the kernel's answer.
 *
 * Without /dev/kvm the program says so on stderr and exits 2 (the harness fails it loudly
 * unless KVM is really absent, which it reports).
 */
#include "adv_check.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>

#define R_ADD "kvm_vfio_set_file: a VFIO group file is added/deleted -> 0 (virt/kvm/vfio.c, v6.18)"
#define R_NOT_VFIO "kvm_vfio_file_add: !vfio_file_is_valid(filp) -> EINVAL (virt/kvm/vfio.c, v6.18)"
#define R_BADF "kvm_vfio_file_add: fget fails -> EBADF (virt/kvm/vfio.c, v6.18)"

static int set_file(int dev, __u64 op, int fd)
{
    __s32 v = fd;
    struct kvm_device_attr a = {
        .group = KVM_DEV_VFIO_GROUP, .attr = op, .addr = (__u64)(unsigned long)&v};
    return ioctl(dev, KVM_SET_DEVICE_ATTR, &a);
}

int main(void)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        fprintf(stderr, "adv_kvm: no /dev/kvm (%s)\n", strerror(errno));
        return 2;
    }
    int vm;
    EXPECT_FD(vm, ioctl(kvm, KVM_CREATE_VM, 0), "kvm_dev_ioctl_create_vm");
    struct kvm_create_device cd = {.type = KVM_DEV_TYPE_VFIO};
    EXPECT_EQ(ioctl(vm, KVM_CREATE_DEVICE, &cd), 0, "kvm_ioctl_create_device");
    int dev = (int)cd.fd;

    int c, g;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    EXPECT_EQ(set_file(dev, KVM_DEV_VFIO_GROUP_ADD, g), 0, R_ADD);
    EXPECT_EQ(set_file(dev, KVM_DEV_VFIO_GROUP_DEL, g), 0, R_ADD);
    /* A container is not a group or device file: the kernel's EINVAL. */
    EXPECT_ERR(set_file(dev, KVM_DEV_VFIO_GROUP_ADD, c), EINVAL, R_NOT_VFIO);
    int p[2];
    EXPECT_EQ(pipe(p), 0, "do_pipe2");
    EXPECT_ERR(set_file(dev, KVM_DEV_VFIO_GROUP_ADD, p[0]), EINVAL, R_NOT_VFIO);
    EXPECT_ERR(set_file(dev, KVM_DEV_VFIO_GROUP_ADD, 999), EBADF, R_BADF);
    /* The VFIO requests on the group still work afterwards. */
    struct vfio_group_status st = {.argsz = sizeof(st)};
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &st), 0, "vfio_group_ioctl_get_status");
    close(p[0]);
    close(p[1]);
    close(g);
    close(c);
    close(dev);
    close(vm);
    close(kvm);
    fprintf(stderr, "adv_kvm: %d checks\n", adv_checks);
    printf("PASS\n");
    return 0;
}
