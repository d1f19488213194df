/*
 * Long-run stack churn: after `go`, two recursions to depths 0..299 each malloc and free a
 * block; the walk keeps 64 frames, so about 128 distinct transient stacks overflow a small
 * stack map. 1.5 s later leak_late() leaks 10 x 100 bytes from a new stack, then `done`.
 */
#include "common.h"

NOINLINE void transient_at(int depth)
{
    if (depth > 0) {
        transient_at(depth - 1);
        __asm__ volatile("" ::: "memory"); /* no tail call: every depth is its own stack */
        return;
    }
    void *p = malloc(64);
    sink = p;
    free(p);
}

/* The same through another function: as many distinct stacks again. */
NOINLINE void transient_via(int depth)
{
    if (depth > 0) {
        transient_via(depth - 1);
        __asm__ volatile("" ::: "memory");
        return;
    }
    void *p = malloc(64);
    sink = p;
    free(p);
}

NOINLINE void leak_late(void)
{
    for (int i = 0; i < 10; i++)
        sink = malloc(100);
}

int main(void)
{
    out("ready\n");
    char line[16];
    if (read(0, line, sizeof line) <= 0)
        fail("stdin");
    for (int depth = 0; depth < 300; depth++) {
        transient_at(depth);
        transient_via(depth);
    }
    struct timespec ts = {1, 500 * 1000 * 1000};
    nanosleep(&ts, NULL);
    leak_late();
    out("done\n");
    pause();
    return 0;
}
