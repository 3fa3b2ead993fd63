.PHONY: test bench bench-quick

# The test command of the README and of .ci/run.
test:
	go test -race -count=1 ./...

# The relay against plain reverse_proxy and the upstream itself (bench/run.sh);
# writes the table to docs/benchmarks.md.
bench:
	bash bench/run.sh

# The same in 2 s per measurement, for a smoke test; leaves the doc alone.
bench-quick:
	BENCH_QUICK=1 bash bench/run.sh
