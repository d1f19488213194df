package main

import (
	"fmt"
	"os"
	"runtime"
)

// callers returns the return addresses of its caller's stack, as runtime.Callers gives
// them (with a virtual one for each frame inlined).
//
//go:noinline
func callers() []uintptr {
	pcs := make([]uintptr, 64)
	return pcs[:runtime.Callers(2, pcs)]
}

func inner() []uintptr {
	return callers() // L_INNER
}

func middle() []uintptr {
	return inner() // L_MIDDLE
}

//go:noinline
func outer() []uintptr {
	return middle() // L_OUTER
}

// report prints the runtime's frames for STACK down to main.main, innermost first, one a
// line: `NAME ret=0x.. inlined=BOOL func=.. file=.. line=..`, then `NAME end`. ret is the pc
// looked up plus one (the return address for the innermost frame of a physical one).
func report(name string, stack []uintptr) {
	frames := runtime.CallersFrames(stack)
	for {
		f, more := frames.Next()
		fmt.Printf("%s ret=%#x inlined=%t func=%s file=%s line=%d\n",
			name, f.PC+1, f.Func == nil, f.Function, f.File, f.Line)
		if !more || f.Function == "main.main" {
			break
		}
	}
	fmt.Printf("%s end\n", name)
}

func main() {
	report("inline", outer())
	reportCgo()
	var b [1]byte
	os.Stdin.Read(b[:])
}
