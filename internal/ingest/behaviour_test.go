package ingest

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

// These tests spell out, in code, the rules the golden files encode, so a
// careless -update cannot silently change them.

func build(t *testing.T, name string) *Result {
	t.Helper()
	return Build(LoadBundle(t, "testdata/"+name+".in.yaml"))
}

func findService(t *testing.T, r *Result, ns, name string) *ir.Service {
	t.Helper()
	for _, s := range r.Mesh.Services {
		if s.Namespace == ns && s.Name == name {
			return s
		}
	}
	t.Fatalf("service %s/%s not in the model", ns, name)
	return nil
}

func condition(t *testing.T, r *Result, kind, name, typ string) metav1.Condition {
	t.Helper()
	for _, s := range r.Statuses {
		if s.Ref.Kind == kind && s.Ref.Name == name {
			for _, c := range s.Conditions {
				if c.Type == typ {
					return c
				}
			}
		}
	}
	t.Fatalf("%s %s has no %s condition", kind, name, typ)
	return metav1.Condition{}
}

func weights(r *ir.Route) map[string]uint32 {
	out := map[string]uint32{}
	for _, b := range r.Backends {
		out[b.Service.Name] = b.Weight
	}
	return out
}

func TestOldestTrafficSplitWins(t *testing.T) {
	r := build(t, "trafficsplit-conflict")
	routes := findService(t, r, "shop", "checkout").Ports[0].Routes
	if len(routes) != 1 || routes[0].Source.Name != "older" {
		t.Fatalf("routes = %+v, want only the older split", routes)
	}
	if w := weights(routes[0]); w["checkout-v1"] != 50 || w["checkout-v2"] != 50 {
		t.Errorf("weights = %v, want 50/50", w)
	}
	if c := condition(t, r, "TrafficSplit", "newer", "Accepted"); c.Status != metav1.ConditionFalse || c.Reason != "Conflicted" {
		t.Errorf("newer split Accepted = %s/%s, want False/Conflicted", c.Status, c.Reason)
	}
	if c := condition(t, r, "TrafficSplit", "older", "Ready"); c.Status != metav1.ConditionTrue || c.ObservedGeneration != 3 {
		t.Errorf("older split Ready = %s gen %d, want True at generation 3", c.Status, c.ObservedGeneration)
	}
}

// A blue-green split at 0/100 keeps the idle side in the route at weight
// 0: translation sends it nothing, and proxyless clients keep its cluster
// warm for the switch.
func TestBlueGreenKeepsTheZeroWeightSide(t *testing.T) {
	r := build(t, "trafficsplit-bluegreen")
	routes := findService(t, r, "shop", "checkout").Ports[0].Routes
	if w := weights(routes[0]); len(w) != 2 || w["checkout-v1"] != 0 || w["checkout-v2"] != 100 {
		t.Errorf("weights = %v, want checkout-v1 at 0 and checkout-v2 at 100", w)
	}
}

func TestMissingSplitBackendIsReported(t *testing.T) {
	r := build(t, "trafficsplit-missing-backend")
	c := condition(t, r, "TrafficSplit", "checkout-canary", "ResolvedRefs")
	if c.Status != metav1.ConditionFalse || c.Reason != "BackendNotFound" {
		t.Errorf("ResolvedRefs = %s/%s, want False/BackendNotFound", c.Status, c.Reason)
	}
	if w := weights(findService(t, r, "shop", "checkout").Ports[0].Routes[0]); len(w) != 1 || w["checkout-v1"] != 90 {
		t.Errorf("weights = %v, want the valid backend only", w)
	}
}

func TestRoutePrecedence(t *testing.T) {
	routes := findService(t, build(t, "httproute-precedence"), "shop", "checkout").Ports[0].Routes
	var got []string
	for _, r := range routes {
		if len(r.Matches) == 0 {
			got = append(got, "default")
			continue
		}
		got = append(got, string(r.Matches[0].Path.Type)+":"+r.Matches[0].Path.Value)
	}
	want := []string{"Exact:/healthz", "RegularExpression:/items/[0-9]+", "PathPrefix:/api/v2", "PathPrefix:/api", "PathPrefix:/api", "PathPrefix:/", "default"}
	if len(got) != len(want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order = %v, want %v", got, want)
		}
	}
	if routes[3].Matches[0].Method != "POST" {
		t.Errorf("among equal prefixes the method match must come first, got %+v", routes[3].Matches[0])
	}
}

