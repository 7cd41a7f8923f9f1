package translate

import (
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weft-mesh/weft/internal/ir"
)

// groupHosts are, for each inbound HTTP port of a group, the Services a
// request may be addressed to (by Host header or gRPC authority), sorted by
// name. The Envoy's inbound route configuration gets a virtual host per
// Service, whose virtual cluster counts its requests, so the serving pod's
// statistics name the Service each request was sent to (see
// docs/progressive-delivery.md).
type groupHosts struct {
	ports []portHosts
	// key identifies all of them in memo keys (the ports themselves are in
	// the group's key).
	key string
}

type portHosts struct {
	port int32
	svcs []*ir.Service
	// key is everything the port's virtual hosts are made of.
	key string
}

func (h groupHosts) of(port int32) ([]*ir.Service, string) {
	for _, ph := range h.ports {
		if ph.port == port {
			return ph.svcs, ph.key
		}
	}
	return nil, ""
}

// hostKey is what a Service's inbound virtual host is made of: its
// namespace and name, cluster IPs and ports, and the cluster domain.
func hostKey(clusterDomain string, s *ir.Service) string {
	var sb strings.Builder
	sb.WriteString(s.Namespace)
	sb.WriteByte('/')
	sb.WriteString(s.Name)
	for _, v := range s.VIPs {
		sb.WriteByte(' ')
		sb.WriteString(v)
	}
	for _, p := range s.Ports {
		if p != nil {
			sb.WriteByte(' ')
			sb.WriteString(strconv.Itoa(int(p.Port)))
		}
	}
	sb.WriteByte(' ')
	sb.WriteString(clusterDomain)
	sb.WriteByte(';')
	return sb.String()
}

// inboundVirtualHosts are the per-Service virtual hosts of an inbound
// port, each routing with route and counting in a virtual cluster named
// after the port. A domain goes to the first Service, by name, that
// claims it.
func inboundVirtualHosts(clusterDomain string, svcs []*ir.Service, name string, route *routev3.Route) []*routev3.VirtualHost {
	taken := make(map[string]bool)
	var out []*routev3.VirtualHost
	for _, s := range svcs {
		vh := &routev3.VirtualHost{
			Name:   s.Name,
			Routes: []*routev3.Route{route},
			// Envoy refuses a virtual cluster without headers; every
			// request has a method.
			VirtualClusters: []*routev3.VirtualCluster{{Name: name, Headers: []*routev3.HeaderMatcher{{
				Name:                 ":method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
			}}}},
		}
		for _, port := range s.Ports {
			if port == nil {
				continue
			}
			for _, d := range domains(clusterDomain, s, port.Port) {
				if !taken[d] {
					taken[d] = true
					vh.Domains = append(vh.Domains, d)
				}
			}
		}
		if len(vh.Domains) > 0 {
			out = append(out, vh)
		}
	}
	return out
}

// indexHosts indexes, once per Prepared, what hostsFor reads: every
// Service (as normalized, with its usable ports) by reference with its
// hostKey, and by backend Service the other Services of its namespace that
// have an HTTP route to it: the apex of a split or canary. Their callers
// address the apex, so a backend's pods receive requests for it.
func (p *Prepared) indexHosts() {
	p.hostsOnce.Do(func() {
		p.routedFrom = make(map[ir.ObjectRef][]*ir.Service)
		p.serviceByRef = make(map[ir.ObjectRef]*ir.Service, len(p.b.mesh.Services))
		p.hostKeys = make(map[*ir.Service]string, len(p.b.mesh.Services))
		for _, e := range p.ports {
			if _, ok := p.hostKeys[e.svc]; !ok {
				p.serviceByRef[e.svc.Source] = e.svc
				p.hostKeys[e.svc] = hostKey(p.b.mesh.ClusterDomain, e.svc)
			}
		}
		note := func(apex *ir.Service, rs []*ir.Route) {
			for _, r := range rs {
				if r == nil {
					continue
				}
				for _, be := range r.Backends {
					to := be.Service
					if to == apex.Source || to.Namespace != apex.Namespace || to.Name == "" {
						continue
					}
					if !slices.Contains(p.routedFrom[to], apex) {
						p.routedFrom[to] = append(p.routedFrom[to], apex)
					}
				}
			}
		}
		for _, e := range p.ports {
			if !e.port.Protocol.IsHTTP() {
				// A TCP route's caller sends no Host header.
				continue
			}
			note(e.svc, e.port.Routes)
			for _, c := range e.port.ConsumerRoutes {
				if c != nil {
					note(e.svc, c.Routes)
				}
			}
		}
	})
}

// hostsFor are the Services of a group's inbound HTTP ports: those that
// send the port traffic, and those of the group's namespace routing to
// such a Service (an apex whose callers' requests a canary's pods serve).
// It runs for every group on every rebuild, so the common port (one
// Service, no apex) costs one small slice.
func (p *Prepared) hostsFor(g *ir.ProxyGroup) groupHosts {
	var out groupHosts
	p.indexHosts()
	for _, ip := range g.Inbound {
		if ip == nil || !ip.Protocol.IsHTTP() {
			continue
		}
		var svcs []*ir.Service
		for _, ref := range ip.Services {
			if s := p.serviceByRef[ref]; s != nil && s.Namespace == g.Namespace && !slices.Contains(svcs, s) {
				svcs = append(svcs, s)
			}
			for _, s := range p.routedFrom[ref] {
				if s.Namespace == g.Namespace && !slices.Contains(svcs, s) {
					svcs = append(svcs, s)
				}
			}
		}
		if len(svcs) == 0 {
			continue
		}
		ph := portHosts{port: ip.Port, svcs: svcs}
		if len(svcs) == 1 {
			ph.key = p.hostKeys[svcs[0]]
		} else {
			slices.SortFunc(svcs, func(a, b *ir.Service) int { return strings.Compare(a.Name, b.Name) })
			var sb strings.Builder
			for _, s := range svcs {
				sb.WriteString(p.hostKeys[s])
			}
			ph.key = sb.String()
		}
		out.ports = append(out.ports, ph)
	}
	switch len(out.ports) {
	case 0:
	case 1:
		out.key = out.ports[0].key
	default:
		keys := make([]string, len(out.ports))
		for i, ph := range out.ports {
			keys[i] = ph.key
		}
		out.key = strings.Join(keys, "\n")
	}
	return out
}
