package ingest

import (
	"hash/maphash"
	"maps"
	"slices"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/internal/ir"
)

// Memo carries what ingest derives from the workloads from one Build to the
// next: the proxy groups and the endpoints of every Service. A change to a
// route, TrafficSplit, RetryPolicy or CircuitBreaker (what canary releases
// make) leaves both alone, so the next Build reuses them instead of
// matching every pod and EndpointSlice again.
//
// Each is reused only when no object it is made from changed: the
// namespaces, Services, EndpointSlices, pods and MeshIdentities (and, for
// groups, AccessPolicies and RateLimitPolicies) must be the same objects (UID) at the same
// resourceVersion. Objects without a resourceVersion (built in memory
// rather than read from the API) are never trusted to be unchanged.
type Memo struct {
	mu   sync.Mutex
	seed maphash.Seed
	// in are the inputs of the current Build.
	in kindSums

	groupsKey groupInputs
	groups    []*ir.ProxyGroup

	endpointsKey groupInputs
	endpoints    map[string]*serviceEndpoints
}

// serviceEndpoints is what buildEndpoints found for one Service.
type serviceEndpoints struct {
	ports       map[int32][]ir.Endpoint
	targetPorts map[int32][]int32
	identities  []string
}

type groupInputs struct {
	sum, count uint64
	domain     string
	valid      bool
}

// Kinds the memo follows.
const (
	kindNamespace = iota
	kindService
	kindEndpointSlice
	kindPod
	kindMeshIdentity
	kindAccessPolicy
	kindRateLimitPolicy
	numKinds
)

