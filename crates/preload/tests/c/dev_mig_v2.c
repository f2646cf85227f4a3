/*
 * Class dev_mig_v2 (issue 13): the v2 migration UAPI of the test device through the drop-in,
 * with the system <linux/vfio.h>: VFIO_DEVICE_FEATURE_MIGRATION, every MIG_DEVICE_STATE arc
 * between the states the header names (each pair: SET from a fresh RUNNING device to the
 * first state, then to the second), every invalid target, and the data fds.
 *
 * The drop-in serves data fds in pipe mode (docs/SEMANTICS.md): a pipe end the program reads
 * or writes directly. Debian 12's header (Linux 6.1) has no PRE_COPY states; where the header
 * names them (VFIO_MIGRATION_PRE_COPY) they are checked too.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_mig_common.h"

#define R_MIGRATION                                                                         \
    "vfio_ioctl_device_feature_migration: GET only, the device's migration_flags "          \
    "(drivers/vfio/vfio_main.c, v6.18)"
#define R_NEXT                                                                              \
    "vfio_mig_get_next_state: a target past the enum or ERROR is EINVAL, an ERROR cell of "  \
    "the arc table is EINVAL; the failed SET copies back the requested state with data_fd -1 " \
    "and the state is unchanged (vfio_ioctl_device_feature_mig_device_state, v6.18)"
#define R_FD                                                                                \
    "vfio_ioct_mig_return_fd: the arc that starts a transfer (STOP->STOP_COPY, "             \
    "STOP->RESUMING, RUNNING->PRE_COPY, RUNNING_P2P->PRE_COPY_P2P) returns a new O_CLOEXEC "  \
    "fd; every other SET returns data_fd -1 (drivers/vfio/vfio_main.c, v6.18)"
#define R_SAVE                                                                              \
    "a save data fd (mlx5vf_save_read, mtty_save_read): the device state, then EOF; "       \
    "no_llseek/stream_open: ESPIPE; opened O_RDONLY: write EBADF"
#define R_LOAD                                                                              \
    "RESUMING -> STOP loads the stream (mtty_load_state); a bad stream fails the SET with "  \
    "EINVAL and the device stays RESUMING; a reset returns it to RUNNING"

static const uint32_t states[] = {
    VFIO_DEVICE_STATE_STOP,      VFIO_DEVICE_STATE_RUNNING,     VFIO_DEVICE_STATE_STOP_COPY,
    VFIO_DEVICE_STATE_RESUMING,  VFIO_DEVICE_STATE_RUNNING_P2P,
#ifdef VFIO_MIGRATION_PRE_COPY
    VFIO_DEVICE_STATE_PRE_COPY,  VFIO_DEVICE_STATE_PRE_COPY_P2P,
#endif
};
#define NSTATES (sizeof(states) / sizeof(states[0]))

static char good[1 << 20];
static size_t good_len;
static char buf[1 << 20];

static int is_precopy(uint32_t s)
{
#ifdef VFIO_MIGRATION_PRE_COPY
    return s == VFIO_DEVICE_STATE_PRE_COPY || s == VFIO_DEVICE_STATE_PRE_COPY_P2P;
#else
    (void)s;
    return 0;
#endif
}

/* Whether SET `to` from `from` is valid for a device with every optional state. */
static int valid(uint32_t from, uint32_t to)
{
    return !(from == VFIO_DEVICE_STATE_STOP_COPY && is_precopy(to));
}

/* Whether the walk from `from` to `to` ends with an arc that opens a new data fd. */
static int opens_fd(uint32_t from, uint32_t to)
{
    if (from == to)
        return 0;
    if (to == VFIO_DEVICE_STATE_STOP_COPY)
        return !is_precopy(from); /* PRE_COPY_P2P -> STOP_COPY continues on the old fd */
    if (to == VFIO_DEVICE_STATE_RESUMING)
        return 1;
    if (is_precopy(to))
        return !is_precopy(from);
    return 0;
}

/* A fresh RUNNING device moved to `st`; a RESUMING one has the good stream written and its
 * fd closed, so it can leave RESUMING. */
static void reach(const struct dev *d, uint32_t st)
{
    struct vfio_device_feature_mig_state m;
    dev_reset(d);
    EXPECT_EQ(mig_get(d), VFIO_DEVICE_STATE_RUNNING, "a reset returns the device to RUNNING");
    EXPECT_EQ(mig_set(d, st, &m), 0, R_MIG_STATE);
    EXPECT_EQ(m.device_state, st, R_MIG_STATE);
    if (m.data_fd >= 0) {
        if (st == VFIO_DEVICE_STATE_RESUMING)
            write_all(m.data_fd, good, good_len);
        EXPECT_EQ(close(m.data_fd), 0, "closing a data fd");
    }
}

