package controllers

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/workload"
)

// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SidecarAuditRecorderName is the reporting controller of the audit's events.
const SidecarAuditRecorderName = meshv1alpha1.SidecarAuditName

// Reasons of the events the sidecar audit records on pods.
const (
	// ReasonNotInjected: the pod should be in the mesh but has no sidecar.
	ReasonNotInjected = "NotInjected"
	// ReasonProxyOutdated: the pod runs a proxy older than the control plane's.
	ReasonProxyOutdated = "ProxyOutdated"

	actionAudit = "Audit"
)

// SidecarAuditMetrics are the sidecar audit's gauges, by namespace.
type SidecarAuditMetrics struct {
	// PodsWithoutSidecar counts live pods that should be meshed but were
	// never injected.
	PodsWithoutSidecar *prometheus.GaugeVec
	// PodsOutdatedProxy counts live injected pods whose proxy version is not
	// the control plane's.
	PodsOutdatedProxy *prometheus.GaugeVec
}

// NewSidecarAuditMetrics creates the gauges and registers them with reg
// (nil: not registered).
func NewSidecarAuditMetrics(reg prometheus.Registerer) *SidecarAuditMetrics {
	m := &SidecarAuditMetrics{
		PodsWithoutSidecar: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_pods_without_sidecar",
			Help: "Running pods that should be in the mesh (namespace label or pod annotation) but were created without the weft sidecar.",
		}, []string{"namespace"}),
		PodsOutdatedProxy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_pods_outdated_proxy",
			Help: "Running injected pods whose proxy version differs from the version the control plane injects.",
		}, []string{"namespace"}),
	}
	if reg != nil {
		reg.MustRegister(m.PodsWithoutSidecar, m.PodsOutdatedProxy)
	}
	return m
}

// SidecarAuditReconciler finds pods that run outside the mesh although they
// should be in it (created before their namespace was labelled, or while the
// injection webhook was down), and pods still on an older proxy. It records
// an event on each such pod when it first finds it in that state, and keeps
// per-namespace gauges of both.
//
// The work item is a namespace: every pod or namespace change recounts the
// namespace from the cache, so the gauges stay exact however pods come and
// go. It needs the leader (the default), so that one replica records events.
type SidecarAuditReconciler struct {
	// Client reads pods and namespaces, normally from the manager's cache.
	Client client.Client
	// Recorder records events on pods; nil records none.
	Recorder events.EventRecorder
	// ProxyVersion is the version the injector records on new pods. Empty
	// turns off the outdated-proxy check.
	ProxyVersion string
	// ControlPlaneNamespace is never injected, so never audited; neither is
	// kube-system.
	ControlPlaneNamespace string
	// Metrics receives the counts; SetupWithManager makes unregistered
	// gauges when it is nil.
	Metrics *SidecarAuditMetrics

	mu sync.Mutex
	// reported holds, per namespace and pod UID, what was last reported, so
	// a pod gets one event per state rather than one per reconcile.
	reported map[string]map[types.UID]podFinding
}

// podFinding is what the audit says about one pod. The zero value means
// nothing to report.
type podFinding struct {
	reason string
	// version is the outdated proxy version (ReasonProxyOutdated only), so
	// a pod that moves from one old version to another is reported again.
	version string
}

// SetupWithManager registers the reconciler, watching pods and namespaces.
func (r *SidecarAuditReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder(SidecarAuditRecorderName)
	}
	if r.Metrics == nil {
		r.Metrics = NewSidecarAuditMetrics(nil)
	}
	podNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		return r.request(obj.GetNamespace())
	})
	namespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		return r.request(obj.GetName())
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("sidecaraudit").
		Watches(&corev1.Pod{}, podNamespace, builder.WithPredicates(podAuditChanged{})).
		Watches(&corev1.Namespace{}, namespace, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the sidecar audit controller: %w", err)
	}
	return nil
}

// request is the work item of a namespace, none for those never injected.
func (r *SidecarAuditReconciler) request(namespace string) []reconcile.Request {
	if r.exempt(namespace) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: namespace}}}
}

func (r *SidecarAuditReconciler) exempt(namespace string) bool {
	return namespace == "" || namespace == workload.KubeSystemNamespace || namespace == r.ControlPlaneNamespace
}

