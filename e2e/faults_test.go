package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

// testFaults injects faults through the caller's proxyless gRPC client, as
// grpc-go applies Envoy's fault filter: an abort of 30% on a Service, a
// delay of 200ms on half of one route rule's calls (named by the rule's
// ExtensionRef filter), and an abort only for calls carrying a header.
func (b *box) testFaults(t *testing.T) {
	ctx := t.Context()
	b.service(t, "flaky", map[string]string{"app": "flaky"})
	b.backend(t, "flaky-0", "flaky", map[string]string{"app": "flaky"})
	b.reachable(t, "flaky", b.web)

	// 30% of calls to the Service fail with UNAVAILABLE.
	abort := &meshv1alpha1.FaultInjection{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "flaky-abort"},
		Spec: meshv1alpha1.FaultInjectionSpec{
			TargetRef: &meshv1alpha1.RouteTargetReference{Kind: "Service", Name: "flaky"},
			Abort:     &meshv1alpha1.FaultAbort{GRPCStatus: ptr.To(meshv1alpha1.GRPCStatusCode("UNAVAILABLE")), Percent: ptr.To[int32](30)},
		},
	}
	must(t, b.Client.Create(ctx, abort))
	b.waitProgrammed(t, abort)
	tally := load(t, ctx, b.web, host("flaky"), 2000, 8)
	t.Logf("abort 30%% UNAVAILABLE → %s", tally)
	if rate := tally.FailureRate(); rate < 0.27 || rate > 0.33 || tally.ByCode[codes.Unavailable] != tally.Failed() {
		t.Errorf("abort 30%%: %.1f%% of %d calls failed (%v), want 27-33%%, all UNAVAILABLE", 100*rate, tally.Calls, tally.ByCode)
	}

	// Only calls carrying x-fault: on are aborted (100%, HTTP 503, which
	// gRPC reads as UNAVAILABLE).
	must(t, b.Client.Get(ctx, client.ObjectKeyFromObject(abort), abort))
	abort.Spec.Abort = &meshv1alpha1.FaultAbort{HTTPStatus: ptr.To[int32](503)}
	abort.Spec.Headers = []meshv1alpha1.FaultHeaderMatch{{Name: "x-fault", Value: "on"}}
	must(t, b.Client.Update(ctx, abort))
	b.waitProgrammed(t, abort)
	tagged := metadata.AppendToOutgoingContext(ctx, "x-fault", "on")
	eventually(t, 15*time.Second, "calls without the header pass", func() (bool, string) {
		plain := load(t, ctx, b.web, host("flaky"), 200, 4)
		return plain.Failed() == 0, plain.String()
	})
	with := load(t, tagged, b.web, host("flaky"), 200, 4)
	if with.ByCode[codes.Unavailable] != with.Calls {
		t.Errorf("calls with x-fault: on: %s, want every one UNAVAILABLE", with)
	}
	must(t, b.Client.Delete(ctx, abort))

	// A route rule names a FaultInjection without a targetRef: half its
	// calls wait 200ms.
	slow := &meshv1alpha1.FaultInjection{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "flaky-slow"},
		Spec:       meshv1alpha1.FaultInjectionSpec{Delay: &meshv1alpha1.FaultDelay{Fixed: metav1.Duration{Duration: 200 * time.Millisecond}, Percent: ptr.To[int32](50)}},
	}
	must(t, b.Client.Create(ctx, slow))
	route := &gwapiv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "flaky-slow"},
		Spec: gwapiv1.GRPCRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{
				Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: "flaky", Port: ptr.To(gwapiv1.PortNumber(port)),
			}}},
			Rules: []gwapiv1.GRPCRouteRule{{
				Filters: []gwapiv1.GRPCRouteFilter{{Type: gwapiv1.GRPCRouteFilterExtensionRef, ExtensionRef: &gwapiv1.LocalObjectReference{
					Group: gwapiv1.Group(meshv1alpha1.GroupVersion.Group), Kind: "FaultInjection", Name: "flaky-slow",
				}}},
				BackendRefs: []gwapiv1.GRPCBackendRef{{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
					Name: "flaky", Port: ptr.To(gwapiv1.PortNumber(port)),
				}}}},
			}},
		},
	}
	must(t, b.Client.Create(ctx, route))
	b.waitRouteAccepted(t, route)
	b.waitProgrammed(t, slow)
	conn, err := b.web.Conn(host("flaky"))
	must(t, err)
	var lat []time.Duration
	eventually(t, 15*time.Second, "calls are delayed", func() (bool, string) {
		lat = timedCalls(t, conn, 400, 20)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return lat[len(lat)-1] >= 200*time.Millisecond, fmt.Sprint(lat[len(lat)-1])
	})
	slowN := 0
	for _, d := range lat {
		if d >= 200*time.Millisecond {
			slowN++
		}
	}
	share := float64(slowN) / float64(len(lat))
	t.Logf("delay 200ms on 50%%: %d of %d calls took ≥ 200ms; median %s, p90 %s, fastest slow call %s", slowN, len(lat), lat[len(lat)/2], lat[len(lat)*9/10], lat[len(lat)-slowN])
	// 400 calls at 50%: a standard deviation of 2.5 points.
	if share < 0.42 || share > 0.58 {
		t.Errorf("delay 50%%: %.1f%% of calls took 200ms or more, want 42-58%%", 100*share)
	}
	if fast := lat[len(lat)-slowN-1]; fast >= 100*time.Millisecond {
		t.Errorf("the calls not delayed took up to %s", fast)
	}
}

// timedCalls makes n calls, concurrency at a time, and returns how long
// each successful one took; every call must succeed.
func timedCalls(t *testing.T, conn grpc.ClientConnInterface, n, concurrency int) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var out []time.Duration
	var failed []string
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for range next {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				start := time.Now()
				_, err := cluster.Echo(ctx, conn)
				d := time.Since(start)
				cancel()
				mu.Lock()
				if err != nil {
					failed = append(failed, status.Code(err).String())
				} else {
					out = append(out, d)
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d calls failed: %v", len(failed), n, failed[:min(len(failed), 5)])
	}
	return out
}
