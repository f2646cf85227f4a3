/*
 * Class 2 (issue 11): a close the preload does not see (raw syscall(SYS_close), or glibc's
 * internal close inside fclose) must not leave the fd number "ours": whatever file reuses the
 * number answers as itself, and a closed number answers EBADF.
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 */
#define _GNU_SOURCE
#include "adv_check.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#define R_PIPE_IOCTL                                                                        \
    "vfs_ioctl: pipe_ioctl returns -ENOIOCTLCMD for a VFIO request -> ENOTTY (fs/ioctl.c, " \
    "fs/pipe.c, v6.18)"
#define R_NULL_IOCTL                                                                        \
    "vfs_ioctl: /dev/null's fops have no unlocked_ioctl -> ENOTTY (fs/ioctl.c, v6.18)"
#define R_EBADF "ksys_ioctl / fstat / close: fdget fails on a closed fd -> EBADF (v6.18)"
#define R_NOT_OURS "the fd is the new file now: the kernel's own answer for it"
#define R_SETC_FOREIGN                                                                      \
    "vfio_group_ioctl_set_container: neither a container nor an iommufd -> EBADFD "        \
    "(drivers/vfio/group.c, v6.18)"
#define R_RELEASE                                                                           \
    "vfio_group_fops_release on the last close clears opened_file, so the group opens "    \
    "again (drivers/vfio/group.c, v6.18)"

static int open_container(void)
{
    int c;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    return c;
}

/* A container fd raw-closed, its number reused by a pipe. */
static void raw_close_then_pipe(void)
{
    int c = open_container();
    EXPECT_EQ(ioctl(c, VFIO_GET_API_VERSION), VFIO_API_VERSION, "vfio_fops_unl_ioctl");
    EXPECT_EQ(syscall(SYS_close, c), 0, "close_fd");
    int p[2];
    EXPECT_EQ(pipe(p), 0, "do_pipe2");
    EXPECT_TRUE(p[0] == c, "alloc_fd: the lowest free number is reused");
    EXPECT_ERR(ioctl(p[0], VFIO_GET_API_VERSION), ENOTTY, R_PIPE_IOCTL);
    EXPECT_ERR(ioctl(p[0], VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), ENOTTY, R_PIPE_IOCTL);
    int n = -1;
    EXPECT_EQ(ioctl(p[0], FIONREAD, &n), 0, "pipe_ioctl FIONREAD (fs/pipe.c, v6.18)");
    EXPECT_TRUE(n == 0, "pipe_ioctl FIONREAD: an empty pipe has 0 bytes");
    struct stat st;
    EXPECT_EQ(fstat(p[0], &st), 0, R_NOT_OURS);
    EXPECT_TRUE(S_ISFIFO(st.st_mode), "vfs_fstat of a pipe: S_IFIFO");
    EXPECT_EQ(write(p[1], "xy", 2), 2, "pipe_write");
    char b[2] = {0, 0};
    EXPECT_EQ(read(p[0], b, 2), 2, "pipe_read: the pipe's data, not the container's EINVAL");
    EXPECT_TRUE(b[0] == 'x' && b[1] == 'y', "pipe_read");

    /* The reused number handed to a group as a container fd: not a container. */
    int g;
    EXPECT_FD(g, open("/dev/vfio/8", O_RDWR), "vfio_group_fops_open");
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, &p[0]), EBADFD, R_SETC_FOREIGN);
    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(p[0]), 0, "close_fd");
    EXPECT_EQ(close(p[1]), 0, "close_fd");
}

/* A container fd raw-closed and nothing reusing the number. */
static void raw_close_nothing_reuses(void)
{
    int g;
    EXPECT_FD(g, open("/dev/vfio/8", O_RDWR), "vfio_group_fops_open");
    int c = open_container();
    EXPECT_EQ(syscall(SYS_close, c), 0, "close_fd");
    EXPECT_ERR(ioctl(c, VFIO_GET_API_VERSION), EBADF, R_EBADF);
    struct stat st;
    EXPECT_ERR(fstat(c, &st), EBADF, R_EBADF);
    EXPECT_ERR(fcntl(c, F_GETFD), EBADF, R_EBADF);
    EXPECT_ERR(close(c), EBADF, R_EBADF);
    /* The group (opened first, so it does not take the number): SET_CONTAINER, dead number. */
    EXPECT_ERR(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), EBADF,
               "vfio_group_ioctl_set_container: fdget fails -> EBADF (drivers/vfio/group.c, v6.18)");
    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
}

