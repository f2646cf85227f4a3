/*
 * Class dev_mmap (issue 12): mmap of the device fd at region offsets as vfio_pci_core_mmap
 * allows it (v6.18): BAR2 maps the device's own memory (what its DMA writes is visible in the
 * mapping and the other way round), BAR4 maps whole (MSIX_MAPPABLE), everything else is
 * EINVAL in the kernel's order. A MAP_DMA of a BAR mmap is a VM_PFNMAP mapping: reserved pfns,
 * neither pinned nor charged against the locked-memory limit.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6"
 * TYPE1_MEMLOCK=64K. Drops CAP_IPC_LOCK from its effective set so that the limit applies.
 */
#define _GNU_SOURCE
#include "dev_common.h"

#include <linux/capability.h>
#include <sys/syscall.h>

#define R_MMAP "vfio_pci_core_mmap (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_MMAP_INDEX R_MMAP ": index >= VFIO_PCI_NUM_REGIONS + num_regions -> EINVAL"
#define R_MMAP_SHARED R_MMAP ": !(vm_flags & VM_SHARED) -> EINVAL"
#define R_MMAP_NONBAR R_MMAP ": index >= VFIO_PCI_ROM_REGION_INDEX (ROM, config, VGA) -> EINVAL"
#define R_MMAP_NOMMAP R_MMAP ": !bar_mmap_supported[index] -> EINVAL"
#define R_MMAP_LEN R_MMAP ": req_start + req_len > PAGE_ALIGN(BAR size) -> EINVAL"
#define R_MMAP_PFN                                                                          \
    R_MMAP ": the mapping is the BAR itself (remap of the BAR's pfns): device and CPU share it"
#define R_PFNMAP                                                                            \
    "vfio_pin_pages_remote: a VM_PFNMAP BAR pfn is is_invalid_reserved_pfn -> not pinned, "  \
    "not charged to locked_vm (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_LIMIT                                                                             \
    "vfio_pin_pages_remote -> vfio_lock_acct: locked_vm + npages > RLIMIT_MEMLOCK without "  \
    "CAP_IPC_LOCK -> ENOMEM"
#define R_VMFILE                                                                            \
    "mmap_region: the VMA holds a reference on the device file, so vfio_device_fops_release " \
    "(and the group's container_users--) waits for munmap"

static void drop_ipc_lock(void)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct cd[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &h, cd) != 0) {
        perror("capget");
        exit(2);
    }
    cd[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
    if (syscall(SYS_capset, &h, cd) != 0) {
        perror("capset");
        exit(2);
    }
}

static void *map_region(const struct dev *d, uint64_t off, size_t len, int flags)
{
    return mmap(NULL, len, PROT_READ | PROT_WRITE, flags, d->fd, (off_t)off);
}

static void refused(const struct dev *d, uint64_t off, size_t len, int flags, const char *rule)
{
    errno = 0;
    void *p = map_region(d, off, len, flags);
    int e = errno;
    adv_checks++;
    if (p != MAP_FAILED || e != EINVAL) {
        char ctx[96];
        snprintf(ctx, sizeof(ctx), "mmap(len %#zx, offset %#llx)", len, (unsigned long long)off);
        adv_ctx = ctx;
        adv_fail(__FILE__, __LINE__, "mmap", "MAP_FAILED, errno EINVAL", (long)(intptr_t)p, e,
                 rule);
    }
}

