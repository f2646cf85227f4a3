/*
 * The long-term pin rules MAP_DMA applies to the memory behind vaddr (issue 11): vfio pins with
 * pin_user_pages_remote(FOLL_LONGTERM | (WRITE mapping ? FOLL_WRITE : 0)) (vaddr_get_pfns,
 * drivers/vfio/vfio_iommu_type1.c), and mm/gup.c check_vma_flags decides per area (v6.18).
 *
 * argv[1]: a directory on a disk file system (ext4, xfs, btrfs, overlay...), where a shared
 * writable file mapping needs dirty tracking. Expects TYPE1_GROUPS="7:iommu".
 * Prints "PASS" on stdout when every check holds.
 */
#define _GNU_SOURCE
#include "acct_common.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#define DIRTY_RULE                                                                          \
    "check_vma_flags (mm/gup.c): FOLL_WRITE on a file area -> writable_file_mapping_allowed " \
    "-> FOLL_LONGTERM and vma_needs_dirty_tracking (shared, writable, fs notifies or writes " \
    "back) -> EFAULT"
#define NO_TRACKING_RULE                                                                    \
    "vma_needs_dirty_tracking (mm/mmap.c) is false for shmem/memfd (no page_mkwrite, no "   \
    "writeback): the write pin is allowed"
#define WRITE_RULE "check_vma_flags: FOLL_WRITE needs VM_WRITE (and only VM_WRITE)"
#define READ_RULE "check_vma_flags: a pin without FOLL_WRITE needs VM_READ"

static uint64_t next_iova = 1UL << 30;

/* MAP_DMA of `pages` pages at a fresh IOVA; on success unmaps again (the check is the pin). */
static int try_map(int c, const void *p, unsigned long pages, uint32_t flags)
{
    uint64_t iova = next_iova;
    next_iova += pages * PAGE;
    int r = map(c, iova, p, pages * PAGE, flags);
    if (r == 0)
        REQUIRE(unmap(c, iova, pages * PAGE) == 0, "unmap after a successful map");
    return r;
}

static int file_of(const char *dir, const char *name, unsigned long pages, char *path, size_t n)
{
    snprintf(path, n, "%s/%s-%d", dir, name, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0, "create the test file");
    REQUIRE(ftruncate(fd, (off_t)(pages * PAGE)) == 0, "size the test file");
    return fd;
}

static void *mapping(int fd, unsigned long pages, int prot, int flags)
{
    void *p = mmap(NULL, pages * PAGE, prot, flags, fd, 0);
    REQUIRE(p != MAP_FAILED, "mmap the test memory");
    return p;
}

int main(int argc, char **argv)
{
    REQUIRE(argc > 1, "usage: acct_gup DISK_DIR");
    const char *dir = argv[1];
    struct statfs fs;
    REQUIRE(statfs(dir, &fs) == 0, "statfs DISK_DIR");
    REQUIRE(fs.f_type != TMPFS_MAGIC && fs.f_type != RAMFS_MAGIC &&
                fs.f_type != HUGETLBFS_MAGIC,
            "DISK_DIR must be on a disk file system, not tmpfs/ramfs/hugetlbfs");
    int c = container();
    char path[4096];

    /* A regular file on a disk file system. */
    int fd = file_of(dir, "type1-acct-gup", 4, path, sizeof(path));
    char *shared = (char *)mapping(fd, 4, PROT_READ | PROT_WRITE, MAP_SHARED);
    shared[0] = 1;
    EXPECT_ERR(try_map(c, shared, 4, RW), EFAULT, DIRTY_RULE);
    EXPECT_ERR(try_map(c, shared, 4, WR), EFAULT, DIRTY_RULE);
    EXPECT_OK(try_map(c, shared, 4, RD),
              "check_vma_flags: only FOLL_WRITE pins consult writable_file_mapping_allowed");
    char *shared_ro = (char *)mapping(fd, 4, PROT_READ, MAP_SHARED);
    EXPECT_ERR(try_map(c, shared_ro, 4, RW), EFAULT, WRITE_RULE " (shared read-only file)");
    EXPECT_OK(try_map(c, shared_ro, 4, RD), READ_RULE);
    char *priv = (char *)mapping(fd, 4, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    EXPECT_OK(try_map(c, priv, 4, RW),
              "vma_needs_dirty_tracking: only shared writable areas; a private file mapping "
              "pins for write (COW)");
    unlink(path);

    /* tmpfs: /dev/shm. */
    struct statfs shm;
    REQUIRE(statfs("/dev/shm", &shm) == 0 && shm.f_type == TMPFS_MAGIC, "/dev/shm is tmpfs");
    int sfd = file_of("/dev/shm", "type1-acct-gup", 4, path, sizeof(path));
    char *tmp = (char *)mapping(sfd, 4, PROT_READ | PROT_WRITE, MAP_SHARED);
    EXPECT_OK(try_map(c, tmp, 4, RW), NO_TRACKING_RULE " (tmpfs file)");
    unlink(path);

    /* memfd and shared anonymous memory: shmem on the kernel's internal mount. */
    int mfd = memfd_create("type1-acct-gup", MFD_CLOEXEC);
    REQUIRE(mfd >= 0 && ftruncate(mfd, 4 * PAGE) == 0, "memfd_create");
    char *mem = (char *)mapping(mfd, 4, PROT_READ | PROT_WRITE, MAP_SHARED);
    EXPECT_OK(try_map(c, mem, 4, RW), NO_TRACKING_RULE " (memfd)");
    char *shanon = (char *)mapping(-1, 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    EXPECT_OK(try_map(c, shanon, 4, RW), NO_TRACKING_RULE " (shared anonymous)");

    /* PROT_WRITE-only anonymous memory: VM_WRITE without VM_READ. */
    char *wo = (char *)mapping(-1, 4, PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    EXPECT_OK(try_map(c, wo, 4, WR), WRITE_RULE);
    EXPECT_OK(try_map(c, wo, 4, RW), WRITE_RULE " (a READ|WRITE mapping pins with FOLL_WRITE only)");
    EXPECT_ERR(try_map(c, wo, 4, RD), EFAULT, READ_RULE);

    /* PROT_NONE: neither. */
    char *none = (char *)mapping(-1, 4, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS);
    EXPECT_ERR(try_map(c, none, 4, RW), EFAULT, WRITE_RULE);
    EXPECT_ERR(try_map(c, none, 4, WR), EFAULT, WRITE_RULE);
    EXPECT_ERR(try_map(c, none, 4, RD), EFAULT, READ_RULE);

    /* A run across two areas stops at the one that refuses: the whole MAP fails. */
    char *two = (char *)mapping(-1, 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    REQUIRE(mprotect(two + 4 * PAGE, 4 * PAGE, PROT_READ) == 0, "mprotect");
    EXPECT_ERR(try_map(c, two, 8, RW), EFAULT, WRITE_RULE " (second half read-only)");
    EXPECT_OK(try_map(c, two, 8, RD), READ_RULE);

    printf("PASS (%d checks)\n", acct_checks);
    return 0;
}
