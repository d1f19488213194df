/*
 * Two leak shapes for the verdicts (tests/tests/verdicts.rs):
 *  - cache_insert: a bounded cache, filled with 32 x 256 bytes at once, then left alone => steady;
 *  - leak_linear: one 64-byte block every 50 ms, for as long as the process runs  => growing.
 * Unlike the other targets it keeps leaking after `done`, until killed.
 */
#include "common.h"

#define CACHE_ENTRIES 32

static void *cache[CACHE_ENTRIES];

NOINLINE void cache_insert(int slot, size_t size)
{
    if (cache[slot] == NULL)
        cache[slot] = malloc(size); /* @line cache_insert */
    sink = cache[slot];
}

NOINLINE void cache_fill(void)
{
    for (int i = 0; i < CACHE_ENTRIES; i++)
        cache_insert(i, 256);
    sink = NULL;
}

NOINLINE void leak_linear(size_t size)
{
    sink = malloc(size); /* @line leak_linear */
}

NOINLINE void run_forever(void)
{
    for (;;) {
        leak_linear(64);
        sleep_ms(50);
    }
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    cache_fill();
    out("done\n");
    run_forever();
    return 0;
}
