/*
 * Class dev_sysfs (issue 12): the sysfs of a device bound to vfio-pci, as the kernel presents
 * it (drivers/pci/pci-sysfs.c, drivers/iommu/iommu.c, drivers/base/core.c, v6.18), read with
 * open/read, fopen/fgets, stat/lstat, readlink and opendir/readdir, and matching the config
 * space read through the device fd.
 *
 * Expects TYPE1_GROUPS="5:iommu,6:emulated" TYPE1_DEVICES="0000:00:1f.0@5,0000:00:1e.0@6".
 */
#define _GNU_SOURCE
#include "dev_common.h"

#include <dirent.h>
#include <libgen.h>

#define B "/sys/bus/pci/devices/" DEV_A
#define B6 "/sys/bus/pci/devices/" DEV_B
#define R_ATTR "pci-sysfs.c: " /* vendor_show, device_show, ... */
#define R_ID4 "pci-sysfs.c pci_config_attr: vendor/device/subsystem_* show \"0x%04x\\n\""
#define R_CLASS "pci-sysfs.c class_show: \"0x%06x\\n\""
#define R_REV "pci-sysfs.c revision_show: \"0x%02x\\n\""
#define R_GROUP_LINK                                                                        \
    "iommu_group_add_device: sysfs_create_link(dev, \"iommu_group\") -> "                   \
    "../../../kernel/iommu_groups/N (drivers/iommu/iommu.c)"
#define R_GROUP_DEVS                                                                        \
    "iommu_group_add_device: a link named after the device in "                             \
    "/sys/kernel/iommu_groups/N/devices"
#define R_DRIVER "driver_sysfs_add: the \"driver\" link -> .../drivers/vfio-pci (drivers/base/dd.c)"
#define R_CONFIG                                                                            \
    "pci-sysfs.c pci_read_config: the config attribute is the function's config space (64 "  \
    "bytes for an unprivileged reader)"
#define R_MATCH "sysfs and the device fd describe one function"

/* The whole content of a small attribute through open/read. */
static int read_attr(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, n - 1);
    int e = errno;
    close(fd);
    errno = e;
    if (r < 0)
        return -1;
    buf[r] = 0;
    return (int)r;
}

static void attr(const char *dir, const char *name, const char *want, const char *rule)
{
    char path[256], buf[64];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    adv_ctx = path;
    EXPECT_EQ(read_attr(path, buf, sizeof(buf)), (long)strlen(want), rule);
    EXPECT_TRUE(strcmp(buf, want) == 0, rule);
    FILE *f = fopen(path, "r");
    EXPECT_TRUE(f != NULL, "fopen of a sysfs attribute");
    char line[64] = {0};
    EXPECT_TRUE(fgets(line, sizeof(line), f) != NULL && strcmp(line, want) == 0,
                "fgets reads the same line");
    fclose(f);
    struct stat st;
    EXPECT_EQ(stat(path, &st), 0, "vfs_fstatat on a sysfs attribute");
    EXPECT_TRUE(S_ISREG(st.st_mode), "sysfs attributes are regular files");
    adv_ctx = NULL;
}

static void link_to(const char *path, const char *want, const char *rule)
{
    char buf[256];
    struct stat st;
    adv_ctx = path;
    EXPECT_EQ(lstat(path, &st), 0, rule);
    EXPECT_TRUE(S_ISLNK(st.st_mode), rule);
    ssize_t n = readlink(path, buf, sizeof(buf) - 1);
    EXPECT_TRUE(n > 0, rule);
    buf[n > 0 ? n : 0] = 0;
    if (want)
        EXPECT_TRUE(strcmp(buf, want) == 0, rule);
    adv_ctx = NULL;
}

static int dir_has(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, name) == 0)
            found = 1;
    closedir(d);
    return found;
}

