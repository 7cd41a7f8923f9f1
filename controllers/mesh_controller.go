package controllers

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// +kubebuilder:rbac:groups="",resources=namespaces;services;pods;serviceaccounts,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits;retrypolicies;circuitbreakers;accesspolicies;meshidentities,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits/status;retrypolicies/status;circuitbreakers/status;accesspolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes;grpcroutes;referencegrants,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes/status;grpcroutes/status,verbs=get;update;patch

// meshRequest is the single work item: any change rebuilds the mesh.
var meshRequest = reconcile.Request{NamespacedName: ktypes.NamespacedName{Name: "mesh"}}

// MeshReconciler turns the cluster's state into xDS snapshots for every
// proxy and into status for every policy and route. It runs on every
// replica; only the status writer needs the leader.
type MeshReconciler struct {
	Client        client.Client
	XDS           *server.Server
	Translate     translate.Options
	ClusterDomain string
	// Debounce coalesces a burst of changes into one rebuild. A change
	// that comes after a quiet Debounce is rebuilt at once; one that comes
	// within Debounce of the last rebuild waits until Debounce after the
	// first change of its burst, so a steady stream still rebuilds every
	// Debounce, and changes made during a rebuild go into the next one.
	Debounce time.Duration
	// Status receives what to write; nil writes nothing.
	Status  *StatusWriter
	Metrics *Metrics

	// memo carries translations from one rebuild to the next, so that only
	// what changed is translated and pushed again; groups does the same for
	// the proxy groups ingest finds.
	memo   *translate.Memo
	groups *ingest.Memo
	// informers are the manager's: rebuilds read their stores directly.
	informers cache.Informers
	// routeRefs are the route configurations each listener of the last
	// rebuild names.
	routeRefs map[cachetypes.Resource][]string

	mu           sync.Mutex
	pendingSince time.Time
	lastStart    time.Time
	last         *built
	epochs       []epoch
	wake         chan struct{}
}

// built is what one rebuild produced.
type built struct {
	result *ingest.Result
	// nodes maps every node with a snapshot to its group.
	nodes map[string]*ir.ProxyGroup
	// sources maps resource names to the objects that shaped them, to
	// pin a NACK on the objects a user would fix; it is worked out when a
	// NACK first needs it.
	sources func() map[string][]ir.ObjectRef
}

// epoch is one rebuild waiting for its proxies to acknowledge it.
type epoch struct {
	since time.Time
	nodes []string
}

// SetupWithManager watches every input of the mesh.
func (r *MeshReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Metrics == nil {
		r.Metrics = NewMetrics(nil)
	}
	r.wake = make(chan struct{}, 1)
	r.memo = translate.NewMemo()
	r.groups = ingest.NewMemo()
	r.informers = mgr.GetCache()
	enqueue := handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, _ event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.changed(q)
		},
		UpdateFunc: func(_ context.Context, _ event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.changed(q)
		},
		DeleteFunc: func(_ context.Context, _ event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.changed(q)
		},
		GenericFunc: func(_ context.Context, _ event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.changed(q)
		},
	}
	// Status writes must not trigger rebuilds: policies and routes count
	// only when their spec (generation) changes.
	specOnly := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("mesh").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 1}).
		Watches(&corev1.Namespace{}, enqueue, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&corev1.Service{}, enqueue).
		Watches(&discoveryv1.EndpointSlice{}, enqueue).
		Watches(&corev1.Pod{}, enqueue, builder.WithPredicates(podChanged{})).
		Watches(&meshv1alpha1.MeshIdentity{}, enqueue, specOnly)
	for _, obj := range []client.Object{&meshv1alpha1.TrafficSplit{}, &meshv1alpha1.RetryPolicy{}, &meshv1alpha1.CircuitBreaker{}, &meshv1alpha1.AccessPolicy{}, &gwapiv1.HTTPRoute{}, &gwapiv1.GRPCRoute{}, &gwapiv1.ReferenceGrant{}} {
		b = b.Watches(obj, enqueue, specOnly)
	}
	if err := b.Complete(r); err != nil {
		return fmt.Errorf("setting up the mesh controller: %w", err)
	}
	return mgr.Add(&programmedWatcher{r: r})
}

func (r *MeshReconciler) changed(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	now := time.Now()
	r.mu.Lock()
	first := r.pendingSince.IsZero()
	if first {
		r.pendingSince = now
	}
	quiet := now.Sub(r.lastStart) >= r.Debounce
	r.mu.Unlock()
	if first && quiet {
		q.Add(meshRequest)
		return
	}
	q.AddAfter(meshRequest, r.Debounce)
}

