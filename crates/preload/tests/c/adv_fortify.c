/*
 * Class 4 (issue 11): fortified (_FORTIFY_SOURCE=2), LFS and legacy entry points give the same
 * results as the plain ones on /dev/vfio/vfio, /dev/vfio/7 and the fake sysfs link.
 *
 * Built with -O2 -D_FORTIFY_SOURCE=2: open/openat/open64/openat64 with non-constant flags and
 * no mode compile to __open_2, __openat_2, __open64_2, __openat64_2; readlink and realpath into
 * arrays of known size compile to __readlink_chk and __realpath_chk (the harness checks the
 * binary's undefined symbols with nm -D). glibc 2.33 turned __xstat and friends into compat
 * symbols that new programs cannot link by name; programs built against older glibc still call
 * them, so they are bound here by explicit symbol version (as such a binary binds them).
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include "adv_check.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* The legacy stat entry points, as a binary built against glibc < 2.33 references them. */
extern int adv_xstat(int ver, const char *path, struct stat *buf);
extern int adv_lxstat(int ver, const char *path, struct stat *buf);
extern int adv_fxstat(int ver, int fd, struct stat *buf);
extern int adv_fxstatat(int ver, int dirfd, const char *path, struct stat *buf, int flags);
extern int adv_xstat64(int ver, const char *path, struct stat64 *buf);
extern int adv_lxstat64(int ver, const char *path, struct stat64 *buf);
extern int adv_fxstat64(int ver, int fd, struct stat64 *buf);
extern int adv_fxstatat64(int ver, int dirfd, const char *path, struct stat64 *buf, int flags);
__asm__(".symver adv_xstat, __xstat@GLIBC_2.2.5");
__asm__(".symver adv_lxstat, __lxstat@GLIBC_2.2.5");
__asm__(".symver adv_fxstat, __fxstat@GLIBC_2.2.5");
__asm__(".symver adv_fxstatat, __fxstatat@GLIBC_2.4");
__asm__(".symver adv_xstat64, __xstat64@GLIBC_2.2.5");
__asm__(".symver adv_lxstat64, __lxstat64@GLIBC_2.2.5");
__asm__(".symver adv_fxstat64, __fxstat64@GLIBC_2.2.5");
__asm__(".symver adv_fxstatat64, __fxstatat64@GLIBC_2.4");
/* _STAT_VER_LINUX on x86-64 (glibc's old <bits/stat.h>). */
#define STAT_VER 1

#define R_SAME                                                                              \
    "one kernel path behind every libc wrapper: do_sys_openat2 / vfs_fstatat / "            \
    "do_readlinkat (fs/open.c, fs/stat.c, v6.18) answer the same whatever the entry point"
#define R_CHR "/dev/vfio/vfio is the misc device 10:196 (VFIO_MINOR; drivers/vfio/container.c, v6.18)"
#define R_BUSY "vfio_group_fops_open: the group is open already -> EBUSY (drivers/vfio/group.c, v6.18)"
#define R_NOENT "path_openat / filename_lookup: no such name -> ENOENT (fs/namei.c, v6.18)"

static volatile int rw_flags = O_RDWR;
static volatile size_t buf_len = 128;

static struct stat ref_container, ref_group, ref_link_l;

/* The file behind `fd` is the container: it answers the API version. */
static void is_container_at(int fd, const char *expr, int line)
{
    if (fd < 0)
        adv_fail(__FILE__, line, expr, "a container fd", fd, errno, R_SAME);
    EXPECT_EQ(ioctl(fd, VFIO_GET_API_VERSION), VFIO_API_VERSION, R_SAME);
    EXPECT_EQ(close(fd), 0, "vfio_fops_release");
}

/* The file behind `fd` is group 7: it answers GET_STATUS, and 7 cannot be opened twice. */
static void is_group_at(int fd, const char *expr, int line)
{
    if (fd < 0)
        adv_fail(__FILE__, line, expr, "a group fd", fd, errno, R_SAME);
    struct vfio_group_status s = {.argsz = sizeof(s)};
    EXPECT_EQ(ioctl(fd, VFIO_GROUP_GET_STATUS, &s), 0, R_SAME);
    EXPECT_TRUE(s.flags == VFIO_GROUP_FLAGS_VIABLE, "vfio_group_ioctl_get_status: no container");
    EXPECT_ERR(open("/dev/vfio/7", O_RDWR), EBUSY, R_BUSY);
    EXPECT_EQ(close(fd), 0, "vfio_group_fops_release");
}

