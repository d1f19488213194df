/*
 * Shared protocol helpers for the leaktrace test targets.
 *
 * Protocol (see tests/src/lib.rs):
 *   1. the target prints `addr NAME 0xADDR` lines (entry points of the allocator functions as this
 *      process resolves them), then `ready`;
 *   2. it blocks until it reads one line on stdin (the tracer is attached by then);
 *   3. it makes its allocations, prints `done`, and sleeps until killed.
 * Output goes through write(2) only: stdio would malloc its own buffer and add allocations that
 * are not the test's. snprintf into a stack buffer does not allocate for the formats used here.
 */
#ifndef LEAKTRACE_TARGET_COMMON_H
#define LEAKTRACE_TARGET_COMMON_H

/* g++ defines it already. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

/* Every allocation is stored here, so that the compiler can neither drop it nor pair it away. */
void *volatile sink;

static __attribute__((unused)) void out(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w <= 0)
            _exit(3);
        s += w;
        n -= (size_t)w;
    }
}

static __attribute__((unused)) void fail(const char *what)
{
    out("error ");
    out(what);
    out("\n");
    _exit(4);
}

static __attribute__((unused)) void out_addr(const char *name, void *p)
{
    char buf[128];
    snprintf(buf, sizeof buf, "addr %s %p\n", name, p);
    out(buf);
}

/* The entry points the tracer is expected to probe, as this process resolves them. */
static __attribute__((unused)) void print_allocator_addresses(void)
{
    out_addr("malloc", (void *)malloc);
    out_addr("free", (void *)free);
    out_addr("calloc", (void *)calloc);
    out_addr("realloc", (void *)realloc);
    out_addr("reallocarray", (void *)reallocarray);
    out_addr("posix_memalign", (void *)posix_memalign);
    out_addr("aligned_alloc", (void *)aligned_alloc);
    out_addr("memalign", (void *)memalign);
    out_addr("valloc", (void *)valloc);
    out_addr("pvalloc", (void *)pvalloc);
    out_addr("mmap", (void *)mmap);
    out_addr("munmap", (void *)munmap);
}

/* Reads one line from stdin with read(2); exits quietly on EOF (the harness went away). */
static __attribute__((unused)) void wait_go(void)
{
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r <= 0)
            _exit(0);
        if (c == '\n')
            return;
    }
}

static __attribute__((unused)) void sleep_forever(void)
{
    for (;;)
        pause();
}

static __attribute__((unused)) void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static __attribute__((unused)) int has_arg(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return 1;
    return 0;
}

#endif
