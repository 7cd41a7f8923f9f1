package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
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
	"sigs.k8s.io/controller-runtime/pkg/source"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/workload"
	"github.com/weft-mesh/weft/internal/xds/publish"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// +kubebuilder:rbac:groups="",resources=namespaces;services;pods;serviceaccounts,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits;retrypolicies;circuitbreakers;accesspolicies;faultinjections;ratelimitpolicies;meshidentities,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits/status;retrypolicies/status;circuitbreakers/status;accesspolicies/status;faultinjections/status;ratelimitpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes;grpcroutes;tcproutes;referencegrants,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes/status;grpcroutes/status;tcproutes/status,verbs=get;update;patch

// meshRequest is the single work item: any change rebuilds the mesh.
var meshRequest = reconcile.Request{NamespacedName: ktypes.NamespacedName{Name: "mesh"}}

// MeshReconciler turns the cluster's state into the xDS configuration of
// every proxy and into status for every policy and route. It runs on every
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
	// Events records what Weft made of objects without a status (SMI
	// TrafficSplits); nil takes the manager's recorder.
	Events events.EventRecorder

	// groups carries ingest's work from one rebuild to the next; the
	// publisher does the same for translation.
	groups    *ingest.Memo
	publisher *publish.Publisher
	// informers are the manager's: rebuilds read their stores directly.
	informers cache.Informers
	// smi reads SMI TrafficSplits while their CRD is installed; smiReport
	// reports on them.
	smi       *smiSource
	smiReport *smiReporter

	mu           sync.Mutex
	pendingSince time.Time
	// full says a change since the last rebuild needs a whole one;
	// dirtyEndpoints are the Services whose EndpointSlices alone changed.
	full           bool
	dirtyEndpoints map[string]bool
	lastStart      time.Time
	last           *publish.Published
	epochs         []epoch
	wake           chan struct{}
	// tcpRoutes says the cluster serves TCPRoute, which is read then.
	tcpRoutes bool
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
	r.groups = ingest.NewMemo()
	r.publisher = publish.New(r.XDS, r.Translate)
	r.informers = mgr.GetCache()
	if r.Events == nil {
		r.Events = mgr.GetEventRecorder(SMIRecorderName)
	}
	r.smi = &smiSource{changes: make(chan event.GenericEvent, 1)}
	if err := r.smi.setup(mgr); err != nil {
		return err
	}
	r.smiReport = newSMIReporter(r.Events, r.Metrics.SMISplitReady)
	if err := mgr.Add(r.smiReport); err != nil {
		return fmt.Errorf("adding the SMI reporter: %w", err)
	}
	enqueue := handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, _ event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.changed(q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			// An EndpointSlice that stays with its Service changes only
			// that Service's endpoints, which need no rebuild.
			if oldES, ok := e.ObjectOld.(*discoveryv1.EndpointSlice); ok {
				if newES, ok := e.ObjectNew.(*discoveryv1.EndpointSlice); ok {
					svc := newES.Labels[discoveryv1.LabelServiceName]
					if svc != "" && svc == oldES.Labels[discoveryv1.LabelServiceName] {
						r.endpointsChanged(q, newES.Namespace+"/"+svc)
						return
					}
				}
			}
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
		// Labels pick injection; the weft.dev/export-to annotation scopes
		// the namespace's Services.
		Watches(&corev1.Namespace{}, enqueue, builder.WithPredicates(predicate.Or[client.Object](predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Service{}, enqueue).
		Watches(&discoveryv1.EndpointSlice{}, enqueue).
		Watches(&corev1.Pod{}, enqueue, builder.WithPredicates(podChanged{})).
		Watches(&meshv1alpha1.MeshIdentity{}, enqueue, specOnly).
		WatchesRawSource(source.Channel(r.smi.changes, enqueue))
	for _, obj := range []client.Object{&meshv1alpha1.TrafficSplit{}, &meshv1alpha1.RetryPolicy{}, &meshv1alpha1.CircuitBreaker{}, &meshv1alpha1.AccessPolicy{}, &meshv1alpha1.FaultInjection{}, &meshv1alpha1.RateLimitPolicy{}, &gwapiv1.HTTPRoute{}, &gwapiv1.GRPCRoute{}, &gwapiv1.ReferenceGrant{}} {
		b = b.Watches(obj, enqueue, specOnly)
	}
	// TCPRoute joined Gateway API's standard channel in v1.6; with an
	// older Gateway API installed the controller runs without it.
	if _, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: gwapiv1.GroupName, Kind: "TCPRoute"}, gwapiv1.GroupVersion.Version); err == nil {
		r.tcpRoutes = true
		b = b.Watches(&gwapiv1.TCPRoute{}, enqueue, specOnly)
	} else {
		mgr.GetLogger().Info("TCPRoutes are not read: the cluster does not serve gateway.networking.k8s.io/v1 TCPRoute (Gateway API v1.6 or later); install it and restart the controller", "reason", err.Error())
	}
	if err := b.Complete(r); err != nil {
		return fmt.Errorf("setting up the mesh controller: %w", err)
	}
	return mgr.Add(&programmedWatcher{r: r})
}

