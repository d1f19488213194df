//go:build cgo

#include <stddef.h>
#include "_cgo_export.h"

extern void *__libc_malloc(size_t);

// Every malloc of the process comes here (the executable's definition interposes libc's):
// the test's one calls back into Go, which records its stack.
void *malloc(size_t size)
{
	if (size == 4242)
		mallocCalled();
	return __libc_malloc(size);
}

void *malloc_address(void)
{
	return (void *)malloc;
}
