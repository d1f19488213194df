// Goroutine leaks for leaktrace's integration tests (tests/tests/go_goroutines.rs).
//
// Protocol (as tests/targets/common.h): print `ready`, wait for one line on stdin, do the work,
// print `done`, then block reading stdin until killed (EOF on stdin: exit quietly).
//
// `// @line NAME` marks the lines the tests expect in the report: the `go` statement that
// creates each leak's goroutines (created_by) and the line where they block (blocked_at).
// Every function holding a `go` statement is noinline, so that it is the frame of that line.
//
// Modes (first argument):
//
//	leaks (default)  the leaks below, then `done`; a growing leak keeps going after `done`
//	complete         goroutine-heavy work that runs to completion, prints a checksum and exits
//
// `--dump` (leaks mode): every line read after `done` prints the runtime's own dump of every
// goroutine, between `dump-begin` and `dump-end`; the tests check the markers against it
// without any tracer.
//
// Without `--dump`, stdout is the same on every run.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// How many goroutines each leak leaves behind (keep in sync with tests/tests/go_goroutines.rs).
const (
	prematureLeaks = 7
	timeoutLeaks   = 5
	senders        = 10 // one answer is received, the other 9 leak
	consumers      = 4
	poolWorkers    = 8 // finish: none left
	steadyWorkers  = 6
	nilChanLeaks   = 3 // leaked before `ready`, before any tracer attached
	growthEvery    = 100 * time.Millisecond
	growthMax      = 1200
)

// The goroutines alive at `done`, as runtime.NumGoroutine counts them: main, the leaks, the
// steady pool and its feeder. The growing leak (its spawner and what it spawns) starts after.
const liveAtDone = 1 + prematureLeaks + timeoutLeaks + (senders - 1) + consumers + steadyWorkers + 1 + nilChanLeaks

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

// ---- 1. Premature return --------------------------------------------------------------------

var errInvalid = errors.New("invalid id")

//go:noinline
func validate(id int) error {
	if id < 1000 {
		return errInvalid
	}
	return nil
}

//go:noinline
func lookup(id int) int {
	return id * id
}

// fetchChecked starts the lookup, then validates the id and returns on the error path without
// receiving: the goroutine blocks on the unbuffered send forever.
//
//go:noinline
func fetchChecked(id int) (int, error) {
	result := make(chan int)
	go func() { // @line premature-go
		result <- lookup(id) // @line premature-send
	}()
	if err := validate(id); err != nil {
		return 0, err
	}
	return <-result, nil
}

func leakPremature() {
	failed := 0
	for id := 0; id < prematureLeaks; id++ {
		if _, err := fetchChecked(id); err != nil {
			failed++
		}
	}
	fmt.Printf("premature: %d of %d lookups abandoned\n", failed, prematureLeaks)
}

// ---- 2. Timeout -----------------------------------------------------------------------------

var errTimeout = errors.New("timeout")

// queryWithTimeout waits for the worker's answer with a deadline; the backend answers only
// after it, nobody receives any more and the worker blocks on its send forever.
//
//go:noinline
func queryWithTimeout(id int, backend <-chan struct{}) (int, error) {
	result := make(chan int)
	go func() { // @line timeout-go
		<-backend
		result <- id * 3 // @line timeout-send
	}()
	select {
	case v := <-result:
		return v, nil
	case <-time.After(5 * time.Millisecond):
		return 0, errTimeout
	}
}

func leakTimeout() {
	backend := make(chan struct{})
	timedOut := 0
	for id := 0; id < timeoutLeaks; id++ {
		if _, err := queryWithTimeout(id, backend); errors.Is(err, errTimeout) {
			timedOut++
		}
	}
	close(backend) // the slow backend answers now, too late
	fmt.Printf("timeout: %d of %d queries timed out\n", timedOut, timeoutLeaks)
}

// ---- 3. N senders, one receiver -------------------------------------------------------------

