/*
 * Class dev_mig_log (issue 13): device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_START /
 * STOP / REPORT of the system <linux/vfio.h>) of the test device through the drop-in. The
 * report must equal the pages the device wrote inside the logged ranges, at 4 KiB and at
 * 2 MiB tracking pages: DMA transfers at chosen IOVAs (one crossing a page boundary, one
 * outside every range), then the autonomous writer, whose pages follow from its seed.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_mig_common.h"

#define R_START                                                                             \
    "vfio_ioctl_device_feature_logging_start (drivers/vfio/vfio_main.c, v6.18): ranges "     \
    "checked, the tracking page size written back"
#define R_REPORT                                                                            \
    "vfio_ioctl_device_feature_logging_report: the pages written since the last report, one " \
    "bit per page_size from iova, cleared by the report (mlx5vf_tracker_read_and_clear)"
#define R_STOP "vfio_ioctl_device_feature_logging_stop"

#define RAM_SIZE (8UL << 20)
#define MIB (1UL << 20)

static uint64_t bitmap[4096];

static int log_start(const struct dev *d, uint64_t page_size,
                     const struct vfio_device_feature_dma_logging_range *r, uint32_t n,
                     uint64_t *granted)
{
    struct vfio_device_feature_dma_logging_control c = {
        .page_size = page_size, .num_ranges = n, .ranges = (uintptr_t)r};
    int ret = feature(d->fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, &c,
                      sizeof(c));
    if (granted)
        *granted = c.page_size;
    return ret;
}

static int log_stop(const struct dev *d)
{
    return feature(d->fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, NULL,
                   0);
}

/* REPORT of [iova, iova + len) at `page_size` into `bitmap` (zeroed first). */
static int log_report(const struct dev *d, uint64_t iova, uint64_t len, uint64_t page_size)
{
    memset(bitmap, 0, sizeof(bitmap));
    struct vfio_device_feature_dma_logging_report r = {
        .iova = iova, .length = len, .page_size = page_size, .bitmap = (uintptr_t)bitmap};
    return feature(d->fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, &r,
                   sizeof(r));
}

/* The set bits of `bitmap` over `nbits`, into `out` (at most `cap`); their count. */
static size_t bits(uint64_t nbits, uint64_t *out, size_t cap)
{
    size_t n = 0;
    for (uint64_t b = 0; b < nbits; b++)
        if (bitmap[b / 64] >> (b % 64) & 1) {
            if (n < cap)
                out[n] = b;
            n++;
        }
    return n;
}

/* A device write of `len` bytes of BAR2 to `iova`. */
static void device_write(const struct dev *d, uint64_t iova, uint64_t len)
{
    EXPECT_EQ(dev_dma(d, 0, iova, len, CMD_TO_RAM), STATUS_DONE, R_TD);
}

