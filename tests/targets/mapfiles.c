/*
 * A target that maps many distinct files executable (tests/tests/hostile_targets.rs).
 *
 *   mapfiles DIR ROUNDS FILES: after `go`, ROUNDS times: creates FILES distinct files of one page
 *   in DIR, maps each PROT_READ|PROT_EXEC, leaks from leak_round (ROUND+1 blocks of 96 bytes),
 *   lets the tracer see them all mapped (1.5 s), then unmaps and deletes them. Then leak_after
 *   (3 blocks of 160 bytes), `done`, and exit.
 *
 *   mapfiles DIR sparse BYTES: after `go`, maps the first page of a sparse file of BYTES bytes
 *   executable, leaks leak_round(0) (1 block of 96 bytes) and leak_after, keeps it mapped for
 *   1.5 s, `done`, and exit.
 */
#include "common.h"

#include <fcntl.h>

NOINLINE void leak_round(int round)
{
    for (int i = 0; i <= round; i++)
        sink = malloc(96); /* @line leak_round */
}

NOINLINE void leak_after(void)
{
    for (int i = 0; i < 3; i++)
        sink = malloc(160); /* @line leak_after */
}

static void file_name(char *buf, size_t len, const char *dir, int round, int i)
{
    snprintf(buf, len, "%s/object-%d-%d", dir, round, i);
}

/* One page, distinct per file so that no two files could be taken for one another. */
static void *map_new_file(const char *path, int round, int i)
{
    char page[4096];
    memset(page, 0xc3, sizeof page);
    snprintf(page, sizeof page, "object %d %d", round, i);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (fd < 0)
        fail("open");
    if (write(fd, page, sizeof page) != (ssize_t)sizeof page)
        fail("write");
    void *p = mmap(NULL, sizeof page, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        fail("mmap");
    close(fd);
    return p;
}

static void churn(const char *dir, int rounds, int files)
{
    void **maps = calloc((size_t)files, sizeof *maps);
    char path[4096];
    if (maps == NULL)
        fail("calloc");
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < files; i++) {
            file_name(path, sizeof path, dir, round, i);
            maps[i] = map_new_file(path, round, i);
        }
        leak_round(round);
        sleep_ms(1500);
        for (int i = 0; i < files; i++) {
            munmap(maps[i], 4096);
            file_name(path, sizeof path, dir, round, i);
            unlink(path);
        }
    }
    free(maps);
}

static void sparse(const char *dir, long long bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/sparse", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (fd < 0)
        fail("open");
    if (ftruncate(fd, bytes) != 0)
        fail("ftruncate");
    void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        fail("mmap");
    close(fd);
    leak_round(0);
    sleep_ms(1500);
    munmap(p, 4096);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        fail("usage: mapfiles DIR ROUNDS FILES | mapfiles DIR sparse BYTES");
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    if (strcmp(argv[2], "sparse") == 0)
        sparse(argv[1], atoll(argv[3]));
    else
        churn(argv[1], atoi(argv[2]), atoi(argv[3]));
    leak_after();
    out("done\n");
    return 0;
}