int main(void)
{
    struct dev d = dev_open(GROUP_A, DEV_A);
    bus_master(&d, 1);
    struct vfio_device_feature_mig_state m;

    /* The migration feature. */
    struct vfio_device_feature_migration mf = {0};
    EXPECT_EQ(feature(d.fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, &mf,
                      sizeof(mf)),
              0, R_MIGRATION);
    EXPECT_EQ(mf.flags & (VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P),
              VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P, R_MIGRATION);
#ifdef VFIO_MIGRATION_PRE_COPY
    EXPECT_TRUE(mf.flags & VFIO_MIGRATION_PRE_COPY, R_MIGRATION);
#endif
    EXPECT_EQ(feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET |
                                VFIO_DEVICE_FEATURE_MIGRATION,
                      NULL, 0),
              0, R_MIGRATION " (PROBE of GET)");
    EXPECT_ERR(feature(d.fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIGRATION, &mf,
                       sizeof(mf)),
               EINVAL, R_MIGRATION " (vfio_check_feature: SET is not supported)");
    EXPECT_ERR(feature(d.fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, &mf, 4),
               EINVAL, R_MIGRATION " (vfio_check_feature: argsz below the payload)");
    EXPECT_EQ(feature(d.fd, VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET |
                                VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                      NULL, 0),
              0, R_MIG_STATE " (PROBE of GET|SET)");
    EXPECT_EQ(mig_get(&d), VFIO_DEVICE_STATE_RUNNING, "a device opens RUNNING");

    /* A good stream: liveness 0x1234 and one page of device memory. */
    reg_w32(&d, REG_LIVENESS, 0x1234);
    memset(buf, 0x3c, PAGE);
    EXPECT_EQ(pwrite(d.fd, buf, PAGE, (off_t)(d.reg[VFIO_PCI_BAR2_REGION_INDEX].offset + PAGE)),
              (long)PAGE, R_BAR_RW);
    EXPECT_EQ(mig_set(&d, VFIO_DEVICE_STATE_STOP_COPY, &m), 0, R_MIG_STATE);
    EXPECT_TRUE(m.data_fd >= 0, R_FD);
    EXPECT_TRUE(fcntl(m.data_fd, F_GETFD) & FD_CLOEXEC, R_FD);
    EXPECT_TRUE((fcntl(m.data_fd, F_GETFL) & O_ACCMODE) == O_RDONLY, R_SAVE);
    EXPECT_ERR(lseek(m.data_fd, 0, SEEK_SET), ESPIPE, R_SAVE);
    EXPECT_ERR(write(m.data_fd, buf, 1), EBADF, R_SAVE);
    good_len = read_to_eof(m.data_fd, good, sizeof(good));
    EXPECT_TRUE(good_len > PAGE, R_SAVE " (registers and the written page)");
    EXPECT_EQ(read(m.data_fd, buf, 16), 0, R_SAVE " (EOF again)");
    int save_fd = m.data_fd;
    EXPECT_EQ(mig_set(&d, VFIO_DEVICE_STATE_STOP, &m), 0, R_MIG_STATE);
    EXPECT_EQ(m.data_fd, -1, R_FD);
    EXPECT_EQ(read(save_fd, buf, 16), 0,
              "after STOP_COPY -> STOP the transfer has ended: pipe mode gives EOF "
              "(docs/SEMANTICS.md; the kernel's ENODEV in routed mode)");
    EXPECT_EQ(close(save_fd), 0, "closing a data fd");

    /* Every pair of states, and the invalid targets from each. */
    for (size_t i = 0; i < NSTATES; i++) {
        for (size_t j = 0; j < NSTATES; j++) {
            char ctx[96];
            snprintf(ctx, sizeof(ctx), "SET %u then SET %u", states[i], states[j]);
            adv_ctx = ctx;
            reach(&d, states[i]);
            if (!valid(states[i], states[j])) {
                EXPECT_ERR(mig_set(&d, states[j], &m), EINVAL, R_NEXT);
                EXPECT_EQ(m.device_state, states[j], R_NEXT);
                EXPECT_EQ(m.data_fd, -1, R_NEXT);
                EXPECT_EQ(mig_get(&d), states[i], R_NEXT);
                continue;
            }
            EXPECT_EQ(mig_set(&d, states[j], &m), 0, R_MIG_STATE);
            EXPECT_EQ(m.device_state, states[j], R_MIG_STATE);
            EXPECT_EQ(mig_get(&d), states[j], R_MIG_STATE);
            if (opens_fd(states[i], states[j])) {
                EXPECT_TRUE(m.data_fd >= 0, R_FD);
                EXPECT_EQ(close(m.data_fd), 0, "closing a data fd");
            } else {
                EXPECT_EQ(m.data_fd, -1, R_FD);
            }
        }
        char ctx[64];
        snprintf(ctx, sizeof(ctx), "from %u", states[i]);
        adv_ctx = ctx;
        const uint32_t bad[] = {VFIO_DEVICE_STATE_ERROR, 1000, UINT32_MAX};
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
            reach(&d, states[i]);
            EXPECT_ERR(mig_set(&d, bad[k], &m), EINVAL, R_NEXT);
            EXPECT_EQ(m.device_state, bad[k], R_NEXT);
            EXPECT_EQ(m.data_fd, -1, R_NEXT);
            EXPECT_EQ(mig_get(&d), states[i], R_NEXT);
        }
    }
    adv_ctx = NULL;

    /* Restore: the state comes back after a reset cleared it. */
    dev_reset(&d);
    EXPECT_EQ(reg_r32(&d, REG_LIVENESS), ~0u, "a reset clears the liveness register");
    EXPECT_EQ(mig_set(&d, VFIO_DEVICE_STATE_RESUMING, &m), 0, R_MIG_STATE);
    EXPECT_TRUE(m.data_fd >= 0, R_FD);
    EXPECT_TRUE((fcntl(m.data_fd, F_GETFL) & O_ACCMODE) == O_WRONLY,
                "a resume data fd is opened O_WRONLY: read EBADF");
    EXPECT_ERR(read(m.data_fd, buf, 1), EBADF, "a resume data fd is write-only");
    write_all(m.data_fd, good, good_len);
    /* QEMU leaves RESUMING before it closes the fd (vfio_load_cleanup). */
    EXPECT_EQ(mig_set(&d, VFIO_DEVICE_STATE_RUNNING, NULL), 0, R_LOAD);
    EXPECT_EQ(close(m.data_fd), 0, "closing a data fd");
    EXPECT_EQ(reg_r32(&d, REG_LIVENESS), ~0x1234u, R_LOAD " (registers restored)");
    EXPECT_EQ(pread(d.fd, buf, PAGE, (off_t)(d.reg[VFIO_PCI_BAR2_REGION_INDEX].offset + PAGE)),
              (long)PAGE, R_BAR_RW);
    EXPECT_TRUE(buf[0] == 0x3c && buf[PAGE - 1] == 0x3c, R_LOAD " (device memory restored)");

    /* Bad streams: cut, flipped, garbage. */
    const size_t cuts[] = {0, 20, good_len / 2, good_len - 1};
    for (size_t k = 0; k < 5; k++) {
        dev_reset(&d);
        reg_w32(&d, REG_LIVENESS, 9);
        EXPECT_EQ(mig_set(&d, VFIO_DEVICE_STATE_RESUMING, &m), 0, R_MIG_STATE);
        memcpy(buf, good, good_len);
        size_t len = k < 4 ? cuts[k] : good_len;
        if (k == 4)
            buf[good_len / 2] ^= 0x10;
        write_all(m.data_fd, buf, len);
        EXPECT_EQ(close(m.data_fd), 0, "closing a data fd");
        EXPECT_ERR(mig_set(&d, VFIO_DEVICE_STATE_STOP, NULL), EINVAL, R_LOAD);
        EXPECT_EQ(mig_get(&d), VFIO_DEVICE_STATE_RESUMING, R_LOAD);
        EXPECT_EQ(reg_r32(&d, REG_LIVENESS), ~9u, R_LOAD " (registers untouched)");
    }
    dev_reset(&d);
    EXPECT_EQ(mig_get(&d), VFIO_DEVICE_STATE_RUNNING, R_LOAD);

#ifdef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
    struct vfio_device_feature_mig_data_size ds = {0};
    EXPECT_EQ(feature(d.fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &ds,
                      sizeof(ds)),
              0, "vfio_ioctl_device_feature_migration_data_size");
    EXPECT_TRUE(ds.stop_copy_length > 0, "vfio_ioctl_device_feature_migration_data_size");
#endif

    bus_master(&d, 0);
    dev_close(&d);
    printf("PASS\n");
    fprintf(stderr, "dev_mig_v2: %d checks\n", adv_checks);
    return 0;
}
