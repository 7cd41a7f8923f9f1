package controllers_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// BenchmarkEndpointChurn measures endpoint churn: EndpointSlice changes
// written at a steady rate across the mesh (pods turning not ready and
// ready again, one Service after another), with the controller and the
// simulated Envoy proxies of BenchmarkPropagation (which subscribe to the
// endpoints of their clusters by name). For each change it times the write
// until the last proxy holding that Service's cluster acknowledged the new
// assignment: ack-p50-ms and ack-p99-ms (nearest rank), over samples
// changes. pushes/change is how many endpoint responses the proxies
// received per change: the proxies holding the cluster, not the mesh.
//
// callers=5 is the scoped shape, in which ten proxies hold each cluster;
// without it every proxy holds every cluster.
func BenchmarkEndpointChurn(b *testing.B) {
	const perSecond = 100
	for _, size := range []struct{ services, proxies, callers int }{{1000, 2000, 5}, {1000, 2000, 0}, {5000, 10000, 5}} {
		name := fmt.Sprintf("services=%d,proxies=%d,rate=%d/s", size.services, size.proxies, perSecond)
		if size.callers > 0 {
			name += fmt.Sprintf(",callers=%d", size.callers)
		}
		b.Run(name, func(b *testing.B) {
			r := setupPropagation(b, size.services, size.proxies, false, size.callers)
			eds := newEDSBoard()
			r.acks.await(routeOf(r.splits[0]), r.holders)
			r.startProxies(b, 1, eds)
			if _, err := r.acks.waitAll(b.Context(), 10*time.Minute); err != nil {
				b.Fatal(err)
			}
			perService := size.proxies / size.services
			endpointSlices := make([]*discoveryv1.EndpointSlice, size.services)
			for i := range size.services {
				es := &discoveryv1.EndpointSlice{}
				if err := r.h.c.Get(b.Context(), client.ObjectKey{Namespace: "bench", Name: fmt.Sprintf("s%d-1", i)}, es); err != nil {
					b.Fatal(err)
				}
				endpointSlices[i] = es
			}
			n := max(b.N, 3*minSamples)
			tick := time.NewTicker(time.Second / perSecond)
			defer tick.Stop()
			pushesBefore := eds.pushes()
			// WEFT_BENCH_CPUPROFILE profiles the changes only.
			stopProfile := xdstest.ProfileCPU(b)
			b.ResetTimer()
			for k := range n {
				<-tick.C
				i := k % size.services
				es := endpointSlices[i]
				orig := es.DeepCopy()
				// The first pod of the Service turns not ready, or ready
				// again.
				ep := &es.Endpoints[0]
				ep.Conditions.Ready = ptr.To(!ptr.Deref(ep.Conditions.Ready, true))
				eds.expect(clusterOf(i), r.holders, time.Now())
				if err := r.h.c.Patch(b.Context(), es, client.MergeFrom(orig)); err != nil {
					b.Fatal(err)
				}
			}
			samples, err := eds.wait(b, 2*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			stopProfile()
			b.ReportMetric(nearestRank(samples, 0.50), "ack-p50-ms")
			b.ReportMetric(nearestRank(samples, 0.99), "ack-p99-ms")
			b.ReportMetric(float64(len(samples)), "samples")
			b.ReportMetric(float64(eds.pushes()-pushesBefore)/float64(len(samples)), "pushes/change")
			b.Logf("%d changes at %d/s (%d pods per Service): write → last ACK %s", len(samples), perSecond, perService, spread(samples))
		})
	}
}

func clusterOf(i int) string { return fmt.Sprintf("outbound|80||s%d.bench.svc.cluster.local", i) }

// edsBoard follows endpoint changes in flight: for each changed cluster,
// when it was written and which proxies acknowledged an assignment of it
// since.
type edsBoard struct {
	mu      sync.Mutex
	pending map[string]*edsChange
	samples []time.Duration
	sent    int
	done    chan struct{}
}

type edsChange struct {
	start time.Time
	want  int
	acked map[string]bool
}

func newEDSBoard() *edsBoard {
	return &edsBoard{pending: map[string]*edsChange{}, done: make(chan struct{}, 1)}
}

// expect starts timing a change of cluster that count proxies hold. A
// cluster's previous change must be done: the benchmark changes each
// Service again only after all the others.
func (e *edsBoard) expect(cluster string, count int, start time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pending[cluster] = &edsChange{start: start, want: count, acked: map[string]bool{}}
}

// record notes that node acknowledged the endpoints of the named
// clusters.
func (e *edsBoard) record(node string, names []string) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sent++
	for _, name := range names {
		c := e.pending[name]
		if c == nil || c.acked[node] {
			continue
		}
		c.acked[node] = true
		if len(c.acked) == c.want {
			e.samples = append(e.samples, now.Sub(c.start))
			delete(e.pending, name)
			select {
			case e.done <- struct{}{}:
			default:
			}
		}
	}
}

func (e *edsBoard) pushes() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sent
}

// wait returns the samples once no change is in flight.
func (e *edsBoard) wait(b *testing.B, timeout time.Duration) ([]time.Duration, error) {
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		left := len(e.pending)
		var some string
		for name, c := range e.pending {
			some = fmt.Sprintf("%s (%d of %d proxies)", name, len(c.acked), c.want)
			break
		}
		samples := slices.Clone(e.samples)
		e.mu.Unlock()
		if left == 0 {
			return samples, nil
		}
		select {
		case <-e.done:
		case <-deadline:
			return nil, fmt.Errorf("%d endpoint changes not acknowledged by every proxy holding them, e.g. %s", left, some)
		case <-b.Context().Done():
			return nil, b.Context().Err()
		}
	}
}
