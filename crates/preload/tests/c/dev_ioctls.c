/*
 * Class dev_ioctls (issue 12): every device-fd ioctl rule with its errno, as vfio-pci answers
 * on a device fd (drivers/vfio/pci/vfio_pci_core.c, vfio_main.c, vfio_pci_intrs.c, v6.18):
 * GET_INFO, GET_REGION_INFO (with the MSI-X BAR's capability chain), GET_IRQ_INFO, the
 * validation of SET_IRQS (vfio_set_irqs_validate_and_prepare), DEVICE_RESET, the hot-reset
 * pair, DEVICE_FEATURE's wrapper, unknown requests.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_common.h"

#define R_INFO "vfio_pci_ioctl_get_info (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_INFO_MINSZ                                                                        \
    "vfio_pci_ioctl_get_info: copy_from_user(minsz = offsetofend(num_irqs)) -> EFAULT, "     \
    "argsz < minsz -> EINVAL, copy_to_user(min(argsz, sizeof))"
#define R_RINFO "vfio_pci_ioctl_get_region_info (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_RINFO_MINSZ                                                                       \
    "vfio_pci_ioctl_get_region_info: minsz = offsetofend(offset) = 32; argsz < minsz -> "   \
    "EINVAL; copy_from_user -> EFAULT"
#define R_RINFO_ABSENT                                                                      \
    "vfio_pci_ioctl_get_region_info: BARn with pci_resource_len 0 -> size 0, flags 0"
#define R_RINFO_VGA "vfio_pci_ioctl_get_region_info: VGA index without vdev->has_vga -> EINVAL"
#define R_RINFO_BEYOND                                                                      \
    "vfio_pci_ioctl_get_region_info: index >= VFIO_PCI_NUM_REGIONS + num_regions -> EINVAL"
#define R_CAPS                                                                              \
    "vfio_pci_ioctl_get_region_info: the MSI-X BAR gets msix_mappable_cap; argsz too small "   \
    "-> argsz = sizeof + caps.size, cap_offset 0, return 0; else the chain at +32, "        \
    "cap_offset 32"
#define R_IRQINFO "vfio_pci_ioctl_get_irq_info (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_IRQINFO_ERR                                                                       \
    "vfio_pci_ioctl_get_irq_info: ERR index on a function without PCIe capability -> EINVAL"
#define R_VALIDATE                                                                          \
    "vfio_set_irqs_validate_and_prepare (drivers/vfio/vfio_main.c, v6.18)"
#define R_NOFUNC                                                                            \
    "vfio_pci_set_irqs_ioctl: no handler for this index/action (none, several, or MSI "     \
    "mask/unmask) -> ENOTTY"
#define R_RESET "vfio_pci_ioctl_reset: reset_works -> pci_try_reset_function -> 0"
#define R_HRI "vfio_pci_ioctl_get_pci_hot_reset_info (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_HR "vfio_pci_ioctl_pci_hot_reset / _groups (drivers/vfio/pci/vfio_pci_core.c, v6.18)"
#define R_FEATURE "vfio_ioctl_device_feature (drivers/vfio/vfio_main.c, v6.18)"
#define R_UNKNOWN "vfio_pci_core_ioctl: default -> ENOTTY (drivers/vfio/pci/vfio_pci_core.c)"

static void get_info(const struct dev *d, struct adv_pages *P)
{
    /* minsz is 16 (up to num_irqs); the system header's struct may be 20 or 24 bytes. */
    uint8_t buf[64];
    struct vfio_device_info *info = (struct vfio_device_info *)buf;
    memset(buf, 0xaa, sizeof(buf));
    info->argsz = 16;
    info->flags = 0xffffffffu; /* ignored on input */
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_INFO, info), 0, R_INFO_MINSZ);
    EXPECT_EQ(info->argsz, 16, R_INFO_MINSZ);
    EXPECT_EQ(info->flags, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
              R_INFO ": flags = PCI, | RESET when reset_works; no CAPS for PCI");
    EXPECT_EQ(info->num_regions, VFIO_PCI_NUM_REGIONS, R_INFO ": 9 + no device regions");
    EXPECT_EQ(info->num_irqs, VFIO_PCI_NUM_IRQS, R_INFO ": num_irqs = VFIO_PCI_NUM_IRQS");
    EXPECT_TRUE(all_bytes(buf + 16, sizeof(buf) - 16, 0xaa),
                R_INFO_MINSZ " (argsz 16: nothing past 16 bytes written)");

    memset(buf, 0xaa, sizeof(buf));
    info->argsz = sizeof(struct vfio_device_info);
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_INFO, info), 0, R_INFO);
    EXPECT_EQ(info->cap_offset, 0, R_INFO ": no capabilities on a PCI function");
    EXPECT_TRUE(all_bytes(buf + sizeof(struct vfio_device_info),
                          sizeof(buf) - sizeof(struct vfio_device_info), 0xaa),
                R_INFO_MINSZ);

    info->argsz = 15;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_INFO, info), EINVAL, R_INFO_MINSZ);
    info->argsz = 0;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_INFO, info), EINVAL, R_INFO_MINSZ);
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_INFO, ADV_BAD1), EFAULT, R_INFO_MINSZ);
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_INFO, NULL), EFAULT, R_INFO_MINSZ);
    /* 16 readable bytes that end at an unmapped page are enough. */
    struct vfio_device_info *edge = adv_edge_obj(P, 16);
    edge->argsz = 16;
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_INFO, edge), 0, R_INFO_MINSZ);
    EXPECT_EQ(edge->num_irqs, VFIO_PCI_NUM_IRQS, R_INFO);
}

