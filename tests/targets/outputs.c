/* The target of the output tests (tests/tests/suite/outputs.rs): known leaks in named
 * functions, then it sleeps for argv[1] seconds and exits (so nothing outlives a test that
 * fails). Nothing else allocates. */
#include <stdlib.h>
#include <unistd.h>
#define NOINLINE __attribute__((noinline, noclone))
void *volatile sink;

NOINLINE void outputs_leak_big(void)
{
    for (int i = 0; i < 40; i++)
        sink = malloc(4096); /* @line big */
}

NOINLINE void outputs_leak_small(void)
{
    for (int i = 0; i < 10; i++)
        sink = calloc(10, 100);
}

static inline __attribute__((always_inline)) void *outputs_inline_helper(size_t n)
{
    return malloc(n); /* @line helper */
}

NOINLINE void outputs_leak_inlined(void)
{
    for (int i = 0; i < 3; i++)
        sink = outputs_inline_helper(777); /* @line inlined */
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 60;
    outputs_leak_big();
    outputs_leak_small();
    outputs_leak_inlined();
    sink = NULL;
    sleep(seconds);
    return 0;
}
