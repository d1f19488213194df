/*
 * soak: the sustained-rate scenario of `cargo xtask bench`: a steady stream of malloc/free
 * pairs at a fixed rate for a long time, with a known number of blocks left outstanding, to
 * check that a tracer loses nothing it does not count.
 *
 * Usage: soak <allocs_per_second> <seconds> <threads>
 *
 * Each thread does its share of the rate in batches of one millisecond: a batch is
 * rate / threads / 1000 iterations of "free a random one of 64 slots (if it holds a block),
 * malloc 16..4096 bytes into it", and every LEAK_EVERY-th allocation is instead a block the
 * thread keeps for good. After a batch the thread sleeps until the next millisecond of its
 * schedule (absolute deadlines, so a late batch is caught up and the average rate holds when
 * the machine can sustain it). The loop runs for <seconds> of wall time: a machine that cannot
 * keep the rate (say, under a tracer) makes fewer allocations in that time, and the rate the
 * driver computes shows it. The slots start empty, so every block that is ever freed was
 * allocated in the traced loop.
 *
 * Protocol (stdin/stdout are pipes to the benchmark driver):
 *
 *   1. Start the threads, print `ready pid=<pid>` and wait for one line on stdin: the driver
 *      attaches the tracer.
 *   2. Run for <seconds>, then print `soak allocs=<n> frees=<n> outstanding=<n> elapsed_s=<f>`:
 *      the mallocs and frees the loop made, the loop's blocks still live (kept blocks plus
 *      filled slots), and the loop's wall time.
 *   3. Wait for one more line (or EOF), then exit without freeing anything.
 *
 * Build: gcc -O2 -g -pthread -o soak soak.c
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

#define SLOTS 64
#define MIN_SIZE 16
#define MAX_SIZE 4096
#define LEAK_EVERY 1000
#define MAX_THREADS 64

struct worker {
    pthread_t thread;
    long per_ms;
    double seconds;
    uint64_t rng;
    char *slots[SLOTS];
    char **kept;
    long kept_len, kept_cap;
    uint64_t allocs, frees;
};

static pthread_barrier_t start;

static uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static char *allocate(struct worker *w)
{
    size_t size = MIN_SIZE + (size_t)(xorshift64(&w->rng) % (MAX_SIZE - MIN_SIZE + 1));
    char *block = malloc(size);
    if (block == NULL) {
        fprintf(stderr, "soak: malloc(%zu) failed\n", size);
        exit(1);
    }
    block[0] = (char)size;
    w->allocs++;
    return block;
}

static void timespec_add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

static int timespec_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&start);
    struct timespec deadline, end, now;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    end = deadline;
    timespec_add_ns(&end, (long)(w->seconds * 1e9));
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!timespec_before(&now, &end))
            break;
        for (long i = 0; i < w->per_ms; i++) {
            /* kept[] was sized up front for the whole run: no allocation of the program's own
               in the loop. */
            if ((w->allocs + 1) % LEAK_EVERY == 0 && w->kept_len < w->kept_cap) {
                w->kept[w->kept_len++] = allocate(w);
                continue;
            }
            unsigned slot = (unsigned)(xorshift64(&w->rng) % SLOTS);
            if (w->slots[slot] != NULL) {
                free(w->slots[slot]);
                w->frees++;
            }
            w->slots[slot] = allocate(w);
        }
        timespec_add_ns(&deadline, 1000000L);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR)
            ;
    }
    return NULL;
}

static double parse_positive(const char *arg, const char *what, double max)
{
    char *end;
    errno = 0;
    double value = strtod(arg, &end);
    if (errno != 0 || *arg == '\0' || *end != '\0' || !(value > 0) || value > max) {
        fprintf(stderr, "soak: %s must be a number in (0, %g], not '%s'\n", what, max, arg);
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
        perror("soak: read");
        exit(1);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s <allocs_per_second> <seconds> <threads>\n", argv[0]);
        return 2;
    }
    double rate = parse_positive(argv[1], "allocs_per_second", 1e9);
    double seconds = parse_positive(argv[2], "seconds", 86400);
    unsigned threads = (unsigned)parse_positive(argv[3], "threads", MAX_THREADS);
    long per_ms = (long)(rate / threads / 1000.0 + 0.5);
    if (per_ms < 1)
        per_ms = 1;

    static struct worker workers[MAX_THREADS];
    pthread_barrier_init(&start, NULL, threads + 1);
    for (unsigned t = 0; t < threads; t++) {
        struct worker *w = &workers[t];
        w->per_ms = per_ms;
        w->seconds = seconds;
        w->rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(t + 1) * 0x2545f4914f6cdd1dULL);
        /* At most one batch per millisecond of the run. */
        w->kept_cap = ((long)(seconds * 1000.0) + 1) * per_ms / LEAK_EVERY + 1;
        w->kept = calloc((size_t)w->kept_cap, sizeof *w->kept);
        if (w->kept == NULL) {
            perror("soak: calloc");
            return 1;
        }
        int err = pthread_create(&w->thread, NULL, work, w);
        if (err != 0) {
            fprintf(stderr, "soak: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }

    printf("ready pid=%d\n", (int)getpid());
    fflush(stdout);
    wait_line();

    double begin = now_s();
    pthread_barrier_wait(&start);
    for (unsigned t = 0; t < threads; t++)
        pthread_join(workers[t].thread, NULL);
    double elapsed = now_s() - begin;

    uint64_t allocs = 0, frees = 0, outstanding = 0;
    for (unsigned t = 0; t < threads; t++) {
        allocs += workers[t].allocs;
        frees += workers[t].frees;
        outstanding += (uint64_t)workers[t].kept_len;
        for (int i = 0; i < SLOTS; i++)
            outstanding += workers[t].slots[i] != NULL;
    }
    printf("soak allocs=%llu frees=%llu outstanding=%llu elapsed_s=%.3f\n",
           (unsigned long long)allocs, (unsigned long long)frees,
           (unsigned long long)outstanding, elapsed);
    fflush(stdout);

    wait_line();
    return 0;
}