static void region(const struct dev *d, uint32_t index, uint64_t size, uint32_t flags,
                   const char *rule)
{
    struct vfio_region_info r = {.argsz = sizeof(r), .index = index};
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &r), 0, rule);
    adv_ctx = rule;
    EXPECT_EQ(r.index, index, R_RINFO);
    EXPECT_EQ(r.size, size, rule);
    EXPECT_EQ(r.flags, flags, rule);
    EXPECT_EQ(r.offset, (uint64_t)index << 40,
              "VFIO_PCI_INDEX_TO_OFFSET: offset = index << VFIO_PCI_OFFSET_SHIFT (40)");
    adv_ctx = NULL;
}

static void region_info(const struct dev *d, struct adv_pages *P)
{
    const uint32_t RW = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    region(d, 0, TD_BAR0_SIZE, RW, R_RINFO ": BAR0, 1 MiB of registers, not mmap-able");
    region(d, 1, 0, 0, R_RINFO_ABSENT);
    region(d, 2, TD_MEM_SIZE, RW | VFIO_REGION_INFO_FLAG_MMAP,
           R_RINFO ": BAR2, 16 MiB, bar_mmap_supported");
    region(d, 3, 0, 0, R_RINFO_ABSENT " (the upper half of 64-bit BAR2)");
    region(d, 5, 0, 0, R_RINFO_ABSENT);
    region(d, VFIO_PCI_ROM_REGION_INDEX, 0, 0, R_RINFO ": ROM without a ROM -> size 0, flags 0");
    region(d, VFIO_PCI_CONFIG_REGION_INDEX, 256, RW, R_RINFO ": config, cfg_size 256, READ|WRITE");

    struct vfio_region_info r = {.argsz = sizeof(r), .index = VFIO_PCI_VGA_REGION_INDEX};
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &r), EINVAL, R_RINFO_VGA);
    r.index = VFIO_PCI_NUM_REGIONS;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &r), EINVAL, R_RINFO_BEYOND);
    r.index = 0xffffffffu;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &r), EINVAL, R_RINFO_BEYOND);
    r.index = 0;
    r.argsz = 31;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &r), EINVAL, R_RINFO_MINSZ);
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, ADV_BAD1), EFAULT, R_RINFO_MINSZ);
    struct vfio_region_info *edge = adv_edge_obj(P, 31);
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, edge), EFAULT, R_RINFO_MINSZ);

    /* BAR4: MSI-X, mmap-able, with the MSIX_MAPPABLE capability. */
    uint8_t buf[128];
    struct vfio_region_info *ri = (struct vfio_region_info *)buf;
    memset(buf, 0xaa, sizeof(buf));
    ri->argsz = sizeof(*ri);
    ri->index = 4;
    ri->cap_offset = 0x55;
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, ri), 0, R_CAPS);
    EXPECT_EQ(ri->argsz, sizeof(*ri) + sizeof(struct vfio_info_cap_header), R_CAPS);
    EXPECT_EQ(ri->cap_offset, 0, R_CAPS);
    EXPECT_EQ(ri->flags,
              VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
                  VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS,
              R_CAPS);
    EXPECT_EQ(ri->size, TD_MSIX_BAR_SIZE, R_RINFO ": BAR4, 16 KiB");
    EXPECT_EQ(ri->offset, 4ULL << 40, "VFIO_PCI_INDEX_TO_OFFSET");
    EXPECT_TRUE(all_bytes(buf + sizeof(*ri), sizeof(buf) - sizeof(*ri), 0xaa),
                R_CAPS " (no caps copied when they do not fit)");
    /* Again with the argsz it asked for. */
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, ri), 0, R_CAPS);
    EXPECT_EQ(ri->cap_offset, sizeof(*ri), R_CAPS);
    struct vfio_info_cap_header *h = (struct vfio_info_cap_header *)(buf + sizeof(*ri));
    EXPECT_EQ(h->id, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, R_CAPS);
    EXPECT_EQ(h->version, 1, R_CAPS);
    EXPECT_EQ(h->next, 0, R_CAPS);
    EXPECT_TRUE(all_bytes(buf + sizeof(*ri) + sizeof(*h), sizeof(buf) - sizeof(*ri) - sizeof(*h),
                          0xaa),
                R_CAPS " (exactly caps.size bytes copied)");
    /* A larger argsz is never lowered. */
    ri->argsz = 100;
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, ri), 0, R_CAPS);
    EXPECT_EQ(ri->argsz, 100, R_CAPS " (argsz only grows)");
    EXPECT_EQ(ri->cap_offset, sizeof(*ri), R_CAPS);
}

