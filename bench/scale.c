/*
 * scale: the volume scenario of `cargo xtask bench`: many outstanding allocations over many
 * distinct call stacks, for timing leaktrace's final report and measuring its memory.
 *
 * Usage: scale <stacks> <per_stack>
 *
 * After the driver's start line, makes <stacks> x <per_stack> allocations (16 to 64 bytes) that
 * stay outstanding, <per_stack> from each of <stacks> distinct call stacks. A stack is chosen by
 * the bits of its number k: a recursion of DEPTH levels in which level d calls level_a or
 * level_b by bit d of k, so the return addresses of the 16 frames spell out k and there are
 * 2^16 = 65,536 possible stacks (<stacks> must not exceed that). Sibling calls are not
 * optimised away (the functions do work after each call), and the two functions differ, so the
 * compiler can neither turn the recursion into jumps nor fold level_a and level_b into one.
 *
 * Protocol (stdin/stdout are pipes to the benchmark driver):
 *
 *   1. Print `ready pid=<pid>` and wait for one line on stdin: the driver attaches the tracer.
 *   2. Make the allocations, then print `done allocs=<n> stacks=<n> bytes=<n>`.
 *   3. Wait for one more line (or EOF) on stdin, then exit without freeing anything, so every
 *      block is outstanding while the driver stops the tracer.
 *
 * Build: gcc -O2 -g -o scale scale.c
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DEPTH 16
#define MAX_STACKS (1L << DEPTH)

#define NOINLINE __attribute__((noinline, noclone))

/* Keeps every block reachable, and makes the two levels do different work. */
static void **blocks;
static long next_block;
static volatile unsigned long visits_a, visits_b;

static void *level_a(unsigned k, int depth);
static void *level_b(unsigned k, int depth);

static NOINLINE void *leaf(unsigned k)
{
    size_t size = 16 + (k % 49);
    void *block = malloc(size);
    if (block == NULL) {
        fprintf(stderr, "scale: malloc(%zu) failed\n", size);
        exit(1);
    }
    blocks[next_block++] = block;
    return block;
}

static inline void *next(unsigned k, int depth)
{
    if (depth == DEPTH)
        return leaf(k);
    return (k >> depth) & 1 ? level_b(k, depth + 1) : level_a(k, depth + 1);
}

static NOINLINE void *level_a(unsigned k, int depth)
{
    void *block = next(k, depth);
    visits_a++;
    return block;
}

static NOINLINE void *level_b(unsigned k, int depth)
{
    void *block = next(k, depth);
    visits_b += 2;
    return block;
}

static long parse_positive(const char *arg, const char *what, long max)
{
    char *end;
    errno = 0;
    long value = strtol(arg, &end, 10);
    if (errno != 0 || *arg == '\0' || *end != '\0' || value < 1 || value > max) {
        fprintf(stderr, "scale: %s must be an integer in 1..%ld, not '%s'\n", what, max, arg);
        exit(2);
    }
    return value;
}

static void wait_line(void)
{
    char c;
    ssize_t n;
    while ((n = read(STDIN_FILENO, &c, 1)) == 1 && c != '\n')
        ;
    if (n < 0) {
        perror("scale: read");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <stacks> <per_stack>\n", argv[0]);
        return 2;
    }
    long stacks = parse_positive(argv[1], "stacks", MAX_STACKS);
    long per_stack = parse_positive(argv[2], "per_stack", 1L << 20);
    blocks = calloc((size_t)(stacks * per_stack), sizeof *blocks);
    if (blocks == NULL) {
        perror("scale: calloc");
        return 1;
    }

    printf("ready pid=%d\n", (int)getpid());
    fflush(stdout);
    wait_line();

    uint64_t bytes = 0;
    for (long k = 0; k < stacks; k++)
        for (long j = 0; j < per_stack; j++) {
            next((unsigned)k, 0);
            bytes += 16 + (unsigned)k % 49;
        }
    printf("done allocs=%ld stacks=%ld bytes=%llu\n", next_block, stacks,
           (unsigned long long)bytes);
    fflush(stdout);

    wait_line();
    return 0;
}
