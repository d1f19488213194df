// cgo_loop: the cgo workload `cargo xtask bench` times, untraced and under each tracer.
//
// Usage: cgo_loop <pairs> <threads>
//
// The same loop and protocol as bench/alloc_loop.c, with the C heap driven from Go through cgo:
// each of <threads> goroutines, locked to its own OS thread, keeps 64 live C blocks and does
// <pairs> iterations of: C.free a random one of its blocks, then C.malloc a new one of a random
// size in 16..4096 bytes. Every iteration is one cgo call to free and one to malloc (through
// runtime.cgocall). The random numbers come from the same xorshift generator and seeds as
// alloc_loop.c, so both do the same sizes in the same order.
//
// Protocol (stdin/stdout are pipes to the benchmark driver):
//
//  1. Start the goroutines, let each allocate its 64 initial blocks, then print `ready` (with
//     the pid) and wait for one line on stdin; the driver attaches the tracer in between.
//  2. Run the loop on all goroutines at once, timed from their release to the last one's end,
//     and print `ns_per_pair=<float> loop_bytes=<n> live_bytes=<n>`: that wall time divided by
//     <pairs>, the bytes malloc'd by the loop, and the bytes of the blocks still live.
//  3. Wait for one more line (or EOF) on stdin before freeing the remaining blocks (each
//     goroutine its own, on its thread) and exiting, so the driver can stop the tracer while the
//     last 64 blocks per goroutine are still outstanding.
//
// Build: CGO_ENABLED=1 go build -o cgo_loop .
package main

/*
#include <stdlib.h>
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

const (
	liveBlocks = 64
	minSize    = 16
	maxSize    = 4096
	maxThreads = 64
)

type worker struct {
	pairs     int64
	rng       uint64
	blocks    [liveBlocks]unsafe.Pointer
	sizes     [liveBlocks]uint64
	loopBytes uint64
}

func (w *worker) xorshift64() uint64 {
	x := w.rng
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	w.rng = x
	return x
}

func (w *worker) allocate(slot int) {
	size := minSize + w.xorshift64()%(maxSize-minSize+1)
	block := C.malloc(C.size_t(size)) // C.malloc never returns nil: it panics instead
	// Touch the block, as alloc_loop.c does.
	*(*byte)(block) = byte(size)
	w.blocks[slot] = block
	w.sizes[slot] = size
}

func (w *worker) work(initialized, done *sync.WaitGroup, start, finish <-chan struct{}) {
	// Every C call of this goroutine runs on one OS thread, like alloc_loop.c's pthreads.
	runtime.LockOSThread()
	for i := 0; i < liveBlocks; i++ {
		w.allocate(i)
	}
	initialized.Done()
	<-start
	for i := int64(0); i < w.pairs; i++ {
		slot := int(w.xorshift64() % liveBlocks)
		C.free(w.blocks[slot])
		w.allocate(slot)
		w.loopBytes += w.sizes[slot]
	}
	done.Done()
	// Stay on this thread until the end: a locked goroutine that exits takes its thread with it.
	<-finish
	for _, block := range w.blocks {
		C.free(block)
	}
	done.Done()
}

func parsePositive(arg, what string, max int64) int64 {
	value, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || value < 1 || value > max {
		fmt.Fprintf(os.Stderr, "cgo_loop: %s must be an integer in 1..%d, not '%s'\n", what, max, arg)
		os.Exit(2)
	}
	return value
}

// waitLine reads stdin up to a newline or EOF, one byte at a time (no buffer outlives it).
func waitLine() {
	var c [1]byte
	for {
		n, err := os.Stdin.Read(c[:])
		if n == 1 && c[0] == '\n' {
			return
		}
		if err != nil {
			return
		}
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintf(os.Stderr, "usage: %s <pairs> <threads>\n", os.Args[0])
		os.Exit(2)
	}
	pairs := parsePositive(os.Args[1], "pairs", 1<<40)
	threads := int(parsePositive(os.Args[2], "threads", maxThreads))

	workers := make([]worker, threads)
	var initialized, done sync.WaitGroup
	start, finish := make(chan struct{}), make(chan struct{})
	initialized.Add(threads)
	done.Add(threads)
	for t := range workers {
		workers[t].pairs = pairs
		workers[t].rng = 0x9e3779b97f4a7c15 ^ (uint64(t+1) * 0x2545f4914f6cdd1d)
		go workers[t].work(&initialized, &done, start, finish)
	}
	initialized.Wait()

	fmt.Printf("ready pid=%d\n", os.Getpid())
	waitLine()

	begin := time.Now()
	close(start)
	done.Wait()
	elapsed := time.Since(begin)

	var loopBytes, liveBytes uint64
	for t := range workers {
		loopBytes += workers[t].loopBytes
		for _, size := range workers[t].sizes {
			liveBytes += size
		}
	}
	fmt.Printf("ns_per_pair=%.3f loop_bytes=%d live_bytes=%d\n",
		float64(elapsed.Nanoseconds())/float64(pairs), loopBytes, liveBytes)

	waitLine()
	done.Add(threads)
	close(finish)
	done.Wait()
}
