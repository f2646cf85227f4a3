/*
 * Class 8: ioctl argument structures on the caller's stack and on the heap. Both are served
 * exactly as the kernel serves them (copy_from_user / copy_to_user of the structure, EFAULT
 * for a bad pointer). The drop-in reads and writes a structure on the calling thread's own
 * stack directly and copies any other one through process_vm_readv/writev (or a pipe).
 *
 * Then a seccomp filter denies process_vm_readv, process_vm_writev, pipe and pipe2 (EPERM):
 * no copy path is left, so a heap structure cannot be read (EFAULT, which shows the filter
 * bites), while MAP_DMA, UNMAP_DMA (with its size written back) and GET_INFO on stack
 * structures still succeed: they never needed a copy.
 *
 * Expects TYPE1_GROUPS="7:iommu,8:emulated".
 */
#define _GNU_SOURCE
#include "adv_check.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/vfio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define R_MAP "vfio_dma_do_map (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_UNMAP                                                                             \
    "vfio_iommu_type1_unmap_dma: copy_to_user(size = bytes unmapped) "                     \
    "(drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_INFO "vfio_iommu_type1_get_info (drivers/vfio/vfio_iommu_type1.c, v6.18)"
#define R_IN "copy_from_user of minsz faults -> EFAULT (vfio_iommu_type1_*, v6.18)"
#define R_FILTER "seccomp_run_filters: SECCOMP_RET_ERRNO|EPERM (kernel/seccomp.c, v6.18)"

static void install_filter(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_writev, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pipe, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pipe2, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    EXPECT_EQ(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "prctl PR_SET_NO_NEW_PRIVS");
    EXPECT_EQ(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog), 0,
              "seccomp SECCOMP_SET_MODE_FILTER");
    char src[8] = "abcdefg", dst[8];
    struct iovec l = {.iov_base = dst, .iov_len = sizeof(dst)};
    struct iovec r = {.iov_base = src, .iov_len = sizeof(src)};
    int p[2];
    EXPECT_ERR(process_vm_readv(getpid(), &l, 1, &r, 1, 0), EPERM, R_FILTER);
    EXPECT_ERR(process_vm_writev(getpid(), &r, 1, &l, 1, 0), EPERM, R_FILTER);
    EXPECT_ERR(pipe2(p, O_CLOEXEC), EPERM, R_FILTER);
}

static struct vfio_iommu_type1_dma_map map_arg(uint64_t iova, void *vaddr, uint64_t size)
{
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m),
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)vaddr,
        .iova = iova,
        .size = size,
    };
    return m;
}

/* MAP, UNMAP and GET_INFO with every structure a local of this function. */
static void stack_round(int c, char *mem, size_t pg)
{
    struct vfio_iommu_type1_dma_map m = map_arg(0x100000, mem, 2 * pg);
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_MAP_DMA, &m), 0, R_MAP);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, &m), EEXIST, R_MAP ": the same range again");
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = 0x100000, .size = 2 * pg};
    u.size = 2 * pg;
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u), 0, "vfio_dma_do_unmap");
    EXPECT_TRUE(u.size == 2 * pg, R_UNMAP);
    u.size = 2 * pg;
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u), 0, "vfio_dma_do_unmap: nothing there");
    EXPECT_TRUE(u.size == 0, R_UNMAP ": nothing unmapped -> 0");
    struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
    EXPECT_EQ(ioctl(c, VFIO_IOMMU_GET_INFO, &info), 0, R_INFO);
    EXPECT_TRUE(info.flags & VFIO_IOMMU_INFO_PGSIZES, R_INFO ": page sizes written back");
    EXPECT_TRUE(info.iova_pgsizes & pg, R_INFO ": the page size is supported");
    EXPECT_TRUE(info.argsz > sizeof(info), R_INFO ": argsz raised to the size with caps");
}

/* The same with heap structures; `ok` false: every call must fail with EFAULT instead. */
static void heap_round(int c, char *mem, size_t pg, int ok)
{
    struct vfio_iommu_type1_dma_map *m = malloc(sizeof(*m));
    struct vfio_iommu_type1_dma_unmap *u = malloc(sizeof(*u));
    EXPECT_TRUE(m != NULL && u != NULL, "malloc");
    *m = map_arg(0x200000, mem, pg);
    *u = (struct vfio_iommu_type1_dma_unmap){.argsz = sizeof(*u), .iova = 0x200000, .size = pg};
    if (ok) {
        EXPECT_EQ(ioctl(c, VFIO_IOMMU_MAP_DMA, m), 0, R_MAP);
        EXPECT_EQ(ioctl(c, VFIO_IOMMU_UNMAP_DMA, u), 0, "vfio_dma_do_unmap");
        EXPECT_TRUE(u->size == pg, R_UNMAP);
    } else {
        EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, m), EFAULT,
                   "no process_vm_readv and no pipe: a heap structure cannot be copied");
        EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, u), EFAULT,
                   "no process_vm_readv and no pipe: a heap structure cannot be copied");
    }
    free(m);
    free(u);
}

/* Bad pointers: EFAULT whatever the copy path. */
static void bad_round(int c, const struct adv_pages *P)
{
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, ADV_BAD1), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_MAP_DMA, P->none - 16), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_UNMAP_DMA, P->none), EFAULT, R_IN);
    EXPECT_ERR(ioctl(c, VFIO_IOMMU_GET_INFO, (void *)-8L), EFAULT, R_IN);
}

int main(void)
{
    struct adv_pages P = adv_pages();
    size_t pg = P.page;
    int c, g;
    EXPECT_FD(c, open("/dev/vfio/vfio", O_RDWR), "vfio_fops_open");
    EXPECT_FD(g, open("/dev/vfio/7", O_RDWR), "vfio_group_fops_open");
    EXPECT_EQ(ioctl(g, VFIO_GROUP_SET_CONTAINER, &c), 0, "vfio_group_ioctl_set_container");
    EXPECT_EQ(ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0, "vfio_ioctl_set_iommu");
    char *mem = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_TRUE(mem != MAP_FAILED, "mmap");
    memset(mem, 0x5a, 4 * pg);

    stack_round(c, mem, pg);
    heap_round(c, mem, pg, 1);
    bad_round(c, &P);

    install_filter();
    stack_round(c, mem, pg);
    heap_round(c, mem, pg, 0);
    bad_round(c, &P);
    struct vfio_group_status st = {.argsz = sizeof(st)};
    EXPECT_EQ(ioctl(g, VFIO_GROUP_GET_STATUS, &st), 0, "vfio_group_ioctl_get_status");
    EXPECT_TRUE(st.flags == (VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET),
                "vfio_group_ioctl_get_status: container set");

    EXPECT_EQ(close(g), 0, "vfio_group_fops_release");
    EXPECT_EQ(close(c), 0, "vfio_fops_release");
    printf("PASS\n");
    fprintf(stderr, "adv_stack_args: %d checks\n", adv_checks);
    return 0;
}
