/*
 * Shared setup for the device acceptance programs (issue 12, crates/preload/tests/devices.rs).
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" and
 * TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6": each device is the built-in DMA test device
 * (crates/vfio-device/src/testdev/mod.rs has its register map). Every check goes through the
 * EXPECT_* macros of adv_check.h and names the kernel rule (v6.18) it asserts.
 */
#ifndef DEV_COMMON_H
#define DEV_COMMON_H

#include "adv_check.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#define DEV_A "0000:00:1f.0" /* group 5, iommu */
#define DEV_B "0000:00:1e.0" /* group 6, emulated */
#define GROUP_A 5
#define GROUP_B 6

/* The test device (testdev): identity and BAR0 registers. */
#define TD_VENDOR 0x1234
#define TD_DEVICE 0x11e8
#define TD_REVISION 0x10
#define TD_CLASS 0x00ff00
#define TD_SUBVENDOR 0x1af4
#define TD_SUBDEVICE 0x1100
#define TD_BAR0_SIZE (1ULL << 20)
#define TD_MEM_SIZE (16ULL << 20)
#define TD_MSIX_BAR_SIZE (16ULL << 10)
#define TD_MSI_CAP 0x40
#define TD_MSIX_CAP 0x50

#define REG_IDENT 0x00
#define REG_LIVENESS 0x04
#define REG_STATUS 0x20
#define REG_IRQ_STATUS 0x24
#define REG_IRQ_RAISE 0x60
#define REG_IRQ_ACK 0x64
#define REG_DMA_SRC 0x80
#define REG_DMA_DST 0x88
#define REG_DMA_COUNT 0x90
#define REG_DMA_CMD 0x98
#define REG_WRITER_BASE 0xa0
#define REG_WRITER_SIZE 0xa8
#define REG_WRITER_RATE 0xb0
#define REG_WRITER_CTRL 0xb4
#define REG_WRITER_SEED 0xb8
#define REG_WRITER_PAGES 0xc0
#define REG_WRITER_FAULTS 0xc8
/* The writer writes pages in batches of up to this many (one device transaction each). */
#define WRITER_BATCH 64

#define IDENT_VALUE 0x010000edu
#define STATUS_BUSY 0x1u
#define STATUS_DONE 0x2u
#define STATUS_DMA_ERROR 0x4u
#define CMD_START 0x1u
#define CMD_TO_RAM 0x2u
#define CMD_IRQ 0x4u
#define CMD_ERROR 0x8u
#define IRQ_DMA 0x100u

#define PCI_CMD_MEM 0x2
#define PCI_CMD_MASTER 0x4

#define PAGE 4096UL

/* Kernel rules cited by several programs. */
#define R_DEVFD                                                                             \
    "vfio_group_ioctl_get_device_fd -> vfio_device_open_file (drivers/vfio/group.c, v6.18): "  \
    "a device of an attached group with an IOMMU set gives a new fd"
#define R_PREAD                                                                             \
    "vfio_device_fops_read -> vfio_pci_core_read -> vfio_pci_rw "                           \
    "(drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_PWRITE                                                                            \
    "vfio_device_fops_write -> vfio_pci_core_write -> vfio_pci_rw "                         \
    "(drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_CFG_RW                                                                            \
    "vfio_pci_config_rw -> vfio_config_do_rw (drivers/vfio/pci/vfio_pci_config.c, v6.18)"
#define R_BAR_RW "vfio_pci_bar_rw (drivers/vfio/pci/vfio_pci_rdwr.c, v6.18)"
#define R_SET_IRQS                                                                          \
    "vfio_pci_ioctl_set_irqs -> vfio_pci_set_irqs_ioctl (drivers/vfio/pci/vfio_pci_intrs.c, "  \
    "v6.18)"
#define R_MSI_TRIGGER                                                                       \
    "vfio_pci_set_msi_trigger: a loopback (DATA_NONE|ACTION_TRIGGER) calls eventfd_signal "     \
    "once per bound vector in range (drivers/vfio/pci/vfio_pci_intrs.c, v6.18)"
#define R_MAP "vfio_dma_do_map (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_UNMAP "vfio_dma_do_unmap (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_TD                                                                                \
    "the test device's register map (crates/vfio-device/src/testdev/mod.rs): a transfer "   \
    "runs to completion inside the write of DMA command"

struct dev {
    int container, group, fd;
    int group_no;
    struct vfio_region_info reg[VFIO_PCI_NUM_REGIONS];
};

/* A fresh container with TYPE1v2 set. */
static __attribute__((unused)) int dev_container(void)
{
    int c;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_EQ(ioctl(c, VFIO_GET_API_VERSION), VFIO_API_VERSION, "vfio_fops_unl_ioctl");
    return c;
}

static __attribute__((unused)) int dev_group(int container, int group_no, int set_iommu)
{
    char path[32];
    int g;
    snprintf(path, sizeof(path), "/dev/vfio/%d", group_no);
    EXPECT_FD(g, open(path, O_RDWR), "vfio_group_fops_open");
    struct vfio_group_status st = {.argsz = sizeof(st)};
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &st), 0, "vfio_group_ioctl_get_status");
    EXPECT_TRUE(st.flags & VFIO_GROUP_FLAGS_VIABLE, "vfio_group_ioctl_get_status: viable");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &container), 0,
              "vfio_group_ioctl_set_container -> vfio_container_attach_group");
    if (set_iommu)
        EXPECT_EQ(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0,
                  "vfio_ioctl_set_iommu (drivers/vfio/container.c, v6.18)");
    return g;
}