func TestConsumerRouteOnlyForItsNamespace(t *testing.T) {
	p := findService(t, build(t, "httproute-consumer"), "shop", "checkout").Ports[0]
	if w := weights(p.RoutesFor("client")[0]); w["checkout-v2"] != 1 || len(w) != 1 {
		t.Errorf("client namespace routes to %v, want checkout-v2", w)
	}
	if w := weights(p.RoutesFor("shop")[0]); w["checkout"] != 1 {
		t.Errorf("other namespaces route to %v, want the Service itself", w)
	}
}

func TestCrossNamespaceBackendNeedsGrant(t *testing.T) {
	r := build(t, "httproute-cross-namespace")
	if len(r.Routes) != 1 {
		t.Fatalf("route statuses = %d", len(r.Routes))
	}
	var resolved metav1.Condition
	for _, c := range r.Routes[0].Parents[0].Conditions {
		if c.Type == "ResolvedRefs" {
			resolved = c
		}
	}
	if resolved.Status != metav1.ConditionFalse || resolved.Reason != "RefNotPermitted" {
		t.Errorf("ResolvedRefs = %+v, want False/RefNotPermitted for the ungranted ledger", resolved)
	}
	routes := findService(t, r, "shop", "checkout").Ports[0].Routes
	if routes[0].DirectResponse == nil && routes[1].DirectResponse == nil {
		t.Errorf("the rule with only an ungranted backend should answer 500")
	}
}

func TestRouteRetryBeatsServiceRetryAndOwnTimeoutWins(t *testing.T) {
	routes := findService(t, build(t, "retrypolicy-route-beats-service"), "shop", "checkout").Ports[0].Routes
	slow, def := routes[0], routes[len(routes)-1]
	if slow.Retry == nil || slow.Retry.Attempts != 5 || slow.Retry.Source.Name != "on-route" {
		t.Errorf("route retry = %+v, want the route's policy (5 attempts)", slow.Retry)
	}
	if slow.Timeout == nil || slow.Timeout.D().String() != "10s" {
		t.Errorf("route timeout = %v, want its own 10s", slow.Timeout)
	}
	if def.Retry == nil || def.Retry.Attempts != 1 || def.Timeout == nil || def.Timeout.D().String() != "1s" {
		t.Errorf("default route = retry %+v timeout %v, want the Service policy (1 attempt, 1s)", def.Retry, def.Timeout)
	}
}

func TestEndpointHealth(t *testing.T) {
	eps := findService(t, build(t, "endpoints"), "shop", "checkout").Ports[0].Endpoints
	got := map[string]ir.Health{}
	for _, e := range eps {
		got[e.Address] = e.Health
	}
	want := map[string]ir.Health{"10.0.0.1": ir.HealthHealthy, "10.0.0.2": ir.HealthDraining}
	if len(got) != len(want) || got["10.0.0.1"] != want["10.0.0.1"] || got["10.0.0.2"] != want["10.0.0.2"] {
		t.Errorf("endpoints = %v, want %v (not-serving and not-ready endpoints dropped)", got, want)
	}
}

func TestOlderMeshIdentityWinsNamespace(t *testing.T) {
	r := build(t, "mtls-modes")
	modes := map[string]ir.MTLSMode{}
	for _, ns := range r.Mesh.Namespaces {
		modes[ns.Name] = ns.MTLS
	}
	if modes["strict"] != ir.MTLSStrict || modes["relaxed"] != ir.MTLSPermissive || modes["plain"] != ir.MTLSDisabled {
		t.Errorf("modes = %v", modes)
	}
}

// Ingest meshes exactly the pods the injector would inject (or did):
// kube-system never, a pod with a proxy container even without the
// injector's record. Both used to differ from the injector.
func TestMeshedPodsFollowTheInjector(t *testing.T) {
	enabled := map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}
	pod := func(ns, name string, edit func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if edit != nil {
			edit(p)
		}
		return p
	}
	r := Build(&Bundle{
		Namespaces: []*corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", Labels: enabled}},
			{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		},
		Pods: []*corev1.Pod{
			pod("kube-system", "coredns", func(p *corev1.Pod) {
				p.Annotations = map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectTrue}
			}),
			pod("shop", "handmade", func(p *corev1.Pod) {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "weft-proxy"})
			}),
			pod("shop", "opted-in", func(p *corev1.Pod) {
				p.Annotations = map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectTrue}
			}),
			pod("shop", "plain", nil),
		},
	})
	var members []string
	for _, g := range r.Mesh.ProxyGroups {
		members = append(members, g.Members...)
	}
	slices.Sort(members)
	if want := []string{"handmade.shop", "opted-in.shop"}; !slices.Equal(members, want) {
		t.Errorf("meshed pods %q, want %q", members, want)
	}
}

