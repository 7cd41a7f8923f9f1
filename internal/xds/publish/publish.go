package publish

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/workload"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// Publisher serves each rebuild's configuration. It carries translations
// from one rebuild to the next (translate.Memo), so only what changed is
// translated and pushed again. One goroutine at a time may call Publish.
type Publisher struct {
	xds  *server.Server
	opts translate.Options
	memo *translate.Memo
	// routeRefs are the route configurations each listener of the last
	// rebuild names.
	routeRefs map[cachetypes.Resource][]string
	// servers are the proxyless groups' server listeners of the last
	// rebuild, by group key.
	servers map[string]*serverMemo
	// last is what the last rebuild published, for PublishEndpoints.
	last *lastPublish
}

// lastPublish is the last rebuild's layers, their nodes, and the endpoint
// assignments some EDS cluster of them names.
type lastPublish struct {
	content   map[string]server.LayerResources
	nodes     map[string][]string
	proxyless map[string]bool
	eds       map[string]bool
}

// serverMemo is a group's server listeners, kept while the group is the
// same *ir.ProxyGroup (ingest hands back an unchanged group as the very
// same pointer) and its members' addresses are the same.
type serverMemo struct {
	src       *ir.ProxyGroup
	addrs     string
	listeners []cachetypes.Resource
}

// New creates a Publisher that serves through xds.
func New(xds *server.Server, opts translate.Options) *Publisher {
	return &Publisher{xds: xds, opts: opts, memo: translate.NewMemo()}
}

// Published is what one Publish served.
type Published struct {
	// Result is the ingest result it was built from.
	Result *ingest.Result
	// Problems are what translation left out or replaced.
	Problems []translate.Problem
	// Nodes maps every node with configuration to its proxy group.
	Nodes map[string]*ir.ProxyGroup
	// Changed are the nodes whose configuration changed, sorted.
	Changed []string

	// sources maps resource names to the objects that shaped them; it is
	// worked out when a NACK first needs it.
	sources func() map[resourceKey][]ir.ObjectRef
}

// Publish translates the mesh for every proxy group and serves it as
// layers, for the Envoy members and the proxyless ones alike. pods are the
// cluster's pods (for the proxyless members' addresses) and namespaces
// their namespaces. An error means a bug (an inconsistent configuration);
// the proxies keep what they had.
func (p *Publisher) Publish(ctx context.Context, res *ingest.Result, pods []*corev1.Pod, namespaces []*corev1.Namespace) (*Published, error) {
	prep, err := p.memo.Prepare(res.Mesh, p.opts)
	if err != nil {
		return nil, fmt.Errorf("preparing translation: %w", err)
	}
	proxyless, podIPs := proxylessPods(pods, namespaces)
	endpoints := map[string]cachetypes.Resource{}
	for _, e := range p.memo.Endpoints(prep) {
		endpoints[cachev3.GetResourceName(e)] = e
	}
	out := &Published{
		Result:   res,
		Problems: prep.Problems(),
		Nodes:    map[string]*ir.ProxyGroup{},
		sources:  sync.OnceValue(func() map[resourceKey][]ir.ObjectRef { return resourceSources(res.Mesh) }),
	}
	lb := &layerBuilder{content: map[string]server.LayerResources{}, eds: map[string]bool{}, viewRoutes: map[string]map[string]bool{}, grpcRoutes: map[*translate.Resources]map[string]bool{}, refs: p.routeRefs, nextRefs: map[cachetypes.Resource][]string{}}
	nodes := map[string][]string{}
	servers := map[string]*serverMemo{}
	for _, g := range res.Mesh.ProxyGroups {
		var keys, grpcKeys []string
		for _, node := range g.Members {
			out.Nodes[node] = g
			if !proxyless[node] {
				if keys == nil {
					cfg, err := p.memo.ForGroup(prep, g)
					if err != nil {
						return nil, fmt.Errorf("proxy group %s: %w", g.Key, err)
					}
					if keys, err = lb.add(g, cfg); err != nil {
						return nil, fmt.Errorf("proxy group %s: %w", g.Key, err)
					}
				}
				nodes[node] = keys
				continue
			}
			if grpcKeys == nil {
				cfg, err := prep.ForGRPC(g)
				if err != nil {
					return nil, fmt.Errorf("proxy group %s (gRPC): %w", g.Key, err)
				}
				sm, err := p.serverListeners(prep, g, proxyless, podIPs)
				if err != nil {
					return nil, fmt.Errorf("proxy group %s (gRPC): %w", g.Key, err)
				}
				servers[g.Key] = sm
				if grpcKeys, err = lb.addGRPC(g, cfg, sm.listeners); err != nil {
					return nil, fmt.Errorf("proxy group %s (gRPC): %w", g.Key, err)
				}
			}
			nodes[node] = grpcKeys
		}
	}
	p.memo.PruneGroups(res.Mesh.ProxyGroups)
	lb.endpoints(endpoints)
	p.routeRefs = lb.nextRefs
	p.servers = servers
	changed, err := p.xds.Publish(lb.content, nodes, proxyless)
	if err != nil {
		p.last = nil
		return nil, err
	}
	p.last = &lastPublish{content: lb.content, nodes: nodes, proxyless: proxyless, eds: lb.eds}
	out.Changed = changed // sorted by the server
	return out, nil
}

