package controllers

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ktypes "k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
)

// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch
// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits,verbs=get;list;watch

// SMICRDName is the CRD of SMI's TrafficSplit; the controller reads SMI
// splits while it is established.
const SMICRDName = "trafficsplits." + ingest.SMIGroup

// SMIRecorderName is the reporting controller of events on SMI splits.
const SMIRecorderName = "weft-controller"

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// smiSource follows SMI's TrafficSplit CRD: while it is established, an
// informer of TrafficSplits at the newest version it serves feeds the mesh
// rebuilds; when it goes, so does the informer. A cluster without the CRD
// costs one watch on CRD metadata.
type smiSource struct {
	cache  cache.Informers
	reader client.Reader
	// changes wakes the mesh controller (a channel source).
	changes chan event.GenericEvent

	mu      sync.Mutex
	watched *smiInformer
	// current is what rebuilds read; nil while there is no CRD.
	current atomic.Pointer[smiInformer]
	// started is set once the first rebuild has looked for the CRD itself
	// (see ensure).
	started atomic.Bool
}

// smiStartTimeout bounds how long the first rebuild waits for SMI splits
// to be listed (an API server that refuses the list, say for RBAC).
const smiStartTimeout = 10 * time.Second

// ensure makes the first rebuild see the SMI splits that exist: the CRD
// watch may not have run yet when the mesh controller first rebuilds, and
// a rebuild without them would push every proxy a configuration without
// the splits, for a moment, at every controller start. Later rebuilds
// rely on the CRD watch.
func (s *smiSource) ensure(ctx context.Context) {
	if s.started.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, smiStartTimeout)
	defer cancel()
	if _, err := s.reconcile(ctx, reconcile.Request{NamespacedName: ktypes.NamespacedName{Name: SMICRDName}}); err != nil {
		log.FromContext(ctx).Error(err, "reading SMI TrafficSplits at start; the CRD watch retries")
	}
	s.started.Store(true)
}

type smiInformer struct {
	gvk      schema.GroupVersionKind
	store    toolscache.Store
	informer cache.Informer
	handler  toolscache.ResourceEventHandlerRegistration
}

// list is every SMI split the informer holds (the stored objects, which
// ingest never changes).
func (s *smiSource) list() []*unstructured.Unstructured {
	in := s.current.Load()
	if in == nil {
		return nil
	}
	return storedAs[unstructured.Unstructured](in.store.List())
}

func (s *smiSource) setup(mgr ctrl.Manager) error {
	s.cache = mgr.GetCache()
	s.reader = mgr.GetAPIReader()
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(crdGVK)
	err := ctrl.NewControllerManagedBy(mgr).
		Named("smi-trafficsplit-crd").
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: 1}).
		For(crd, builder.OnlyMetadata, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == SMICRDName }))).
		Complete(reconcile.Func(s.reconcile))
	if err != nil {
		return fmt.Errorf("setting up the SMI TrafficSplit CRD watch: %w", err)
	}
	return nil
}

// reconcile starts, switches or stops the SMI informer to match the CRD.
func (s *smiSource) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if req.Name != SMICRDName {
		return reconcile.Result{}, nil
	}
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(crdGVK)
	err := s.reader.Get(ctx, ktypes.NamespacedName{Name: SMICRDName}, crd)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	version := ""
	if err == nil && crd.GetDeletionTimestamp() == nil && established(crd) {
		version = servedSMIVersion(crd)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watched != nil && s.watched.gvk.Version == version {
		return reconcile.Result{}, nil
	}
	logger := log.FromContext(ctx)
	if old := s.watched; old != nil {
		s.current.Store(nil)
		s.watched = nil
		_ = old.informer.RemoveEventHandler(old.handler)
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(old.gvk)
		if err := s.cache.RemoveInformer(ctx, u); err != nil {
			logger.Error(err, "stopping the SMI TrafficSplit informer")
		}
		logger.Info("stopped reading SMI TrafficSplits", "version", old.gvk.Version)
		s.wake()
	}
	if version == "" {
		return reconcile.Result{}, nil
	}
	gvk := schema.GroupVersionKind{Group: ingest.SMIGroup, Version: version, Kind: "TrafficSplit"}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	inf, err := s.cache.GetInformer(ctx, u)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("starting the SMI TrafficSplit informer at %s: %w", version, err)
	}
	st, ok := inf.(interface{ GetStore() toolscache.Store })
	if !ok {
		return reconcile.Result{}, fmt.Errorf("the SMI TrafficSplit informer has no store")
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.wake() },
		UpdateFunc: func(a, b any) {
			// Only spec changes (generation) count: metadata-only
			// edits (labels, annotations) change nothing Weft reads.
			oa, okA := a.(client.Object)
			ob, okB := b.(client.Object)
			if !okA || !okB || oa.GetGeneration() != ob.GetGeneration() {
				s.wake()
			}
		},
		DeleteFunc: func(any) { s.wake() },
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("watching SMI TrafficSplits: %w", err)
	}
	s.watched = &smiInformer{gvk: gvk, store: st.GetStore(), informer: inf, handler: reg}
	s.current.Store(s.watched)
	logger.Info("reading SMI TrafficSplits", "version", version)
	s.wake()
	return reconcile.Result{}, nil
}

