package translate

import (
	"fmt"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/ir"
)

// translated is every resource a rebuild produced, by type and name.
type translated struct {
	msgs     map[string]types.Resource
	bytes    map[string]string
	problems []Problem
}

func translateAll(t *testing.T, m *ir.Mesh, opts Options, memo *Memo) translated {
	t.Helper()
	var p *Prepared
	var err error
	if memo != nil {
		p, err = memo.Prepare(m, opts)
	} else {
		p, err = Prepare(m, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	out := translated{msgs: map[string]types.Resource{}, bytes: map[string]string{}, problems: p.Problems()}
	add := func(kind, owner string, rs []types.Resource) {
		for _, r := range rs {
			key := kind + " " + owner + " " + resourceName(r)
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			out.msgs[key], out.bytes[key] = r, string(b)
		}
	}
	for _, g := range m.ProxyGroups {
		var cfg *Config
		if memo != nil {
			cfg, err = memo.ForGroup(p, g)
		} else {
			cfg, err = p.ForGroup(g)
		}
		if err != nil {
			t.Fatal(err)
		}
		add("shared", cfg.View, cfg.Shared.Routes)
		add("shared", cfg.View, cfg.Shared.Clusters)
		add("own", g.Key, cfg.Own.Listeners)
		add("own", g.Key, cfg.Own.Clusters)
		add("own", g.Key, cfg.Own.Secrets)
		gc, err := p.ForGRPC(g)
		if err != nil {
			t.Fatal(err)
		}
		add("grpc", gc.View, gc.Shared.Listeners)
		add("grpc", gc.View, gc.Shared.Clusters)
		add("grpc-own", g.Namespace, gc.Own.Listeners)
	}
	if memo != nil {
		add("eds", "", memo.Endpoints(p))
		memo.PruneGroups(m.ProxyGroups)
	} else {
		add("eds", "", Endpoints(m))
	}
	return out
}

// TestMemoMatchesAFreshTranslation changes one input after another and
// checks that a rebuild through the Memo produces exactly what a fresh
// translation does, and that what a change did not touch keeps its
// identity.
func TestMemoMatchesAFreshTranslation(t *testing.T) {
	m := syntheticMesh(60)
	memo := NewMemo()
	opts := Options{}
	prev := translateAll(t, m, opts, memo)
	svc := func(i int) *ir.Service { return m.Services[i] }
	httpPort := func(i int) *ir.Port { return svc(i).Ports[0] }
	route := func(i int) string { return "shared  " + ir.RouteConfigName(svc(i).Hostname, 80) }
	// The proxyless API listener of a Service's HTTP port, and its cluster.
	apiListener := func(i int) string { return "grpc  " + svc(i).Hostname + ":80" }
	grpcCluster := func(i int) string { return "grpc  " + httpPort(i).Cluster }

	steps := []struct {
		name string
		edit func()
		// changed must differ in content from the previous rebuild; same
		// must keep its identity. Both are named after the edit.
		changed, same func() []string
	}{{
		name: "split weights", edit: func() {
			r := httpPort(0).Routes[0]
			r.Backends = slices.Clone(r.Backends)
			r.Backends[0].Weight, r.Backends[1].Weight = 30, 70
		},
		changed: func() []string { return []string{route(0), apiListener(0)} },
		same: func() []string {
			return []string{route(5), "shared  " + httpPort(0).Cluster, "shared  " + httpPort(1).Cluster, "own " + m.ProxyGroups[0].Key + " " + OutboundListener,
				apiListener(5), grpcCluster(5)}
		},
	}, {
		name: "a backend's load balancing", edit: func() {
			// Service 1 is the second backend of service 0's split: the
			// split's route carries its hash policy.
			svc(1).LoadBalancer = ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: &ir.HashOn{Header: "x-user"}}
		},
		changed: func() []string {
			return []string{route(0), "shared  " + httpPort(1).Cluster, apiListener(0), grpcCluster(1)}
		},
		same: func() []string { return []string{route(5), apiListener(5)} },
	}, {
		name: "a backend that goes away", edit: func() {
			m.Services = slices.Delete(slices.Clone(m.Services), 1, 2)
		},
		changed: func() []string { return []string{route(0)} },
	}, {
		name: "a cluster IP", edit: func() {
			svc(2).VIPs = []string{"10.96.200.2"}
		},
		changed: func() []string {
			// The route configuration answers to the cluster IP as a domain.
			return []string{"own " + m.ProxyGroups[0].Key + " " + OutboundListener, route(2)}
		},
		same: func() []string { return []string{route(3), "shared  " + httpPort(2).Cluster} },
	}, {
		name: "endpoints", edit: func() {
			p := httpPort(3)
			p.Endpoints = append(slices.Clone(p.Endpoints), ir.Endpoint{Address: "10.200.0.1", Port: 8080, Health: ir.HealthHealthy})
		},
		changed: func() []string { return []string{"eds  " + httpPort(3).Cluster} },
		same:    func() []string { return []string{"eds  " + httpPort(4).Cluster, route(3)} },
	}, {
		name: "an access policy on one group", edit: func() {
			// A changed group is a new group: the memo takes the same
			// pointer as unchanged.
			g := new(*m.ProxyGroups[7])
			m.ProxyGroups = slices.Clone(m.ProxyGroups)
			m.ProxyGroups[7] = g
			in := *g.Inbound[0]
			in.AccessPolicies = []*ir.AccessPolicy{{
				Source: ir.ObjectRef{Group: "mesh.weft.dev", Kind: "AccessPolicy", Namespace: g.Namespace, Name: "deny-all"},
				Action: ir.AccessDeny,
				Rules:  []ir.AccessRule{{Principals: []ir.Principal{{Prefix: "spiffe://"}}}},
			}}
			g.Inbound = append([]*ir.InboundPort{&in}, g.Inbound[1:]...)
		},
		changed: func() []string { return []string{"own " + m.ProxyGroups[7].Key + " " + InboundListener} },
		same:    func() []string { return []string{"own " + m.ProxyGroups[8].Key + " " + InboundListener} },
	}, {
		name: "options", edit: func() { opts.DisableAccessLog = true },
		changed: func() []string {
			return []string{"own " + m.ProxyGroups[0].Key + " " + OutboundListener, "own " + m.ProxyGroups[8].Key + " " + InboundListener}
		},
	}, {
		name: "a TCP port", edit: func() {
			p := httpPort(6)
			p.Protocol, p.Routes = ir.ProtocolTCP, nil
		},
		changed: func() []string { return []string{"own " + m.ProxyGroups[0].Key + " " + OutboundListener} },
	}, {
		name: "a split of the TCP port", edit: func() {
			httpPort(6).Routes = []*ir.Route{{Name: "split", Source: svc(6).Source, Backends: []ir.Backend{
				{Cluster: httpPort(7).Cluster, Weight: 90, Port: 80, Service: svc(7).Source},
				{Cluster: httpPort(8).Cluster, Weight: 10, Port: 80, Service: svc(8).Source},
			}}}
		},
		changed: func() []string { return []string{"own " + m.ProxyGroups[0].Key + " " + OutboundListener} },
	}, {
		name: "the TCP split's weights", edit: func() {
			r := httpPort(6).Routes[0]
			r.Backends = slices.Clone(r.Backends)
			r.Backends[0].Weight, r.Backends[1].Weight = 50, 50
		},
		changed: func() []string { return []string{"own " + m.ProxyGroups[0].Key + " " + OutboundListener} },
	}, {
		// The TCP port's chain, split, is reused when nothing of it changed:
		// the outbound listener keeps its identity.
		name: "endpoints beside the TCP split", edit: func() {
			p := httpPort(4)
			p.Endpoints = append(slices.Clone(p.Endpoints), ir.Endpoint{Address: "10.200.0.4", Port: 8080, Health: ir.HealthHealthy})
		},
		changed: func() []string { return []string{"eds  " + httpPort(4).Cluster} },
		same:    func() []string { return []string{"own " + m.ProxyGroups[0].Key + " " + OutboundListener} },
	}}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			step.edit()
			got := translateAll(t, m, opts, memo)
			want := translateAll(t, m, opts, nil)
			if len(got.bytes) != len(want.bytes) {
				t.Errorf("memo rebuild has %d resources, a fresh one %d", len(got.bytes), len(want.bytes))
			}
			for k, b := range want.bytes {
				if got.bytes[k] != b {
					t.Errorf("%s differs from a fresh translation", k)
				}
			}
			if fmt.Sprint(got.problems) != fmt.Sprint(want.problems) {
				t.Errorf("problems %v, a fresh translation has %v", got.problems, want.problems)
			}
			var changed, same []string
			if step.changed != nil {
				changed = step.changed()
			}
			if step.same != nil {
				same = step.same()
			}
			for _, k := range changed {
				if _, ok := got.bytes[k]; !ok {
					t.Errorf("%s is missing", k)
				}
				if got.bytes[k] == prev.bytes[k] {
					t.Errorf("%s did not change", k)
				}
			}
			for _, k := range same {
				if got.msgs[k] == nil || got.msgs[k] != prev.msgs[k] {
					t.Errorf("%s was built again though the change does not touch it", k)
				}
			}
			prev = got
		})
	}
}

// TestMemoReplaysProblems checks that a port taken from the memo still
// reports what its translation left out.
func TestMemoReplaysProblems(t *testing.T) {
	m := syntheticMesh(10)
	r := m.Services[0].Ports[0].Routes[0]
	r.Backends = append(slices.Clone(r.Backends), ir.Backend{Cluster: "outbound|80||nowhere.ns.svc.cluster.local", Weight: 1})
	memo := NewMemo()
	first := translateAll(t, m, Options{}, memo)
	second := translateAll(t, m, Options{}, memo)
	if len(first.problems) == 0 {
		t.Fatal("an unknown backend is not a problem")
	}
	if fmt.Sprint(first.problems) != fmt.Sprint(second.problems) {
		t.Errorf("problems %v, then from the memo %v", first.problems, second.problems)
	}
	if first.msgs[" "] != nil || first.msgs["shared  "+ir.RouteConfigName(m.Services[0].Hostname, 80)] != second.msgs["shared  "+ir.RouteConfigName(m.Services[0].Hostname, 80)] {
		t.Error("the unchanged route was built again")
	}
}
