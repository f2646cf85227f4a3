/*
 * `type1 run --memlock` as a program sees it: MAP_DMA of argv[1] bytes of anonymous memory on
 * a type1v2 container. The kernel charges the pinned pages to the locked-memory limit unless
 * the caller has CAP_IPC_LOCK (vfio_lock_acct -> __account_locked_vm, v6.18: ENOMEM past
 * RLIMIT_MEMLOCK without the capability).
 *
 * Prints "MAPPED" or "ENOMEM" (exit 0), anything else is a failure (exit 1).
 * Expects TYPE1_GROUPS="7:iommu".
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

int main(int argc, char **argv)
{
    size_t size = argc > 1 ? strtoul(argv[1], NULL, 0) : 1 << 20;
    int c = open("/dev/vfio/vfio", O_RDWR);
    int g = open("/dev/vfio/7", O_RDWR);
    if (c < 0 || g < 0 || ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) != 0 ||
        ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) {
        perror("container setup");
        return 1;
    }
    char *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(ram, 1, size);
    struct vfio_iommu_type1_dma_map m;
    memset(&m, 0, sizeof(m));
    m.argsz = sizeof(m);
    m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    m.vaddr = (uintptr_t)ram;
    m.iova = 0x100000;
    m.size = size;
    if (ioctl(c, VFIO_IOMMU_MAP_DMA, &m) == 0) {
        puts("MAPPED");
        return 0;
    }
    if (errno == ENOMEM) {
        puts("ENOMEM");
        return 0;
    }
    perror("VFIO_IOMMU_MAP_DMA");
    return 1;
}
