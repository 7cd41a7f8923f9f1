package translate

import (
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/ir"
)

const (
	hcmFilterName      = "envoy.filters.network.http_connection_manager"
	tcpProxyFilterName = "envoy.filters.network.tcp_proxy"
	routerFilterName   = "envoy.filters.http.router"

	trafficOutbound = corev3.TrafficDirection_OUTBOUND
	trafficInbound  = corev3.TrafficDirection_INBOUND
)

func boolValue(v bool) *wrapperspb.BoolValue { return wrapperspb.Bool(v) }

func routerFilter() (*hcmv3.HttpFilter, error) {
	cfg, err := toAny(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: routerFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}

// cidrs are single-address ranges (/32 or /128) for addresses already
// known to parse.
func cidrs(addrs []string) []*corev3.CidrRange {
	out := make([]*corev3.CidrRange, 0, len(addrs))
	for _, a := range addrs {
		ip := netip.MustParseAddr(a)
		out = append(out, &corev3.CidrRange{AddressPrefix: ip.String(), PrefixLen: u32(uint32(ip.BitLen()))})
	}
	return out
}

// hcmOptions are the parts of an HTTP connection manager that differ
// between its uses.
type hcmOptions struct {
	statPrefix string
	// Exactly one of rds and route is set.
	rds   string
	route *routev3.RouteConfiguration
	// filters run before the router.
	filters []*hcmv3.HttpFilter
	inbound bool
	// bare leaves out what only Envoy reads (logs, tracing, path
	// normalisation), for gRPC, which has no use for them.
	bare bool
	// fault puts the fault filter before the router, for routes that
	// inject faults.
	fault bool
}

func (b *builder) hcm(o hcmOptions) (*listenerv3.Filter, error) {
	h := &hcmv3.HttpConnectionManager{
		// Without dots, so that Envoy's tag extraction keeps the prefix
		// whole (envoy_http_conn_manager_prefix), as for clusters.
		StatPrefix:  StatName(o.statPrefix),
		HttpFilters: append(append([]*hcmv3.HttpFilter(nil), o.filters...), b.router),
	}
	if o.fault {
		h.HttpFilters = slices.Insert(h.HttpFilters, len(h.HttpFilters)-1, b.fault)
	}
	if o.rds != "" {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: o.rds}}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: o.route}
	}
	if !o.bare {
		h.AccessLog = b.httpLog
		h.Tracing = b.tracing
		// Routing and RBAC path rules see the path the application will
		// see, so /a/../admin cannot slip past a rule on /admin.
		h.NormalizePath = boolValue(true)
		h.MergeSlashes = true
		// %2F and %5C are slashes to the application too: decoded before
		// routing and RBAC, so no encoding of a path gets past a rule on
		// it.
		h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
		if o.inbound {
			// The application learns its caller's SPIFFE ID from
			// x-forwarded-client-cert; whatever the caller sent is
			// replaced.
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
		}
	}
	cfg, err := toAny(h)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: hcmFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}, nil
}

func (b *builder) tcpProxy(statPrefix, cluster string) (*listenerv3.Filter, error) {
	cfg, err := toAny(&tcpproxyv3.TcpProxy{
		StatPrefix:       StatName(statPrefix),
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		AccessLog:        b.tcpLog,
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: tcpProxyFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}, nil
}

// rdsChain is an outbound HTTP filter chain whose routes come over RDS.
func (b *builder) rdsChain(name string, match *listenerv3.FilterChainMatch, routeConfig string) (*listenerv3.FilterChain, error) {
	// Every outbound connection manager has the fault filter, so that a
	// FaultInjection changes routes only, never listeners (which Envoy
	// would drain).
	f, err := b.hcm(hcmOptions{statPrefix: name, rds: routeConfig, fault: true})
	if err != nil {
		return nil, err
	}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: match, Filters: []*listenerv3.Filter{f}}, nil
}

// tcpSplitChain is the outbound chain of a TCP Service port: to the port's
// cluster, or, when a TrafficSplit splits the Service, to its backends by
// weight (tcp_proxy weighted_clusters: each new connection picks one).
func (b *builder) tcpSplitChain(port *ir.Port, match *listenerv3.FilterChainMatch) (*listenerv3.FilterChain, error) {
	var weighted []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	if len(port.Routes) > 0 {
		for _, be := range port.Routes[0].Backends {
			if _, ok := b.index[be.Cluster]; !ok || be.Weight == 0 {
				continue
			}
			weighted = append(weighted, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: be.Cluster, Weight: be.Weight})
		}
	}
	tp := &tcpproxyv3.TcpProxy{StatPrefix: StatName(port.Cluster), AccessLog: b.tcpLog}
	switch len(weighted) {
	case 0:
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: port.Cluster}
	case 1:
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: weighted[0].GetName()}
	default:
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: weighted}}
	}
	if cb := port.CircuitBreaker; cb != nil && cb.IdleTimeout > 0 {
		tp.IdleTimeout = dur(cb.IdleTimeout.D())
	}
	cfg, err := toAny(tp)
	if err != nil {
		return nil, err
	}
	f := &listenerv3.Filter{Name: tcpProxyFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}
	return &listenerv3.FilterChain{Name: port.Cluster, FilterChainMatch: match, Filters: []*listenerv3.Filter{f}}, nil
}

// tcpChain is a filter chain that proxies the connection to a cluster.
func (b *builder) tcpChain(name string, match *listenerv3.FilterChainMatch, cluster string) (*listenerv3.FilterChain, error) {
	f, err := b.tcpProxy(name, cluster)
	if err != nil {
		return nil, err
	}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: match, Filters: []*listenerv3.Filter{f}}, nil
}
