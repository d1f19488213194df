/*
 * Allocator calls made inside other allocator calls, under byte sampling with uprobe sessions
 * (an unsampled call's return is not probed, so its nested calls must be told apart by the
 * stack). After `go`, transient_work() makes and frees blocks whose allocation or release
 * calls the allocator's own entry points: realloc growth, blocks above the mmap threshold
 * (glibc maps and unmaps them inside malloc and free), posix_memalign, strdup, calloc. Then
 * leak_kept() leaks LEAKED blocks of LEAK_SIZE bytes, and `done`.
 */
#include "common.h"

#define ROUNDS 100
#define LEAKED 4000
#define LEAK_SIZE 1000

NOINLINE void transient_work(void)
{
    for (int i = 0; i < ROUNDS; i++) {
        char *grown = NULL;
        for (size_t size = 64; size <= 64 * 1024; size *= 4) {
            grown = realloc(grown, size);
            if (grown == NULL)
                fail("realloc");
            grown[size - 1] = 1;
        }
        free(grown);

        char *big = malloc(300 * 1024);
        if (big == NULL)
            fail("malloc");
        big[0] = 1;
        sink = big;
        free(big);

        void *aligned = NULL;
        if (posix_memalign(&aligned, 4096, 8192) != 0)
            fail("posix_memalign");
        sink = aligned;
        free(aligned);

        char *copy = strdup("a string duplicated and freed");
        sink = copy;
        free(copy);

        void *zeroed = calloc(100, 100);
        sink = zeroed;
        free(zeroed);
    }
}

NOINLINE void *leak_kept(void)
{
    void *p = malloc(LEAK_SIZE);
    sink = p;
    return p;
}

int main(void)
{
    out("ready\n");
    char line[16];
    if (read(0, line, sizeof line) <= 0)
        fail("stdin");
    transient_work();
    for (int i = 0; i < LEAKED; i++)
        leak_kept();
    out("done\n");
    pause();
    return 0;
}
