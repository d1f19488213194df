package main

import (
	"fmt"
	"os"
	"runtime"
)

// where returns the return address in its caller.
//
//go:noinline
func where() uintptr {
	var pcs [1]uintptr
	runtime.Callers(2, pcs[:])
	return pcs[0]
}

//go:noinline
func marker() uintptr { // L_ENTRY
	return where() // L_CALL
}

func main() {
	ret := marker()
	f := runtime.FuncForPC(ret - 1)
	file, line := f.FileLine(ret - 1)
	_, entryLine := f.FileLine(f.Entry())
	fmt.Printf("marker=%p entry=%#x ret=%#x func=%s file=%s line=%d entryline=%d\n",
		marker, f.Entry(), ret, f.Name(), file, line, entryLine)
	var b [1]byte
	os.Stdin.Read(b[:])
}
