/*
 * One leak (4321 bytes) at the bottom of a 300-deep recursion: deeper than any stack a tracer
 * keeps, so the site's stack is either complete (reaches main) or marked truncated.
 */
#include "common.h"

NOINLINE void leak_deep(void)
{
    sink = malloc(4321); /* @line leak_deep */
}

NOINLINE int recurse(int n)
{
    if (n == 0) {
        leak_deep();
        return 0;
    }
    return recurse(n - 1) + 1; /* not a tail call */
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    if (recurse(300) != 300)
        fail("recurse");
    out("done\n");
    sleep_forever();
    return 0;
}
