//go:build cgo

package main

// #include <stdlib.h>
// void *malloc_address(void);
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// The Go stack when malloc was called with the size malloc.c watches for.
var mallocStack []uintptr

//export mallocCalled
func mallocCalled() {
	pcs := make([]uintptr, 64)
	mallocStack = pcs[:runtime.Callers(1, pcs)]
}

//go:noinline
func cmalloc() unsafe.Pointer {
	return C.malloc(4242) // L_CMALLOC
}

func reportCgo() {
	C.free(cmalloc())
	report("cmalloc", mallocStack)
	fmt.Printf("cfunc malloc=%p\n", C.malloc_address())
}