// PublishEndpoints serves new endpoint lists for some clusters of the last
// rebuild, for a change that touched nothing else (ingest.Memo's
// UpdateEndpoints says when): only the endpoints layer is replaced, so
// only proxies subscribed to a changed assignment hear of it. It returns
// the nodes whose configuration changed. Without a last rebuild, or for a
// cluster it did not translate, it returns an error and the caller must
// Publish.
func (p *Publisher) PublishEndpoints(changed map[string][]ir.Endpoint) ([]string, error) {
	if p.last == nil {
		return nil, fmt.Errorf("no configuration published yet")
	}
	all, err := p.memo.UpdateEndpoints(changed)
	if err != nil {
		return nil, err
	}
	var eds []cachetypes.Resource
	for _, e := range all {
		if p.last.eds[cachev3.GetResourceName(e)] {
			eds = append(eds, e)
		}
	}
	content := maps.Clone(p.last.content)
	content[endpointsLayer] = server.LayerResources{resourcev3.EndpointType: eds}
	out, err := p.xds.Publish(content, p.last.nodes, p.last.proxyless)
	if err != nil {
		p.last = nil
		return nil, err
	}
	p.last.content = content
	return out, nil
}

// proxylessPods finds the proxyless gRPC members of the mesh and their
// addresses, by the same rule as ingest and the injector.
func proxylessPods(pods []*corev1.Pod, namespaces []*corev1.Namespace) (map[string]bool, map[string][]string) {
	nsLabels := make(map[string]map[string]string, len(namespaces))
	for _, n := range namespaces {
		nsLabels[n.Name] = n.Labels
	}
	proxyless := map[string]bool{}
	podIPs := map[string][]string{}
	for _, pod := range pods {
		w := workload.Of(pod, nsLabels[pod.Namespace])
		if w.Mode != workload.ModeProxyless || w.NodeID == "" {
			continue
		}
		proxyless[w.NodeID] = true
		for _, ip := range pod.Status.PodIPs {
			podIPs[w.NodeID] = append(podIPs[w.NodeID], ip.IP)
		}
		if len(podIPs[w.NodeID]) == 0 && pod.Status.PodIP != "" {
			podIPs[w.NodeID] = []string{pod.Status.PodIP}
		}
	}
	return proxyless, podIPs
}

// Layer keys. Every Envoy proxy's configuration is three layers: the
// outbound view of its namespace, the mesh's endpoints, and its group's
// own inbound side. A proxyless gRPC client's is its namespace's view in
// gRPC's form (API listeners and clusters), the same endpoints, the
// listeners of the names only its namespace can dial, and, for a member
// that serves, its group's server listeners.
const (
	viewLayerPrefix      = "view/"
	groupLayerPrefix     = "group/"
	endpointsLayer       = "endpoints"
	grpcViewLayerPrefix  = "grpc-view/"
	grpcShortLayerPrefix = "grpc-names/"
	grpcGroupLayerPrefix = "grpc-group/"
)

