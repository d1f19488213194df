/*
 * Allocations that are all released again: none of the transient_* functions may ever appear in
 * a report. One marker block (leak_marker, 4242 bytes) stays, so that an empty report from a
 * tracer that sees nothing cannot pass.
 *
 * Counts (lower bounds the test checks against allocs_seen / frees_seen) are in
 * tests/tests/native_allocators.rs.
 */
#include "common.h"

NOINLINE void transient_malloc(int n)
{
    for (int i = 0; i < n; i++) {
        sink = malloc(100);
        free(sink);
    }
}

NOINLINE void transient_calloc(int n)
{
    for (int i = 0; i < n; i++) {
        sink = calloc(10, 10);
        free(sink);
    }
}

/* realloc(NULL) -> grow -> grow past the mmap threshold -> shrink -> free. */
NOINLINE void transient_realloc_chain(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = realloc(NULL, 10);
        sink = p;
        p = realloc(p, 100);
        sink = p;
        p = realloc(p, 5000);
        sink = p;
        p = realloc(p, 200000);
        sink = p;
        p = realloc(p, 20);
        sink = p;
        free(p);
    }
}

/* glibc: realloc(p, 0) frees p and returns NULL. */
NOINLINE void transient_realloc_zero(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = malloc(40);
        sink = p;
        void *q = realloc(p, 0);
        if (q != NULL)
            free(q);
    }
}

char transient_source[64] = "a string that is duplicated and released again";
char *volatile transient_source_ptr = transient_source;

NOINLINE void transient_strdup(int n)
{
    for (int i = 0; i < n; i++) {
        sink = strdup(transient_source_ptr);
        free(sink);
    }
}

NOINLINE void transient_posix_memalign(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, 256) != 0)
            fail("transient_posix_memalign");
        sink = p;
        free(p);
    }
}

NOINLINE void transient_aligned_alloc(int n)
{
    for (int i = 0; i < n; i++) {
        sink = aligned_alloc(128, 512);
        free(sink);
    }
}

NOINLINE void transient_reallocarray(int n)
{
    for (int i = 0; i < n; i++) {
        sink = reallocarray(NULL, 10, 30);
        free(sink);
    }
}

/* Above the mmap threshold: malloc's own mmap/munmap pair. */
NOINLINE void transient_large(int n)
{
    for (int i = 0; i < n; i++) {
        sink = malloc(300000);
        free(sink);
    }
}

NOINLINE void transient_mmap(int n)
{
    for (int i = 0; i < n; i++) {
        void *p = mmap(NULL, 16384, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            fail("transient_mmap");
        sink = p;
        munmap(p, 16384);
    }
}

/* Blocks freed in the reverse order, long after they were made. */
NOINLINE void transient_batch(int n)
{
    void *blocks[256];
    if (n > 256)
        n = 256;
    for (int i = 0; i < n; i++) {
        blocks[i] = malloc((size_t)(16 + i));
        sink = blocks[i];
    }
    for (int i = n - 1; i >= 0; i--)
        free(blocks[i]);
}

NOINLINE void leak_marker(void)
{
    sink = malloc(4242); /* @line leak_marker */
}

NOINLINE void run_transients(void)
{
    transient_malloc(200);
    transient_calloc(200);
    transient_realloc_chain(100);
    transient_realloc_zero(50);
    transient_strdup(100);
    transient_posix_memalign(50);
    transient_aligned_alloc(50);
    transient_reallocarray(50);
    transient_large(20);
    transient_mmap(20);
    transient_batch(200);
    leak_marker();
    sink = NULL;
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    run_transients();
    out("done\n");
    sleep_forever();
    return 0;
}
