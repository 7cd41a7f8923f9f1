package publish

import (
	"slices"
	"strings"
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

func policy(kind, name string) ir.ObjectRef {
	return ir.ObjectRef{Group: meshv1alpha1.GroupVersion.Group, Kind: kind, Namespace: "shop", Name: name}
}

// nackMesh has two Services whose resource names contain one another
// (host:80 and host:8080), each shaped by its own policy, and two proxy
// groups with different access policies.
func nackMesh() *Published {
	split80, split8080 := policy("TrafficSplit", "on-80"), policy("TrafficSplit", "on-8080")
	cb := policy("CircuitBreaker", "on-8080")
	apA, apB := policy("AccessPolicy", "a-callers"), policy("AccessPolicy", "b-callers")
	svc := &ir.Service{Name: "host", Namespace: "shop", Hostname: "host", Ports: []*ir.Port{
		{Port: 80, Cluster: "outbound|80||host", Routes: []*ir.Route{{Name: "r80", Source: split80}}},
		{Port: 8080, Cluster: "outbound|8080||host", CircuitBreaker: &ir.CircuitBreaker{Source: cb}, Routes: []*ir.Route{{Name: "r8080", Source: split8080}}},
	}}
	ga := &ir.ProxyGroup{Key: "a", Members: []string{"a-0.shop"}, Inbound: []*ir.InboundPort{{Port: 8080, AccessPolicies: []*ir.AccessPolicy{{Source: apA}}}}}
	gb := &ir.ProxyGroup{Key: "b", Members: []string{"b-0.shop"}, Inbound: []*ir.InboundPort{{Port: 8080, AccessPolicies: []*ir.AccessPolicy{{Source: apB}}}}}
	mesh := &ir.Mesh{Services: []*ir.Service{svc}, ProxyGroups: []*ir.ProxyGroup{ga, gb}}
	res := &ingest.Result{Mesh: mesh}
	for _, ref := range []ir.ObjectRef{apA, apB, cb, split80, split8080} {
		res.Statuses = append(res.Statuses, ingest.ObjectStatus{Ref: ref, Generation: 2})
	}
	p := &Published{Result: res, Nodes: map[string]*ir.ProxyGroup{"a-0.shop": ga, "b-0.shop": gb}}
	p.sources = func() map[resourceKey][]ir.ObjectRef { return resourceSources(mesh) }
	return p
}

// A NACK is pinned on the objects behind exactly the resources the proxy
// refused. Matching names inside the error message, as before, blamed the
// policy of host:80 for a refused host:8080, and every access policy of
// the mesh for any inbound listener.
func TestBlameUsesTheRefusedResourceNames(t *testing.T) {
	p := nackMesh()
	cases := []struct {
		name string
		node string
		nack server.Nack
		want []ir.ObjectRef
	}{
		{"route host:8080", "a-0.shop", server.Nack{TypeURL: resourcev3.RouteType, Resources: []string{"host:8080"}, Message: "host:8080: bad route for host:80 callers"},
			[]ir.ObjectRef{policy("TrafficSplit", "on-8080")}},
		{"route host:80", "a-0.shop", server.Nack{TypeURL: resourcev3.RouteType, Resources: []string{"host:80"}, Message: "rejected"},
			[]ir.ObjectRef{policy("TrafficSplit", "on-80")}},
		{"cluster", "a-0.shop", server.Nack{TypeURL: resourcev3.ClusterType, Resources: []string{"outbound|8080||host"}},
			[]ir.ObjectRef{policy("CircuitBreaker", "on-8080")}},
		{"inbound listener of group a", "a-0.shop", server.Nack{TypeURL: resourcev3.ListenerType, Resources: []string{translate.InboundListener}, Message: "inbound: rbac"},
			[]ir.ObjectRef{policy("AccessPolicy", "a-callers")}},
		{"a name no object shaped", "a-0.shop", server.Nack{TypeURL: resourcev3.ClusterType, Resources: []string{"outbound|80||host"}, Message: "TrafficSplit on-8080 host:8080"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := p.Blame(c.node, c.nack); !slices.Equal(got, c.want) {
				t.Errorf("Blame = %v, want %v", got, c.want)
			}
		})
	}
}

type fakeProxies struct {
	connected, upToDate map[string]bool
	nacks               map[string]server.Nack
}

func (f fakeProxies) Connected(n string) bool       { return f.connected[n] }
func (f fakeProxies) UpToDate(n string) bool        { return f.upToDate[n] }
func (f fakeProxies) Nacks() map[string]server.Nack { return f.nacks }

func TestProgrammed(t *testing.T) {
	p := nackMesh()
	both := map[string]bool{"a-0.shop": true, "b-0.shop": true}
	t.Run("every connected proxy up to date", func(t *testing.T) {
		got := p.Programmed(fakeProxies{connected: both, upToDate: both}, nil)
		for ref, c := range got {
			if c.Status != metav1.ConditionTrue || c.ObservedGeneration != 2 || !strings.Contains(c.Message, "(2)") {
				t.Errorf("%s: %+v", ref, c)
			}
		}
	})
	t.Run("one proxy behind", func(t *testing.T) {
		got := p.Programmed(fakeProxies{connected: both, upToDate: map[string]bool{"a-0.shop": true}}, nil)
		if c := got[policy("TrafficSplit", "on-80")]; c.Status != metav1.ConditionFalse || c.Reason != meshv1alpha1.ReasonPending || !strings.Contains(c.Message, "waiting") {
			t.Errorf("%+v", c)
		}
	})
	t.Run("a NACK marks only the objects behind it", func(t *testing.T) {
		got := p.Programmed(fakeProxies{connected: both, upToDate: map[string]bool{"a-0.shop": true}, nacks: map[string]server.Nack{
			"b-0.shop": {TypeURL: resourcev3.RouteType, Resources: []string{"host:8080"}, Message: "bad weights"},
		}}, nil)
		if c := got[policy("TrafficSplit", "on-8080")]; c.Reason != meshv1alpha1.ReasonRejected || !strings.Contains(c.Message, "b-0.shop") || !strings.Contains(c.Message, "bad weights") {
			t.Errorf("the refused split: %+v", c)
		}
		if c := got[policy("TrafficSplit", "on-80")]; c.Reason != meshv1alpha1.ReasonPending {
			t.Errorf("the other split: %+v, want Pending (b has not taken the current configuration)", c)
		}
	})
	t.Run("a NACK no object explains marks every policy", func(t *testing.T) {
		got := p.Programmed(fakeProxies{connected: both, upToDate: map[string]bool{"a-0.shop": true}, nacks: map[string]server.Nack{
			"b-0.shop": {TypeURL: resourcev3.SecretType, Resources: []string{"identity"}, Message: "bad key"},
		}}, nil)
		for ref, c := range got {
			if c.Reason != meshv1alpha1.ReasonRejected {
				t.Errorf("%s: %+v", ref, c)
			}
		}
	})
}

// An object Programmed at its generation stays Programmed, with the very
// same condition, while a later change of another object propagates; a
// Pending message does not change with each ACK. Before, every ACK of a
// push changed every object's condition (Pending with a count, then True),
// and each change was a status write: hundreds per change at 2000 proxies.
func TestProgrammedDoesNotFlapWhileOtherChangesPropagate(t *testing.T) {
	p := nackMesh()
	two := []string{"a-0.shop", "b-0.shop"}
	all := map[string]bool{"a-0.shop": true, "b-0.shop": true}
	done := p.Programmed(fakeProxies{connected: all, upToDate: all}, nil)

	// Generation 3 of one split is pushed; a has acknowledged, b not yet.
	p.Result.Statuses[3].Generation = 3
	changed := p.Result.Statuses[3].Ref
	var pendings []metav1.Condition
	for _, up := range []map[string]bool{{}, {two[0]: true}} {
		got := p.Programmed(fakeProxies{connected: all, upToDate: up}, done)
		for ref, c := range got {
			if ref == changed {
				if c.Reason != meshv1alpha1.ReasonPending || c.ObservedGeneration != 3 {
					t.Errorf("the changed split: %+v, want Pending at generation 3", c)
				}
				pendings = append(pendings, c)
				continue
			}
			if c != done[ref] {
				t.Errorf("%s changed while another object propagated: %+v, was %+v", ref, c, done[ref])
			}
		}
		done = got
	}
	if pendings[0] != pendings[1] {
		t.Errorf("Pending changed between two ACKs (a status write each): %+v then %+v", pendings[0], pendings[1])
	}
	got := p.Programmed(fakeProxies{connected: all, upToDate: all}, done)
	if c := got[changed]; c.Status != metav1.ConditionTrue || c.ObservedGeneration != 3 {
		t.Errorf("the changed split once every proxy acknowledged: %+v", c)
	}
	// A refusal still wins over a kept True.
	got = p.Programmed(fakeProxies{connected: all, upToDate: map[string]bool{two[0]: true}, nacks: map[string]server.Nack{
		"b-0.shop": {TypeURL: resourcev3.RouteType, Resources: []string{"host:80"}, Message: "bad weights"},
	}}, got)
	if c := got[policy("TrafficSplit", "on-80")]; c.Reason != meshv1alpha1.ReasonRejected {
		t.Errorf("a split whose route a proxy refused: %+v, want Rejected", c)
	}
}
