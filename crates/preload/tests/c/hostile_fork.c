/*
 * Fork safety of the interposer (issue 11): one thread MAPs and UNMAPs in a loop on a container
 * while the main thread forks 200 times. Each child (no exec) opens its own new container, does
 * GET_API_VERSION and CHECK_EXTENSION on it, and an ioctl on the container fd it inherited from
 * the parent, then _exit(0).
 *
 * The kernel (vfio_fops_unl_ioctl, v6.18) would serve the inherited fd: the child shares the
 * parent's container. The drop-in cannot share engine state across processes, and refuses
 * every VFIO request on an inherited fd with EBADFD instead of diverging silently (README,
 * "What differs from the kernel"). A container the child opens itself works normally.
 *
 * The parent reaps the children with a deadline, kills any left and reports them as hung.
 * Expects TYPE1_GROUPS="7:iommu". Prints "PASS ..." and exits 0, or exits non-zero.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FORKS 200
#define DEADLINE_S 30 /* for all children together, from the last fork */
#define MAP_PAGES 16

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (errno %d: %s)\n", __FILE__, __LINE__, \
                    #cond, errno, strerror(errno));                                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static int container = -1;
static char *buf;
static volatile int stop;
static long maps;
static int mapper_failure;

static void *mapper(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        struct vfio_iommu_type1_dma_map m;
        memset(&m, 0, sizeof(m));
        m.argsz = sizeof(m);
        m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
        m.vaddr = (uintptr_t)buf;
        m.iova = 0x100000;
        m.size = MAP_PAGES * 4096;
        if (ioctl(container, VFIO_IOMMU_MAP_DMA, &m) != 0) {
            mapper_failure = errno ? errno : -1;
            break;
        }
        struct vfio_iommu_type1_dma_unmap u;
        memset(&u, 0, sizeof(u));
        u.argsz = sizeof(u);
        u.iova = 0x100000;
        u.size = MAP_PAGES * 4096;
        if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u) != 0 || u.size != MAP_PAGES * 4096) {
            mapper_failure = errno ? errno : -2;
            break;
        }
        maps++;
    }
    return NULL;
}

/* The child: async-signal-safe calls only (and the interposed ones under test). Its exit
 * status names the first step that failed. */
static void child(void)
{
    int c = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (c < 0)
        _exit(10);
    if (ioctl(c, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
        _exit(11);
    if (ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1)
        _exit(12);
    errno = 0;
    if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != -1)
        _exit(13);
    if (errno != EBADFD)
        _exit(14);
    if (close(c) != 0)
        _exit(15);
    _exit(0);
}

/* Collects the children of pids[0..n) that exited; status -1 marks one still running. */
static int reap(const pid_t *pids, int *status, int n)
{
    int reaped = 0;
    for (int j = 0; j < n; j++) {
        int st;
        if (status[j] == -1 && waitpid(pids[j], &st, WNOHANG) == pids[j]) {
            status[j] = st;
            reaped++;
        }
    }
    return reaped;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
    container = open("/dev/vfio/vfio", O_RDWR);
    CHECK(container >= 0);
    int group = open("/dev/vfio/7", O_RDWR);
    CHECK(group >= 0);
    CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0);
    CHECK(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0);
    buf = mmap(NULL, MAP_PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(buf != MAP_FAILED);
    memset(buf, 1, MAP_PAGES * 4096);

    pthread_t t;
    CHECK(pthread_create(&t, NULL, mapper, NULL) == 0);
    pid_t pids[FORKS];
    int status[FORKS];
    int done = 0;
    for (int i = 0; i < FORKS; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0)
            child();
        status[i] = -1;
        /* Reap whoever finished, so children overlap with the forks but do not pile up. */
        done += reap(pids, status, i + 1);
    }
    double deadline = now_s() + DEADLINE_S;
    while (done < FORKS && now_s() < deadline) {
        done += reap(pids, status, FORKS);
        usleep(10000);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    CHECK(pthread_join(t, NULL) == 0);

    int hung = 0, failed = 0;
    for (int j = 0; j < FORKS; j++) {
        if (status[j] == -1) {
            kill(pids[j], SIGKILL);
            waitpid(pids[j], NULL, 0);
            hung++;
        } else if (!WIFEXITED(status[j]) || WEXITSTATUS(status[j]) != 0) {
            if (failed < 5)
                fprintf(stderr, "child %d: %s %d\n", j,
                        WIFEXITED(status[j]) ? "exit" : "signal",
                        WIFEXITED(status[j]) ? WEXITSTATUS(status[j]) : WTERMSIG(status[j]));
            failed++;
        }
    }
    if (hung || failed || mapper_failure) {
        fprintf(stderr, "FAIL: %d of %d children hung (killed after %d s), %d failed; mapper errno %d\n",
                hung, FORKS, DEADLINE_S, failed, mapper_failure);
        return 1;
    }
    CHECK(maps > 0);
    printf("PASS forks=%d maps=%ld\n", FORKS, maps);
    return 0;
}
