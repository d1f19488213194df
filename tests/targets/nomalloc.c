/*
 * A static executable without libc and so without any allocator: `_start` prints `ready` with a
 * raw write(2) and then pauses forever. Build: gcc -static -nostdlib -fno-stack-protector.
 */
static long raw_syscall3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

#define SYS_write 1
#define SYS_pause 34

__attribute__((noreturn, used)) void _start(void)
{
    static const char msg[] = "ready\n";
    raw_syscall3(SYS_write, 1, (long)msg, sizeof msg - 1);
    for (;;)
        raw_syscall3(SYS_pause, 0, 0, 0);
}
