//go:build !cgo

package main

func reportCgo() {}
