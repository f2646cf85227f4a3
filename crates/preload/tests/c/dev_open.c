/*
 * Class dev_open (issue 12): VFIO_GROUP_GET_DEVICE_FD as VMMs and the kernel's VFIO selftests
 * call it, with every errno of drivers/vfio/group.c (v6.18) in the kernel's check order, the
 * name matching of vfio_pci_core_match, device fds keeping the group busy.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_common.h"

#define R_NAME_FIRST                                                                        \
    "vfio_group_ioctl_get_device_fd: strndup_user, then vfio_device_get_from_name (ENODEV) "   \
    "before vfio_device_open_file (drivers/vfio/group.c, v6.18)"
#define R_NO_CONTAINER                                                                      \
    "vfio_df_group_open: !vfio_group_has_iommu -> EINVAL (drivers/vfio/group.c, v6.18)"
#define R_NO_IOMMU                                                                          \
    "vfio_df_device_first_open -> vfio_device_group_use_iommu -> vfio_group_use_container: "   \
    "no container->iommu_driver -> EINVAL (drivers/vfio/container.c, v6.18)"
#define R_ENODEV                                                                            \
    "vfio_device_get_from_name: no device of this group matches -> ENODEV "                 \
    "(drivers/vfio/group.c, v6.18)"
#define R_MATCH                                                                             \
    "vfio_pci_core_match: strncmp on pci_name, then only spaces or a vf_token= option may "     \
    "follow (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_MATCH_OPT                                                                         \
    "vfio_pci_core_match: an unknown option after the name -> EINVAL "                      \
    "(drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_VF_TOKEN                                                                          \
    "vfio_pci_validate_vf_token: a VF token given to a device that is neither PF nor VF "    \
    "-> EINVAL (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_EFAULT "strndup_user: a name that cannot be read -> EFAULT (mm/util.c, v6.18)"
#define R_CLOEXEC "vfio_group_ioctl_get_device_fd: get_unused_fd_flags(O_CLOEXEC)"
#define R_RDWR "vfio_device_open_file: anon_inode_getfile(\"[vfio-device]\", ..., O_RDWR)"
#define R_BUSY                                                                              \
    "vfio_group_ioctl_unset_container: container_users != 1 while a device is open -> EBUSY "  \
    "(drivers/vfio/group.c, v6.18)"
#define R_UNSET "vfio_group_ioctl_unset_container: the 1 -> 0 transition after the last device close"
#define R_GROUP_HELD                                                                        \
    "vfio_group_use_container: get_file(group->opened_file): the device file holds the group " \
    "file, so vfio_group_fops_release has not run and vfio_group_fops_open -> EBUSY"
#define R_INFO "vfio_pci_ioctl_get_info (drivers/vfio/pci/vfio_pci_core.c, v6.18)"

static void device_answers(int fd)
{
    struct vfio_device_info info = {.argsz = sizeof(info)};
    EXPECT_EQ(ioctl(fd, VFIO_DEVICE_GET_INFO, &info), 0, R_INFO);
    EXPECT_TRUE(info.flags & VFIO_DEVICE_FLAGS_PCI, R_INFO);
    EXPECT_EQ(info.num_regions, VFIO_PCI_NUM_REGIONS, R_INFO);
}

int main(void)
{
    struct adv_pages P = adv_pages();
    int c = dev_container();
    int g;
    EXPECT_FD(g, open("/dev/vfio/5", O_RDWR), "vfio_group_fops_open");

    /* No container yet: the name is looked up first, then the open needs a container. */
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f.7"), ENODEV, R_NAME_FIRST);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, ADV_BAD1), EFAULT, R_EFAULT);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, DEV_A), EINVAL, R_NO_CONTAINER);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), EINVAL,
               "vfio_group_ioctl_unset_container: no container -> EINVAL");

    /* A container but no IOMMU driver yet. */
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), 0, "vfio_container_attach_group");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, DEV_A), EINVAL, R_NO_IOMMU);
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");

    /* The device opens: O_CLOEXEC, O_RDWR, and it answers the device ioctls. */
    int d1;
    EXPECT_FD(d1, ioctl(g, VFIO_GROUP_GET_DEVICE_FD, DEV_A), R_DEVFD);
    EXPECT_TRUE(d1 != g && d1 != c, R_DEVFD);
    EXPECT_EQ(fcntl(d1, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC, R_CLOEXEC);
    EXPECT_EQ(fcntl(d1, F_GETFL) & O_ACCMODE, O_RDWR, R_RDWR);
    device_answers(d1);

    /* Each call is a new fd onto the same device. */
    int d2;
    EXPECT_FD(d2, ioctl(g, VFIO_GROUP_GET_DEVICE_FD, DEV_A), R_DEVFD);
    EXPECT_TRUE(d2 != d1, "vfio_group_ioctl_get_device_fd: a new fd per call");
    EXPECT_EQ(fcntl(d2, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC, R_CLOEXEC);
    device_answers(d2);
    {
        /* Same state behind both: a register written through one reads back through the other. */
        struct dev a = {.fd = d1}, b = {.fd = d2};
        dev_regions(&a);
        dev_regions(&b);
        reg_w32(&a, REG_LIVENESS, 0x1234);
        EXPECT_EQ(reg_r32(&b, REG_LIVENESS), (uint32_t)~0x1234u,
                  "vfio_df_open: the group path opens the same vfio_device again (open_count)");
    }

    /* Names: vfio_pci_core_match. */
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f.1"), ENODEV, R_ENODEV);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, DEV_B), ENODEV,
               R_ENODEV " (0000:00:1e.0 is in group 6)");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, ""), ENODEV, R_ENODEV);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f"), ENODEV, R_MATCH);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f.0x"), ENODEV, R_MATCH);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f.0\t"), ENODEV, R_MATCH);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1F.0"), ENODEV, R_MATCH);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "00:1f.0"), ENODEV, R_MATCH);
    int d3;
    EXPECT_FD(d3, ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f.0 "), R_MATCH);
    EXPECT_EQ(close(d3), 0, "vfio_device_fops_release");
    EXPECT_FD(d3, ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f.0   "), R_MATCH);
    EXPECT_EQ(close(d3), 0, "vfio_device_fops_release");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:1f.0 foo"), EINVAL, R_MATCH_OPT);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD,
                     "0000:00:1f.0 vf_token=2ab74924-c335-45f4-9b16-8569e5b08258"),
               EINVAL, R_VF_TOKEN);
    /* A name that ends exactly at an unmapped page: read, then matched. */
    EXPECT_FD(d3, ioctl(g, VFIO_GROUP_GET_DEVICE_FD, adv_edge(&P, DEV_A)), R_DEVFD);
    EXPECT_EQ(close(d3), 0, "vfio_device_fops_release");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, adv_cross(&P, DEV_A)), EFAULT, R_EFAULT);

    /* The other group: its own device only. */
    int g6;
    EXPECT_FD(g6, open("/dev/vfio/6", O_RDWR), "vfio_group_fops_open");
    EXPECT_ERR(ioctl(g6, VFIO_GROUP_GET_DEVICE_FD, DEV_B), EINVAL, R_NO_CONTAINER);
    EXPECT_EQ(ioctl(g6, VFIO_GROUP_SET_CONTAINER, &c), 0,
              "vfio_container_attach_group (an emulated group joins the type1 container)");
    EXPECT_ERR(ioctl(g6, VFIO_GROUP_GET_DEVICE_FD, DEV_A), ENODEV,
               R_ENODEV " (0000:00:1f.0 is in group 5)");
    int d6;
    EXPECT_FD(d6, ioctl(g6, VFIO_GROUP_GET_DEVICE_FD, DEV_B), R_DEVFD);
    device_answers(d6);

    /* Devices keep their group in use. */
    EXPECT_ERR(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), EBUSY, R_BUSY);
    EXPECT_ERR(ioctl(g6, VFIO_GROUP_UNSET_CONTAINER), EBUSY, R_BUSY);
    struct vfio_group_status st = {.argsz = sizeof(st)};
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &st), 0, "vfio_group_ioctl_get_status");
    EXPECT_EQ(st.flags, VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET,
              "vfio_group_ioctl_get_status: has iommu -> CONTAINER_SET|VIABLE");
    EXPECT_EQ(close(d1), 0, "vfio_device_fops_release");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), EBUSY, R_BUSY " (d2 still open)");
    device_answers(d2);
    EXPECT_EQ(close(d2), 0, "vfio_device_fops_release");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), 0, R_UNSET);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, DEV_A), EINVAL, R_NO_CONTAINER);

    /* Group 6: closing the group fd while its device is open keeps the group held. */
    EXPECT_EQ(close(g6), 0, "vfio_group_fops_release is deferred: the device holds the file");
    device_answers(d6);
    EXPECT_ERR(open("/dev/vfio/6", O_RDWR), EBUSY, R_GROUP_HELD);
    EXPECT_EQ(close(d6), 0, "vfio_device_fops_release -> the last group file reference");
    EXPECT_FD(g6, open("/dev/vfio/6", O_RDWR),
              "vfio_group_fops_release ran with the device's fput: the group opens again");
    EXPECT_EQ(close(g6), 0, "vfio_group_fops_release");

    /* Group 5 again, from scratch, and teardown with the device closed first. */
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), 0, "vfio_container_attach_group");
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0,
              "vfio_ioctl_set_iommu (the last group left, the container lost its driver)");
    EXPECT_FD(d1, ioctl(g, VFIO_GROUP_GET_DEVICE_FD, DEV_A), R_DEVFD);
    device_answers(d1);

    /* dup shares the open file: closing one number releases nothing. */
    int dd;
    EXPECT_FD(dd, fcntl(d1, F_DUPFD_CLOEXEC, 100), "f_dupfd: a second number for the same file");
    EXPECT_EQ(close(d1), 0, "close of one of two numbers: no vfio_device_fops_release yet");
    device_answers(dd);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), EBUSY, R_BUSY " (the dup keeps the file open)");
    int d4;
    EXPECT_FD(d4, dup(dd), "dup");
    EXPECT_EQ(close(dd), 0, "close");
    device_answers(d4);

    /* The container fd may go first: the group holds the container (vfio_container_get). */
    EXPECT_EQ(close(c), 0, "vfio_fops_release: the group still holds a container reference");
    device_answers(d4);
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &st), 0, "vfio_group_ioctl_get_status");
    EXPECT_EQ(st.flags, VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET,
              "vfio_group_ioctl_get_status: the container outlives its fd");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), EBUSY, R_BUSY);
    EXPECT_EQ(close(d4), 0, "vfio_device_fops_release (last reference)");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), 0, R_UNSET);
    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");

    printf("PASS\n");
    fprintf(stderr, "dev_open: %d checks\n", adv_checks);
    return 0;
}
