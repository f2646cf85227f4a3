/*
 * Class dev_irqs (issue 12): SET_IRQS handlers of vfio_pci_intrs.c (v6.18) on the device fd:
 * MSI and MSI-X enable with eventfds -> loopback trigger -> exactly one eventfd count ->
 * disable; interrupts the device raises itself (BAR0 IRQ raise); INTx automasking, mask,
 * unmask and the resample eventfd; REQ; eventfds the device keeps its own reference to.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_common.h"

#define TRIG VFIO_IRQ_SET_ACTION_TRIGGER
#define MASK VFIO_IRQ_SET_ACTION_MASK
#define UNMASK VFIO_IRQ_SET_ACTION_UNMASK
#define MSI VFIO_PCI_MSI_IRQ_INDEX
#define MSIX VFIO_PCI_MSIX_IRQ_INDEX
#define INTX VFIO_PCI_INTX_IRQ_INDEX
#define REQ VFIO_PCI_REQ_IRQ_INDEX

#define R_ENABLE                                                                            \
    "vfio_pci_set_msi_trigger: none enabled + EVENTFD -> vfio_msi_enable(start + count) and "  \
    "vfio_msi_set_block"
#define R_DISABLE "vfio_pci_set_msi_trigger: irq_is(index) && !count && DATA_NONE -> vfio_msi_disable"
#define R_NOT_ENABLED "vfio_pci_set_msi_trigger: loopback with !irq_is(index) -> EINVAL"
#define R_OTHER_TYPE                                                                        \
    "vfio_pci_set_msi_trigger / vfio_pci_set_intx_trigger: another interrupt type enabled "  \
    "-> EINVAL"
#define R_BOOL "vfio_pci_set_msi_trigger: DATA_BOOL signals the vectors whose byte is set"
#define R_UNBIND "vfio_msi_set_vector_signal: fd -1 unbinds the vector; an unbound vector drops the event"
#define R_EBADF "vfio_msi_set_vector_signal: eventfd_ctx_fdget on a closed fd -> EBADF"
#define R_NOTEFD "vfio_msi_set_vector_signal: eventfd_ctx_fdget on a non-eventfd -> EINVAL"
#define R_FAILED_ENABLE                                                                     \
    "vfio_pci_set_msi_trigger: vfio_msi_set_block failed -> vfio_msi_disable (the index stays off)"
#define R_OWNREF                                                                            \
    "vfio_msi_set_vector_signal: eventfd_ctx_fdget takes the kernel's own reference; closing " \
    "the caller's fd does not unbind, and a file reusing the number is not signalled"
#define R_MSIX_EN                                                                           \
    "vfio_msix_config: MSI-X control Enable reads 1 exactly while MSI-X is enabled by SET_IRQS " \
    "(docs/SEMANTICS.md device layer; vfio_pci_config.c, v6.18)"
#define R_DEVICE_IRQ                                                                        \
    "vfio_msihandler: the device's interrupt -> eventfd_signal on the bound trigger, once"
#define R_INTX_LOOP "vfio_pci_set_intx_trigger: DATA_NONE loopback -> vfio_send_intx_eventfd"
#define R_INTX_AUTO                                                                         \
    "vfio_intx_handler: an assertion signals the trigger and masks (AUTOMASKED); further "  \
    "assertions while masked signal nothing"
#define R_INTX_UNMASK                                                                       \
    "vfio_pci_intx_unmask_handler: unmask with the line still asserted signals again and "  \
    "stays masked; with the line low it only unmasks"
#define R_INTX_MASK "vfio_pci_set_intx_mask -> vfio_pci_intx_mask: masked assertions are silent"
#define R_RESAMPLE                                                                          \
    "vfio_pci_set_intx_unmask: EVENTFD installs a virqfd whose signal runs "                \
    "vfio_pci_intx_unmask_handler"
#define R_INTX_OFF "vfio_pci_set_intx_mask: !is_intx -> EINVAL"

/* Counts of eventfds `e[0..n)` (each read resets). */
static void expect_counts(const int *e, int n, const uint64_t *want, const char *rule)
{
    for (int i = 0; i < n; i++) {
        char ctx[48];
        snprintf(ctx, sizeof(ctx), "eventfd of vector %d", i);
        adv_ctx = ctx;
        EXPECT_EQ(efd_take(e[i]), want[i], rule);
    }
    adv_ctx = NULL;
}

