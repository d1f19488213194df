/*
 * Leaks through musl's strdup, whose libc has no unwind tables and no frame pointers: the walk
 * past strdup needs rows derived from its machine code. Self-contained (common.h uses glibc-only
 * allocators). Protocol: prints `ready`, waits for a line, leaks, prints `done`, sleeps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *volatile sink;
static const char *volatile source = "ninety-nine bytes are not needed here";

__attribute__((noinline)) void leak_strdup(int n)
{
    for (int i = 0; i < n; i++)
        sink = strdup(source); /* @line leak_strdup */
}

int main(void)
{
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    leak_strdup(3); /* @line main */
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
