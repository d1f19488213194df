/*
 * Exact leaks for a target run in a container-like root (see tests/tests/containers.rs): built
 * with glibc and with musl, so only what both C libraries have is used. Lines marked
 * `@line NAME` are the call lines the symbolized frame of NAME must point at.
 *
 * Protocol as in common.h (which is glibc-only): `ready`, one line on stdin, the leaks, `done`,
 * then sleep until killed.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

void *volatile sink;

static void out(const char *s)
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

static void wait_go(void)
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

NOINLINE void contained_malloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = malloc(size); /* @line contained_malloc */
}

NOINLINE void contained_calloc(int n, size_t nmemb, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = calloc(nmemb, size); /* @line contained_calloc */
}

int main(void)
{
    out("ready\n");
    wait_go();
    contained_malloc(10, 1000);
    contained_calloc(4, 10, 100);
    out("done\n");
    for (;;)
        pause();
    return 0;
}