// layerBuilder collects the layers of one rebuild.
type layerBuilder struct {
	content map[string]server.LayerResources
	// eds are the endpoint assignments that EDS clusters name.
	eds map[string]bool
	// viewRoutes are the route configuration names of each view layer,
	// and grpcRoutes those of each shared part of a proxyless
	// configuration.
	viewRoutes map[string]map[string]bool
	grpcRoutes map[*translate.Resources]map[string]bool
	// refs are the route configurations each listener names, from the
	// previous rebuild (listeners the memo kept are read once); nextRefs
	// collects this rebuild's.
	refs, nextRefs map[cachetypes.Resource][]string
}

// add records a group's layers and returns their keys. The outbound
// listener, the same for every group of a view, goes into the view's
// layer with the routes and clusters it uses. Every route configuration a
// listener names must be in the group's layers, as go-control-plane's
// Snapshot.Consistent demands of a snapshot.
func (lb *layerBuilder) add(g *ir.ProxyGroup, cfg *translate.Config) ([]string, error) {
	view := viewLayerPrefix + cfg.View
	own := server.LayerResources{
		resourcev3.RouteType:   cfg.Own.Routes,
		resourcev3.ClusterType: cfg.Own.Clusters,
		resourcev3.SecretType:  cfg.Own.Secrets,
	}
	var outbound []cachetypes.Resource
	for _, l := range cfg.Own.Listeners {
		if cachev3.GetResourceName(l) == translate.OutboundListener {
			outbound = append(outbound, l)
		} else {
			own[resourcev3.ListenerType] = append(own[resourcev3.ListenerType], l)
		}
	}
	if _, ok := lb.content[view]; !ok {
		listeners := append(slices.Clone(cfg.Shared.Listeners), outbound...)
		lb.content[view] = server.LayerResources{
			resourcev3.ListenerType: listeners,
			resourcev3.RouteType:    cfg.Shared.Routes,
			resourcev3.ClusterType:  cfg.Shared.Clusters,
			resourcev3.SecretType:   cfg.Shared.Secrets,
		}
		lb.needEndpoints(cfg.Shared.Clusters)
		names := routeNames(cfg.Shared.Routes)
		lb.viewRoutes[view] = names
		if err := lb.consistent(listeners, names, nil); err != nil {
			return nil, err
		}
	}
	if err := lb.consistent(own[resourcev3.ListenerType], lb.viewRoutes[view], cfg.Own.Routes); err != nil {
		return nil, err
	}
	lb.needEndpoints(cfg.Own.Clusters)
	key := groupLayerPrefix + g.Key
	lb.content[key] = own
	return []string{view, endpointsLayer, key}, nil
}

// addGRPC records a proxyless group's layers and returns their keys,
// checking them as add checks an Envoy group's: the shared part and each
// namespace's own listeners once per rebuild. servers are the group's
// server listeners.
func (lb *layerBuilder) addGRPC(g *ir.ProxyGroup, cfg *translate.Config, servers []cachetypes.Resource) ([]string, error) {
	names, ok := lb.grpcRoutes[cfg.Shared]
	if !ok {
		names = routeNames(cfg.Shared.Routes)
		lb.grpcRoutes[cfg.Shared] = names
		if err := lb.consistent(cfg.Shared.Listeners, names, nil); err != nil {
			return nil, err
		}
	}
	view := grpcViewLayerPrefix + cfg.View
	if _, ok := lb.content[view]; !ok {
		lb.content[view] = server.LayerResources(cfg.Shared.ByType())
		lb.needEndpoints(cfg.Shared.Clusters)
	}
	// The namespace's own part is the same for each of its groups: it is
	// checked once.
	short := grpcShortLayerPrefix + g.Namespace
	if _, ok := lb.content[short]; !ok {
		if err := lb.consistent(cfg.Own.Listeners, names, cfg.Own.Routes); err != nil {
			return nil, err
		}
		lb.content[short] = server.LayerResources(cfg.Own.ByType())
		lb.needEndpoints(cfg.Own.Clusters)
	}
	keys := []string{view, endpointsLayer, short}
	if len(servers) > 0 {
		key := grpcGroupLayerPrefix + g.Key
		lb.content[key] = server.LayerResources{resourcev3.ListenerType: servers}
		keys = append(keys, key)
	}
	return keys, nil
}

