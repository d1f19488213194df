/*
 * jemalloc's non-standard API with exact leaks (see tests/tests/allocator_families.rs): mallocx,
 * rallocx (the block moves), xallocx (resized in place) and, released again and never reported,
 * sdallocx, dallocx and nallocx (which allocates nothing). Built with -ljemalloc. Every leak is
 * made in a loop from ONE call site; lines marked `@line NAME` are the call lines the frame of
 * NAME must point at. Before `done` it prints `xallocx SIZE`: the real size xallocx returned,
 * which the block holds from then on. Protocol: tests/targets/common.h.
 */
#include "common.h"

#include <jemalloc/jemalloc.h>

NOINLINE void leak_mallocx(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = mallocx(size, 0); /* @line leak_mallocx */
}

NOINLINE void leak_mallocx_aligned(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = mallocx(size, MALLOCX_ALIGN(256) | MALLOCX_ZERO); /* @line leak_mallocx_aligned */
}

/* From a small size class to a large one: rallocx has to move the block. */
NOINLINE void leak_rallocx_moved(int n, size_t size)
{
    for (int i = 0; i < n; i++) {
        void *p = mallocx(64, 0);
        sink = p;
        void *q = rallocx(p, size, 0); /* @line leak_rallocx_moved */
        if (q == NULL || q == p)
            fail("leak_rallocx_moved: rallocx did not move the block");
        sink = q;
    }
}

/* A large block shrunk in place: from then on it holds what xallocx returns. */
static size_t xallocx_result;

NOINLINE void leak_xallocx(int n, size_t from, size_t to)
{
    for (int i = 0; i < n; i++) {
        void *p = mallocx(from, 0);
        sink = p;
        size_t real = xallocx(p, to, 0, 0); /* @line leak_xallocx */
        if (real < to || real >= from)
            fail("leak_xallocx: xallocx did not shrink the block in place");
        xallocx_result = real;
    }
}

NOINLINE void leak_je_malloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = malloc(size); /* @line leak_je_malloc */
}

/* Everything released again: sdallocx, dallocx, a rallocx'ed block, a failed xallocx growth of
 * a block freed afterwards, and nallocx, which only computes a size. */
NOINLINE void transient_api(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        void *a = mallocx(500, 0);
        sink = a;
        sdallocx(a, 500, 0);

        void *b = mallocx(300, MALLOCX_ALIGN(256));
        sink = b;
        sdallocx(b, 300, MALLOCX_ALIGN(256));

        void *c = mallocx(1000, 0);
        sink = c;
        dallocx(c, 0);

        void *d = mallocx(64, 0);
        sink = d;
        d = rallocx(d, 10000, 0);
        sink = d;
        dallocx(d, 0);

        void *e = mallocx(40000, 0);
        sink = e;
        xallocx(e, 20000, 0, 0);
        sdallocx(e, 20000, 0);

        sink = (void *)nallocx(4096, 0);

        void *f = malloc(777);
        sink = f;
        free(f);
    }
}

NOINLINE void run_leaks(void)
{
    leak_mallocx(6, 500); /* @line run_leaks */
    leak_mallocx_aligned(3, 300);
    leak_rallocx_moved(3, 10000);
    leak_xallocx(2, 40000, 20000);
    leak_je_malloc(2, 777);
    transient_api(200);
    sink = NULL; /* keeps the last call from being a tail call */
}

int main(void)
{
    print_allocator_addresses();
    out_addr("mallocx", (void *)mallocx);
    out_addr("rallocx", (void *)rallocx);
    out_addr("xallocx", (void *)xallocx);
    out("ready\n");
    wait_go();
    run_leaks(); /* @line main */
    char line[64];
    snprintf(line, sizeof line, "xallocx %zu\n", xallocx_result);
    out(line);
    out("done\n");
    sleep_forever();
    return 0;
}
