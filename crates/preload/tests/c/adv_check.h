/*
 * Shared checks for the adversarial programs (issue 11, crates/preload/tests/adversarial.rs).
 *
 * Every check names the kernel rule it asserts (function, file, v6.18); a failing check prints
 * the file, line, expression, what was wanted, the result, errno and that rule on stderr, then
 * exits 1. Nothing is printed on stdout except the final "PASS".
 */
#ifndef ADV_CHECK_H
#define ADV_CHECK_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int adv_checks;
/* Optional context for the next failure (e.g. the path a loop is testing). */
static __attribute__((unused)) const char *adv_ctx;

static void adv_fail(const char *file, int line, const char *expr, const char *want, long got,
                     int err, const char *rule)
{
    fprintf(stderr, "%s:%d: CHECK failed: %s\n    wanted: %s\n    got: %ld, errno %d (%s)\n"
                    "    kernel rule: %s\n",
            file, line, expr, want, got, err, strerror(err), rule);
    if (adv_ctx)
        fprintf(stderr, "    context: %s\n", adv_ctx);
    exit(1);
}

/* `call` returns -1 with errno `e`. */
#define EXPECT_ERR(call, e, rule)                                                           \
    do {                                                                                    \
        errno = 0;                                                                          \
        long r_ = (long)(call);                                                             \
        int e_ = errno;                                                                     \
        adv_checks++;                                                                       \
        if (!(r_ == -1 && e_ == (e)))                                                       \
            adv_fail(__FILE__, __LINE__, #call, "-1, errno " #e, r_, e_, rule);             \
    } while (0)

/* `call` returns exactly `v`. */
#define EXPECT_EQ(call, v, rule)                                                            \
    do {                                                                                    \
        errno = 0;                                                                          \
        long r_ = (long)(call);                                                             \
        int e_ = errno;                                                                     \
        adv_checks++;                                                                       \
        if (r_ != (long)(v))                                                                \
            adv_fail(__FILE__, __LINE__, #call, "== " #v, r_, e_, rule);                    \
    } while (0)

/* A pointer-returning `call` returns NULL with errno `e`. */
#define EXPECT_NULL_ERR(call, e, rule)                                                      \
    do {                                                                                    \
        errno = 0;                                                                          \
        const void *p_ = (const void *)(call);                                              \
        int e_ = errno;                                                                     \
        adv_checks++;                                                                       \
        if (!(p_ == NULL && e_ == (e)))                                                     \
            adv_fail(__FILE__, __LINE__, #call, "NULL, errno " #e, (long)(intptr_t)p_, e_,  \
                     rule);                                                                 \
    } while (0)

/* A condition over earlier results. */
#define EXPECT_TRUE(cond, rule)                                                             \
    do {                                                                                    \
        int e_ = errno;                                                                     \
        adv_checks++;                                                                       \
        if (!(cond))                                                                        \
            adv_fail(__FILE__, __LINE__, #cond, "true", 0, e_, rule);                       \
    } while (0)

/* An fd-returning `call` succeeds; the fd is stored in `var`. */
#define EXPECT_FD(var, call, rule)                                                          \
    do {                                                                                    \
        errno = 0;                                                                          \
        (var) = (call);                                                                     \
        int e_ = errno;                                                                     \
        adv_checks++;                                                                       \
        if ((var) < 0)                                                                      \
            adv_fail(__FILE__, __LINE__, #call, "a file descriptor", (long)(var), e_, rule); \
    } while (0)

/*
 * Three adjacent pages: `rw` (read-write), `none` (PROT_NONE) and `ro` (read-only, zeroed).
 * `edge(s)` copies the string `s` with its NUL so that the NUL is the last byte before `none`:
 * valid memory that ends exactly at a fault. `cross(s)` copies `s` without a NUL so the string
 * runs into `none`.
 */
struct adv_pages {
    char *rw;
    char *none;
    char *ro;
    size_t page;
};

static __attribute__((unused)) struct adv_pages adv_pages(void)
{
    struct adv_pages p;
    p.page = (size_t)sysconf(_SC_PAGESIZE);
    char *base = mmap(NULL, 3 * p.page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    p.rw = base;
    p.none = base + p.page;
    p.ro = base + 2 * p.page;
    if (mprotect(p.none, p.page, PROT_NONE) || mprotect(p.ro, p.page, PROT_READ)) {
        perror("mprotect");
        exit(2);
    }
    return p;
}

static __attribute__((unused)) char *adv_edge(const struct adv_pages *p, const char *s)
{
    size_t n = strlen(s) + 1;
    char *at = p->none - n;
    memcpy(at, s, n);
    return at;
}

static __attribute__((unused)) char *adv_cross(const struct adv_pages *p, const char *s)
{
    size_t n = strlen(s);
    char *at = p->none - n;
    memcpy(at, s, n);
    return at;
}

/* An object of `size` bytes placed so that it ends exactly at `none`. */
static __attribute__((unused)) void *adv_edge_obj(const struct adv_pages *p, size_t size)
{
    memset(p->none - size, 0, size);
    return p->none - size;
}

/* (void *)1, read through a volatile so the compiler cannot see (and warn about) the value. */
static __attribute__((unused)) void *volatile adv_bad1 = (void *)1;
#define ADV_BAD1 ((void *)adv_bad1)

#endif
