/*
 * Class 1 (issue 11): bad pointers at every interposed entry point give EFAULT, as from the
 * kernel, and never crash the host program, whether the path is ours or not.
 *
 * Bad pointers used: (void *)1, a pointer into a PROT_NONE page, a string that runs into the
 * PROT_NONE page without a NUL, and (for output buffers) a read-only page or an object that
 * crosses into the PROT_NONE page. Valid memory that ends exactly at the PROT_NONE page must
 * work (the kernel reads no further than it needs).
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 */
#define _GNU_SOURCE
#include "adv_check.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

/* glibc's fortified entry points (declared by <bits/fcntl2.h> only under _FORTIFY_SOURCE). */
extern int __open_2(const char *path, int flags);
extern int __open64_2(const char *path, int flags);
extern int __openat_2(int dirfd, const char *path, int flags);
extern int __openat64_2(int dirfd, const char *path, int flags);

#define R_GETNAME                                                                           \
    "getname_flags -> strncpy_from_user faults -> EFAULT (fs/namei.c, v6.18), before any " \
    "lookup"
#define R_STAT_OUT "cp_new_stat -> copy_to_user faults -> EFAULT (fs/stat.c, v6.18)"
#define R_STATX_OUT "cp_statx -> copy_to_user faults -> EFAULT (fs/stat.c, v6.18)"
#define R_READLINK_OUT                                                                      \
    "do_readlinkat -> vfs_readlink -> readlink_copy: copy_to_user of min(len, bufsiz) "     \
    "bytes faults -> EFAULT (fs/namei.c, v6.18)"
#define R_READLINK_SHORT                                                                    \
    "readlink_copy copies only min(strlen(target), bufsiz) bytes (fs/namei.c, v6.18): a "   \
    "buffer valid for the target alone succeeds"
#define R_READLINK_ZERO "do_readlinkat: bufsiz <= 0 -> EINVAL first (fs/stat.c, v6.18)"
#define R_REALPATH                                                                          \
    "contract (issue 11): realpath reads the path like getname_flags (EFAULT) and "         \
    "writes resolved like copy_to_user (EFAULT); glibc alone would crash"
#define R_EDGE "valid memory ending exactly at a PROT_NONE page is valid user memory"
#define R_API "vfio_fops_unl_ioctl: VFIO_GET_API_VERSION ignores arg (drivers/vfio/container.c, v6.18)"
#define R_CHECK_EXT                                                                         \
    "vfio_fops_unl_ioctl: VFIO_CHECK_EXTENSION takes arg as a value "                      \
    "(drivers/vfio/container.c, v6.18; vfio_iommu_type1_check_extension)"
#define R_NODRIVER                                                                          \
    "vfio_fops_unl_ioctl: no iommu driver yet -> default ret -EINVAL, arg never read "      \
    "(drivers/vfio/container.c, v6.18)"
