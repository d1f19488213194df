/* Shapes of -O2 code whose stack height the prologue analysis must follow: callee-saved
 * pushes, large locals, early returns (epilogues in the middle of a function), a switch through
 * a jump table, a variable-length array and an over-aligned local (both force a frame pointer
 * even with -fomit-frame-pointer), and a call that does not return. */
#include <stdlib.h>
#include <string.h>

__attribute__((noipa)) long leaf(long x) { return x * 2 + 1; }

__attribute__((noipa)) long pushes(long a, long b, long c, long d, long e, long f) {
    volatile long buf[32];
    long s = 0;
    for (long i = 0; i < a; i++) {
        s += leaf(i) * b + c;
        s ^= leaf(s) + d;
        s += leaf(s ^ e) - f;
        buf[i & 31] = s;
    }
    return s + buf[s & 31] + a + b + c + d + e + f;
}

__attribute__((noipa)) long early(long a, long b) {
    if (a < 0)
        return leaf(b);
    long x = leaf(a);
    if (x > 1000)
        return x + leaf(x + b);
    long y = leaf(x + a);
    return x * y + leaf(b);
}

__attribute__((noipa)) long dispatch(int op, long a, long b) {
    long r;
    switch (op) {
    case 0: r = leaf(a) + b; break;
    case 1: r = leaf(b) - a; break;
    case 2: r = leaf(a * b); break;
    case 3: r = leaf(a) ^ leaf(b); break;
    case 4: r = leaf(a + 7) * b; break;
    case 5: r = leaf(b + 9) * a; break;
    case 6: r = leaf(a - b); break;
    default: r = -1; break;
    }
    return r + leaf(r);
}

__attribute__((noipa)) long vla(int n) {
    char buf[n];
    memset(buf, 1, (size_t)n);
    long s = leaf(buf[n / 2]);
    return s + leaf(buf[0]);
}

__attribute__((noipa)) long aligned(long a) {
    char block[64] __attribute__((aligned(64)));
    memset(block, (int)a, sizeof block);
    return leaf(block[a & 63]) + leaf(a);
}

__attribute__((noipa)) void *checked(size_t n) {
    void *p = malloc(n);
    if (!p)
        abort();
    memset(p, 0, n);
    return p;
}

int main(int argc, char **argv) {
    (void)argv;
    long s = pushes(argc * 40, 2, 3, 4, 5, 6) + early(argc, 3) + dispatch(argc, 4, 5);
    s += vla(argc * 16) + aligned(argc);
    free(checked((size_t)argc * 8));
    return (int)(s & 1);
}
