/*
 * Four shapes for the growth verdicts (tests/tests/suite/verdicts.rs), all from one loop
 * ticking every 31.25 ms (32 ticks a second), starting at `go`:
 *  - leak_paused: one 12 KiB block a tick for 256 ticks (3 MiB over 8 s), then no more:
 *    a leak that paused => growing;
 *  - cache_fill: one 4 KiB block a tick for the first 64 ticks (256 KiB over 2 s), then left
 *    alone: a cache that filled => steady;
 *  - pool_churn: every tick one of 16 slots freed and refilled with 1..8 KiB (pseudo-random,
 *    the same every run) => steady;
 *  - creep: 58 bytes a second, never freed: far below the significance floor => steady.
 * It prints `done` at once and ticks until killed.
 */
#include "common.h"

#define TICK_NS 31250000L
#define LEAK_TICKS 256
#define LEAK_BLOCK 12288
#define CACHE_TICKS 64
#define CACHE_BLOCK 4096
#define POOL_SLOTS 16

static void *cache[CACHE_TICKS];
static void *pool[POOL_SLOTS];
static unsigned long rng = 12345;

NOINLINE void leak_paused(void)
{
    sink = malloc(LEAK_BLOCK); /* @line leak_paused */
}

NOINLINE void cache_fill(int slot)
{
    cache[slot] = malloc(CACHE_BLOCK); /* @line cache_fill */
    sink = cache[slot];
}

NOINLINE void pool_churn(void)
{
    rng = rng * 6364136223846793005UL + 1442695040888963407UL;
    int slot = (int)((rng >> 33) % POOL_SLOTS);
    size_t size = 1024 + (size_t)((rng >> 40) % 7168);
    free(pool[slot]);
    pool[slot] = malloc(size); /* @line pool_churn */
    sink = pool[slot];
}

NOINLINE void creep(void)
{
    sink = malloc(58); /* @line creep */
}

/* Sleeps until `start` + `tick` ticks, so that the ticks do not drift. */
static void sleep_until_tick(const struct timespec *start, long tick)
{
    long long ns = (long long)start->tv_nsec + (long long)tick * TICK_NS;
    struct timespec at = { start->tv_sec + (time_t)(ns / 1000000000LL),
                           (long)(ns % 1000000000LL) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) != 0)
        ;
}

NOINLINE void run_shapes(void)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long tick = 0;; tick++) {
        if (tick < LEAK_TICKS)
            leak_paused();
        if (tick < CACHE_TICKS)
            cache_fill((int)tick);
        pool_churn();
        if (tick % 32 == 0)
            creep();
        sleep_until_tick(&start, tick + 1);
    }
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    out("done\n");
    run_shapes();
    return 0;
}
