/*
 * The trace from two processes into one file (issue 11): the harness runs two instances of
 * this program at once with TYPE1_TRACE naming the same file. Each issues about 2000 VFIO
 * ioctls whose outputs the trace must decode: MAP_DMA (and a second MAP_DMA failing with
 * EEXIST, vfio_dma_do_map), GET_INFO with its capability chain, DIRTY_PAGES GET_BITMAP (every
 * page dirty: the IOMMU-backed group never pinned, vfio_iommu_type1_dirty_pages, v6.18) and
 * UNMAP_DMA (the unmapped size written back, vfio_dma_do_unmap).
 *
 * Prints "PASS ioctls=N pid=P" (N: every ioctl issued on a VFIO fd), or exits non-zero.
 * argv[1]: iterations (5 ioctls each). Expects TYPE1_GROUPS="7:iommu".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 16
#define IOVA 0x100000UL

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (errno %d: %s)\n", __FILE__, __LINE__, \
                    #cond, errno, strerror(errno));                                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static long issued;

/* ioctl on a VFIO fd, counted. */
static int vioctl(int fd, unsigned long request, void *arg)
{
    issued++;
    return ioctl(fd, request, arg);
}

static int map(int c, void *vaddr)
{
    struct vfio_iommu_type1_dma_map m;
    memset(&m, 0, sizeof(m));
    m.argsz = sizeof(m);
    m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    m.vaddr = (uintptr_t)vaddr;
    m.iova = IOVA;
    m.size = PAGES * 4096;
    return vioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 400;
    int c = open("/dev/vfio/vfio", O_RDWR);
    CHECK(c >= 0);
    int g = open("/dev/vfio/7", O_RDWR);
    CHECK(g >= 0);
    CHECK(vioctl(g, VFIO_GROUP_SET_CONTAINER, &c) == 0);
    CHECK(vioctl(c, VFIO_SET_IOMMU, (void *)(uintptr_t)VFIO_TYPE1v2_IOMMU) == 0);
    char *ram = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ram != MAP_FAILED);
    memset(ram, 1, PAGES * 4096);

    /* Header and payload of the variable-size requests, in aligned buffers. */
    uint64_t dp_buf[8];
    memset(dp_buf, 0, sizeof(dp_buf));
    struct vfio_iommu_type1_dirty_bitmap *dp = (struct vfio_iommu_type1_dirty_bitmap *)dp_buf;
    struct vfio_iommu_type1_dirty_bitmap_get *get =
        (struct vfio_iommu_type1_dirty_bitmap_get *)(dp_buf + 1);
    dp->argsz = sizeof(*dp);
    dp->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START;
    CHECK(vioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp) == 0);
    uint64_t bits = 0;
    struct vfio_iommu_type1_info *info = calloc(1, 4096);
    CHECK(info);

    for (long i = 0; i < iterations; i++) {
        CHECK(map(c, ram) == 0);
        errno = 0;
        CHECK(map(c, ram) == -1 && errno == EEXIST);
        memset(info, 0, 4096);
        info->argsz = 4096;
        CHECK(vioctl(c, VFIO_IOMMU_GET_INFO, info) == 0 && info->cap_offset != 0);
        dp->argsz = sizeof(*dp) + sizeof(*get);
        dp->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
        get->iova = IOVA;
        get->size = PAGES * 4096;
        get->bitmap.pgsize = 4096;
        get->bitmap.size = sizeof(bits);
        get->bitmap.data = (__u64 *)&bits;
        bits = 0;
        CHECK(vioctl(c, VFIO_IOMMU_DIRTY_PAGES, dp) == 0 && bits == (1UL << PAGES) - 1);
        struct vfio_iommu_type1_dma_unmap u;
        memset(&u, 0, sizeof(u));
        u.argsz = sizeof(u);
        u.iova = IOVA;
        u.size = PAGES * 4096;
        CHECK(vioctl(c, VFIO_IOMMU_UNMAP_DMA, &u) == 0 && u.size == PAGES * 4096);
    }
    CHECK(vioctl(g, VFIO_GROUP_UNSET_CONTAINER, NULL) == 0);
    CHECK(close(g) == 0 && close(c) == 0);
    printf("PASS ioctls=%ld pid=%d\n", issued, (int)getpid());
    return 0;
}
