/*
 * C++ allocations through every variant of operator new, with exact leaks (see
 * tests/tests/allocator_families.rs for the expected numbers) and transient allocations released
 * through every variant of operator delete (sized, aligned, nothrow, arrays) that must never be
 * reported. Built with g++ -O2 and linked with -ljemalloc, -ltcmalloc_minimal, -lmimalloc or
 * nothing (libstdc++'s operator new over glibc's malloc). Every leak is made in a loop from ONE
 * call site; lines marked `@line NAME` are the call lines the frame of NAME must point at. The leak
 * functions are extern "C" so that their frames are named without a parameter list.
 * Protocol: tests/targets/common.h.
 */
#include <new>

#include "common.h"

/* Plain objects: `new Obj` is operator new(120), `delete` the sized operator delete(p, 120). */
struct Obj {
    char data[120];
};

struct NothrowObj {
    char data[200];
};

/* Over-aligned: operator new(256, align_val_t(64)) and the sized, aligned operator delete. */
struct alignas(64) Aligned64 {
    char data[256];
};

/* A non-trivial destructor: new[] puts the element count (8 bytes) in front of the elements and
 * delete[] is the sized operator delete[](p, 5 * 40 + 8). */
struct WithDtor {
    char data[40];
    ~WithDtor() { sink = data; }
};

extern "C" {

NOINLINE void leak_new(int n)
{
    for (int i = 0; i < n; i++)
        sink = new Obj; /* @line leak_new */
}

NOINLINE void leak_new_array(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = new char[size]; /* @line leak_new_array */
}

NOINLINE void leak_new_nothrow(int n)
{
    for (int i = 0; i < n; i++)
        sink = new (std::nothrow) NothrowObj; /* @line leak_new_nothrow */
}

NOINLINE void leak_new_nothrow_array(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = new (std::nothrow) char[size]; /* @line leak_new_nothrow_array */
}

NOINLINE void leak_new_aligned(int n)
{
    for (int i = 0; i < n; i++)
        sink = new Aligned64; /* @line leak_new_aligned */
}

NOINLINE void leak_new_aligned_array(int n)
{
    for (int i = 0; i < n; i++)
        sink = new Aligned64[2]; /* @line leak_new_aligned_array */
}

NOINLINE void leak_new_dtor_array(int n)
{
    for (int i = 0; i < n; i++)
        sink = new WithDtor[5]; /* @line leak_new_dtor_array */
}

/* C's malloc in the same program goes to the same allocator. */
NOINLINE void leak_cxx_malloc(int n, size_t size)
{
    for (int i = 0; i < n; i++)
        sink = malloc(size); /* @line leak_cxx_malloc */
}

/* Every pointer is stored in `sink` before it is deleted: the compiler may not pair the new with
 * the delete away. */
NOINLINE void transient_cxx(int rounds)
{
    for (int i = 0; i < rounds; i++) {
        Obj *obj = new Obj;
        sink = obj;
        delete obj; /* sized: operator delete(void*, size_t) */

        char *bytes = new char[100 + i];
        sink = bytes;
        delete[] bytes; /* unsized: operator delete[](void*) */

        NothrowObj *nothrow_obj = new (std::nothrow) NothrowObj;
        sink = nothrow_obj;
        operator delete(nothrow_obj, std::nothrow);

        char *nothrow_bytes = new (std::nothrow) char[700];
        sink = nothrow_bytes;
        delete[] nothrow_bytes;

        Aligned64 *aligned = new Aligned64;
        sink = aligned;
        delete aligned; /* sized and aligned */

        Aligned64 *aligned_array = new Aligned64[2];
        sink = aligned_array;
        delete[] aligned_array; /* aligned */

        WithDtor *dtor_array = new WithDtor[5];
        sink = dtor_array;
        delete[] dtor_array; /* sized: operator delete[](void*, 208) */

        void *raw = operator new(64);
        sink = raw;
        operator delete(raw, 64); /* sized, called directly */

        void *c_block = malloc(333);
        sink = c_block;
        free(c_block);
    }
}

NOINLINE void run_leaks(void)
{
    leak_new(5); /* @line run_leaks */
    leak_new_array(3, 3000);
    leak_new_nothrow(4);
    leak_new_nothrow_array(2, 700);
    leak_new_aligned(3);
    leak_new_aligned_array(2);
    leak_new_dtor_array(2);
    leak_cxx_malloc(2, 333);
    transient_cxx(300);
    sink = NULL; /* keeps the last call from being a tail call */
}

} /* extern "C" */

typedef void *(*plain_new)(size_t);
typedef void *(*nothrow_new)(size_t, const std::nothrow_t &) noexcept;
typedef void *(*aligned_new)(size_t, std::align_val_t);

/* The operator new variants as this process resolves them: an allocator may define new and
 * new[] as one function (tcmalloc, mimalloc), and then a probe cannot tell them apart. */
static void print_operator_new_addresses(void)
{
    out_addr("new", (void *)static_cast<plain_new>(&::operator new));
    out_addr("new_array", (void *)static_cast<plain_new>(&::operator new[]));
    out_addr("new_nothrow", (void *)static_cast<nothrow_new>(&::operator new));
    out_addr("new_array_nothrow", (void *)static_cast<nothrow_new>(&::operator new[]));
    out_addr("new_aligned", (void *)static_cast<aligned_new>(&::operator new));
    out_addr("new_array_aligned", (void *)static_cast<aligned_new>(&::operator new[]));
}

int main(int argc, char **argv)
{
    print_allocator_addresses();
    print_operator_new_addresses();
    out("ready\n");
    wait_go();
    run_leaks(); /* @line main */
    out("done\n");
    if (has_arg(argc, argv, "exit"))
        exit(0);
    sleep_forever();
    return 0;
}
