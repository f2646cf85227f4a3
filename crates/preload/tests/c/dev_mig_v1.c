/*
 * Class dev_mig_v1 (issue 13): the deprecated v1 migration region (struct
 * vfio_device_migration_info of the system <linux/vfio.h>, Linux 5.8-6.0 UAPI) as QEMU 7.2's
 * hw/vfio/migration.c drives it, through the drop-in: vfio_save_setup (RUNNING|SAVING),
 * vfio_save_iterate / vfio_save_buffer (pending_bytes, data_offset, data_size, the data),
 * vfio_save_complete_precopy (SAVING, the rest, then STOP), and on the destination
 * vfio_load_setup (RESUMING), vfio_load_buffer per chunk (data_offset, the data, a data_size
 * write) and vfio_vmstate_change (RUNNING), which applies the state. Each state write is a
 * read-modify-write of device_state, as vfio_migration_set_state does.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated"
 * TYPE1_DEVICES="0000:00:1f.0@5,migration=v1,0000:00:1e.0@6" (the harness sets the option).
 */
#define _GNU_SOURCE
#include "dev_mig_common.h"

#define R_V1                                                                                \
    "the v1 migration region (struct vfio_device_migration_info, Linux v5.8-v6.0 UAPI) as "  \
    "QEMU 7.2 hw/vfio/migration.c drives it (docs/SEMANTICS.md)"
#define R_V1_STATE                                                                          \
    "v1 device_state: 101, 110 (the error state) and 111 are invalid: EINVAL, unchanged "    \
    "(VFIO_DEVICE_STATE_VALID, VFIO_DEVICE_STATE_IS_ERROR)"
#define R_V1_FIELD "v1 header fields are accessed whole; read-only fields refuse writes: EINVAL"

static struct vfio_region_info mig;
static char stream[1 << 20];
static size_t stream_len;
static char buf[1 << 18];

#define F(field) ((off_t)(mig.offset + offsetof(struct vfio_device_migration_info, field)))

static uint32_t state(const struct dev *d)
{
    uint32_t s = 0;
    EXPECT_EQ(pread(d->fd, &s, 4, F(device_state)), 4, R_V1);
    return s;
}

/* vfio_migration_set_state: device_state = (device_state & mask) | value. */
static int set_state(const struct dev *d, uint32_t mask, uint32_t value)
{
    uint32_t s = (state(d) & mask) | value;
    return (int)pwrite(d->fd, &s, 4, F(device_state));
}

static uint64_t field64(const struct dev *d, off_t at)
{
    uint64_t v = 0;
    EXPECT_EQ(pread(d->fd, &v, 8, at), 8, R_V1);
    return v;
}

/* vfio_save_buffer until pending_bytes is 0; appends the chunks to `stream`. */
static void save_pending(const struct dev *d)
{
    for (int rounds = 0;; rounds++) {
        EXPECT_TRUE(rounds < 1000, R_V1 " (pending_bytes drops to 0)");
        uint64_t pending = field64(d, F(pending_bytes));
        if (pending == 0)
            return;
        uint64_t off = field64(d, F(data_offset));
        uint64_t size = field64(d, F(data_size));
        EXPECT_TRUE(off >= sizeof(struct vfio_device_migration_info) && size > 0 &&
                        off + size <= mig.size,
                    R_V1 " (a chunk inside the data section)");
        EXPECT_TRUE(stream_len + size <= sizeof(stream), "the state fits the test's buffer");
        EXPECT_EQ(pread(d->fd, stream + stream_len, size, (off_t)(mig.offset + off)), (long)size,
                  R_V1 " (the chunk's data)");
        stream_len += size;
    }
}