/* Region info of every fixed index the test device has (VGA, index 8, is EINVAL). */
static __attribute__((unused)) void dev_regions(struct dev *d)
{
    for (uint32_t i = 0; i < VFIO_PCI_NUM_REGIONS; i++) {
        memset(&d->reg[i], 0, sizeof(d->reg[i]));
        d->reg[i].argsz = sizeof(d->reg[i]);
        d->reg[i].index = i;
        if (i == VFIO_PCI_VGA_REGION_INDEX)
            continue;
        EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &d->reg[i]), 0,
                  "vfio_pci_ioctl_get_region_info (drivers/vfio/pci/vfio_pci_core.c, v6.18)");
    }
}

/* Container + group + TYPE1v2 + device fd of `name` in group `group_no`. */
static __attribute__((unused)) struct dev dev_open(int group_no, const char *name)
{
    struct dev d;
    memset(&d, 0, sizeof(d));
    d.group_no = group_no;
    d.container = dev_container();
    d.group = dev_group(d.container, group_no, 1);
    EXPECT_FD(d.fd, ioctl(d.group, VFIO_GROUP_GET_DEVICE_FD, name), R_DEVFD);
    dev_regions(&d);
    return d;
}

static __attribute__((unused)) void dev_close(struct dev *d)
{
    EXPECT_EQ(close(d->fd), 0, "vfio_device_fops_release");
    EXPECT_EQ(close(d->group), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(d->container), 0, "vfio_fops_release");
}

static __attribute__((unused)) off_t cfg_off(const struct dev *d, uint32_t off)
{
    return (off_t)(d->reg[VFIO_PCI_CONFIG_REGION_INDEX].offset + off);
}

static __attribute__((unused)) uint32_t cfg_read(const struct dev *d, uint32_t off, size_t size)
{
    uint32_t v = 0;
    EXPECT_EQ(pread(d->fd, &v, size, cfg_off(d, off)), (long)size, R_CFG_RW);
    return v;
}

static __attribute__((unused)) void cfg_write(const struct dev *d, uint32_t off, size_t size,
                                              uint32_t v)
{
    EXPECT_EQ(pwrite(d->fd, &v, size, cfg_off(d, off)), (long)size, R_CFG_RW);
}

static __attribute__((unused)) void bus_master(const struct dev *d, int on)
{
    uint32_t cmd = cfg_read(d, 0x04, 2);
    cmd = on ? (cmd | PCI_CMD_MASTER) : (cmd & ~(uint32_t)PCI_CMD_MASTER);
    cfg_write(d, 0x04, 2, cmd);
    EXPECT_EQ(cfg_read(d, 0x04, 2) & PCI_CMD_MASTER, on ? PCI_CMD_MASTER : 0,
              "vfio_basic_config_write: the command register reads back what was written");
}

static __attribute__((unused)) off_t bar0(const struct dev *d, uint64_t off)
{
    return (off_t)(d->reg[VFIO_PCI_BAR0_REGION_INDEX].offset + off);
}

static __attribute__((unused)) uint32_t reg_r32(const struct dev *d, uint64_t off)
{
    uint32_t v = 0;
    EXPECT_EQ(pread(d->fd, &v, 4, bar0(d, off)), 4, R_BAR_RW);
    return v;
}

static __attribute__((unused)) uint64_t reg_r64(const struct dev *d, uint64_t off)
{
    uint64_t v = 0;
    EXPECT_EQ(pread(d->fd, &v, 8, bar0(d, off)), 8, R_BAR_RW);
    return v;
}

static __attribute__((unused)) void reg_w32(const struct dev *d, uint64_t off, uint32_t v)
{
    EXPECT_EQ(pwrite(d->fd, &v, 4, bar0(d, off)), 4, R_BAR_RW);
}

