/*
 * Class 6 (issue 11): the VFS behaviour of container and group fds.
 *
 * vfio_fops (drivers/vfio/container.c, v6.18) and vfio_group_fops (drivers/vfio/group.c, v6.18)
 * define only owner, open, release, unlocked_ioctl and compat_ioctl: no read, write, mmap,
 * llseek or fasync. do_vfs_ioctl (fs/ioctl.c, v6.18) answers the generic ioctls before the
 * driver sees them.
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 */
#define _GNU_SOURCE
#include "adv_check.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>

#define R_FIOCLEX "do_vfs_ioctl: FIOCLEX / FIONCLEX -> set_close_on_exec (fs/ioctl.c, v6.18)"
#define R_FIONBIO "ioctl_fionbio: get_user(on), then O_NONBLOCK in f_flags (fs/ioctl.c, v6.18)"
#define R_FIONBIO_FAULT "ioctl_fionbio: get_user faults -> EFAULT (fs/ioctl.c, v6.18)"
#define R_FIOASYNC_ON                                                                       \
    "ioctl_fioasync: FASYNC would change and f_op->fasync is NULL -> ENOTTY "              \
    "(fs/ioctl.c, v6.18)"
#define R_FIOASYNC_OFF "ioctl_fioasync: FASYNC unchanged -> 0 (fs/ioctl.c, v6.18)"
#define R_FIOASYNC_FAULT "ioctl_fioasync: get_user faults -> EFAULT (fs/ioctl.c, v6.18)"
#define R_FIOQSIZE "do_vfs_ioctl: FIOQSIZE on a char device -> ENOTTY (fs/ioctl.c, v6.18)"
#define R_FIONREAD_C                                                                        \
    "do_vfs_ioctl: not S_ISREG -> vfs_ioctl -> vfio_fops_unl_ioctl default: no driver -> "  \
    "EINVAL (drivers/vfio/container.c, v6.18)"
#define R_FIONREAD_C2                                                                       \
    "vfio_fops_unl_ioctl passes unknown requests to vfio_iommu_type1_ioctl: default -> "   \
    "ENOTTY (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_FIONREAD_G "vfio_group_fops_unl_ioctl: default -> ENOTTY (drivers/vfio/group.c, v6.18)"
#define R_READ "vfs_read: FMODE_CAN_READ unset (no ->read/->read_iter) -> EINVAL, before access_ok (fs/read_write.c, v6.18)"
#define R_WRITE "vfs_write: FMODE_CAN_WRITE unset (no ->write/->write_iter) -> EINVAL (fs/read_write.c, v6.18)"
#define R_READV "vfs_readv / vfs_writev: FMODE_CAN_READ/WRITE checked before import_iovec -> EINVAL (fs/read_write.c, v6.18)"
#define R_NOREAD "vfs_read / vfs_readv: FMODE_READ unset (opened O_WRONLY) -> EBADF first (fs/read_write.c, v6.18)"
#define R_NOWRITE "vfs_write: FMODE_WRITE unset (opened O_RDONLY) -> EBADF first (fs/read_write.c, v6.18)"
#define R_PREAD                                                                             \
    "ksys_pread64: FMODE_PREAD stays set (the open does not clear it) -> vfs_read -> "     \
    "EINVAL (fs/read_write.c, v6.18)"
#define R_LSEEK                                                                             \
    "do_dentry_open clears FMODE_LSEEK when f_op->llseek is NULL; vfs_llseek -> ESPIPE "   \
    "(fs/open.c, fs/read_write.c, v6.18)"
#define R_MMAP "do_mmap: the file has no ->mmap -> ENODEV (mm/mmap.c, v6.18)"
#define R_MMAP_ACC "do_mmap: file mappings need FMODE_READ -> EACCES before the ->mmap check (mm/mmap.c, v6.18)"
#define R_FSTAT "misc device 10:196 (VFIO_MINOR, misc_register; drivers/vfio/container.c, v6.18)"
#define R_GETFL "F_GETFL returns the access mode the file was opened with (do_fcntl, fs/fcntl.c, v6.18)"

