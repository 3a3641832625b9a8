package registrytest

import "syscall"

// sysProcAttr makes the kernel kill the registry if the process that started it dies without
// calling Close (a test binary killed by a timeout, say).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