int main(void)
{
    drop_ipc_lock();
    struct dev d = dev_open(GROUP_A, DEV_A);
    const uint64_t bar2 = d.reg[2].offset, bar4 = d.reg[4].offset;

    /* What may not be mapped, in the kernel's order of checks. */
    refused(&d, (uint64_t)VFIO_PCI_NUM_REGIONS << 40, PAGE, MAP_SHARED, R_MMAP_INDEX);
    refused(&d, bar2, PAGE, MAP_PRIVATE, R_MMAP_SHARED);
    refused(&d, (uint64_t)VFIO_PCI_ROM_REGION_INDEX << 40, PAGE, MAP_SHARED, R_MMAP_NONBAR);
    refused(&d, (uint64_t)VFIO_PCI_CONFIG_REGION_INDEX << 40, PAGE, MAP_SHARED, R_MMAP_NONBAR);
    refused(&d, (uint64_t)VFIO_PCI_VGA_REGION_INDEX << 40, PAGE, MAP_SHARED, R_MMAP_NONBAR);
    refused(&d, d.reg[0].offset, PAGE, MAP_SHARED, R_MMAP_NOMMAP " (BAR0: registers)");
    refused(&d, d.reg[1].offset, PAGE, MAP_SHARED, R_MMAP_NOMMAP " (BAR1: absent)");
    refused(&d, d.reg[3].offset, PAGE, MAP_SHARED, R_MMAP_NOMMAP " (BAR3: upper half)");
    refused(&d, d.reg[5].offset, PAGE, MAP_SHARED, R_MMAP_NOMMAP " (BAR5: absent)");
    refused(&d, bar2, TD_MEM_SIZE + PAGE, MAP_SHARED, R_MMAP_LEN);
    refused(&d, bar2 + PAGE, TD_MEM_SIZE, MAP_SHARED, R_MMAP_LEN);
    refused(&d, bar4, TD_MSIX_BAR_SIZE + PAGE, MAP_SHARED, R_MMAP_LEN);
    refused(&d, bar2 + 1, PAGE, MAP_SHARED,
            "sys_mmap (arch/x86/kernel/sys_x86_64.c): off & ~PAGE_MASK -> EINVAL");
    refused(&d, bar2, 0, MAP_SHARED, "do_mmap (mm/mmap.c): !len -> EINVAL");

    /* BAR2 whole, and a slice of it at 1 MiB: both views of the same memory. */
    uint8_t *m;
    EXPECT_TRUE((m = map_region(&d, bar2, TD_MEM_SIZE, MAP_SHARED)) != MAP_FAILED, R_MMAP);
    uint8_t *slice;
    EXPECT_TRUE((slice = map_region(&d, bar2 + (1 << 20), 1 << 20, MAP_SHARED)) != MAP_FAILED,
                R_MMAP " (pgoff within the BAR)");
    uint8_t *msix;
    EXPECT_TRUE((msix = map_region(&d, bar4, TD_MSIX_BAR_SIZE, MAP_SHARED)) != MAP_FAILED,
                R_MMAP ": the MSI-X BAR maps whole (VFIO_REGION_INFO_CAP_MSIX_MAPPABLE)");
    EXPECT_EQ(munmap(msix, TD_MSIX_BAR_SIZE), 0, "munmap");

    uint32_t v = 0x5a5aa5a5u, r = 0;
    EXPECT_EQ(pwrite(d.fd, &v, 4, (off_t)(bar2 + 0x2000)), 4, R_BAR_RW);
    EXPECT_EQ(*(volatile uint32_t *)(m + 0x2000), v, R_MMAP_PFN " (pwrite -> mapping)");
    *(volatile uint32_t *)(m + 0x3000) = 0x600df00du;
    EXPECT_EQ(pread(d.fd, &r, 4, (off_t)(bar2 + 0x3000)), 4, R_BAR_RW);
    EXPECT_EQ(r, 0x600df00du, R_MMAP_PFN " (mapping -> pread)");
    m[(1 << 20) + 17] = 0x77;
    EXPECT_EQ(slice[17], 0x77, R_MMAP_PFN " (two mappings of one BAR alias)");

    /* Device DMA into and out of its memory, seen through the mapping. */
    bus_master(&d, 1);
    const size_t G = 4 * PAGE; /* 16 KiB: under TYPE1_MEMLOCK=64K */
    uint8_t *g = guest_ram(G);
    EXPECT_EQ(dma_map(d.container, g, 0x100000, G, DMA_RW), 0, R_MAP);
    fill_pattern(g, 2 * PAGE, 11);
    EXPECT_EQ(dev_dma(&d, 0x100000, 0x4000, 2 * PAGE, 0), STATUS_DONE, R_TD " (RAM -> device)");
    EXPECT_TRUE(memcmp(m + 0x4000, g, 2 * PAGE) == 0,
                R_MMAP_PFN ": what the device's DMA wrote into BAR2 is in the mapping");
    fill_pattern(m + 0x8000, 2 * PAGE, 12);
    EXPECT_EQ(dev_dma(&d, 0x8000, 0x102000, 2 * PAGE, CMD_TO_RAM), STATUS_DONE,
              R_TD " (device -> RAM)");
    EXPECT_TRUE(memcmp(g + 2 * PAGE, m + 0x8000, 2 * PAGE) == 0,
                R_MMAP_PFN ": what the CPU wrote into the mapping is what the device sent");

    /* MAP_DMA of the BAR mapping: reserved, so 1 MiB goes through a 64 KiB limit... */
    EXPECT_EQ(dma_map(d.container, slice, 0x40000000, 1 << 20, DMA_RW), 0, R_PFNMAP);
    /* ...which does apply to ordinary memory. */
    uint8_t *big = guest_ram(1 << 20);
    EXPECT_ERR(dma_map(d.container, big, 0x50000000, 1 << 20, DMA_RW), ENOMEM, R_LIMIT);
    EXPECT_EQ(dma_map(d.container, big, 0x50000000, 8 * PAGE, DMA_RW), 0,
              R_LIMIT " (4 + 8 pages <= 16: the BAR pages were not charged)");
    /* Peer-to-peer: the device reads its own BAR through the IOVA of the BAR mapping. */
    fill_pattern(slice + 0x3000, PAGE, 13);
    EXPECT_EQ(dev_dma(&d, 0x40000000 + 0x3000, 0x9000, PAGE, 0), STATUS_DONE,
              R_TD " (RAM side: the IOVA of the BAR mapping)");
    EXPECT_TRUE(memcmp(m + 0x9000, slice + 0x3000, PAGE) == 0,
                "vfio_iommu_map: the IOVA of a BAR mapping reaches the BAR's pfns (peer-to-peer)");
    uint64_t done = 0;
    EXPECT_EQ(dma_unmap(d.container, 0x40000000, 1 << 20, &done), 0, R_UNMAP);
    EXPECT_EQ(done, 1 << 20, R_UNMAP ": size unmapped");
    EXPECT_EQ(dma_unmap(d.container, 0x50000000, 8 * PAGE, &done), 0, R_UNMAP);
    EXPECT_EQ(dma_unmap(d.container, 0x100000, G, &done), 0, R_UNMAP);
    bus_master(&d, 0);

    /* The mapping keeps the device file: closing the fd does not release the device. */
    EXPECT_EQ(munmap(slice, 1 << 20), 0, "munmap");
    EXPECT_EQ(close(d.fd), 0, "close of the device fd (the VMA still holds the file)");
    EXPECT_EQ(*(volatile uint32_t *)(m + 0x3000), 0x600df00du,
              R_VMFILE " (the mapping stays valid)");
    EXPECT_ERR(ioctl(d.group, VFIO_GROUP_UNSET_CONTAINER), EBUSY, R_VMFILE);
    EXPECT_EQ(munmap(m, TD_MEM_SIZE), 0, "munmap: the last reference to the device file");
    EXPECT_EQ(ioctl(d.group, VFIO_GROUP_UNSET_CONTAINER), 0,
              "vfio_group_ioctl_unset_container: the device file is gone");
    EXPECT_EQ(close(d.group), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(d.container), 0, "vfio_fops_release");

    printf("PASS\n");
    fprintf(stderr, "dev_mmap: %d checks\n", adv_checks);
    return 0;
}
