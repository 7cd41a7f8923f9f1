package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/ir"
)

// Memo carries translation results from one rebuild of the mesh to the
// next. A server that rebuilds after every change translates again only
// the Service ports, proxy groups and endpoint sets whose inputs changed,
// and gets back the very same messages for everything else, so it can tell
// what changed by identity instead of comparing bytes.
//
// An entry is keyed by everything its translation reads: for a Service
// port, the Service (without its other ports), the port, and what its
// routes' backends look like (whether they exist, how they balance); for
// a proxy group, the group without its members; for endpoints, the
// endpoint list. Problems found while translating an entry are kept with
// it and reported again on every hit. Entries not used by a rebuild are
// dropped, and a change of Options drops them all.
//
// A Memo is safe for use by one rebuild at a time.
type Memo struct {
	mu     sync.Mutex
	opts   Options
	used   bool
	ports  map[string]*portMemo
	groups map[string]*groupMemo
	eds    map[string]*edsMemo
	seen   map[string]bool
	// prev and next hold the mesh-wide messages (shared clusters, secrets,
	// outbound listeners) of the previous and the current rebuild.
	prev, next map[string]proto.Message
}

type portMemo struct {
	key      string
	cluster  types.Resource
	route    *routev3.RouteConfiguration
	consumer map[string]*routev3.RouteConfiguration
	problems []Problem
	// vips (and, for a TCP port, tcpKey: what its chain forwards to) and
	// the chains built for them.
	vips     []string
	tcpKey   string
	chains   []*listenerv3.FilterChain
	consumed map[string][]*listenerv3.FilterChain
	// grpc are its proxyless gRPC messages, built when first asked for.
	grpc *grpcPortMemo
}

type groupMemo struct {
	// src is the group the entry was built from; the same pointer again
	// (a caller that reuses unchanged groups) needs no key.
	src *ir.ProxyGroup
	key string
	// hosts is the key of the inbound virtual hosts its routes were built
	// with.
	hosts    string
	inbound  *listenerv3.Listener
	clusters []types.Resource
	routes   []types.Resource
}

