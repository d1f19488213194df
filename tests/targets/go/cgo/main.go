// Native leaks of a cgo program for leaktrace's integration tests (tests/tests/go_cgo.rs).
//
// Protocol (as tests/targets/common.h): print `ready`, wait for one line on stdin, do the work,
// print `done`, then block reading stdin until killed (EOF on stdin: exit quietly).
//
// `// @line NAME` marks the line of each leaking call in Go: the line the report's frame of the
// Go function holding it must point at. Every Go function named in the tests is noinline.
//
// Modes (first argument):
//
//	leaks (default)  the native leaks, a CString+free churn and 64 MiB of Go heap, then `done`
//	complete         cgo calls from many goroutines; runs to completion, prints a checksum, exits
//
// Stdout is the same on every run.
package main

/*
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Global, so that gcc can neither drop the blocks stored there nor the malloc calls.
void *volatile leak_c_kept[64];
int leak_c_count;
void *volatile mix_sink;

// C code of the program itself that leaks. Not inlined into cgo's wrapper, and malloc is not
// its tail call, so that `leak_c` is a frame of its own between malloc and the Go caller.
__attribute__((noinline)) void leak_c(size_t size)
{
	char *p = malloc(size);
	memset(p, 0x5a, size);
	leak_c_kept[leak_c_count++ & 63] = p;
}

// A C computation for the complete mode: allocates and frees, returns a hash of X.
__attribute__((noinline)) uint64_t mix(uint64_t x)
{
	uint64_t *tmp = malloc(8 * sizeof *tmp);
	for (int i = 0; i < 8; i++)
		tmp[i] = x * (uint64_t)(2 * i + 1) + 0x9e3779b97f4a7c15ull;
	uint64_t h = 0;
	for (int i = 0; i < 8; i++)
		h = (h ^ tmp[i]) * 0x100000001b3ull;
	mix_sink = tmp;
	free(tmp);
	return h;
}
*/
import "C"

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// What leaks (keep in sync with tests/tests/go_cgo.rs).
const (
	cstringLen   = 99 // C.CString adds the NUL: 100 bytes each
	cstrings     = 10
	cmallocSize  = 3000
	cmallocs     = 4
	leakCSize    = 5000
	leakCCalls   = 6
	workerSize   = 777
	workerAllocs = 3
	churnRounds  = 1000
	goHeapMiB    = 64
)

var stdin = bufio.NewReader(os.Stdin)

func waitLine() {
	if _, err := stdin.ReadString('\n'); err != nil {
		os.Exit(0)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Printf("error "+format+"\n", args...)
	os.Exit(4)
}

var (
	keptStrings []*C.char
	keptBlocks  []unsafe.Pointer
)

// leakCString keeps C copies of a Go string (C.CString mallocs len+1 bytes).
//
//go:noinline
func leakCString() {
	s := strings.Repeat("x", cstringLen)
	for i := 0; i < cstrings; i++ {
		keptStrings = append(keptStrings, C.CString(s)) // @line cstring
	}
}

// leakCMalloc keeps blocks from C.malloc.
//
//go:noinline
func leakCMalloc() {
	for i := 0; i < cmallocs; i++ {
		keptBlocks = append(keptBlocks, C.malloc(cmallocSize)) // @line cmalloc
	}
}

// leakC calls C code that leaks by itself.
//
//go:noinline
func leakC() {
	for i := 0; i < leakCCalls; i++ {
		C.leak_c(leakCSize) // @line leak-c
	}
}

// leakCMallocWorker leaks from a goroutine other than main: its Go stack is that goroutine's.
//
//go:noinline
func leakCMallocWorker() {
	for i := 0; i < workerAllocs; i++ {
		keptBlocks = append(keptBlocks, C.malloc(workerSize)) // @line worker-cmalloc
	}
}

// leakFromGoroutine runs leakCMallocWorker in a new goroutine and waits for it.
//
//go:noinline
func leakFromGoroutine() {
	done := make(chan struct{})
	go func() {
		leakCMallocWorker()
		close(done)
	}()
	<-done
}

// churnCString converts strings for C and frees each copy: nothing stays.
//
//go:noinline
func churnCString() int {
	total := 0
	for i := 0; i < churnRounds; i++ {
		cs := C.CString("item-" + strconv.Itoa(i)) // @line churn
		total += int(C.strlen(cs))
		C.free(unsafe.Pointer(cs))
	}
	return total
}

var goHeap [][]byte

// growGoHeap keeps 64 MiB of Go memory, every page touched: the Go heap, not a native leak.
//
//go:noinline
func growGoHeap() int {
	for i := 0; i < goHeapMiB; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(i + 1)
		}
		goHeap = append(goHeap, b)
	}
	total := 0
	for _, b := range goHeap {
		total += len(b)
	}
	return total
}

//go:noinline
func leaks() {
	fmt.Println("ready")
	waitLine()
	leakCString()
	fmt.Printf("cstring: %d x %d bytes kept (strlen %d)\n", cstrings, cstringLen+1, int(C.strlen(keptStrings[0])))
	leakCMalloc()
	fmt.Printf("cmalloc: %d x %d bytes kept\n", cmallocs, cmallocSize)
	leakC()
	fmt.Printf("leak_c: %d x %d bytes kept\n", leakCCalls, leakCSize)
	leakFromGoroutine()
	fmt.Printf("worker: %d x %d bytes kept\n", workerAllocs, workerSize)
	fmt.Printf("churn: %d strings freed, %d bytes\n", churnRounds, churnCString())
	fmt.Printf("go heap: %d MiB kept\n", growGoHeap()>>20)
	fmt.Println("done")
	for {
		waitLine()
	}
}

// descend recurses with a sizeable frame, so that the goroutine's stack grows (is copied)
// between cgo calls, and calls C at the bottom.
//
//go:noinline
func descend(depth int, x uint64) uint64 {
	var pad [32]uint64
	pad[depth%32] = x
	if depth == 0 {
		return uint64(C.mix(C.uint64_t(x))) ^ pad[0]
	}
	return descend(depth-1, x*6364136223846793005+1442695040888963407) + pad[depth%32]
}

// complete: goroutines calling C (which mallocs and frees), converting strings with
// C.CString/C.free and growing their stacks between calls; a checksum independent of scheduling.
func complete() {
	fmt.Println("ready")
	waitLine()
	const goroutines, calls = 64, 2000
	var sum atomic.Uint64
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		seed := uint64(g)
		go func() {
			defer wg.Done()
			var local uint64
			for i := 0; i < calls; i++ {
				x := seed*calls + uint64(i)
				cs := C.CString(strconv.FormatUint(x, 16))
				local += uint64(C.strlen(cs))
				C.free(unsafe.Pointer(cs))
				if i%100 == 0 {
					local += descend(int(x%200)+10, x)
				} else {
					local += uint64(C.mix(C.uint64_t(x)))
				}
			}
			sum.Add(local)
		}()
	}
	wg.Wait()
	fmt.Printf("cgo calls %d checksum %016x\n", goroutines*calls, sum.Load())
	fmt.Println("done")
}

func main() {
	mode := "leaks"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "leaks":
		leaks()
	case "complete":
		complete()
	default:
		fail("unknown mode %q", mode)
	}
}
