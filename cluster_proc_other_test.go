//go:build !linux

package openairelay_test

import "syscall"

// setParentDeathSignal does nothing here: only Linux has a parent-death
// signal; the tests' cleanups stop every instance they started.
func setParentDeathSignal(*syscall.SysProcAttr) {}
