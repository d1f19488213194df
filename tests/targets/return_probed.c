/*
 * Leaks through malloc from two call chains, for the test where another tracer's return probe
 * sits on malloc's first instruction: after `go`, leak_direct() leaks 40 blocks of 100 bytes,
 * leak_outer() 30 blocks of 200 bytes through leak_inner(), then `done`.
 */
#include "common.h"

NOINLINE void *leak_direct(void)
{
    void *p = malloc(100);
    sink = p;
    return p;
}

NOINLINE void *leak_inner(void)
{
    void *p = malloc(200);
    sink = p;
    return p;
}

NOINLINE void *leak_outer(void)
{
    void *p = leak_inner();
    sink = p;
    return p;
}

int main(void)
{
    out("ready\n");
    wait_go();
    for (int i = 0; i < 40; i++)
        leak_direct();
    for (int i = 0; i < 30; i++)
        leak_outer();
    out("done\n");
    sleep_forever();
    return 0;
}