int main(void)
{
    struct stat st;
    EXPECT_EQ(stat(B, &st), 0, "the device directory exists (QEMU 7.2 stats it)");
    EXPECT_TRUE(S_ISDIR(st.st_mode), "/sys/bus/pci/devices/BDF resolves to a directory");

    link_to(B "/iommu_group", "../../../kernel/iommu_groups/5", R_GROUP_LINK);
    link_to(B6 "/iommu_group", "../../../kernel/iommu_groups/6", R_GROUP_LINK);
    char buf[256];
    ssize_t n = readlink(B "/driver", buf, sizeof(buf) - 1);
    EXPECT_TRUE(n > 0, R_DRIVER);
    buf[n > 0 ? n : 0] = 0;
    EXPECT_TRUE(strcmp(basename(buf), "vfio-pci") == 0, R_DRIVER);
    link_to("/sys/kernel/iommu_groups/5/devices/" DEV_A, NULL, R_GROUP_DEVS);
    link_to("/sys/kernel/iommu_groups/6/devices/" DEV_B, NULL, R_GROUP_DEVS);
    EXPECT_TRUE(dir_has("/sys/kernel/iommu_groups/5/devices", DEV_A), R_GROUP_DEVS " (readdir)");

    attr(B, "vendor", "0x1234\n", R_ID4);
    attr(B, "device", "0x11e8\n", R_ID4);
    attr(B, "subsystem_vendor", "0x1af4\n", R_ID4);
    attr(B, "subsystem_device", "0x1100\n", R_ID4);
    attr(B, "class", "0x00ff00\n", R_CLASS);
    attr(B, "revision", "0x10\n", R_REV);
    attr(B6, "vendor", "0x1234\n", R_ID4);

    static const char *const names[] = {"vendor",   "device", "subsystem_vendor",
                                        "subsystem_device", "class", "revision",
                                        "config",   "driver", "iommu_group"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        adv_ctx = names[i];
        EXPECT_TRUE(dir_has(B, names[i]), "dcache_readdir lists the device's attributes");
    }
    adv_ctx = NULL;

    /* config: binary, at least the 64-byte header. */
    uint8_t sys[64];
    int cfd;
    EXPECT_FD(cfd, open(B "/config", O_RDONLY | O_CLOEXEC), R_CONFIG);
    EXPECT_EQ(read(cfd, sys, sizeof(sys)), 64, R_CONFIG);
    close(cfd);
    EXPECT_EQ(sys[0] | (sys[1] << 8), TD_VENDOR, R_CONFIG);

    /* The same function through the device fd. */
    struct dev d = dev_open(GROUP_A, DEV_A);
    uint8_t cfg[64];
    EXPECT_EQ(pread(d.fd, cfg, sizeof(cfg), cfg_off(&d, 0)), 64, R_CFG_RW);
    EXPECT_TRUE(memcmp(cfg, sys, 64) == 0, R_MATCH ": the first 64 bytes of config agree");
    char v[64];
    read_attr(B "/vendor", v, sizeof(v));
    EXPECT_EQ(strtoul(v, NULL, 0), cfg_read(&d, 0x00, 2),
              R_MATCH " (the VFIO selftests compare sysfs vendor with config)");
    read_attr(B "/device", v, sizeof(v));
    EXPECT_EQ(strtoul(v, NULL, 0), cfg_read(&d, 0x02, 2), R_MATCH);
    read_attr(B "/subsystem_vendor", v, sizeof(v));
    EXPECT_EQ(strtoul(v, NULL, 0), cfg_read(&d, 0x2c, 2), R_MATCH);
    read_attr(B "/subsystem_device", v, sizeof(v));
    EXPECT_EQ(strtoul(v, NULL, 0), cfg_read(&d, 0x2e, 2), R_MATCH);
    read_attr(B "/class", v, sizeof(v));
    EXPECT_EQ(strtoul(v, NULL, 0), cfg_read(&d, 0x08, 4) >> 8, R_MATCH);
    read_attr(B "/revision", v, sizeof(v));
    EXPECT_EQ(strtoul(v, NULL, 0), cfg_read(&d, 0x08, 1), R_MATCH);
    /*
     * The command register's bus-master bit is not virtualised: vfio passes it to the function
     * (init_pci_cap_basic_perm: only INTx-disable is virtual in PCI_COMMAND;
     * vfio_default_config_write writes the rest through), and sysfs config reads the function
     * (pci_read_config -> pci_user_read_config_*). So the bit set through the fd shows there.
     */
    bus_master(&d, 1);
    EXPECT_FD(cfd, open(B "/config", O_RDONLY | O_CLOEXEC), R_CONFIG);
    EXPECT_EQ(pread(cfd, sys, sizeof(sys), 0), 64, R_CONFIG);
    close(cfd);
    EXPECT_EQ(sys[4] & PCI_CMD_MASTER, PCI_CMD_MASTER,
              "vfio_default_config_write passes PCI_COMMAND_MASTER to the function; sysfs config "
              "reads the function (drivers/vfio/pci/vfio_pci_config.c, drivers/pci/pci-sysfs.c)");
    EXPECT_EQ(pread(d.fd, cfg, sizeof(cfg), cfg_off(&d, 0)), 64, R_CFG_RW);
    EXPECT_TRUE(memcmp(cfg, sys, 64) == 0, R_MATCH ": the first 64 bytes still agree");
    bus_master(&d, 0);
    /* The group the fd came from is the one the link names. */
    n = readlink(B "/iommu_group", buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = 0;
    EXPECT_EQ(strtoul(basename(buf), NULL, 10), (unsigned long)d.group_no, R_MATCH);
    dev_close(&d);

    printf("PASS\n");
    fprintf(stderr, "dev_sysfs: %d checks\n", adv_checks);
    return 0;
}
