// Native memory charged to goroutine creation sites, for leaktrace's integration tests
// (tests/tests/suite/go_goroutine_sites.rs).
//
// Protocol (as tests/targets/common.h): print `ready`, wait for one line on stdin, do the work,
// print `done`, then block reading stdin until killed (EOF on stdin: exit quietly).
//
// One C function, leak_c, called by one Go function, work, from goroutines started at two `go`
// statements: 3 goroutines at `go-a` leak 100 blocks each, 1 goroutine at `go-b` leaks 50. The
// goroutines start `work` itself (no arguments, no closure: no compiler-made wrapper), so all
// four have the same stack and the leaks are one site, whose bytes split by `go` statement.
// The two batches run one after the other, so each goroutine takes its own batch's job; the
// first batch's goroutines are started before `ready`, before leaktrace attaches.
//
// `// @line NAME` marks the lines the report must name. Stdout is the same on every run.
package main

/*
#include <stdlib.h>
#include <string.h>

// Global, so that gcc can neither drop the blocks stored there nor the malloc calls.
void *volatile kept[512];
int kept_count;

__attribute__((noinline)) void leak_c(size_t size)
{
	char *p = malloc(size);
	memset(p, 0x5a, size);
	kept[__atomic_fetch_add(&kept_count, 1, __ATOMIC_RELAXED) & 511] = p;
}
*/
import "C"

import (
	"bufio"
	"fmt"
	"os"
	"sync"
)

// What leaks (keep in sync with tests/tests/suite/go_goroutine_sites.rs).
const (
	blockSize   = 1000
	goroutinesA = 3
	blocksA     = 100
	blocksB     = 50
)

var (
	stdin = bufio.NewReader(os.Stdin)
	jobs  = make(chan int, goroutinesA)
	wg    sync.WaitGroup
)

func waitLine() {
	if _, err := stdin.ReadString('\n'); err != nil {
		os.Exit(0)
	}
}

// work takes a job (how many blocks) and leaks that many through C.
//
//go:noinline
func work() {
	n := <-jobs
	for i := 0; i < n; i++ {
		C.leak_c(blockSize)
	}
	wg.Done()
}

//go:noinline
func startA() {
	for i := 0; i < goroutinesA; i++ {
		wg.Add(1)
		go work() // @line go-a
	}
}

//go:noinline
func startB() {
	wg.Add(1)
	go work() // @line go-b
}

func main() {
	// The `go-a` goroutines exist before leaktrace attaches (they wait for their jobs): their
	// creation site comes from their own g, not from a probe that saw them created.
	startA()
	fmt.Println("ready")
	waitLine()
	for i := 0; i < goroutinesA; i++ {
		jobs <- blocksA
	}
	wg.Wait()
	startB()
	jobs <- blocksB
	wg.Wait()
	fmt.Printf("a: %d goroutines x %d x %d bytes kept\n", goroutinesA, blocksA, blockSize)
	fmt.Printf("b: 1 goroutine x %d x %d bytes kept\n", blocksB, blockSize)
	fmt.Println("done")
	for {
		waitLine()
	}
}