static void generic_ioctls(int fd)
{
    EXPECT_EQ(ioctl(fd, FIOCLEX), 0, R_FIOCLEX);
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC, R_FIOCLEX);
    EXPECT_EQ(ioctl(fd, FIONCLEX), 0, R_FIOCLEX);
    EXPECT_TRUE((fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0, R_FIOCLEX);

    int one = 1, zero = 0;
    EXPECT_EQ(ioctl(fd, FIONBIO, &one), 0, R_FIONBIO);
    EXPECT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK, R_FIONBIO);
    EXPECT_EQ(ioctl(fd, FIONBIO, &zero), 0, R_FIONBIO);
    EXPECT_TRUE((fcntl(fd, F_GETFL) & O_NONBLOCK) == 0, R_FIONBIO);
    EXPECT_ERR(ioctl(fd, FIONBIO, ADV_BAD1), EFAULT, R_FIONBIO_FAULT);

    EXPECT_ERR(ioctl(fd, FIOASYNC, &one), ENOTTY, R_FIOASYNC_ON);
    EXPECT_TRUE((fcntl(fd, F_GETFL) & O_ASYNC) == 0, R_FIOASYNC_ON);
    EXPECT_EQ(ioctl(fd, FIOASYNC, &zero), 0, R_FIOASYNC_OFF);
    EXPECT_ERR(ioctl(fd, FIOASYNC, ADV_BAD1), EFAULT, R_FIOASYNC_FAULT);

    loff_t q = -1;
    EXPECT_ERR(ioctl(fd, FIOQSIZE, &q), ENOTTY, R_FIOQSIZE);
}