// firstAnswer asks every replica and takes the first answer; the others block on their sends.
//
//go:noinline
func firstAnswer() int {
	answers := make(chan int)
	for i := 0; i < senders; i++ {
		replica := i
		go func() { // @line senders-go
			answers <- replica + 100 // @line senders-send
		}()
	}
	return <-answers
}

func leakSenders() {
	v := firstAnswer()
	fmt.Printf("senders: 1 of %d answers taken (valid %t)\n", senders, v >= 100 && v < 100+senders)
}

// ---- 4. Range over a channel never closed ---------------------------------------------------

// sumWithConsumers hands the items to consumers ranging over a channel it never closes: once
// the items are summed, the consumers wait for more forever.
//
//go:noinline
func sumWithConsumers(items []int) int64 {
	work := make(chan int)
	var sum atomic.Int64
	var handled sync.WaitGroup
	handled.Add(len(items))
	for i := 0; i < consumers; i++ {
		go func() { // @line range-go
			for v := range work { // @line range-recv
				sum.Add(int64(v))
				handled.Done()
			}
		}()
	}
	for _, v := range items {
		work <- v
	}
	handled.Wait()
	return sum.Load() // forgot close(work)
}

func leakRange() {
	items := make([]int, 100)
	for i := range items {
		items[i] = i
	}
	fmt.Printf("range: sum %d with %d consumers\n", sumWithConsumers(items), consumers)
}

// ---- 5. A worker pool that finishes ---------------------------------------------------------

// runPool squares the jobs with workers that exit when the jobs channel is closed.
//
//go:noinline
func runPool(jobs []int) int {
	in := make(chan int)
	out := make(chan int, len(jobs))
	var wg sync.WaitGroup
	for w := 0; w < poolWorkers; w++ {
		wg.Add(1)
		go func() { // @line pool-go
			defer wg.Done()
			for j := range in {
				out <- j * j
			}
		}()
	}
	for _, j := range jobs {
		in <- j
	}
	close(in)
	wg.Wait()
	close(out)
	total := 0
	for v := range out {
		total += v
	}
	return total
}

func finishingPool() {
	jobs := make([]int, 50)
	for i := range jobs {
		jobs[i] = i
	}
	fmt.Printf("pool: %d workers, sum of squares %d\n", poolWorkers, runPool(jobs))
}

// ---- 6. A bounded pool that lives for the whole run -----------------------------------------

var served atomic.Int64

// startSteadyPool starts a fixed set of workers serving requests fed every 50 ms, forever.
//
//go:noinline
func startSteadyPool() {
	requests := make(chan int)
	for w := 0; w < steadyWorkers; w++ {
		go func() { // @line steady-go
			for r := range requests { // @line steady-recv
				served.Add(int64(r&1) + 1)
			}
		}()
	}
	go func() { // @line feeder-go
		tick := time.NewTicker(50 * time.Millisecond)
		for n := 0; ; n++ {
			<-tick.C
			requests <- n
		}
	}()
	fmt.Printf("steady: %d workers serving\n", steadyWorkers)
}

// ---- 7. A leak that grows over time ---------------------------------------------------------

// handleRequest waits for a reply or a cancellation that never come, in a goroutine of its own.
//
//go:noinline
func handleRequest(id int) {
	reply := make(chan int)
	cancel := make(chan struct{})
	go func() { // @line growing-go
		select { // @line growing-select
		case v := <-reply:
			served.Add(int64(v + id))
		case <-cancel:
		}
	}()
}

// startGrowingLeak handles one request every 100 ms, each leaking its goroutine.
//
//go:noinline
func startGrowingLeak() {
	go func() { // @line growing-spawner-go
		tick := time.NewTicker(growthEvery)
		defer tick.Stop()
		for i := 0; i < growthMax; i++ {
			<-tick.C
			handleRequest(i)
		}
	}()
	fmt.Printf("growing: one goroutine every %v\n", growthEvery)
}

// ---- 8. Leaked before the tracer attached ---------------------------------------------------

