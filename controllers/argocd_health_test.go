package controllers_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/argohealth"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// TestArgoCDHealthChecks runs the health checks Weft ships for Argo CD
// (config/argocd/argocd-cm-patch.yaml, the key Argo CD looks up for each
// kind, in the interpreter Argo CD embeds) on objects as the controller
// left them: the samples and a route of each kind are Healthy; while a
// proxy has not acknowledged their new generation they are Progressing;
// with a missing target or backend, or refused by a proxy, Degraded with
// the condition's message. MeshIdentity has its own test (the identity
// controller's harness).
func TestArgoCDHealthChecks(t *testing.T) {
	checks, err := argohealth.Load(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	h := startHarness(t)
	h.checkoutShop(t)
	h.grpcService(t, "shop", "catalog", "10.96.0.20")
	h.grpcService(t, "shop", "catalog-v2", "10.96.0.21")

	// Healthy: the samples as a user applies them, and one route of each
	// kind with a Service parent.
	var healthy []client.Object
	for _, f := range []string{"trafficsplit", "retrypolicy", "circuitbreaker", "accesspolicy"} {
		healthy = append(healthy, sample(t, "mesh_v1alpha1_"+f+".yaml"))
	}
	httpRoute := &gwapiv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "v1-to-v2"},
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{serviceParent("checkout-v1", 80)}},
			Rules:           []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: backendRef("checkout-v2", 80)}}}},
		},
	}
	grpcRoute := &gwapiv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "catalog-canary"},
		Spec: gwapiv1.GRPCRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{serviceParent("catalog", 9090)}},
			Rules: []gwapiv1.GRPCRouteRule{{BackendRefs: []gwapiv1.GRPCBackendRef{
				{BackendRef: weighted(backendRef("catalog", 9090), 90)}, {BackendRef: weighted(backendRef("catalog-v2", 9090), 10)},
			}}},
		},
	}
	healthy = append(healthy, httpRoute, grpcRoute)
	h.create(t, healthy...)
	for _, o := range healthy {
		awaitHealth(t, h, checks, o, "Healthy", "")
		// The same object as Argo CD sees it right after a sync that
		// the controller has not caught up with: a newer generation.
		gvk, err := h.c.GroupVersionKindFor(o)
		if err != nil {
			t.Fatal(err)
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		u["metadata"].(map[string]any)["generation"] = o.GetGeneration() + 1
		if hs, err := argohealth.Run(checks[argohealth.Key(gvk.GroupKind())], u); err != nil || hs.Status != "Progressing" || !strings.Contains(hs.Message, "generation") {
			t.Errorf("%s %s one generation ahead of its status: %v, %v; want Progressing, waiting for the generation", gvk.Kind, o.GetName(), hs, err)
		}
	}

	// Degraded: each kind with a reference that does not resolve.
	missing := []client.Object{
		&meshv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "typo"}, Spec: meshv1alpha1.TrafficSplitSpec{
			Service: "catalog-v2", Backends: []meshv1alpha1.TrafficSplitBackend{{Service: "checkout-v9", Weight: 1}},
		}},
		&meshv1alpha1.RetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "typo"}, Spec: meshv1alpha1.RetryPolicySpec{
			TargetRef: meshv1alpha1.RouteTargetReference{Kind: "Service", Name: "chekout"}, Attempts: ptr.To[int32](2),
		}},
		&meshv1alpha1.CircuitBreaker{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "typo"}, Spec: meshv1alpha1.CircuitBreakerSpec{
			TargetRef: meshv1alpha1.CircuitBreakerTargetReference{Kind: "Service", Name: "chekout"}, MaxConnections: ptr.To[int32](10),
		}},
		&meshv1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "typo"}, Spec: meshv1alpha1.AccessPolicySpec{
			TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: "chekout"}, Action: meshv1alpha1.ActionAllow,
			Rules: []meshv1alpha1.AccessRule{{From: []meshv1alpha1.AccessSource{{ServiceAccount: &meshv1alpha1.ServiceAccountRef{Name: "web"}}}}},
		}},
		&gwapiv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "typo"},
			Spec: gwapiv1.HTTPRouteSpec{
				CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{serviceParent("checkout-v2", 80)}},
				Rules:           []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: backendRef("checkout-v9", 80)}}}},
			},
		},
		&gwapiv1.GRPCRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "typo"},
			Spec: gwapiv1.GRPCRouteSpec{
				CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{serviceParent("catalg", 9090)}},
				Rules:           []gwapiv1.GRPCRouteRule{{BackendRefs: []gwapiv1.GRPCBackendRef{{BackendRef: backendRef("catalog-v2", 9090)}}}},
			},
		},
	}
	h.create(t, missing...)
	for i, o := range missing {
		// The message is the condition's, which names what is missing.
		awaitHealth(t, h, checks, o, "Degraded", []string{"checkout-v9", "chekout", "chekout", "chekout", "checkout-v9", "catalg"}[i])
	}

	// Progressing: a client proxy takes its
	// configuration but has not acknowledged it yet, and the healthy
	// objects move to a new generation.
	web := h.proxy(t, "web-0.shop", webID, map[string][]string{xdstest.ClusterType: nil, xdstest.ListenerType: nil})
	eventually(t, 20*time.Second, "the proxy has its routes", func() (bool, string) {
		return len(web.Names(xdstest.RouteType)) > 2 && h.xds.UpToDate("web-0.shop"), fmt.Sprint(web.Names(xdstest.RouteType))
	})
	web.Hold()
	for _, o := range healthy {
		bump(t, h, o)
	}
	for _, o := range healthy {
		awaitHealth(t, h, checks, o, "Progressing", "waiting for")
	}
	if err := web.Release(); err != nil {
		t.Fatal(err)
	}
	for _, o := range healthy {
		awaitHealth(t, h, checks, o, "Healthy", "")
	}

	// Degraded by the proxy: it refuses the route configuration the split
	// and the GRPCRoute shape.
	web.RejectNext(xdstest.RouteType, "route configuration refused for the test")
	bump(t, h, healthy[0])
	awaitHealth(t, h, checks, healthy[0], "Degraded", "refused for the test")
	web.RejectNext(xdstest.RouteType, "gRPC routes refused for the test")
	bump(t, h, grpcRoute)
	awaitHealth(t, h, checks, grpcRoute, "Degraded", "gRPC routes refused for the test")
}

