package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

// waitProgrammed waits until a mesh policy's status says that its current
// generation runs in every connected workload: what a user (or Flagger)
// would wait for before looking at traffic.
func (b *box) waitProgrammed(t *testing.T, obj client.Object) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%T %s Programmed", obj, obj.GetName()), func() (bool, string) {
		if err := b.Client.Get(t.Context(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err.Error()
		}
		var conds []metav1.Condition
		switch o := obj.(type) {
		case *meshv1alpha1.TrafficSplit:
			conds = o.Status.Conditions
		case *meshv1alpha1.RetryPolicy:
			conds = o.Status.Conditions
		case *meshv1alpha1.CircuitBreaker:
			conds = o.Status.Conditions
		case *meshv1alpha1.AccessPolicy:
			conds = o.Status.Conditions
		case *meshv1alpha1.FaultInjection:
			conds = o.Status.Conditions
		case *meshv1alpha1.RateLimitPolicy:
			conds = o.Status.Conditions
		default:
			t.Fatalf("waitProgrammed: %T has no Programmed condition", obj)
		}
		c := meta.FindStatusCondition(conds, meshv1alpha1.ConditionProgrammed)
		if c == nil {
			return false, fmt.Sprintf("no Programmed condition: %+v", conds)
		}
		return c.Status == metav1.ConditionTrue && c.ObservedGeneration == obj.GetGeneration(), fmt.Sprintf("%+v", conds)
	})
}

// waitRouteAccepted waits until a route's status accepts it for every
// parent at its current generation.
func (b *box) waitRouteAccepted(t *testing.T, route *gwapiv1.GRPCRoute) {
	t.Helper()
	eventually(t, 30*time.Second, "GRPCRoute "+route.Name+" Accepted", func() (bool, string) {
		if err := b.Client.Get(t.Context(), client.ObjectKeyFromObject(route), route); err != nil {
			return false, err.Error()
		}
		if len(route.Status.Parents) == 0 {
			return false, "no parent status"
		}
		for _, p := range route.Status.Parents {
			c := meta.FindStatusCondition(p.Conditions, string(gwapiv1.RouteConditionAccepted))
			if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != route.Generation {
				return false, fmt.Sprintf("%+v", p.Conditions)
			}
		}
		return true, ""
	})
}

// split creates TrafficSplit tsName on Service name with weights v1 and v2
// for name-v1 and name-v2 (see versions), and waits until it is
// Programmed.
func (b *box) split(t *testing.T, tsName, name string, v1, v2 int32) *meshv1alpha1.TrafficSplit {
	t.Helper()
	ts := &meshv1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: tsName},
		Spec: meshv1alpha1.TrafficSplitSpec{Service: name, Backends: []meshv1alpha1.TrafficSplitBackend{
			{Service: name + "-v1", Weight: v1}, {Service: name + "-v2", Weight: v2},
		}},
	}
	must(t, b.Client.Create(t.Context(), ts))
	b.waitProgrammed(t, ts)
	return ts
}

// setWeights changes a TrafficSplit's weights, as a canary controller
// would, and returns when the API server has the change.
func (b *box) setWeights(t *testing.T, ts *meshv1alpha1.TrafficSplit, weights ...int32) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := b.Client.Get(t.Context(), client.ObjectKeyFromObject(ts), ts); err != nil {
			return err
		}
		for i := range ts.Spec.Backends {
			ts.Spec.Backends[i].Weight = weights[i]
		}
		return b.Client.Update(t.Context(), ts)
	})
	must(t, err)
}

// call is one call's outcome and timing.
type call struct {
	start, end time.Time
	pod        string
	err        error
}

// switchover is what clients saw after a change: how long calls kept
// landing on the old pods, and what came after.
type switchover struct {
	// Propagation is from the change to the end of the last call answered
	// by an old pod (0 when none was after the change).
	Propagation time.Duration
	// Before counts the calls up to and including that last one; After
	// the calls that followed.
	Before, After cluster.Tally
	Settled       bool
	// Calls are every call made, in order.
	Calls []call
}

// watchSwitch makes calls one after another from the moment of a change
// (since) until no call has landed on an old pod for quiet, or limit or
// maxCalls is reached, whichever is first.
func watchSwitch(ctx context.Context, conn grpc.ClientConnInterface, since time.Time, old func(pod string) bool, quiet, limit time.Duration, maxCalls int) switchover {
	var calls []call
	lastOld := since
	deadline := time.Now().Add(limit)
	for len(calls) < maxCalls && time.Now().Before(deadline) && ctx.Err() == nil {
		c := call{start: time.Now()}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c.pod, c.err = cluster.Echo(cctx, conn)
		cancel()
		c.end = time.Now()
		calls = append(calls, c)
		if c.err == nil && old(c.pod) {
			lastOld = c.end
		}
		if c.end.Sub(lastOld) >= quiet {
			break
		}
	}
	s := switchover{Before: cluster.NewTally(), After: cluster.NewTally(), Calls: calls}
	s.Settled = len(calls) > 0 && calls[len(calls)-1].end.Sub(lastOld) >= quiet
	if lastOld.After(since) {
		s.Propagation = lastOld.Sub(since)
	}
	for _, c := range calls {
		if !c.end.After(lastOld) {
			s.Before.Add(c.pod, c.err)
			s.Before.Elapsed = c.end.Sub(since)
		} else {
			s.After.Add(c.pod, c.err)
			s.After.Elapsed = c.end.Sub(lastOld)
		}
	}
	return s
}

// podsWithPrefix is a predicate on pod names.
func podsWithPrefix(prefixes ...string) func(string) bool {
	return func(pod string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(pod, p) })
	}
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", f*100) }
