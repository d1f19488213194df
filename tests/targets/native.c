/*
 * Exact, known leaks through every allocator entry point (see tests/tests/native_allocators.rs
 * for the expected numbers). Each leak is made in a loop from ONE call site, so that every leak
 * function yields exactly one stack. Lines marked `@line NAME` are the call lines the symbolized
 * frame of NAME must point at.
 *
 * Arguments: `exit`   exit(0) after `done` instead of sleeping;
 *            `nowait` no protocol at all: allocate at once, print nothing (for `leaktrace run`).
 */
#include "common.h"

NOINLINE void leak_malloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = malloc(size); /* @line leak_malloc */
}

NOINLINE void leak_calloc(int n, size_t nmemb, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = calloc(nmemb, size); /* @line leak_calloc */
}

/* The block is pinned by a live neighbour, so growing it has to move it. */
NOINLINE void leak_realloc_moved(int n, size_t size)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(16);
        void *blocker = malloc(16);
        sink = blocker;
        void *q = realloc(p, size); /* @line leak_realloc_moved */
        if (q == NULL || q == p)
            fail("leak_realloc_moved: realloc did not move the block");
        sink = q;
        free(blocker);
    }
}

/* Shrinking a heap block: glibc keeps it where it is. */
NOINLINE void leak_realloc_inplace(int n, size_t size)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(1000);
        sink = p;
        void *q = realloc(p, size); /* @line leak_realloc_inplace */
        if (q != p)
            fail("leak_realloc_inplace: realloc moved the block");
        sink = q;
    }
}

/* glibc's reallocarray tail-calls realloc: one allocation, counted once, as reallocarray. */
NOINLINE void leak_reallocarray(int n, size_t nmemb, size_t size)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(8);
        sink = p;
        sink = reallocarray(p, nmemb, size); /* @line leak_reallocarray */
        if (sink == NULL)
            fail("leak_reallocarray: reallocarray failed");
    }
}

NOINLINE void leak_posix_memalign(int n, size_t align, size_t size)
{
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        if (posix_memalign(&p, align, size) != 0) /* @line leak_posix_memalign */
            fail("leak_posix_memalign: posix_memalign failed");
        sink = p;
    }
}

NOINLINE void leak_aligned_alloc(int n, size_t align, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = aligned_alloc(align, size); /* @line leak_aligned_alloc */
}

NOINLINE void leak_memalign(int n, size_t align, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = memalign(align, size); /* @line leak_memalign */
}

NOINLINE void leak_valloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = valloc(size); /* @line leak_valloc */
}

NOINLINE void leak_pvalloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = pvalloc(size); /* @line leak_pvalloc */
}

/* strdup calls malloc inside libc: the site is malloc's, with strdup's frame above it. The source
 * string is only known at run time, so the compiler cannot turn strdup into malloc + memcpy. */
char strdup_source[128];
char *volatile strdup_source_ptr = strdup_source;

NOINLINE void leak_strdup(int n, size_t len)
{
    memset(strdup_source, 'x', len);
    strdup_source[len] = '\0';
    for (int i = 0; i < n; i++)
        sink = strdup(strdup_source_ptr); /* @line leak_strdup */
}

/* Anonymous mappings: n of `size` bytes kept, and one unmapped again that must not count. */
NOINLINE void leak_mmap(int n, size_t size)
{
    for (int i = 0; i < n; i++) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* @line leak_mmap */
        if (p == MAP_FAILED)
            fail("leak_mmap: mmap failed");
        sink = p;
    }
    void *gone = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (gone == MAP_FAILED)
        fail("leak_mmap: mmap failed");
    sink = gone;
    munmap(gone, 4096);
}

/* Above the mmap threshold: malloc mmaps the block itself; that mmap is malloc's, not ours. */
NOINLINE void leak_malloc_large(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = malloc(size); /* @line leak_malloc_large */
}

/* An always-inlined helper: its frame is reported as inlined into leak_inlined. */
static inline __attribute__((always_inline)) void *leak_inline_helper(size_t size)
{
    return malloc(size); /* @line leak_inline_helper */
}

NOINLINE void leak_inlined(size_t size)
{
    sink = leak_inline_helper(size); /* @line leak_inlined */
}

NOINLINE void run_leaks(void)
{
    leak_malloc(10, 1000);             /* @line run_leaks */
    leak_calloc(4, 5, 200);
    leak_realloc_moved(3, 3000);
    leak_realloc_inplace(2, 500);
    leak_reallocarray(2, 25, 10);
    leak_posix_memalign(3, 64, 256);
    leak_aligned_alloc(2, 128, 512);
    leak_memalign(2, 256, 100);
    leak_valloc(2, 3000);
    leak_pvalloc(1, 5000);
    leak_strdup(3, 99);
    leak_mmap(2, 8192);
    leak_malloc_large(2, 300000);
    leak_inlined(777);
    sink = NULL; /* keeps the last call from being a tail call */
}

int main(int argc, char **argv)
{
    int nowait = has_arg(argc, argv, "nowait");
    if (!nowait) {
        print_allocator_addresses();
        out("ready\n");
        wait_go();
    }
    run_leaks(); /* @line main */
    if (has_arg(argc, argv, "exit")) {
        if (!nowait)
            out("done\n");
        exit(0);
    }
    if (!nowait)
        out("done\n");
    sleep_forever();
    return 0;
}