// Two route-level retry budgets that reach one backend port: the older
// policy's budget is the port's, every time. It used to depend on the
// order Go happened to walk a map of Services in.
// A route-level retry budget goes to the backends the route sends to, not
// to one it keeps at weight 0 (warm for a canary, but sent nothing).
func TestRouteRetryBudgetSkipsZeroWeightBackends(t *testing.T) {
	b := LoadBundle(t, "testdata/retrypolicy-route-beats-service.in.yaml")
	ref := func(name string, weight int32) gwapiv1.HTTPBackendRef {
		return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{Weight: ptr.To(weight), BackendObjectReference: gwapiv1.BackendObjectReference{
			Name: gwapiv1.ObjectName(name), Port: ptr.To(gwapiv1.PortNumber(80)),
		}}}
	}
	b.HTTPRoutes = append(b.HTTPRoutes, &gwapiv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "canary", Namespace: "shop", Generation: 1, CreationTimestamp: metav1.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)},
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: "checkout"}}},
			Rules:           []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{ref("checkout-v1", 100), ref("checkout-v2", 0)}}},
		},
	})
	b.RetryPolicies = append(b.RetryPolicies, &meshv1alpha1.RetryPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "canary-budget", Namespace: "shop", Generation: 1, CreationTimestamp: metav1.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)},
		Spec: meshv1alpha1.RetryPolicySpec{
			TargetRef: meshv1alpha1.RouteTargetReference{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Name: "canary"},
			Budget:    &meshv1alpha1.RetryBudget{Percent: 30},
		},
	})
	r := Build(b)
	if got := findService(t, r, "shop", "checkout-v1").Ports[0].RetryBudget; got == nil || got.Source.Name != "canary-budget" {
		t.Errorf("checkout-v1 (weight 100) has budget %+v, want the route's", got)
	}
	if got := findService(t, r, "shop", "checkout-v2").Ports[0].RetryBudget; got != nil && got.Source.Name == "canary-budget" {
		t.Errorf("checkout-v2 (weight 0) took the route's budget %+v", got)
	}
}

func TestRouteRetryBudgetsOnASharedBackendAreDeterministic(t *testing.T) {
	b := LoadBundle(t, "testdata/retrypolicy-route-beats-service.in.yaml")
	route := func(name, parent string) *gwapiv1.HTTPRoute {
		return &gwapiv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Generation: 1, CreationTimestamp: metav1.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)},
			Spec: gwapiv1.HTTPRouteSpec{
				CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: gwapiv1.ObjectName(parent)}}},
				Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
					Name: "checkout-v1", Port: ptr.To(gwapiv1.PortNumber(80)),
				}}}}}},
			},
		}
	}
	budget := func(name, target string, day, percent int) *meshv1alpha1.RetryPolicy {
		return &meshv1alpha1.RetryPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Generation: 1, CreationTimestamp: metav1.Date(2026, 1, day, 0, 0, 0, 0, time.UTC)},
			Spec: meshv1alpha1.RetryPolicySpec{
				TargetRef: meshv1alpha1.RouteTargetReference{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Name: target},
				Budget:    &meshv1alpha1.RetryBudget{Percent: int32(percent)},
			},
		}
	}
	b.HTTPRoutes = append(b.HTTPRoutes, route("via-checkout", "checkout"), route("via-v2", "checkout-v2"))
	b.RetryPolicies = append(b.RetryPolicies, budget("newer", "via-checkout", 5, 50), budget("older", "via-v2", 3, 10))
	for range 40 {
		v1 := findService(t, Build(b), "shop", "checkout-v1")
		got := v1.Ports[0].RetryBudget
		if got == nil || got.Source.Name != "older" || got.Percent != 10 {
			t.Fatalf("checkout-v1's retry budget = %+v, want the older policy's 10%%", got)
		}
	}
}
