/*
 * Class 3 (issue 11): container and group fds inherited through exec or fork.
 *
 * The kernel shares one container between the processes holding the fd; the preload cannot
 * share engine state across processes, so (the documented difference, issue 11 "Sharing
 * semantics") every VFIO request on an inherited fd fails with EBADFD, with exactly one line on
 * stderr per fd naming the fd and pointing at the README. close() of such an fd succeeds, and
 * containers and groups opened in the new process work normally.
 *
 * The parent places the container at fd 40 and group 7 at fd 41 (both without O_CLOEXEC),
 * sets the container up and maps a page, lets a fork child use a dup of the container at fd 42,
 * then execs itself with argv[1] = "child". The harness checks the stderr lines for 40, 41, 42.
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated" and TYPE1_DEVICES="0000:00:04.0@7".
 */
#define _GNU_SOURCE
#include "adv_check.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#define CFD 40
#define GFD 41
#define FORK_FD 42
#define IOVA 0x100000UL

#define R_INHERIT                                                                           \
    "contract (issue 11, README): a container/group fd inherited through exec or fork "    \
    "fails every VFIO request with EBADFD (the kernel would share the container)"
#define R_CLOSE "close of an inherited fd succeeds (close_fd, fs/file.c, v6.18)"
#define R_OWN "a container or group opened in this process works normally"

static size_t pg;

static int map(int c, uint64_t iova, void *vaddr, uint64_t size)
{
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)vaddr,
        .iova = iova,
        .size = size,
    };
    return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

static int unmap(int c, uint64_t iova, uint64_t *size)
{
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = iova, .size = *size};
    int r = ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u);
    *size = u.size;
    return r;
}

/* Every VFIO container request on an inherited container fd. */
static void container_requests_fail(int c)
{
    struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
    struct vfio_iommu_type1_dirty_bitmap dp = {.argsz = sizeof(dp),
                                               .flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START};
    uint64_t size = pg;
    EXPECT_ERR(ioctl(c, VFIO_GET_API_VERSION), EBADFD, R_INHERIT);
    EXPECT_ERR(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), EBADFD, R_INHERIT);
    EXPECT_ERR(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), EBADFD, R_INHERIT);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, &info), EBADFD, R_INHERIT);
    EXPECT_ERR(map(c, IOVA + 16 * pg, &info, pg), EBADFD, R_INHERIT);
    EXPECT_ERR(unmap(c, IOVA, &size), EBADFD, R_INHERIT);
    EXPECT_TRUE(size == pg, "a failed unmap writes nothing back");
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_DIRTY_PAGES, &dp), EBADFD, R_INHERIT);
    /* Asked again: still EBADFD (the harness checks the stderr line is not repeated). */
    EXPECT_ERR(ioctl(c, VFIO_GET_API_VERSION), EBADFD, R_INHERIT);
}

