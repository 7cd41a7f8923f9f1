package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/ir"
)

// grpcTables are the proxyless gRPC counterparts of the Envoy tables,
// built the first time a gRPC configuration is asked for.
type grpcTables struct {
	// base holds the mesh-wide API listeners and the gRPC clusters; views
	// hold the same for namespaces with consumer routes.
	base  *Resources
	views map[string]*Resources
	// short are the API listeners for the names only a Service's own
	// namespace can dial (name:port), by namespace.
	short map[string][]types.Resource
}

func (p *Prepared) grpcTables() (*grpcTables, error) {
	p.grpcOnce.Do(func() { p.grpc, p.grpcErr = p.buildGRPC() })
	return p.grpc, p.grpcErr
}

// grpcPortMemo keeps a port's gRPC messages for as long as its memo entry
// lives (its key is unchanged), so that a rebuild hands the server the
// very same messages and nothing is marshalled again.
type grpcPortMemo struct {
	cluster   types.Resource
	hcm       map[*routev3.RouteConfiguration]*anypb.Any
	listeners map[grpcListenerKey]*listenerv3.Listener
}

type grpcListenerKey struct {
	name string
	hcm  *anypb.Any
}

// grpcMemo returns the gRPC memo of a port, or a fresh one that is not
// kept when translating without a Memo.
func (p *Prepared) grpcMemo(e *portEntry) *grpcPortMemo {
	fresh := func() *grpcPortMemo {
		return &grpcPortMemo{hcm: map[*routev3.RouteConfiguration]*anypb.Any{}, listeners: map[grpcListenerKey]*listenerv3.Listener{}}
	}
	if p.memo == nil {
		return fresh()
	}
	p.memo.mu.Lock()
	defer p.memo.mu.Unlock()
	pm := p.memo.ports[e.port.Cluster]
	if pm == nil || pm.key != e.key {
		return fresh()
	}
	if pm.grpc == nil {
		pm.grpc = fresh()
	}
	return pm.grpc
}

func (p *Prepared) buildGRPC() (*grpcTables, error) {
	b := p.b.fork()
	var clusters []types.Resource
	memos := make(map[*portEntry]*grpcPortMemo, len(p.ports))
	for _, e := range p.ports {
		gm := p.grpcMemo(e)
		memos[e] = gm
		if gm.cluster == nil {
			c, err := b.outboundCluster(e.svc, e.port, flavorGRPC)
			if err != nil {
				return nil, err
			}
			if err := validate(c); err != nil {
				return nil, err
			}
			gm.cluster = c
		}
		clusters = append(clusters, gm.cluster)
	}
	sortResources(clusters)

	// The connection manager of each port and route variant, packed once
	// and shared by every listener name that leads to it.
	type variants struct {
		def      *anypb.Any
		consumer map[string]*anypb.Any
	}
	hcms := make(map[*portEntry]*variants)
	namespaces := make(map[string]bool)
	hcmOf := func(e *portEntry, route *routev3.RouteConfiguration) (*anypb.Any, error) {
		gm := memos[e]
		if a := gm.hcm[route]; a != nil {
			return a, nil
		}
		// A proxyless client's listener carries its routes, so it changes
		// with them anyway: the fault filter only where a route uses it.
		f, err := b.hcm(hcmOptions{statPrefix: e.port.Cluster, route: withWarmRoute(route, p.zeroWeightBackends(e.port)), bare: true, fault: hasFaults(route)})
		if err != nil {
			return nil, err
		}
		gm.hcm[route] = f.GetTypedConfig()
		return gm.hcm[route], nil
	}
	for _, e := range p.ports {
		if e.route == nil {
			continue
		}
		v := &variants{}
		var err error
		if v.def, err = hcmOf(e, e.route); err != nil {
			return nil, err
		}
		for ns, c := range e.consumer {
			a, err := hcmOf(e, c.route)
			if err != nil {
				return nil, err
			}
			if v.consumer == nil {
				v.consumer = make(map[string]*anypb.Any)
			}
			v.consumer[ns] = a
			namespaces[ns] = true
		}
		hcms[e] = v
	}
	listenerOf := func(e *portEntry, name string, hcm *anypb.Any) (*listenerv3.Listener, error) {
		gm := memos[e]
		k := grpcListenerKey{name, hcm}
		if l := gm.listeners[k]; l != nil {
			return l, nil
		}
		l, err := apiListener(name, hcm)
		if err != nil {
			return nil, err
		}
		gm.listeners[k] = l
		return l, nil
	}
	hcmFor := func(e *portEntry, ns string) *anypb.Any {
		if a := hcms[e].consumer[ns]; a != nil {
			return a
		}
		return hcms[e].def
	}
	meshWide := func(ns string) ([]types.Resource, error) {
		var out []types.Resource
		for _, e := range p.ports {
			if e.route == nil {
				continue
			}
			for _, name := range meshWideNames(e.svc, e.port.Port) {
				l, err := listenerOf(e, name, hcmFor(e, ns))
				if err != nil {
					return nil, err
				}
				out = append(out, l)
			}
		}
		sortResources(out)
		return out, nil
	}

	t := &grpcTables{views: make(map[string]*Resources), short: make(map[string][]types.Resource)}
	ls, err := meshWide("")
	if err != nil {
		return nil, err
	}
	t.base = &Resources{Listeners: ls, Clusters: clusters}
	for ns := range namespaces {
		ls, err := meshWide(ns)
		if err != nil {
			return nil, err
		}
		t.views[ns] = &Resources{Listeners: ls, Clusters: clusters}
	}
	for _, e := range p.ports {
		if e.route == nil {
			continue
		}
		ns := e.svc.Namespace
		l, err := listenerOf(e, hostPort(e.svc.Name, e.port.Port), hcmFor(e, ns))
		if err != nil {
			return nil, err
		}
		t.short[ns] = append(t.short[ns], l)
	}
	for _, ls := range t.short {
		sortResources(ls)
	}
	return t, nil
}

