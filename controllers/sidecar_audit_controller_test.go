package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/controllers"
	"github.com/weft-mesh/weft/internal/testenv"
)

const (
	auditProxyVersion = "v1.0.0"
	auditControlPlane = "weft-system"
	auditTimeout      = 20 * time.Second
	withoutSidecar    = "weft_pods_without_sidecar"
	outdatedProxy     = "weft_pods_outdated_proxy"
)

// countingRecorder passes events on to the manager's recorder and counts
// them per reason and pod, so a test can tell one event from several (the
// events API folds repeats into a series it writes only much later).
type countingRecorder struct {
	events.EventRecorder
	mu    sync.Mutex
	count map[string]int
}

func (c *countingRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	if obj, ok := regarding.(client.Object); ok {
		c.mu.Lock()
		c.count[reason+" "+obj.GetNamespace()+"/"+obj.GetName()]++
		c.mu.Unlock()
	}
	c.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

func (c *countingRecorder) calls(reason, ns, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[reason+" "+ns+"/"+name]
}

// podsWithEvents lists the pods with any recorded event, sorted.
func (c *countingRecorder) podsWithEvents() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.count))
}

type auditEnv struct {
	c   client.Client
	reg *prometheus.Registry
	rec *countingRecorder
}

func startAudit(t *testing.T) *auditEnv {
	t.Helper()
	env := testenv.Start(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rec := &countingRecorder{EventRecorder: mgr.GetEventRecorder(controllers.SidecarAuditRecorderName), count: map[string]int{}}
	r := &controllers.SidecarAuditReconciler{
		Client:                mgr.GetClient(),
		Recorder:              rec,
		ProxyVersion:          auditProxyVersion,
		ControlPlaneNamespace: auditControlPlane,
		Metrics:               controllers.NewSidecarAuditMetrics(reg),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &auditEnv{c: env.Client, reg: reg, rec: rec}
}

func (a *auditEnv) namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	if err := a.c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// pod creates a pod and sets its phase (Running unless edit says otherwise).
func (a *auditEnv) pod(t *testing.T, ns, name string, edit func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if edit != nil {
		edit(p)
	}
	status := p.Status
	if err := a.c.Create(t.Context(), p); err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	p.Status = status
	if err := a.c.Status().Update(t.Context(), p); err != nil {
		t.Fatalf("setting the phase of pod %s/%s: %v", ns, name, err)
	}
	return p
}

func (a *auditEnv) deletePod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if err := a.c.Delete(t.Context(), p, client.GracePeriodSeconds(0)); err != nil {
		t.Fatalf("deleting pod %s/%s: %v", p.Namespace, p.Name, err)
	}
}

// gauge reads a gauge's series for a namespace as the registry exports it.
func (a *auditEnv) gauge(t *testing.T, name, ns string) (float64, bool) {
	t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == ns {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// awaitGauge waits until the namespace's series of a gauge has the value
// want, or, for want < 0, is not exported at all.
func (a *auditEnv) awaitGauge(t *testing.T, name, ns string, want float64) {
	t.Helper()
	eventually(t, auditTimeout, fmt.Sprintf("%s{namespace=%q} = %v", name, ns, want), func() (bool, string) {
		v, ok := a.gauge(t, name, ns)
		if want < 0 {
			return !ok, fmt.Sprintf("exported with %v", v)
		}
		return ok && v == want, fmt.Sprintf("present=%t value=%v", ok, v)
	})
}

// awaitPodEvent waits for the audit's event with reason on a pod, as the
// API server stores it, and returns it.
func (a *auditEnv) awaitPodEvent(t *testing.T, ns, pod, reason string) eventsv1.Event {
	t.Helper()
	var found eventsv1.Event
	eventually(t, auditTimeout, reason+" event on pod "+ns+"/"+pod, func() (bool, string) {
		var list eventsv1.EventList
		if err := a.c.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			if e.Reason == reason && e.Regarding.Kind == "Pod" && e.Regarding.Name == pod && e.ReportingController == controllers.SidecarAuditRecorderName {
				found = e
				return true, ""
			}
			seen = append(seen, e.Reason+" "+e.Regarding.Name)
		}
		return false, fmt.Sprintf("events %q", seen)
	})
	return found
}

func annotate(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Annotations = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func injected(version string) func(*corev1.Pod) {
	return annotate(meshv1alpha1.AnnotationStatus, `{"version":"`+version+`","mode":"native-sidecar"}`, meshv1alpha1.AnnotationProxyVersion, version)
}

func TestSidecarAudit(t *testing.T) {
	a := startAudit(t)
	enabled := map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}
	a.namespace(t, "shop", enabled)
	a.namespace(t, "plain", nil)
	a.namespace(t, auditControlPlane, enabled)

	// Pods the audit must leave alone. They are created before the first
	// pod it reports, so by the time that report is seen they have been
	// looked at too (one worker, informer order).
	a.pod(t, "kube-system", "system", annotate(meshv1alpha1.AnnotationInject, meshv1alpha1.InjectTrue))
	a.pod(t, auditControlPlane, "controller", nil)
	a.pod(t, "shop", "opted-out", annotate(meshv1alpha1.AnnotationInject, meshv1alpha1.InjectFalse))
	a.pod(t, "shop", "host", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	a.pod(t, "shop", "current", injected(auditProxyVersion))
	a.pod(t, "plain", "bystander", nil)

	// A Deployment's pod from before the namespace was labelled.
	legacy := a.pod(t, "shop", "cart-5d8f9-x2x7q", func(p *corev1.Pod) {
		p.Labels = map[string]string{"pod-template-hash": "5d8f9"}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "cart-5d8f9", UID: "0b9c3f1e-1111-4d2a-9d7e-000000000001", Controller: ptr.To(true)}}
	})

	t.Run("pod without sidecar in a meshed namespace", func(t *testing.T) {
		e := a.awaitPodEvent(t, "shop", legacy.Name, controllers.ReasonNotInjected)
		if e.Type != corev1.EventTypeWarning {
			t.Errorf("event type %s, want Warning", e.Type)
		}
		for _, want := range []string{"namespace shop is labelled weft.dev/inject=enabled", "created before injection was enabled", "webhook was unavailable", "kubectl rollout restart deployment/cart -n shop"} {
			if !strings.Contains(e.Note, want) {
				t.Errorf("note %q does not say %q", e.Note, want)
			}
		}
		a.awaitGauge(t, withoutSidecar, "shop", 1)
		a.awaitGauge(t, outdatedProxy, "shop", 0)
	})

	t.Run("opted-out, host-network, injected and system pods are not reported", func(t *testing.T) {
		if got, want := a.rec.podsWithEvents(), []string{controllers.ReasonNotInjected + " shop/" + legacy.Name}; !slices.Equal(got, want) {
			t.Errorf("events recorded for %q, want only %q", got, want)
		}
		for _, ns := range []string{"kube-system", auditControlPlane, "plain"} {
			for _, g := range []string{withoutSidecar, outdatedProxy} {
				if v, ok := a.gauge(t, g, ns); ok {
					t.Errorf("%s{namespace=%q} exported with %v, want no series", g, ns, v)
				}
			}
		}
	})

	t.Run("one event per pod, not one per change", func(t *testing.T) {
		legacy.Annotations = map[string]string{"example.com/touched": "yes"}
		if err := a.c.Update(t.Context(), legacy); err != nil {
			t.Fatal(err)
		}
		// The second pod's report comes from a reconcile that already saw
		// the first pod's update.
		a.pod(t, "shop", "late", nil)
		eventually(t, auditTimeout, "NotInjected for shop/late", func() (bool, string) {
			n := a.rec.calls(controllers.ReasonNotInjected, "shop", "late")
			return n > 0, fmt.Sprintf("%d events", n)
		})
		if n := a.rec.calls(controllers.ReasonNotInjected, "shop", legacy.Name); n != 1 {
			t.Errorf("%d NotInjected events for %s, want 1", n, legacy.Name)
		}
		a.awaitGauge(t, withoutSidecar, "shop", 2)
	})

	t.Run("outdated proxy", func(t *testing.T) {
		a.pod(t, "shop", "old", injected("v0.9.0"))
		e := a.awaitPodEvent(t, "shop", "old", controllers.ReasonProxyOutdated)
		if e.Type != corev1.EventTypeNormal {
			t.Errorf("event type %s, want Normal", e.Type)
		}
		for _, want := range []string{"v0.9.0", auditProxyVersion} {
			if !strings.Contains(e.Note, want) {
				t.Errorf("note %q does not name version %s", e.Note, want)
			}
		}
		a.awaitGauge(t, outdatedProxy, "shop", 1)
		a.awaitGauge(t, withoutSidecar, "shop", 2)
	})

	t.Run("opted in by annotation in an unlabelled namespace", func(t *testing.T) {
		p := a.pod(t, "plain", "opted-in", annotate(meshv1alpha1.AnnotationInject, meshv1alpha1.InjectGRPCAgent))
		e := a.awaitPodEvent(t, "plain", p.Name, controllers.ReasonNotInjected)
		if want := "annotated weft.dev/inject: grpc-agent"; !strings.Contains(e.Note, want) {
			t.Errorf("note %q does not say %q", e.Note, want)
		}
		a.awaitGauge(t, withoutSidecar, "plain", 1)
		// Not a meshed namespace: once clean, it leaves the metrics.
		a.deletePod(t, p)
		a.awaitGauge(t, withoutSidecar, "plain", -1)
		a.awaitGauge(t, outdatedProxy, "plain", -1)
	})

	t.Run("finished and deleted pods leave the counts", func(t *testing.T) {
		late := &corev1.Pod{}
		if err := a.c.Get(t.Context(), client.ObjectKey{Namespace: "shop", Name: "late"}, late); err != nil {
			t.Fatal(err)
		}
		late.Status.Phase = corev1.PodSucceeded
		if err := a.c.Status().Update(t.Context(), late); err != nil {
			t.Fatal(err)
		}
		a.awaitGauge(t, withoutSidecar, "shop", 1)
		a.deletePod(t, legacy)
		a.deletePod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "old"}})
		a.awaitGauge(t, withoutSidecar, "shop", 0)
		a.awaitGauge(t, outdatedProxy, "shop", 0)
	})

	t.Run("labelling a namespace reports its running pods", func(t *testing.T) {
		ns := &corev1.Namespace{}
		if err := a.c.Get(t.Context(), client.ObjectKey{Name: "plain"}, ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels = maps.Clone(ns.Labels)
		maps.Copy(ns.Labels, enabled)
		if err := a.c.Update(t.Context(), ns); err != nil {
			t.Fatal(err)
		}
		a.awaitPodEvent(t, "plain", "bystander", controllers.ReasonNotInjected)
		a.awaitGauge(t, withoutSidecar, "plain", 1)

		delete(ns.Labels, meshv1alpha1.LabelInject)
		if err := a.c.Update(t.Context(), ns); err != nil {
			t.Fatal(err)
		}
		a.awaitGauge(t, withoutSidecar, "plain", -1)
	})
}