static void child_after_exec(void)
{
    pg = (size_t)sysconf(_SC_PAGESIZE);
    container_requests_fail(CFD);

    struct vfio_group_status status = {.argsz = sizeof(status)};
    int fresh;
    EXPECT_ERR(ioctl(GFD, VFIO_GROUP_GET_STATUS, &status), EBADFD, R_INHERIT);
    EXPECT_ERR(ioctl(GFD, VFIO_GROUP_UNSET_CONTAINER), EBADFD, R_INHERIT);
    EXPECT_FD(fresh, open("/dev/vfio/vfio", O_RDWR), R_OWN);
    EXPECT_ERR(ioctl(GFD, VFIO_GROUP_SET_CONTAINER, &fresh), EBADFD, R_INHERIT);
    EXPECT_ERR(ioctl(GFD, VFIO_GROUP_GET_DEVICE_FD, "0000:00:04.0"), EBADFD, R_INHERIT);
    EXPECT_ERR(ioctl(GFD, VFIO_GROUP_GET_STATUS, &status), EBADFD, R_INHERIT);

    EXPECT_EQ(close(CFD), 0, R_CLOSE);
    EXPECT_EQ(close(GFD), 0, R_CLOSE);

    /* Our own container, group 7 and group 8. */
    int g7, g8;
    EXPECT_FD(g7, open("/dev/vfio/7", O_RDWR), R_OWN);
    EXPECT_FD(g8, open("/dev/vfio/8", O_RDWR), R_OWN);
    EXPECT_EQ(ioctl(fresh, VFIO_GET_API_VERSION), VFIO_API_VERSION, R_OWN);
    EXPECT_EQ(ioctl(g7, VFIO_GROUP_SET_CONTAINER, &fresh), 0, R_OWN);
    EXPECT_EQ(ioctl(g8, VFIO_GROUP_SET_CONTAINER, &fresh), 0, R_OWN);
    EXPECT_EQ(ioctl(fresh, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, R_OWN);
    EXPECT_EQ(ioctl(g8, VFIO_GROUP_GET_STATUS, &status), 0, R_OWN);
    EXPECT_TRUE(status.flags == (VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET),
                "vfio_group_ioctl_get_status");
    void *mem = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_TRUE(mem != MAP_FAILED, "mmap");
    EXPECT_EQ(map(fresh, IOVA, mem, pg), 0, "vfio_dma_do_map: a new container has no mappings");
    uint64_t size = pg;
    EXPECT_EQ(unmap(fresh, IOVA, &size), 0, "vfio_dma_do_unmap");
    EXPECT_TRUE(size == pg, "vfio_iommu_type1_unmap_dma: size = bytes unmapped");
    EXPECT_EQ(close(g8), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(g7), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(fresh), 0, "vfio_fops_release");
    printf("PASS\n");
    fprintf(stderr, "adv_exec: %d checks\n", adv_checks);
    exit(0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "child") == 0)
        child_after_exec();

    pg = (size_t)sysconf(_SC_PAGESIZE);
    int c, g;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_EQ(dup2(c, CFD), CFD, "dup2");
    EXPECT_EQ(close(c), 0, "close of the original; fd 40 keeps the file");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    EXPECT_EQ(dup2(g, GFD), GFD, "dup2");
    EXPECT_EQ(close(g), 0, "close of the original; fd 41 keeps the file");
    c = CFD;
    g = GFD;
    EXPECT_TRUE((fcntl(c, F_GETFD) & FD_CLOEXEC) == 0, "dup2 clears FD_CLOEXEC");
    EXPECT_TRUE((fcntl(g, F_GETFD) & FD_CLOEXEC) == 0, "dup2 clears FD_CLOEXEC");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), 0, "vfio_container_attach_group");
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");
    char *mem = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_TRUE(mem != MAP_FAILED, "mmap");
    EXPECT_EQ(map(c, IOVA, mem, pg), 0, "vfio_dma_do_map");

    /* fork: the child uses a dup of the parent's container. */
    EXPECT_EQ(dup2(c, FORK_FD), FORK_FD, "dup2");
    fflush(NULL);
    pid_t pid = fork();
    EXPECT_TRUE(pid >= 0, "fork");
    if (pid == 0) {
        container_requests_fail(FORK_FD);
        EXPECT_EQ(close(FORK_FD), 0, R_CLOSE);
        _exit(0);
    }
    int wst = 0;
    EXPECT_EQ(waitpid(pid, &wst, 0), pid, "waitpid");
    EXPECT_TRUE(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "the fork child's checks passed");

    /* The parent's container is untouched and keeps working. */
    struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_GET_INFO, &info), 0, "vfio_iommu_type1_get_info");
    EXPECT_EQ(map(c, IOVA, mem, pg), -1, "vfio_dma_do_map: the page is still mapped (EEXIST)");
    EXPECT_TRUE(errno == EEXIST, "vfio_dma_do_map: overlap -> EEXIST");
    EXPECT_EQ(map(c, IOVA + pg, mem + pg, pg), 0, "vfio_dma_do_map");
    uint64_t size = 2 * pg;
    EXPECT_EQ(unmap(c, IOVA, &size), 0, "vfio_dma_do_unmap");
    EXPECT_TRUE(size == 2 * pg, "vfio_iommu_type1_unmap_dma: both pages unmapped");
    EXPECT_EQ(map(c, IOVA, mem, pg), 0, "vfio_dma_do_map");
    EXPECT_EQ(close(FORK_FD), 0, "close of the parent's dup");

    /* exec: fds 40 and 41 are inherited. */
    char *args[] = {argv[0], "child", NULL};
    execv("/proc/self/exe", args);
    EXPECT_TRUE(0, "execv");
    return 1;
}