static void irq(const struct dev *d, uint32_t index, uint32_t flags, uint32_t count,
                const char *rule)
{
    struct vfio_irq_info i = {.argsz = sizeof(i), .index = index};
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_IRQ_INFO, &i), 0, rule);
    adv_ctx = rule;
    EXPECT_EQ(i.flags, flags, rule);
    EXPECT_EQ(i.count, count, rule);
    adv_ctx = NULL;
}

static void irq_info(const struct dev *d)
{
    irq(d, VFIO_PCI_INTX_IRQ_INDEX,
        VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1,
        R_IRQINFO ": INTx EVENTFD|MASKABLE|AUTOMASKED, count 1 with pin A");
    irq(d, VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 4,
        R_IRQINFO ": MSI EVENTFD|NORESIZE, count 1 << MMC = 4");
    irq(d, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 8,
        R_IRQINFO ": MSI-X count = table size 8; NORESIZE (static allocation: docs/SEMANTICS.md, "
                  "device layer)");
    irq(d, VFIO_PCI_REQ_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 1,
        R_IRQINFO ": REQ EVENTFD|NORESIZE, count 1");
    struct vfio_irq_info i = {.argsz = sizeof(i), .index = VFIO_PCI_ERR_IRQ_INDEX};
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_IRQ_INFO, &i), EINVAL, R_IRQINFO_ERR);
    i.index = VFIO_PCI_NUM_IRQS;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_IRQ_INFO, &i), EINVAL,
               R_IRQINFO ": index >= VFIO_PCI_NUM_IRQS -> EINVAL");
    i.index = 0;
    i.argsz = 15;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_IRQ_INFO, &i), EINVAL,
               R_IRQINFO ": argsz < minsz (16) -> EINVAL");
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_IRQ_INFO, ADV_BAD1), EFAULT,
               R_IRQINFO ": copy_from_user -> EFAULT");
}

