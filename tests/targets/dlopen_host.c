/*
 * Loads a plugin after leaktrace attached: prints `ready`, waits for a line, dlopen()s argv[1]
 * (whose constructor leaks), calls its plugin_leak(), prints `dlopen_us N` (how long dlopen
 * took) and `done`, then sleeps; with a second argument `loop`, it closes and opens the plugin
 * again and again instead of sleeping. Self-contained (built with glibc and with musl).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

__attribute__((noinline)) void *load_plugin(const char *path)
{
    void *handle = dlopen(path, RTLD_NOW); /* @line load_plugin */
    __asm__ volatile("" ::: "memory");
    return handle;
}

__attribute__((noinline)) void call_plugin(void (*leak)(void))
{
    leak(); /* @line call_plugin */
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    char line[16];
    if (argc < 2)
        return 2;
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    long start = now_us();
    void *handle = load_plugin(argv[1]); /* @line main */
    long took = now_us() - start;
    if (!handle) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    void (*leak)(void) = (void (*)(void))dlsym(handle, "plugin_leak");
    if (!leak)
        return 1;
    call_plugin(leak); /* @line main_call */
    printf("dlopen_us %ld\ndone\n", took);
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "loop") == 0) {
        for (;;) {
            dlclose(handle);
            handle = load_plugin(argv[1]);
            if (!handle)
                return 1;
        }
    }
    for (;;)
        pause();
}
