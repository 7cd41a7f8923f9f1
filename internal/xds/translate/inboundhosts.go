package translate

import (
	"fmt"
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
	ports map[int32][]*ir.Service
	// keys identify each port's virtual hosts, key all of them, in memo
	// keys: everything their domains are made of.
	keys map[int32]string
	key  string
}

// writeHostsKey writes what the virtual hosts of svcs are made of.
func writeHostsKey(sb *strings.Builder, svcs []*ir.Service) {
	for _, s := range svcs {
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
		sb.WriteByte(';')
	}
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
			Name:            s.Name,
			Routes:          []*routev3.Route{route},
			VirtualClusters: []*routev3.VirtualCluster{{Name: name}},
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

// routedFrom indexes, by backend Service, the other Services of its
// namespace that have a route to it: the apex Service of a split or
// canary. Their callers address the apex, so a backend's pods receive
// requests for it.
func (p *Prepared) routedFromIndex() map[ir.ObjectRef][]*ir.Service {
	p.hostsOnce.Do(func() {
		p.routedFrom = make(map[ir.ObjectRef][]*ir.Service)
		p.serviceByRef = make(map[ir.ObjectRef]*ir.Service, len(p.b.mesh.Services))
		for _, svc := range p.b.mesh.Services {
			if svc != nil {
				p.serviceByRef[svc.Source] = svc
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
			note(e.svc, e.port.Routes)
			for _, c := range e.port.ConsumerRoutes {
				if c != nil {
					note(e.svc, c.Routes)
				}
			}
		}
	})
	return p.routedFrom
}

// hostsFor are the Services of a group's inbound HTTP ports: those that
// send the port traffic, and those of the group's namespace routing to
// such a Service (an apex whose callers' requests a canary's pods serve).
func (p *Prepared) hostsFor(g *ir.ProxyGroup) groupHosts {
	var out groupHosts
	routedFrom := p.routedFromIndex()
	var all strings.Builder
	for _, ip := range g.Inbound {
		if ip == nil || !ip.Protocol.IsHTTP() {
			continue
		}
		var svcs []*ir.Service
		add := func(s *ir.Service) {
			if s != nil && s.Namespace == g.Namespace && s.Name != "" && !slices.Contains(svcs, s) {
				svcs = append(svcs, s)
			}
		}
		for _, ref := range ip.Services {
			add(p.serviceByRef[ref])
			for _, apex := range routedFrom[ref] {
				add(apex)
			}
		}
		if len(svcs) == 0 {
			continue
		}
		slices.SortFunc(svcs, func(a, b *ir.Service) int { return strings.Compare(a.Name, b.Name) })
		var sb strings.Builder
		writeHostsKey(&sb, svcs)
		if out.ports == nil {
			out.ports, out.keys = make(map[int32][]*ir.Service), make(map[int32]string)
		}
		out.ports[ip.Port], out.keys[ip.Port] = svcs, sb.String()
		fmt.Fprintf(&all, "%d:%s\n", ip.Port, sb.String())
	}
	if all.Len() > 0 {
		all.WriteString(p.b.mesh.ClusterDomain)
	}
	out.key = all.String()
	return out
}
