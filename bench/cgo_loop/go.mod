module leaktrace/bench/cgo_loop

go 1.21
