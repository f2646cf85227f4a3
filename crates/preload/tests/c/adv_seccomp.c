/*
 * Class 7 (issue 11): with a seccomp filter that makes process_vm_readv and process_vm_writev
 * fail with EPERM, the container sequence and the EFAULT rules of class 1 behave exactly as
 * without the filter (the preload must fall back, not fail).
 *
 * The filter is installed with raw syscalls (prctl PR_SET_NO_NEW_PRIVS, seccomp
 * SECCOMP_SET_MODE_FILTER); no libseccomp.
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 */
#define _GNU_SOURCE
#include "adv_check.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/vfio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define R_FILTER "seccomp_run_filters: SECCOMP_RET_ERRNO|EPERM (kernel/seccomp.c, v6.18)"
#define R_IN "copy_from_user of minsz faults -> EFAULT (vfio_iommu_type1_*, v6.18)"
#define R_INFO "vfio_iommu_type1_get_info (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_MAP "vfio_dma_do_map (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_UNMAP                                                                             \
    "vfio_iommu_type1_unmap_dma: copy_to_user(size = bytes unmapped) "                     \
    "(drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_DIRTY                                                                             \
    "vfio_iommu_type1_dirty_pages / update_user_bitmap: an IOMMU-backed group that never " \
    "pinned makes every page dirty (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_GETNAME "getname_flags -> strncpy_from_user faults -> EFAULT (fs/namei.c, v6.18)"
#define R_STAT_OUT "cp_new_stat -> copy_to_user faults -> EFAULT (fs/stat.c, v6.18)"
#define R_READLINK_OUT "readlink_copy: copy_to_user faults -> EFAULT (fs/namei.c, v6.18)"

static void install_filter(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_writev, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    EXPECT_EQ(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "prctl PR_SET_NO_NEW_PRIVS");
    EXPECT_EQ(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog), 0,
              "seccomp SECCOMP_SET_MODE_FILTER");

    /* The filter is in force. */
    char src[8] = "abcdefg", dst[8];
    struct iovec l = {.iov_base = dst, .iov_len = sizeof(dst)};
    struct iovec r = {.iov_base = src, .iov_len = sizeof(src)};
    EXPECT_ERR(process_vm_readv(getpid(), &l, 1, &r, 1, 0), EPERM, R_FILTER);
    EXPECT_ERR(process_vm_writev(getpid(), &r, 1, &l, 1, 0), EPERM, R_FILTER);
}

static struct vfio_info_cap_header *find_cap(struct vfio_iommu_type1_info *info, uint16_t id)
{
    uint32_t off = info->cap_offset;
    while (off) {
        struct vfio_info_cap_header *h = (struct vfio_info_cap_header *)((char *)info + off);
        if (h->id == id)
            return h;
        off = h->next;
    }
    return NULL;
}

static int map(int c, uint64_t iova, void *vaddr, uint64_t size)
{
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)vaddr,
        .iova = iova,
        .size = size,
    };
    return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

