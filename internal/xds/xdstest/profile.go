package xdstest

import (
	"os"
	"runtime/pprof"
	"testing"
)

// ProfileCPU starts a CPU profile into the file WEFT_BENCH_CPUPROFILE
// names, if it names one, and stops it when stop is called. Benchmarks
// call it after their setup so that the profile covers what they measure.
func ProfileCPU(tb testing.TB) (stop func()) {
	tb.Helper()
	path := os.Getenv("WEFT_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path) //nolint:gosec // a profile path the person running the benchmark chose
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		tb.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}
