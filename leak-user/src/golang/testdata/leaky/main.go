package main

import (
	"fmt"
	"os"
	"time"
)

var sink [][]byte

//go:noinline
func leaky(n int) {
	for i := 0; i < n; i++ {
		b := make([]byte, 1024)
		sink = append(sink, b)
	}
}

func main() {
	done := make(chan struct{})
	go func() {
		leaky(10)
		close(done)
	}()
	leaky(5)
	<-done
	time.Sleep(time.Millisecond)
	fmt.Fprintln(os.Stderr, len(sink), helper())
}
