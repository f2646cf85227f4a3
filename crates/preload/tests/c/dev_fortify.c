/*
 * Class dev_fortify (issue 12): a program built with -O2 -D_FORTIFY_SOURCE=2 reads the device
 * fd through glibc's checked entry points, as Debian's QEMU 7.2 reads config space: pread and
 * pread64 into arrays of known size with a size the compiler cannot see compile to
 * __pread_chk and __pread64_chk (the harness checks the binary's undefined symbols with nm -D).
 * They reach the same vfio_pci_rw as the plain calls, with the same results and errnos.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include "dev_common.h"

#define R_SAME                                                                              \
    "__pread_chk / __pread64_chk check the buffer size, then make the pread64 system call: " \
    "vfio_device_fops_read -> vfio_pci_rw answers as for a plain pread"

static volatile size_t n2 = 2, n4 = 4, n64 = 64, n256 = 256;

int main(void)
{
    struct dev d = dev_open(GROUP_A, DEV_A);
    off_t cfg = cfg_off(&d, 0);

    uint8_t hdr[64];
    EXPECT_EQ(pread(d.fd, hdr, n64, cfg), 64, R_SAME " (__pread_chk)");
    EXPECT_EQ(hdr[0] | (hdr[1] << 8), TD_VENDOR, R_SAME);
    EXPECT_EQ(hdr[2] | (hdr[3] << 8), TD_DEVICE, R_SAME);
    uint8_t hdr64[64];
    EXPECT_EQ(pread64(d.fd, hdr64, n64, (off64_t)cfg), 64, R_SAME " (__pread64_chk)");
    EXPECT_TRUE(memcmp(hdr, hdr64, 64) == 0, R_SAME);

    /* Variable-length reads of capabilities, as QEMU does at realize. */
    uint8_t all[256];
    EXPECT_EQ(pread64(d.fd, all, n256, (off64_t)cfg), 256, R_SAME " (__pread64_chk)");
    EXPECT_EQ(all[0x34], TD_MSI_CAP, R_SAME);
    uint8_t two[2];
    EXPECT_EQ(pread64(d.fd, two, n2, (off64_t)cfg_off(&d, TD_MSIX_CAP + 2)), 2, R_SAME);
    EXPECT_EQ((two[0] | (two[1] << 8)) & 0x7ff, 7, R_SAME " (MSI-X table size - 1)");

    /* Errnos come through unchanged. */
    EXPECT_ERR(pread64(d.fd, two, n2, (off64_t)cfg_off(&d, 255)), EFAULT,
               R_SAME " (vfio_config_do_rw: pos + count > cfg_size -> EFAULT)");
    EXPECT_ERR(pread(d.fd, two, n2, (off_t)((uint64_t)VFIO_PCI_ROM_REGION_INDEX << 40)), EINVAL,
               R_SAME " (vfio_pci_bar_rw: no ROM -> EINVAL)");
    EXPECT_ERR(pread64(d.fd, two, n2, (off64_t)((uint64_t)VFIO_PCI_NUM_REGIONS << 40)), EINVAL,
               R_SAME " (vfio_pci_rw: index beyond the regions -> EINVAL)");

    /* BAR0 registers through the checked entry points. */
    uint32_t id[1];
    EXPECT_EQ(pread64(d.fd, id, n4, (off64_t)bar0(&d, REG_IDENT)), 4, R_SAME);
    EXPECT_EQ(id[0], IDENT_VALUE, R_SAME " (BAR0 ident)");
    uint32_t live = 0x55aa;
    EXPECT_EQ(pwrite64(d.fd, &live, 4, (off64_t)bar0(&d, REG_LIVENESS)), 4, R_BAR_RW);
    EXPECT_EQ(pread(d.fd, id, n4, bar0(&d, REG_LIVENESS)), 4, R_SAME " (__pread_chk)");
    EXPECT_EQ(id[0], ~0x55aau, R_SAME);

    dev_close(&d);
    printf("PASS\n");
    fprintf(stderr, "dev_fortify: %d checks\n", adv_checks);
    return 0;
}