// Reconcile rebuilds every proxy's configuration from the cache.
func (r *MeshReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	r.mu.Lock()
	since := r.pendingSince
	r.pendingSince = time.Time{}
	start := time.Now()
	r.lastStart = start
	r.mu.Unlock()
	if since.IsZero() {
		since = start
	}

	b, err := listBundle(ctx, bundleSource{informers: r.informers, reader: r.Client}, r.ClusterDomain)
	if err != nil {
		return ctrl.Result{}, err
	}
	res := r.groups.Build(b)
	out, err := r.apply(ctx, b, res)
	r.Metrics.TranslateDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		// Proxies keep their last good configuration; retry with back-off.
		logger.Error(err, "translating the mesh failed; proxies keep their last configuration")
		return ctrl.Result{}, err
	}
	for _, w := range res.Warnings {
		logger.Info("configuration warning", "object", w.Ref.String(), "reason", w.Reason, "message", w.Message)
	}

	r.mu.Lock()
	r.last = out.built
	if len(out.changed) > 0 {
		r.epochs = append(r.epochs, epoch{since: since, nodes: out.changed})
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	logger.V(1).Info("mesh rebuilt", "services", len(res.Mesh.Services), "groups", len(res.Mesh.ProxyGroups), "nodes", len(out.built.nodes), "pushed", len(out.changed), "took", time.Since(start).String())
	return ctrl.Result{}, nil
}

type applied struct {
	built   *built
	changed []string
}

// apply translates every proxy group and sets the snapshots of its members.
func (r *MeshReconciler) apply(ctx context.Context, b *ingest.Bundle, res *ingest.Result) (*applied, error) {
	prep, err := r.memo.Prepare(res.Mesh, r.Translate)
	if err != nil {
		return nil, fmt.Errorf("preparing translation: %w", err)
	}
	applyProblems(res, prep.Problems())
	proxyless := map[string]bool{}
	podIPs := map[string][]string{}
	for _, p := range b.Pods {
		if p.Annotations[ingest.AnnotationInject] == "grpc-agent" {
			node := ingest.NodeID(p)
			proxyless[node] = true
			for _, ip := range p.Status.PodIPs {
				podIPs[node] = append(podIPs[node], ip.IP)
			}
			if len(podIPs[node]) == 0 && p.Status.PodIP != "" {
				podIPs[node] = []string{p.Status.PodIP}
			}
		}
	}
	endpoints := map[string]cachetypes.Resource{}
	for _, e := range r.memo.Endpoints(prep) {
		endpoints[cachev3.GetResourceName(e)] = e
	}
	asm := newAssembler(newHasher(), endpoints)
	out := &applied{built: &built{
		result:  res,
		nodes:   map[string]*ir.ProxyGroup{},
		sources: sync.OnceValue(func() map[string][]ir.ObjectRef { return resourceSources(res.Mesh) }),
	}}
	lb := &layerBuilder{content: map[string]server.LayerResources{}, eds: map[string]bool{}, viewRoutes: map[string]map[string]bool{}, refs: r.routeRefs, nextRefs: map[cachetypes.Resource][]string{}}
	envoyNodes := map[string][]string{}
	for _, g := range res.Mesh.ProxyGroups {
		var grpcSnap *cachev3.Snapshot
		var keys []string
		for _, node := range g.Members {
			out.built.nodes[node] = g
			if !proxyless[node] {
				if keys == nil {
					cfg, err := r.memo.ForGroup(prep, g)
					if err != nil {
						return nil, fmt.Errorf("proxy group %s: %w", g.Key, err)
					}
					if keys, err = lb.add(g, cfg); err != nil {
						return nil, fmt.Errorf("proxy group %s: %w", g.Key, err)
					}
				}
				envoyNodes[node] = keys
				continue
			}
			if grpcSnap == nil {
				cfg, err := prep.ForGRPC(g)
				if err != nil {
					return nil, fmt.Errorf("proxy group %s (gRPC): %w", g.Key, err)
				}
				if cfg, err = withServerListeners(prep, g, cfg, proxyless, podIPs); err != nil {
					return nil, fmt.Errorf("proxy group %s (gRPC): %w", g.Key, err)
				}
				if grpcSnap, err = asm.snapshot(cfg); err != nil {
					return nil, fmt.Errorf("proxy group %s (gRPC): %w", g.Key, err)
				}
			}
			if old, ok := r.XDS.Snapshot(node); ok && sameVersions(old, grpcSnap) {
				continue
			}
			if err := r.XDS.SetSnapshot(ctx, node, grpcSnap); err != nil {
				return nil, err
			}
			out.changed = append(out.changed, node)
		}
	}
	r.memo.PruneGroups(res.Mesh.ProxyGroups)
	lb.endpoints(endpoints)
	r.routeRefs = lb.nextRefs
	changed, err := r.XDS.Publish(lb.content, envoyNodes)
	if err != nil {
		return nil, err
	}
	out.changed = append(out.changed, changed...)
	// Pods that are gone lose their snapshot; a proxy still connected for
	// them keeps what it has until its stream closes.
	for _, node := range r.XDS.SnapshotNodes() {
		if _, ok := out.built.nodes[node]; !ok || !proxyless[node] {
			r.XDS.ClearSnapshot(node)
		}
	}
	slices.Sort(out.changed)
	return out, nil
}

