package translate

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weft-mesh/weft/internal/ir"
)

// Endpoints are the ClusterLoadAssignments of every Service port in the
// mesh, sorted by cluster name. Every proxy and proxyless client shares
// them: each has a cluster of the same name for every Service port.
//
// Endpoints are grouped into one locality per zone. Each locality carries
// a weight (its number of endpoints) because gRPC ignores localities
// without one; Envoy ignores locality weights unless asked to use them.
// Draining endpoints are sent as DRAINING so that clients finish what they
// have and start nothing new on them.
func Endpoints(mesh *ir.Mesh) []types.Resource {
	if mesh == nil {
		return nil
	}
	var out []types.Resource
	services, _ := normalize(mesh)
	for _, svc := range services {
		for _, port := range svc.Ports {
			out = append(out, loadAssignment(port.Cluster, port.Endpoints))
		}
	}
	sortResources(out)
	return out
}

func loadAssignment(name string, eps []ir.Endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byZone := make(map[string]*endpointv3.LocalityLbEndpoints)
	seen := make(map[string]bool, len(eps))
	for _, ep := range eps {
		if !validEndpoint(ep) {
			continue
		}
		key := netip.AddrPortFrom(netip.MustParseAddr(ep.Address), uint16(ep.Port)).String()
		if seen[key] {
			continue
		}
		seen[key] = true
		loc := byZone[ep.Zone]
		if loc == nil {
			loc = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: ep.Zone}}
			byZone[ep.Zone] = loc
			cla.Endpoints = append(cla.Endpoints, loc)
		}
		health := corev3.HealthStatus_HEALTHY
		if ep.Health == ir.HealthDraining {
			health = corev3.HealthStatus_DRAINING
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(ep.Address, uint32(ep.Port), health))
	}
	slices.SortFunc(cla.Endpoints, func(a, b *endpointv3.LocalityLbEndpoints) int {
		return cmp.Compare(a.GetLocality().GetZone(), b.GetLocality().GetZone())
	})
	for _, loc := range cla.Endpoints {
		loc.LoadBalancingWeight = u32(uint32(len(loc.LbEndpoints)))
	}
	return cla
}

func validEndpoint(ep ir.Endpoint) bool {
	_, err := netip.ParseAddr(ep.Address)
	return err == nil && ep.Port > 0 && ep.Port <= 65535
}

func lbEndpoint(host string, port uint32, health corev3.HealthStatus) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
		HealthStatus:   health,
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// usablePort says whether a Service port can be configured at all.
func usablePort(p *ir.Port) bool {
	return p != nil && p.Port > 0 && p.Port <= 65535
}

// clusterName is the port's cluster, derived when the model left it empty.
func clusterName(svc *ir.Service, p *ir.Port) string {
	if p.Cluster != "" {
		return p.Cluster
	}
	return ir.ClusterName(svc.Hostname, p.Port)
}

func hostPort(host string, port int32) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
