/*
 * A slow leak among heavy churn, for `--always-on`: `always_on OUT SECONDS` runs for SECONDS.
 * Every 10 ms leak_slowly() leaks 64 bytes, and in between three churn sites malloc and free
 * blocks of 16 B to 4 KiB (about 6000 a second), none of them outliving its batch. At the end
 * it writes the CLOCK_REALTIME time (ns) taken just before each leaking malloc to OUT, as
 * native-endian u64s, and exits.
 */
#include "common.h"

#include <fcntl.h>

#define LEAK_BYTES 64
#define TICK_MS 10
#define BATCH 20
#define MAX_LEAKS 100000

static unsigned long long stamps[MAX_LEAKS];
static int leaks;
static unsigned int seed = 12345;

static unsigned int next_random(void)
{
    seed = seed * 1103515245u + 12345u;
    return seed >> 8;
}

static unsigned long long now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

NOINLINE void *leak_slowly(void)
{
    void *p = malloc(LEAK_BYTES); /* @line leak */
    sink = p;
    return p;
}

/* A batch of blocks of `min` to `min + spread` bytes, all freed before it returns. */
NOINLINE void churn_batch(size_t min, size_t spread)
{
    void *blocks[BATCH];
    for (int i = 0; i < BATCH; i++) {
        blocks[i] = malloc(min + next_random() % spread);
        sink = blocks[i];
    }
    for (int i = 0; i < BATCH; i++)
        free(blocks[i]);
}

NOINLINE void churn_small(void) { churn_batch(16, 240); }
NOINLINE void churn_medium(void) { churn_batch(256, 768); }
NOINLINE void churn_large(void) { churn_batch(1024, 3072); }

int main(int argc, char **argv)
{
    if (argc != 3)
        fail("usage: always_on OUT SECONDS");
    unsigned long long end = now_ns(CLOCK_MONOTONIC) + strtoull(argv[2], NULL, 10) * 1000000000ull;
    while (now_ns(CLOCK_MONOTONIC) < end && leaks < MAX_LEAKS) {
        stamps[leaks++] = now_ns(CLOCK_REALTIME);
        leak_slowly();
        churn_small();
        churn_medium();
        churn_large();
        sleep_ms(TICK_MS);
    }
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        fail("open");
    size_t size = (size_t)leaks * sizeof stamps[0];
    if (write(fd, stamps, size) != (ssize_t)size)
        fail("write");
    close(fd);
    out("done\n");
    return 0;
}
