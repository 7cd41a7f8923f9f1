package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weft-mesh/weft/internal/ir"
)

// Reachability scoping: an Envoy proxy group is sent only the Service
// ports it may reach, so that a proxy's configuration grows with what it
// calls rather than with the mesh. A group may reach a Service port when
//
//   - the Service is exported to the group's namespace (ir.Service.ExportTo,
//     from the weft.dev/export-to annotation; every namespace by default),
//     and
//   - the proxies serving the Service would let the group's identity in:
//     no Allow access policy applies at some inbound port serving the
//     Service, or an Allow rule there names no callers, or names the
//     group's SPIFFE ID exactly or by prefix. This reads the very rules the
//     inbound RBAC filters enforce (the policies of every Service a port
//     serves), ignoring their request conditions and every Deny rule, so a
//     caller the server would let in for some request is never left out.
//     A Service no meshed proxy serves enforces nothing and is reachable by
//     all.
//
// The backends of the routes of a reachable port (split targets, route
// backends, mirrors) are reachable too: the route owner chose them.
// Traffic to a Service outside the scope meets the outbound listener's
// default chain, as traffic to an address outside the mesh does.
//
// Proxyless gRPC clients are not scoped: they ask for the names they dial.

// scopes indexes the ports by who may reach them.
type scopes struct {
	// open are the ports every group may reach.
	open []bool
	// all says whether every port is open: nothing is scoped.
	all bool
	// byNamespace are the ports exported to some namespaces only, whose
	// serving proxies let every caller in, by namespace.
	byNamespace map[string][]int
	// exact and prefix are the ports some callers only may reach, by the
	// SPIFFE ID or ID prefix that names them.
	exact  map[string][]int
	prefix map[string][]int
	// portOf is the port index of a cluster name.
	portOf map[string]int
	// portRank is the position of each port's cluster in p.clusters, and
	// sharedRanks those of the clusters of no port.
	portRank    []int
	sharedRanks []int

	// groups are the views of the mesh's groups, found by Prepare and
	// only read afterwards.
	groups map[*ir.ProxyGroup]groupScope

	mu sync.Mutex
	// closed is the open ports and their backends, by consumer view.
	closed map[string]*baseScope
	// views are the scoped views built so far, by key.
	views map[string]*view
}

// access is what the proxies serving a Service let in.
type access struct {
	served, open  bool
	exact, prefix []string
}

// buildScopes indexes p.ports for scoping.
func (p *Prepared) buildScopes() {
	s := &scopes{
		open:        make([]bool, len(p.ports)),
		byNamespace: map[string][]int{},
		exact:       map[string][]int{},
		prefix:      map[string][]int{},
		portOf:      make(map[string]int, len(p.ports)),
		closed:      map[string]*baseScope{},
		views:       map[string]*view{},
	}
	p.scopes = s
	acc := map[string]*access{}
	for _, g := range p.b.mesh.ProxyGroups {
		if g == nil {
			continue
		}
		for _, ip := range g.Inbound {
			if ip == nil {
				continue
			}
			allowed := &access{}
			allows := false
			for _, ap := range ip.AccessPolicies {
				if ap == nil || ap.Action == ir.AccessDeny {
					continue
				}
				allows = true
				for _, rule := range ap.Rules {
					if len(rule.Ports) > 0 && !slices.Contains(rule.Ports, uint32(ip.Port)) {
						continue
					}
					if len(rule.Principals) == 0 {
						allowed.open = true
					}
					for _, pr := range rule.Principals {
						switch {
						case pr.Exact != "":
							allowed.exact = append(allowed.exact, pr.Exact)
						case pr.Prefix != "":
							allowed.prefix = append(allowed.prefix, pr.Prefix)
						}
					}
				}
			}
			for _, ref := range ip.Services {
				key := ref.Namespace + "/" + ref.Name
				a := acc[key]
				if a == nil {
					a = &access{}
					acc[key] = a
				}
				a.served = true
				if !allows || allowed.open {
					a.open = true
					continue
				}
				a.exact = append(a.exact, allowed.exact...)
				a.prefix = append(a.prefix, allowed.prefix...)
			}
		}
	}
	rank := make(map[string]int, len(p.clusters))
	for r, c := range p.clusters {
		rank[resourceName(c)] = r
	}
	s.portRank = make([]int, len(p.ports))
	for i, e := range p.ports {
		s.portRank[i] = rank[e.port.Cluster]
		delete(rank, e.port.Cluster)
	}
	for _, r := range rank {
		s.sharedRanks = append(s.sharedRanks, r)
	}
	s.all = true
	for i, e := range p.ports {
		s.portOf[e.port.Cluster] = i
		a := acc[e.svc.Key()]
		accessOpen := a == nil || !a.served || a.open
		switch {
		case accessOpen && e.svc.ExportTo == nil:
			s.open[i] = true
			continue
		case accessOpen:
			for _, ns := range e.svc.ExportTo {
				s.byNamespace[ns] = append(s.byNamespace[ns], i)
			}
		default:
			// Compacted in place once: the Service's other ports read
			// the same lists.
			slices.Sort(a.exact)
			a.exact = slices.Compact(a.exact)
			slices.Sort(a.prefix)
			a.prefix = slices.Compact(a.prefix)
			for _, id := range a.exact {
				s.exact[id] = append(s.exact[id], i)
			}
			for _, pre := range a.prefix {
				s.prefix[pre] = append(s.prefix[pre], i)
			}
		}
		s.all = false
	}
}

