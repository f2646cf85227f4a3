/*
 * Class dev_config (issue 12): region access on the device fd at `index << 40` through pread,
 * pwrite, pread64, pwrite64, preadv and pwritev: config-space virtualisation (identity, the
 * command register's bus-master bit, BAR sizing, the ROM BAR), the size and offset rules of
 * vfio_pci_config_rw / vfio_pci_bar_rw (v6.18), and BAR0 register access.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include "dev_common.h"

#define R_CFG_EFAULT                                                                        \
    "vfio_config_do_rw: pos >= cfg_size or pos + count > cfg_size -> EFAULT "               \
    "(drivers/vfio/pci/vfio_pci_config.c, v6.18)"
#define R_ZERO "vfio_pci_core_read / vfio_pci_core_write: !count -> 0"
#define R_ID "vfio_config_init: vendor, device, revision, class, subsystem read as the function's"
#define R_MASTER                                                                            \
    "vfio_pci_core_enable leaves bus master clear (the VFIO selftest config_space_read_write " \
    "asserts it); the command register reads back what was written"
#define R_MEM "vfio_pci_core_enable -> pci_enable_device: memory decode enabled"
#define R_BAR_FIXUP                                                                         \
    "vfio_bar_fixup: a BAR reads stored & ~(size - 1) | type bits; absent BARs read 0; the "   \
    "upper half of a 64-bit BAR the upper mask (drivers/vfio/pci/vfio_pci_config.c, v6.18)"
#define R_ROM                                                                               \
    "vfio_bar_fixup: no ROM -> the ROM BAR mask is 0 and reads 0"
#define R_BAR_EINVAL "vfio_pci_bar_rw: pos >= end -> EINVAL (drivers/vfio/pci/vfio_pci_rdwr.c)"
#define R_BAR_CLIP "vfio_pci_bar_rw: count = min(count, end - pos)"
#define R_BAR_EIO                                                                           \
    "vfio_pci_core_do_io_rw: memory BAR with !__vfio_pci_memory_enabled -> EIO "            \
    "(drivers/vfio/pci/vfio_pci_rdwr.c, v6.18)"
#define R_MSIX_HOLE                                                                         \
    "vfio_pci_bar_rw: the MSI-X table [msix_offset, +msix_size) reads 0xff and drops writes"
#define R_ROM_RW                                                                            \
    "vfio_pci_rw: ROM write -> EINVAL; vfio_pci_bar_rw: ROM without a ROM -> EINVAL"
#define R_VGA "vfio_pci_vga_rw: !vdev->has_vga -> EINVAL"
#define R_INDEX "vfio_pci_rw: index >= VFIO_PCI_NUM_REGIONS + num_regions -> EINVAL"
#define R_LOOP                                                                              \
    "do_loop_readv_writev: a device file without read_iter/write_iter gets one ->read / "    \
    "->write per iovec at the advancing position (fs/read_write.c, v6.18)"

static void identity(const struct dev *d)
{
    EXPECT_EQ(cfg_read(d, 0x00, 2), TD_VENDOR, R_ID);
    EXPECT_EQ(cfg_read(d, 0x02, 2), TD_DEVICE, R_ID);
    EXPECT_EQ(cfg_read(d, 0x00, 4), (TD_DEVICE << 16) | TD_VENDOR, R_ID);
    EXPECT_EQ(cfg_read(d, 0x08, 4), (TD_CLASS << 8) | TD_REVISION, R_ID);
    EXPECT_EQ(cfg_read(d, 0x0e, 1) & 0x7f, 0, R_ID " (header type 0)");
    EXPECT_EQ(cfg_read(d, 0x2c, 2), TD_SUBVENDOR, R_ID);
    EXPECT_EQ(cfg_read(d, 0x2e, 2), TD_SUBDEVICE, R_ID);
    EXPECT_EQ(cfg_read(d, 0x3d, 1), 1, "vfio_config_init: interrupt pin A (virtualised)");
    EXPECT_EQ(cfg_read(d, 0x06, 2) & 0x10, 0x10,
              "vfio_cap_init: a non-empty capability chain sets PCI_STATUS_CAP_LIST");
    EXPECT_EQ(cfg_read(d, 0x34, 1), TD_MSI_CAP, "vfio_cap_init: the chain starts at MSI (0x40)");
    EXPECT_EQ(cfg_read(d, TD_MSI_CAP, 2), (TD_MSIX_CAP << 8) | 0x05,
              "vfio_cap_init: MSI (id 5) -> next 0x50");
    EXPECT_EQ(cfg_read(d, TD_MSIX_CAP, 2), 0x11, "vfio_cap_init: MSI-X (id 0x11) ends the chain");

    /* The 64-bit and vectored entry points reach the same bytes. */
    uint16_t v = 0, dv = 0;
    EXPECT_EQ(pread64(d->fd, &v, 2, (off64_t)cfg_off(d, 0)), 2, R_CFG_RW);
    EXPECT_EQ(v, TD_VENDOR, R_ID);
    struct iovec iov[2] = {{&v, 2}, {&dv, 2}};
    v = 0;
    EXPECT_EQ(preadv(d->fd, iov, 2, cfg_off(d, 0)), 4, R_LOOP);
    EXPECT_EQ(v, TD_VENDOR, R_LOOP);
    EXPECT_EQ(dv, TD_DEVICE, R_LOOP);
    v = dv = 0;
    EXPECT_EQ(preadv64(d->fd, iov, 2, (off64_t)cfg_off(d, 0)), 4, R_LOOP);
    EXPECT_EQ(dv, TD_DEVICE, R_LOOP);
    /* Vendor/device are read-only. */
    uint32_t junk = 0xdeadbeef;
    EXPECT_EQ(pwrite(d->fd, &junk, 4, cfg_off(d, 0)), 4,
              "vfio_config_do_rw: a write to read-only bits is accepted and dropped");
    EXPECT_EQ(cfg_read(d, 0, 4), (TD_DEVICE << 16) | TD_VENDOR,
              "init_pci_cap_basic_perm: vendor/device are read-only");
}

