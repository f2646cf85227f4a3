/*
 * Class dev_autostart (issue 13): the drop-in's device options writer=BASE+SIZE, writer-rate,
 * writer-seed (crates/preload-config) start the test device's autonomous writer, as a driver
 * would through BAR0, once the command register's bus-master bit is set and the container maps
 * the whole window writable; not before either. The registers then read the configured window,
 * rate and seed, and the window holds the writer's pages (sequence number and seed in the
 * first 16 bytes of each written page). A device without DMA (bus master clear) may not write:
 * the PCI rule the test device's DMA gate enforces.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" and TYPE1_DEVICES="0000:00:1f.0@5,writer=0x200000+
 * 0x10000,writer-rate=5000,writer-seed=0x77,0000:00:1e.0@6" (the harness sets the options).
 */
#define _GNU_SOURCE
#include "dev_common.h"

#define R_AUTO                                                                              \
    "the drop-in's writer= device option (docs/SEMANTICS.md): the writer starts once bus "  \
    "mastering is on and the window is mapped"
#define WBASE 0x200000UL
#define WSIZE 0x10000UL
#define WSEED 0x77UL

int main(void)
{
    struct dev d = dev_open(GROUP_A, DEV_A);
    uint8_t *ram = guest_ram(4UL << 20);
    memset(ram, 0, 4UL << 20);

    /* The window mapped, bus master clear: nothing starts. */
    uint64_t done = 0;
    EXPECT_EQ(dma_map(d.container, ram, 0, 1UL << 20, DMA_RW), 0, R_MAP);
    EXPECT_EQ(dma_map(d.container, ram + (1UL << 20), 1UL << 20, 3UL << 20, DMA_RW), 0, R_MAP);
    sleep_ms(60);
    EXPECT_EQ(reg_r32(&d, REG_WRITER_CTRL), 0, R_AUTO " (bus master clear)");

    /* Bus master on, the window unmapped: nothing starts. */
    EXPECT_EQ(dma_unmap(d.container, 1UL << 20, 3UL << 20, &done), 0, R_UNMAP);
    bus_master(&d, 1);
    sleep_ms(60);
    EXPECT_EQ(reg_r32(&d, REG_WRITER_CTRL), 0, R_AUTO " (the window is not mapped)");
    EXPECT_EQ(reg_r64(&d, REG_WRITER_PAGES), 0, R_AUTO);

    /* The window mapped again: the writer starts and writes there. */
    EXPECT_EQ(dma_map(d.container, ram + (1UL << 20), 1UL << 20, 3UL << 20, DMA_RW), 0, R_MAP);
    int started = 0;
    for (int i = 0; i < 400 && !started; i++) {
        sleep_ms(5);
        started = reg_r32(&d, REG_WRITER_CTRL) == 1 && reg_r64(&d, REG_WRITER_PAGES) > 8;
    }
    EXPECT_TRUE(started, R_AUTO " (within 2 s)");
    EXPECT_EQ(reg_r64(&d, REG_WRITER_BASE), WBASE, R_AUTO " (writer=BASE)");
    EXPECT_EQ(reg_r64(&d, REG_WRITER_SIZE), WSIZE, R_AUTO " (writer=+SIZE)");
    EXPECT_EQ(reg_r32(&d, REG_WRITER_RATE), 5000, R_AUTO " (writer-rate)");
    EXPECT_EQ(reg_r64(&d, REG_WRITER_SEED), WSEED, R_AUTO " (writer-seed)");
    reg_w32(&d, REG_WRITER_CTRL, 0);
    uint64_t pages = reg_r64(&d, REG_WRITER_PAGES);
    EXPECT_EQ(reg_r64(&d, REG_WRITER_FAULTS), 0, R_AUTO " (the window was mapped)");
    size_t written = 0;
    for (uint64_t p = 0; p < (4UL << 20) / PAGE; p++) {
        const uint8_t *pg = ram + p * PAGE;
        uint64_t seq, seed;
        memcpy(&seq, pg, 8);
        memcpy(&seed, pg + 8, 8);
        int inside = p * PAGE >= WBASE && p * PAGE < WBASE + WSIZE;
        if (!inside) {
            EXPECT_TRUE(all_bytes(pg, PAGE, 0), R_AUTO " (nothing outside the window)");
            continue;
        }
        if (seq == 0)
            continue;
        written++;
        EXPECT_TRUE(seed == WSEED && seq <= pages && all_bytes(pg + 16, PAGE - 16, 0),
                    R_TD " (a writer page: its sequence number and seed)");
    }
    EXPECT_TRUE(written > 0, R_AUTO " (the window holds the writer's pages)");

    bus_master(&d, 0);
    EXPECT_EQ(close(d.fd), 0, "vfio_device_fops_release");
    EXPECT_EQ(dma_unmap(d.container, 0, 4UL << 20, &done), 0, R_UNMAP);
    EXPECT_EQ(done, 4UL << 20, R_UNMAP);
    EXPECT_EQ(close(d.group), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(d.container), 0, "vfio_fops_release");
    printf("PASS\n");
    fprintf(stderr, "dev_autostart: %d checks\n", adv_checks);
    return 0;
}
