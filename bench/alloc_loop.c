/*
 * alloc_loop: the workload `cargo xtask bench` times, untraced and under leaktrace.
 *
 * Usage: alloc_loop <pairs> <threads>
 *
 * Each thread keeps 64 live blocks and does <pairs> iterations of: free a random one of its
 * blocks, then malloc a new one of a random size in 16..4096 bytes. Every iteration is exactly
 * one malloc and one free. The random numbers come from a xorshift generator with a fixed seed
 * per thread, so every run does the same work.
 *
 * Protocol (stdin/stdout are pipes to the benchmark driver):
 *
 *   1. Start the threads, let each allocate its 64 initial blocks, then print `ready` (with
 *      the pid) and wait for one line on stdin: the driver attaches the tracer in between, so
 *      attach time is not measured. The initial blocks predate the tracer.
 *   2. Run the loop on all threads at once, timed with CLOCK_MONOTONIC from their release to
 *      the last thread's end, and print `ns_per_pair=<float> loop_bytes=<n> live_bytes=<n>`:
 *      that wall time divided by <pairs>, the iterations each thread did, then the bytes the
 *      loop malloc'd and the bytes of the blocks still live (all threads; what a sampling
 *      tracer's estimates are checked against). With one thread ns_per_pair is the total wall
 *      time per pair; with N threads it is the wall time per pair per thread (equal to the
 *      one-thread figure when the threads scale perfectly).
 *   3. Wait for one more line (or EOF) on stdin before freeing the remaining blocks and
 *      exiting, so the driver can stop the tracer while every surviving block (the last 64
 *      per thread) is still outstanding.
 *
 * Build: gcc -O2 -g -pthread -o alloc_loop alloc_loop.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LIVE_BLOCKS 64
#define MIN_SIZE 16
#define MAX_SIZE 4096
#define MAX_THREADS 64

struct worker {
    pthread_t thread;
    unsigned index;
    long pairs;
    uint64_t rng;
    char *blocks[LIVE_BLOCKS];
    size_t sizes[LIVE_BLOCKS];
    uint64_t loop_bytes;
};

static pthread_barrier_t initialized; /* workers have their initial blocks (+ main) */
static pthread_barrier_t start;       /* released by main after the start line (+ main) */

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static size_t random_size(uint64_t *rng)
{
    return MIN_SIZE + (size_t)(xorshift64(rng) % (MAX_SIZE - MIN_SIZE + 1));
}

static void allocate(struct worker *w, unsigned slot)
{
    size_t size = random_size(&w->rng);
    char *block = malloc(size);
    if (block == NULL) {
        fprintf(stderr, "alloc_loop: malloc(%zu) failed\n", size);
        exit(1);
    }
    /* Touch the block so the allocation cannot be optimised away. */
    block[0] = (char)size;
    w->blocks[slot] = block;
    w->sizes[slot] = size;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    for (unsigned i = 0; i < LIVE_BLOCKS; i++)
        allocate(w, i);
    pthread_barrier_wait(&initialized);
    pthread_barrier_wait(&start);

    for (long i = 0; i < w->pairs; i++) {
        unsigned slot = (unsigned)(xorshift64(&w->rng) % LIVE_BLOCKS);
        free(w->blocks[slot]);
        allocate(w, slot);
        w->loop_bytes += w->sizes[slot];
    }
    return NULL;
}

static long parse_positive(const char *arg, const char *what, long max)
{
    char *end;
    errno = 0;
    long value = strtol(arg, &end, 10);
    if (errno != 0 || *arg == '\0' || *end != '\0' || value < 1 || value > max) {
        fprintf(stderr, "alloc_loop: %s must be an integer in 1..%ld, not '%s'\n", what, max,
                arg);
        exit(2);
    }
    return value;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <pairs> <threads>\n", argv[0]);
        return 2;
    }
    long pairs = parse_positive(argv[1], "pairs", 1L << 40);
    unsigned threads = (unsigned)parse_positive(argv[2], "threads", MAX_THREADS);

    static struct worker workers[MAX_THREADS];
    pthread_barrier_init(&initialized, NULL, threads + 1);
    pthread_barrier_init(&start, NULL, threads + 1);
    for (unsigned t = 0; t < threads; t++) {
        workers[t].index = t;
        workers[t].pairs = pairs;
        workers[t].rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(t + 1) * 0x2545f4914f6cdd1dULL);
        int err = pthread_create(&workers[t].thread, NULL, work, &workers[t]);
        if (err != 0) {
            fprintf(stderr, "alloc_loop: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    pthread_barrier_wait(&initialized);

    /* Read stdin unbuffered (read(2), not stdio), so no stdio buffer is allocated while the
       tracer is attached. */
    printf("ready pid=%d\n", (int)getpid());
    fflush(stdout);
    char c;
    ssize_t n;
    while ((n = read(STDIN_FILENO, &c, 1)) == 1 && c != '\n')
        ;
    if (n < 0) {
        perror("alloc_loop: read");
        return 1;
    }

    double begin = now_ns();
    pthread_barrier_wait(&start);
    for (unsigned t = 0; t < threads; t++)
        pthread_join(workers[t].thread, NULL);
    double elapsed = now_ns() - begin;

    uint64_t loop_bytes = 0, live_bytes = 0;
    for (unsigned t = 0; t < threads; t++) {
        loop_bytes += workers[t].loop_bytes;
        for (int i = 0; i < LIVE_BLOCKS; i++)
            live_bytes += workers[t].sizes[i];
    }
    printf("ns_per_pair=%.3f loop_bytes=%llu live_bytes=%llu\n", elapsed / (double)pairs,
           (unsigned long long)loop_bytes, (unsigned long long)live_bytes);
    fflush(stdout);

    while ((n = read(STDIN_FILENO, &c, 1)) == 1 && c != '\n')
        ;
    for (unsigned t = 0; t < threads; t++)
        for (int i = 0; i < LIVE_BLOCKS; i++)
            free(workers[t].blocks[i]);
    return 0;
}
