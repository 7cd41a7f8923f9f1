package translate

import (
	"errors"
	"fmt"
	"k8s.io/apimachinery/pkg/util/validation"
	"net/netip"
	"slices"
	"strings"
	"sync"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/ir"
)

// Prepared is a mesh translated once for all of its proxies: every Service
// port's outbound filter chain, route configurations and cluster, built a
// single time and shared by every group's configuration. It is immutable
// and safe for concurrent use.
type Prepared struct {
	b        *builder
	problems []Problem

	// ports are the usable Service ports, in model order.
	ports []*portEntry
	// clusters are the Envoy outbound clusters shared by every group.
	clusters []types.Resource
	// sharedClusters are those of clusters that belong to no port.
	sharedClusters []types.Resource
	// scopes say which ports each group may reach (see scope.go).
	scopes *scopes
	// secrets are sent to a group that has or needs a certificate.
	secrets []types.Resource
	// anyTLS says whether some Service requires clients to originate mTLS.
	anyTLS bool

	defaultOutbound    *listenerv3.FilterChain
	inboundPassthrough *inboundPassthrough
	// tlsHTTP and tlsTCP terminate mTLS on inbound HTTP and TCP ports.
	tlsHTTP, tlsTCP *corev3.TransportSocket
	// inboundCache holds the inboundParts of ports without access
	// policies or rate limit, by inboundKey; inboundRouteCache the inbound
	// route configurations, by inboundKey with hosts.
	inboundCache      sync.Map
	inboundRouteCache sync.Map
	// hostsOnce builds routedFrom, serviceByRef and hostKeys for inbound
	// virtual hosts (indexHosts).
	hostsOnce    sync.Once
	routedFrom   map[ir.ObjectRef][]*ir.Service
	serviceByRef map[ir.ObjectRef]*ir.Service
	hostKeys     map[*ir.Service]string

	// base is the view of namespaces without consumer routes; views holds
	// the namespaces that have them.
	base  *view
	views map[string]*view

	grpcOnce sync.Once
	grpc     *grpcTables
	grpcErr  error

	// memo, when set, holds the previous rebuild's results; Prepare runs
	// with its lock held.
	memo *Memo
}

// portRef locates a Service port by its cluster name.
type portRef struct {
	svc  *ir.Service
	port *ir.Port
}

// portEntry is everything built for one Service port.
type portEntry struct {
	svc  *ir.Service
	port *ir.Port
	// cluster is its outbound cluster.
	cluster types.Resource
	// key is its memo key, when translating through a Memo.
	key string
	// chains are its outbound filter chains with the default routes: one
	// for the cluster IPs, or, for a headless Service, one per endpoint
	// port.
	chains []*listenerv3.FilterChain
	// route is the default route configuration (HTTP ports only).
	route *routev3.RouteConfiguration
	// routed says whether Envoy's chains refer to the route
	// configurations; a headless port's do not (gRPC still uses them).
	routed bool
	// consumer are the route configurations and chains for namespaces
	// whose routes replace the default ones.
	consumer map[string]*consumerVariant
}

type consumerVariant struct {
	route  *routev3.RouteConfiguration
	chains []*listenerv3.FilterChain
}

// view is how the clients of a set of namespaces see the mesh.
type view struct {
	outbound *listenerv3.Listener
	shared   *Resources
}

// builder holds what translation needs besides the model, including the
// messages every configuration embeds, which are built once.
type builder struct {
	mesh  *ir.Mesh
	opts  Options
	index map[string]portRef

	problems []Problem

	h2        *anypb.Any
	prevHosts *routev3.RetryPolicy_RetryHostPredicate
	router    *hcmv3.HttpFilter
	fault     *hcmv3.HttpFilter
	httpLog   []*accesslogv3.AccessLog
	tcpLog    []*accesslogv3.AccessLog
	tracing   *hcmv3.HttpConnectionManager_Tracing
}

func (b *builder) problem(src ir.ObjectRef, reason, msg string) {
	b.problems = append(b.problems, Problem{Source: src, Reason: reason, Message: msg})
}

// fork is a builder for work done after Prepare, possibly concurrently: it
// shares the read-only parts and collects problems of its own.
func (b *builder) fork() *builder {
	f := *b
	f.problems = nil
	return &f
}

