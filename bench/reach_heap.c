/*
 * `--reachability` bench target: BLOCKS blocks of SIZE bytes (default 1048576 x 1024: a 1 GiB
 * heap), chained in a list from a global, every 100th one left out of the chain (lost).
 * Protocol: prints `ready`, allocates after one line on stdin, prints `done`, sleeps.
 * Build: gcc -O2 -o reach_heap bench/reach_heap.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *head;

int main(int argc, char **argv)
{
    long blocks = argc > 1 ? atol(argv[1]) : 1048576;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (fgets(line, sizeof line, stdin) == NULL)
        return 0;
    for (long i = 0; i < blocks; i++) {
        void **b = malloc(size);
        memset(b, 1, size);
        if (i % 100 == 99) {
            b[0] = NULL;
            continue;
        }
        b[0] = head;
        head = b;
    }
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
