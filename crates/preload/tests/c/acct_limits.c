/*
 * Locked-memory accounting under the drop-in, with the limit, the capability and mlock'ed
 * memory changed after the program started (issue 11). The kernel reads RLIMIT_MEMLOCK at every
 * charge (vfio_lock_acct -> mm_lock_acct -> __account_locked_vm, task_rlimit) and CAP_IPC_LOCK
 * at every MAP_DMA (vfio_dma_do_map: dma->lock_cap = capable(CAP_IPC_LOCK)); mlock'ed pages and
 * vfio's charges are both mm->locked_vm, so they share the limit.
 *
 * argv[1]: "rlimit", "mlock", "cap" or "override" (run with TYPE1_MEMLOCK=128K).
 * Expects TYPE1_GROUPS="7:iommu". Prints "PASS" on stdout when every check holds.
 */
#define _GNU_SOURCE
#include "acct_common.h"

#define LIMIT_RULE                                                                          \
    "__account_locked_vm (mm/util.c): without CAP_IPC_LOCK, locked_vm + npages > "          \
    "task_rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT -> ENOMEM, the limit read at this charge"

/* setrlimit after start: the next MAP_DMA sees the new limit, lower or higher. */
static void rlimit_changes(void)
{
    set_ipc_lock(0);
    REQUIRE(vm_lck_pages() == 0, "nothing mlock'ed at start");
    int c = container();
    char *a = ram(128);

    set_memlock(64);
    EXPECT_ERR(map(c, 0, a, 128 * PAGE, RW), ENOMEM, LIMIT_RULE);
    set_memlock(256);
    EXPECT_OK(map(c, 0, a, 128 * PAGE, RW), LIMIT_RULE " (128 <= 256)");

    /* Lowered under what is already charged: nothing is taken back, no new charge fits. */
    char *b = ram(64);
    set_memlock(64);
    EXPECT_ERR(map(c, 1UL << 30, b, PAGE, RW), ENOMEM, LIMIT_RULE " (128 + 1 > 64)");
    EXPECT_OK(unmap(c, 0, 128 * PAGE), "vfio_unmap_unpin uncharges; a decrement never fails");
    /* Exactly at the limit is allowed (the test is "> limit"). */
    EXPECT_OK(map(c, 1UL << 30, b, 64 * PAGE, RW), LIMIT_RULE " (0 + 64 <= 64)");
    EXPECT_ERR(map(c, 0, a, PAGE, RW), ENOMEM, LIMIT_RULE " (64 + 1 > 64)");
}

/* mlock'ed memory counts against the same limit. */
static void mlock_counts(void)
{
    set_ipc_lock(0);
    set_memlock(64);
    REQUIRE(vm_lck_pages() == 0, "nothing mlock'ed at start");
    int c = container();
    char *a = ram(64);
    char *locked = ram(32);

    EXPECT_OK(mlock(locked, 32 * PAGE), "mlock within RLIMIT_MEMLOCK (32 <= 64)");
    REQUIRE(vm_lck_pages() == 32, "VmLck shows the 32 mlock'ed pages");
    EXPECT_ERR(map(c, 0, a, 48 * PAGE, RW), ENOMEM,
               LIMIT_RULE "; mlock_fixup charged 32 pages to the same locked_vm (32 + 48 > 64)");
    EXPECT_OK(map(c, 0, a, 32 * PAGE, RW), LIMIT_RULE " (32 mlock'ed + 32 <= 64)");
    EXPECT_ERR(map(c, 32 * PAGE, a + 32 * PAGE, PAGE, RW), ENOMEM, LIMIT_RULE " (64 + 1 > 64)");

    EXPECT_OK(munlock(locked, 32 * PAGE), "munlock");
    EXPECT_OK(map(c, 32 * PAGE, a + 32 * PAGE, 32 * PAGE, RW),
              LIMIT_RULE "; munlock gave the 32 pages back (32 + 32 <= 64)");
}

/* CAP_IPC_LOCK dropped and raised again at run time: read at each MAP_DMA. */
static void cap_changes(void)
{
    REQUIRE(has_ipc_lock(),
            "this test starts with CAP_IPC_LOCK in the effective set: run it as root");
    set_memlock(16);
    int c = container();
    char *a = ram(64);
    char *b = ram(64);

    EXPECT_OK(map(c, 0, a, 64 * PAGE, RW),
              "vfio_dma_do_map: lock_cap = capable(CAP_IPC_LOCK); __account_locked_vm "
              "bypasses the limit (64 > 16 allowed)");
    set_ipc_lock(0);
    EXPECT_ERR(map(c, 64 * PAGE, b, 8 * PAGE, RW), ENOMEM,
               "vfio_dma_do_map reads capable(CAP_IPC_LOCK) for each new mapping; the capable "
               "mapping's 64 pages are in locked_vm (64 + 8 > 16)");
    set_ipc_lock(1);
    EXPECT_OK(map(c, 64 * PAGE, b, 8 * PAGE, RW), "capable again at this MAP_DMA");
    set_ipc_lock(0);
    EXPECT_OK(unmap(c, 0, 72 * PAGE), "unmap both: uncharged whatever the capability");
    EXPECT_OK(map(c, 0, a, 16 * PAGE, RW), LIMIT_RULE " (0 + 16 <= 16)");
    EXPECT_ERR(map(c, 16 * PAGE, a + 16 * PAGE, PAGE, RW), ENOMEM, LIMIT_RULE " (16 + 1 > 16)");
}

/* TYPE1_MEMLOCK replaces RLIMIT_MEMLOCK (a drop-in option, docs/SEMANTICS.md). */
static void override_limit(void)
{
    set_ipc_lock(0);
    set_memlock(1024);
    int c = container();
    char *a = ram(64);
    EXPECT_ERR(map(c, 0, a, 64 * PAGE, RW), ENOMEM,
               "TYPE1_MEMLOCK=128K is the limit in force, not RLIMIT_MEMLOCK (64 > 32)");
    EXPECT_OK(map(c, 0, a, 32 * PAGE, RW), "32 <= 32 under TYPE1_MEMLOCK");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "rlimit") == 0)
        rlimit_changes();
    else if (strcmp(mode, "mlock") == 0)
        mlock_counts();
    else if (strcmp(mode, "cap") == 0)
        cap_changes();
    else if (strcmp(mode, "override") == 0)
        override_limit();
    else {
        fprintf(stderr, "usage: %s rlimit|mlock|cap|override\n", argv[0]);
        return 2;
    }
    printf("PASS %s (%d checks)\n", mode, acct_checks);
    return 0;
}