static int set_irqs_raw(const struct dev *d, uint32_t argsz, uint32_t flags, uint32_t index,
                        uint32_t start, uint32_t count)
{
    char buf[sizeof(struct vfio_irq_set) + 64];
    struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
    memset(buf, 0xff, sizeof(buf)); /* eventfd data, if any, is -1 */
    s->argsz = argsz;
    s->flags = flags;
    s->index = index;
    s->start = start;
    s->count = count;
    return ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s);
}

static void set_irqs_validation(const struct dev *d, struct adv_pages *P)
{
    const uint32_t TRIG = VFIO_IRQ_SET_ACTION_TRIGGER;
    const uint32_t EFD = VFIO_IRQ_SET_DATA_EVENTFD;
    const uint32_t NONE = VFIO_IRQ_SET_DATA_NONE;
    const uint32_t HDR = sizeof(struct vfio_irq_set);
    const uint32_t MSIX = VFIO_PCI_MSIX_IRQ_INDEX;

    EXPECT_ERR(set_irqs_raw(d, HDR - 1, NONE | TRIG, MSIX, 0, 0), EINVAL,
               R_VALIDATE ": argsz < minsz (20) -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | TRIG, VFIO_PCI_NUM_IRQS, 0, 0), EINVAL,
               R_VALIDATE ": index >= num_irqs -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | TRIG | (1u << 6), MSIX, 0, 1), EINVAL,
               R_VALIDATE ": flags outside DATA_TYPE_MASK|ACTION_TYPE_MASK -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | TRIG, MSIX, 1, 0xfffffffeu), EINVAL,
               R_VALIDATE ": count >= U32_MAX - start -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR + 4, EFD | TRIG, MSIX, 8, 1), EINVAL,
               R_VALIDATE ": start >= max (8 MSI-X vectors) -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR + 36, EFD | TRIG, MSIX, 0, 9), EINVAL,
               R_VALIDATE ": start + count > max -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | TRIG, VFIO_PCI_ERR_IRQ_INDEX, 0, 0), EINVAL,
               R_VALIDATE ": max 0 for ERR without PCIe -> start >= max -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR + 1, NONE | VFIO_IRQ_SET_DATA_BOOL | TRIG, MSIX, 0, 1),
               EINVAL, R_VALIDATE ": not exactly one data type -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR + 4, EFD | TRIG, MSIX, 0, 2), EINVAL,
               R_VALIDATE ": argsz - minsz < count * sizeof(s32) -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR, VFIO_IRQ_SET_DATA_BOOL | TRIG, MSIX, 0, 1), EINVAL,
               R_VALIDATE ": argsz - minsz < count * 1 -> EINVAL");
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_SET_IRQS, ADV_BAD1), EFAULT,
               "vfio_pci_ioctl_set_irqs: copy_from_user(hdr) -> EFAULT");
    /* A header that ends exactly at an unmapped page: the data cannot be copied. */
    struct vfio_irq_set *s = adv_edge_obj(P, HDR);
    s->argsz = HDR + 4;
    s->flags = EFD | TRIG;
    s->index = MSIX;
    s->start = 0;
    s->count = 1;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s), EFAULT,
               "vfio_pci_ioctl_set_irqs: memdup_user(&arg->data) -> EFAULT");

    /* Valid headers without a handler. */
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE, MSIX, 0, 1), ENOTTY, R_NOFUNC " (no action bit)");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | TRIG | VFIO_IRQ_SET_ACTION_MASK, MSIX, 0, 1), ENOTTY,
               R_NOFUNC " (two action bits)");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | VFIO_IRQ_SET_ACTION_MASK, MSIX, 0, 1), ENOTTY,
               R_NOFUNC " (MSI-X MASK)");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_MSI_IRQ_INDEX, 0,
                            1),
               ENOTTY, R_NOFUNC " (MSI UNMASK)");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_REQ_IRQ_INDEX, 0,
                            1),
               ENOTTY, R_NOFUNC " (REQ MASK)");

    /* INTx mask/unmask need INTx enabled. */
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_INTX_IRQ_INDEX, 0,
                            1),
               EINVAL, "vfio_pci_set_intx_mask: !is_intx -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | TRIG, VFIO_PCI_INTX_IRQ_INDEX, 0, 0), EINVAL,
               "vfio_pci_set_intx_trigger: disable (count 0) while INTx is not enabled -> EINVAL");
    EXPECT_ERR(set_irqs_raw(d, HDR, NONE | TRIG, MSIX, 0, 1), EINVAL,
               "vfio_pci_set_msi_trigger: loopback while MSI-X is not enabled -> EINVAL");
}