// Reconcile recounts the pods of the namespace named by req and reports
// those that changed state.
func (r *SidecarAuditReconciler) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	nsName := req.Name
	logger := log.FromContext(ctx).WithValues("namespace", nsName)
	if r.exempt(nsName) {
		r.forget(nsName)
		return ctrl.Result{}, nil
	}

	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: nsName}, ns); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get namespace %s: %w", nsName, err)
		}
		// The namespace is being torn down: without its label, only pods
		// that opted in by annotation still count until they are gone.
		ns = nil
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(nsName)); err != nil {
		return ctrl.Result{}, fmt.Errorf("list pods in %s: %w", nsName, err)
	}

	type report struct {
		pod     *corev1.Pod
		finding podFinding
		why     string
	}
	var reports []report
	current := map[types.UID]podFinding{}
	var withoutSidecar, outdated int
	for i := range pods.Items {
		pod := &pods.Items[i]
		f, why := r.audit(pod, ns)
		switch f.reason {
		case "":
			continue
		case ReasonNotInjected:
			withoutSidecar++
		case ReasonProxyOutdated:
			outdated++
		}
		current[pod.UID] = f
		reports = append(reports, report{pod: pod, finding: f, why: why})
	}

	r.mu.Lock()
	previous := r.reported[nsName]
	if len(current) == 0 {
		delete(r.reported, nsName)
	} else {
		if r.reported == nil {
			r.reported = map[string]map[types.UID]podFinding{}
		}
		r.reported[nsName] = current
	}
	r.mu.Unlock()

	// A meshed namespace keeps its series at zero, so a dashboard shows it
	// as clean rather than as missing; other namespaces appear only while
	// they have something to report.
	meshed := ns != nil && workload.NamespaceMeshed(ns.Labels)
	if m := r.Metrics; m != nil && (meshed || withoutSidecar+outdated > 0) {
		m.PodsWithoutSidecar.WithLabelValues(nsName).Set(float64(withoutSidecar))
		m.PodsOutdatedProxy.WithLabelValues(nsName).Set(float64(outdated))
	} else {
		r.deleteSeries(nsName)
	}

	for _, rep := range reports {
		if previous[rep.pod.UID] == rep.finding {
			continue
		}
		logger.Info("pod needs a restart", "pod", rep.pod.Name, "reason", rep.finding.reason, "proxyVersion", rep.finding.version)
		if r.Recorder == nil {
			continue
		}
		hint := workload.RestartHint(rep.pod)
		switch rep.finding.reason {
		case ReasonNotInjected:
			r.Recorder.Eventf(rep.pod, nil, corev1.EventTypeWarning, ReasonNotInjected, actionAudit,
				"Pod should be in the mesh (%s) but was not injected: it was created before injection was enabled, or while the injection webhook was unavailable. Sidecars are only added when a pod is created; %s", rep.why, hint)
		case ReasonProxyOutdated:
			r.Recorder.Eventf(rep.pod, nil, corev1.EventTypeNormal, ReasonProxyOutdated, actionAudit,
				"Pod was injected with weft %s; the control plane now injects %s. A pod keeps its proxy until it is recreated; %s", rep.finding.version, r.ProxyVersion, hint)
		}
	}
	return ctrl.Result{}, nil
}

// audit classifies one pod; why says what asks for the mesh.
func (r *SidecarAuditReconciler) audit(pod *corev1.Pod, ns *corev1.Namespace) (podFinding, string) {
	// Pods being deleted are already on their way out; a restart hint
	// would only be noise.
	if pod.DeletionTimestamp != nil {
		return podFinding{}, ""
	}
	var nsLabels map[string]string
	if ns != nil {
		nsLabels = ns.Labels
	}
	// Finished, host-network and opted-out pods are not meshed, so there
	// is nothing to report about them.
	w := workload.Of(pod, nsLabels)
	if !w.Meshed {
		return podFinding{}, ""
	}
	if w.Injected {
		if r.ProxyVersion == "" || w.ProxyVersion == "" || w.ProxyVersion == r.ProxyVersion {
			return podFinding{}, ""
		}
		return podFinding{reason: ReasonProxyOutdated, version: w.ProxyVersion}, ""
	}
	switch w.Reason {
	case workload.ReasonPodAnnotation:
		return podFinding{reason: ReasonNotInjected}, fmt.Sprintf("it is annotated %s: %s", meshv1alpha1.AnnotationInject, pod.Annotations[meshv1alpha1.AnnotationInject])
	case workload.ReasonNamespaceLabel:
		return podFinding{reason: ReasonNotInjected}, fmt.Sprintf("namespace %s is labelled %s=%s", ns.Name, meshv1alpha1.LabelInject, meshv1alpha1.NamespaceInjectEnabled)
	}
	return podFinding{}, ""
}

// forget drops what is known about a namespace.
func (r *SidecarAuditReconciler) forget(namespace string) {
	r.mu.Lock()
	delete(r.reported, namespace)
	r.mu.Unlock()
	r.deleteSeries(namespace)
}

func (r *SidecarAuditReconciler) deleteSeries(namespace string) {
	if r.Metrics == nil {
		return
	}
	r.Metrics.PodsWithoutSidecar.DeleteLabelValues(namespace)
	r.Metrics.PodsOutdatedProxy.DeleteLabelValues(namespace)
}

// podAuditChanged passes pod updates that can change the audit's verdict:
// annotations (injection, opt-out, version), phase and deletion. Status
// churn (conditions, container states) is ignored.
type podAuditChanged struct{ predicate.Funcs }

func (podAuditChanged) Update(e event.UpdateEvent) bool {
	a, okA := e.ObjectOld.(*corev1.Pod)
	b, okB := e.ObjectNew.(*corev1.Pod)
	if !okA || !okB {
		return true
	}
	return !maps.Equal(a.Annotations, b.Annotations) || a.Status.Phase != b.Status.Phase ||
		(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil)
}
