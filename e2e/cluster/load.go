package cluster

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Tally counts what a client saw.
type Tally struct {
	Calls int
	// ByPod counts successful calls by the pod that answered.
	ByPod map[string]int
	// ByCode counts calls by status code (OK included).
	ByCode map[codes.Code]int
	// Elapsed is how long the calls took together.
	Elapsed time.Duration
	// Errors are the first few distinct error messages.
	Errors []string
}

// NewTally returns an empty Tally.
func NewTally() Tally { return Tally{ByPod: map[string]int{}, ByCode: map[codes.Code]int{}} }

// Add records one call.
func (t *Tally) Add(pod string, err error) {
	if t.ByPod == nil {
		t.ByPod, t.ByCode = map[string]int{}, map[codes.Code]int{}
	}
	t.Calls++
	code := status.Code(err)
	t.ByCode[code]++
	if err == nil {
		t.ByPod[pod]++
		return
	}
	if msg := err.Error(); len(t.Errors) < 3 && !slices.Contains(t.Errors, msg) {
		t.Errors = append(t.Errors, msg)
	}
}

// Merge adds u's counts to t.
func (t *Tally) Merge(u Tally) {
	if t.ByPod == nil {
		t.ByPod, t.ByCode = map[string]int{}, map[codes.Code]int{}
	}
	t.Calls += u.Calls
	t.Elapsed += u.Elapsed
	for k, v := range u.ByPod {
		t.ByPod[k] += v
	}
	for k, v := range u.ByCode {
		t.ByCode[k] += v
	}
	for _, e := range u.Errors {
		if len(t.Errors) < 3 && !slices.Contains(t.Errors, e) {
			t.Errors = append(t.Errors, e)
		}
	}
}

// Failed is the number of calls that did not succeed.
func (t Tally) Failed() int { return t.Calls - t.ByCode[codes.OK] }

// FailureRate is the share of failed calls, 0 to 1.
func (t Tally) FailureRate() float64 {
	if t.Calls == 0 {
		return 0
	}
	return float64(t.Failed()) / float64(t.Calls)
}

// Share is the share of all calls answered by pods whose names start
// with prefix, 0 to 1.
func (t Tally) Share(prefix string) float64 {
	if t.Calls == 0 {
		return 0
	}
	n := 0
	for pod, c := range t.ByPod {
		if strings.HasPrefix(pod, prefix) {
			n += c
		}
	}
	return float64(n) / float64(t.Calls)
}

// String is a one-line summary.
func (t Tally) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d calls in %s:", t.Calls, t.Elapsed.Round(time.Millisecond))
	for _, pod := range slices.Sorted(maps.Keys(t.ByPod)) {
		fmt.Fprintf(&b, " %s=%d", pod, t.ByPod[pod])
	}
	for _, code := range slices.Sorted(maps.Keys(t.ByCode)) {
		if code != codes.OK {
			fmt.Fprintf(&b, " %s=%d", code, t.ByCode[code])
		}
	}
	if len(t.Errors) > 0 {
		fmt.Fprintf(&b, " (errors: %s)", strings.Join(t.Errors, " | "))
	}
	return b.String()
}

// Load makes n calls over conn, at most concurrency at a time, each
// bounded by perCall, and stops early when ctx ends.
func Load(ctx context.Context, conn grpc.ClientConnInterface, n, concurrency int, perCall time.Duration, opts ...grpc.CallOption) Tally {
	t := NewTally()
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan struct{})
	for range max(concurrency, 1) {
		wg.Go(func() {
			for range next {
				cctx, cancel := context.WithTimeout(ctx, perCall)
				pod, err := Echo(cctx, conn, opts...)
				cancel()
				mu.Lock()
				t.Add(pod, err)
				mu.Unlock()
			}
		})
	}
	for range n {
		if ctx.Err() != nil {
			break
		}
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	t.Elapsed = time.Since(start)
	return t
}

// Call is one call of a Background load.
type Call struct {
	Start, End time.Time
	Pod        string
	Err        error
}

// Background starts callers that each make calls over conn one after
// another, each bounded by perCall, until the returned stop is called, ctx
// ends or the caller has made maxEach calls. stop waits for the callers
// and returns every call, by start time. A call cut short by stop is not
// counted.
func Background(ctx context.Context, conn grpc.ClientConnInterface, callers, maxEach int, perCall time.Duration) (stop func() []Call) {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan []Call, callers)
	for range callers {
		go func() {
			var calls []Call
			for len(calls) < maxEach && lctx.Err() == nil {
				c := Call{Start: time.Now()}
				cctx, cancelCall := context.WithTimeout(lctx, perCall)
				c.Pod, c.Err = Echo(cctx, conn)
				cancelCall()
				c.End = time.Now()
				if lctx.Err() != nil && c.Err != nil {
					break // stopped during this call
				}
				calls = append(calls, c)
			}
			done <- calls
		}()
	}
	return func() []Call {
		cancel()
		var all []Call
		for range callers {
			all = append(all, <-done...)
		}
		slices.SortFunc(all, func(x, y Call) int { return x.Start.Compare(y.Start) })
		return all
	}
}

// TallyOf counts calls by the pod that answered and by status code, over
// the time from the first call's start to the last one's end, and returns
// the calls that failed.
func TallyOf(calls []Call) (Tally, []Call) {
	t := NewTally()
	var failed []Call
	for _, c := range calls {
		t.Add(c.Pod, c.Err)
		if c.Err != nil {
			failed = append(failed, c)
		}
	}
	if len(calls) > 0 {
		t.Elapsed = calls[len(calls)-1].End.Sub(calls[0].Start)
	}
	return t, failed
}
