//go:build !linux

package main

import "time"

// Outside Linux, memory and CPU of other processes are not measured.

func watchRSS(int) (stop func() int64) { return func() int64 { return 0 } }
func processCPU(int) time.Duration     { return 0 }
func selfCPU() time.Duration           { return 0 }
func findPID(string) int               { return 0 }
