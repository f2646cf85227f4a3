/*
 * Class dev_dirty (issue 12): type1 dirty tracking of device writes, and strict invalidation
 * against the test device's autonomous writer.
 *
 * argv[1]: the TYPE1_DIRTY_MODE in force, "precise" or "kernel-exact" (the harness sets both);
 * argv[2]: "iommu" (group 5) or "emulated" (group 6).
 * - IOMMU group, precise: GET_BITMAP reports exactly the pages the device wrote (the page
 *   table's dirty bits; docs/SEMANTICS.md).
 * - IOMMU group, kernel-exact: every mapped page, at every GET_BITMAP (update_user_bitmap:
 *   num_non_pinned_groups && iommu_mapped -> bitmap_set(all)).
 * - Emulated group, both modes: pinned_page_dirty_scope, so exactly the pages written through
 *   vfio_dma_rw / pinned by the device (vfio_iommu_type1_dma_rw_chunk, vfio_dma_populate_bitmap).
 * Then the writer runs in its own window, the window is unmapped, and no write lands in that
 * memory after UNMAP returned.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_common.h"

#define R_START "vfio_iommu_type1_dirty_pages: FLAG_START -> vfio_dma_bitmap_alloc_all"
#define R_GET                                                                               \
    "vfio_iommu_type1_dirty_pages: FLAG_GET_BITMAP -> vfio_iova_dirty_bitmap -> "           \
    "update_user_bitmap (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_ALL                                                                               \
    "update_user_bitmap: num_non_pinned_groups && dma->iommu_mapped -> every page dirty, "  \
    "at every report (kernel-exact mode)"
#define R_EXACT_IOMMU                                                                       \
    "precise mode: the IOMMU page table's dirty bits, exactly the pages the device wrote, "  \
    "cleared by the report (docs/SEMANTICS.md)"
#define R_EXACT_EMU                                                                         \
    "pinned_page_dirty_scope (only emulated groups): vfio_iommu_type1_dma_rw_chunk marks the " \
    "written pages, vfio_dma_populate_bitmap the pinned ones; the report clears them"
#define R_STRICT                                                                            \
    "vfio_dma_do_unmap -> vfio_unmap_unpin: iommu_unmap and the IOTLB sync (or the mdev "   \
    "dma_unmap notifier, which stops the device's pins) complete before UNMAP returns: no "  \
    "device write lands in the memory afterwards"

static int dirty(int c, uint32_t flags)
{
    struct vfio_iommu_type1_dirty_bitmap d = {.argsz = sizeof(d), .flags = flags};
    return ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &d);
}

/* GET_BITMAP of [iova, iova + npages pages) into `bm` (npages <= 256). */
static void get_bitmap(int c, uint64_t iova, uint64_t npages, uint64_t *bm)
{
    char buf[sizeof(struct vfio_iommu_type1_dirty_bitmap) +
             sizeof(struct vfio_iommu_type1_dirty_bitmap_get)];
    struct vfio_iommu_type1_dirty_bitmap *d = (struct vfio_iommu_type1_dirty_bitmap *)buf;
    struct vfio_iommu_type1_dirty_bitmap_get *r =
        (struct vfio_iommu_type1_dirty_bitmap_get *)(buf + sizeof(*d));
    memset(buf, 0, sizeof(buf));
    memset(bm, 0, 32);
    d->argsz = sizeof(buf);
    d->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
    r->iova = iova;
    r->size = npages * PAGE;
    r->bitmap.pgsize = PAGE;
    r->bitmap.size = ((npages + 63) / 64) * 8;
    r->bitmap.data = (__u64 *)bm;
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, d), 0, R_GET);
}

static int bit(const uint64_t *bm, uint64_t p)
{
    return (int)((bm[p / 64] >> (p % 64)) & 1);
}

