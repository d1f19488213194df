/*
 * Allocations and frees on different threads (expected numbers in tests/tests/threads.rs):
 *  1. thread A (thread_alloc_blocks) allocates 100 x 128 bytes; after it ended, thread B
 *     (thread_free_half) frees the 50 blocks with an even index      => 50 x 128 outstanding;
 *  2. a producer thread (producer_alloc) allocates 200 x 96 bytes and hands every pointer to a
 *     consumer thread through a pipe while both run; the consumer frees every other one
 *                                                                     => 100 x 96 outstanding;
 *  3. 4 threads at once (worker_alloc) each allocate 250 x 32 bytes and free 50 of their own
 *                                                                     => 800 x 32 outstanding;
 *  4. the main thread frees blocks a worker thread allocated (main_frees_foreign): the worker
 *     (foreign_alloc) allocates 40 x 48 bytes, main frees all 40     => nothing outstanding.
 */
#include "common.h"
#include <pthread.h>

#define A_BLOCKS 100
#define PRODUCED 200
#define WORKERS 4
#define WORKER_BLOCKS 250
#define WORKER_FREES 50
#define FOREIGN_BLOCKS 40

static void *a_blocks[A_BLOCKS];
static void *foreign_blocks[FOREIGN_BLOCKS];
static int pipe_fds[2];

NOINLINE void thread_alloc_blocks(void)
{
    for (int i = 0; i < A_BLOCKS; i++)
        a_blocks[i] = malloc(128); /* @line thread_alloc_blocks */
    sink = a_blocks[0];
}

static void *thread_a_main(void *arg)
{
    (void)arg;
    thread_alloc_blocks();
    return NULL;
}

NOINLINE void thread_free_half(void)
{
    for (int i = 0; i < A_BLOCKS; i += 2) {
        free(a_blocks[i]);
        a_blocks[i] = NULL;
    }
    sink = NULL;
}

static void *thread_b_main(void *arg)
{
    (void)arg;
    thread_free_half();
    return NULL;
}

static void write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            fail("pipe write");
        p += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            fail("pipe read");
        p += r;
        n -= (size_t)r;
    }
}

NOINLINE void producer_alloc(void)
{
    for (int i = 0; i < PRODUCED; i++) {
        void *p = malloc(96); /* @line producer_alloc */
        sink = p;
        write_all(pipe_fds[1], &p, sizeof p);
    }
}

static void *producer_main(void *arg)
{
    (void)arg;
    producer_alloc();
    return NULL;
}

NOINLINE void consumer_free(void)
{
    for (int i = 0; i < PRODUCED; i++) {
        void *p;
        read_all(pipe_fds[0], &p, sizeof p);
        if (i % 2 == 1)
            free(p);
    }
    sink = NULL;
}

static void *consumer_main(void *arg)
{
    (void)arg;
    consumer_free();
    return NULL;
}

static pthread_barrier_t start_line;

NOINLINE void worker_alloc(void)
{
    void *mine[WORKER_BLOCKS];
    for (int i = 0; i < WORKER_BLOCKS; i++)
        mine[i] = malloc(32); /* @line worker_alloc */
    for (int i = 0; i < WORKER_FREES; i++)
        free(mine[i * 5]);
    sink = mine[1];
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&start_line);
    worker_alloc();
    return NULL;
}

NOINLINE void foreign_alloc(void)
{
    for (int i = 0; i < FOREIGN_BLOCKS; i++)
        foreign_blocks[i] = malloc(48);
    sink = foreign_blocks[0];
}

static void *foreign_main(void *arg)
{
    (void)arg;
    foreign_alloc();
    return NULL;
}

NOINLINE void main_frees_foreign(void)
{
    for (int i = 0; i < FOREIGN_BLOCKS; i++)
        free(foreign_blocks[i]);
    sink = NULL;
}

static void run(void *(*fn)(void *))
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL) != 0)
        fail("pthread_create");
    if (pthread_join(t, NULL) != 0)
        fail("pthread_join");
}

NOINLINE void run_threads(void)
{
    /* 1. allocate on A, free half on B */
    run(thread_a_main);
    run(thread_b_main);

    /* 2. producer and consumer at the same time */
    if (pipe(pipe_fds) != 0)
        fail("pipe");
    pthread_t prod, cons;
    if (pthread_create(&cons, NULL, consumer_main, NULL) != 0 ||
        pthread_create(&prod, NULL, producer_main, NULL) != 0)
        fail("pthread_create");
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);

    /* 3. concurrent workers */
    pthread_t workers[WORKERS];
    pthread_barrier_init(&start_line, NULL, WORKERS);
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&workers[i], NULL, worker_main, NULL) != 0)
            fail("pthread_create");
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);

    /* 4. a worker allocates, main frees */
    run(foreign_main);
    main_frees_foreign();
    sink = NULL;
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    run_threads();
    out("done\n");
    sleep_forever();
    return 0;
}
