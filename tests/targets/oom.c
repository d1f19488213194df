/*
 * A leak that runs into its memory cgroup's limit: after `go`, leak_megabyte() leaks one
 * touched MiB every 10 ms until the OOM killer takes the process.
 */
#include "common.h"

#define MIB (1024 * 1024)

NOINLINE void *leak_megabyte(void)
{
    char *p = malloc(MIB);
    if (p == NULL)
        fail("malloc");
    memset(p, 0x5a, MIB); /* resident, so the cgroup is charged */
    sink = p;
    return p;
}

int main(void)
{
    out("ready\n");
    char line[16];
    if (read(0, line, sizeof line) <= 0)
        fail("stdin");
    for (;;) {
        leak_megabyte();
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