static int count_bits(const uint64_t *bm, uint64_t npages)
{
    int n = 0;
    for (uint64_t p = 0; p < npages; p++)
        n += bit(bm, p);
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: dev_dirty precise|kernel-exact iommu|emulated\n");
        return 2;
    }
    int precise = strcmp(argv[1], "precise") == 0;
    int emulated = strcmp(argv[2], "emulated") == 0;
    const char *mode = getenv("TYPE1_DIRTY_MODE");
    if (!mode || strcmp(mode, argv[1]) != 0) {
        fprintf(stderr, "dev_dirty: TYPE1_DIRTY_MODE must be %s\n", argv[1]);
        return 2;
    }
    /* What GET_BITMAP shows after the device wrote some pages. */
    int exact = precise || emulated;
    const char *r_exact = emulated ? R_EXACT_EMU : R_EXACT_IOMMU;

    struct dev d = emulated ? dev_open(GROUP_B, DEV_B) : dev_open(GROUP_A, DEV_A);
    bus_master(&d, 1);
    const uint64_t RAM = 0x100000, NP = 64;
    uint8_t *g = guest_ram(NP * PAGE);
    memset(g, 0, NP * PAGE);
    EXPECT_EQ(dma_map(d.container, g, RAM, NP * PAGE, DMA_RW), 0, R_MAP);
    EXPECT_EQ(dirty(d.container, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), 0, R_START);
    uint64_t bm[4];
    get_bitmap(d.container, RAM, NP, bm);
    if (exact)
        EXPECT_EQ(count_bits(bm, NP), 0, "nothing written yet");
    else
        EXPECT_EQ(count_bits(bm, NP), NP, R_ALL);

    /* The device writes 2 pages' worth at page 0x20 + 0x800: pages 0x20, 0x21, 0x22. */
    uint8_t pat[2 * PAGE];
    fill_pattern(pat, sizeof(pat), 3);
    EXPECT_EQ(pwrite(d.fd, pat, sizeof(pat), (off_t)d.reg[2].offset), (long)sizeof(pat), R_BAR_RW);
    EXPECT_EQ(dev_dma(&d, 0, RAM + 0x20800, 2 * PAGE, CMD_TO_RAM), STATUS_DONE,
              R_TD " (device -> RAM)");
    EXPECT_TRUE(memcmp(g + 0x20800, pat, sizeof(pat)) == 0, "the device wrote the bytes");
    get_bitmap(d.container, RAM, NP, bm);
    if (exact) {
        EXPECT_EQ(count_bits(bm, NP), 3, r_exact);
        EXPECT_TRUE(bit(bm, 0x20) && bit(bm, 0x21) && bit(bm, 0x22), r_exact);
        get_bitmap(d.container, RAM, NP, bm);
        EXPECT_EQ(count_bits(bm, NP), 0, r_exact);
    } else {
        EXPECT_EQ(count_bits(bm, NP), NP, R_ALL);
        get_bitmap(d.container, RAM, NP, bm);
        EXPECT_EQ(count_bits(bm, NP), NP, R_ALL);
    }

    /* The autonomous writer in its own window of 16 pages. */
    const uint64_t WIN = 0x400000, WP = 16;
    uint8_t *w = guest_ram(WP * PAGE);
    memset(w, 0, WP * PAGE);
    EXPECT_EQ(dma_map(d.container, w, WIN, WP * PAGE, DMA_RW), 0, R_MAP);
    get_bitmap(d.container, WIN, WP, bm);
    reg_w64(&d, REG_WRITER_BASE, WIN);
    reg_w64(&d, REG_WRITER_SIZE, WP * PAGE);
    reg_w64(&d, REG_WRITER_SEED, 7);
    reg_w32(&d, REG_WRITER_RATE, 0);
    reg_w32(&d, REG_WRITER_CTRL, 1);
    EXPECT_EQ(reg_r32(&d, REG_WRITER_CTRL) & 1, 1, R_TD " (the writer runs)");
    uint64_t end = now_ms() + 5000;
    while (reg_r64(&d, REG_WRITER_PAGES) < 32 && now_ms() < end)
        sleep_ms(1);
    EXPECT_TRUE(reg_r64(&d, REG_WRITER_PAGES) >= 32, R_TD " (the writer writes pages)");
    EXPECT_EQ(reg_r64(&d, REG_WRITER_FAULTS), 0, R_TD " (no faults inside a mapped window)");
    int written = 0;
    for (uint64_t p = 0; p < WP; p++)
        written += !all_bytes(w + p * PAGE, PAGE, 0);
    EXPECT_TRUE(written > 0, "the writer's pages land in the window's memory");
    get_bitmap(d.container, WIN, WP, bm);
    EXPECT_TRUE(count_bits(bm, WP) > 0, R_GET " (the writer's pages are dirty)");
    get_bitmap(d.container, RAM, NP, bm);
    if (exact)
        EXPECT_EQ(count_bits(bm, NP), 0, r_exact);

    /*
     * Unmap the window under the running writer, several rounds (the race is narrow): after
     * UNMAP returns, the memory is the program's alone.
     */
    uint64_t done = 0;
    for (int round = 0; round < 8; round++) {
        char ctx[32];
        snprintf(ctx, sizeof(ctx), "round %d", round);
        adv_ctx = ctx;
        if (round > 0) {
            memset(w, 0, WP * PAGE);
            EXPECT_EQ(dma_map(d.container, w, WIN, WP * PAGE, DMA_RW), 0, R_MAP);
            uint64_t from = reg_r64(&d, REG_WRITER_PAGES);
            end = now_ms() + 5000;
            while (reg_r64(&d, REG_WRITER_PAGES) < from + 16 && now_ms() < end)
                sleep_ms(1);
            EXPECT_TRUE(reg_r64(&d, REG_WRITER_PAGES) >= from + 16,
                        R_TD " (the writer resumes in the window mapped again)");
        }
        EXPECT_EQ(dma_unmap(d.container, WIN, WP * PAGE, &done), 0, R_UNMAP);
        EXPECT_EQ(done, WP * PAGE, R_UNMAP);
        uint64_t pages_at_unmap = reg_r64(&d, REG_WRITER_PAGES);
        uint64_t faults_at_unmap = reg_r64(&d, REG_WRITER_FAULTS);
        memset(w, 0xa5, WP * PAGE);
        sleep_ms(30);
        EXPECT_TRUE(all_bytes(w, WP * PAGE, 0xa5), R_STRICT);
        /*
         * The counter is bumped after a batch of writes returns, so the one batch in flight
         * when UNMAP returned (at most WRITER_BATCH pages in one device transaction; its bytes
         * landed before: the memset above covered them) may still count.
         */
        uint64_t p1 = reg_r64(&d, REG_WRITER_PAGES);
        EXPECT_TRUE(p1 <= pages_at_unmap + WRITER_BATCH,
                    R_STRICT " (no write succeeded afterwards)");
        sleep_ms(20);
        EXPECT_EQ(reg_r64(&d, REG_WRITER_PAGES), p1, R_STRICT " (no write succeeded afterwards)");
        EXPECT_TRUE(all_bytes(w, WP * PAGE, 0xa5), R_STRICT);
        EXPECT_TRUE(reg_r64(&d, REG_WRITER_FAULTS) > faults_at_unmap,
                    R_STRICT " (the writer kept trying: every attempt faulted)");
    }
    adv_ctx = NULL;
    reg_w32(&d, REG_WRITER_CTRL, 0);
    EXPECT_EQ(reg_r32(&d, REG_WRITER_CTRL) & 1, 0, R_TD " (the writer stopped)");
    EXPECT_TRUE(all_bytes(w, WP * PAGE, 0xa5), R_STRICT);

    EXPECT_EQ(dirty(d.container, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP), 0,
              "vfio_iommu_type1_dirty_pages: FLAG_STOP");
    bus_master(&d, 0);
    EXPECT_EQ(close(d.fd), 0, "vfio_device_fops_release");
    EXPECT_EQ(dma_unmap(d.container, RAM, NP * PAGE, &done), 0, R_UNMAP);
    EXPECT_EQ(close(d.group), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(d.container), 0, "vfio_fops_release");
    printf("PASS\n");
    fprintf(stderr, "dev_dirty: %d checks\n", adv_checks);
    return 0;
}
