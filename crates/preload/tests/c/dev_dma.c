/*
 * Class dev_dma (issue 12): device DMA through the container, programmed through BAR0 of the
 * test device: a copy guest -> device -> guest completed with one MSI-X interrupt and the bytes
 * verified; a transfer to or from an unmapped, partly mapped, read-only or just-unmapped IOVA
 * reports the fault in the device status and writes nothing.
 *
 * argv[1]: "iommu" (group 5: an IOMMU domain, vfio_iommu_type1_attach_group) or "emulated"
 * (group 6: mdev-style, vfio_pin_pages / vfio_dma_rw).
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_common.h"

#define R_PATH_IOMMU                                                                        \
    "a device in an IOMMU group reaches memory only through its domain: iommu_map of "      \
    "vfio_dma_do_map, IOMMU_READ/IOMMU_WRITE permissions"
#define R_PATH_EMU                                                                          \
    "an emulated (mdev) device reaches memory only by vfio_pin_pages / vfio_dma_rw: "       \
    "vfio_iommu_type1_pin_pages, vfio_iommu_type1_dma_rw_chunk"
#define R_FAULT                                                                             \
    "no vfio_dma covers the IOVA (vfio_find_dma fails: IOMMU fault / -EINVAL from pin and "  \
    "dma_rw): the device reports the error and nothing is written (crates/vfio-device "     \
    "testdev: status DMA-error, command error bit)"
#define R_RO                                                                                \
    "a mapping without VFIO_DMA_MAP_FLAG_WRITE: IOMMU write fault / vfio_iommu_type1_dma_rw_chunk " \
    "and pin_pages: !(dma->prot & IOMMU_WRITE) -> -EPERM; nothing written"
#define R_STRICT                                                                            \
    "vfio_dma_do_unmap -> vfio_remove_dma -> vfio_unmap_unpin: the IOTLB is flushed (or the " \
    "mdev's dma_unmap callback ran) before UNMAP returns"

static const char *path_rule;

static void expect_fault(const struct dev *d, uint64_t src, uint64_t dst, uint64_t count,
                         uint32_t cmd, const char *rule)
{
    uint32_t st = dev_dma(d, src, dst, count, cmd);
    EXPECT_EQ(st, STATUS_DONE | STATUS_DMA_ERROR, rule);
    EXPECT_EQ(reg_r64(d, REG_DMA_CMD) & CMD_ERROR, CMD_ERROR, rule);
}

int main(int argc, char **argv)
{
    int emulated = argc > 1 && strcmp(argv[1], "emulated") == 0;
    path_rule = emulated ? R_PATH_EMU : R_PATH_IOMMU;
    struct dev d = emulated ? dev_open(GROUP_B, DEV_B) : dev_open(GROUP_A, DEV_A);

    /* Guest RAM: 16 pages at IOVA 1 MiB, read-write; 2 pages at 2 MiB, read-only. */
    const uint64_t RAM = 0x100000, ROM = 0x200000;
    const size_t N = 16 * PAGE;
    uint8_t *g = guest_ram(N);
    uint8_t *ro = guest_ram(2 * PAGE);
    memset(g, 0, N);
    memset(ro, 0x3c, 2 * PAGE);
    EXPECT_EQ(dma_map(d.container, g, RAM, N, DMA_RW), 0, R_MAP);
    EXPECT_EQ(dma_map(d.container, ro, ROM, 2 * PAGE, VFIO_DMA_MAP_FLAG_READ), 0, R_MAP);

    int e = new_efd();
    EXPECT_EQ(set_irqs_fds(&d, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &e), 0,
              "vfio_pci_set_msi_trigger: MSI-X enable with one vector");

    /* Bus master clear: the function cannot DMA at all. */
    fill_pattern(g, 2 * PAGE, 1);
    expect_fault(&d, RAM, 0, 2 * PAGE, 0,
                 "PCI_COMMAND_MASTER clear: the function issues no DMA (vfio_pci_core_enable "
                 "leaves it clear; testdev reports the refusal)");
    bus_master(&d, 1);

    /* guest -> device -> guest, each completion raising MSI-X vector 0 once. */
    const size_t L = 3 * PAGE + 100; /* crosses pages, not page aligned */
    fill_pattern(g + 10, L, 2);
    EXPECT_EQ(dev_dma(&d, RAM + 10, 0x1000, L, CMD_IRQ), STATUS_DONE, path_rule);
    EXPECT_EQ(efd_wait(e, 2000), 1, R_MSI_TRIGGER " (completion interrupt, once)");
    EXPECT_EQ(reg_r32(&d, REG_IRQ_STATUS) & IRQ_DMA, IRQ_DMA, R_TD " (IRQ status 0x100)");
    reg_w32(&d, REG_IRQ_ACK, IRQ_DMA);
    uint8_t *back = malloc(L);
    EXPECT_EQ(pread(d.fd, back, L, (off_t)(d.reg[2].offset + 0x1000)), (long)L, R_BAR_RW);
    EXPECT_TRUE(memcmp(back, g + 10, L) == 0, "the device memory holds the bytes it read");
    EXPECT_EQ(dev_dma(&d, 0x1000, RAM + 8 * PAGE + 7, L, CMD_TO_RAM | CMD_IRQ), STATUS_DONE,
              path_rule);
    EXPECT_EQ(efd_wait(e, 2000), 1, R_MSI_TRIGGER " (completion interrupt, once)");
    EXPECT_EQ(efd_wait(e, 20), 0, R_MSI_TRIGGER " (exactly one)");
    reg_w32(&d, REG_IRQ_ACK, IRQ_DMA);
    EXPECT_TRUE(memcmp(g + 8 * PAGE + 7, g + 10, L) == 0, "bytes verified after the round trip");
    EXPECT_TRUE(all_bytes(g + 8 * PAGE, 7, 0) && all_bytes(g + 8 * PAGE + 7 + L, N - 8 * PAGE - 7 - L, 0),
                "nothing written outside the destination range");

    /* Faults: nothing lands anywhere. */
    uint8_t *snap = malloc(N);
    memcpy(snap, g, N);
    uint8_t devsnap[PAGE];
    EXPECT_EQ(pread(d.fd, devsnap, PAGE, (off_t)(d.reg[2].offset + 0x10000)), (long)PAGE, R_BAR_RW);
    expect_fault(&d, 0x1000, 0x40000000, 2 * PAGE, CMD_TO_RAM, R_FAULT " (unmapped destination)");
    expect_fault(&d, 0x1000, RAM + N - PAGE, 2 * PAGE, CMD_TO_RAM,
                 R_FAULT " (destination runs off the end of the mapping: all or nothing)");
    EXPECT_TRUE(memcmp(g, snap, N) == 0, R_FAULT " (guest memory unchanged)");
    expect_fault(&d, 0x40000000, 0x10000, PAGE, 0, R_FAULT " (unmapped source)");
    uint8_t devnow[PAGE];
    EXPECT_EQ(pread(d.fd, devnow, PAGE, (off_t)(d.reg[2].offset + 0x10000)), (long)PAGE, R_BAR_RW);
    EXPECT_TRUE(memcmp(devnow, devsnap, PAGE) == 0, R_FAULT " (device memory unchanged)");
    expect_fault(&d, 0x1000, ROM, PAGE, CMD_TO_RAM, R_RO);
    EXPECT_TRUE(all_bytes(ro, 2 * PAGE, 0x3c), R_RO);
    EXPECT_EQ(dev_dma(&d, ROM, 0x20000, PAGE, 0), STATUS_DONE,
              "a read-only mapping can be read by the device (IOMMU_READ)");
    EXPECT_TRUE(pread(d.fd, devnow, PAGE, (off_t)(d.reg[2].offset + 0x20000)) == (long)PAGE &&
                    all_bytes(devnow, PAGE, 0x3c),
                "the device read the read-only page");
    /* A failed transfer does not poison the next one. */
    EXPECT_EQ(dev_dma(&d, 0x1000, RAM, PAGE, CMD_TO_RAM), STATUS_DONE, path_rule);
    EXPECT_EQ(reg_r64(&d, REG_DMA_CMD) & CMD_ERROR, 0, R_TD " (error bit clears on success)");

    /* After UNMAP returns, the old IOVA is gone for the device too. */
    uint64_t done = 0;
    EXPECT_EQ(dma_unmap(d.container, RAM, N, &done), 0, R_UNMAP);
    EXPECT_EQ(done, N, R_UNMAP);
    memset(g, 0x11, N);
    expect_fault(&d, 0x1000, RAM, PAGE, CMD_TO_RAM, R_STRICT);
    EXPECT_TRUE(all_bytes(g, N, 0x11), R_STRICT);
    /* Mapped again, it works again. */
    EXPECT_EQ(dma_map(d.container, g, RAM, N, DMA_RW), 0, R_MAP);
    EXPECT_EQ(dev_dma(&d, 0x1000, RAM, PAGE, CMD_TO_RAM), STATUS_DONE, path_rule);
    EXPECT_TRUE(memcmp(g, back, PAGE) == 0,
                "a new mapping of the IOVA is served");

    EXPECT_EQ(set_irqs_none(&d, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSIX_IRQ_INDEX, 0, 0), 0,
              "vfio_pci_set_msi_trigger: disable");
    bus_master(&d, 0);
    EXPECT_EQ(close(d.fd), 0, "vfio_device_fops_release");
    EXPECT_EQ(dma_unmap(d.container, RAM, N, &done), 0, R_UNMAP);
    EXPECT_EQ(dma_unmap(d.container, ROM, 2 * PAGE, &done), 0, R_UNMAP);
    EXPECT_EQ(close(d.group), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(d.container), 0, "vfio_fops_release");
    free(back);
    free(snap);
    close(e);
    printf("PASS\n");
    fprintf(stderr, "dev_dma: %d checks\n", adv_checks);
    return 0;
}
