package openairelay_test

import "syscall"

// setParentDeathSignal has the kernel kill an instance if the test process
// dies without running its cleanups (a test binary's timeout panic), so no
// Caddy outlives the tests. (Linux sends it when the thread that started
// the process exits; the Go runtime keeps its threads, so in practice when
// the process does.)
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