#define is_container(call) is_container_at((call), #call, __LINE__)
#define is_group(call) is_group_at((call), #call, __LINE__)

static int same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_mode == b->st_mode && a->st_rdev == b->st_rdev && a->st_ino == b->st_ino &&
           a->st_dev == b->st_dev;
}

static int same_stat64(const struct stat64 *a, const struct stat *b)
{
    return a->st_mode == b->st_mode && a->st_rdev == b->st_rdev && a->st_ino == b->st_ino &&
           a->st_dev == b->st_dev;
}

static void opens(void)
{
    int flags = rw_flags; /* not a compile-time constant: the fortified paths are taken */
    is_container(open("/dev/vfio/vfio", flags));
    is_container(open64("/dev/vfio/vfio", flags));
    is_container(openat(AT_FDCWD, "/dev/vfio/vfio", flags));
    is_container(openat64(AT_FDCWD, "/dev/vfio/vfio", flags));
    is_group(open("/dev/vfio/7", flags));
    is_group(open64("/dev/vfio/7", flags));
    is_group(openat(AT_FDCWD, "/dev/vfio/7", flags));
    is_group(openat64(AT_FDCWD, "/dev/vfio/7", flags));
    EXPECT_ERR(open("/dev/vfio/99", flags), ENOENT, R_NOENT);
    EXPECT_ERR(openat64(AT_FDCWD, "/dev/vfio/99", flags), ENOENT, R_NOENT);
    /* O_CLOEXEC through the fortified path. */
    int fd;
    EXPECT_FD(fd, open("/dev/vfio/vfio", flags | O_CLOEXEC), R_SAME);
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC, "do_sys_openat2: O_CLOEXEC -> FD_CLOEXEC");
    is_container(fd);
}

