package main

// #include <stdlib.h>
import "C"

func init() {
	C.free(C.malloc(16))
}