// Layer keys. Every Envoy proxy's configuration is three layers: the
// outbound view of its namespace, the mesh's endpoints, and its group's
// own inbound side.
const (
	viewLayerPrefix  = "view/"
	groupLayerPrefix = "group/"
	endpointsLayer   = "endpoints"
)

// layerBuilder collects the layers of one rebuild.
type layerBuilder struct {
	content map[string]server.LayerResources
	// eds are the endpoint assignments that EDS clusters name.
	eds map[string]bool
	// viewRoutes are the route configuration names of each view layer.
	viewRoutes map[string]map[string]bool
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
		names := make(map[string]bool, len(cfg.Shared.Routes))
		for _, r := range cfg.Shared.Routes {
			names[cachev3.GetResourceName(r)] = true
		}
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

// consistent checks that the route configurations the listeners name are
// in the view's or the group's own routes.
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

// withServerListeners adds to a proxyless group's own layer the Listener
// each member's gRPC xDS server asks for (named after the address it
// listens on, see translate.GRPCServerListenerName): one per inbound port
// at each of the member's pod IPs, and at the wildcard addresses a server
// listening on all interfaces reports. Without it a proxyless server
// never leaves its not-serving mode.
func withServerListeners(prep *translate.Prepared, g *ir.ProxyGroup, cfg *translate.Config, proxyless map[string]bool, podIPs map[string][]string) (*translate.Config, error) {
	addrs := []string{"0.0.0.0", "::"}
	for _, m := range g.Members {
		if proxyless[m] {
			addrs = append(addrs, podIPs[m]...)
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
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
	if len(ls) == 0 {
		return cfg, nil
	}
	own := *cfg.Own
	own.Listeners = append(slices.Clone(cfg.Own.Listeners), ls...)
	sortByName(own.Listeners)
	return &translate.Config{Shared: cfg.Shared, Own: &own}, nil
}

func sameVersions(a, b *cachev3.Snapshot) bool {
	for rt := range a.Resources {
		if a.Resources[rt].Version != b.Resources[rt].Version {
			return false
		}
	}
	return true
}

// resourceSources maps xDS resource names to the objects behind them.
func resourceSources(m *ir.Mesh) map[string][]ir.ObjectRef {
	out := map[string][]ir.ObjectRef{}
	add := func(name string, ref ir.ObjectRef) {
		if ref.Group != meshv1alpha1.GroupVersion.Group && ref.Kind != "HTTPRoute" && ref.Kind != "GRPCRoute" {
			return
		}
		if !slices.Contains(out[name], ref) {
			out[name] = append(out[name], ref)
		}
	}
	for _, s := range m.Services {
		for _, p := range s.Ports {
			if p.CircuitBreaker != nil {
				add(p.Cluster, p.CircuitBreaker.Source)
			}
			if p.RetryBudget != nil {
				add(p.Cluster, p.RetryBudget.Source)
			}
			routes := func(name string, rs []*ir.Route) {
				for _, rt := range rs {
					add(name, rt.Source)
					if rt.Retry != nil {
						add(name, rt.Retry.Source)
					}
				}
			}
			routes(ir.RouteConfigName(s.Hostname, p.Port), p.Routes)
			for _, c := range p.ConsumerRoutes {
				routes(translate.ConsumerRouteConfigName(s.Hostname, p.Port, c.Namespace), c.Routes)
			}
		}
		for _, ap := range s.AccessPolicies {
			add("inbound", ap.Source)
		}
	}
	return out
}

// podChanged passes pod updates that can change the mesh: labels,
// annotations, service account, addresses, phase, ports.
type podChanged struct{ predicate.Funcs }

func (podChanged) Update(e event.UpdateEvent) bool {
	a, okA := e.ObjectOld.(*corev1.Pod)
	b, okB := e.ObjectNew.(*corev1.Pod)
	if !okA || !okB {
		return true
	}
	return !maps.Equal(a.Labels, b.Labels) || !maps.Equal(a.Annotations, b.Annotations) ||
		a.Spec.ServiceAccountName != b.Spec.ServiceAccountName || a.Status.PodIP != b.Status.PodIP ||
		a.Status.Phase != b.Status.Phase || (a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil)
}

func (podChanged) Create(event.CreateEvent) bool   { return true }
func (podChanged) Delete(event.DeleteEvent) bool   { return true }
func (podChanged) Generic(event.GenericEvent) bool { return true }

// Authorize lets a proxy have the configuration of the node it names only
// when its certificate's SPIFFE ID is that pod's service account identity.
func (r *MeshReconciler) Authorize(nodeID string, p server.Peer) error {
	podName, ns, ok := server.NodeIDParts(nodeID)
	if !ok {
		return fmt.Errorf("node ID %q is not <pod>.<namespace>", nodeID)
	}
	var pod corev1.Pod
	if err := r.Client.Get(context.Background(), ktypes.NamespacedName{Namespace: ns, Name: podName}, &pod); err != nil {
		return fmt.Errorf("node %s: pod %s/%s not found", nodeID, ns, podName)
	}
	if p.Insecure {
		return nil
	}
	td, err := r.trustDomain(ns)
	if err != nil {
		return fmt.Errorf("node %s: %w", nodeID, err)
	}
	if td == "" {
		return fmt.Errorf("node %s: namespace %s has no mesh identity", nodeID, ns)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if want := ir.SpiffeID(td, ns, sa); p.SpiffeID != want {
		return fmt.Errorf("node %s belongs to %s, but the client certificate is %s", nodeID, want, p.SpiffeID)
	}
	return nil
}

// trustDomain reads which MeshIdentity covers a namespace straight from
// the cache, with the same rule as ingest, so a proxy that connects before
// the first rebuild is judged correctly.
func (r *MeshReconciler) trustDomain(ns string) (string, error) {
	ctx := context.Background()
	var n corev1.Namespace
	if err := r.Client.Get(ctx, ktypes.NamespacedName{Name: ns}, &n); err != nil {
		return "", fmt.Errorf("namespace %s: %w", ns, err)
	}
	var ids meshv1alpha1.MeshIdentityList
	if err := r.Client.List(ctx, &ids); err != nil {
		return "", fmt.Errorf("listing MeshIdentities: %w", err)
	}
	best := identity.ServingOwner(&n, ids.Items)
	if best == nil {
		return "", nil
	}
	return best.Spec.TrustDomain, nil
}

// applyProblems reports what the translator had to leave out (input Envoy
// would reject that the schema could not catch, such as a regular
// expression Envoy's engine refuses) on the object a user would fix: a
// policy loses Accepted and Ready; a route's Service parents get
// PartiallyInvalid, as the Gateway API has it for routes that are only
// partly programmed.
func applyProblems(res *ingest.Result, problems []translate.Problem) {
	for _, p := range problems {
		for i := range res.Statuses {
			st := &res.Statuses[i]
			if st.Ref != p.Source {
				continue
			}
			for j := range st.Conditions {
				c := &st.Conditions[j]
				if c.Type == meshv1alpha1.ConditionAccepted || c.Type == meshv1alpha1.ConditionReady {
					c.Status, c.Reason, c.Message = metav1.ConditionFalse, p.Reason, p.Message
				}
			}
		}
		for i := range res.Routes {
			rs := &res.Routes[i]
			if rs.Ref.Kind != p.Source.Kind || rs.Ref.Namespace != p.Source.Namespace || rs.Ref.Name != p.Source.Name {
				continue
			}
			for j := range rs.Parents {
				rs.Parents[j].Conditions = append(rs.Parents[j].Conditions, metav1.Condition{
					Type: string(gwapiv1.RouteConditionPartiallyInvalid), Status: metav1.ConditionTrue,
					Reason: p.Reason, Message: p.Message, ObservedGeneration: rs.Generation,
				})
			}
		}
	}
}