type subscriber struct {
	updates chan int // never made: nil
}

// startSubscribers waits for updates on a channel that was never made: a receive on a nil
// channel blocks forever.
//
//go:noinline
func startSubscribers() {
	var s subscriber
	for i := 0; i < nilChanLeaks; i++ {
		go func() { // @line nilchan-go
			v := <-s.updates // @line nilchan-recv
			served.Add(int64(v))
		}()
	}
}

// ---- The modes ------------------------------------------------------------------------------

// waitGoroutines waits until runtime.NumGoroutine() is WANT: goroutines that finished (the
// pool's) are gone only once they have exited, a little after wg.Done.
func waitGoroutines(want int) {
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() != want {
		if time.Now().After(deadline) {
			fail("%d goroutines, want %d", runtime.NumGoroutine(), want)
		}
		time.Sleep(time.Millisecond)
	}
	// Let the last ones park on what they block on.
	time.Sleep(20 * time.Millisecond)
	fmt.Printf("goroutines %d\n", want)
}

func leaks(dump bool) {
	startSubscribers()
	fmt.Println("ready")
	waitLine()
	leakPremature()
	leakTimeout()
	leakSenders()
	leakRange()
	finishingPool()
	startSteadyPool()
	waitGoroutines(liveAtDone)
	startGrowingLeak()
	fmt.Println("done")
	for {
		waitLine()
		if dump {
			buf := make([]byte, 1<<22)
			n := runtime.Stack(buf, true)
			fmt.Println("dump-begin")
			os.Stdout.Write(buf[:n])
			fmt.Println("dump-end")
		}
	}
}

// descend recurses with a sizeable frame: the goroutine's stack grows (is copied) many times.
//
//go:noinline
func descend(depth int, x uint64) uint64 {
	var pad [32]uint64
	pad[depth%32] = x
	if depth == 0 {
		return x ^ pad[0]
	}
	return descend(depth-1, x*6364136223846793005+1442695040888963407) + pad[depth%32]
}

// complete: thousands of short goroutines with deep stacks, a ping-pong between two of them and
// garbage collections, then a checksum independent of scheduling.
func complete() {
	fmt.Println("ready")
	waitLine()
	const workers, pingPongs, rounds = 2000, 1000000, 1500
	results := make(chan uint64, 64)
	for i := 0; i < workers; i++ {
		seed := uint64(i)
		go func() {
			results <- descend(int(seed%300)+20, seed)
		}()
	}
	var sum uint64
	for i := 0; i < workers; i++ {
		sum += <-results
		if i%500 == 0 {
			runtime.GC()
		}
	}
	fmt.Printf("goroutines %d checksum %016x\n", workers, sum)

	ping, pong := make(chan uint64), make(chan uint64)
	go func() {
		for v := range ping {
			pong <- v*31 + 7
		}
		close(pong)
	}()
	var v uint64 = 1
	for i := 0; i < pingPongs; i++ {
		ping <- v
		v = <-pong
	}
	close(ping)
	<-pong
	fmt.Printf("ping-pong %d value %016x\n", pingPongs, v)

	var wg sync.WaitGroup
	var total atomic.Uint64
	for round := 0; round < rounds; round++ {
		for i := 0; i < 100; i++ {
			wg.Add(1)
			seed := uint64(round*100 + i)
			go func() {
				defer wg.Done()
				total.Add(descend(int(seed%50)+5, seed))
			}()
		}
		wg.Wait()
	}
	fmt.Printf("rounds %d total %016x\n", rounds, total.Load())
	fmt.Println("done")
}

func main() {
	mode, dump := "leaks", false
	for _, arg := range os.Args[1:] {
		switch arg {
		case "--dump":
			dump = true
		case "leaks", "complete":
			mode = arg
		default:
			fail("unknown argument %q", arg)
		}
	}
	if mode == "complete" {
		complete()
		return
	}
	leaks(dump)
}
