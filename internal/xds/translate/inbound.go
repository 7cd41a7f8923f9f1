package translate

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/ir"
)

// inboundPassthrough handles connections to ports no Service names: they
// go to the application at their original destination. Envoy's own
// connections are exempt from the capture rules, so they reach the
// application directly.
type inboundPassthrough struct {
	cluster *clusterv3.Cluster
	// plain passes the bytes through untouched (Disabled and Permissive:
	// mesh clients never originate mTLS to such ports, and an
	// application's own TLS must pass intact).
	plain *listenerv3.FilterChain
	// tls first terminates mTLS (Strict: nothing unauthenticated gets in).
	tls *listenerv3.FilterChain
}

func (b *builder) newInboundPassthrough() (*inboundPassthrough, error) {
	ip := &inboundPassthrough{cluster: originalDst(InboundPassthroughCluster)}
	if err := validate(ip.cluster); err != nil {
		return nil, err
	}
	var err error
	if ip.plain, err = b.tcpChain(InboundPassthroughCluster, nil, InboundPassthroughCluster); err != nil {
		return nil, err
	}
	if ip.tls, err = b.tcpChain(InboundPassthroughCluster, nil, InboundPassthroughCluster); err != nil {
		return nil, err
	}
	if ip.tls.TransportSocket, err = downstreamTLS(nil, flavorEnvoy); err != nil {
		return nil, err
	}
	return ip, nil
}

func tlsInspector() (*listenerv3.ListenerFilter, error) {
	cfg, err := toAny(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return nil, err
	}
	return &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: cfg},
	}, nil
}

// inbound is the group's inbound listener with a filter chain (two when
// Permissive) per port the workload serves, and the clusters those chains
// send to. The route configurations of its HTTP ports come from
// inboundRoutes.
func (p *Prepared) inbound(b *builder, g *ir.ProxyGroup) (*listenerv3.Listener, []types.Resource, error) {
	l := &listenerv3.Listener{
		Name:             InboundListener,
		Address:          socketAddress("0.0.0.0", InboundPort),
		UseOriginalDst:   boolValue(true),
		TrafficDirection: trafficInbound,
	}
	var clusters []types.Resource
	switch g.MTLS {
	case ir.MTLSStrict:
		l.DefaultFilterChain = p.inboundPassthrough.tls
	case ir.MTLSPermissive:
		insp, err := tlsInspector()
		if err != nil {
			return nil, nil, err
		}
		l.ListenerFilters = []*listenerv3.ListenerFilter{insp}
		// A client that speaks first gets classified when it sends; one
		// that waits for the server is handled as plaintext after the
		// listener filter timeout instead of being closed.
		l.ContinueOnListenerFiltersTimeout = true
		l.DefaultFilterChain = p.inboundPassthrough.plain
	default:
		l.DefaultFilterChain = p.inboundPassthrough.plain
	}
	seen := make(map[int32]bool)
	for _, ip := range g.Inbound {
		if ip == nil || ip.Port <= 0 || ip.Port > 65535 || seen[ip.Port] {
			continue
		}
		seen[ip.Port] = true
		parts, err := p.inboundParts(b, ip)
		if err != nil {
			return nil, nil, fmt.Errorf("inbound port %d: %w", ip.Port, err)
		}
		clusters = append(clusters, parts.cluster)
		filters, ts := parts.filters, parts.tls
		name := ir.InboundClusterName(ip.Port)
		port := u32(uint32(ip.Port))
		switch g.MTLS {
		case ir.MTLSStrict:
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             name,
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port},
				Filters:          filters,
				TransportSocket:  ts,
			})
		case ir.MTLSPermissive:
			l.FilterChains = append(l.FilterChains,
				&listenerv3.FilterChain{
					Name:             name + "|tls",
					FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port, TransportProtocol: "tls"},
					Filters:          filters,
					TransportSocket:  ts,
				},
				&listenerv3.FilterChain{
					Name:             name + "|plaintext",
					FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port, TransportProtocol: "raw_buffer"},
					Filters:          filters,
				})
		default:
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             name,
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port},
				Filters:          filters,
			})
		}
	}
	clusters = append(clusters, p.inboundPassthrough.cluster)
	sortResources(clusters)
	if err := validate(l); err != nil {
		return nil, nil, err
	}
	return l, clusters, nil
}

// inboundParts are the messages an inbound port's chains are made of.
type inboundParts struct {
	filters []*listenerv3.Filter
	tls     *corev3.TransportSocket
	cluster *clusterv3.Cluster
}

type inboundKey struct {
	port  int32
	proto ir.Protocol
	// hosts keys route configurations (groupHosts).
	hosts string
}