static void command(const struct dev *d)
{
    uint32_t cmd = cfg_read(d, 0x04, 2);
    EXPECT_EQ(cmd & PCI_CMD_MASTER, 0, R_MASTER);
    EXPECT_EQ(cmd & PCI_CMD_MEM, PCI_CMD_MEM, R_MEM);
    uint16_t w = (uint16_t)(cmd | PCI_CMD_MASTER);
    EXPECT_EQ(pwrite64(d->fd, &w, 2, (off64_t)cfg_off(d, 0x04)), 2, R_CFG_RW);
    EXPECT_EQ(cfg_read(d, 0x04, 2) & PCI_CMD_MASTER, PCI_CMD_MASTER, R_MASTER);
    w = (uint16_t)cmd;
    struct iovec one = {&w, 2};
    EXPECT_EQ(pwritev(d->fd, &one, 1, cfg_off(d, 0x04)), 2, R_LOOP);
    EXPECT_EQ(cfg_read(d, 0x04, 2) & PCI_CMD_MASTER, 0, R_MASTER);
    /* A 1-byte write of the low byte works as well (any size and alignment). */
    uint8_t lo = (uint8_t)(cmd | PCI_CMD_MASTER);
    EXPECT_EQ(pwrite(d->fd, &lo, 1, cfg_off(d, 0x04)), 1, R_CFG_RW);
    EXPECT_EQ(cfg_read(d, 0x04, 1) & PCI_CMD_MASTER, PCI_CMD_MASTER, R_MASTER);
    cfg_write(d, 0x04, 2, cmd);
    EXPECT_EQ(cfg_read(d, 0x04, 2), cmd, R_MASTER);
}

