/*
 * Volume for the map-size limits (tests/tests/lifecycle.rs):
 *  - leak_many: 3000 blocks of 16 bytes from one stack;
 *  - leak_fanout: 100 blocks of 24 bytes, each from its own call site, so 100 distinct stacks.
 * 3000 + 100 outstanding blocks in 101 stacks.
 */
#include "common.h"

NOINLINE void leak_many(int n)
{
    for (int i = 0; i < n; i++)
        sink = malloc(16); /* @line leak_many */
}

/* One malloc call site per value of k, each on its own line: 100 call sites, 100 stacks. */
NOINLINE void leak_fanout(int k)
{
    switch (k) {
    case 0: sink = malloc(24); break;
    case 1: sink = malloc(24); break;
    case 2: sink = malloc(24); break;
    case 3: sink = malloc(24); break;
    case 4: sink = malloc(24); break;
    case 5: sink = malloc(24); break;
    case 6: sink = malloc(24); break;
    case 7: sink = malloc(24); break;
    case 8: sink = malloc(24); break;
    case 9: sink = malloc(24); break;
    case 10: sink = malloc(24); break;
    case 11: sink = malloc(24); break;
    case 12: sink = malloc(24); break;
    case 13: sink = malloc(24); break;
    case 14: sink = malloc(24); break;
    case 15: sink = malloc(24); break;
    case 16: sink = malloc(24); break;
    case 17: sink = malloc(24); break;
    case 18: sink = malloc(24); break;
    case 19: sink = malloc(24); break;
    case 20: sink = malloc(24); break;
    case 21: sink = malloc(24); break;
    case 22: sink = malloc(24); break;
    case 23: sink = malloc(24); break;
    case 24: sink = malloc(24); break;
    case 25: sink = malloc(24); break;
    case 26: sink = malloc(24); break;
    case 27: sink = malloc(24); break;
    case 28: sink = malloc(24); break;
    case 29: sink = malloc(24); break;
    case 30: sink = malloc(24); break;
    case 31: sink = malloc(24); break;
    case 32: sink = malloc(24); break;
    case 33: sink = malloc(24); break;
    case 34: sink = malloc(24); break;
    case 35: sink = malloc(24); break;
    case 36: sink = malloc(24); break;
    case 37: sink = malloc(24); break;
    case 38: sink = malloc(24); break;
    case 39: sink = malloc(24); break;
    case 40: sink = malloc(24); break;
    case 41: sink = malloc(24); break;
    case 42: sink = malloc(24); break;
    case 43: sink = malloc(24); break;
    case 44: sink = malloc(24); break;
    case 45: sink = malloc(24); break;
    case 46: sink = malloc(24); break;
    case 47: sink = malloc(24); break;
    case 48: sink = malloc(24); break;
    case 49: sink = malloc(24); break;
    case 50: sink = malloc(24); break;
    case 51: sink = malloc(24); break;
    case 52: sink = malloc(24); break;
    case 53: sink = malloc(24); break;
    case 54: sink = malloc(24); break;
    case 55: sink = malloc(24); break;
    case 56: sink = malloc(24); break;
    case 57: sink = malloc(24); break;
    case 58: sink = malloc(24); break;
    case 59: sink = malloc(24); break;
    case 60: sink = malloc(24); break;
    case 61: sink = malloc(24); break;
    case 62: sink = malloc(24); break;
    case 63: sink = malloc(24); break;
    case 64: sink = malloc(24); break;
    case 65: sink = malloc(24); break;
    case 66: sink = malloc(24); break;
    case 67: sink = malloc(24); break;
    case 68: sink = malloc(24); break;
    case 69: sink = malloc(24); break;
    case 70: sink = malloc(24); break;
    case 71: sink = malloc(24); break;
    case 72: sink = malloc(24); break;
    case 73: sink = malloc(24); break;
    case 74: sink = malloc(24); break;
    case 75: sink = malloc(24); break;
    case 76: sink = malloc(24); break;
    case 77: sink = malloc(24); break;
    case 78: sink = malloc(24); break;
    case 79: sink = malloc(24); break;
    case 80: sink = malloc(24); break;
    case 81: sink = malloc(24); break;
    case 82: sink = malloc(24); break;
    case 83: sink = malloc(24); break;
    case 84: sink = malloc(24); break;
    case 85: sink = malloc(24); break;
    case 86: sink = malloc(24); break;
    case 87: sink = malloc(24); break;
    case 88: sink = malloc(24); break;
    case 89: sink = malloc(24); break;
    case 90: sink = malloc(24); break;
    case 91: sink = malloc(24); break;
    case 92: sink = malloc(24); break;
    case 93: sink = malloc(24); break;
    case 94: sink = malloc(24); break;
    case 95: sink = malloc(24); break;
    case 96: sink = malloc(24); break;
    case 97: sink = malloc(24); break;
    case 98: sink = malloc(24); break;
    case 99: sink = malloc(24); break;
    default:
        fail("leak_fanout: k out of range");
    }
}

NOINLINE void run_many(void)
{
    leak_many(3000);
    for (int k = 0; k < 100; k++)
        leak_fanout(k);
    sink = NULL;
}

int main(void)
{
    print_allocator_addresses();
    out("ready\n");
    wait_go();
    run_many();
    out("done\n");
    sleep_forever();
    return 0;
}
