package ingest

import (
	"hash/maphash"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/internal/ir"
)

// Memo carries the proxy groups from one Build to the next. A change to a
// route, TrafficSplit, RetryPolicy or CircuitBreaker (what canary releases
// make) leaves the groups alone, so the next Build reuses them instead of
// matching every pod against every Service again.
//
// The groups are reused only when no object they are made from changed:
// the namespaces, Services, EndpointSlices, pods, MeshIdentities and
// AccessPolicies must be the same objects (UID) at the same
// resourceVersion. Objects without a resourceVersion (built in memory
// rather than read from the API) are never trusted to be unchanged.
type Memo struct {
	mu     sync.Mutex
	seed   maphash.Seed
	key    groupInputs
	groups []*ir.ProxyGroup
}

type groupInputs struct {
	sum, count uint64
	domain     string
	valid      bool
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo { return &Memo{seed: maphash.MakeSeed()} }

// Build is Build, reusing the previous proxy groups when their inputs are
// unchanged. The groups must not be modified.
func (m *Memo) Build(b *Bundle) *Result {
	return buildWith(b, m)
}

func (s *state) proxyGroups(m *Memo) []*ir.ProxyGroup {
	if m == nil {
		return s.buildProxyGroups()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := m.inputs(s.b)
	if key.valid && key == m.key {
		return m.groups
	}
	m.key, m.groups = key, s.buildProxyGroups()
	return m.groups
}

// inputs sums a hash of the identity and version of every object the
// groups are made from; the sum does not depend on the order of the lists.
func (m *Memo) inputs(b *Bundle) groupInputs {
	in := groupInputs{domain: b.ClusterDomain, valid: true}
	add := func(kind string, o metav1.Object) {
		if o.GetResourceVersion() == "" || o.GetUID() == "" {
			in.valid = false
			return
		}
		var h maphash.Hash
		h.SetSeed(m.seed)
		for _, s := range []string{kind, o.GetNamespace(), o.GetName(), string(o.GetUID()), o.GetResourceVersion()} {
			_, _ = h.WriteString(s)
			_ = h.WriteByte(0)
		}
		in.sum += h.Sum64()
		in.count++
	}
	for _, o := range b.Namespaces {
		add("Namespace", o)
	}
	for _, o := range b.Services {
		add("Service", o)
	}
	for _, o := range b.EndpointSlices {
		add("EndpointSlice", o)
	}
	for _, o := range b.Pods {
		add("Pod", o)
	}
	for _, o := range b.MeshIdentities {
		add("MeshIdentity", o)
	}
	for _, o := range b.AccessPolicies {
		add("AccessPolicy", o)
	}
	return in
}