func (r *MeshReconciler) changed(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	r.mu.Lock()
	r.full = true
	r.mu.Unlock()
	r.enqueue(q)
}

// endpointsChanged notes that only the EndpointSlices of Service key (and
// perhaps others) changed: the next rebuild may publish new endpoints
// alone.
func (r *MeshReconciler) endpointsChanged(q workqueue.TypedRateLimitingInterface[reconcile.Request], key string) {
	r.mu.Lock()
	if r.dirtyEndpoints == nil {
		r.dirtyEndpoints = map[string]bool{}
	}
	r.dirtyEndpoints[key] = true
	r.mu.Unlock()
	r.enqueue(q)
}

func (r *MeshReconciler) enqueue(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
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

// Reconcile rebuilds every proxy's configuration from the cache: list →
// ingest → translate and publish → status (written by the status writer
// once the proxies answer, see programmedWatcher).
func (r *MeshReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	r.mu.Lock()
	since := r.pendingSince
	r.pendingSince = time.Time{}
	start := time.Now()
	r.lastStart = start
	// The first rebuild is whole; later ones too unless only endpoints
	// changed.
	full := r.full || r.last == nil
	dirty := slices.Sorted(maps.Keys(r.dirtyEndpoints))
	r.full, r.dirtyEndpoints = false, nil
	r.mu.Unlock()
	if since.IsZero() {
		since = start
	}
	if !full && len(dirty) > 0 {
		if done, err := r.publishEndpoints(ctx, since, start, dirty); done || err != nil {
			return ctrl.Result{}, err
		}
	}

	r.smi.ensure(ctx)
	b, err := listBundle(ctx, bundleSource{informers: r.informers, reader: r.Client, smi: r.smi.list, tcpRoutes: r.tcpRoutes}, r.ClusterDomain)
	if err != nil {
		return ctrl.Result{}, err
	}
	res := r.groups.Build(b)
	r.smiReport.submit(res.SMITrafficSplits)
	out, err := r.publisher.Publish(ctx, res, b.Pods, b.Namespaces)
	r.Metrics.TranslateDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		// Proxies keep their last good configuration; retry with back-off.
		logger.Error(err, "translating the mesh failed; proxies keep their last configuration")
		return ctrl.Result{}, err
	}
	r.Metrics.Rebuilds.WithLabelValues("mesh").Inc()
	for _, w := range res.Warnings {
		logger.Info("configuration warning", "object", w.Ref.String(), "reason", w.Reason, "message", w.Message)
	}

	r.mu.Lock()
	r.last = out
	if len(out.Changed) > 0 {
		r.epochs = append(r.epochs, epoch{since: since, nodes: out.Changed})
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	logger.V(1).Info("mesh rebuilt", "services", len(res.Mesh.Services), "groups", len(res.Mesh.ProxyGroups), "nodes", len(out.Nodes), "pushed", len(out.Changed), "took", time.Since(start).String())
	return ctrl.Result{}, nil
}

// publishEndpoints serves the new endpoints of the Services in dirty
// without a rebuild, when nothing else about them changed (their target
// ports, identities, a headless Service's chains). It reports whether it
// did; when it did not, the caller rebuilds.
func (r *MeshReconciler) publishEndpoints(ctx context.Context, since, start time.Time, dirty []string) (bool, error) {
	b, err := listBundle(ctx, bundleSource{informers: r.informers, reader: r.Client, smi: r.smi.list, tcpRoutes: r.tcpRoutes}, r.ClusterDomain)
	if err != nil {
		return false, err
	}
	byCluster, ok := r.groups.UpdateEndpoints(b, dirty)
	if !ok {
		return false, nil
	}
	changed, err := r.publisher.PublishEndpoints(byCluster)
	r.Metrics.TranslateDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		log.FromContext(ctx).Info("publishing endpoints alone failed; rebuilding", "reason", err.Error())
		return false, nil
	}
	r.Metrics.Rebuilds.WithLabelValues("endpoints").Inc()
	r.mu.Lock()
	if len(changed) > 0 {
		r.epochs = append(r.epochs, epoch{since: since, nodes: changed})
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	log.FromContext(ctx).V(1).Info("endpoints published", "services", len(dirty), "pushed", len(changed), "took", time.Since(start).String())
	return true, nil
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
	if want := identity.SpiffeID(td, ns, workload.ServiceAccount(&pod)); p.SpiffeID != want {
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