static void msi(const struct dev *d)
{
    int e[4];
    for (int i = 0; i < 4; i++)
        e[i] = new_efd();
    EXPECT_EQ(set_irqs_fds(d, MSI, 0, 4, e), 0, R_ENABLE);
    static const uint64_t zero[4] = {0, 0, 0, 0};
    expect_counts(e, 4, zero, R_ENABLE " (enabling signals nothing)");
    for (uint32_t i = 0; i < 4; i++) {
        EXPECT_EQ(set_irqs_none(d, TRIG, MSI, i, 1), 0, R_MSI_TRIGGER);
        uint64_t want[4] = {0, 0, 0, 0};
        want[i] = 1;
        expect_counts(e, 4, want, R_MSI_TRIGGER);
    }
    EXPECT_EQ(set_irqs_none(d, TRIG, MSI, 0, 4), 0, R_MSI_TRIGGER);
    static const uint64_t ones[4] = {1, 1, 1, 1};
    expect_counts(e, 4, ones, R_MSI_TRIGGER);
    static const uint8_t b[4] = {1, 0, 1, 0};
    EXPECT_EQ(set_irqs_bool(d, TRIG, MSI, 0, 4, b), 0, R_BOOL);
    static const uint64_t alt[4] = {1, 0, 1, 0};
    expect_counts(e, 4, alt, R_BOOL);

    /* Another type while MSI is on. */
    int x = new_efd();
    EXPECT_ERR(set_irqs_fds(d, MSIX, 0, 1, &x), EINVAL, R_OTHER_TYPE);
    EXPECT_ERR(set_irqs_fds(d, INTX, 0, 1, &x), EINVAL, R_OTHER_TYPE);
    /* The device's own interrupt 0 goes to MSI vector 0. */
    bus_master(d, 1);
    reg_w32(d, REG_IRQ_RAISE, 1);
    EXPECT_EQ(efd_wait(e[0], 2000), 1, R_DEVICE_IRQ);
    reg_w32(d, REG_IRQ_ACK, 1);
    bus_master(d, 0);

    EXPECT_EQ(set_irqs_none(d, TRIG, MSI, 0, 0), 0, R_DISABLE);
    EXPECT_ERR(set_irqs_none(d, TRIG, MSI, 0, 0), EINVAL,
               "vfio_pci_set_msi_trigger: disable again (MSI off) -> count 0 NONE falls to "
               "!irq_is -> EINVAL");
    EXPECT_ERR(set_irqs_none(d, TRIG, MSI, 0, 1), EINVAL, R_NOT_ENABLED);
    expect_counts(e, 4, zero, R_DISABLE " (nothing signalled after disable)");
    for (int i = 0; i < 4; i++)
        close(e[i]);
    close(x);
}