// candidates adds to extra the ports of idx that group g may reach and
// base lacks.
func (p *Prepared) candidates(extra []int, idx []int, g *ir.ProxyGroup, base []bool) []int {
	for _, i := range idx {
		if !base[i] && p.ports[i].svc.ExportedTo(g.Namespace) {
			extra = append(extra, i)
		}
	}
	return extra
}

// backends are the ports that the routes clients in namespace ns use on
// port i send traffic to (split targets, route backends, mirrors).
func (p *Prepared) backends(i int, ns string, yield func(int)) {
	s := p.scopes
	for _, r := range p.ports[i].port.RoutesFor(ns) {
		for _, be := range r.Backends {
			if j, ok := s.portOf[be.Cluster]; ok {
				yield(j)
			}
		}
		for _, m := range r.Mirrors {
			if j, ok := s.portOf[m.Cluster]; ok {
				yield(j)
			}
		}
	}
}

// groupScope is a group's view and its name.
type groupScope struct {
	view *view
	key  string
}

// baseScope is what every group of a consumer view reaches: the open
// ports and their backends.
type baseScope struct {
	vis []bool
	// idx are the indexes vis holds, ascending.
	idx []int
}

// scopedView is the view of group g: its namespace's view when g may
// reach every port, else a view of what it may reach, shared by every
// group that may reach the same. memo is nil after Prepare returned.
func (p *Prepared) scopedView(g *ir.ProxyGroup, memo *Memo) (*view, string, error) {
	s := p.scopes
	viewNS := ""
	if p.views[g.Namespace] != nil {
		viewNS = g.Namespace
	}
	if s == nil || s.all {
		return p.viewFor(g.Namespace), viewNS, nil
	}
	if gs, ok := s.groups[g]; ok {
		return gs.view, gs.key, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.closed[viewNS]
	if base == nil {
		vis := slices.Clone(s.open)
		var more []int
		for i, on := range s.open {
			if on {
				p.backends(i, g.Namespace, func(j int) { more = append(more, j) })
			}
		}
		for _, j := range more {
			vis[j] = true
		}
		base = &baseScope{vis: vis}
		for i, on := range vis {
			if on {
				base.idx = append(base.idx, i)
			}
		}
		s.closed[viewNS] = base
	}
	extra := p.candidates(nil, s.byNamespace[g.Namespace], g, base.vis)
	if g.Identity != "" {
		extra = p.candidates(extra, s.exact[g.Identity], g, base.vis)
		for pre, idx := range s.prefix {
			if strings.HasPrefix(g.Identity, pre) {
				extra = p.candidates(extra, idx, g, base.vis)
			}
		}
	}
	// A backend's own routes do not apply to traffic routed to it, so
	// one step of closure is enough.
	for _, i := range slices.Clone(extra) {
		p.backends(i, g.Namespace, func(j int) {
			if !base.vis[j] {
				extra = append(extra, j)
			}
		})
	}
	slices.Sort(extra)
	extra = slices.Compact(extra)
	if len(base.idx)+len(extra) == len(p.ports) {
		return p.viewFor(g.Namespace), viewNS, nil
	}
	key := viewNS + "~"
	if len(extra) > 0 {
		h := sha256.New()
		var buf []byte
		for _, i := range extra {
			buf = append(append(buf[:0], p.ports[i].port.Cluster...), 0)
			h.Write(buf)
		}
		key += hex.EncodeToString(h.Sum(nil)[:12])
	}
	if v := s.views[key]; v != nil {
		return v, key, nil
	}
	vis := make([]int, 0, len(base.idx)+len(extra))
	vis = append(append(vis, base.idx...), extra...)
	slices.Sort(vis)
	v, err := p.newView(viewNS, key, vis, memo)
	if err != nil {
		return nil, "", err
	}
	s.views[key] = v
	return v, key, nil
}

// viewClusters are the clusters of a view: those of its ports (indexes
// of p.ports; nil for all) and the ones every proxy has, sorted.
func (p *Prepared) viewClusters(vis []int) []types.Resource {
	if vis == nil {
		return p.clusters
	}
	// Sorting positions in p.clusters, which is sorted, sorts the view.
	s := p.scopes
	ranks := make([]int, 0, len(s.sharedRanks)+len(vis))
	ranks = append(ranks, s.sharedRanks...)
	for _, i := range vis {
		ranks = append(ranks, s.portRank[i])
	}
	slices.Sort(ranks)
	out := make([]types.Resource, len(ranks))
	for k, r := range ranks {
		out[k] = p.clusters[r]
	}
	return out
}