type kindSums struct {
	sum, count [numKinds]uint64
	valid      bool
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo { return &Memo{seed: maphash.MakeSeed()} }

// Build is Build, reusing the previous proxy groups and endpoints when
// their inputs are unchanged. The result must not be modified.
func (m *Memo) Build(b *Bundle) *Result {
	if m == nil {
		return Build(b)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.in = m.inputs(b)
	return buildWith(b, m)
}

func (m *Memo) key(b *Bundle, kinds ...int) groupInputs {
	k := groupInputs{domain: b.ClusterDomain, valid: m.in.valid}
	for _, kind := range kinds {
		// Distinct multipliers keep one kind's objects from standing in
		// for another's.
		k.sum += m.in.sum[kind] * uint64(2*kind+1)
		k.count = k.count*1_000_003 + m.in.count[kind]
	}
	return k
}

func (s *state) proxyGroups(m *Memo) []*ir.ProxyGroup {
	if m == nil {
		return s.buildProxyGroups()
	}
	key := m.key(s.b, kindNamespace, kindService, kindEndpointSlice, kindPod, kindMeshIdentity, kindAccessPolicy, kindRateLimitPolicy)
	if key.valid && key == m.groupsKey {
		return m.groups
	}
	m.groupsKey, m.groups = key, s.buildProxyGroups()
	return m.groups
}

// endpoints fills in every Service's endpoints, identities and target
// ports, from the memo when their inputs are unchanged.
func (s *state) endpoints(m *Memo) {
	if m == nil {
		s.buildEndpoints()
		return
	}
	key := m.key(s.b, kindNamespace, kindService, kindEndpointSlice, kindPod, kindMeshIdentity)
	if key.valid && key == m.endpointsKey {
		for k, st := range s.services {
			e := m.endpoints[k]
			if e == nil {
				continue
			}
			for _, p := range st.ir.Ports {
				p.Endpoints = e.ports[p.Port]
			}
			st.targetPorts = e.targetPorts
			st.ir.Identities = e.identities
		}
		return
	}
	s.buildEndpoints()
	m.endpointsKey = key
	m.endpoints = make(map[string]*serviceEndpoints, len(s.services))
	for k, st := range s.services {
		e := &serviceEndpoints{ports: make(map[int32][]ir.Endpoint, len(st.ir.Ports)), targetPorts: st.targetPorts, identities: st.ir.Identities}
		for _, p := range st.ir.Ports {
			e.ports[p.Port] = p.Endpoints
		}
		m.endpoints[k] = e
	}
}

// inputs sums, per kind, a hash of the identity and version of every
// object; the sums do not depend on the order of the lists.
func (m *Memo) inputs(b *Bundle) kindSums {
	in := kindSums{valid: true}
	sumKind(m.seed, &in, kindNamespace, b.Namespaces)
	sumKind(m.seed, &in, kindService, b.Services)
	sumKind(m.seed, &in, kindEndpointSlice, b.EndpointSlices)
	sumKind(m.seed, &in, kindPod, b.Pods)
	sumKind(m.seed, &in, kindMeshIdentity, b.MeshIdentities)
	sumKind(m.seed, &in, kindAccessPolicy, b.AccessPolicies)
	sumKind(m.seed, &in, kindRateLimitPolicy, b.RateLimitPolicies)
	return in
}

func sumKind[T metav1.Object](seed maphash.Seed, in *kindSums, kind int, objs []T) {
	for _, o := range objs {
		if o.GetResourceVersion() == "" || o.GetUID() == "" {
			in.valid = false
			return
		}
		var h maphash.Hash
		h.SetSeed(seed)
		for _, s := range []string{o.GetNamespace(), o.GetName(), string(o.GetUID()), o.GetResourceVersion()} {
			_, _ = h.WriteString(s)
			_ = h.WriteByte(0)
		}
		in.sum[kind] += h.Sum64()
		in.count[kind]++
	}
}

// UpdateEndpoints recomputes, from b, the endpoints of the named Services
// (namespace/name) only, for a change that touched nothing but their
// EndpointSlices. When each of them keeps its target ports and identities
// and is not headless (so nothing but endpoint lists can differ from the
// last Build: no proxy group, filter chain, status or warning), it records
// the new lists in the memo and returns them by cluster name, with ok
// set. Otherwise ok is false and nothing is recorded: the caller must
// Build. A Service that is gone, or that the last Build did not see, also
// needs a Build.
func (m *Memo) UpdateEndpoints(b *Bundle, services []string) (byCluster map[string][]ir.Endpoint, ok bool) {
	if m == nil {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.endpoints == nil || !m.endpointsKey.valid {
		return nil, false
	}
	want := make(map[string]bool, len(services))
	for _, k := range services {
		if m.endpoints[k] == nil {
			return nil, false
		}
		want[k] = true
	}
	sub := &Bundle{ClusterDomain: b.ClusterDomain, Namespaces: b.Namespaces, MeshIdentities: b.MeshIdentities, Pods: b.Pods}
	for _, svc := range b.Services {
		if want[svc.Namespace+"/"+svc.Name] {
			sub.Services = append(sub.Services, svc)
		}
	}
	if len(sub.Services) != len(want) {
		return nil, false
	}
	for _, es := range b.EndpointSlices {
		if want[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]] {
			sub.EndpointSlices = append(sub.EndpointSlices, es)
		}
	}
	s := newState(sub)
	s.buildNamespaces()
	s.buildServices()
	s.buildEndpoints()
	next := make(map[string]*serviceEndpoints, len(s.services))
	byCluster = map[string][]ir.Endpoint{}
	for k, st := range s.services {
		old := m.endpoints[k]
		if len(st.ir.VIPs) == 0 || !slices.Equal(st.ir.Identities, old.identities) || !maps.EqualFunc(st.targetPorts, old.targetPorts, slices.Equal) {
			return nil, false
		}
		e := &serviceEndpoints{ports: make(map[int32][]ir.Endpoint, len(st.ir.Ports)), targetPorts: old.targetPorts, identities: old.identities}
		for _, p := range st.ir.Ports {
			if _, had := old.ports[p.Port]; !had {
				return nil, false
			}
			e.ports[p.Port] = p.Endpoints
			byCluster[p.Cluster] = p.Endpoints
		}
		next[k] = e
	}
	maps.Copy(m.endpoints, next)
	return byCluster, true
}
