/*
 * Shared helpers of the accounting and pin-rule programs (issue 11,
 * crates/preload/tests/accounting.rs).
 *
 * Each check names the kernel rule it asserts (function and file, v6.18). A failing check prints
 * file, line, expression, what was wanted, the result, errno and the rule on stderr and exits 1.
 * Nothing goes to stdout except the final "PASS".
 *
 * Expects TYPE1_GROUPS="7:iommu" (an IOMMU-backed group: MAP_DMA pins and charges at once).
 */
#ifndef ACCT_COMMON_H
#define ACCT_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static int acct_checks;

static inline void acct_fail(const char *file, int line, const char *expr, const char *want,
                             long got, int err, const char *rule)
{
    fprintf(stderr, "%s:%d: CHECK failed: %s\n    wanted: %s\n    got: %ld, errno %d (%s)\n"
                    "    kernel rule: %s\n",
            file, line, expr, want, got, err, strerror(err), rule);
    exit(1);
}

/* `call` returns -1 with errno `e`. */
#define EXPECT_ERR(call, e, rule)                                                           \
    do {                                                                                    \
        errno = 0;                                                                          \
        long r_ = (long)(call);                                                             \
        int e_ = errno;                                                                     \
        acct_checks++;                                                                      \
        if (!(r_ == -1 && e_ == (e)))                                                       \
            acct_fail(__FILE__, __LINE__, #call, "-1, errno " #e, r_, e_, rule);            \
    } while (0)

/* `call` returns 0. */
#define EXPECT_OK(call, rule)                                                               \
    do {                                                                                    \
        errno = 0;                                                                          \
        long r_ = (long)(call);                                                             \
        int e_ = errno;                                                                     \
        acct_checks++;                                                                      \
        if (r_ != 0)                                                                        \
            acct_fail(__FILE__, __LINE__, #call, "0", r_, e_, rule);                        \
    } while (0)

/* A precondition of the test itself (not a kernel rule). */
#define REQUIRE(cond, why)                                                                  \
    do {                                                                                    \
        if (!(cond))                                                                        \
            acct_fail(__FILE__, __LINE__, #cond, "true", 0, errno, why);                    \
    } while (0)

#define PAGE 4096UL

static const uint32_t RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
static const uint32_t RD = VFIO_DMA_MAP_FLAG_READ;
static const uint32_t WR = VFIO_DMA_MAP_FLAG_WRITE;

/* A type1v2 container with group 7 attached: MAP_DMA pins at once (an IOMMU domain exists). */
static inline int container(void)
{
    int c = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    REQUIRE(c >= 0, "open /dev/vfio/vfio (is the preload loaded?)");
    int g = open("/dev/vfio/7", O_RDWR | O_CLOEXEC);
    REQUIRE(g >= 0, "open /dev/vfio/7 (TYPE1_GROUPS=7:iommu)");
    REQUIRE(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) == 0, "VFIO_GROUP_SET_CONTAINER");
    REQUIRE(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0, "VFIO_SET_IOMMU");
    return c;
}

static inline int map(int c, uint64_t iova, const void *vaddr, uint64_t size, uint32_t flags)
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

static inline int unmap(int c, uint64_t iova, uint64_t size)
{
    struct vfio_iommu_type1_dma_unmap u;
    memset(&u, 0, sizeof(u));
    u.argsz = sizeof(u);
    u.iova = iova;
    u.size = size;
    return ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u);
}

/* Fresh private anonymous memory of `pages` pages, touched. */
static inline char *ram(unsigned long pages)
{
    char *p = (char *)mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED, "mmap anonymous memory");
    memset(p, 0x5a, pages * PAGE);
    return p;
}

/* RLIMIT_MEMLOCK (soft and hard) of `pages` pages. */
static inline void set_memlock(unsigned long pages)
{
    struct rlimit rl = {pages * PAGE, pages * PAGE};
    struct rlimit cur;
    REQUIRE(getrlimit(RLIMIT_MEMLOCK, &cur) == 0, "getrlimit");
    /* Lowering needs nothing; raising the hard limit needs CAP_SYS_RESOURCE. Keep the hard
     * limit where it is when it allows the new soft limit. */
    if (cur.rlim_max == RLIM_INFINITY || cur.rlim_max >= rl.rlim_cur)
        rl.rlim_max = cur.rlim_max;
    REQUIRE(setrlimit(RLIMIT_MEMLOCK, &rl) == 0, "setrlimit(RLIMIT_MEMLOCK)");
}

/* The calling thread's capability sets, with raw capget (no libcap). */
static inline void caps_get(struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3])
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    REQUIRE(syscall(SYS_capget, &h, d) == 0, "capget");
}

static inline int has_ipc_lock(void)
{
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    caps_get(d);
    return (d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective & CAP_TO_MASK(CAP_IPC_LOCK)) != 0;
}

/* Sets CAP_IPC_LOCK in or out of the effective set (it stays permitted, so it can come back). */
static inline void set_ipc_lock(int on)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    caps_get(d);
    if (on)
        d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective |= CAP_TO_MASK(CAP_IPC_LOCK);
    else
        d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
    REQUIRE(syscall(SYS_capset, &h, d) == 0, "capset");
    REQUIRE(has_ipc_lock() == !!on, "CAP_IPC_LOCK changed as asked");
}

/* Pages the process has mlock'ed (VmLck of /proc/self/status). */
static inline unsigned long vm_lck_pages(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    REQUIRE(f != NULL, "open /proc/self/status");
    char line[256];
    unsigned long kb = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmLck: %lu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024 / PAGE;
}

#endif