type edsMemo struct {
	endpoints []ir.Endpoint
	cla       types.Resource
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo { return &Memo{} }

// Prepare is Prepare that reuses what the previous rebuild translated.
func (m *Memo) Prepare(mesh *ir.Mesh, opts Options) (*Prepared, error) {
	if m == nil {
		return Prepare(mesh, opts)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.used || !reflect.DeepEqual(m.opts, opts) {
		m.opts, m.used = opts, true
		m.ports, m.groups, m.eds = map[string]*portMemo{}, map[string]*groupMemo{}, map[string]*edsMemo{}
	}
	m.seen = map[string]bool{}
	m.next = map[string]proto.Message{}
	p, err := prepare(mesh, opts, m)
	if err != nil {
		// Start afresh next time rather than trust a half-done rebuild.
		m.used = false
		return nil, err
	}
	m.prev, m.next = m.next, nil
	for k := range m.ports {
		if !m.seen[k] {
			delete(m.ports, k)
		}
	}
	m.seen = nil
	return p, nil
}

// portKeys computes the memo key of every port, on every core: keys are
// most of what a rebuild with few changes costs. A Service's part of the
// key is encoded once for all of its ports, and a key equal to the one the
// memo holds is not allocated again.
func (p *Prepared) portKeys() error {
	workers := min(runtime.GOMAXPROCS(0), 8, max(1, len(p.ports)/64))
	chunk := (len(p.ports) + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			var svc *ir.Service
			svcLen := 0
			for _, e := range p.ports[min(w*chunk, len(p.ports)):min((w+1)*chunk, len(p.ports))] {
				if e.svc != svc {
					svc = e.svc
					buf.Reset()
					if err := encodeServiceKey(enc, svc); err != nil {
						errs[w] = err
						return
					}
					svcLen = buf.Len()
				}
				buf.Truncate(svcLen)
				if err := p.b.encodePortKey(enc, e.svc, e.port); err != nil {
					errs[w] = err
					return
				}
				// The memo is only read while keys are computed. The
				// comparison converts without allocating.
				key := buf.Bytes()
				if old := p.memo.ports[e.port.Cluster]; old != nil && old.key == string(key) {
					e.key = old.key
				} else {
					e.key = string(key)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// encodeServiceKey writes the part of a port's memo key that comes from
// its Service (without its ports).
func encodeServiceKey(enc *json.Encoder, svc *ir.Service) error {
	s := *svc
	// Access policies apply on the inbound side only.
	s.Ports, s.AccessPolicies = nil, nil
	return enc.Encode(&s)
}

// encodePortKey writes the rest of a Service port's memo key: everything
// preparePort reads apart from the addresses other ports claimed.
func (b *builder) encodePortKey(enc *json.Encoder, svc *ir.Service, port *ir.Port) error {
	type backend struct {
		Cluster string
		Known   bool
		LB      *ir.LoadBalancer `json:",omitempty"`
	}
	pt := *port
	if len(svc.VIPs) > 0 {
		// Endpoints matter only to headless chains.
		pt.Endpoints = nil
	}
	var backends []backend
	note := func(cluster string) {
		be := backend{Cluster: cluster}
		if ref, ok := b.index[cluster]; ok {
			be.Known, be.LB = true, &ref.svc.LoadBalancer
		}
		backends = append(backends, be)
	}
	routes := func(rs []*ir.Route) {
		for _, r := range rs {
			if r == nil {
				continue
			}
			for _, be := range r.Backends {
				note(be.Cluster)
			}
			for _, mr := range r.Mirrors {
				note(mr.Cluster)
			}
		}
	}
	routes(port.Routes)
	for _, cr := range port.ConsumerRoutes {
		if cr != nil {
			routes(cr.Routes)
		}
	}
	return enc.Encode(struct {
		Domain   string
		Port     *ir.Port
		Backends []backend
	}{b.mesh.ClusterDomain, &pt, backends})
}

// stable returns the message the previous rebuild had under key when it
// equals msg, so that an unchanged message keeps its identity.
func stable[T proto.Message](m *Memo, key string, msg T) T {
	if m == nil {
		return msg
	}
	if old, ok := m.prev[key].(T); ok && proto.Equal(old, msg) {
		msg = old
	}
	m.next[key] = msg
	return msg
}

// outbound returns the previous rebuild's outbound listener of a view when
// it is made of the very same filter chains.
func (m *Memo) outbound(view string, chains []*listenerv3.FilterChain, def *listenerv3.FilterChain) *listenerv3.Listener {
	if m == nil {
		return nil
	}
	old, ok := m.prev["listener/"+view].(*listenerv3.Listener)
	if !ok || old.GetDefaultFilterChain() != def || !slices.Equal(old.GetFilterChains(), chains) {
		return nil
	}
	m.next["listener/"+view] = old
	return old
}

func (m *Memo) keepOutbound(view string, l *listenerv3.Listener) {
	if m != nil {
		m.next["listener/"+view] = l
	}
}

// inherit keeps what a port's previous entry built that the change left
// alone: an equal cluster, and the filter chains, which name the route
// configurations but do not hold them, when the names are the same.
func (pm *portMemo) inherit(old *portMemo) {
	if proto.Equal(old.cluster, pm.cluster) {
		pm.cluster = old.cluster
	}
	if old.route != nil && proto.Equal(old.route, pm.route) {
		pm.route = old.route
	}
	for ns, rc := range pm.consumer {
		if o := old.consumer[ns]; o != nil && proto.Equal(o, rc) {
			pm.consumer[ns] = o
		}
	}
	if old.route.GetName() != pm.route.GetName() || len(old.consumer) != len(pm.consumer) {
		return
	}
	for ns, rc := range pm.consumer {
		if old.consumer[ns].GetName() != rc.GetName() {
			return
		}
	}
	pm.vips, pm.tcpKey, pm.chains, pm.consumed = old.vips, old.tcpKey, old.chains, old.consumed
}

// lookupPort returns the memo entry of a port if its key still matches.
func (m *Memo) lookupPort(cluster, key string) *portMemo {
	m.seen[cluster] = true
	if e := m.ports[cluster]; e != nil && e.key == key {
		return e
	}
	return nil
}

// ForGroup is (*Prepared).ForGroup that reuses a group's inbound side when
// the group (apart from its members) is unchanged. The very same
// *ProxyGroup as last time is taken as unchanged without looking: a caller
// must not modify a group in place between rebuilds (ingest.Memo hands
// back the same groups only when nothing they are made of changed).
func (m *Memo) ForGroup(p *Prepared, g *ir.ProxyGroup) (*Config, error) {
	if m == nil || g == nil {
		return p.ForGroup(g)
	}
	m.mu.Lock()
	e := m.groups[g.Key]
	m.mu.Unlock()
	// The virtual hosts come from the Services and routes, not the group:
	// a route that makes a Service the apex of a split changes them, and
	// only the route configurations.
	hosts := p.hostsFor(g)
	if e != nil && e.src == g && e.hosts == hosts.key {
		return p.groupConfig(g, e.inbound, e.clusters, e.routes)
	}
	gc := *g
	gc.Members = nil
	kb, err := json.Marshal(&gc)
	if err != nil {
		return nil, err
	}
	key := string(kb)
	next := &groupMemo{src: g, key: key, hosts: hosts.key}
	if e != nil && e.key == key {
		next.inbound, next.clusters = e.inbound, e.clusters
	} else {
		b := p.b.fork()
		if next.inbound, next.clusters, err = p.inbound(b, g); err != nil {
			return nil, errors.Join(errors.New("translate: proxy group "+g.Key), err)
		}
	}
	if e != nil && e.key == key && e.hosts == hosts.key {
		next.routes = e.routes
	} else if next.routes, err = p.inboundRoutes(g, hosts); err != nil {
		return nil, errors.Join(errors.New("translate: proxy group "+g.Key), err)
	}
	e = next
	m.mu.Lock()
	m.groups[g.Key] = e
	m.mu.Unlock()
	return p.groupConfig(g, e.inbound, e.clusters, e.routes)
}

// Endpoints is Endpoints for the mesh p was prepared from, returning the
// same assignment for a cluster whose endpoints did not change.
func (m *Memo) Endpoints(p *Prepared) []types.Resource {
	if m == nil {
		return Endpoints(p.b.mesh)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.eds == nil {
		m.eds = map[string]*edsMemo{}
	}
	out := make([]types.Resource, 0, len(p.ports))
	keep := make(map[string]bool, len(p.ports))
	for _, pe := range p.ports {
		port := pe.port
		keep[port.Cluster] = true
		e := m.eds[port.Cluster]
		if e == nil || !slices.Equal(e.endpoints, port.Endpoints) {
			e = &edsMemo{endpoints: slices.Clone(port.Endpoints), cla: loadAssignment(port.Cluster, port.Endpoints)}
			m.eds[port.Cluster] = e
		}
		out = append(out, e.cla)
	}
	for k := range m.eds {
		if !keep[k] {
			delete(m.eds, k)
		}
	}
	sortResources(out)
	return out
}

// UpdateEndpoints replaces the endpoints of the named clusters, which the
// last rebuild translated, and returns every cluster's assignment as
// Endpoints would: for a change that touched nothing but endpoint lists
// (see ingest.Memo.UpdateEndpoints), without preparing the mesh again. A
// cluster the memo does not hold is an error: the caller must rebuild.
func (m *Memo) UpdateEndpoints(changed map[string][]ir.Endpoint) ([]types.Resource, error) {
	if m == nil {
		return nil, errors.New("translate: no memo")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for cluster := range changed {
		if m.eds[cluster] == nil {
			return nil, fmt.Errorf("translate: cluster %s was not translated", cluster)
		}
	}
	for cluster, eps := range changed {
		if e := m.eds[cluster]; !slices.Equal(e.endpoints, eps) {
			m.eds[cluster] = &edsMemo{endpoints: slices.Clone(eps), cla: loadAssignment(cluster, eps)}
		}
	}
	out := make([]types.Resource, 0, len(m.eds))
	for _, e := range m.eds {
		out = append(out, e.cla)
	}
	sortResources(out)
	return out, nil
}

// PruneGroups forgets the groups a rebuild no longer has.
func (m *Memo) PruneGroups(groups []*ir.ProxyGroup) {
	if m == nil {
		return
	}
	keep := make(map[string]bool, len(groups))
	for _, g := range groups {
		if g != nil {
			keep[g.Key] = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.groups {
		if !keep[k] {
			delete(m.groups, k)
		}
	}
}
