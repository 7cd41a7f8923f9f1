package e2e

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

// setLoadBalancer sets a Service's weft.dev/load-balancer annotation.
func (b *box) setLoadBalancer(t *testing.T, svc, policy string) {
	t.Helper()
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var s corev1.Service
		if err := b.Client.Get(t.Context(), client.ObjectKey{Namespace: appNS, Name: svc}, &s); err != nil {
			return err
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[meshv1alpha1.AnnotationLoadBalancer] = policy
		return b.Client.Update(t.Context(), &s)
	}))
}

// testLoadBalancing: with the default least-request policy, an instance
// that answers ten times slower than the other two gets under 15% of 3000
// concurrent calls; round robin, for comparison, gives it about a third.
// With ring-hash on a header, every value of the header stays on one
// instance. With weighted round robin, an instance that reports a high
// utilisation (ORCA) gets a small share.
func (b *box) testLoadBalancing(t *testing.T) {
	ctx := t.Context()
	labels := map[string]string{"app": "steady"}
	b.service(t, "steady", labels)
	var pods []*cluster.Pod
	for i := range 3 {
		pods = append(pods, b.backend(t, fmt.Sprintf("steady-%d", i), "steady", labels))
	}
	b.reachable(t, "steady", b.web)
	b.answering(t, b.web, "steady", pods...)
	// Delays long enough that a loaded machine's scheduling jitter (a
	// millisecond or two) does not blur the tenfold difference.
	for _, p := range pods[:2] {
		p.Behaviour.SetDelay(10 * time.Millisecond)
	}
	pods[2].Behaviour.SetDelay(100 * time.Millisecond)

	lr := load(t, ctx, b.web, host("steady"), 3000, 30)
	slowLR := lr.Share("steady-2")
	t.Logf("least-request, steady-2 ten times slower: %s", lr)
	if lr.Failed() > 0 || slowLR >= 0.15 {
		t.Errorf("least-request: the slow instance got %s of the calls (%s), want under 15%%", pct(slowLR), lr)
	}

	b.setLoadBalancer(t, "steady", "round-robin")
	var rr cluster.Tally
	eventually(t, 15*time.Second, "round robin reaches the client", func() (bool, string) {
		rr = load(t, ctx, b.web, host("steady"), 300, 30)
		return rr.Share("steady-2") > 0.25, rr.String()
	})
	rr = load(t, ctx, b.web, host("steady"), 900, 30)
	slowRR := rr.Share("steady-2")
	t.Logf("round robin, same instances: %s", rr)
	if slowRR < 0.28 || slowRR > 0.39 {
		t.Errorf("round robin: the slow instance got %s (%s), want about a third", pct(slowRR), rr)
	}

	for _, p := range pods {
		p.Behaviour.SetDelay(0)
	}
	b.setLoadBalancer(t, "steady", "ring-hash:header=x-user")
	user := func(i int) string { return fmt.Sprintf("user-%02d", i) }
	eventually(t, 15*time.Second, "ring hash reaches the client", func() (bool, string) {
		tl := load(t, metadata.AppendToOutgoingContext(ctx, "x-user", user(0)), b.web, host("steady"), 50, 5)
		return len(tl.ByPod) == 1 && tl.Failed() == 0, tl.String()
	})
	owners := map[string]int{}
	for i := range 20 {
		tl := load(t, metadata.AppendToOutgoingContext(ctx, "x-user", user(i)), b.web, host("steady"), 50, 5)
		if len(tl.ByPod) != 1 || tl.Failed() > 0 {
			t.Errorf("ring-hash: calls with x-user: %s went to %s, want one instance", user(i), tl)
		}
		for p := range tl.ByPod {
			owners[p]++
		}
	}
	t.Logf("ring-hash on x-user: 20 users, each on one instance, spread as %v", owners)
	if len(owners) < 2 {
		t.Errorf("ring-hash: 20 users all on %v, want them spread", owners)
	}

	// Weighted round robin: steady-2 reports 90% CPU at the rate the
	// others report at 10%, so its weight (qps over utilisation) is a
	// ninth of theirs: about 5% of the calls, where plain round robin gave
	// it a third.
	for i, p := range pods {
		util := 0.1
		if i == 2 {
			util = 0.9
		}
		p.Behaviour.SetLoad(util, 100)
	}
	b.setLoadBalancer(t, "steady", "weighted-round-robin")
	// Weights count once an endpoint has reported for the blackout period
	// (10s), so the shift takes that long.
	var wrr cluster.Tally
	start := time.Now()
	eventually(t, 45*time.Second, "the reported load steers calls", func() (bool, string) {
		wrr = load(t, ctx, b.web, host("steady"), 300, 10)
		return wrr.Failed() == 0 && wrr.Share("steady-2") < 0.12, wrr.String()
	})
	t.Logf("weighted round robin shifted the calls %s after it was set", time.Since(start).Round(100*time.Millisecond))
	wrr = load(t, ctx, b.web, host("steady"), 3000, 30)
	hot := wrr.Share("steady-2")
	t.Logf("weighted round robin, steady-2 reporting 90%% CPU, the others 10%%: %s", wrr)
	if hot > 0.12 || wrr.Failed() > 0 {
		t.Errorf("weighted round robin: the busy instance got %s (%s), want about 5%%", pct(hot), wrr)
	}
}
