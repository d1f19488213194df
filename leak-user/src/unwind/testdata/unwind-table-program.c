
        #include <stdio.h>
        __attribute__((noipa)) long leaf(long x) { return x * 2 + 1; }
        __attribute__((noipa)) long work(long a, long b, long c, long d, long e, long f) {
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
        int main(int argc, char **argv) {
            (void)argv;
            printf("%ld\n", work(argc * 40, 2, 3, 4, 5, 6));
            return 0;
        }
    