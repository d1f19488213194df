/*
 * Reachability scans (tests/tests/suite/reachability.rs). Every block size is a multiple of 16:
 * glibc's top-chunk pointer then points at a block's end, never into it. Each function below
 * allocates from one stack:
 *  - lose_overwritten: 10 x 1024, each pointer overwrites the previous one in a global
 *                                          => 9 unreachable (9216 bytes), 1 reachable;
 *  - lose_parent / lose_child: 5 parents of 64 bytes, each holding a child of 256 bytes; the
 *    parents are dropped                   => parents 320 bytes lost, children 1280 indirect;
 *  - grow_list: a linked list from a global, 20 nodes of 48 bytes         => reachable;
 *  - cache_put: a global array of 16 x 512 bytes                          => reachable;
 *  - keep_interior: 8 x 128, only a pointer to the middle of each kept    => reachable;
 *  - stack_thread_alloc: 4 x 208 held only in a blocked thread's stack    => reachable;
 *  - register_thread_alloc: 1 x 336, held only in r12 of a thread blocked in pause()
 *    (memory holds the pointer xor-ed, which is no pointer)               => reachable;
 *  - tls_thread_alloc: 1 x 400, held only in a __thread variable of a blocked thread
 *                                                                         => reachable;
 *  - lose_in_freed: 5 x 80 from main, 5 x 144 from a thread (its own glibc arena), each
 *    pointer left only in memory freed since: 3 in small chunks glibc keeps in its per-thread
 *    cache (tcache), 2 in a 2048-byte chunk it bins or merges into the top chunk
 *                                                                         => unreachable.
 * Threads stay blocked until killed; main scrubs its dead stack frames before sleeping.
 */
#include "common.h"
#include <pthread.h>
#include <stdint.h>

#define HIDE_KEY 0x5a5a5a5a5a5a5a5aULL

void *volatile holder;
void *list_head;
void *cache[16];
void *interior[8];
__thread void *volatile tls_slot;
static int never_fd[2];

struct node {
    struct node *next;
    char payload[40];
};

struct parent {
    void *child;
    char payload[56];
};

/* A thread tells main it is set up through the pipe main passed it. */
static void sem_post_like(void *arg)
{
    int *fds = arg;
    if (write(fds[1], "x", 1) != 1)
        fail("write");
}

static void sem_wait_like(int *fds)
{
    char c;
    if (read(fds[0], &c, 1) != 1)
        fail("read");
    close(fds[0]);
    close(fds[1]);
}

NOINLINE void scrub_stack(void)
{
    volatile char dead[16384];
    for (size_t i = 0; i < sizeof dead; i++)
        dead[i] = 0;
}

NOINLINE void lose_overwritten(void)
{
    for (int i = 0; i < 10; i++)
        holder = malloc(1024); /* @line lose_overwritten */
}

NOINLINE void *lose_child(void)
{
    return malloc(256); /* @line lose_child */
}

NOINLINE void lose_parent(void)
{
    for (int i = 0; i < 5; i++) {
        struct parent *p = malloc(sizeof *p); /* @line lose_parent */
        p->child = lose_child();
        memset(p->payload, 0, sizeof p->payload);
    }
}

NOINLINE void grow_list(void)
{
    for (int i = 0; i < 20; i++) {
        struct node *n = malloc(sizeof *n); /* @line grow_list */
        memset(n, 0, sizeof *n);
        n->next = list_head;
        list_head = n;
    }
}

NOINLINE void cache_put(void)
{
    for (int i = 0; i < 16; i++)
        cache[i] = malloc(512); /* @line cache_put */
}

NOINLINE void keep_interior(void)
{
    for (int i = 0; i < 8; i++)
        interior[i] = (char *)malloc(128) + 64; /* @line keep_interior */
}

static void block_forever(void)
{
    char c;
    while (read(never_fd[0], &c, 1) != 0)
        ;
    sleep_forever();
}

NOINLINE void stack_thread_alloc(void *volatile *kept)
{
    for (int i = 0; i < 4; i++)
        kept[i] = malloc(208); /* @line stack_thread_alloc */
}

static void *stack_thread(void *arg)
{
    void *volatile kept[4];
    stack_thread_alloc(kept);
    scrub_stack();
    sem_post_like(arg);
    block_forever();
    return NULL;
}

NOINLINE uintptr_t register_thread_alloc(void)
{
    return (uintptr_t)malloc(336) ^ HIDE_KEY; /* @line register_thread_alloc */
}

static void *register_thread(void *arg)
{
    volatile uintptr_t hidden = register_thread_alloc();
    scrub_stack();
    sem_post_like(arg);
    /* The only copy of the pointer: r12, while pause() blocks (it keeps r12). */
    __asm__ volatile("mov %0, %%r12\n\t"
                     "xor %1, %%r12\n\t"
                     "1: mov $34, %%eax\n\t"
                     "syscall\n\t"
                     "jmp 1b\n\t"
                     :
                     : "r"((uintptr_t)hidden), "r"((uintptr_t)HIDE_KEY)
                     : "r12", "rax", "rcx", "r11", "memory");
    return NULL;
}

NOINLINE uintptr_t tls_thread_alloc(void)
{
    return (uintptr_t)malloc(400) ^ HIDE_KEY; /* @line tls_thread_alloc */
}

static void *tls_thread(void *arg)
{
    volatile uintptr_t hidden = tls_thread_alloc();
    tls_slot = (void *)(hidden ^ HIDE_KEY);
    hidden = 0;
    scrub_stack();
    sem_post_like(arg);
    block_forever();
    return tls_slot;
}

/* The freed chunks keep their contents past glibc's own list pointers (two words, four in a
 * large bin): the pointers are stored further in. */
NOINLINE void lose_in_freed(size_t size)
{
    /* volatile: stores to memory about to be freed are not dropped. */
    void *volatile *cells[3];
    for (int i = 0; i < 3; i++)
        cells[i] = calloc(6, sizeof(void *));
    void *volatile *big = calloc(256, sizeof(void *));
    /* Allocated after it, the blocks keep it out of the top chunk. */
    void *blocks[5];
    for (int i = 0; i < 5; i++)
        blocks[i] = malloc(size); /* @line lose_in_freed */
    for (int i = 0; i < 3; i++)
        cells[i][4] = blocks[i];
    big[6] = blocks[3];
    big[7] = blocks[4];
    for (int i = 0; i < 3; i++)
        free((void *)cells[i]);
    free((void *)big);
}

static void *freed_thread(void *arg)
{
    lose_in_freed(144);
    scrub_stack();
    sem_post_like(arg);
    block_forever();
    return NULL;
}

int main(void)
{
    print_allocator_addresses();
    if (pipe(never_fd) != 0)
        fail("pipe");
    out("ready\n");
    wait_go();
    lose_overwritten();
    lose_parent();
    grow_list();
    cache_put();
    keep_interior();
    void *(*threads[])(void *) = { stack_thread, register_thread, tls_thread, freed_thread };
    for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++) {
        int started[2];
        if (pipe(started) != 0)
            fail("pipe");
        pthread_t t;
        if (pthread_create(&t, NULL, threads[i], started) != 0)
            fail("pthread_create");
        sem_wait_like(started);
    }
    lose_in_freed(80);
    scrub_stack();
    out("done\n");
    sleep_forever();
}