int main(void)
{
    install_filter();
    struct adv_pages P = adv_pages();
    size_t pg = P.page;

    /* The container sequence. */
    int c, g;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    EXPECT_EQ(ioctl(c, VFIO_GET_API_VERSION), VFIO_API_VERSION, "vfio_fops_unl_ioctl");
    EXPECT_EQ(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), 1,
              "vfio_container_ioctl_check_extension");
    struct vfio_group_status st = {.argsz = sizeof(st)};
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &st), 0, "vfio_group_ioctl_get_status");
    EXPECT_TRUE(st.flags == VFIO_GROUP_FLAGS_VIABLE, "vfio_group_ioctl_get_status: viable");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), 0, "vfio_group_ioctl_set_container");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &st), 0, "vfio_group_ioctl_get_status");
    EXPECT_TRUE(st.flags == (VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET),
                "vfio_group_ioctl_get_status: container set");
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");

    /* GET_INFO: the size probe, then the capability walk. */
    struct vfio_iommu_type1_info probe = {.argsz = sizeof(probe)};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_GET_INFO, &probe), 0, R_INFO);
    EXPECT_TRUE(probe.flags & VFIO_IOMMU_INFO_CAPS, R_INFO ": caps present -> INFO_CAPS");
    EXPECT_TRUE(probe.argsz > sizeof(probe), R_INFO ": argsz raised to the size with caps");
    EXPECT_TRUE(probe.iova_pgsizes & pg, R_INFO ": the page size is supported");
    struct vfio_iommu_type1_info *info = calloc(1, probe.argsz);
    EXPECT_TRUE(info != NULL, "calloc");
    info->argsz = probe.argsz;
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_GET_INFO, info), 0, R_INFO);
    EXPECT_TRUE(info->cap_offset >= sizeof(*info), R_INFO ": caps after the struct");
    struct vfio_iommu_type1_info_cap_iova_range *range =
        (void *)find_cap(info, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE);
    EXPECT_TRUE(range != NULL && range->nr_iovas >= 1, "vfio_iommu_iova_build_caps");
    struct vfio_iommu_type1_info_cap_migration *mig =
        (void *)find_cap(info, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION);
    EXPECT_TRUE(mig != NULL && mig->pgsize_bitmap & pg, "vfio_iommu_migration_build_caps");
    struct vfio_iommu_type1_info_dma_avail *avail =
        (void *)find_cap(info, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL);
    EXPECT_TRUE(avail != NULL && avail->avail > 0, "vfio_iommu_dma_avail_build_caps");

    /* MAP and UNMAP with the size written back. */
    char *mem = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_TRUE(mem != MAP_FAILED, "mmap");
    memset(mem, 0x5a, 4 * pg);
    EXPECT_EQ(map(c, 0x100000, mem, 2 * pg), 0, R_MAP);
    EXPECT_ERR(map(c, 0x100000 + pg, mem, pg), EEXIST, R_MAP ": overlap -> EEXIST");
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = 0, .size = 1UL << 30};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u), 0, "vfio_dma_do_unmap");
    EXPECT_TRUE(u.size == 2 * pg, R_UNMAP);

    /* Dirty tracking. */
    struct vfio_iommu_type1_dirty_bitmap dp = {.argsz = sizeof(dp),
                                               .flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &dp), 0, "vfio_iommu_type1_dirty_pages START");
    EXPECT_EQ(map(c, 0x100000, mem, 2 * pg), 0, R_MAP);
    uint64_t bits = 0;
    struct {
        struct vfio_iommu_type1_dirty_bitmap hdr;
        struct vfio_iommu_type1_dirty_bitmap_get get;
    } gb;
    memset(&gb, 0, sizeof(gb));
    gb.hdr.argsz = sizeof(gb);
    gb.hdr.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
    gb.get.iova = 0x100000;
    gb.get.size = 2 * pg;
    gb.get.bitmap.pgsize = pg;
    gb.get.bitmap.size = sizeof(bits);
    gb.get.bitmap.data = (__u64 *)&bits;
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &gb), 0, "vfio_iommu_type1_dirty_pages GET_BITMAP");
    EXPECT_TRUE(bits == 0x3, R_DIRTY);
    gb.get.bitmap.data = (__u64 *)P.ro;
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &gb), EFAULT, "update_user_bitmap: copy_to_user faults");
    dp.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP;
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &dp), 0, "vfio_iommu_type1_dirty_pages STOP");

    /* The EFAULT rules of class 1, under the filter. */
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, P.none), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, P.none - 8), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, P.none - 16), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, P.none), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_STATUS, ADV_BAD1), EFAULT,
               "vfio_group_ioctl_get_status: copy_from_user faults -> EFAULT");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, P.none), EFAULT,
               "vfio_group_ioctl_set_container: get_user faults -> EFAULT");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, adv_cross(&P, "0000:00:04.0")), EFAULT,
               "vfio_group_ioctl_get_device_fd: strndup_user faults -> EFAULT");
    {
        /* Read-only out: GET_INFO reads argsz, then its write-back faults. */
        struct vfio_iommu_type1_info ro = {.argsz = sizeof(ro)};
        EXPECT_EQ(mprotect(P.ro, pg, PROT_READ | PROT_WRITE), 0, "mprotect");
        memcpy(P.ro, &ro, sizeof(ro));
        EXPECT_EQ(mprotect(P.ro, pg, PROT_READ), 0, "mprotect");
        EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, P.ro), EFAULT,
                   "vfio_iommu_type1_get_info: copy_to_user faults -> EFAULT");
        /* Valid memory ending at the fault works. */
        struct vfio_iommu_type1_info *edge = adv_edge_obj(&P, sizeof(ro));
        edge->argsz = sizeof(ro);
        EXPECT_EQ(ioctl(c, VFIO_IOMMU_GET_INFO, edge), 0, R_INFO);
        struct vfio_iommu_type1_dma_unmap *ue = adv_edge_obj(&P, sizeof(u));
        ue->argsz = sizeof(u);
        ue->iova = 0x100000;
        ue->size = 2 * pg;
        EXPECT_EQ(ioctl(c, VFIO_IOMMU_UNMAP_DMA, ue), 0, "vfio_dma_do_unmap");
        EXPECT_TRUE(ue->size == 2 * pg, R_UNMAP);
    }

    /* Paths and stat/readlink buffers, under the filter. */
    struct stat sb;
    EXPECT_ERR(open(ADV_BAD1, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(open(adv_cross(&P, "/dev/vfio/vfi"), O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(stat(P.none, &sb), EFAULT, R_GETNAME);
    EXPECT_ERR(stat("/dev/vfio/vfio", ADV_BAD1), EFAULT, R_STAT_OUT);
    EXPECT_ERR(stat("/dev/vfio/7", (void *)P.ro), EFAULT, R_STAT_OUT);
    EXPECT_ERR(fstat(c, (void *)P.none), EFAULT, R_STAT_OUT);
    EXPECT_ERR(readlink("/sys/bus/pci/devices/0000:00:04.0/iommu_group", P.ro, 64), EFAULT,
               R_READLINK_OUT);
    int e;
    EXPECT_FD(e, open(adv_edge(&P, "/dev/vfio/vfio"), O_RDWR), "valid path ending at the fault");
    EXPECT_EQ(ioctl(e, VFIO_GET_API_VERSION), VFIO_API_VERSION, "vfio_fops_unl_ioctl");
    EXPECT_EQ(close(e), 0, "vfio_fops_release");

    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(c), 0, "vfio_fops_release");
    free(info);
    printf("PASS\n");
    fprintf(stderr, "adv_seccomp: %d checks\n", adv_checks);
    return 0;
}