static void msix(const struct dev *d)
{
    int e[8];
    for (int i = 0; i < 8; i++)
        e[i] = new_efd();
    EXPECT_EQ(cfg_read(d, TD_MSIX_CAP + 2, 2) & 0x8000, 0, R_MSIX_EN " (off)");
    EXPECT_EQ(set_irqs_fds(d, MSIX, 0, 8, e), 0, R_ENABLE);
    EXPECT_EQ(cfg_read(d, TD_MSIX_CAP + 2, 2) & 0x8000, 0x8000, R_MSIX_EN " (on)");
    EXPECT_EQ(set_irqs_none(d, TRIG, MSIX, 5, 1), 0, R_MSI_TRIGGER);
    uint64_t want[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    expect_counts(e, 8, want, R_MSI_TRIGGER);

    /* Unbind vector 1: its loopback signals nothing; vector 2 still works. */
    int32_t none = -1;
    EXPECT_EQ(set_irqs_fds(d, MSIX, 1, 1, &none), 0, R_UNBIND);
    EXPECT_EQ(set_irqs_none(d, TRIG, MSIX, 1, 2), 0, R_MSI_TRIGGER);
    uint64_t w2[8] = {0, 0, 1, 0, 0, 0, 0, 0};
    expect_counts(e, 8, w2, R_UNBIND);

    /* The device keeps its own reference to vector 0's eventfd. */
    int keep = dup(e[0]);
    close(e[0]);
    int p[2];
    EXPECT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0, "pipe2");
    EXPECT_EQ(set_irqs_none(d, TRIG, MSIX, 0, 1), 0, R_MSI_TRIGGER);
    EXPECT_EQ(efd_take(keep), 1, R_OWNREF);
    char c;
    EXPECT_ERR(read(p[0], &c, 1), EAGAIN, R_OWNREF " (the pipe that may reuse the number)");
    uint64_t junk;
    EXPECT_ERR(read(p[0], &junk, 8), EAGAIN, R_OWNREF);
    close(p[0]);
    close(p[1]);
    e[0] = keep;

    /* The device's interrupt 0 goes to MSI-X vector 0. */
    bus_master(d, 1);
    reg_w32(d, REG_IRQ_RAISE, 1);
    EXPECT_EQ(efd_wait(e[0], 2000), 1, R_DEVICE_IRQ);
    EXPECT_EQ(efd_wait(e[0], 50), 0, R_DEVICE_IRQ " (exactly once)");
    reg_w32(d, REG_IRQ_ACK, 1);
    bus_master(d, 0);

    /* Reset keeps the bindings (the kernel restores the MSI-X state around the FLR). */
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_RESET), 0, "vfio_pci_ioctl_reset");
    EXPECT_EQ(set_irqs_none(d, TRIG, MSIX, 7, 1), 0, R_MSI_TRIGGER);
    EXPECT_EQ(efd_take(e[7]), 1,
              "vfio_pci_ioctl_reset: SET_IRQS bindings survive the reset (docs/SEMANTICS.md, "
              "device layer)");

    EXPECT_EQ(set_irqs_none(d, TRIG, MSIX, 0, 0), 0, R_DISABLE);
    EXPECT_EQ(cfg_read(d, TD_MSIX_CAP + 2, 2) & 0x8000, 0, R_MSIX_EN " (off again)");
    EXPECT_ERR(set_irqs_none(d, TRIG, MSIX, 0, 1), EINVAL, R_NOT_ENABLED);
    static const uint64_t zero[8] = {0};
    expect_counts(e, 8, zero, R_DISABLE);

    /* Bad eventfds leave the index disabled. */
    int closed = new_efd();
    close(closed);
    EXPECT_ERR(set_irqs_fds(d, MSIX, 0, 1, &closed), EBADF, R_EBADF);
    EXPECT_ERR(set_irqs_none(d, TRIG, MSIX, 0, 1), EINVAL, R_FAILED_ENABLE);
    int q[2];
    EXPECT_EQ(pipe2(q, O_CLOEXEC), 0, "pipe2");
    EXPECT_ERR(set_irqs_fds(d, MSIX, 0, 1, &q[0]), EINVAL, R_NOTEFD);
    EXPECT_ERR(set_irqs_none(d, TRIG, MSIX, 0, 1), EINVAL, R_FAILED_ENABLE);
    close(q[0]);
    close(q[1]);
    for (int i = 0; i < 8; i++)
        close(e[i]);
}

