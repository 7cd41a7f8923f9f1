package e2e

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

// testCanary: a TrafficSplit sends 90/10 of checkout's calls to v1/v2,
// and a flip to 0/100 moves every new call to v2 within a second of the
// API write.
func (b *box) testCanary(t *testing.T) {
	ctx := t.Context()
	b.versions(t, "checkout", 2, 1)
	b.reachable(t, "checkout", b.web)
	ts := b.split(t, "checkout-canary", "checkout", 90, 10)

	tally := load(t, ctx, b.web, host("checkout"), 2000, 4)
	v2 := tally.Share("checkout-v2-")
	t.Logf("weights 90/10: %s; observed v1 %s v2 %s", tally, pct(tally.Share("checkout-v1-")), pct(v2))
	if tally.Failed() > 0 {
		t.Errorf("%d of %d calls failed", tally.Failed(), tally.Calls)
	}
	if math.Abs(v2-0.10) > 0.03 {
		t.Errorf("v2 got %s of the calls, want 10%% ± 3%%", pct(v2))
	}

	conn, err := b.web.Conn(host("checkout"))
	must(t, err)
	b.setWeights(t, ts, 0, 100)
	sw := watchSwitch(ctx, conn, time.Now(), podsWithPrefix("checkout-v1-"), time.Second, 10*time.Second, 20000)
	t.Logf("flip to 0/100: last call on v1 ended %s after the API write; before: %s; after: %s", sw.Propagation.Round(time.Millisecond), sw.Before, sw.After)
	if !sw.Settled {
		t.Fatalf("calls still landed on v1 10s after the flip")
	}
	if sw.Propagation > time.Second {
		t.Errorf("calls moved to v2 %s after the write, want within 1s", sw.Propagation.Round(time.Millisecond))
	}
	if f := sw.Before.Failed() + sw.After.Failed(); f > 0 {
		t.Errorf("%d calls failed during the flip", f)
	}
	if got := sw.After.Share("checkout-v2-"); got != 1 {
		t.Errorf("after the flip v2 got %s of the calls, want 100%%", pct(got))
	}
}

// testCanaryStepsFromZero: a canary as Flagger and Argo Rollouts run one,
// from weight 0 through 10, 50 and 100 and back to 0 (a rollback), under
// calls made one after another the whole time: no call fails on any step.
// The step out of 0 used to fail the first calls on proxyless gRPC, whose
// channel had no cluster for a backend at weight 0.
func (b *box) testCanaryStepsFromZero(t *testing.T) {
	ctx := t.Context()
	b.versions(t, "billing", 1, 1)
	b.reachable(t, "billing", b.web)
	ts := b.split(t, "billing-canary", "billing", 100, 0)
	conn, err := b.web.Conn(host("billing"))
	must(t, err)

	// Four callers, each making calls one after another until the steps
	// are done (at most a minute and 50000 calls each).
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	stop := cluster.Background(lctx, conn, 4, 50000, 5*time.Second)
	for _, w := range []int32{10, 50, 100, 0} {
		time.Sleep(300 * time.Millisecond)
		b.setWeights(t, ts, 100-w, w)
		b.waitProgrammed(t, ts)
	}
	time.Sleep(300 * time.Millisecond)
	tally, failed := cluster.TallyOf(stop())
	for _, c := range failed {
		t.Errorf("call at %s failed during the canary: %v", c.Start.Format("15:04:05.000"), c.Err)
	}
	t.Logf("0 → 10 → 50 → 100 → 0 under load: %s", tally)
	if tally.Share("billing-v2-") == 0 || tally.Share("billing-v1-") == 0 {
		t.Errorf("both versions should have had calls during the canary: %s", tally)
	}
	if after := load(t, ctx, b.web, host("billing"), 500, 4); after.Share("billing-v1-") != 1 {
		t.Errorf("after the rollback to 0: %s, want every call on v1", after)
	}
}