// WarmRouteName names the route that keeps a proxyless client's zero-weight
// backends warm (see withWarmRoute).
const WarmRouteName = "weft/warm-zero-weight-backends"

// zeroWeightBackends are the known clusters a port's routes (for any
// namespace) name at weight 0, sorted.
func (p *Prepared) zeroWeightBackends(port *ir.Port) []string {
	var out []string
	add := func(rs []*ir.Route) {
		for _, r := range rs {
			if r == nil {
				continue
			}
			for _, be := range r.Backends {
				if _, known := p.b.index[be.Cluster]; known && be.Weight == 0 {
					out = append(out, be.Cluster)
				}
			}
		}
	}
	add(port.Routes)
	for _, cr := range port.ConsumerRoutes {
		if cr != nil {
			add(cr.Routes)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// withWarmRoute is the route configuration a proxyless client gets: rc,
// and, when some backend has weight 0 and no route sends to it, one more
// route in every virtual host that never matches (a runtime fraction of
// 0%) and names those backends. grpc-go drops zero-weight clusters from a
// weighted route, so without it a canary at weight 0 has no cluster in
// the channel, and the first calls after a step out of 0 fail with
// "unknown cluster selected for RPC" while the channel builds it. A route
// that names the cluster keeps it built and connected whatever its
// weight. Envoy, which has every cluster, does not get this route.
func withWarmRoute(rc *routev3.RouteConfiguration, zero []string) *routev3.RouteConfiguration {
	if len(zero) == 0 {
		return rc
	}
	used := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			ra := r.GetRoute()
			used[ra.GetCluster()] = true
			for _, wc := range ra.GetWeightedClusters().GetClusters() {
				if wc.GetWeight().GetValue() > 0 {
					used[wc.GetName()] = true
				}
			}
		}
	}
	var cold []string
	for _, c := range zero {
		if !used[c] {
			cold = append(cold, c)
		}
	}
	if len(cold) == 0 {
		return rc
	}
	ra := &routev3.RouteAction{}
	if len(cold) == 1 {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: cold[0]}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, c := range cold {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(1)})
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	warm := &routev3.Route{
		Name: WarmRouteName,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			RuntimeFraction: &corev3.RuntimeFractionalPercent{
				DefaultValue: &typev3.FractionalPercent{Numerator: 0, Denominator: typev3.FractionalPercent_HUNDRED},
			},
		},
		Action: &routev3.Route_Route{Route: ra},
	}
	out, _ := proto.Clone(rc).(*routev3.RouteConfiguration)
	for _, vh := range out.GetVirtualHosts() {
		vh.Routes = append(vh.Routes, proto.CloneOf(warm))
	}
	return out
}

