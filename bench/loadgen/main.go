// Command loadgen is the small load driver and report tool of `make bench`
// (bench/run.sh). It uses only the standard library.
//
//	loadgen rate  -url URL -rate 2000 -duration 10s [-warmup 2s] [-method POST] [-body S | -body-file F] [-H 'K: V']...
//	loadgen streams -n 10000 -url URL -body-file F [-H 'K: V']... -pid PID [-save URL=FILE]...
//	loadgen check -url URL [-body S | -body-file F] [-H 'K: V']... [-contains S] [-expect-header 'K: V']
//	loadgen wait  -url URL [-timeout 15s]
//	loadgen table -results results.tsv [-streams streams.tsv] [-machine machine.md] [-doc docs/benchmarks.md]
//
// rate is an open-loop (fixed-rate) driver in the manner of wrk2: requests
// are released on a fixed schedule whatever the answers do, to a fixed set
// of connections (-conns); a request released while every connection is busy
// waits for one, and that wait counts in its latency, so a slow target shows
// as latency instead of as less load (a closed-loop tool such as wrk sends
// less and hides the delay). Latency runs from release to the end of the
// body and goes into a log-linear (HDR-style) histogram with under 0.8%
// relative error. How late the pacer itself released requests against the
// schedule is reported apart (sched_p99_us), so an overloaded generator shows.
// It prints
// one line:
//
//	RESULT requests=N ok=N errors=N non2xx=N dropped=N seconds=S rps=R p50_us=N p90_us=N p99_us=N p999_us=N max_us=N sched_p99_us=N
//
// streams holds -n streams open at once and reports the VmRSS of the proxy
// process -pid, idle and with all of them open (see cmdStreams).
//
// check sends one request and fails unless it gets a 2xx (and the wanted body
// text or header); wait polls until the URL answers at all. table renders
// the TSV that run.sh collects as the markdown table of docs/benchmarks.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "rate":
		err = cmdRate(os.Args[2:])
	case "streams":
		err = cmdStreams(os.Args[2:])
	case "check":
		err = cmdCheck(os.Args[2:])
	case "wait":
		err = cmdWait(os.Args[2:])
	case "table":
		err = cmdTable(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadgen rate|streams|check|wait|table [flags] (see the package doc)")
	os.Exit(2)
}