static uint64_t xorshift(uint64_t x)
{
    if (x == 0)
        x = 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

int main(void)
{
    struct dev d = dev_open(GROUP_A, DEV_A);
    uint8_t *ram = guest_ram(RAM_SIZE);
    EXPECT_EQ(dma_map(d.container, ram, 0, RAM_SIZE, DMA_RW), 0, R_MAP);
    bus_master(&d, 1);
    uint64_t got[64], granted = 0;

    /* 4 KiB tracking over two ranges. */
    struct vfio_device_feature_dma_logging_range ranges[2] = {
        {.iova = 0, .length = 4 * MIB}, {.iova = 6 * MIB, .length = 2 * MIB}};
    EXPECT_ERR(log_start(&d, PAGE, ranges, 0, NULL), EINVAL, R_START " (no ranges)");
    EXPECT_EQ(log_start(&d, PAGE, ranges, 2, &granted), 0, R_START);
    EXPECT_EQ(granted, PAGE, R_START " (4 KiB granted)");
    EXPECT_ERR(log_start(&d, PAGE, ranges, 2, NULL), EINVAL, R_START " (already started)");
    device_write(&d, 0x1000, PAGE);
    device_write(&d, MIB + 0x800, PAGE); /* pages 0x100 and 0x101 */
    device_write(&d, 5 * MIB, PAGE);     /* outside both ranges: not logged */
    device_write(&d, 6 * MIB + 3 * PAGE, 16);
    EXPECT_EQ(log_report(&d, 0, 4 * MIB, PAGE), 0, R_REPORT);
    EXPECT_EQ(bits(4 * MIB / PAGE, got, 64), 3, R_REPORT " (exactly the pages written)");
    EXPECT_TRUE(got[0] == 1 && got[1] == 0x100 && got[2] == 0x101, R_REPORT);
    EXPECT_EQ(log_report(&d, 0, 4 * MIB, PAGE), 0, R_REPORT);
    EXPECT_EQ(bits(4 * MIB / PAGE, got, 64), 0, R_REPORT " (the report cleared them)");
    EXPECT_EQ(log_report(&d, 6 * MIB, 2 * MIB, PAGE), 0, R_REPORT);
    EXPECT_EQ(bits(2 * MIB / PAGE, got, 64), 1, R_REPORT);
    EXPECT_EQ(got[0], 3, R_REPORT);
    EXPECT_ERR(log_report(&d, 0, 4 * MIB, 3000), EINVAL,
               R_REPORT " (page_size not a power of two)");

    /* The autonomous writer: the reported pages are exactly the ones its sequence chose. */
    const uint64_t wbase = 2 * MIB, wpages = 200, seed = 0x5eed;
    reg_w64(&d, REG_WRITER_BASE, wbase);
    reg_w64(&d, REG_WRITER_SIZE, wpages * PAGE);
    reg_w32(&d, REG_WRITER_RATE, 20000);
    reg_w64(&d, REG_WRITER_SEED, seed);
    reg_w32(&d, REG_WRITER_CTRL, 1);
    struct timespec ts = {.tv_nsec = 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
    reg_w32(&d, REG_WRITER_CTRL, 0);
    uint64_t n = reg_r64(&d, REG_WRITER_PAGES);
    EXPECT_EQ(reg_r64(&d, REG_WRITER_FAULTS), 0, R_TD " (the window is mapped)");
    EXPECT_TRUE(n > 0, R_TD " (the writer wrote)");
    static uint8_t want[200];
    uint64_t st = seed;
    for (uint64_t s = 1; s <= n; s++) {
        st = xorshift(st);
        want[st % wpages] = 1;
    }
    EXPECT_EQ(log_report(&d, 0, 4 * MIB, PAGE), 0, R_REPORT);
    for (uint64_t p = 0; p < 4 * MIB / PAGE; p++) {
        int in = p >= wbase / PAGE && p < wbase / PAGE + wpages && want[p - wbase / PAGE];
        EXPECT_EQ((long)(bitmap[p / 64] >> (p % 64) & 1), in,
                  R_REPORT " (the writer's pages, from its seed)");
    }
    EXPECT_EQ(log_stop(&d), 0, R_STOP);
    EXPECT_EQ(log_stop(&d), 0, R_STOP " (0 when not started)");
    EXPECT_ERR(log_report(&d, 0, 4 * MIB, PAGE), EINVAL, R_REPORT " (not started)");

    /* 2 MiB tracking pages. */
    struct vfio_device_feature_dma_logging_range all = {.iova = 0, .length = RAM_SIZE};
    EXPECT_EQ(log_start(&d, 2 * MIB, &all, 1, &granted), 0, R_START);
    EXPECT_EQ(granted, 2 * MIB, R_START " (2 MiB granted)");
    device_write(&d, 0x1000, PAGE);
    device_write(&d, 2 * MIB - 8, 16); /* crosses into the second 2 MiB page */
    device_write(&d, 7 * MIB, PAGE);
    EXPECT_EQ(log_report(&d, 0, RAM_SIZE, 2 * MIB), 0, R_REPORT);
    EXPECT_EQ(bits(4, got, 64), 3, R_REPORT " (2 MiB pages 0, 1 and 3)");
    EXPECT_TRUE(got[0] == 0 && got[1] == 1 && got[2] == 3, R_REPORT);
    EXPECT_EQ(log_report(&d, 0, RAM_SIZE, 2 * MIB), 0, R_REPORT);
    EXPECT_EQ(bits(4, got, 64), 0, R_REPORT " (cleared)");
    EXPECT_EQ(log_stop(&d), 0, R_STOP);

    bus_master(&d, 0);
    uint64_t done = 0;
    EXPECT_EQ(close(d.fd), 0, "vfio_device_fops_release");
    EXPECT_EQ(dma_unmap(d.container, 0, RAM_SIZE, &done), 0, R_UNMAP);
    EXPECT_EQ(done, RAM_SIZE, R_UNMAP);
    EXPECT_EQ(close(d.group), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(d.container), 0, "vfio_fops_release");
    printf("PASS\n");
    fprintf(stderr, "dev_mig_log: %d checks\n", adv_checks);
    return 0;
}
