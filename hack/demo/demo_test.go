package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/e2e/cluster"
	"github.com/weft-mesh/weft/internal/testenv"
)

var sandbox *cluster.Sandbox

func TestMain(m *testing.M) {
	sb, err := cluster.EnterSandbox(cluster.SandboxOptions{Hosts: cluster.SandboxHosts(), Expose: []string{"127.0.0.1:0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sandbox = sb
	os.Exit(m.Run())
}

// output collects what the demo prints and says when a line appears.
type output struct {
	mu   sync.Mutex
	text strings.Builder
	seen chan struct{}
	want string
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.text.Write(p)
	if o.seen != nil && strings.Contains(o.text.String(), o.want) {
		close(o.seen)
		o.seen = nil
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.text.String()
}

// TestDemoGatedCanaries runs the demo as `make demo` does, with short
// holds: the healthy canary is promoted step by step, and the failing one
// is rolled back at its first step, after which every call is on v1 and
// none fails.
func TestDemoGatedCanaries(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "weft-controller")
	if err := cluster.BuildController(testenv.RepoRoot(), bin); err != nil {
		t.Fatal(err)
	}
	out := &output{seen: make(chan struct{}), want: "gated canaries done"}
	done := out.seen
	o := options{
		repoRoot: testenv.RepoRoot(), controller: bin, assets: os.Getenv("KUBEBUILDER_ASSETS"),
		hold: 1500 * time.Millisecond, interval: 500 * time.Millisecond, calls: 200,
		steps: [][2]int32{{50, 50}}, gated: true, gateSteps: []int32{10, 50, 100}, minSuccess: 99, out: out,
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, o, sandbox) }()
	select {
	case <-done:
		cancel()
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("the demo: %v", err)
		}
	case err := <-errc:
		t.Fatalf("the demo ended before its gated canaries: %v\n%s", err, out)
	}
	text := out.String()
	t.Logf("demo output:\n%s", text)
	for _, want := range []string{
		"gate at 10%: the canary succeeded on 100.0%",
		"gate at 100%: the canary succeeded on 100.0%",
		"canary 1 promoted",
		"below 99.0%: rolling back to 0%",
		"canary 2 rolled back",
		"rolled back to 0% → observed v1 100.0% v2 0.0% over 200 calls\n",
		"Accepted: Service shop/checkout is split by weight: checkout-v2 100, checkout-v1 0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	if strings.Contains(text, "canary 2 promoted") {
		t.Error("the failing canary was promoted")
	}
}
