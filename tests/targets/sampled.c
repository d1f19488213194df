/*
 * Many small allocations for byte sampling: after `go`, leak_kilobyte() leaks 100000 blocks of
 * 1000 bytes (100 MB, never touched, so barely resident), then `done`.
 */
#include "common.h"

#define BLOCKS 100000

NOINLINE void *leak_kilobyte(void)
{
    void *p = malloc(1000);
    sink = p;
    return p;
}

int main(void)
{
    out("ready\n");
    char line[16];
    if (read(0, line, sizeof line) <= 0)
        fail("stdin");
    for (int i = 0; i < BLOCKS; i++)
        leak_kilobyte();
    out("done\n");
    pause();
    return 0;
}