static void no_read_write_seek_mmap(int fd)
{
    char buf[16];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    EXPECT_ERR(read(fd, buf, sizeof(buf)), EINVAL, R_READ);
    EXPECT_ERR(read(fd, buf, 0), EINVAL, R_READ);
    EXPECT_ERR(read(fd, ADV_BAD1, sizeof(buf)), EINVAL, R_READ);
    EXPECT_ERR(write(fd, "x", 1), EINVAL, R_WRITE);
    EXPECT_ERR(write(fd, ADV_BAD1, 1), EINVAL, R_WRITE);
    EXPECT_ERR(pread(fd, buf, sizeof(buf), 0), EINVAL, R_PREAD);
    EXPECT_ERR(pwrite(fd, "x", 1, 0), EINVAL, R_PREAD);
    EXPECT_ERR(readv(fd, &iov, 1), EINVAL, R_READV);
    EXPECT_ERR(writev(fd, &iov, 1), EINVAL, R_READV);
    EXPECT_ERR(readv(fd, ADV_BAD1, 1), EINVAL, R_READV);
    EXPECT_ERR(preadv(fd, &iov, 1, 0), EINVAL, R_READV);
    EXPECT_ERR(lseek(fd, 0, SEEK_SET), ESPIPE, R_LSEEK);
    EXPECT_ERR(lseek(fd, 0, SEEK_CUR), ESPIPE, R_LSEEK);
    EXPECT_ERR(lseek(fd, 0, SEEK_END), ESPIPE, R_LSEEK);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    EXPECT_TRUE(mmap(NULL, pg, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == ENODEV,
                R_MMAP);
    EXPECT_TRUE(mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED &&
                    errno == ENODEV,
                R_MMAP);
    EXPECT_TRUE(mmap(NULL, pg, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED && errno == ENODEV,
                R_MMAP);
}

static void access_modes(void)
{
    int w, r;
    char buf[8];
    EXPECT_FD(w, open("/dev/vfio/vfio", O_WRONLY), "vfio_fops_open ignores the access mode");
    EXPECT_TRUE((fcntl(w, F_GETFL) & O_ACCMODE) == O_WRONLY, R_GETFL);
    EXPECT_ERR(read(w, buf, sizeof(buf)), EBADF, R_NOREAD);
    EXPECT_ERR(write(w, "x", 1), EINVAL, R_WRITE);
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    EXPECT_ERR(readv(w, &iov, 1), EBADF, R_NOREAD);
    EXPECT_TRUE(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, w, 0) == MAP_FAILED && errno == EACCES,
                R_MMAP_ACC);
    EXPECT_EQ(ioctl(w, VFIO_GET_API_VERSION), VFIO_API_VERSION,
              "vfio_fops_unl_ioctl does not check the access mode");
    EXPECT_EQ(close(w), 0, "vfio_fops_release");

    EXPECT_FD(r, open("/dev/vfio/vfio", O_RDONLY), "vfio_fops_open ignores the access mode");
    EXPECT_TRUE((fcntl(r, F_GETFL) & O_ACCMODE) == O_RDONLY, R_GETFL);
    EXPECT_ERR(write(r, "x", 1), EBADF, R_NOWRITE);
    EXPECT_ERR(read(r, buf, sizeof(buf)), EINVAL, R_READ);
    EXPECT_EQ(ioctl(r, VFIO_GET_API_VERSION), VFIO_API_VERSION,
              "vfio_fops_unl_ioctl does not check the access mode");
    EXPECT_EQ(close(r), 0, "vfio_fops_release");

    int rw;
    EXPECT_FD(rw, open("/dev/vfio/vfio", O_RDWR | O_NONBLOCK), "vfio_fops_open");
    EXPECT_TRUE((fcntl(rw, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDWR | O_NONBLOCK), R_GETFL);
    EXPECT_EQ(close(rw), 0, "vfio_fops_release");
}

static void stats(int c)
{
    struct stat st;
    EXPECT_EQ(fstat(c, &st), 0, "vfs_fstat");
    EXPECT_TRUE(S_ISCHR(st.st_mode), R_FSTAT);
    EXPECT_TRUE(major(st.st_rdev) == 10 && minor(st.st_rdev) == 196, R_FSTAT);
    memset(&st, 0, sizeof(st));
    EXPECT_EQ(fstatat(c, "", &st, AT_EMPTY_PATH), 0, "vfs_fstatat AT_EMPTY_PATH -> vfs_fstat");
    EXPECT_TRUE(S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 && minor(st.st_rdev) == 196,
                R_FSTAT);
    struct statx stx;
    memset(&stx, 0, sizeof(stx));
    EXPECT_EQ(statx(c, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx), 0, "do_statx AT_EMPTY_PATH");
    EXPECT_TRUE(S_ISCHR(stx.stx_mode) && stx.stx_rdev_major == 10 && stx.stx_rdev_minor == 196,
                R_FSTAT);
}

int main(void)
{
    int c, g;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");

    generic_ioctls(c);
    generic_ioctls(g);
    int n = -1;
    EXPECT_ERR(ioctl(c, FIONREAD, &n), EINVAL, R_FIONREAD_C);
    EXPECT_ERR(ioctl(g, FIONREAD, &n), ENOTTY, R_FIONREAD_G);
    no_read_write_seek_mmap(c);
    no_read_write_seek_mmap(g);
    stats(c);
    access_modes();

    /* With an IOMMU driver set, unknown requests reach type1. */
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), 0, "vfio_container_attach_group");
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");
    EXPECT_ERR(ioctl(c, FIONREAD, &n), ENOTTY, R_FIONREAD_C2);
    generic_ioctls(c);
    no_read_write_seek_mmap(c);
    /* The generic ioctls left the container usable. */
    struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_GET_INFO, &info), 0, "vfio_iommu_type1_get_info");

    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(c), 0, "vfio_fops_release");
    printf("PASS\n");
    fprintf(stderr, "adv_vfs: %d checks\n", adv_checks);
    return 0;
}