static void reset(const struct dev *d)
{
    bus_master(d, 1);
    reg_w32(d, REG_LIVENESS, 5);
    reg_w64(d, REG_DMA_SRC, 0x1234000);
    EXPECT_EQ(reg_r32(d, REG_LIVENESS), ~5u, R_TD);
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_RESET), 0, R_RESET);
    EXPECT_EQ(reg_r32(d, REG_LIVENESS), 0xffffffffu,
              "pci_try_reset_function: the function's registers are back at power-on");
    EXPECT_EQ(reg_r64(d, REG_DMA_SRC), 0, "pci_try_reset_function: power-on registers");
    EXPECT_EQ(cfg_read(d, 0x04, 2) & (PCI_CMD_MASTER | PCI_CMD_MEM), PCI_CMD_MASTER | PCI_CMD_MEM,
              "vfio_pci_ioctl_reset: pci_try_reset_function saves and restores config state "
              "(docs/SEMANTICS.md, device layer: reset keeps config)");
    bus_master(d, 0);
}

static void hot_reset(const struct dev *d, int other_group, struct adv_pages *P)
{
    uint8_t buf[64];
    struct vfio_pci_hot_reset_info *hi = (struct vfio_pci_hot_reset_info *)buf;
    const uint32_t HSZ = sizeof(*hi);
    memset(buf, 0, sizeof(buf));
    hi->argsz = HSZ - 1;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hi), EINVAL,
               R_HRI ": argsz < minsz -> EINVAL");
    hi->argsz = HSZ;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hi), ENOSPC,
               R_HRI ": no room for the devices -> header with count, ENOSPC");
    EXPECT_EQ(hi->count, 1, R_HRI ": count = devices affected (one function)");
    hi->argsz = HSZ + sizeof(struct vfio_pci_dependent_device);
    hi->count = 0;
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hi), 0, R_HRI);
    EXPECT_EQ(hi->count, 1, R_HRI);
    EXPECT_EQ(hi->devices[0].group_id, (uint32_t)d->group_no,
              R_HRI ": group path: the entry names iommu_group_id of the device (5)");
    EXPECT_EQ(hi->devices[0].segment, 0, R_HRI ": pci_domain_nr");
    EXPECT_EQ(hi->devices[0].bus, 0, R_HRI ": bus number");
    EXPECT_EQ(hi->devices[0].devfn, (0x1f << 3) | 0, R_HRI ": devfn of 00:1f.0");
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, ADV_BAD1), EFAULT,
               R_HRI ": copy_from_user -> EFAULT");

    struct {
        struct vfio_pci_hot_reset h;
        int32_t fds[2];
    } hr;
    memset(&hr, 0, sizeof(hr));
    hr.h.argsz = sizeof(hr.h) + sizeof(int32_t);
    hr.h.count = 1;
    hr.fds[0] = d->group;
    hr.h.flags = 1;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, &hr), EINVAL, R_HR ": flags != 0 -> EINVAL");
    hr.h.flags = 0;
    hr.h.count = 0;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, &hr), EINVAL,
               R_HR ": a zero-length array is only for cdev-opened devices -> EINVAL");
    hr.h.count = 2;
    hr.h.argsz = sizeof(hr);
    hr.fds[1] = d->group;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, &hr), EINVAL,
               R_HR ": array_count > devices affected -> EINVAL");
    hr.h.count = 1;
    hr.h.argsz = sizeof(hr.h) + sizeof(int32_t);
    hr.fds[0] = d->container;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, &hr), EINVAL,
               R_HR ": !vfio_file_is_valid (a container fd) -> EINVAL");
    hr.fds[0] = 1000;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, &hr), EBADF, R_HR ": fget fails -> EBADF");
    hr.fds[0] = other_group;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, &hr), EINVAL,
               R_HR ": vfio_pci_dev_set_hot_reset: the device is not in the given groups -> EINVAL");
    struct vfio_pci_hot_reset *e = adv_edge_obj(P, sizeof(struct vfio_pci_hot_reset));
    e->argsz = sizeof(*e) + 4;
    e->count = 1;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, e), EFAULT,
               R_HR ": copy_from_user(group_fds) -> EFAULT");
    reg_w32(d, REG_LIVENESS, 9);
    hr.fds[0] = d->group;
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_PCI_HOT_RESET, &hr), 0,
              R_HR ": the device's own group -> vfio_pci_dev_set_hot_reset -> 0");
    EXPECT_EQ(reg_r32(d, REG_LIVENESS), 0xffffffffu, R_HR ": the function was reset");
}