static void intx(const struct dev *d)
{
    int t = new_efd();
    EXPECT_EQ(set_irqs_fds(d, INTX, 0, 1, &t), 0,
              "vfio_pci_set_intx_trigger: none enabled + EVENTFD -> vfio_intx_enable");
    int x = new_efd();
    EXPECT_ERR(set_irqs_fds(d, MSI, 0, 1, &x), EINVAL, R_OTHER_TYPE);
    EXPECT_EQ(set_irqs_none(d, TRIG, INTX, 0, 1), 0, R_INTX_LOOP);
    EXPECT_EQ(efd_take(t), 1, R_INTX_LOOP);

    /* The device asserts its line. */
    reg_w32(d, REG_IRQ_RAISE, 1);
    EXPECT_EQ(efd_wait(t, 2000), 1, R_INTX_AUTO);
    EXPECT_EQ(cfg_read(d, 0x06, 2) & 0x8, 0x8, "PCI_STATUS_INTERRUPT follows the asserted line");
    reg_w32(d, REG_IRQ_RAISE, 2);
    EXPECT_EQ(efd_wait(t, 50), 0, R_INTX_AUTO);
    EXPECT_EQ(set_irqs_none(d, UNMASK, INTX, 0, 1), 0, "vfio_pci_set_intx_unmask");
    EXPECT_EQ(efd_wait(t, 2000), 1, R_INTX_UNMASK " (still asserted)");
    reg_w32(d, REG_IRQ_ACK, 3);
    EXPECT_EQ(cfg_read(d, 0x06, 2) & 0x8, 0, "PCI_STATUS_INTERRUPT clears with the line");
    EXPECT_EQ(set_irqs_none(d, UNMASK, INTX, 0, 1), 0, "vfio_pci_set_intx_unmask");
    EXPECT_EQ(efd_wait(t, 50), 0, R_INTX_UNMASK " (line low)");

    /* Explicit mask: silent while masked, the unmask delivers the pending level. */
    EXPECT_EQ(set_irqs_none(d, MASK, INTX, 0, 1), 0, "vfio_pci_set_intx_mask");
    reg_w32(d, REG_IRQ_RAISE, 1);
    EXPECT_EQ(efd_wait(t, 50), 0, R_INTX_MASK);
    uint8_t one = 1;
    EXPECT_EQ(set_irqs_bool(d, UNMASK, INTX, 0, 1, &one), 0,
              "vfio_pci_set_intx_unmask: DATA_BOOL 1 unmasks");
    EXPECT_EQ(efd_wait(t, 2000), 1, R_INTX_UNMASK);
    reg_w32(d, REG_IRQ_ACK, 1);
    EXPECT_EQ(set_irqs_none(d, UNMASK, INTX, 0, 1), 0, "vfio_pci_set_intx_unmask");

    /* Resample eventfd: writing it unmasks, as KVM's resampler does at EOI. */
    int u = new_efd();
    int32_t ufd = u;
    char buf[sizeof(struct vfio_irq_set) + 4];
    struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
    s->argsz = sizeof(buf);
    s->flags = VFIO_IRQ_SET_DATA_EVENTFD | UNMASK;
    s->index = INTX;
    s->start = 0;
    s->count = 1;
    memcpy(s->data, &ufd, 4);
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s), 0, R_RESAMPLE);
    reg_w32(d, REG_IRQ_RAISE, 1);
    EXPECT_EQ(efd_wait(t, 2000), 1, R_INTX_AUTO);
    uint64_t one64 = 1;
    EXPECT_EQ(write(u, &one64, 8), 8, "eventfd_write");
    EXPECT_EQ(efd_wait(t, 2000), 1, R_RESAMPLE " (line still asserted -> signalled again)");
    reg_w32(d, REG_IRQ_ACK, 1);
    EXPECT_EQ(write(u, &one64, 8), 8, "eventfd_write");
    EXPECT_EQ(efd_wait(t, 100), 0, R_RESAMPLE " (line low -> only unmasked)");
    reg_w32(d, REG_IRQ_RAISE, 1);
    EXPECT_EQ(efd_wait(t, 2000), 1, R_INTX_AUTO " (unmasked by the resample eventfd)");
    reg_w32(d, REG_IRQ_ACK, 1);
    ufd = -1;
    memcpy(s->data, &ufd, 4);
    EXPECT_EQ(ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s), 0,
              "vfio_pci_set_intx_unmask: fd < 0 -> vfio_virqfd_disable");

    s->flags = VFIO_IRQ_SET_DATA_EVENTFD | MASK;
    memcpy(s->data, &ufd, 4);
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s), ENOTTY,
               "vfio_pci_set_intx_mask: DATA_EVENTFD -> ENOTTY");
    EXPECT_ERR(set_irqs_none(d, MASK, INTX, 0, 2), EINVAL,
               "vfio_set_irqs_validate_and_prepare: start + count > 1 -> EINVAL");

    EXPECT_EQ(set_irqs_none(d, UNMASK, INTX, 0, 1), 0, "vfio_pci_set_intx_unmask");
    EXPECT_EQ(set_irqs_none(d, TRIG, INTX, 0, 0), 0,
              "vfio_pci_set_intx_trigger: is_intx && !count && DATA_NONE -> vfio_intx_disable");
    EXPECT_ERR(set_irqs_none(d, MASK, INTX, 0, 1), EINVAL, R_INTX_OFF);
    EXPECT_ERR(set_irqs_none(d, TRIG, INTX, 0, 1), EINVAL,
               "vfio_pci_set_intx_trigger: loopback with INTx disabled -> EINVAL");
    reg_w32(d, REG_IRQ_RAISE, 1);
    EXPECT_EQ(efd_wait(t, 50), 0, "vfio_intx_disable: the trigger is released");
    reg_w32(d, REG_IRQ_ACK, 1);
    close(t);
    close(u);
    close(x);
}