// meshWideNames are the listener names any client can dial for a Service
// port: the full hostname and the forms a search path completes.
func meshWideNames(svc *ir.Service, port int32) []string {
	names := []string{
		hostPort(svc.Hostname, port),
		hostPort(svc.Name+"."+svc.Namespace, port),
		hostPort(svc.Name+"."+svc.Namespace+".svc", port),
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// apiListener is what a gRPC channel dialling xds:///<name> reads: an HTTP
// connection manager with the routes inline, so that the listener alone
// says where every call goes.
func apiListener(name string, hcm *anypb.Any) (*listenerv3.Listener, error) {
	l := &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}
	return l, validate(l)
}

// ForGRPC is the configuration of a proxyless gRPC client in the group: an
// API listener for every name a client can dial (<hostname>:<port>,
// <name>.<ns>:<port>, <name>.<ns>.svc:<port>, and <name>:<port> for
// Services of its own namespace) on every HTTP-family Service port, with
// the same routes Envoy gets, and the clusters in gRPC's form (mTLS from
// certificate provider instances). Endpoints are shared (see Endpoints).
// Inbound, a gRPC server reads GRPCServerListener.
func (p *Prepared) ForGRPC(g *ir.ProxyGroup) (*Config, error) {
	if g == nil {
		return nil, errors.New("translate: nil proxy group")
	}
	t, err := p.grpcTables()
	if err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	cfg := &Config{Shared: t.base, Own: &Resources{Listeners: t.short[g.Namespace]}}
	if v := t.views[g.Namespace]; v != nil {
		cfg.Shared, cfg.View = v, g.Namespace
	}
	return cfg, nil
}

// GRPCServerListener is the listener a proxyless gRPC server of the group
// listening on addr:port asks for (named by GRPCServerListenerName): mTLS
// from certificate provider instances unless the group's mode is
// Disabled, then the group's access policies for the port, then the
// server's own handlers.
//
// gRPC cannot tell TLS from plaintext on one port, so Permissive is served
// as mTLS: mesh clients always originate it to a Permissive Service.
func (p *Prepared) GRPCServerListener(g *ir.ProxyGroup, addr string, port int32) (*listenerv3.Listener, error) {
	if g == nil {
		return nil, errors.New("translate: nil proxy group")
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("translate: gRPC server address %q port %d is not an IP address and port", addr, port)
	}
	in := &ir.InboundPort{Port: port, Protocol: ir.ProtocolGRPC}
	for _, candidate := range g.Inbound {
		if candidate != nil && candidate.Port == port {
			in = candidate
			break
		}
	}
	b := p.b.fork()
	filters, err := b.inboundFilters(in, flavorGRPC)
	if err != nil {
		return nil, fmt.Errorf("translate: proxy group %s: %w", g.Key, err)
	}
	fc := &listenerv3.FilterChain{Name: ir.InboundClusterName(port), Filters: filters}
	if g.MTLS == ir.MTLSStrict || g.MTLS == ir.MTLSPermissive {
		if fc.TransportSocket, err = downstreamTLS(nil, flavorGRPC); err != nil {
			return nil, err
		}
	}
	l := &listenerv3.Listener{
		Name:             GRPCServerListenerName(ip.String(), port),
		Address:          socketAddress(ip.String(), uint32(port)),
		TrafficDirection: trafficInbound,
		FilterChains:     []*listenerv3.FilterChain{fc},
	}
	return l, validate(l)
}

// ForGRPC translates a mesh for the proxyless gRPC clients of one group in
// one call, merged into one set of lists.
func ForGRPC(mesh *ir.Mesh, group *ir.ProxyGroup, opts Options) (*Resources, error) {
	p, err := Prepare(mesh, opts)
	if err != nil {
		return nil, err
	}
	c, err := p.ForGRPC(group)
	if err != nil {
		return nil, err
	}
	return c.Resources(), nil
}

// GRPCServerListener translates a mesh for one proxyless gRPC server in
// one call.
func GRPCServerListener(mesh *ir.Mesh, group *ir.ProxyGroup, addr string, port int32, opts Options) (*listenerv3.Listener, error) {
	p, err := Prepare(mesh, opts)
	if err != nil {
		return nil, err
	}
	return p.GRPCServerListener(group, addr, port)
}
