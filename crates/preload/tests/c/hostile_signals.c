/*
 * Async-signal safety of the interposer (issue 11): a helper thread sends SIGUSR1 to the main
 * thread at 20 kHz for 5 s. The handler calls async-signal-safe functions the preload
 * interposes (close(-1), dup + close, ioctl(pipe, TCGETS), ioctl(container,
 * VFIO_GET_API_VERSION)) while the main thread loops over open/ioctl/close of VFIO fds
 * (container open, CHECK_EXTENSION, MAP/UNMAP of one page) and non-VFIO fds (pipe ioctls,
 * dup/close). close and dup are async-signal-safe (signal-safety(7)) and ioctl is a plain system
 * call programs issue from handlers; the kernel serves each from any context, so the program must
 * finish: no deadlock, and every result and errno as the kernel gives it.
 *
 * errno: the handler saves and restores it (as signal-safety(7) requires of handlers), and the
 * main loop checks that a successful call leaves errno untouched (glibc's syscall wrappers set
 * errno only on failure) and that a failed call's errno is the kernel's.
 *
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
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define RUN_SECONDS 5
#define PERIOD_NS 50000L /* 20 kHz */
#define SENTINEL 4242    /* an errno value no call here produces */

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (errno %d: %s)\n", __FILE__, __LINE__, \
                    #cond, errno, strerror(errno));                                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static int container = -1;
static int pipe_fds[2];
static pthread_t main_thread;
static volatile sig_atomic_t stop;
static volatile sig_atomic_t handler_runs;
static volatile sig_atomic_t handler_failure; /* first failed step in the handler, 0 if none */

static void handler(int sig)
{
    (void)sig;
    int saved = errno;
    struct termios t;

    errno = 0;
    if (close(-1) != -1 || errno != EBADF) /* close_fd: EBADF for an fd not open */
        handler_failure = handler_failure ? handler_failure : 1;
    int d = dup(pipe_fds[0]);
    if (d < 0 || close(d) != 0)
        handler_failure = handler_failure ? handler_failure : 2;
    errno = 0;
    /* A pipe is not a tty: tty_ioctl never sees it, vfs_ioctl returns ENOTTY. */
    if (ioctl(pipe_fds[0], TCGETS, &t) != -1 || errno != ENOTTY)
        handler_failure = handler_failure ? handler_failure : 3;
    if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
        handler_failure = handler_failure ? handler_failure : 4;
    handler_runs++;
    errno = saved;
}

static void *signal_source(void *arg)
{
    (void)arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    time_t end = next.tv_sec + RUN_SECONDS;
    while (next.tv_sec < end) {
        next.tv_nsec += PERIOD_NS;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        pthread_kill(main_thread, SIGUSR1);
    }
    stop = 1;
    return NULL;
}

static int map_page(int c, uint64_t iova, void *vaddr)
{
    struct vfio_iommu_type1_dma_map m;
    memset(&m, 0, sizeof(m));
    m.argsz = sizeof(m);
    m.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    m.vaddr = (uintptr_t)vaddr;
    m.iova = iova;
    m.size = 4096;
    return ioctl(c, VFIO_IOMMU_MAP_DMA, &m);
}

int main(void)
{
    main_thread = pthread_self();
    CHECK(pipe(pipe_fds) == 0);
    container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    CHECK(container >= 0);
    int group = open("/dev/vfio/7", O_RDWR | O_CLOEXEC);
    CHECK(group >= 0);
    CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0);
    CHECK(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0);
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED);
    page[0] = 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);

    /* The source thread must not take the signal itself. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_t src;
    CHECK(pthread_create(&src, NULL, signal_source, NULL) == 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    long iterations = 0;
    struct termios t;
    int nread;
    while (!stop) {
        /* VFIO: a new container, an extension check, close. */
        int c2 = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
        CHECK(c2 >= 0);
        errno = SENTINEL;
        CHECK(ioctl(c2, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1);
        CHECK(errno == SENTINEL);
        CHECK(close(c2) == 0 && errno == SENTINEL);

        /* VFIO: MAP and UNMAP one page on the set-up container (size written back). */
        CHECK(map_page(container, 0x100000, page) == 0 && errno == SENTINEL);
        errno = 0;
        CHECK(map_page(container, 0x100000, page) == -1 && errno == EEXIST); /* vfio_dma_do_map */
        struct vfio_iommu_type1_dma_unmap u;
        memset(&u, 0, sizeof(u));
        u.argsz = sizeof(u);
        u.iova = 0x100000;
        u.size = 4096;
        errno = SENTINEL;
        CHECK(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u) == 0 && u.size == 4096);
        CHECK(errno == SENTINEL);

        /* Not VFIO: pipe ioctls and dup/close. */
        errno = 0;
        CHECK(ioctl(pipe_fds[0], TCGETS, &t) == -1 && errno == ENOTTY);
        errno = SENTINEL;
        CHECK(ioctl(pipe_fds[0], FIONREAD, &nread) == 0 && nread == 0 && errno == SENTINEL);
        int d = dup(pipe_fds[1]);
        CHECK(d >= 0 && errno == SENTINEL);
        CHECK(close(d) == 0 && errno == SENTINEL);
        errno = 0;
        CHECK(close(d) == -1 && errno == EBADF);
        iterations++;
    }
    CHECK(pthread_join(src, NULL) == 0);
    CHECK(handler_failure == 0);
    /* At least 20 Hz of the 20 kHz arrived: a loaded 2-core machine coalesces most of them
     * (pending signals of one kind merge; a CI machine running other tests in parallel gave
     * under 200 Hz), and the drop-in defers them while it holds a lock; a hundred handler runs
     * interleaved with the loop still prove the point. */
    if (handler_runs < RUN_SECONDS * 20)
        fprintf(stderr, "only %d handler runs\n", (int)handler_runs);
    CHECK(handler_runs >= RUN_SECONDS * 20);
    printf("PASS iterations=%ld signals=%d\n", iterations, (int)handler_runs);
    return 0;
}
