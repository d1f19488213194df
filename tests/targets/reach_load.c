/*
 * A target under load while leaktrace scans it (tests/tests/suite/reachability.rs): 4 threads
 * each push 100000 nodes of 32 bytes (churn_alloc) on their own list from a global, and pop and
 * free every 4th one at once. Every node still allocated stays on a list: none is ever lost.
 * Prints `sum S` (the values on the lists, which scans must not change), then `done`.
 */
#include "common.h"
#include <pthread.h>
#include <stdint.h>

#define THREADS 4
#define PUSHES 100000

struct node {
    struct node *next;
    uint64_t value;
    uint64_t pad[2];
};

struct node *heads[THREADS];

NOINLINE struct node *churn_alloc(void)
{
    return malloc(sizeof(struct node)); /* @line churn_alloc */
}

static void *worker(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    for (uint64_t i = 0; i < PUSHES; i++) {
        struct node *n = churn_alloc();
        n->value = i * THREADS + id;
        n->next = heads[id];
        heads[id] = n;
        if (i % 4 == 3) {
            struct node *top = heads[id];
            heads[id] = top->next;
            free(top);
        }
    }
    return NULL;
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    pthread_t threads[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++)
        if (pthread_create(&threads[t], NULL, worker, (void *)t) != 0)
            fail("pthread_create");
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    uint64_t sum = 0;
    for (int t = 0; t < THREADS; t++)
        for (struct node *n = heads[t]; n != NULL; n = n->next)
            sum += n->value;
    char line[64];
    snprintf(line, sizeof line, "sum %llu\n", (unsigned long long)sum);
    out(line);
    out("done\n");
    sleep_forever();
}
