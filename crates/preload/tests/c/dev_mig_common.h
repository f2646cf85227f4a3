/*
 * Shared helpers of the device migration programs (dev_mig_v2, dev_mig_v1, dev_mig_log; issue
 * 13, crates/preload/tests/devices.rs): VFIO_DEVICE_FEATURE calls through the system
 * <linux/vfio.h>, and a data fd read to its end.
 */
#ifndef DEV_MIG_COMMON_H
#define DEV_MIG_COMMON_H

#include "dev_common.h"

#define R_FEATURE "vfio_ioctl_device_feature (drivers/vfio/vfio_main.c, v6.18)"
#define R_MIG_STATE                                                                         \
    "vfio_ioctl_device_feature_mig_device_state -> migration_set_state, one "               \
    "vfio_mig_get_next_state arc at a time (drivers/vfio/vfio_main.c, v6.18)"

/* VFIO_DEVICE_FEATURE with `len` bytes of payload in and out; the ioctl's result. */
static __attribute__((unused)) int feature(int fd, uint32_t flags, void *payload, size_t len)
{
    char buf[sizeof(struct vfio_device_feature) + 512];
    struct vfio_device_feature *f = (struct vfio_device_feature *)buf;
    if (len > 512)
        abort();
    memset(buf, 0, sizeof(buf));
    f->argsz = (uint32_t)(sizeof(*f) + len);
    f->flags = flags;
    if (len)
        memcpy(f->data, payload, len);
    int r = ioctl(fd, VFIO_DEVICE_FEATURE, f);
    int e = errno;
    if (len)
        memcpy(payload, f->data, len);
    errno = e;
    return r;
}

/* MIG_DEVICE_STATE SET to `st`; the struct as copied back in `*out`. */
static __attribute__((unused)) int mig_set(const struct dev *d, uint32_t st,
                                           struct vfio_device_feature_mig_state *out)
{
    struct vfio_device_feature_mig_state m = {.device_state = st, .data_fd = 7777};
    int r = feature(d->fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &m,
                    sizeof(m));
    int e = errno;
    if (out)
        *out = m;
    errno = e;
    return r;
}

/* MIG_DEVICE_STATE GET: the state. */
static __attribute__((unused)) uint32_t mig_get(const struct dev *d)
{
    struct vfio_device_feature_mig_state m = {0};
    EXPECT_EQ(feature(d->fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &m,
                      sizeof(m)),
              0, R_MIG_STATE " (GET)");
    EXPECT_EQ(m.data_fd, -1, R_MIG_STATE " (GET leaves data_fd -1)");
    return m.device_state;
}

/* Reads `fd` to EOF into `buf` (at most `cap` bytes); fails after 10 s without EOF. */
static __attribute__((unused)) size_t read_to_eof(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        EXPECT_EQ(poll(&p, 1, 10000), 1, "the save data fd reaches EOF (mlx5/mtty save read)");
        ssize_t r = read(fd, buf + n, cap - n);
        EXPECT_TRUE(r >= 0, "a save data fd read gives bytes or 0 at the end");
        if (r == 0)
            return n;
        n += (size_t)r;
        EXPECT_TRUE(n < cap, "the device state fits the test's buffer");
    }
}

/* Writes all of `buf` to `fd`. */
static __attribute__((unused)) void write_all(int fd, const char *buf, size_t len)
{
    size_t n = 0;
    while (n < len) {
        ssize_t r = write(fd, buf + n, len - n);
        EXPECT_TRUE(r > 0, "a resume data fd write takes bytes (mtty_resume_write)");
        n += (size_t)r;
    }
}

static __attribute__((unused)) void dev_reset(const struct dev *d)
{
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_RESET), 0,
              "vfio_pci_ioctl_reset; a migration driver's reset_done returns to RUNNING (mlx5, "
              "mtty)");
}

#endif