// testControllerRestart: with the controller killed, workloads keep their
// last configuration and traffic keeps flowing; once it is back, a new
// TrafficSplit change reaches them.
func (b *box) testControllerRestart(t *testing.T) {
	ctx := t.Context()
	b.versions(t, "orders", 2, 1)
	ts := b.split(t, "orders-rollout", "orders", 0, 100)
	b.reachable(t, "orders", b.web)
	if before := load(t, ctx, b.web, host("orders"), 200, 4); before.Share("orders-v2-") != 1 {
		t.Fatalf("before the restart: %s, want every call on v2", before)
	}

	b.KillController()
	down := load(t, ctx, b.web, host("orders"), 500, 4)
	t.Logf("controller down: %s", down)
	if down.Failed() > 0 {
		t.Errorf("%d of %d calls failed while the controller was down", down.Failed(), down.Calls)
	}
	if got := down.Share("orders-v2-"); got != 1 {
		t.Errorf("with the controller down v2 got %s of the calls, want the last configuration (100%%)", pct(got))
	}

	start := time.Now()
	must(t, b.StartController(ctx))
	t.Logf("controller ready again after %s", time.Since(start).Round(time.Millisecond))
	conn, err := b.web.Conn(host("orders"))
	must(t, err)
	b.setWeights(t, ts, 100, 0)
	written := time.Now()
	sw := watchSwitch(ctx, conn, written, podsWithPrefix("orders-v2-"), time.Second, 30*time.Second, 100000)
	t.Logf("after the restart, flip back to 100/0: last call on v2 ended %s after the API write; before: %s; after: %s", sw.Propagation.Round(time.Millisecond), sw.Before, sw.After)
	if !sw.Settled {
		t.Fatalf("the change made after the restart did not reach the client within 30s")
	}
	// v1 had weight 0. grpc-go drops zero-weight clusters from a
	// weighted route, and a cluster new to the channel fails the first
	// picks ("unknown cluster selected for RPC") while the channel builds
	// it; the route Weft adds that never matches keeps v1's cluster built,
	// so the step out of 0 must fail no call.
	for _, c := range sw.Calls {
		if c.err != nil {
			t.Errorf("call failed on the step out of weight 0: %v", c.err)
		}
	}
	ok := sw.After.Calls - sw.After.Failed()
	if ok == 0 || sw.After.ByPod["orders-v1-0"]+sw.After.ByPod["orders-v1-1"] != ok {
		t.Errorf("after the change %d calls succeeded and v1 got %s of them, want some and all", ok, pct(sw.After.Share("orders-v1-")))
	}
	b.waitProgrammed(t, ts)
}

// testHeaderRoute: a GRPCRoute attached to a Service (GAMMA) sends calls
// with x-canary: true to v2 and the rest to v1.
func (b *box) testHeaderRoute(t *testing.T) {
	ctx := t.Context()
	b.versions(t, "catalog", 1, 1)
	backend := func(svc string) []gwapiv1.GRPCBackendRef {
		return []gwapiv1.GRPCBackendRef{{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
			Name: gwapiv1.ObjectName(svc), Port: ptr.To(gwapiv1.PortNumber(port)),
		}}}}
	}
	route := &gwapiv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "catalog-canary"},
		Spec: gwapiv1.GRPCRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{
				Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: "catalog", Port: ptr.To(gwapiv1.PortNumber(port)),
			}}},
			Rules: []gwapiv1.GRPCRouteRule{
				{
					Matches:     []gwapiv1.GRPCRouteMatch{{Headers: []gwapiv1.GRPCHeaderMatch{{Name: "x-canary", Value: "true"}}}},
					BackendRefs: backend("catalog-v2"),
				},
				{BackendRefs: backend("catalog-v1")},
			},
		},
	}
	must(t, b.Client.Create(ctx, route))
	b.waitRouteAccepted(t, route)

	canary := metadata.AppendToOutgoingContext(ctx, "x-canary", "true")
	// Routes carry no Programmed condition: wait until both kinds of
	// call land where the route says, 20 times in a row.
	streak := 0
	eventually(t, 30*time.Second, "the route reaches the client", func() (bool, string) {
		a, errA := echo(canary, b.web, host("catalog"), 5*time.Second)
		o, errO := echo(ctx, b.web, host("catalog"), 5*time.Second)
		if errA == nil && errO == nil && a == "catalog-v2-0" && o == "catalog-v1-0" {
			streak++
		} else {
			streak = 0
		}
		return streak >= 20, "with header: " + a + ", without: " + o
	})
	with := load(t, canary, b.web, host("catalog"), 500, 4)
	without := load(t, ctx, b.web, host("catalog"), 500, 4)
	t.Logf("x-canary: true → %s", with)
	t.Logf("no header → %s", without)
	if with.Share("catalog-v2-") != 1 || with.Failed() > 0 {
		t.Errorf("calls with x-canary: true: %s, want all on v2", with)
	}
	if without.Share("catalog-v1-") != 1 || without.Failed() > 0 {
		t.Errorf("calls without the header: %s, want all on v1", without)
	}
}

