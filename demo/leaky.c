/*
 * leaky: a small fake "server" for trying leaktrace on.
 *
 * It serves one fake request every ~25 ms for 20 seconds (or for the number of seconds given
 * as its only argument), then exits 0. Per request it:
 *
 *   - parses the request from a strdup'ed copy and frees it again (transient: never a leak);
 *   - records the client in a session cache of 64 entries, 256 bytes each, allocated with
 *     calloc until the cache is full and then reused in place (steady: 16 KiB, no growth);
 *   - keeps a 1 KiB copy of the request in remember_request() and forgets to free the
 *     previous one (a growing leak, 40 KiB/s);
 *   - every 4th request, logs the client name with a 64-byte strdup in log_client_name() and
 *     never frees it (a slower growing leak).
 *
 * Build with optimisation and without frame pointers, e.g. `gcc -O2 -g -o leaky leaky.c`:
 * leaktrace unwinds such code through its .eh_frame tables.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_PERIOD_NS (25 * 1000 * 1000L)
#define DEFAULT_SECONDS 20
#define CACHE_SLOTS 64
#define REQUEST_COPY_BYTES 1024
#define CLIENT_NAME_BYTES 64

struct request {
    char method[8];
    char path[64];
    char client[48];
};

struct session {
    unsigned long id;
    unsigned long hits;
    char client[48];
    char path[64];
    char pad[256 - 2 * sizeof(unsigned long) - 48 - 64];
};
_Static_assert(sizeof(struct session) == 256, "a session is 256 bytes");

static struct session *cache[CACHE_SLOTS];
static unsigned long cache_next;

/* Where the leaks end up: each store drops the previous pointer on the floor. */
static char *volatile last_request;
static char *volatile last_client_name;

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* Transient: a strdup'ed copy of the request line, freed before returning. */
__attribute__((noinline, noclone)) static int parse_request(const char *line, struct request *req)
{
    char *copy = strdup(line);
    if (copy == NULL)
        return -1;
    char *save = NULL;
    const char *method = strtok_r(copy, " ", &save);
    const char *path = strtok_r(NULL, " ", &save);
    const char *client = strtok_r(NULL, " ", &save);
    int ok = method != NULL && path != NULL && client != NULL;
    if (ok) {
        snprintf(req->method, sizeof req->method, "%s", method);
        snprintf(req->path, sizeof req->path, "%s", path);
        snprintf(req->client, sizeof req->client, "%s", client);
    }
    free(copy);
    return ok ? 0 : -1;
}

/* Steady: at most CACHE_SLOTS sessions are ever allocated; after that slots are reused. */
__attribute__((noinline, noclone)) static void cache_session(unsigned long id, const struct request *req)
{
    unsigned long slot = cache_next++ % CACHE_SLOTS;
    struct session *s = cache[slot];
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL)
            return;
        cache[slot] = s;
    } else {
        memset(s, 0, sizeof *s);
    }
    s->id = id;
    s->hits = 1;
    snprintf(s->client, sizeof s->client, "%s", req->client);
    snprintf(s->path, sizeof s->path, "%s", req->path);
}

/* Growing leak: keeps the latest request for "debugging" and never frees the previous one. */
__attribute__((noinline, noclone)) static void remember_request(const char *line)
{
    char *copy = malloc(REQUEST_COPY_BYTES);
    if (copy == NULL)
        return;
    snprintf(copy, REQUEST_COPY_BYTES, "%s", line);
    last_request = copy;
}

/* Slower growing leak: a 64-byte strdup (63 characters and the NUL) that is never freed. */
__attribute__((noinline, noclone)) static void log_client_name(const struct request *req)
{
    char name[CLIENT_NAME_BYTES];
    memset(name, '.', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    memcpy(name, req->client, strnlen(req->client, sizeof req->client));
    last_client_name = strdup(name);
}

static void handle_request(unsigned long id)
{
    static const char *const paths[] = {"/", "/login", "/api/items", "/api/cart", "/static/app.js"};
    char line[128];
    struct request req;

    snprintf(line, sizeof line, "GET %s client-%03lu", paths[id % 5], id % 97);
    if (parse_request(line, &req) != 0)
        return;
    cache_session(id, &req);
    remember_request(line);
    if (id % 4 == 0)
        log_client_name(&req);
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    double limit = DEFAULT_SECONDS;
    if (argc > 1) {
        limit = strtod(argv[1], NULL);
        if (!(limit > 0)) {
            fprintf(stderr, "usage: %s [seconds]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    fprintf(stderr, "leaky: pid %d serving fake requests for %.0fs\n", (int)getpid(), limit);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    unsigned long id = 0;
    while (!stopping && seconds_since(&start) < limit) {
        handle_request(id++);
        struct timespec pause = {0, REQUEST_PERIOD_NS};
        nanosleep(&pause, NULL);
    }

    for (int i = 0; i < CACHE_SLOTS; i++)
        free(cache[i]);
    fprintf(stderr, "leaky: served %lu requests, exiting\n", id);
    return 0;
}