static void stats(void)
{
    EXPECT_EQ(stat("/dev/vfio/vfio", &ref_container), 0, R_SAME);
    EXPECT_TRUE(S_ISCHR(ref_container.st_mode) && major(ref_container.st_rdev) == 10 &&
                    minor(ref_container.st_rdev) == 196,
                R_CHR);
    EXPECT_EQ(stat("/dev/vfio/7", &ref_group), 0, R_SAME);
    EXPECT_TRUE(S_ISCHR(ref_group.st_mode), "vfio group: a char device (drivers/vfio/group.c)");
    const char *link = "/sys/bus/pci/devices/0000:00:04.0/iommu_group";
    EXPECT_EQ(lstat(link, &ref_link_l), 0, R_SAME);
    EXPECT_TRUE(S_ISLNK(ref_link_l.st_mode), "sysfs iommu_group is a symlink (lstat)");

    const char *paths[] = {"/dev/vfio/vfio", "/dev/vfio/7"};
    const struct stat *refs[] = {&ref_container, &ref_group};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        struct stat64 st64;
        memset(&st, 0, sizeof(st));
        EXPECT_EQ(stat64(paths[i], &st64), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, refs[i]), R_SAME);
        EXPECT_EQ(lstat64(paths[i], &st64), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, refs[i]), R_SAME);
        EXPECT_EQ(fstatat64(AT_FDCWD, paths[i], &st64, 0), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, refs[i]), R_SAME);
        EXPECT_EQ(adv_xstat(STAT_VER, paths[i], &st), 0, R_SAME);
        EXPECT_TRUE(same_stat(&st, refs[i]), R_SAME);
        EXPECT_EQ(adv_lxstat(STAT_VER, paths[i], &st), 0, R_SAME);
        EXPECT_TRUE(same_stat(&st, refs[i]), R_SAME);
        EXPECT_EQ(adv_fxstatat(STAT_VER, AT_FDCWD, paths[i], &st, 0), 0, R_SAME);
        EXPECT_TRUE(same_stat(&st, refs[i]), R_SAME);
        EXPECT_EQ(adv_xstat64(STAT_VER, paths[i], &st64), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, refs[i]), R_SAME);
        EXPECT_EQ(adv_lxstat64(STAT_VER, paths[i], &st64), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, refs[i]), R_SAME);
        EXPECT_EQ(adv_fxstatat64(STAT_VER, AT_FDCWD, paths[i], &st64, 0), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, refs[i]), R_SAME);
    }
    /* The link: l-variants see the link, the others its target directory. */
    struct stat st;
    struct stat64 st64;
    EXPECT_EQ(adv_lxstat(STAT_VER, link, &st), 0, R_SAME);
    EXPECT_TRUE(S_ISLNK(st.st_mode), R_SAME);
    EXPECT_EQ(adv_xstat(STAT_VER, link, &st), 0, R_SAME);
    EXPECT_TRUE(S_ISDIR(st.st_mode), "stat follows the link to the group's sysfs directory");
    EXPECT_EQ(lstat64(link, &st64), 0, R_SAME);
    EXPECT_TRUE(S_ISLNK(st64.st_mode), R_SAME);
    /* Missing names. */
    EXPECT_ERR(stat64("/dev/vfio/99", &st64), ENOENT, R_NOENT);
    EXPECT_ERR(adv_xstat(STAT_VER, "/dev/vfio/99", &st), ENOENT, R_NOENT);

    /* fstat-family on open fds. */
    int fds[2];
    EXPECT_FD(fds[0], open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_FD(fds[1], open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    for (int i = 0; i < 2; i++) {
        struct stat plain;
        EXPECT_EQ(fstat(fds[i], &plain), 0, R_SAME);
        EXPECT_TRUE(S_ISCHR(plain.st_mode) && plain.st_rdev == refs[i]->st_rdev, R_SAME);
        EXPECT_EQ(fstat64(fds[i], &st64), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, &plain), R_SAME);
        EXPECT_EQ(adv_fxstat(STAT_VER, fds[i], &st), 0, R_SAME);
        EXPECT_TRUE(same_stat(&st, &plain), R_SAME);
        EXPECT_EQ(adv_fxstat64(STAT_VER, fds[i], &st64), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, &plain), R_SAME);
        EXPECT_EQ(fstatat64(fds[i], "", &st64, AT_EMPTY_PATH), 0, R_SAME);
        EXPECT_TRUE(same_stat64(&st64, &plain), R_SAME);
        EXPECT_EQ(adv_fxstatat(STAT_VER, fds[i], "", &st, AT_EMPTY_PATH), 0, R_SAME);
        EXPECT_TRUE(same_stat(&st, &plain), R_SAME);
    }
    close(fds[1]);
    close(fds[0]);
}

static void links(void)
{
    const char *link = "/sys/bus/pci/devices/0000:00:04.0/iommu_group";
    const char *target = "../../../kernel/iommu_groups/7";
    char buf[128];
    memset(buf, 0, sizeof(buf));
    size_t len = buf_len; /* not a compile-time constant: __readlink_chk checks it */
    EXPECT_EQ(readlink(link, buf, len), (long)strlen(target), R_SAME);
    EXPECT_TRUE(strcmp(buf, target) == 0, R_SAME);
    char resolved[PATH_MAX];
    EXPECT_TRUE(realpath(link, resolved) != NULL, R_SAME); /* __realpath_chk */
    EXPECT_TRUE(strcmp(resolved, "/sys/kernel/iommu_groups/7") == 0,
                "realpath resolves the link (../../../kernel/iommu_groups/7)");
    EXPECT_TRUE(realpath("/dev/vfio/vfio", resolved) != NULL, R_SAME);
    EXPECT_TRUE(strcmp(resolved, "/dev/vfio/vfio") == 0, R_SAME);
    EXPECT_NULL_ERR(realpath("/dev/vfio/99", resolved), ENOENT, R_NOENT);
}

int main(void)
{
    opens();
    stats();
    links();
    printf("PASS\n");
    fprintf(stderr, "adv_fortify: %d checks\n", adv_checks);
    return 0;
}