static void req(const struct dev *d)
{
    int r = new_efd();
    EXPECT_EQ(set_irqs_fds(d, REQ, 0, 1, &r), 0,
              "vfio_pci_set_req_trigger -> vfio_pci_set_ctx_trigger_single: fd >= 0 installs");
    EXPECT_EQ(set_irqs_none(d, TRIG, REQ, 0, 1), 0,
              "vfio_pci_set_ctx_trigger_single: DATA_NONE count 1 signals the trigger");
    EXPECT_EQ(efd_take(r), 1, "vfio_pci_set_ctx_trigger_single: one signal");
    EXPECT_ERR(set_irqs_fds(d, REQ, 1, 1, &r), EINVAL,
               "vfio_set_irqs_validate_and_prepare: start >= max (1) -> EINVAL");
    char buf[sizeof(struct vfio_irq_set)];
    struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
    s->argsz = sizeof(buf);
    s->flags = VFIO_IRQ_SET_DATA_EVENTFD | TRIG;
    s->index = REQ;
    s->start = 0;
    s->count = 0;
    EXPECT_ERR(ioctl(d->fd, VFIO_DEVICE_SET_IRQS, s), EINVAL,
               "vfio_pci_set_ctx_trigger_single: DATA_EVENTFD with count 0 -> EINVAL");
    EXPECT_EQ(set_irqs_none(d, TRIG, REQ, 0, 0), 0,
              "vfio_pci_set_ctx_trigger_single: DATA_NONE count 0 removes the trigger");
    EXPECT_ERR(set_irqs_none(d, TRIG, REQ, 0, 1), EINVAL,
               "vfio_pci_set_ctx_trigger_single: DATA_NONE without a trigger -> EINVAL");
    EXPECT_ERR(set_irqs_none(d, TRIG, REQ, 0, 0), EINVAL,
               "vfio_pci_set_ctx_trigger_single: DATA_NONE without a trigger -> EINVAL");
    EXPECT_EQ(efd_take(r), 0, "vfio_pci_set_ctx_trigger_single: no trigger, no signal");
    int32_t minus2 = -2;
    EXPECT_EQ(set_irqs_fds(d, REQ, 0, 1, &minus2), 0,
              "vfio_pci_set_ctx_trigger_single: fd < -1 changes nothing and returns 0");
    close(r);
}

int main(int argc, char **argv)
{
    int group = GROUP_A;
    const char *name = DEV_A;
    if (argc > 1 && strcmp(argv[1], "emulated") == 0) {
        group = GROUP_B;
        name = DEV_B;
    }
    struct dev d = dev_open(group, name);
    msi(&d);
    msix(&d);
    intx(&d);
    req(&d);
    dev_close(&d);
    printf("PASS\n");
    fprintf(stderr, "dev_irqs: %d checks\n", adv_checks);
    return 0;
}