int main(void)
{
    struct dev d = dev_open(GROUP_A, DEV_A);
    bus_master(&d, 1);

    struct vfio_device_info info = {.argsz = sizeof(info)};
    EXPECT_EQ(ioctl(d.fd, VFIO_DEVICE_GET_INFO, &info), 0, "vfio_pci_ioctl_get_info");
    EXPECT_EQ(info.num_regions, VFIO_PCI_NUM_REGIONS + 1,
              "vfio_pci_ioctl_get_info: num_regions counts the device-specific region");

    /* The region as QEMU finds it (vfio_get_dev_region_info): TYPE capability 3/1. */
    char rbuf[256];
    struct vfio_region_info *ri = (struct vfio_region_info *)rbuf;
    memset(rbuf, 0, sizeof(rbuf));
    ri->argsz = sizeof(rbuf);
    ri->index = VFIO_PCI_NUM_REGIONS;
    EXPECT_EQ(ioctl(d.fd, VFIO_DEVICE_GET_REGION_INFO, ri), 0,
              "vfio_pci_ioctl_get_region_info: a device-specific region");
    EXPECT_EQ(ri->flags, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
                             VFIO_REGION_INFO_FLAG_CAPS,
              R_V1 " (read, write, caps, no mmap)");
    EXPECT_TRUE(ri->cap_offset >= sizeof(*ri) && ri->cap_offset < sizeof(rbuf) - 16,
                "vfio_info_add_capability: the chain starts after the struct");
    struct vfio_region_info_cap_type *ct =
        (struct vfio_region_info_cap_type *)(rbuf + ri->cap_offset);
    EXPECT_EQ(ct->header.id, VFIO_REGION_INFO_CAP_TYPE, "vfio_info_add_capability");
    EXPECT_EQ(ct->type, VFIO_REGION_TYPE_MIGRATION_DEPRECATED, R_V1);
    EXPECT_EQ(ct->subtype, VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED, R_V1);
    mig = *ri;
    mig.argsz = sizeof(mig);

    /* Header access rules. */
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_RUNNING, R_V1 " (a running device reads 001)");
    uint16_t half = 0;
    EXPECT_ERR(pread(d.fd, &half, 2, F(device_state)), EINVAL, R_V1_FIELD);
    uint64_t v = 1;
    EXPECT_ERR(pwrite(d.fd, &v, 8, F(pending_bytes)), EINVAL, R_V1_FIELD);
    EXPECT_ERR(pwrite(d.fd, &v, 8, F(data_offset)), EINVAL, R_V1_FIELD);
    EXPECT_ERR(pwrite(d.fd, &v, 8, F(data_size)), EINVAL,
               R_V1_FIELD " (data_size is written only while resuming)");
    EXPECT_ERR(pread(d.fd, &v, 8,
                     (off_t)(mig.offset + sizeof(struct vfio_device_migration_info) + 8)),
               EINVAL, R_V1 " (between the header and the data section)");
    EXPECT_ERR(pread(d.fd, &v, 8, (off_t)(mig.offset + mig.size)), EINVAL,
               R_V1 " (past the region)");
    const uint32_t bad[] = {
        VFIO_DEVICE_STATE_V1_RESUMING | VFIO_DEVICE_STATE_V1_RUNNING,
        VFIO_DEVICE_STATE_V1_RESUMING | VFIO_DEVICE_STATE_V1_SAVING,
        VFIO_DEVICE_STATE_MASK,
    };
    for (size_t i = 0; i < 3; i++) {
        EXPECT_TRUE(!VFIO_DEVICE_STATE_VALID(bad[i]) || VFIO_DEVICE_STATE_IS_ERROR(bad[i]),
                    R_V1_STATE);
        EXPECT_ERR(pwrite(d.fd, &bad[i], 4, F(device_state)), EINVAL, R_V1_STATE);
        EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_RUNNING, R_V1_STATE);
    }

    /* The state to migrate: liveness, one page of device memory. */
    reg_w32(&d, REG_LIVENESS, 0xbeef);
    memset(buf, 0x6b, PAGE);
    off_t bar2 = (off_t)d.reg[VFIO_PCI_BAR2_REGION_INDEX].offset;
    EXPECT_EQ(pwrite(d.fd, buf, PAGE, bar2 + 3 * PAGE), (long)PAGE, R_BAR_RW);

    /* Save, as QEMU 7.2. */
    EXPECT_EQ(set_state(&d, ~(uint32_t)VFIO_DEVICE_STATE_MASK,
                        VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING),
              4, R_V1 " (vfio_save_setup: 011, pre-copy)");
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING, R_V1);
    save_pending(&d);
    size_t precopy = stream_len;
    EXPECT_TRUE(precopy > 0, R_V1 " (the pre-copy frame)");
    EXPECT_EQ(field64(&d, F(pending_bytes)), 0, R_V1 " (nothing more in pre-copy)");
    EXPECT_EQ(set_state(&d, ~(uint32_t)VFIO_DEVICE_STATE_V1_RUNNING, 0), 4,
              R_V1 " (vfio_save_complete_precopy: 010, stop-and-copy)");
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_SAVING, R_V1);
    save_pending(&d);
    EXPECT_TRUE(stream_len > precopy + PAGE, R_V1 " (the final frame: registers and the page)");
    EXPECT_EQ(set_state(&d, ~(uint32_t)VFIO_DEVICE_STATE_V1_SAVING, 0), 4,
              R_V1 " (the end of the save: 000)");
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_STOP, R_V1);

    /* A fresh device, then the load, as QEMU 7.2's destination. */
    dev_reset(&d);
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_RUNNING, R_V1 " (RUNNING after a reset)");
    reg_w32(&d, REG_LIVENESS, 1);
    EXPECT_EQ(set_state(&d, ~(uint32_t)VFIO_DEVICE_STATE_MASK, VFIO_DEVICE_STATE_V1_RESUMING), 4,
              R_V1 " (vfio_load_setup: 100)");
    size_t at = 0;
    while (at < stream_len) {
        uint64_t off = field64(&d, F(data_offset));
        size_t n = stream_len - at;
        if (n > 100000)
            n = 100000;
        EXPECT_TRUE(off + n <= mig.size, R_V1 " (the data section takes the chunk)");
        EXPECT_EQ(pwrite(d.fd, stream + at, n, (off_t)(mig.offset + off)), (long)n, R_V1);
        uint64_t size = n;
        EXPECT_EQ(pwrite(d.fd, &size, 8, F(data_size)), 8,
                  R_V1 " (vfio_load_buffer: a data_size write consumes the chunk)");
        at += n;
    }
    EXPECT_EQ(reg_r32(&d, REG_LIVENESS), ~1u, R_V1 " (nothing applied while resuming)");
    EXPECT_EQ(set_state(&d, ~(uint32_t)VFIO_DEVICE_STATE_MASK, VFIO_DEVICE_STATE_V1_RUNNING), 4,
              R_V1 " (vfio_vmstate_change: 001 applies the state)");
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_RUNNING, R_V1);
    EXPECT_EQ(reg_r32(&d, REG_LIVENESS), ~0xbeefu, R_V1 " (registers restored)");
    EXPECT_EQ(pread(d.fd, buf, PAGE, bar2 + 3 * PAGE), (long)PAGE, R_BAR_RW);
    EXPECT_TRUE(buf[0] == 0x6b && buf[PAGE - 1] == 0x6b, R_V1 " (device memory restored)");

    /* A cut stream: 100 -> 001 is EINVAL and the state stays 100 (never 110). */
    dev_reset(&d);
    EXPECT_EQ(set_state(&d, ~(uint32_t)VFIO_DEVICE_STATE_MASK, VFIO_DEVICE_STATE_V1_RESUMING), 4,
              R_V1);
    uint64_t half_len = stream_len / 2;
    EXPECT_EQ(pwrite(d.fd, stream, half_len,
                     (off_t)(mig.offset + field64(&d, F(data_offset)))),
              (long)half_len, R_V1);
    EXPECT_EQ(pwrite(d.fd, &half_len, 8, F(data_size)), 8, R_V1);
    EXPECT_ERR(set_state(&d, ~(uint32_t)VFIO_DEVICE_STATE_MASK, VFIO_DEVICE_STATE_V1_RUNNING),
               EINVAL, R_V1 " (a refused stream)");
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_RESUMING,
              R_V1 " (still 100: QEMU 7.2 aborts on the error state)");
    dev_reset(&d);
    EXPECT_EQ(state(&d), VFIO_DEVICE_STATE_V1_RUNNING, R_V1 " (a reset recovers)");

    bus_master(&d, 0);
    dev_close(&d);
    printf("PASS\n");
    fprintf(stderr, "dev_mig_v1: %d checks\n", adv_checks);
    return 0;
}
