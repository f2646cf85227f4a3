/*
 * Class 5 (issue 11): path strictness, and the stdio / dirent views of the fake files.
 *
 * The names under /dev/vfio are exactly "vfio" and the configured group numbers (devtmpfs
 * entries named by dev_set_name "%d", drivers/vfio/group.c); everything else is resolved by the
 * kernel's path walk (fs/namei.c, v6.18).
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 */
#define _GNU_SOURCE
#include "adv_check.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define R_NOENT "lookup of a name that does not exist in the directory -> ENOENT (walk_component, fs/namei.c, v6.18)"
#define R_TRAIL                                                                             \
    "trailing slash sets LOOKUP_DIRECTORY; the last component is not a directory -> "      \
    "ENOTDIR (do_open / complete_walk, fs/namei.c, v6.18)"
#define R_NOTDIR_MID "link_path_walk: walking through a non-directory -> ENOTDIR (fs/namei.c, v6.18)"
#define R_ODIR "do_open: O_DIRECTORY on a non-directory -> ENOTDIR (fs/namei.c, v6.18)"
#define R_EXCL "do_open: O_CREAT|O_EXCL on an existing file -> EEXIST (fs/namei.c, v6.18)"
#define R_CREAT "do_open: O_CREAT on an existing file opens it (fs/namei.c, v6.18)"
#define R_WALK "the path walk collapses '//' and '.', and '..' steps back up (fs/namei.c, v6.18)"
#define R_NAMETOOLONG "getname_flags: a name of PATH_MAX bytes or more -> ENAMETOOLONG (fs/namei.c, v6.18)"
#define R_DIR "/dev/vfio is a devtmpfs directory (misc nodename vfio/vfio, drivers/vfio/container.c)"
#define R_READDIR "dcache_readdir lists '.', '..' and every entry once (fs/libfs.c, v6.18)"
#define R_API "vfio_fops_unl_ioctl: VFIO_GET_API_VERSION (drivers/vfio/container.c, v6.18)"
#define R_RELEASE "vfio_group_fops_release clears opened_file: the group opens again (drivers/vfio/group.c, v6.18)"

/* The file behind `fd` is the container: the API version and the misc device numbers. */
static void is_container_at(int fd, const char *expr, int line)
{
    if (fd < 0)
        adv_fail(__FILE__, line, expr, "a container fd", fd, errno, R_WALK);
    EXPECT_EQ(ioctl(fd, VFIO_GET_API_VERSION), VFIO_API_VERSION, R_API);
    struct stat st;
    EXPECT_EQ(fstat(fd, &st), 0, "vfs_fstat");
    EXPECT_TRUE(S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 && minor(st.st_rdev) == 196,
                "misc device 10:196 (VFIO_MINOR)");
    EXPECT_EQ(close(fd), 0, "vfio_fops_release");
}
#define is_container(call) is_container_at((call), #call, __LINE__)