// awaitHealth waits until Argo CD's check for o's kind, run on o as the API
// server has it, gives status with a message containing msg.
func awaitHealth(t *testing.T, h *harness, checks argohealth.Checks, o client.Object, status, msg string) {
	t.Helper()
	gvk, err := h.c.GroupVersionKindFor(o)
	if err != nil {
		t.Fatal(err)
	}
	what := fmt.Sprintf("%s %s/%s %s", gvk.Kind, o.GetNamespace(), o.GetName(), status)
	eventually(t, 20*time.Second, what, func() (bool, string) {
		if err := h.c.Get(t.Context(), client.ObjectKeyFromObject(o), o); err != nil {
			return false, err.Error()
		}
		hs, err := checks.Assess(gvk.GroupKind(), o)
		if err != nil {
			t.Fatalf("%s: the check failed: %v", what, err)
		}
		return hs.Status == status && strings.Contains(hs.Message, msg), hs.String()
	})
}

// bump changes o's spec, so that it has a new generation, in a way that
// keeps it valid.
func bump(t *testing.T, h *harness, o client.Object) {
	t.Helper()
	switch o := o.(type) {
	case *meshv1alpha1.TrafficSplit:
		update(t, h, o, false, func(ts *meshv1alpha1.TrafficSplit) { ts.Spec.Backends[0].Weight++ })
	case *meshv1alpha1.RetryPolicy:
		update(t, h, o, false, func(rp *meshv1alpha1.RetryPolicy) { rp.Spec.Attempts = ptr.To(ptr.Deref(rp.Spec.Attempts, 0)%5 + 1) })
	case *meshv1alpha1.CircuitBreaker:
		update(t, h, o, false, func(cb *meshv1alpha1.CircuitBreaker) { *cb.Spec.MaxConnections++ })
	case *meshv1alpha1.AccessPolicy:
		update(t, h, o, false, func(ap *meshv1alpha1.AccessPolicy) {
			ap.Spec.Rules = append(ap.Spec.Rules, meshv1alpha1.AccessRule{From: []meshv1alpha1.AccessSource{{Namespace: ptr.To(fmt.Sprintf("team-%d", len(ap.Spec.Rules)))}}})
		})
	case *gwapiv1.HTTPRoute:
		update(t, h, o, false, func(r *gwapiv1.HTTPRoute) {
			w := ptr.Deref(r.Spec.Rules[0].BackendRefs[0].Weight, 1)
			r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To(w%100 + 1)
		})
	case *gwapiv1.GRPCRoute:
		update(t, h, o, false, func(r *gwapiv1.GRPCRoute) { *r.Spec.Rules[0].BackendRefs[0].Weight-- })
	default:
		t.Fatalf("bump: %T", o)
	}
}

// sample reads a file of config/samples.
func sample(t *testing.T, file string) client.Object {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", file))
	if err != nil {
		t.Fatal(err)
	}
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	var o client.Object
	switch meta.Kind {
	case "TrafficSplit":
		o = &meshv1alpha1.TrafficSplit{}
	case "RetryPolicy":
		o = &meshv1alpha1.RetryPolicy{}
	case "CircuitBreaker":
		o = &meshv1alpha1.CircuitBreaker{}
	case "AccessPolicy":
		o = &meshv1alpha1.AccessPolicy{}
	default:
		t.Fatalf("%s: kind %q", file, meta.Kind)
	}
	if err := yaml.UnmarshalStrict(b, o); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return o
}

func serviceParent(name string, port gwapiv1.PortNumber) gwapiv1.ParentReference {
	p := port
	return gwapiv1.ParentReference{Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: gwapiv1.ObjectName(name), Port: &p}
}

func backendRef(name string, port gwapiv1.PortNumber) gwapiv1.BackendRef {
	p := port
	return gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(name), Port: &p}}
}

func weighted(b gwapiv1.BackendRef, w int32) gwapiv1.BackendRef {
	b.Weight = &w
	return b
}

// grpcService creates a Service with one gRPC port, 9090, and no
// endpoints.
func (h *harness) grpcService(t *testing.T, ns, name, ip string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt32(9090), Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("grpc")}}},
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	h.create(t, svc, es)
}
