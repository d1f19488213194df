/*
 * A plugin built with -O2 -fomit-frame-pointer and dlopen'ed by dlopen_host.c while traced. Its
 * constructor leaks at once, before dlopen returns: the unwind rows must be in place by then.
 */
#include <stdlib.h>

void *volatile plugin_sink;

__attribute__((noinline)) void ctor_leak(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        plugin_sink = malloc(size); /* @line ctor_leak */
    __asm__ volatile("" ::: "memory"); /* keeps the call above from being a tail call */
}

__attribute__((constructor)) static void plugin_init(void)
{
    ctor_leak(3, 1111); /* @line plugin_init */
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void plugin_alloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        plugin_sink = malloc(size); /* @line plugin_alloc */
    __asm__ volatile("" ::: "memory");
}

void plugin_leak(void)
{
    plugin_alloc(4, 2222); /* @line plugin_leak */
    __asm__ volatile("" ::: "memory");
}