static void bars(const struct dev *d)
{
    uint32_t saved[6];
    for (int b = 0; b < 6; b++)
        saved[b] = cfg_read(d, 0x10 + 4 * b, 4);
    for (int b = 0; b < 6; b++)
        cfg_write(d, 0x10 + 4 * b, 4, 0xffffffffu);
    static const uint32_t want[6] = {0xfff00000u, 0, 0xff00000cu, 0xffffffffu, 0xffffc000u, 0};
    for (int b = 0; b < 6; b++) {
        char ctx[64];
        snprintf(ctx, sizeof(ctx), "BAR%d after writing all ones", b);
        adv_ctx = ctx;
        EXPECT_EQ(cfg_read(d, 0x10 + 4 * b, 4), want[b], R_BAR_FIXUP);
    }
    adv_ctx = NULL;
    cfg_write(d, 0x10, 4, 0x12345678u);
    EXPECT_EQ(cfg_read(d, 0x10, 4), 0x12300000u, R_BAR_FIXUP " (BAR0: 1 MiB alignment)");
    cfg_write(d, 0x18, 4, 0x12345678u);
    EXPECT_EQ(cfg_read(d, 0x18, 4), 0x1200000cu, R_BAR_FIXUP " (BAR2: 16 MiB, 64-bit prefetch)");
    for (int b = 0; b < 6; b++)
        cfg_write(d, 0x10 + 4 * b, 4, saved[b]);
    EXPECT_EQ(cfg_read(d, 0x10, 4), saved[0] & 0xfff00000u, R_BAR_FIXUP);

    /* The ROM BAR, sized the way QEMU 7.2 sizes it at realize. */
    uint32_t rom = cfg_read(d, 0x30, 4);
    EXPECT_EQ(rom, 0, R_ROM);
    cfg_write(d, 0x30, 4, 0xfffff800u);
    EXPECT_EQ(cfg_read(d, 0x30, 4), 0, R_ROM);
    cfg_write(d, 0x30, 4, 0xfffffffeu);
    EXPECT_EQ(cfg_read(d, 0x30, 4), 0, R_ROM);
    cfg_write(d, 0x30, 4, rom);
}

static void cfg_bounds(const struct dev *d)
{
    uint8_t b[8];
    EXPECT_EQ(pread(d->fd, b, 1, cfg_off(d, 255)), 1, R_CFG_RW);
    EXPECT_ERR(pread(d->fd, b, 2, cfg_off(d, 255)), EFAULT, R_CFG_EFAULT);
    EXPECT_ERR(pread(d->fd, b, 1, cfg_off(d, 256)), EFAULT, R_CFG_EFAULT);
    EXPECT_ERR(pwrite(d->fd, b, 2, cfg_off(d, 255)), EFAULT, R_CFG_EFAULT);
    EXPECT_ERR(pread(d->fd, b, 4, cfg_off(d, 0xfffff)), EFAULT, R_CFG_EFAULT);
    EXPECT_EQ(pread(d->fd, b, 0, cfg_off(d, 0)), 0, R_ZERO);
    uint8_t all[256];
    EXPECT_EQ(pread(d->fd, all, sizeof(all), cfg_off(d, 0)), 256,
              "vfio_pci_config_rw: the whole config space in one read");
    EXPECT_EQ(all[0] | (all[1] << 8), TD_VENDOR, R_ID);
    /* Unaligned reads that cross registers. */
    uint8_t three[3];
    EXPECT_EQ(pread(d->fd, three, 3, cfg_off(d, 1)), 3, R_CFG_RW " (any size and alignment)");
    EXPECT_TRUE(memcmp(three, all + 1, 3) == 0, R_CFG_RW " (split into aligned chunks)");
    /* A user buffer that cannot be written. */
    EXPECT_ERR(pread(d->fd, ADV_BAD1, 4, cfg_off(d, 0)), EFAULT,
               "vfio_config_do_rw: copy_to_user -> EFAULT");
}