static void feature(const struct dev *d)
{
    struct vfio_device_feature f = {.argsz = sizeof(f)};
    f.argsz = sizeof(f) - 1;
    f.flags = VFIO_DEVICE_FEATURE_PROBE;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_FEATURE, &f), EINVAL, R_FEATURE ": argsz < minsz -> EINVAL");
    f.argsz = sizeof(f);
    f.flags = VFIO_DEVICE_FEATURE_PROBE | (1u << 19);
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_FEATURE, &f), EINVAL,
               R_FEATURE ": unknown flag bits -> EINVAL");
    f.flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_FEATURE, &f), EINVAL,
               R_FEATURE ": GET and SET without PROBE -> EINVAL");
    f.flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | 0x1234;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_FEATURE, &f), ENOTTY,
               R_FEATURE ": an unknown feature index -> ENOTTY");
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_FEATURE, ADV_BAD1), EFAULT,
               R_FEATURE ": copy_from_user -> EFAULT");
}

int main(void)
{
    struct adv_pages P = adv_pages();
    struct dev d = dev_open(GROUP_A, DEV_A);
    get_info(&d, &P);
    region_info(&d, &P);
    irq_info(&d);
    set_irqs_validation(&d, &P);
    reset(&d);

    /* Container-only and group-only requests are not device requests. */
    EXPECT_ERR(ioctl(d.fd, VFIO_GET_API_VERSION), ENOTTY, R_UNKNOWN);
    EXPECT_ERR(ioctl(d.fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), ENOTTY, R_UNKNOWN);
    struct vfio_group_status st = {.argsz = sizeof(st)};
    EXPECT_ERR(ioctl(d.fd, VFIO_GROUP_GET_STATUS, &st), ENOTTY, R_UNKNOWN);
    EXPECT_ERR(ioctl(d.fd, VFIO_DEVICE_IOEVENTFD, NULL), ENOTTY,
               "no ioeventfd support (docs/SEMANTICS.md, device layer)");

    /* Group 6 in another container, for the hot-reset group check. */
    int c6 = dev_container();
    int g6 = dev_group(c6, GROUP_B, 1);
    hot_reset(&d, g6, &P);
    feature(&d);
    EXPECT_EQ(close(g6), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(c6), 0, "vfio_fops_release");

    dev_close(&d);
    printf("PASS\n");
    fprintf(stderr, "dev_ioctls: %d checks\n", adv_checks);
    return 0;
}