// Prepare translates the parts of the mesh that every proxy shares. The
// model is only read; it must not change while the result is in use.
//
// Input that Envoy would reject (an invalid regular expression, a backend
// that names no Service port, a header Envoy will not modify, ...) is left
// out or replaced, and reported by Problems. An error means a bug: a
// resource that failed Envoy's validation.
func Prepare(mesh *ir.Mesh, opts Options) (*Prepared, error) {
	return prepare(mesh, opts, nil)
}

func prepare(mesh *ir.Mesh, opts Options, memo *Memo) (*Prepared, error) {
	if mesh == nil {
		return nil, errors.New("translate: nil mesh")
	}
	b := &builder{mesh: mesh, opts: opts}
	if err := b.init(); err != nil {
		return nil, err
	}
	p := &Prepared{b: b, memo: memo}
	services, problems := normalize(mesh)
	b.problems = append(b.problems, problems...)
	b.index = make(map[string]portRef)
	for _, svc := range services {
		for _, port := range svc.Ports {
			b.index[port.Cluster] = portRef{svc: svc, port: port}
			p.ports = append(p.ports, &portEntry{svc: svc, port: port})
		}
	}
	var errs []error
	if memo != nil {
		if err := p.portKeys(); err != nil {
			return nil, err
		}
	}
	seen := make(map[netip.AddrPort]bool)
	for _, e := range p.ports {
		if err := p.preparePort(e, seen); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.prepareShared(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("translate: %w", errors.Join(errs...))
	}
	p.validateGroups()
	p.problems = dedupe(b.problems)
	return p, nil
}

// Problems lists what Prepare left out or replaced, in the order found.
func (p *Prepared) Problems() []Problem { return slices.Clone(p.problems) }

func (b *builder) init() error {
	var err error
	if b.h2, err = b.http2Options(); err != nil {
		return err
	}
	if b.prevHosts, err = b.previousHosts(); err != nil {
		return err
	}
	if b.router, err = routerFilter(); err != nil {
		return err
	}
	if b.fault, err = faultFilter(); err != nil {
		return err
	}
	if !b.opts.DisableAccessLog {
		logfmt := b.opts.AccessLogFormat == AccessLogLogfmt
		if b.httpLog, err = stdoutLog(httpLogFields, logfmt); err != nil {
			return err
		}
		if b.tcpLog, err = stdoutLog(tcpLogFields, logfmt); err != nil {
			return err
		}
	}
	if b.opts.Tracing != nil {
		if b.tracing, err = tracing(b.opts.Tracing); err != nil {
			return err
		}
	}
	return nil
}

// normalize copies the Services (not their routes or endpoints) with the
// derived fields filled in and unusable Services, ports and addresses
// dropped, so that the rest of the translation can rely on them. A port
// whose cluster name an earlier port already has is dropped too. Prepare
// and Endpoints both start here, so they agree on every cluster name.
func normalize(mesh *ir.Mesh) ([]*ir.Service, []Problem) {
	var problems []Problem
	problem := func(src ir.ObjectRef, reason, msg string) {
		problems = append(problems, Problem{Source: src, Reason: reason, Message: msg})
	}
	out := make([]*ir.Service, 0, len(mesh.Services))
	clusters := make(map[string]bool)
	for _, s := range mesh.Services {
		if s == nil {
			continue
		}
		if !dnsLabel(s.Name) || !dnsLabel(s.Namespace) {
			problem(s.Source, ReasonInvalidValue, fmt.Sprintf("Service name %q or namespace %q is not a DNS label; the Service is left out", s.Name, s.Namespace))
			continue
		}
		svc := *s
		if svc.Hostname == "" {
			svc.Hostname = svc.Name + "." + svc.Namespace + ".svc"
			if mesh.ClusterDomain != "" {
				svc.Hostname += "." + mesh.ClusterDomain
			}
		}
		if !validHeaderValue(svc.Hostname) {
			problem(s.Source, ReasonInvalidValue, fmt.Sprintf("hostname %q cannot be a Host header; the Service is left out", svc.Hostname))
			continue
		}
		svc.VIPs = nil
		for _, v := range s.VIPs {
			if a, err := netip.ParseAddr(v); err == nil && !a.IsUnspecified() {
				svc.VIPs = append(svc.VIPs, a.String())
			} else {
				problem(s.Source, ReasonInvalidValue, fmt.Sprintf("cluster IP %q is not an IP address; it is left out", v))
			}
		}
		svc.Ports = make([]*ir.Port, 0, len(s.Ports))
		numbers := make(map[int32]bool, len(s.Ports))
		for _, p := range s.Ports {
			if !usablePort(p) {
				if p != nil {
					problem(s.Source, ReasonInvalidValue, fmt.Sprintf("port %d is out of range; it is left out", p.Port))
				}
				continue
			}
			if numbers[p.Port] {
				problem(s.Source, ReasonDuplicateDestination, fmt.Sprintf("port %d is listed twice; the second is left out", p.Port))
				continue
			}
			numbers[p.Port] = true
			port := *p
			port.Cluster = clusterName(&svc, p)
			if clusters[port.Cluster] || !validHeaderValue(port.Cluster) {
				problem(s.Source, ReasonDuplicateDestination, fmt.Sprintf("port %d has cluster name %q, which another Service port already has or which is not valid; it is left out", port.Port, port.Cluster))
				continue
			}
			clusters[port.Cluster] = true
			switch port.Protocol {
			case ir.ProtocolHTTP, ir.ProtocolHTTP2, ir.ProtocolGRPC, ir.ProtocolTCP:
			default:
				port.Protocol = ir.ProtocolTCP
			}
			svc.Ports = append(svc.Ports, &port)
		}
		out = append(out, &svc)
	}
	return out, problems
}

// dnsLabel says whether s can be a Service or namespace name.
func dnsLabel(s string) bool { return len(validation.IsDNS1123Label(s)) == 0 }

// validHeaderValue is Envoy's lenient check on header names and values:
// no NUL, CR or LF.
func validHeaderValue(s string) bool { return !strings.ContainsAny(s, "\x00\r\n") }

// preparePort builds the port's cluster, route configurations and
// outbound filter chains. seen holds the destinations already claimed by
// an earlier port: Envoy refuses a listener with two identical matches.
func (p *Prepared) preparePort(e *portEntry, seen map[netip.AddrPort]bool) error {
	b := p.b
	svc, port := e.svc, e.port
	var memo *portMemo
	if p.memo != nil {
		key := e.key
		if memo = p.memo.lookupPort(port.Cluster, key); memo == nil {
			before := len(b.problems)
			if err := p.buildPort(e); err != nil {
				return err
			}
			memo = &portMemo{key: key, cluster: e.cluster, route: e.route, problems: slices.Clone(b.problems[before:])}
			for ns, v := range e.consumer {
				if memo.consumer == nil {
					memo.consumer = map[string]*routev3.RouteConfiguration{}
				}
				memo.consumer[ns] = v.route
			}
			if old := p.memo.ports[port.Cluster]; old != nil {
				memo.inherit(old)
				e.cluster, e.route = memo.cluster, memo.route
				for ns, v := range e.consumer {
					v.route = memo.consumer[ns]
				}
			}
			p.memo.ports[port.Cluster] = memo
		} else {
			e.cluster, e.route = memo.cluster, memo.route
			for ns, rc := range memo.consumer {
				if e.consumer == nil {
					e.consumer = make(map[string]*consumerVariant)
				}
				e.consumer[ns] = &consumerVariant{route: rc}
			}
			b.problems = append(b.problems, memo.problems...)
		}
	} else if err := p.buildPort(e); err != nil {
		return err
	}
	p.clusters = append(p.clusters, e.cluster)
	p.anyTLS = p.anyTLS || needsTLS(svc)
	if err := p.portChains(e, seen, memo); err != nil {
		return err
	}
	return nil
}

// buildPort builds a port's cluster and route configurations.
func (p *Prepared) buildPort(e *portEntry) error {
	b := p.b
	svc, port := e.svc, e.port
	c, err := b.outboundCluster(svc, port, flavorEnvoy)
	if err != nil {
		return err
	}
	if err := validate(c); err != nil {
		return err
	}
	e.cluster = c
	if port.Protocol.IsHTTP() {
		if e.route, err = b.routeConfig(ir.RouteConfigName(svc.Hostname, port.Port), svc, port, port.Routes); err != nil {
			return err
		}
		for _, cr := range port.ConsumerRoutes {
			if cr == nil || !dnsLabel(cr.Namespace) {
				continue
			}
			rc, err := b.routeConfig(ConsumerRouteConfigName(svc.Hostname, port.Port, cr.Namespace), svc, port, cr.Routes)
			if err != nil {
				return err
			}
			if e.consumer == nil {
				e.consumer = make(map[string]*consumerVariant)
			}
			e.consumer[cr.Namespace] = &consumerVariant{route: rc}
		}
	}
	return nil
}

// portChains builds a port's outbound filter chains, reusing those of the
// memo entry when the port claims the same addresses as before.
func (p *Prepared) portChains(e *portEntry, seen map[netip.AddrPort]bool, memo *portMemo) error {
	b := p.b
	svc, port := e.svc, e.port
	if len(svc.VIPs) == 0 {
		return p.prepareHeadless(e, seen)
	}
	var vips []string
	for _, v := range svc.VIPs {
		ap := netip.AddrPortFrom(netip.MustParseAddr(v), uint16(port.Port))
		if seen[ap] {
			b.problem(svc.Source, ReasonDuplicateDestination, fmt.Sprintf("%s is already the address of another Service port; this port does not get traffic sent to it", ap))
			continue
		}
		seen[ap] = true
		vips = append(vips, v)
	}
	if len(vips) == 0 {
		return nil
	}
	// A TCP port's chain also names its backends (a split changes them) and
	// its idle timeout.
	tcpKey := ""
	if !port.Protocol.IsHTTP() {
		tcpKey = tcpChainKey(port)
	}
	if memo != nil && memo.chains != nil && slices.Equal(memo.vips, vips) && memo.tcpKey == tcpKey {
		e.chains = memo.chains
		e.routed = port.Protocol.IsHTTP()
		for ns, v := range e.consumer {
			v.chains = memo.consumed[ns]
		}
		return nil
	}
	if memo != nil {
		defer func() {
			memo.vips, memo.tcpKey, memo.chains = vips, tcpKey, e.chains
			memo.consumed = map[string][]*listenerv3.FilterChain{}
			for ns, v := range e.consumer {
				memo.consumed[ns] = v.chains
			}
		}()
	}
	match := &listenerv3.FilterChainMatch{PrefixRanges: cidrs(vips), DestinationPort: u32(uint32(port.Port))}
	if !port.Protocol.IsHTTP() {
		fc, err := b.tcpSplitChain(port, match)
		if err != nil {
			return err
		}
		e.chains = []*listenerv3.FilterChain{fc}
		return nil
	}
	fc, err := b.rdsChain(port.Cluster, match, e.route.GetName())
	if err != nil {
		return err
	}
	e.chains = []*listenerv3.FilterChain{fc}
	e.routed = true
	for _, v := range e.consumer {
		fc, err := b.rdsChain(port.Cluster, match, v.route.GetName())
		if err != nil {
			return err
		}
		v.chains = []*listenerv3.FilterChain{fc}
	}
	return nil
}

// prepareHeadless gives a headless Service port one chain per endpoint
// port, matching every endpoint address, that carries the connection to
// the very endpoint the client chose (with mTLS when the Service wants
// it). The traffic is handled as TCP: a client that picked a pod must get
// that pod, so there is no HTTP routing to apply.
func (p *Prepared) prepareHeadless(e *portEntry, seen map[netip.AddrPort]bool) error {
	b := p.b
	svc, port := e.svc, e.port
	od, err := b.originalDstCluster(svc, port)
	if err != nil {
		return err
	}
	if err := validate(od); err != nil {
		return err
	}
	p.clusters = append(p.clusters, stable(p.memo, "cluster/"+od.GetName(), od))
	byPort := make(map[int32][]string)
	var order []int32
	for _, ep := range port.Endpoints {
		if !validEndpoint(ep) {
			continue
		}
		addr := netip.MustParseAddr(ep.Address)
		ap := netip.AddrPortFrom(addr, uint16(ep.Port))
		if seen[ap] {
			continue
		}
		seen[ap] = true
		if _, ok := byPort[ep.Port]; !ok {
			order = append(order, ep.Port)
		}
		byPort[ep.Port] = append(byPort[ep.Port], addr.String())
	}
	slices.Sort(order)
	for _, ep := range order {
		name := fmt.Sprintf("%s|endpoints:%d", od.GetName(), ep)
		match := &listenerv3.FilterChainMatch{PrefixRanges: cidrs(byPort[ep]), DestinationPort: u32(uint32(ep))}
		fc, err := b.tcpChain(name, match, od.GetName())
		if err != nil {
			return err
		}
		e.chains = append(e.chains, fc)
	}
	return nil
}

// prepareShared builds what does not belong to one port: the default
// outbound chain and its cluster, the tracing cluster, the secrets, and
// the view of every namespace.
func (p *Prepared) prepareShared() error {
	b := p.b
	var err error
	shared := len(p.clusters)
	if b.opts.BlockUnknown {
		p.clusters = append(p.clusters, blackhole())
		p.defaultOutbound, err = b.tcpChain(BlackholeCluster, nil, BlackholeCluster)
	} else {
		p.clusters = append(p.clusters, originalDst(PassthroughCluster))
		p.defaultOutbound, err = b.tcpChain(PassthroughCluster, nil, PassthroughCluster)
	}
	if err != nil {
		return err
	}
	if b.opts.Tracing != nil {
		c, err := b.tracingCluster()
		if err != nil {
			return err
		}
		p.clusters = append(p.clusters, c)
	}
	// Port clusters were validated when built; these are the rest.
	for i := shared; i < len(p.clusters); i++ {
		if err := validate(p.clusters[i]); err != nil {
			return err
		}
		p.clusters[i] = stable(p.memo, "cluster/"+resourceName(p.clusters[i]), p.clusters[i])
	}
	p.sharedClusters = slices.Clone(p.clusters[shared:])
	p.defaultOutbound = stable(p.memo, "chain/default", p.defaultOutbound)
	sortResources(p.clusters)
	p.secrets = secrets(b.opts)
	for i, s := range p.secrets {
		p.secrets[i] = stable(p.memo, "secret/"+resourceName(s), s)
	}
	for _, s := range p.secrets {
		if err := validate(s); err != nil {
			return err
		}
	}
	if p.inboundPassthrough, err = b.newInboundPassthrough(); err != nil {
		return err
	}
	if p.tlsHTTP, err = downstreamTLS([]string{"h2", "http/1.1"}, flavorEnvoy); err != nil {
		return err
	}
	if p.tlsTCP, err = downstreamTLS(nil, flavorEnvoy); err != nil {
		return err
	}

	if p.base, err = p.newView("", "", nil, p.memo); err != nil {
		return err
	}
	p.views = make(map[string]*view)
	for _, e := range p.ports {
		for ns := range e.consumer {
			if p.views[ns] != nil {
				continue
			}
			if p.views[ns], err = p.newView(ns, ns, nil, p.memo); err != nil {
				return err
			}
		}
	}
	// Every group's scoped view is built now, while the memo may be used;
	// a group Prepare did not see gets its view when asked.
	p.buildScopes()
	groups := make(map[*ir.ProxyGroup]groupScope, len(p.b.mesh.ProxyGroups))
	for _, g := range p.b.mesh.ProxyGroups {
		if g == nil {
			continue
		}
		v, key, err := p.scopedView(g, p.memo)
		if err != nil {
			return err
		}
		groups[g] = groupScope{view: v, key: key}
	}
	p.scopes.groups = groups
	return nil
}

// newView assembles the outbound listener, route configurations and
// clusters that clients in namespace ns see ("" for the base view) of the
// ports in vis, indexes of p.ports in ascending order (nil: every
// port). key names the view in the memo.
func (p *Prepared) newView(ns, key string, vis []int, memo *Memo) (*view, error) {
	var chains []*listenerv3.FilterChain
	var routes []types.Resource
	ports := p.ports
	if vis != nil {
		ports = make([]*portEntry, len(vis))
		for k, i := range vis {
			ports[k] = p.ports[i]
		}
	}
	for _, e := range ports {
		chainsOf, route := e.chains, e.route
		if v := e.consumer[ns]; ns != "" && v != nil {
			chainsOf, route = v.chains, v.route
		}
		chains = append(chains, chainsOf...)
		if e.routed {
			routes = append(routes, route)
		}
	}
	sortResources(routes)
	clusters := p.viewClusters(vis)
	if l := memo.outbound(key, chains, p.defaultOutbound); l != nil {
		return &view{outbound: l, shared: &Resources{Routes: routes, Clusters: clusters}}, nil
	}
	l := &listenerv3.Listener{
		Name:               OutboundListener,
		Address:            socketAddress("0.0.0.0", OutboundPort),
		UseOriginalDst:     boolValue(true),
		TrafficDirection:   trafficOutbound,
		FilterChains:       chains,
		DefaultFilterChain: p.defaultOutbound,
	}
	// A scoped view's chains are those of the full view of its
	// namespace, validated with it: only the listener around them is
	// checked again.
	check := l
	if vis != nil {
		check = &listenerv3.Listener{Name: l.Name, Address: l.Address, UseOriginalDst: l.UseOriginalDst, TrafficDirection: l.TrafficDirection, DefaultFilterChain: l.DefaultFilterChain}
	}
	if err := validate(check); err != nil {
		return nil, err
	}
	memo.keepOutbound(key, l)
	return &view{outbound: l, shared: &Resources{Routes: routes, Clusters: clusters}}, nil
}

func (p *Prepared) viewFor(ns string) *view {
	if v := p.views[ns]; v != nil {
		return v
	}
	return p.base
}

// ForGroup is the Envoy configuration of one proxy group: the shared
// outbound listener, routes and clusters of its namespace's view, and its
// own inbound listener, inbound clusters and secrets. Endpoints are not
// included; they are the same for everyone (see Endpoints).
func (p *Prepared) ForGroup(g *ir.ProxyGroup) (*Config, error) {
	if g == nil {
		return nil, errors.New("translate: nil proxy group")
	}
	b := p.b.fork()
	in, clusters, err := p.inbound(b, g)
	if err != nil {
		return nil, fmt.Errorf("translate: proxy group %s: %w", g.Key, err)
	}
	routes, err := p.inboundRoutes(g, p.hostsFor(g))
	if err != nil {
		return nil, fmt.Errorf("translate: proxy group %s: %w", g.Key, err)
	}
	return p.groupConfig(g, in, clusters, routes)
}

// groupConfig puts a group's inbound side together with its view.
func (p *Prepared) groupConfig(g *ir.ProxyGroup, in *listenerv3.Listener, clusters, routes []types.Resource) (*Config, error) {
	v, viewKey, err := p.scopedView(g, nil)
	if err != nil {
		return nil, fmt.Errorf("translate: proxy group %s: %w", g.Key, err)
	}
	own := &Resources{
		Listeners: []types.Resource{in, v.outbound},
		Routes:    routes,
		Clusters:  clusters,
	}
	if g.MTLS == ir.MTLSStrict || g.MTLS == ir.MTLSPermissive || p.anyTLS {
		own.Secrets = p.secrets
	}
	return &Config{Shared: v.shared, Own: own, View: viewKey}, nil
}

// ForGroup translates a mesh for one Envoy proxy group in one call:
// Prepare, then (*Prepared).ForGroup, merged into one set of lists. A
// server that configures many groups should call Prepare once instead.
func ForGroup(mesh *ir.Mesh, group *ir.ProxyGroup, opts Options) (*Resources, error) {
	p, err := Prepare(mesh, opts)
	if err != nil {
		return nil, err
	}
	c, err := p.ForGroup(group)
	if err != nil {
		return nil, err
	}
	return c.Resources(), nil
}

// validateGroups reports what the groups' access policies contain that
// cannot be enforced; ForGroup leaves the same parts out.
func (p *Prepared) validateGroups() {
	b := p.b
	for _, g := range b.mesh.ProxyGroups {
		if g == nil {
			continue
		}
		for _, ip := range g.Inbound {
			if ip != nil {
				b.accessRules(ip, ip.Protocol.IsHTTP())
			}
		}
	}
}

// dedupe keeps the first of equal problems: a rule that became several
// routes, or a policy that protects several ports, is reported once.
func dedupe(ps []Problem) []Problem {
	seen := make(map[Problem]bool, len(ps))
	var out []Problem
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// tcpChainKey is what a TCP port's outbound chain depends on besides its
// addresses: the backends and weights of its route (a TrafficSplit or
// TCPRoute), and the CircuitBreaker's idle timeout.
func tcpChainKey(port *ir.Port) string {
	var b strings.Builder
	if len(port.Routes) > 0 {
		for _, be := range port.Routes[0].Backends {
			fmt.Fprintf(&b, "%s=%d;", be.Cluster, be.Weight)
		}
	}
	if cb := port.CircuitBreaker; cb != nil {
		fmt.Fprintf(&b, "idle=%d", cb.IdleTimeout)
	}
	return b.String()
}