static void bar0_regs(const struct dev *d)
{
    EXPECT_EQ(reg_r32(d, REG_IDENT), IDENT_VALUE, R_TD " (ident)");
    reg_w32(d, REG_LIVENESS, 0x0f0f1234u);
    EXPECT_EQ(reg_r32(d, REG_LIVENESS), ~0x0f0f1234u, R_TD " (liveness reads the complement)");
    uint64_t v = 0x1122334455667788ull;
    EXPECT_EQ(pwrite64(d->fd, &v, 8, (off64_t)bar0(d, REG_DMA_SRC)), 8, R_BAR_RW);
    EXPECT_EQ(reg_r64(d, REG_DMA_SRC), v, R_TD " (64-bit register)");
    EXPECT_EQ(reg_r32(d, REG_DMA_SRC + 4), 0x11223344u, R_TD " (its high half)");
    reg_w64(d, REG_DMA_SRC, 0);

    uint8_t b[16];
    EXPECT_ERR(pread(d->fd, b, 1, bar0(d, TD_BAR0_SIZE)), EINVAL, R_BAR_EINVAL);
    EXPECT_ERR(pwrite(d->fd, b, 4, bar0(d, TD_BAR0_SIZE)), EINVAL, R_BAR_EINVAL);
    EXPECT_EQ(pread(d->fd, b, 8, bar0(d, TD_BAR0_SIZE - 2)), 2, R_BAR_CLIP);
    EXPECT_EQ(pread(d->fd, b, 3, bar0(d, 1)), 3, "vfio_pci_core_do_io_rw: 1/2-byte pieces");
    EXPECT_EQ(pread(d->fd, b, 0, bar0(d, 0)), 0, R_ZERO);

    /* BAR1 and BAR5 are absent. */
    EXPECT_ERR(pread(d->fd, b, 4, (off_t)d->reg[1].offset), EINVAL,
               "vfio_pci_bar_rw: !pci_resource_start of an absent BAR -> EINVAL");
    EXPECT_ERR(pread(d->fd, b, 4, (off_t)d->reg[5].offset), EINVAL,
               "vfio_pci_bar_rw: !pci_resource_start of an absent BAR -> EINVAL");

    /* BAR4: the MSI-X table reads 0xff, writes are dropped; the count still advances. */
    memset(b, 0, sizeof(b));
    EXPECT_EQ(pread(d->fd, b, 16, (off_t)d->reg[4].offset), 16, R_MSIX_HOLE);
    EXPECT_TRUE(all_bytes(b, 16, 0xff), R_MSIX_HOLE);
    EXPECT_EQ(pwrite(d->fd, b, 16, (off_t)d->reg[4].offset), 16, R_MSIX_HOLE);

    /* BAR2 memory through pread/pwrite. */
    uint32_t m = 0xa5a55a5au, r = 0;
    EXPECT_EQ(pwrite(d->fd, &m, 4, (off_t)d->reg[2].offset + 0x100), 4, R_BAR_RW);
    EXPECT_EQ(pread(d->fd, &r, 4, (off_t)d->reg[2].offset + 0x100), 4, R_BAR_RW);
    EXPECT_EQ(r, m, R_BAR_RW " (BAR2 is memory)");

    /* Memory decode off: memory BARs give EIO; config still works. */
    uint32_t cmd = cfg_read(d, 0x04, 2);
    cfg_write(d, 0x04, 2, cmd & ~(uint32_t)PCI_CMD_MEM);
    EXPECT_ERR(pread(d->fd, b, 4, bar0(d, 0)), EIO, R_BAR_EIO);
    EXPECT_ERR(pwrite(d->fd, b, 4, bar0(d, REG_LIVENESS)), EIO, R_BAR_EIO);
    EXPECT_ERR(pread(d->fd, b, 4, (off_t)d->reg[2].offset), EIO, R_BAR_EIO);
    cfg_write(d, 0x04, 2, cmd);
    EXPECT_EQ(reg_r32(d, REG_IDENT), IDENT_VALUE, R_BAR_RW " (decode back on)");
}

static void other_regions(const struct dev *d)
{
    uint8_t b[4];
    off_t rom = (off_t)((uint64_t)VFIO_PCI_ROM_REGION_INDEX << 40);
    off_t vga = (off_t)((uint64_t)VFIO_PCI_VGA_REGION_INDEX << 40);
    off_t beyond = (off_t)((uint64_t)VFIO_PCI_NUM_REGIONS << 40);
    EXPECT_ERR(pread(d->fd, b, 4, rom), EINVAL, R_ROM_RW);
    EXPECT_ERR(pwrite(d->fd, b, 4, rom), EINVAL, R_ROM_RW);
    EXPECT_ERR(pread(d->fd, b, 4, vga), EINVAL, R_VGA);
    EXPECT_ERR(pread(d->fd, b, 4, beyond), EINVAL, R_INDEX);
    EXPECT_ERR(pwrite(d->fd, b, 4, beyond), EINVAL, R_INDEX);
    EXPECT_ERR(pread(d->fd, b, 4, (off_t)(40ULL << 40)), EINVAL, R_INDEX);
}

int main(void)
{
    struct dev d = dev_open(GROUP_A, DEV_A);
    EXPECT_EQ(d.reg[VFIO_PCI_CONFIG_REGION_INDEX].offset, 7ULL << 40, "VFIO_PCI_INDEX_TO_OFFSET");
    identity(&d);
    command(&d);
    bars(&d);
    cfg_bounds(&d);
    bar0_regs(&d);
    other_regions(&d);
    dev_close(&d);

    /* The emulated group's device has the same config space. */
    struct dev e = dev_open(GROUP_B, DEV_B);
    identity(&e);
    command(&e);
    dev_close(&e);

    printf("PASS\n");
    fprintf(stderr, "dev_config: %d checks\n", adv_checks);
    return 0;
}