/* fclose(fdopen(fd)) closes through glibc's internal close; /dev/null takes the number. */
static void fclose_fdopen_then_devnull(void)
{
    int c = open_container();
    FILE *f = fdopen(c, "r");
    EXPECT_TRUE(f != NULL, "fdopen: fcntl(F_GETFL) of an O_RDWR file allows mode r");
    EXPECT_EQ(fclose(f), 0, "fclose -> close_fd");
    int n;
    EXPECT_FD(n, open("/dev/null", O_RDWR), "open /dev/null");
    EXPECT_TRUE(n == c, "alloc_fd: the lowest free number is reused");
    EXPECT_ERR(ioctl(n, VFIO_GET_API_VERSION), ENOTTY, R_NULL_IOCTL);
    struct stat st;
    EXPECT_EQ(fstat(n, &st), 0, R_NOT_OURS);
    EXPECT_TRUE(S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3,
                "vfs_fstat of /dev/null: char 1:3 (drivers/char/mem.c)");
    EXPECT_EQ(write(n, "x", 1), 1, "write_null");
    EXPECT_EQ(close(n), 0, "close_fd");
}

/* A dup survives the raw close of the original: the container lives on through it. */
static void raw_close_of_one_dup(void)
{
    int c = open_container();
    int d;
    EXPECT_FD(d, dup(c), "dup");
    EXPECT_EQ(syscall(SYS_close, c), 0, "close_fd");
    int p[2];
    EXPECT_EQ(pipe(p), 0, "do_pipe2");
    EXPECT_TRUE(p[0] == c, "alloc_fd: the lowest free number is reused");
    EXPECT_ERR(ioctl(c, VFIO_GET_API_VERSION), ENOTTY, R_PIPE_IOCTL);
    EXPECT_EQ(ioctl(d, VFIO_GET_API_VERSION), VFIO_API_VERSION,
              "the dup still refers to the container file (fd table entries share the file)");
    EXPECT_EQ(close(p[0]), 0, "close_fd");
    EXPECT_EQ(close(p[1]), 0, "close_fd");
    EXPECT_EQ(close(d), 0, "vfio_fops_release");
}

/* A group fd raw-closed: the group is released and opens again. */
static void raw_close_of_a_group(void)
{
    int g;
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    EXPECT_ERR(open("/dev/vfio/7", O_RDWR), EBUSY,
               "vfio_group_fops_open: opened_file set -> EBUSY (drivers/vfio/group.c, v6.18)");
    EXPECT_EQ(syscall(SYS_close, g), 0, "close_fd");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), R_RELEASE);
    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
    /* The same through fclose(fdopen()). */
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    FILE *f = fdopen(g, "r+");
    EXPECT_TRUE(f != NULL, "fdopen");
    EXPECT_EQ(fclose(f), 0, "fclose -> close_fd");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), R_RELEASE);
    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
}

/* Afterwards a new container works normally. */
static void new_container_works(void)
{
    int c = open_container();
    int g;
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    EXPECT_EQ(ioctl(c, VFIO_GET_API_VERSION), VFIO_API_VERSION, "vfio_fops_unl_ioctl");
    EXPECT_EQ(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), 1,
              "vfio_container_ioctl_check_extension");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), 0, "vfio_container_attach_group");
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    void *mem = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_TRUE(mem != MAP_FAILED, "mmap");
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)mem,
        .iova = 0x200000,
        .size = pg,
    };
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_MAP_DMA, &m), 0, "vfio_dma_do_map");
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = 0x200000, .size = pg};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u), 0, "vfio_dma_do_unmap");
    EXPECT_TRUE(u.size == pg, "vfio_iommu_type1_unmap_dma: size = bytes unmapped");
    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(c), 0, "vfio_fops_release");
    munmap(mem, pg);
}

int main(void)
{
    raw_close_then_pipe();
    raw_close_nothing_reuses();
    fclose_fdopen_then_devnull();
    raw_close_of_one_dup();
    raw_close_of_a_group();
    new_container_works();
    printf("PASS\n");
    fprintf(stderr, "adv_fd_reuse: %d checks\n", adv_checks);
    return 0;
}
