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

	mu sync.Mutex
	// closed is the open ports and their backends, by consumer view.
	closed map[string][]bool
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
		closed:      map[string][]bool{},
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
			slices.Sort(a.exact)
			for _, id := range slices.Compact(a.exact) {
				s.exact[id] = append(s.exact[id], i)
			}
			slices.Sort(a.prefix)
			for _, pre := range slices.Compact(a.prefix) {
				s.prefix[pre] = append(s.prefix[pre], i)
			}
		}
		s.all = false
	}
}

// visible adds to vis the ports of idx that the group may reach.
func (p *Prepared) visible(vis []bool, idx []int, g *ir.ProxyGroup) {
	for _, i := range idx {
		if !vis[i] && p.ports[i].svc.ExportedTo(g.Namespace) {
			vis[i] = true
		}
	}
}

// close adds to vis the backends of the routes that clients in namespace
// ns use on the ports in vis.
func (p *Prepared) close(vis []bool, ns string) {
	s := p.scopes
	var more []int
	for i, on := range vis {
		if !on {
			continue
		}
		for _, r := range p.ports[i].port.RoutesFor(ns) {
			for _, be := range r.Backends {
				if j, ok := s.portOf[be.Cluster]; ok && !vis[j] {
					more = append(more, j)
				}
			}
			for _, m := range r.Mirrors {
				if j, ok := s.portOf[m.Cluster]; ok && !vis[j] {
					more = append(more, j)
				}
			}
		}
	}
	// A backend's own routes do not apply to traffic routed to it, so
	// one step is enough.
	for _, j := range more {
		vis[j] = true
	}
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
	s.mu.Lock()
	defer s.mu.Unlock()
	base, ok := s.closed[viewNS]
	if !ok {
		base = slices.Clone(s.open)
		p.close(base, g.Namespace)
		s.closed[viewNS] = base
	}
	vis := make([]bool, len(p.ports))
	p.visible(vis, s.byNamespace[g.Namespace], g)
	if g.Identity != "" {
		p.visible(vis, s.exact[g.Identity], g)
		for pre, idx := range s.prefix {
			if strings.HasPrefix(g.Identity, pre) {
				p.visible(vis, idx, g)
			}
		}
	}
	p.close(vis, g.Namespace)
	h := sha256.New()
	extra, full := false, true
	for i := range vis {
		switch {
		case base[i]:
			vis[i] = true
		case vis[i]:
			extra = true
			h.Write([]byte(p.ports[i].port.Cluster))
			h.Write([]byte{0})
		default:
			full = false
		}
	}
	if full {
		return p.viewFor(g.Namespace), viewNS, nil
	}
	key := viewNS + "~"
	if extra {
		key += hex.EncodeToString(h.Sum(nil)[:12])
	}
	if v := s.views[key]; v != nil {
		return v, key, nil
	}
	v, err := p.newView(viewNS, key, vis, memo)
	if err != nil {
		return nil, "", err
	}
	s.views[key] = v
	return v, key, nil
}

// viewClusters are the clusters of a view: those of its ports and the
// ones every proxy has.
func (p *Prepared) viewClusters(vis []bool) []types.Resource {
	if vis == nil {
		return p.clusters
	}
	out := slices.Clone(p.sharedClusters)
	for i, e := range p.ports {
		if vis[i] {
			out = append(out, e.cluster)
		}
	}
	sortResources(out)
	return out
}