// wake asks for a rebuild. A full channel already holds a wake-up that the
// rebuild it causes will see this change in.
func (s *smiSource) wake() {
	select {
	case s.changes <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{}}:
	default:
	}
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// servedSMIVersion is the newest SMI version the CRD serves, or "".
func servedSMIVersion(crd *unstructured.Unstructured) string {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	served := map[string]bool{}
	for _, v := range versions {
		m, _ := v.(map[string]any)
		if name, _ := m["name"].(string); name != "" && m["served"] == true {
			served[name] = true
		}
	}
	for _, v := range ingest.SMIVersions {
		if served[v] {
			return v
		}
	}
	return ""
}

// smiReporter tells users what Weft made of each SMI split, which has no
// status: an Event on the split when its verdict changes (Normal
// "Accepted", or Warning with the reason it is not in effect), written by
// the leader only, and the weft_smi_trafficsplit_ready gauge on every
// replica. It never writes the split itself.
type smiReporter struct {
	recorder events.EventRecorder
	ready    *prometheus.GaugeVec

	mu     sync.Mutex
	want   []ingest.ExternalStatus
	signal chan struct{}
	// told is what the last event of each split said.
	told map[ir.ObjectRef]ingest.ExternalStatus
}

func newSMIReporter(rec events.EventRecorder, ready *prometheus.GaugeVec) *smiReporter {
	return &smiReporter{recorder: rec, ready: ready, signal: make(chan struct{}, 1), told: map[ir.ObjectRef]ingest.ExternalStatus{}}
}

// submit hands over the verdicts of a rebuild.
func (r *smiReporter) submit(st []ingest.ExternalStatus) {
	r.ready.Reset()
	for _, s := range st {
		v := 0.0
		if s.Ready.Status == metav1.ConditionTrue {
			v = 1
		}
		r.ready.WithLabelValues(s.Ref.Namespace, s.Ref.Name, s.Ready.Reason).Set(v)
	}
	r.mu.Lock()
	r.want = st
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// NeedLeaderElection is true: one replica writes events.
func (r *smiReporter) NeedLeaderElection() bool { return true }

// Start writes events until ctx ends.
func (r *smiReporter) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.signal:
		}
		r.mu.Lock()
		want := r.want
		r.mu.Unlock()
		r.report(want)
	}
}

func (r *smiReporter) report(want []ingest.ExternalStatus) {
	seen := make(map[ir.ObjectRef]bool, len(want))
	for _, s := range want {
		seen[s.Ref] = true
		was, ok := r.told[s.Ref]
		if ok && was.UID == s.UID && was.Generation == s.Generation && was.Ready.Status == s.Ready.Status &&
			was.Ready.Reason == s.Ready.Reason && was.Ready.Message == s.Ready.Message {
			continue
		}
		r.told[s.Ref] = s
		// The resourceVersion in the reference makes each version of the
		// split an event of its own: client-go's event recorder folds
		// events with the same regarding object, reason and action into
		// one series that keeps the first note, which would hide the
		// weights of every later step.
		regarding := &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: s.APIVersion, Kind: s.Ref.Kind},
			ObjectMeta: metav1.ObjectMeta{Namespace: s.Ref.Namespace, Name: s.Ref.Name, UID: s.UID, ResourceVersion: s.ResourceVersion},
		}
		note := clipNote(s.Ready.Message)
		if s.Ready.Status == metav1.ConditionTrue {
			r.recorder.Eventf(regarding, nil, corev1.EventTypeNormal, meshv1alpha1.ReasonAccepted, "Route", "%s", note)
		} else {
			r.recorder.Eventf(regarding, nil, corev1.EventTypeWarning, s.Ready.Reason, "Route", "%s", note)
		}
	}
	for ref := range r.told {
		if !seen[ref] {
			delete(r.told, ref)
		}
	}
}

// maxNote is the longest Event note the API server accepts (1 kB).
const maxNote = 1024

// clipNote cuts a message to maxNote bytes at a character boundary: the
// API server refuses a longer note, and the event would be lost.
func clipNote(msg string) string {
	if len(msg) <= maxNote {
		return msg
	}
	const more = " …"
	cut := maxNote - len(more)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + more
}