static void strict_names(void)
{
    struct stat st;
    const char *missing[] = {"/dev/vfio/007", "/dev/vfio/07",  "/dev/vfio/+7",
                             "/dev/vfio/ 7",  "/dev/vfio/7 ",  "/dev/vfio/-7",
                             "/dev/vfio/7x",  "/dev/vfio/0x7", "/dev/vfio/99",
                             "/dev/vfio/4294967303", "/dev/vfio/VFIO", "/dev/vfio/vfio0"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        adv_ctx = missing[i];
        EXPECT_ERR(open(missing[i], O_RDWR), ENOENT, R_NOENT);
        EXPECT_ERR(stat(missing[i], &st), ENOENT, R_NOENT);
        EXPECT_ERR(access(missing[i], F_OK), ENOENT, R_NOENT);
    }
    const char *trailing[] = {"/dev/vfio/vfio/", "/dev/vfio/7/", "/dev/vfio/8//"};
    for (size_t i = 0; i < 3; i++) {
        adv_ctx = trailing[i];
        EXPECT_ERR(open(trailing[i], O_RDWR), ENOTDIR, R_TRAIL);
        EXPECT_ERR(stat(trailing[i], &st), ENOTDIR, R_TRAIL);
        EXPECT_ERR(access(trailing[i], F_OK), ENOTDIR, R_TRAIL);
    }
    adv_ctx = NULL;
    EXPECT_ERR(open("/dev/vfio/vfio/.", O_RDWR), ENOTDIR, R_NOTDIR_MID);
    EXPECT_ERR(open("/dev/vfio/vfio/x", O_RDWR), ENOTDIR, R_NOTDIR_MID);
    EXPECT_ERR(stat("/dev/vfio/7/x", &st), ENOTDIR, R_NOTDIR_MID);

    EXPECT_ERR(open("/dev/vfio/vfio", O_RDWR | O_DIRECTORY), ENOTDIR, R_ODIR);
    EXPECT_ERR(open("/dev/vfio/vfio", O_RDONLY | O_DIRECTORY), ENOTDIR, R_ODIR);
    EXPECT_ERR(open("/dev/vfio/7", O_RDWR | O_DIRECTORY), ENOTDIR, R_ODIR);
    EXPECT_ERR(open("/dev/vfio/vfio", O_RDWR | O_CREAT | O_EXCL, 0600), EEXIST, R_EXCL);
    EXPECT_ERR(open("/dev/vfio/7", O_RDWR | O_CREAT | O_EXCL, 0600), EEXIST, R_EXCL);
    is_container(open("/dev/vfio/vfio", O_RDWR | O_CREAT, 0600));

    /* The kernel resolves these to the container. */
    is_container(open("/dev//vfio/vfio", O_RDWR));
    is_container(open("/dev/vfio/./vfio", O_RDWR));
    is_container(open("/dev/vfio//vfio", O_RDWR));
    is_container(open("//dev/vfio/vfio", O_RDWR));
    is_container(open("/dev/vfio/../vfio/vfio", O_RDWR));
    is_container(openat(AT_FDCWD, "/./dev/vfio/vfio", O_RDWR));
    int g;
    EXPECT_FD(g, open("/dev//vfio//7", O_RDWR), R_WALK);
    struct vfio_group_status s = {.argsz = sizeof(s)};
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &s), 0, "vfio_group_ioctl_get_status");
    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");

    /* PATH_MAX: 4095 bytes and a NUL resolve; 4096 bytes without a NUL are too long. */
    static char longpath[PATH_MAX + 16];
    memset(longpath, '/', sizeof(longpath));
    memcpy(longpath, "/dev/vfio", 9);
    memcpy(longpath + PATH_MAX - 1 - 5, "/vfio", 6); /* strlen == PATH_MAX - 1 */
    is_container(open(longpath, O_RDWR));
    memcpy(longpath + PATH_MAX - 5, "/vfio", 6); /* strlen == PATH_MAX */
    EXPECT_ERR(open(longpath, O_RDWR), ENAMETOOLONG, R_NAMETOOLONG);
    EXPECT_ERR(stat(longpath, &st), ENAMETOOLONG, R_NAMETOOLONG);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void directory(void)
{
    struct stat st;
    EXPECT_EQ(stat("/dev/vfio", &st), 0, R_DIR);
    EXPECT_TRUE(S_ISDIR(st.st_mode), R_DIR);
    EXPECT_EQ(stat("/dev/vfio/", &st), 0, R_DIR);
    EXPECT_TRUE(S_ISDIR(st.st_mode), R_DIR);
    EXPECT_EQ(access("/dev/vfio", R_OK | X_OK), 0, R_DIR);

    const char *want[] = {".", "..", "7", "8", "vfio"};
    DIR *d = opendir("/dev/vfio");
    EXPECT_TRUE(d != NULL, "opendir: open(O_DIRECTORY) of a directory, then getdents64");
    const char *seen[16];
    unsigned char types[16];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        EXPECT_TRUE(n < 16, R_READDIR);
        seen[n] = strdup(e->d_name);
        types[n] = e->d_type;
        n++;
    }
    EXPECT_EQ(closedir(d), 0, "closedir");
    EXPECT_TRUE(n == 5, R_READDIR);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(seen[i], "vfio") == 0 || strcmp(seen[i], "7") == 0 || strcmp(seen[i], "8") == 0)
            EXPECT_TRUE(types[i] == DT_CHR, "dcache_readdir: d_type from the inode mode (DT_CHR)");
        else
            EXPECT_TRUE(types[i] == DT_DIR, "dcache_readdir: '.' and '..' are DT_DIR");
    }
    qsort(seen, n, sizeof(seen[0]), cmp_str);
    for (size_t i = 0; i < 5; i++)
        EXPECT_TRUE(strcmp(seen[i], want[i]) == 0, R_READDIR);

    struct dirent **list = NULL;
    EXPECT_EQ(scandir("/dev/vfio", &list, NULL, alphasort), 5, R_READDIR);
    for (int i = 0; i < 5; i++) {
        EXPECT_TRUE(strcmp(list[i]->d_name, want[i]) == 0, R_READDIR);
        free(list[i]);
    }
    free(list);

    d = opendir("/dev/vfio/");
    EXPECT_TRUE(d != NULL, R_DIR);
    EXPECT_EQ(closedir(d), 0, "closedir");
    EXPECT_NULL_ERR(opendir("/dev/vfio/vfio"), ENOTDIR, R_ODIR);
    EXPECT_NULL_ERR(opendir("/dev/vfio/7"), ENOTDIR, R_ODIR);
    EXPECT_NULL_ERR(opendir("/dev/vfio/99"), ENOENT, R_NOENT);
}

