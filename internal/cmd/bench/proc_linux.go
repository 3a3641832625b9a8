package main

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// watchRSS samples the peak resident set size (VmHWM in /proc/PID/status)
// of a running process every 10ms until stop is called, and stop returns it
// in bytes. VmHWM is the high-water mark of the process's own address
// space, so the last sample before exit is its peak up to 10ms before the
// end. (rusage's ru_maxrss is no use here: Go starts children with
// vfork+exec, and Linux then counts the parent's high-water mark as the
// child's, so every child would report at least the bench's own peak.)
func watchRSS(pid int) (stop func() int64) {
	path := "/proc/" + strconv.Itoa(pid) + "/status"
	return pollPeak(func() (int64, bool) {
		data, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		i := bytes.Index(data, []byte("VmHWM:"))
		if i < 0 {
			return 0, false // exiting: its memory is gone
		}
		f := bytes.Fields(data[i+len("VmHWM:"):])
		if len(f) < 2 || string(f[1]) != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		return kb * 1024, err == nil
	})
}

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// processCPU returns the user + system time a process has used so far, 0
// if it cannot be read.
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(string(f[11]), 10, 64)
	s, _ := strconv.ParseInt(string(f[12]), 10, 64)
	return time.Duration(u+s) * clockTick
}

// selfCPU returns the user + system time of this process (the proxies run
// in it).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// findPID returns the process whose command line mentions s, 0 if none.
func findPID(s string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			return pid
		}
	}
	return 0
}
