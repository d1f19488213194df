package main

//go:noinline
func helper() int {
	return len(sink) * 2
}
