// A cgo program for leaktrace's reachability scans (tests/tests/suite/reachability.rs).
//
// Protocol (as tests/targets/common.h): print `ready`, wait for one line on stdin, do the work,
// print `done`, then block reading stdin until killed.
//
//	keepC: 8 C blocks of 4096 bytes whose only pointers are in a Go heap object => reachable;
//	dropC: 5 C blocks of 2048 bytes whose pointers are dropped                 => unreachable.
package main

/*
#include <stdlib.h>
#include <string.h>

// Zeroes the dead C stack below the caller: no stale copy of a pointer stays there.
__attribute__((noinline)) static void scrub_c_stack(void)
{
	volatile char dead[16384];
	for (size_t i = 0; i < sizeof dead; i++)
		dead[i] = 0;
}

__attribute__((noinline)) static void *keep_c(size_t n)
{
	void *p = malloc(n);
	memset(p, 0, n);
	return p;
}

// Stored, then overwritten: the compiler can drop neither the block nor the store.
void *volatile dropped;

__attribute__((noinline)) static void drop_c(size_t n)
{
	dropped = malloc(n);
	memset(dropped, 0, n);
	dropped = NULL;
	scrub_c_stack();
}
*/
import "C"

import (
	"bufio"
	"fmt"
	"os"
	"unsafe"
)

// holder points to a Go heap object: the C pointers live only there.
var holder *[8]unsafe.Pointer

//go:noinline
func keepC() {
	kept := new([8]unsafe.Pointer)
	for i := range kept {
		kept[i] = C.keep_c(4096)
	}
	holder = kept
}

//go:noinline
func dropC() {
	for i := 0; i < 5; i++ {
		C.drop_c(2048)
	}
}

// scrubGoStack overwrites the dead part of this goroutine's stack below the caller.
//
//go:noinline
func scrubGoStack() byte {
	var dead [16384]byte
	for i := range dead {
		dead[i] = byte(i)
	}
	return dead[len(dead)-1]
}

func main() {
	in := bufio.NewReader(os.Stdin)
	fmt.Println("ready")
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	keepC()
	dropC()
	scrubGoStack()
	fmt.Println("done")
	in.ReadString('\n')
}
