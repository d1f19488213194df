/*
 * A command for `leaktrace run` (tests/tests/launch.rs). On stderr it first says who it is:
 * `launched pid=N uid=U gid=G groups=N home=H user=U secret=S`, then leaks LEAK_COUNT blocks
 * of LEAK_SIZE bytes from one call site and sleeps until killed.
 *
 * Arguments: `ignore-term` ignores SIGTERM;
 *            `reexec`      first execs itself again (/proc/self/exe) with `reexeced`;
 *            `exit`        exits after leaking.
 */
#include "common.h"

#include <grp.h>

#define LEAK_COUNT 7
#define LEAK_SIZE 3001

NOINLINE void launched_leak(void)
{
    for (int i = 0; i < LEAK_COUNT; i++)
        sink = malloc(LEAK_SIZE); /* @line launched_leak */
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *value = getenv(name);
    return value ? value : fallback;
}

static void say_who(void)
{
    char buf[512];
    snprintf(buf, sizeof buf,
             "launched pid=%d uid=%d gid=%d groups=%d home=%s user=%s secret=%s\n",
             (int)getpid(), (int)getuid(), (int)getgid(), getgroups(0, NULL),
             env_or("HOME", "-"), env_or("USER", "-"), env_or("LEAKTRACE_TEST_SECRET", "-"));
    ssize_t n = write(2, buf, strlen(buf));
    (void)n;
}

int main(int argc, char **argv)
{
    if (has_arg(argc, argv, "reexec") && !has_arg(argc, argv, "reexeced")) {
        char *again[] = {argv[0], "reexeced", NULL};
        execv("/proc/self/exe", again);
        fail("execv /proc/self/exe");
    }
    if (has_arg(argc, argv, "ignore-term"))
        signal(SIGTERM, SIG_IGN);
    say_who();
    launched_leak();
    sink = NULL;
    if (has_arg(argc, argv, "exit"))
        exit(0);
    sleep_forever();
    return 0;
}