// inboundParts builds a port's filters, TLS and cluster. A port without
// access policies or rate limit looks the same in every group, so those
// are built once per Prepared and shared.
func (p *Prepared) inboundParts(b *builder, ip *ir.InboundPort) (*inboundParts, error) {
	key := inboundKey{port: ip.Port, proto: ip.Protocol}
	shared := len(ip.AccessPolicies) == 0 && ip.RateLimit == nil
	if shared {
		if v, ok := p.inboundCache.Load(key); ok {
			return v.(*inboundParts), nil
		}
	}
	parts := &inboundParts{tls: p.tlsTCP}
	if ip.Protocol.IsHTTP() {
		parts.tls = p.tlsHTTP
	}
	var err error
	if parts.cluster, err = b.inboundCluster(ip); err != nil {
		return nil, err
	}
	if err := validate(parts.cluster); err != nil {
		return nil, err
	}
	if parts.filters, err = b.inboundFilters(ip, flavorEnvoy); err != nil {
		return nil, err
	}
	if shared {
		v, _ := p.inboundCache.LoadOrStore(key, parts)
		return v.(*inboundParts), nil
	}
	return parts, nil
}

// inboundFilters are the network filters of an inbound port: an HTTP
// connection manager with RBAC for HTTP ports, RBAC and a TCP proxy
// otherwise. An Envoy's HTTP port gets its routes over RDS (see
// inboundRoutes), so that a change to the Services its requests may be
// addressed to changes a route configuration, never the listener (which
// would drain the port's connections). A gRPC server's route is inline and
// non-forwarding: the server handles the call itself.
func (b *builder) inboundFilters(ip *ir.InboundPort, fl flavor) ([]*listenerv3.Filter, error) {
	name := ir.InboundClusterName(ip.Port)
	if fl == flavorEnvoy && !ip.Protocol.IsHTTP() {
		rbac, err := b.networkRBACFilters(ip, name)
		if err != nil {
			return nil, err
		}
		tp, err := b.tcpProxy(name, name)
		if err != nil {
			return nil, err
		}
		return append(rbac, tp), nil
	}
	rbac, err := b.httpRBACFilters(ip)
	if err != nil {
		return nil, err
	}
	// gRPC servers have no local rate limit (the policy says so); Envoy
	// counts requests once RBAC let them in.
	if ip.RateLimit != nil && fl != flavorGRPC {
		rl, err := rateLimitFilter(ip.RateLimit)
		if err != nil {
			return nil, err
		}
		rbac = append(rbac, rl)
	}
	o := hcmOptions{statPrefix: name, filters: rbac, inbound: true, bare: fl == flavorGRPC}
	if fl == flavorGRPC {
		route := inboundRoute()
		route.Action = &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}
		o.route = &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{catchAll(name, route)}}
	} else {
		o.rds = name
	}
	f, err := b.hcm(o)
	if err != nil {
		return nil, err
	}
	return []*listenerv3.Filter{f}, nil
}

// inboundRoutes are the route configurations of an Envoy group's inbound
// HTTP ports, named like their clusters: a virtual host per Service a
// request may be addressed to (hosts), each counting its requests in a
// virtual cluster, and the catch-all; all route to the application. They
// do not depend on access policies, so groups with the same ports and
// Services share them.
func (p *Prepared) inboundRoutes(g *ir.ProxyGroup, hosts groupHosts) ([]types.Resource, error) {
	var out []types.Resource
	seen := make(map[int32]bool)
	for _, ip := range g.Inbound {
		if ip == nil || ip.Port <= 0 || ip.Port > 65535 || seen[ip.Port] || !ip.Protocol.IsHTTP() {
			continue
		}
		seen[ip.Port] = true
		svcs, hk := hosts.of(ip.Port)
		key := inboundKey{port: ip.Port, proto: ip.Protocol, hosts: hk}
		if v, ok := p.inboundRouteCache.Load(key); ok {
			out = append(out, v.(*routev3.RouteConfiguration))
			continue
		}
		name := ir.InboundClusterName(ip.Port)
		ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}, Timeout: dur(0)}
		if ip.Protocol == ir.ProtocolGRPC {
			ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: dur(0)}
		}
		route := inboundRoute()
		route.Action = &routev3.Route_Route{Route: ra}
		rc := &routev3.RouteConfiguration{
			Name:             name,
			VirtualHosts:     append(inboundVirtualHosts(p.b.mesh.ClusterDomain, svcs, name, route), catchAll(name, route)),
			ValidateClusters: wrapperspb.Bool(false),
		}
		if err := validate(rc); err != nil {
			return nil, fmt.Errorf("inbound port %d: %w", ip.Port, err)
		}
		v, _ := p.inboundRouteCache.LoadOrStore(key, rc)
		out = append(out, v.(*routev3.RouteConfiguration))
	}
	sortResources(out)
	return out, nil
}

// inboundRoute is an inbound port's one route, matching every request;
// the caller sets its action.
func inboundRoute() *routev3.Route {
	return &routev3.Route{Name: "default", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}}
}

// catchAll is the virtual host named name answering any host with route.
func catchAll(name string, route *routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: []string{"*"}, Routes: []*routev3.Route{route}}
}
