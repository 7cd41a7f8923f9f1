package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"

	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// BenchmarkPush measures what the server does for one route change seen by
// every proxy: Publish, a response on every stream and every ACK back.
// Proxies are delta streams on one connection that acknowledge at once;
// each has its own group layer beside a shared view of 1000 routes and
// clusters and a layer of 1000 endpoint assignments.
func BenchmarkPush(b *testing.B) {
	for _, proxies := range []int{200, 2000} {
		b.Run(fmt.Sprintf("proxies=%d", proxies), func(b *testing.B) {
			benchPush(b, 1000, proxies)
		})
	}
}

func benchPush(b *testing.B, services, proxies int) {
	s, conn := startServerWith(b, server.Options{})
	m := newMesh(services)
	var clusters, assignments []types.Resource
	for i := range services {
		clusters = append(clusters, cluster(fmt.Sprintf("c%d", i)))
		assignments = append(assignments, cla(fmt.Sprintf("c%d", i)))
	}
	m.content = map[string]server.LayerResources{
		"view/":     {xdstest.RouteType: m.routes, xdstest.ClusterType: clusters},
		"endpoints": {xdstest.EndpointType: assignments},
	}
	m.nodes = map[string][]string{}
	for i := range proxies {
		g := fmt.Sprintf("group/%d", i)
		m.content[g] = server.LayerResources{xdstest.ClusterType: {cluster(fmt.Sprintf("inbound-%d", i))}}
		m.nodes[fmt.Sprintf("p%d.ns", i)] = []string{"view/", "endpoints", g}
	}
	if _, err := s.Publish(m.content, m.nodes, nil); err != nil {
		b.Fatal(err)
	}
	acks := &ackCounter{}
	acks.await("r0", proxies)
	for i := range proxies {
		if err := ackingProxy(b.Context(), conn, fmt.Sprintf("p%d.ns", i), acks); err != nil {
			b.Fatal(err)
		}
	}
	acks.wait(b, time.Minute)
	// WEFT_BENCH_CPUPROFILE profiles the measured changes only, not the
	// setup.
	defer xdstest.ProfileCPU(b)()
	b.ResetTimer()
	for i := range b.N {
		r := (i + 1) % services
		acks.await(fmt.Sprintf("r%d", r), proxies)
		// Never 50, the weight every route starts with.
		m.setRoute(r, uint32(51+i%49))
		if _, err := s.Publish(m.content, m.nodes, nil); err != nil {
			b.Fatal(err)
		}
		acks.wait(b, time.Minute)
	}
}

// ackCounter counts the proxies that acknowledged a response carrying one
// awaited resource.
type ackCounter struct {
	mu     sync.Mutex
	target string
	left   int
	done   chan struct{}
}

func (a *ackCounter) await(name string, n int) {
	a.mu.Lock()
	a.target, a.left, a.done = name, n, make(chan struct{})
	a.mu.Unlock()
}

func (a *ackCounter) acked(resp *discoverygrpc.DeltaDiscoveryResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.left == 0 {
		return
	}
	for _, r := range resp.GetResources() {
		if r.GetName() == a.target {
			if a.left--; a.left == 0 {
				close(a.done)
			}
			return
		}
	}
}

func (a *ackCounter) wait(b *testing.B, timeout time.Duration) {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		b.Fatalf("%d proxies did not acknowledge %s", a.left, a.target)
	}
}

// ackingProxy subscribes to every type and acknowledges every response.
func ackingProxy(ctx context.Context, conn *grpc.ClientConn, node string, acks *ackCounter) error {
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for _, typ := range []string{xdstest.ClusterType, xdstest.EndpointType, xdstest.RouteType} {
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ}); err != nil {
			return err
		}
	}
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				return
			}
			if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
				return
			}
			if resp.GetTypeUrl() == xdstest.RouteType {
				acks.acked(resp)
			}
		}
	}()
	return nil
}
