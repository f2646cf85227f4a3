/*
 * A VFIO container user, written as a VMM would: open the container and a group, check
 * extensions, set the container, SET_IOMMU, walk GET_INFO's capability chain, map guest RAM,
 * exercise the v2 and v1 unmap rules, dirty tracking and unmap-all, then unset and close.
 * Every result and errno is asserted against the kernel's container and type1 ioctls
 * (drivers/vfio/container.c, vfio_iommu_type1.c, Linux v6.18). Compiles as C and C++.
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 * argv[1]: "group-first" closes the group before the container, else the container first.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int checks;
#define CHECK(cond)                                                                        \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (errno %d: %s)\n", __FILE__, __LINE__, \
                    #cond, errno, strerror(errno));                                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)
#define EXPECT_ERR(call, e)                                                                \
    do {                                                                                   \
        errno = 0;                                                                         \
        long r_ = (long)(call);                                                            \
        CHECK(r_ == -1 && errno == (e));                                                   \
    } while (0)

#define MIB (1024UL * 1024UL)

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

static int map(int c, uint64_t iova, void *vaddr, uint64_t size, uint32_t flags)
{
    struct vfio_iommu_type1_dma_map m;
    memset(&m, 0, sizeof(m));
    m.argsz = sizeof(m);
    m.flags = flags;
    m.vaddr = (uintptr_t)vaddr;
    m.iova = iova;
    m.size = size;
    return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

static int unmap(int c, uint64_t iova, uint64_t *size, uint32_t flags)
{
    struct vfio_iommu_type1_dma_unmap u;
    memset(&u, 0, sizeof(u));
    u.argsz = sizeof(u);
    u.flags = flags;
    u.iova = iova;
    u.size = *size;
    int r = ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u);
    *size = u.size;
    return r;
}

static const uint32_t RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

int main(int argc, char **argv)
{
    int group_first = argc > 1 && strcmp(argv[1], "group-first") == 0;
    struct stat st;
    char buf[256];

    /* The device nodes and sysfs, as VMMs find them. */
    CHECK(stat("/dev/vfio/vfio", &st) == 0 && S_ISCHR(st.st_mode));
    CHECK(access("/dev/vfio/7", R_OK | W_OK) == 0);
    EXPECT_ERR(access("/dev/vfio/99", F_OK), ENOENT);
    ssize_t n = readlink("/sys/bus/pci/devices/0000:00:04.0/iommu_group", buf, sizeof(buf) - 1);
    CHECK(n > 0);
    buf[n] = 0;
    CHECK(strcmp(buf, "../../../kernel/iommu_groups/7") == 0);
    char *rp = realpath("/sys/bus/pci/devices/0000:00:04.0/iommu_group", NULL);
    CHECK(rp && strcmp(rp, "/sys/kernel/iommu_groups/7") == 0);
    free(rp);
    CHECK(stat("/sys/bus/pci/devices/0000:00:04.0", &st) == 0 && S_ISDIR(st.st_mode));

    /* The container before SET_IOMMU (vfio_fops_unl_ioctl, vfio_iommu_type1_check_extension). */
    int c = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    CHECK(c >= 0);
    errno = 0;
    CHECK(ioctl(c, VFIO_GET_API_VERSION) == VFIO_API_VERSION && errno == 0);
    CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) == 1);
    CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1);
    CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_UNMAP_ALL) == 1);
    CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_UPDATE_VADDR) == 0);
    CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_NOIOMMU_IOMMU) == 0);
    EXPECT_ERR(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), EINVAL); /* no group yet */
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, NULL), EINVAL);           /* no driver */

    /* The group. */
    int g = open("/dev/vfio/7", O_RDWR);
    CHECK(g >= 0);
    EXPECT_ERR(open("/dev/vfio/7", O_RDWR), EBUSY);
    EXPECT_ERR(open("/dev/vfio/99", O_RDWR), ENOENT);
    struct vfio_group_status gs;
    memset(&gs, 0, sizeof(gs));
    gs.argsz = sizeof(gs);
    CHECK(ioctl(g, VFIO_GROUP_GET_STATUS, &gs) == 0);
    CHECK((gs.flags & VFIO_GROUP_FLAGS_VIABLE) && !(gs.flags & VFIO_GROUP_FLAGS_CONTAINER_SET));
    EXPECT_ERR(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), EINVAL);
    /* vfio_group_ioctl_set_container (v6.18): an fd that is not open is EBADF, an open fd
     * that is neither a container nor an iommufd EBADFD. */
    int bad = -1;
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, &bad), EBADF);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, (int *)8), EFAULT);
    int not_vfio = open("/dev/null", O_RDWR);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, &not_vfio), EBADFD);
    close(not_vfio);
    CHECK(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) == 0);
    CHECK(ioctl(g, VFIO_GROUP_GET_STATUS, &gs) == 0 && (gs.flags & VFIO_GROUP_FLAGS_CONTAINER_SET));
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), EINVAL);
    /* vfio_group_ioctl_get_device_fd: the name is looked up first (ENODEV), then opening the
     * device needs the container's IOMMU driver (vfio_group_use_container: EINVAL). */
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:05.0"), ENODEV);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:04.0"), EINVAL);
    EXPECT_ERR(ioctl(g, 0x3b99), ENOTTY);

    /* SET_IOMMU: types nobody supports fail with ENODEV and leave the container usable. */
    EXPECT_ERR(ioctl(c, VFIO_SET_IOMMU, 6), ENODEV);
    EXPECT_ERR(ioctl(c, VFIO_SET_IOMMU, VFIO_SPAPR_TCE_IOMMU), ENODEV);
    CHECK(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0);
    /* An open device is a container user: UNSET_CONTAINER is EBUSY until it closes. */
    int dev = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:00:04.0");
    CHECK(dev >= 0 && (fcntl(dev, F_GETFD) & FD_CLOEXEC));
    EXPECT_ERR(ioctl(g, VFIO_GROUP_UNSET_CONTAINER), EBUSY);
    CHECK(close(dev) == 0);
    EXPECT_ERR(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), EINVAL);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_ENABLE), ENOTTY);
    CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_UPDATE_VADDR) == 1);

    /* GET_INFO: first with the bare struct to learn the size, then the capability chain. */
    struct vfio_iommu_type1_info *info = (struct vfio_iommu_type1_info *)calloc(1, 4096);
    info->argsz = sizeof(*info);
    CHECK(ioctl(c, VFIO_IOMMU_GET_INFO, info) == 0);
    CHECK((info->flags & VFIO_IOMMU_INFO_PGSIZES) && (info->flags & VFIO_IOMMU_INFO_CAPS));
    CHECK(info->iova_pgsizes == (4096UL | 2 * MIB | 1024 * MIB));
    CHECK(info->argsz > sizeof(*info) && info->cap_offset == 0);
    uint32_t need = info->argsz;
    memset(info, 0, 4096);
    info->argsz = need;
    CHECK(ioctl(c, VFIO_IOMMU_GET_INFO, info) == 0 && info->cap_offset == sizeof(*info));
    struct vfio_iommu_type1_info_cap_iova_range *ranges =
        (struct vfio_iommu_type1_info_cap_iova_range *)find_cap(info, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE);
    CHECK(ranges && ranges->nr_iovas == 2);
    CHECK(ranges->iova_ranges[0].start == 0 && ranges->iova_ranges[0].end == 0xfedfffff);
    CHECK(ranges->iova_ranges[1].start == 0xfef00000 && ranges->iova_ranges[1].end == (1UL << 48) - 1);
    struct vfio_iommu_type1_info_cap_migration *mig =
        (struct vfio_iommu_type1_info_cap_migration *)find_cap(info, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION);
    CHECK(mig && mig->pgsize_bitmap == 4096 && mig->max_dirty_bitmap_size == 256 * MIB);
    struct vfio_iommu_type1_info_dma_avail *avail =
        (struct vfio_iommu_type1_info_dma_avail *)find_cap(info, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL);
    CHECK(avail && avail->avail == 65535);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, (void *)8), EFAULT);

    /* MAP_DMA over guest RAM (this program's memory), in the kernel's check order
     * (vfio_dma_do_map). */
    size_t ram_size = 16 * MIB;
    char *ram = (char *)mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ram != MAP_FAILED);
    memset(ram, 0x5a, ram_size);
    CHECK(map(c, 0x100000, ram, ram_size, RW) == 0);
    EXPECT_ERR(map(c, 0x100000, ram, ram_size, RW), EEXIST);
    EXPECT_ERR(map(c, 0x40000000, ram, 0, RW), EINVAL);
    EXPECT_ERR(map(c, UINT64_MAX - 4095, ram, 8192, RW), EOVERFLOW);
    EXPECT_ERR(map(c, 0x40000000, ram, 4096, 0), EINVAL);
    EXPECT_ERR(map(c, 0x40000800, ram, 4096, RW), EINVAL);
    EXPECT_ERR(map(c, 0xfee00000, ram, 4096, RW), EINVAL);                  /* MSI window */
    EXPECT_ERR(map(c, 0x40000000, (void *)0x1000, 4096, RW), EFAULT);        /* unmapped */
    char *ro = (char *)mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_ERR(map(c, 0x40000000, ro, 4096, RW), EFAULT);                    /* read-only */
    CHECK(map(c, 0x40000000, ro, 4096, VFIO_DMA_MAP_FLAG_READ) == 0);

    /* UNMAP_DMA, v2 rules (vfio_dma_do_unmap): a bisecting unmap fails and writes nothing back. */
    uint64_t sz = 4096;
    struct vfio_iommu_type1_dma_unmap u;
    memset(&u, 0, sizeof(u));
    u.argsz = sizeof(u);
    u.iova = 0x101000;
    u.size = 4096;
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u), EINVAL);
    CHECK(u.size == 4096);
    sz = 1UL << 30;
    CHECK(unmap(c, 0x40000000, &sz, 0) == 0 && sz == 4096);
    sz = 0;
    EXPECT_ERR(unmap(c, 0x100000, &sz, 0), EINVAL);

    /* Dirty tracking (vfio_iommu_type1_dirty_pages): the IOMMU group never pinned, so every
     * page is dirty. */
    /* The header and its payload (a flexible array) live in one aligned buffer. */
    uint64_t dp_buf[8];
    memset(dp_buf, 0, sizeof(dp_buf));
    struct vfio_iommu_type1_dirty_bitmap *dp = (struct vfio_iommu_type1_dirty_bitmap *)dp_buf;
    struct vfio_iommu_type1_dirty_bitmap_get *get =
        (struct vfio_iommu_type1_dirty_bitmap_get *)(dp_buf + 1);
    dp->argsz = sizeof(*dp);
    dp->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START;
    CHECK(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp) == 0);
    CHECK(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp) == 0); /* idempotent */
    uint64_t *bits = (uint64_t *)calloc(1, ram_size / 4096 / 8);
    dp->argsz = sizeof(*dp) + sizeof(*get);
    dp->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
    get->iova = 0x100000;
    get->size = ram_size;
    get->bitmap.pgsize = 4096;
    get->bitmap.size = ram_size / 4096 / 8;
    get->bitmap.data = (__u64 *)bits;
    CHECK(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp) == 0);
    for (size_t i = 0; i < ram_size / 4096 / 64; i++)
        CHECK(bits[i] == UINT64_MAX);
    get->bitmap.pgsize = 2 * MIB;
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp), EINVAL);
    dp->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP;
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp), EINVAL);

    /* Unmap with a dirty bitmap, then STOP. */
    uint64_t ub_buf[8];
    memset(ub_buf, 0, sizeof(ub_buf));
    struct vfio_iommu_type1_dma_unmap *ub = (struct vfio_iommu_type1_dma_unmap *)ub_buf;
    struct vfio_bitmap *ubm = (struct vfio_bitmap *)(ub_buf + 3);
    memset(bits, 0, ram_size / 4096 / 8);
    ub->argsz = sizeof(*ub) + sizeof(*ubm);
    ub->flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
    ub->iova = 0x100000;
    ub->size = ram_size;
    ubm->pgsize = 4096;
    ubm->size = ram_size / 4096 / 8;
    ubm->data = (__u64 *)bits;
    CHECK(ioctl(c, VFIO_IOMMU_UNMAP_DMA, ub) == 0 && ub->size == ram_size);
    CHECK(bits[0] == UINT64_MAX && bits[ram_size / 4096 / 64 - 1] == UINT64_MAX);
    dp->argsz = sizeof(*dp);
    dp->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP;
    CHECK(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp) == 0);

    /* Unmap-all. */
    CHECK(map(c, 0x100000, ram, 2 * MIB, RW) == 0);
    CHECK(map(c, 0x80000000, ram + 2 * MIB, 4 * MIB, RW) == 0);
    sz = 0;
    CHECK(unmap(c, 0, &sz, VFIO_DMA_UNMAP_FLAG_ALL) == 0 && sz == 6 * MIB);

    /* A v1 container on the emulated group: inexact unmaps and no dirty tracking. */
    int c1 = open("/dev/vfio/vfio", O_RDWR);
    int g8 = open("/dev/vfio/8", O_RDWR);
    CHECK(c1 >= 0 && g8 >= 0);
    CHECK(ioctl(g8, VFIO_GROUP_SET_CONTAINER, &c1) == 0);
    CHECK(ioctl(c1, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) == 0);
    CHECK(map(c1, 0, ram, 16384, RW) == 0);
    sz = 4096;
    CHECK(unmap(c1, 4096, &sz, 0) == 0 && sz == 0);   /* interior start: size 0 */
    sz = 4096;
    CHECK(unmap(c1, 0, &sz, 0) == 0 && sz == 16384);  /* removes the whole mapping */
    dp->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START;
    EXPECT_ERR(ioctl(c1, VFIO_IOMMU_DIRTY_PAGES, dp), EACCES);
    /* Closing the container fd first: the group keeps it alive. */
    CHECK(close(c1) == 0);
    CHECK(ioctl(g8, VFIO_GROUP_GET_STATUS, &gs) == 0 && (gs.flags & VFIO_GROUP_FLAGS_CONTAINER_SET));
    CHECK(ioctl(g8, VFIO_GROUP_UNSET_CONTAINER) == 0);
    CHECK(close(g8) == 0);

    /* dup'ed fds reach the same objects. */
    int c2 = dup(c);
    int c3 = fcntl(c, F_DUPFD_CLOEXEC, 100);
    CHECK(c2 >= 0 && c3 >= 100);
    CHECK(ioctl(c2, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1);
    CHECK(map(c3, 0x100000, ram, 4096, RW) == 0);
    sz = 4096;
    CHECK(unmap(c, 0x100000, &sz, 0) == 0 && sz == 4096);
    CHECK(close(c2) == 0 && close(c3) == 0);

    /* Unset and close in the requested order. */
    if (group_first) {
        CHECK(close(g) == 0); /* releases the group: the container loses its only group */
        EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, info), EINVAL);
        CHECK(close(c) == 0);
    } else {
        CHECK(ioctl(g, VFIO_GROUP_UNSET_CONTAINER) == 0);
        CHECK(close(c) == 0);
        CHECK(close(g) == 0);
    }
    /* The group can be opened again. */
    g = open("/dev/vfio/7", O_RDWR);
    CHECK(g >= 0 && close(g) == 0);
    EXPECT_ERR(close(g), EBADF);
    free(info);
    free(bits);
    printf("PASS %d checks\n", checks);
    return 0;
}
