/*
 * mimalloc's own API with exact leaks (see tests/tests/allocator_families.rs): mi_malloc,
 * mi_calloc and mi_realloc (one function each with malloc, calloc and realloc in libmimalloc, so
 * reported by the standard names), mi_zalloc, mi_malloc_aligned and mi_zalloc_aligned; and,
 * released again and never reported, blocks freed with mi_free, mi_free_size and
 * mi_free_aligned. Built with -lmimalloc. Every leak is made in a loop from ONE call site; lines
 * marked `@line NAME` are the call lines the frame of NAME must point at.
 * Protocol: tests/targets/common.h.
 */
#include "common.h"

#include <mimalloc.h>

NOINLINE void leak_mi_malloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = mi_malloc(size); /* @line leak_mi_malloc */
}

NOINLINE void leak_mi_zalloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = mi_zalloc(size); /* @line leak_mi_zalloc */
}

NOINLINE void leak_mi_calloc(int n, size_t count, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = mi_calloc(count, size); /* @line leak_mi_calloc */
}

NOINLINE void leak_mi_malloc_aligned(int n, size_t size, size_t align)
{
    for (int i = 0; i < n; i++)
        sink = mi_malloc_aligned(size, align); /* @line leak_mi_malloc_aligned */
}

NOINLINE void leak_mi_zalloc_aligned(int n, size_t size, size_t align)
{
    for (int i = 0; i < n; i++)
        sink = mi_zalloc_aligned(size, align); /* @line leak_mi_zalloc_aligned */
}

/* From a small block to a large one: mi_realloc has to move it, freeing the old one. */
NOINLINE void leak_mi_realloc_moved(int n, size_t size)
{
    for (int i = 0; i < n; i++) {
        void *p = mi_malloc(16);
        sink = p;
        void *q = mi_realloc(p, size); /* @line leak_mi_realloc_moved */
        if (q == NULL || q == p)
            fail("leak_mi_realloc_moved: mi_realloc did not move the block");
        sink = q;
    }
}

NOINLINE void transient_mi(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        void *a = mi_malloc(400);
        sink = a;
        mi_free(a);

        void *b = mi_zalloc(600);
        sink = b;
        mi_free_size(b, 600);

        void *c = mi_malloc_aligned(300, 128);
        sink = c;
        mi_free_aligned(c, 128);

        void *d = mi_malloc(16);
        sink = d;
        d = mi_realloc(d, 20000);
        sink = d;
        mi_free_size(d, 20000);

        void *e = mi_calloc(10, 50);
        sink = e;
        free(e);
    }
}

NOINLINE void run_leaks(void)
{
    leak_mi_malloc(3, 400); /* @line run_leaks */
    leak_mi_zalloc(2, 600);
    leak_mi_calloc(2, 10, 50);
    leak_mi_malloc_aligned(3, 300, 128);
    leak_mi_zalloc_aligned(2, 200, 64);
    leak_mi_realloc_moved(2, 20000);
    transient_mi(200);
    sink = NULL; /* keeps the last call from being a tail call */
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    run_leaks(); /* @line main */
    out("done\n");
    sleep_forever();
    return 0;
}