static void stdio(void)
{
    FILE *f = fopen("/dev/vfio/vfio", "r+");
    EXPECT_TRUE(f != NULL, "fopen r+ -> open(O_RDWR) of the container");
    EXPECT_EQ(ioctl(fileno(f), VFIO_GET_API_VERSION), VFIO_API_VERSION, R_API);
    EXPECT_EQ(ioctl(fileno(f), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), 1,
              "vfio_container_ioctl_check_extension");

    FILE *g = fopen("/dev/vfio/7", "r+");
    EXPECT_TRUE(g != NULL, "fopen r+ -> open(O_RDWR) of group 7");
    struct vfio_group_status s = {.argsz = sizeof(s)};
    EXPECT_EQ(ioctl(fileno(g), VFIO_GROUP_GET_STATUS, &s), 0, "vfio_group_ioctl_get_status");
    EXPECT_TRUE(s.flags == VFIO_GROUP_FLAGS_VIABLE, "vfio_group_ioctl_get_status: viable");
    int cfd = fileno(f);
    EXPECT_EQ(ioctl(fileno(g), VFIO_GROUP_SET_CONTAINER, &cfd), 0, "vfio_container_attach_group");
    EXPECT_EQ(ioctl(cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");
    EXPECT_ERR(open("/dev/vfio/7", O_RDWR), EBUSY,
               "vfio_group_fops_open: opened_file set -> EBUSY (drivers/vfio/group.c, v6.18)");

    EXPECT_EQ(fclose(g), 0, "fclose -> close -> vfio_group_fops_release");
    EXPECT_EQ(fclose(f), 0, "fclose -> close -> vfio_fops_release");
    int fd;
    EXPECT_FD(fd, open("/dev/vfio/7", O_RDWR), R_RELEASE);
    EXPECT_EQ(close(fd), 0, "vfio_group_fops_release");

    FILE *r = fopen("/dev/vfio/vfio", "r");
    EXPECT_TRUE(r != NULL, "fopen r -> open(O_RDONLY): vfio_fops_open does not check the mode");
    EXPECT_EQ(ioctl(fileno(r), VFIO_GET_API_VERSION), VFIO_API_VERSION, R_API);
    EXPECT_EQ(fclose(r), 0, "fclose");
    EXPECT_NULL_ERR(fopen("/dev/vfio/99", "r"), ENOENT, R_NOENT);
    EXPECT_NULL_ERR(fopen("/dev/vfio/007", "r+"), ENOENT, R_NOENT);
    EXPECT_NULL_ERR(fopen("/dev/vfio/vfio/", "r"), ENOTDIR, R_TRAIL);
    EXPECT_NULL_ERR(fopen64("/dev/vfio/7/", "r"), ENOTDIR, R_TRAIL);
}

int main(void)
{
    strict_names();
    directory();
    stdio();
    printf("PASS\n");
    fprintf(stderr, "adv_paths: %d checks\n", adv_checks);
    return 0;
}
