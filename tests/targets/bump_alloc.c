/*
 * An allocator leaktrace does not know: a bump allocator with its own malloc, calloc, realloc
 * and free, built as a shared library and preloaded (see tests/tests/suite/allocator_families.rs).
 * Each block carries its size in a header so realloc can copy; free never reuses memory. Built
 * with -fno-builtin: gcc would turn calloc's malloc + memset into a call to calloc itself.
 */
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA (256UL << 20)
#define ALIGN 16UL

static char *arena;
static size_t used;

void *malloc(size_t n)
{
    if (!arena) {
        void *m = mmap(0, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return 0;
        arena = m;
    }
    size_t need = (n + ALIGN + ALIGN - 1) & ~(ALIGN - 1);
    if (need > ARENA - used)
        return 0;
    char *block = arena + used;
    used += need;
    *(size_t *)block = n;
    return block + ALIGN;
}

void free(void *p)
{
    (void)p;
}

void *calloc(size_t count, size_t size)
{
    void *p = malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *realloc(void *p, size_t n)
{
    void *q = malloc(n);
    if (p && q) {
        size_t old = *(size_t *)((char *)p - ALIGN);
        memcpy(q, p, old < n ? old : n);
    }
    return q;
}