#define R_IN "copy_from_user of minsz faults -> EFAULT (vfio_iommu_type1_*, v6.18)"
#define R_INFO_OUT                                                                          \
    "vfio_iommu_type1_get_info: copy_to_user(arg, &info, minsz) faults -> EFAULT "          \
    "(drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_UNMAP_OUT                                                                         \
    "vfio_iommu_type1_unmap_dma: unmap is done, then copy_to_user of the size faults -> "   \
    "EFAULT (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_BITMAP_OUT                                                                        \
    "update_user_bitmap: copy_to_user of the dma bitmap faults -> EFAULT "                  \
    "(drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_STATUS_IN "vfio_group_ioctl_get_status: copy_from_user faults -> EFAULT (drivers/vfio/group.c, v6.18)"
#define R_STATUS_OUT "vfio_group_ioctl_get_status: copy_to_user faults -> EFAULT (drivers/vfio/group.c, v6.18)"
#define R_SETC "vfio_group_ioctl_set_container: get_user(fd) faults -> EFAULT (drivers/vfio/group.c, v6.18)"
#define R_DEVFD "vfio_group_ioctl_get_device_fd: strndup_user faults -> EFAULT (drivers/vfio/group.c, v6.18)"
#define R_PASS "not ours: the kernel's own answer passes through the preload"

static const char *const LINK = "/sys/bus/pci/devices/0000:00:04.0/iommu_group";
static const char *const TARGET = "../../../kernel/iommu_groups/7";

static struct adv_pages P;

/* Every path entry point with one bad path: EFAULT. */
static void bad_path_everywhere(const char *bad)
{
    struct stat st;
    struct statx stx;
    char buf[256];
    char resolved[PATH_MAX];

    EXPECT_ERR(open(bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(open64(bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(openat(AT_FDCWD, bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(openat64(AT_FDCWD, bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(__open_2(bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(__open64_2(bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(__openat_2(AT_FDCWD, bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(__openat64_2(AT_FDCWD, bad, O_RDWR), EFAULT, R_GETNAME);
    EXPECT_ERR(stat(bad, &st), EFAULT, R_GETNAME);
    EXPECT_ERR(lstat(bad, &st), EFAULT, R_GETNAME);
    EXPECT_ERR(fstatat(AT_FDCWD, bad, &st, 0), EFAULT, R_GETNAME);
    EXPECT_ERR(fstatat(AT_FDCWD, bad, &st, AT_SYMLINK_NOFOLLOW), EFAULT, R_GETNAME);
    EXPECT_ERR(statx(AT_FDCWD, bad, 0, STATX_BASIC_STATS, &stx), EFAULT, R_GETNAME);
    EXPECT_ERR(access(bad, F_OK), EFAULT, R_GETNAME);
    EXPECT_ERR(faccessat(AT_FDCWD, bad, R_OK, 0), EFAULT, R_GETNAME);
    EXPECT_ERR(readlink(bad, buf, sizeof(buf)), EFAULT, R_GETNAME);
    EXPECT_ERR(readlinkat(AT_FDCWD, bad, buf, sizeof(buf)), EFAULT, R_GETNAME);
    EXPECT_NULL_ERR(realpath(bad, resolved), EFAULT, R_REALPATH);
    EXPECT_NULL_ERR(realpath(bad, NULL), EFAULT, R_REALPATH);
}

/* stat-family output buffers for one path that exists: EFAULT for each bad buffer. */
static void bad_stat_buffers(const char *path)
{
    adv_ctx = path;
    void *bufs[] = {ADV_BAD1, P.none, P.ro, P.none - sizeof(struct stat) / 2};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        EXPECT_ERR(stat(path, bufs[i]), EFAULT, R_STAT_OUT);
        EXPECT_ERR(lstat(path, bufs[i]), EFAULT, R_STAT_OUT);
        EXPECT_ERR(fstatat(AT_FDCWD, path, bufs[i], 0), EFAULT, R_STAT_OUT);
    }
    void *xbufs[] = {ADV_BAD1, P.none, P.ro, P.none - sizeof(struct statx) / 2};
    for (size_t i = 0; i < sizeof(xbufs) / sizeof(xbufs[0]); i++)
        EXPECT_ERR(statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, xbufs[i]), EFAULT, R_STATX_OUT);
    /* The same buffers, valid and ending at the fault: success. */
    EXPECT_EQ(stat(path, adv_edge_obj(&P, sizeof(struct stat))), 0, R_EDGE);
    EXPECT_EQ(statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, adv_edge_obj(&P, sizeof(struct statx))),
              0, R_EDGE);
    adv_ctx = NULL;
}

/* fstat-family output buffers on an open fd. */
static void bad_fstat_buffers(int fd)
{
    void *bufs[] = {ADV_BAD1, P.none, P.ro, P.none - sizeof(struct stat) / 2};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        EXPECT_ERR(fstat(fd, bufs[i]), EFAULT, R_STAT_OUT);
        EXPECT_ERR(fstatat(fd, "", bufs[i], AT_EMPTY_PATH), EFAULT, R_STAT_OUT);
        EXPECT_ERR(statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, bufs[i]), EFAULT, R_STATX_OUT);
    }
    EXPECT_EQ(fstat(fd, adv_edge_obj(&P, sizeof(struct stat))), 0, R_EDGE);
}

static void paths_and_buffers(void)
{
    /* Bad paths, ours and not ours: the preload is loaded into every program. */
    bad_path_everywhere(ADV_BAD1);
    bad_path_everywhere(P.none);
    bad_path_everywhere(adv_cross(&P, "/dev/vfio/vfi"));
    bad_path_everywhere(adv_cross(&P, "/sys/bus/pci/devices/0000:00:04.0/iommu_gro"));
    bad_path_everywhere(adv_cross(&P, "/tmp/not-vfio"));

    /* Paths that end exactly at the PROT_NONE page are fine. */
    int fd;
    EXPECT_FD(fd, open(adv_edge(&P, "/dev/vfio/vfio"), O_RDWR), R_EDGE);
    EXPECT_EQ(ioctl(fd, VFIO_GET_API_VERSION), VFIO_API_VERSION, R_API);
    EXPECT_EQ(close(fd), 0, R_EDGE);
    EXPECT_FD(fd, open(adv_edge(&P, "/dev/null"), O_RDWR), R_EDGE);
    EXPECT_EQ(close(fd), 0, R_EDGE);
    struct stat st;
    EXPECT_EQ(stat(adv_edge(&P, "/dev/vfio/7"), &st), 0, R_EDGE);
    EXPECT_TRUE(S_ISCHR(st.st_mode), R_EDGE);
    char buf[256];
    EXPECT_EQ(readlink(adv_edge(&P, LINK), buf, sizeof(buf)), (long)strlen(TARGET), R_EDGE);
    char resolved[PATH_MAX];
    EXPECT_TRUE(realpath(adv_edge(&P, "/dev/vfio/vfio"), resolved) != NULL, R_EDGE);
    EXPECT_TRUE(strcmp(resolved, "/dev/vfio/vfio") == 0, R_EDGE);

    /* stat buffers: ours (container, group, sysfs link) and not ours. */
    bad_stat_buffers("/dev/vfio/vfio");
    bad_stat_buffers("/dev/vfio/7");
    bad_stat_buffers(LINK);
    bad_stat_buffers("/");

    /* readlink buffers on the fake sysfs link and on a real one. */
    const char *links[] = {LINK, "/proc/self/exe"};
    for (size_t i = 0; i < 2; i++) {
        EXPECT_ERR(readlink(links[i], ADV_BAD1, 64), EFAULT, R_READLINK_OUT);
        EXPECT_ERR(readlink(links[i], P.none, 64), EFAULT, R_READLINK_OUT);
        EXPECT_ERR(readlink(links[i], P.ro, 64), EFAULT, R_READLINK_OUT);
        EXPECT_ERR(readlinkat(AT_FDCWD, links[i], ADV_BAD1, 64), EFAULT, R_READLINK_OUT);
        EXPECT_ERR(readlinkat(AT_FDCWD, links[i], P.none, 64), EFAULT, R_READLINK_OUT);
        EXPECT_ERR(readlinkat(AT_FDCWD, links[i], P.ro, 64), EFAULT, R_READLINK_OUT);
        EXPECT_ERR(readlink(links[i], P.none, 0), EINVAL, R_READLINK_ZERO);
    }
    /* 40 valid bytes before the fault, bufsiz 4096: the 30-byte target fits, success. */
    memset(P.none - 40, 'x', 40);
    EXPECT_EQ(readlink(LINK, P.none - 40, 4096), (long)strlen(TARGET), R_READLINK_SHORT);
    EXPECT_TRUE(memcmp(P.none - 40, TARGET, strlen(TARGET)) == 0, R_READLINK_SHORT);
    /* 10 valid bytes, bufsiz 4096: the copy of 30 bytes faults. */
    EXPECT_ERR(readlink(LINK, P.none - 10, 4096), EFAULT, R_READLINK_OUT);

    /* realpath's resolved buffer for a fake path. */
    EXPECT_NULL_ERR(realpath("/dev/vfio/vfio", ADV_BAD1), EFAULT, R_REALPATH);
    EXPECT_NULL_ERR(realpath("/dev/vfio/vfio", P.none), EFAULT, R_REALPATH);
    EXPECT_NULL_ERR(realpath("/dev/vfio/vfio", P.ro), EFAULT, R_REALPATH);
    EXPECT_NULL_ERR(realpath(LINK, P.ro), EFAULT, R_REALPATH);
}

static void fd_buffers(void)
{
    int c, g;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    bad_fstat_buffers(c);
    bad_fstat_buffers(g);
    int fds[2];
    EXPECT_EQ(pipe(fds), 0, R_PASS);
    bad_fstat_buffers(fds[0]);
    /* A non-VFIO ioctl with a bad pointer: the kernel's own EFAULT (pipe_ioctl put_user). */
    EXPECT_ERR(ioctl(fds[0], FIONREAD, ADV_BAD1), EFAULT, R_PASS);
    close(fds[0]);
    close(fds[1]);
    close(g);
    close(c);
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

static void ioctl_args(void)
{
    int c, g;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");

    /* Before SET_IOMMU: no arg needed, a value arg, and no driver for the rest. */
    EXPECT_EQ(ioctl(c, VFIO_GET_API_VERSION, ADV_BAD1), VFIO_API_VERSION, R_API);
    EXPECT_EQ(ioctl(c, VFIO_CHECK_EXTENSION, (void *)VFIO_TYPE1v2_IOMMU), 1, R_CHECK_EXT);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, ADV_BAD1), EINVAL, R_NODRIVER);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, P.none), EINVAL, R_NODRIVER);

    /* Group: GET_STATUS in and out, SET_CONTAINER, GET_DEVICE_FD. */
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_STATUS, ADV_BAD1), EFAULT, R_STATUS_IN);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_STATUS, P.none), EFAULT, R_STATUS_IN);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_STATUS, P.none - 4), EFAULT, R_STATUS_IN);
    struct vfio_group_status *ro_status = (struct vfio_group_status *)P.ro;
    EXPECT_TRUE(ro_status->argsz == 0, "read-only page is zero-filled");
    /* argsz 0 in the read-only page: the EINVAL check comes before the write. */
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_STATUS, P.ro), EINVAL,
               "vfio_group_ioctl_get_status: argsz < minsz -> EINVAL before copy_to_user");
    {
        /* A valid argsz in a read-only page: the read succeeds, the write-back faults. */
        struct vfio_group_status s = {.argsz = sizeof(s)};
        EXPECT_EQ(mprotect(P.ro, P.page, PROT_READ | PROT_WRITE), 0, "mprotect");
        memcpy(P.ro, &s, sizeof(s));
        EXPECT_EQ(mprotect(P.ro, P.page, PROT_READ), 0, "mprotect");
        EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_STATUS, P.ro), EFAULT, R_STATUS_OUT);
    }
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, ADV_BAD1), EFAULT, R_SETC);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, P.none), EFAULT, R_SETC);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, P.none - 2), EFAULT, R_SETC);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, ADV_BAD1), EFAULT, R_DEVFD);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, P.none), EFAULT, R_DEVFD);
    EXPECT_ERR(ioctl(g, VFIO_GROUP_GET_DEVICE_FD, adv_cross(&P, "0000:00:04.0")), EFAULT, R_DEVFD);

    /* A container fd at the edge of valid memory works. */
    int *cfd = adv_edge_obj(&P, sizeof(int));
    *cfd = c;
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, cfd), 0, R_EDGE);
    struct vfio_group_status *st = adv_edge_obj(&P, sizeof(*st));
    st->argsz = sizeof(*st);
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, st), 0, R_EDGE);
    EXPECT_TRUE(st->flags == (VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET),
                "vfio_group_ioctl_get_status: container set -> VIABLE | CONTAINER_SET");
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");

    /* GET_INFO: bad in, crossing, read-only out, and valid up to the edge. */
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, P.none), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, P.none - 8), EFAULT, R_IN);
    {
        /* A valid argsz in a read-only page: the read succeeds, the write-back faults. */
        struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
        EXPECT_EQ(mprotect(P.ro, P.page, PROT_READ | PROT_WRITE), 0, "mprotect");
        memcpy(P.ro, &info, sizeof(info));
        EXPECT_EQ(mprotect(P.ro, P.page, PROT_READ), 0, "mprotect");
        EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, P.ro), EFAULT, R_INFO_OUT);
        struct vfio_iommu_type1_info *edge = adv_edge_obj(&P, sizeof(info));
        edge->argsz = sizeof(info);
        EXPECT_EQ(ioctl(c, VFIO_IOMMU_GET_INFO, edge), 0, R_EDGE);
        EXPECT_TRUE(edge->flags & VFIO_IOMMU_INFO_PGSIZES,
                    "vfio_iommu_type1_get_info: flags = VFIO_IOMMU_INFO_PGSIZES");
    }

    /* MAP_DMA and UNMAP_DMA. */
    size_t pg = P.page;
    char *mem = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_TRUE(mem != MAP_FAILED, "mmap");
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, P.none), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, P.none - 16), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, P.none), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, P.none - 12), EFAULT, R_IN);
    EXPECT_EQ(map(c, 0x100000, mem, pg), 0, "vfio_dma_do_map");
    {
        struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = 0x100000, .size = pg};
        EXPECT_EQ(mprotect(P.ro, P.page, PROT_READ | PROT_WRITE), 0, "mprotect");
        memcpy(P.ro, &u, sizeof(u));
        EXPECT_EQ(mprotect(P.ro, P.page, PROT_READ), 0, "mprotect");
        EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, P.ro), EFAULT, R_UNMAP_OUT);
        /* ... and the mapping is gone: a second unmap finds nothing (size 0 written back). */
        struct vfio_iommu_type1_dma_unmap *edge = adv_edge_obj(&P, sizeof(u));
        *edge = u;
        EXPECT_EQ(ioctl(c, VFIO_IOMMU_UNMAP_DMA, edge), 0, R_EDGE);
        EXPECT_TRUE(edge->size == 0, "vfio_dma_do_unmap (v2): no dma in range -> size 0");
        /* A map struct ending at the edge works too. */
        struct vfio_iommu_type1_dma_map *m = adv_edge_obj(&P, sizeof(*m));
        m->argsz = sizeof(*m);
        m->flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
        m->vaddr = (uintptr_t)mem;
        m->iova = 0x100000;
        m->size = 2 * pg;
        EXPECT_EQ(ioctl(c, VFIO_IOMMU_MAP_DMA, m), 0, R_EDGE);
    }

    /* DIRTY_PAGES: bad header, and a bitmap the kernel cannot write. */
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, ADV_BAD1), EFAULT,
               "vfio_iommu_type1_dirty_pages: copy_from_user faults -> EFAULT (v2 checked first)");
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, P.none), EFAULT,
               "vfio_iommu_type1_dirty_pages: copy_from_user faults -> EFAULT (v2 checked first)");
    struct vfio_iommu_type1_dirty_bitmap start = {.argsz = sizeof(start),
                                                  .flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &start), 0, "vfio_iommu_type1_dirty_pages START");
    struct {
        struct vfio_iommu_type1_dirty_bitmap hdr;
        struct vfio_iommu_type1_dirty_bitmap_get get;
    } gb;
    void *datas[] = {P.none, P.ro, ADV_BAD1};
    for (size_t i = 0; i < 3; i++) {
        memset(&gb, 0, sizeof(gb));
        gb.hdr.argsz = sizeof(gb);
        gb.hdr.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
        gb.get.iova = 0x100000;
        gb.get.size = 2 * pg;
        gb.get.bitmap.pgsize = pg;
        gb.get.bitmap.size = sizeof(uint64_t);
        gb.get.bitmap.data = datas[i];
        EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &gb), EFAULT, R_BITMAP_OUT);
    }
    /* The range header itself crossing into PROT_NONE. */
    void *cross = P.none - 20;
    memcpy(cross, &gb, 20);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, cross), EFAULT,
               "vfio_iommu_type1_dirty_pages GET_BITMAP: copy_from_user of the range faults");
    struct vfio_iommu_type1_dirty_bitmap stop = {.argsz = sizeof(stop),
                                                 .flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &stop), 0, "vfio_iommu_type1_dirty_pages STOP");

    close(g);
    close(c);
    munmap(mem, 4 * pg);
}

int main(void)
{
    P = adv_pages();
    paths_and_buffers();
    fd_buffers();
    ioctl_args();
    printf("PASS\n");
    fprintf(stderr, "adv_bad_pointers: %d checks\n", adv_checks);
    return 0;
}
