package translate

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/ir"
)

// syntheticMesh is a mesh of n Services spread over n/50 namespaces, each
// with an HTTP and a TCP port, three endpoints and one proxy group of two
// pods. One Service in five has a weighted split, one in three a retry
// policy, retry budget and circuit breaker, one in four an access policy,
// and one in 25 a consumer route from the next namespace. Every namespace
// is Strict.
func syntheticMesh(n int) *ir.Mesh { return syntheticMeshCalled(n, 0) }

// syntheticMeshCalled is syntheticMesh where, when callers > 0, every
// Service's AccessPolicy lets in exactly the identities of the callers
// Services before it (by exact SPIFFE ID), instead of one in four letting
// in its namespace: the shape of a mesh whose services each have a few
// known clients.
func syntheticMeshCalled(n, callers int) *ir.Mesh {
	nns := max(1, n/50)
	m := &ir.Mesh{ClusterDomain: "cluster.local"}
	for i := range nns {
		m.Namespaces = append(m.Namespaces, &ir.Namespace{Name: fmt.Sprintf("ns-%03d", i), MTLS: ir.MTLSStrict, TrustDomain: "cluster.local"})
	}
	name := func(i int) string { return fmt.Sprintf("svc-%05d", i) }
	ns := func(i int) string { return fmt.Sprintf("ns-%03d", i%nns) }
	host := func(i int) string { return name(i) + "." + ns(i) + ".svc.cluster.local" }
	timeout := ir.Duration(5 * time.Second)
	for i := range n {
		ref := ir.ObjectRef{Kind: "Service", Namespace: ns(i), Name: name(i)}
		id := identity.SpiffeID("cluster.local", ns(i), name(i))
		httpCluster := ir.ClusterName(host(i), 80)
		var eps []ir.Endpoint
		for e := range 3 {
			eps = append(eps, ir.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", 128+(i>>14), (i>>6)&255, (i&63)<<2|e), Port: 8080, Health: ir.HealthHealthy, Zone: fmt.Sprintf("zone-%d", e)})
		}
		tcpEps := make([]ir.Endpoint, len(eps))
		for e, ep := range eps {
			ep.Port = 9000
			tcpEps[e] = ep
		}
		def := &ir.Route{Name: "default", Source: ref, Backends: []ir.Backend{{Cluster: httpCluster, Weight: 1, Service: ref, Port: 80}}}
		routes := []*ir.Route{def}
		if i%5 == 0 {
			other := (i + 1) % n
			routes = []*ir.Route{{
				Name:   "trafficsplit/" + ns(i) + "/" + name(i),
				Source: ir.ObjectRef{Group: "mesh.weft.dev", Kind: "TrafficSplit", Namespace: ns(i), Name: name(i)},
				Backends: []ir.Backend{
					{Cluster: httpCluster, Weight: 90},
					{Cluster: ir.ClusterName(host(other), 80), Weight: 10},
				},
				Timeout: &timeout,
			}}
		}
		port := &ir.Port{Name: "http", Port: 80, Protocol: ir.ProtocolHTTP, Cluster: httpCluster, Endpoints: eps, Routes: routes}
		if i%3 == 0 {
			src := ir.ObjectRef{Group: "mesh.weft.dev", Kind: "RetryPolicy", Namespace: ns(i), Name: name(i)}
			for _, r := range routes {
				r.Retry = &ir.Retry{Source: src, Attempts: 2, PerTryTimeout: ir.Duration(time.Second), RetryOn: []string{"5xx", "connect-failure"}, BaseInterval: ir.Duration(25 * time.Millisecond)}
			}
			port.RetryBudget = &ir.RetryBudget{Source: src, Percent: 20, MinRetryConcurrency: 3}
			c5 := uint32(5)
			port.CircuitBreaker = &ir.CircuitBreaker{MaxConnections: &c5, Outlier: &ir.OutlierDetection{Consecutive5xx: &c5, Interval: ir.Duration(10 * time.Second), BaseEjectionTime: ir.Duration(30 * time.Second), MaxEjectionPercent: 50}}
		}
		if i%25 == 0 && nns > 1 {
			port.ConsumerRoutes = []*ir.ConsumerRoutes{{Namespace: ns(i + 1), Routes: []*ir.Route{{
				Name: "httproute/" + ns(i+1) + "/pin", Source: ir.ObjectRef{Kind: "HTTPRoute", Namespace: ns(i + 1), Name: "pin"},
				Matches:  []ir.Match{{Headers: []ir.StringMatch{{Name: "x-pin", Type: ir.MatchExact, Value: "1"}}}},
				Backends: []ir.Backend{{Cluster: httpCluster, Weight: 1}},
			}, def}}}
		}
		var policies []*ir.AccessPolicy
		switch {
		case callers > 0:
			var principals []ir.Principal
			for c := 1; c <= callers; c++ {
				j := (i - c + n) % n
				principals = append(principals, ir.Principal{Exact: identity.SpiffeID("cluster.local", ns(j), name(j))})
			}
			policies = []*ir.AccessPolicy{{
				Source: ir.ObjectRef{Group: "mesh.weft.dev", Kind: "AccessPolicy", Namespace: ns(i), Name: name(i)},
				Action: ir.AccessAllow,
				Rules:  []ir.AccessRule{{Principals: principals}},
			}}
		case i%4 == 0:
			policies = []*ir.AccessPolicy{{
				Source: ir.ObjectRef{Group: "mesh.weft.dev", Kind: "AccessPolicy", Namespace: ns(i), Name: name(i)},
				Action: ir.AccessAllow,
				Rules:  []ir.AccessRule{{Principals: []ir.Principal{{Prefix: "spiffe://cluster.local/ns/" + ns(i) + "/"}}}},
			}}
		}
		m.Services = append(m.Services, &ir.Service{
			Source: ref, Namespace: ns(i), Name: name(i), Hostname: host(i),
			VIPs:         []string{fmt.Sprintf("10.%d.%d.%d", 96+(i>>16), (i>>8)&255, i&255)},
			LoadBalancer: ir.LoadBalancer{Policy: ir.LBLeastRequest},
			Identities:   []string{id}, MTLS: ir.MTLSStrict, AccessPolicies: policies,
			Ports: []*ir.Port{port, {Name: "tcp", Port: 9000, Protocol: ir.ProtocolTCP, Cluster: ir.ClusterName(host(i), 9000), Endpoints: tcpEps}},
		})
		m.ProxyGroups = append(m.ProxyGroups, &ir.ProxyGroup{
			Key: ns(i) + "/" + name(i) + "/0001", Namespace: ns(i), ServiceAccount: name(i), Identity: id, MTLS: ir.MTLSStrict,
			Inbound: []*ir.InboundPort{
				{Port: 8080, Protocol: ir.ProtocolHTTP, Services: []ir.ObjectRef{ref}, AccessPolicies: policies},
				{Port: 9000, Protocol: ir.ProtocolTCP, Services: []ir.ObjectRef{ref}, AccessPolicies: policies},
			},
			Members: []string{name(i) + "-a." + ns(i), name(i) + "-b." + ns(i)},
		})
	}
	return m
}

// BenchmarkTranslate translates every proxy group of a synthetic mesh
// (Prepare once, ForGroup per group, Endpoints once) and reports the
// configuration one proxy receives, endpoints of its clusters included.
// callers=5 is the scoped shape: every Service lets in five callers.
func BenchmarkTranslate(b *testing.B) {
	for _, shape := range []struct{ n, callers int }{{100, 0}, {1000, 0}, {5000, 0}, {1000, 5}, {5000, 5}} {
		name := fmt.Sprintf("services=%d", shape.n)
		if shape.callers > 0 {
			name += fmt.Sprintf(",callers=%d", shape.callers)
		}
		b.Run(name, func(b *testing.B) {
			m := syntheticMeshCalled(shape.n, shape.callers)
			b.ReportAllocs()
			var cfgs []*Config
			var eps []types.Resource
			for b.Loop() {
				p, err := Prepare(m, Options{})
				if err != nil {
					b.Fatal(err)
				}
				cfgs = make([]*Config, len(m.ProxyGroups))
				for i, g := range m.ProxyGroups {
					if cfgs[i], err = p.ForGroup(g); err != nil {
						b.Fatal(err)
					}
				}
				eps = Endpoints(m)
			}
			b.ReportMetric(float64(configBytes(cfgs, eps))/float64(len(cfgs)), "config-bytes/proxy")
		})
	}
}

// configBytes is the serialised size of every group's configuration plus
// the endpoints of its clusters (what its EDS subscription asks for),
// measuring each shared message once.
func configBytes(cfgs []*Config, eps []types.Resource) int {
	sizes := make(map[types.Resource]int)
	size := func(rs []types.Resource) int {
		total := 0
		for _, r := range rs {
			s, ok := sizes[r]
			if !ok {
				s = proto.Size(r)
				sizes[r] = s
			}
			total += s
		}
		return total
	}
	byName := make(map[string]types.Resource, len(eps))
	for _, e := range eps {
		byName[resourceName(e)] = e
	}
	edsOf := func(clusters []types.Resource) []types.Resource {
		var out []types.Resource
		for _, c := range clusters {
			if e, ok := byName[resourceName(c)]; ok {
				out = append(out, e)
			}
		}
		return out
	}
	shared := make(map[*Resources]int)
	total := 0
	for _, c := range cfgs {
		s, ok := shared[c.Shared]
		if !ok {
			s = size(c.Shared.Listeners) + size(c.Shared.Routes) + size(c.Shared.Clusters) + size(c.Shared.Secrets) + size(edsOf(c.Shared.Clusters))
			shared[c.Shared] = s
		}
		total += s + size(c.Own.Listeners) + size(c.Own.Routes) + size(c.Own.Clusters) + size(c.Own.Secrets) + size(edsOf(c.Own.Clusters))
	}
	return total
}

// BenchmarkRebuild is what the controller does after a TrafficSplit weight
// change: Prepare, ForGroup for every group and Endpoints through a Memo
// that holds the previous rebuild, with one route changed.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			m := syntheticMesh(n)
			memo := NewMemo()
			rebuild := func() {
				p, err := memo.Prepare(m, Options{})
				if err != nil {
					b.Fatal(err)
				}
				for _, g := range m.ProxyGroups {
					if _, err := memo.ForGroup(p, g); err != nil {
						b.Fatal(err)
					}
				}
				memo.Endpoints(p)
			}
			rebuild()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r := m.Services[0].Ports[0].Routes[0]
				r.Backends = slices.Clone(r.Backends)
				r.Backends[0].Weight, r.Backends[1].Weight = uint32(i%100), uint32(100-i%100)
				i++
				rebuild()
			}
		})
	}
}
