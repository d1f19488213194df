// A Go program whose heap profile is known, for reading the runtime's own heap profile.
//
// Protocol (as tests/targets/common.h): print `ready`, wait for one line on stdin, do the
// work, print `done`, then block reading stdin until killed (EOF on stdin: exit quietly).
//
// Modes (first argument):
//
//	profile PATH  three functions retain memory (large blobs, small records, one big array),
//	              one GC runs, the program writes its own heap profile (runtime/pprof) to PATH
//	              and collects no more: the runtime's published profile stays the one written
//	grow          the same retained memory, then every 100 ms one more 512 KiB blob from
//	              growLeak and a GC (so that the profile publishes it), from `done` on
//	oom           from `done` on, one more written 512 KiB blob from growLeak and a GC every
//	              20 ms, without end (in a memory cgroup: until the OOM killer takes it)
//	off           MemProfileRate = 0 before anything: the runtime keeps no heap profile
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"time"
)

type record struct {
	id    int64
	words [39]int64 // 320 bytes per record
}

var (
	stdin   = bufio.NewReader(os.Stdin)
	blobs   = make([][]byte, 0, 64)
	records = make([]*record, 0, 50000)
	big     []byte
	grown   [][]byte
)

//go:noinline
func retainBlobs(n int) {
	for i := 0; i < n; i++ {
		blobs = append(blobs, make([]byte, 64<<10)) // @line goheap-blob
	}
}

//go:noinline
func retainRecords(n int) {
	for i := 0; i < n; i++ {
		records = append(records, &record{id: int64(i)}) // @line goheap-record
	}
}

//go:noinline
func retainBig() {
	big = make([]byte, 3<<20) // @line goheap-big
}

//go:noinline
func growLeak() {
	blob := make([]byte, 512<<10) // @line goheap-grow
	// Written, so that it is resident (fresh spans from the OS are never touched otherwise).
	for i := 0; i < len(blob); i += 4096 {
		blob[i] = 1
	}
	grown = append(grown, blob)
}

func retain() {
	retainBlobs(40)
	retainRecords(20000)
	retainBig()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func writeProfile(path string) {
	out, err := os.Create(path)
	if err != nil {
		fail(err)
	}
	if err := pprof.WriteHeapProfile(out); err != nil {
		fail(err)
	}
	if err := out.Close(); err != nil {
		fail(err)
	}
}

// growLeak every `every`, each blob published in the profile by a GC.
func grow(every time.Duration) {
	for {
		growLeak()
		runtime.GC()
		time.Sleep(every)
	}
}

func main() {
	mode := "profile"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	if mode == "off" {
		runtime.MemProfileRate = 0
	}
	// No collection but the ones below: the profile changes only when this program says.
	debug.SetGCPercent(-1)
	fmt.Println("ready")
	if _, err := stdin.ReadString('\n'); err != nil {
		return
	}
	retain()
	runtime.GC()
	switch mode {
	case "profile":
		if len(os.Args) < 3 {
			fail(fmt.Errorf("usage: goheap profile PATH"))
		}
		writeProfile(os.Args[2])
	case "grow":
		go grow(100 * time.Millisecond)
	case "oom":
		go grow(20 * time.Millisecond)
	}
	fmt.Println("done")
	for {
		if _, err := stdin.ReadString('\n'); err != nil {
			break
		}
	}
	runtime.KeepAlive(blobs)
	runtime.KeepAlive(records)
	runtime.KeepAlive(big)
}