// testRetries: a backend that fails every second call with UNAVAILABLE
// fails half the calls without a RetryPolicy and (almost) none with
// attempts: 3.
func (b *box) testRetries(t *testing.T) {
	ctx := t.Context()
	b.service(t, "payments", map[string]string{"app": "payments"})
	p := b.backend(t, "payments-0", "payments", map[string]string{"app": "payments"})
	b.reachable(t, "payments", b.web)
	if warm := load(t, ctx, b.web, host("payments"), 20, 1); warm.Failed() > 0 {
		t.Fatalf("healthy backend: %s", warm)
	}
	p.Behaviour.SetFailures(2, codes.Unavailable)

	const n = 1000
	before := p.Behaviour.Calls()
	plain := load(t, ctx, b.web, host("payments"), n, 1)
	t.Logf("no RetryPolicy: %s; failure rate %s; backend saw %d tries", plain, pct(plain.FailureRate()), p.Behaviour.Calls()-before)
	if r := plain.FailureRate(); r < 0.4 || r > 0.6 {
		t.Errorf("without retries %s of the calls failed, want about 50%%", pct(r))
	}

	rp := &meshv1alpha1.RetryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "payments-retries"},
		Spec: meshv1alpha1.RetryPolicySpec{
			TargetRef: meshv1alpha1.RouteTargetReference{Kind: "Service", Name: "payments"},
			Attempts:  ptr.To[int32](3),
			RetryOn:   []meshv1alpha1.RetryOn{"unavailable"},
			Backoff:   &meshv1alpha1.RetryBackoff{BaseInterval: metav1.Duration{Duration: time.Millisecond}},
		},
	}
	must(t, b.Client.Create(ctx, rp))
	b.waitProgrammed(t, rp)
	before = p.Behaviour.Calls()
	retried := load(t, ctx, b.web, host("payments"), n, 1)
	tries := p.Behaviour.Calls() - before
	t.Logf("RetryPolicy attempts=3: %s; failure rate %s; backend saw %d tries for %d calls", retried, pct(retried.FailureRate()), tries, retried.Calls)
	if r := retried.FailureRate(); r >= 0.02 {
		t.Errorf("with retries %s of the calls failed, want under 2%%", pct(r))
	}
	if tries <= int64(retried.Calls) {
		t.Errorf("the backend saw %d tries for %d calls: nothing was retried", tries, retried.Calls)
	}
}

// testTimeout: a RetryPolicy's timeout bounds calls to a slow backend; the
// client gets DEADLINE_EXCEEDED at that time, without a deadline of its
// own.
func (b *box) testTimeout(t *testing.T) {
	ctx := t.Context()
	b.service(t, "inventory", map[string]string{"app": "inventory"})
	p := b.backend(t, "inventory-0", "inventory", map[string]string{"app": "inventory"})
	b.reachable(t, "inventory", b.web)
	p.Behaviour.SetDelay(2 * time.Second)
	start := time.Now()
	_, err := echo(ctx, b.web, host("inventory"), 10*time.Second)
	t.Logf("slow backend without a timeout: answered in %s (err %v)", time.Since(start).Round(time.Millisecond), err)
	if err != nil {
		t.Errorf("without a timeout the slow call should succeed: %v", err)
	}

	const timeout = 300 * time.Millisecond
	rp := &meshv1alpha1.RetryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "inventory-timeout"},
		Spec: meshv1alpha1.RetryPolicySpec{
			TargetRef: meshv1alpha1.RouteTargetReference{Kind: "Service", Name: "inventory"},
			Attempts:  ptr.To[int32](0),
			Timeout:   &metav1.Duration{Duration: timeout},
		},
	}
	must(t, b.Client.Create(ctx, rp))
	b.waitProgrammed(t, rp)
	var worst, best time.Duration
	best = time.Hour
	for range 10 {
		start := time.Now()
		_, err := echo(ctx, b.web, host("inventory"), 10*time.Second)
		took := time.Since(start)
		worst, best = max(worst, took), min(best, took)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("call to the slow backend: %v after %s, want DEADLINE_EXCEEDED at %s", err, took, timeout)
		}
	}
	t.Logf("timeout %s: 10 calls ended with DEADLINE_EXCEEDED after %s to %s", timeout, best.Round(time.Millisecond), worst.Round(time.Millisecond))
	if best < timeout-20*time.Millisecond || worst > timeout+300*time.Millisecond {
		t.Errorf("calls ended after %s to %s, want at the %s timeout", best, worst, timeout)
	}
}