static __attribute__((unused)) void reg_w64(const struct dev *d, uint64_t off, uint64_t v)
{
    EXPECT_EQ(pwrite(d->fd, &v, 8, bar0(d, off)), 8, R_BAR_RW);
}

/* One transfer; returns the status register. */
static __attribute__((unused)) uint32_t dev_dma(const struct dev *d, uint64_t src, uint64_t dst,
                                                uint64_t count, uint32_t cmd)
{
    reg_w64(d, REG_DMA_SRC, src);
    reg_w64(d, REG_DMA_DST, dst);
    reg_w64(d, REG_DMA_COUNT, count);
    reg_w64(d, REG_DMA_CMD, cmd | CMD_START);
    return reg_r32(d, REG_STATUS);
}

/* SET_IRQS with eventfd data. */
static __attribute__((unused)) int set_irqs_fds(const struct dev *d, uint32_t index,
                                                uint32_t start, uint32_t count,
                                                const int32_t *fds)
{
    char buf[sizeof(struct vfio_irq_set) + 64 * sizeof(int32_t)];
    struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
    if (count > 64)
        abort();
    s->argsz = (uint32_t)(sizeof(*s) + count * sizeof(int32_t));
    s->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    s->index = index;
    s->start = start;
    s->count = count;
    memcpy(s->data, fds, count * sizeof(int32_t));
    return ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s);
}

/* SET_IRQS with DATA_NONE and `action`. */
static __attribute__((unused)) int set_irqs_none(const struct dev *d, uint32_t action,
                                                 uint32_t index, uint32_t start, uint32_t count)
{
    struct vfio_irq_set s = {
        .argsz = sizeof(s),
        .flags = VFIO_IRQ_SET_DATA_NONE | action,
        .index = index,
        .start = start,
        .count = count,
    };
    return ioctl(d->fd, VFIO_DEVICE_SET_IRQS, &s);
}

/* SET_IRQS with DATA_BOOL and `action`. */
static __attribute__((unused)) int set_irqs_bool(const struct dev *d, uint32_t action,
                                                 uint32_t index, uint32_t start, uint32_t count,
                                                 const uint8_t *bools)
{
    char buf[sizeof(struct vfio_irq_set) + 64];
    struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
    if (count > 64)
        abort();
    s->argsz = (uint32_t)(sizeof(*s) + count);
    s->flags = VFIO_IRQ_SET_DATA_BOOL | action;
    s->index = index;
    s->start = start;
    s->count = count;
    memcpy(s->data, bools, count);
    return ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s);
}

static __attribute__((unused)) int new_efd(void)
{
    int e;
    EXPECT_FD(e, eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd2");
    return e;
}

/* The eventfd's count now (0 when not signalled), reset to 0. */
static __attribute__((unused)) uint64_t efd_take(int e)
{
    uint64_t v = 0;
    if (read(e, &v, sizeof(v)) != (ssize_t)sizeof(v))
        return 0;
    return v;
}

static __attribute__((unused)) uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits up to `ms` for the eventfd to be signalled; returns its count (0 if not). */
static __attribute__((unused)) uint64_t efd_wait(int e, int ms)
{
    struct pollfd p = {.fd = e, .events = POLLIN};
    uint64_t end = now_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t t = now_ms();
        int left = t >= end ? 0 : (int)(end - t);
        int r = poll(&p, 1, left);
        if (r > 0)
            return efd_take(e);
        if (r == 0 || (r < 0 && errno != EINTR))
            return 0;
    }
}

static __attribute__((unused)) int dma_map(int c, void *vaddr, uint64_t iova, uint64_t size,
                                           uint32_t flags)
{
    struct vfio_iommu_type1_dma_map m;
    memset(&m, 0, sizeof(m));
    m.argsz = sizeof(m);
    m.flags = flags;
    m.vaddr = (uintptr_t)vaddr;
    m.iova = iova;
    m.size = size;
    return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

/* Unmaps [iova, iova+size); returns the ioctl result, the unmapped size in *done. */
static __attribute__((unused)) int dma_unmap(int c, uint64_t iova, uint64_t size, uint64_t *done)
{
    struct vfio_iommu_type1_dma_unmap u;
    memset(&u, 0, sizeof(u));
    u.argsz = sizeof(u);
    u.iova = iova;
    u.size = size;
    int r = ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u);
    if (done)
        *done = u.size;
    return r;
}

static const uint32_t DMA_RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

/* Anonymous private read-write memory (guest RAM). */
static __attribute__((unused)) uint8_t *guest_ram(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

static __attribute__((unused)) void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static __attribute__((unused)) int all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

static __attribute__((unused)) void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

#endif