func routeNames(routes []cachetypes.Resource) map[string]bool {
	names := make(map[string]bool, len(routes))
	for _, r := range routes {
		names[cachev3.GetResourceName(r)] = true
	}
	return names
}

// consistent is the one consistency check of every proxy's configuration,
// Envoy or proxyless (go-control-plane's Snapshot.Consistent, for layers):
// the route configurations the listeners name are in the shared (view)
// routes or the group's own. A listener's references are read once across
// rebuilds while the memo keeps the listener.
func (lb *layerBuilder) consistent(listeners []cachetypes.Resource, view map[string]bool, own []cachetypes.Resource) error {
	for _, l := range listeners {
		refs, ok := lb.nextRefs[l]
		if !ok {
			if refs, ok = lb.refs[l]; !ok {
				all := cachev3.GetAllResourceReferences([cachetypes.UnknownType]cachev3.Resources{
					cachetypes.Listener: cachev3.NewResources("", []cachetypes.Resource{l}),
				})
				refs = slices.Sorted(maps.Keys(all[resourcev3.RouteType]))
			}
			lb.nextRefs[l] = refs
		}
		for _, name := range refs {
			if !view[name] && !slices.ContainsFunc(own, func(r cachetypes.Resource) bool { return cachev3.GetResourceName(r) == name }) {
				return fmt.Errorf("inconsistent configuration: listener %s names route configuration %q, which is missing", cachev3.GetResourceName(l), name)
			}
		}
	}
	return nil
}

func (lb *layerBuilder) needEndpoints(clusters []cachetypes.Resource) {
	for _, c := range clusters {
		cl, ok := c.(*clusterv3.Cluster)
		if !ok || cl.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		lb.eds[cmp.Or(cl.GetEdsClusterConfig().GetServiceName(), cl.GetName())] = true
	}
}

// endpoints adds the layer of endpoint assignments that some EDS cluster
// names.
func (lb *layerBuilder) endpoints(all map[string]cachetypes.Resource) {
	var eds []cachetypes.Resource
	for name := range lb.eds {
		if e, ok := all[name]; ok {
			eds = append(eds, e)
		}
	}
	lb.content[endpointsLayer] = server.LayerResources{resourcev3.EndpointType: eds}
}

// serverListeners are the Listeners the members of a proxyless group ask
// for as gRPC xDS servers (named after the address they listen on, see
// translate.GRPCServerListenerName): one per inbound port at each member's
// pod IPs, and at the wildcard addresses a server listening on all
// interfaces reports. Without them a proxyless server never leaves its
// not-serving mode.
func (p *Publisher) serverListeners(prep *translate.Prepared, g *ir.ProxyGroup, proxyless map[string]bool, podIPs map[string][]string) (*serverMemo, error) {
	addrs := []string{"0.0.0.0", "::"}
	for _, m := range g.Members {
		if proxyless[m] {
			addrs = append(addrs, podIPs[m]...)
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	key := strings.Join(addrs, ",")
	if old := p.servers[g.Key]; old != nil && old.src == g && old.addrs == key {
		return old, nil
	}
	var ls []cachetypes.Resource
	for _, in := range g.Inbound {
		if in == nil {
			continue
		}
		for _, addr := range addrs {
			l, err := prep.GRPCServerListener(g, addr, in.Port)
			if err != nil {
				return nil, err
			}
			ls = append(ls, l)
		}
	}
	return &serverMemo{src: g, addrs: key, listeners: ls}, nil
}
