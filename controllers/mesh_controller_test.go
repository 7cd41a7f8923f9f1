package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

const (
	checkoutRoutes = "checkout.shop.svc.cluster.local:80"
	v1Cluster      = "outbound|80||checkout-v1.shop.svc.cluster.local"
	v2Cluster      = "outbound|80||checkout-v2.shop.svc.cluster.local"
	webID          = "spiffe://cluster.local/ns/shop/sa/web"
)

// TestMeshControlPlane drives the controller as a user would: objects go in
// through the API server, and a proxy on an mTLS ADS stream must see the
// configuration they ask for, while status tells what happened.
func TestMeshControlPlane(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	h.checkoutShop(t)
	split := &meshv1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout-canary"},
		Spec: meshv1alpha1.TrafficSplitSpec{Service: "checkout", Backends: []meshv1alpha1.TrafficSplitBackend{
			{Service: "checkout-v1", Weight: 90}, {Service: "checkout-v2", Weight: 10},
		}},
	}
	h.create(t, split)

	web := h.proxy(t, "web-0.shop", webID, map[string][]string{xdstest.ClusterType: nil, xdstest.ListenerType: nil})
	wait := func(what string, want map[string]uint32) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err := web.WaitFor(wctx, func(c *xdstest.Client) bool {
			rc, ok := c.Resource(xdstest.RouteType, checkoutRoutes).(*routev3.RouteConfiguration)
			return ok && fmt.Sprint(routeWeights(rc)) == fmt.Sprint(want)
		})
		if err != nil {
			rc, _ := web.Resource(xdstest.RouteType, checkoutRoutes).(*routev3.RouteConfiguration)
			if cfg, ok := h.xds.Config("web-0.shop"); ok {
				var names []string
				for _, r := range cfg[xdstest.RouteType] {
					names = append(names, cachev3.GetResourceName(r))
				}
				t.Logf("server routes: %v; client responses: rds %d cds %d", names, web.Responses(xdstest.RouteType), web.Responses(xdstest.ClusterType))
			}
			t.Fatalf("%s: proxy never saw weights %v (has %v; clusters %v; listeners %v; routes %v): %v", what, want, routeWeights(rc), web.Names(xdstest.ClusterType), web.Names(xdstest.ListenerType), web.Names(xdstest.RouteType), err)
		}
	}

	t.Run("canary weights reach the proxy", func(t *testing.T) {
		wait("90/10 split", map[string]uint32{v1Cluster: 90, v2Cluster: 10})
		if len(web.Names(xdstest.ClusterType)) < 3 {
			t.Errorf("proxy has clusters %v, want one per Service port", web.Names(xdstest.ClusterType))
		}
	})

	t.Run("status says the split is accepted and programmed", func(t *testing.T) {
		eventually(t, 20*time.Second, "TrafficSplit Ready", func() (bool, string) {
			var ts meshv1alpha1.TrafficSplit
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(split), &ts); err != nil {
				return false, err.Error()
			}
			ready := meta.FindStatusCondition(ts.Status.Conditions, meshv1alpha1.ConditionReady)
			prog := meta.FindStatusCondition(ts.Status.Conditions, meshv1alpha1.ConditionProgrammed)
			ok := ready != nil && ready.Status == metav1.ConditionTrue && prog != nil && prog.Status == metav1.ConditionTrue &&
				ts.Status.ObservedGeneration == ts.Generation && ready.ObservedGeneration == ts.Generation
			return ok, fmt.Sprintf("%+v", ts.Status)
		})
	})

	t.Run("blue-green flip reaches the proxy", func(t *testing.T) {
		setWeights(t, h, split, 0, 100)
		wait("0/100 flip", map[string]uint32{v2Cluster: 100})
	})

	t.Run("a bad split gets a condition naming the field", func(t *testing.T) {
		bad := &meshv1alpha1.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "typo"},
			Spec: meshv1alpha1.TrafficSplitSpec{Service: "checkout-v1", Backends: []meshv1alpha1.TrafficSplitBackend{
				{Service: "checkout-v9", Weight: 1},
			}},
		}
		h.create(t, bad)
		eventually(t, 20*time.Second, "ResolvedRefs=False", func() (bool, string) {
			var ts meshv1alpha1.TrafficSplit
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(bad), &ts); err != nil {
				return false, err.Error()
			}
			c := meta.FindStatusCondition(ts.Status.Conditions, meshv1alpha1.ConditionResolvedRefs)
			return c != nil && c.Status == metav1.ConditionFalse && c.Reason == meshv1alpha1.ReasonBackendNotFound &&
				strings.Contains(c.Message, "spec.backends[0].service"), fmt.Sprintf("%+v", ts.Status.Conditions)
		})
		// The valid split is untouched.
		wait("valid split kept", map[string]uint32{v2Cluster: 100})
	})

	t.Run("route status echoes the parentRef", func(t *testing.T) {
		port := gwapiv1.PortNumber(80)
		parent := gwapiv1.ParentReference{Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: "checkout-v1", Port: &port}
		route := &gwapiv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "v1-route"},
			Spec: gwapiv1.HTTPRouteSpec{
				CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{parent}},
				Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
					BackendObjectReference: gwapiv1.BackendObjectReference{Name: "checkout-v2", Port: &port},
				}}}}},
			},
		}
		h.create(t, route)
		eventually(t, 20*time.Second, "route parents", func() (bool, string) {
			var r gwapiv1.HTTPRoute
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(route), &r); err != nil {
				return false, err.Error()
			}
			if len(r.Status.Parents) != 1 {
				return false, fmt.Sprintf("%+v", r.Status)
			}
			p := r.Status.Parents[0]
			acc := meta.FindStatusCondition(p.Conditions, "Accepted")
			res := meta.FindStatusCondition(p.Conditions, "ResolvedRefs")
			ok := p.ControllerName == "weft.dev/mesh-controller" && reflect.DeepEqual(p.ParentRef, parent) &&
				acc != nil && acc.Status == metav1.ConditionTrue && acc.ObservedGeneration == r.Generation &&
				res != nil && res.Status == metav1.ConditionTrue
			return ok, fmt.Sprintf("%+v", p)
		})

		// A gateway controller reports on the route too.
		gateway := gwapiv1.RouteParentStatus{
			ParentRef:      gwapiv1.ParentReference{Name: "edge"},
			ControllerName: "example.com/gateway-controller",
			Conditions:     []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "attached", LastTransitionTime: metav1.Now(), ObservedGeneration: 1}},
		}
		update(t, h, route, true, func(r *gwapiv1.HTTPRoute) { r.Status.Parents = append(r.Status.Parents, gateway) })
		// Moved to the Gateway alone, the route is no longer ours: our
		// entry goes, the gateway controller's stays.
		update(t, h, route, false, func(r *gwapiv1.HTTPRoute) { r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge"}} })
		eventually(t, 20*time.Second, "only the gateway's entry left", func() (bool, string) {
			var r gwapiv1.HTTPRoute
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(route), &r); err != nil {
				return false, err.Error()
			}
			ps := r.Status.Parents
			return len(ps) == 1 && ps[0].ControllerName == gateway.ControllerName && ps[0].ParentRef.Name == "edge", fmt.Sprintf("%+v", r.Status)
		})
	})

	t.Run("a route with two rules Envoy would reject keeps its good rule and settles", func(t *testing.T) {
		port := gwapiv1.PortNumber(80)
		parent := gwapiv1.ParentReference{Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: "checkout-v2", Port: &port}
		regex, prefix := gwapiv1.PathMatchRegularExpression, gwapiv1.PathMatchPathPrefix
		rule := func(typ *gwapiv1.PathMatchType, path string) gwapiv1.HTTPRouteRule {
			return gwapiv1.HTTPRouteRule{
				Matches: []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: typ, Value: ptr.To(path)}}},
				BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
					BackendObjectReference: gwapiv1.BackendObjectReference{Name: "checkout-v1", Port: &port},
				}}},
			}
		}
		// Look-behind and look-ahead: RE2 (Envoy's and grpc-go's engine)
		// has neither.
		route := &gwapiv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bad-regex"},
			Spec: gwapiv1.HTTPRouteSpec{
				CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{parent}},
				Rules:           []gwapiv1.HTTPRouteRule{rule(&regex, "/(?<=a)b"), rule(&regex, "/(?!x)y"), rule(&prefix, "/good")},
			},
		}
		h.create(t, route)
		var conds []metav1.Condition
		eventually(t, 20*time.Second, "one PartiallyInvalid naming both dropped rules, and Accepted", func() (bool, string) {
			var r gwapiv1.HTTPRoute
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(route), &r); err != nil {
				return false, err.Error()
			}
			if len(r.Status.Parents) != 1 {
				return false, fmt.Sprintf("%+v", r.Status)
			}
			conds = r.Status.Parents[0].Conditions
			pi := meta.FindStatusCondition(conds, "PartiallyInvalid")
			acc := meta.FindStatusCondition(conds, "Accepted")
			return pi != nil && pi.Status == metav1.ConditionTrue && strings.HasPrefix(pi.Message, "Dropped Rules 0, 1") &&
				strings.Contains(pi.Message, "(?<=a)b") && strings.Contains(pi.Message, "(?!x)y") &&
				acc != nil && acc.Status == metav1.ConditionTrue && acc.ObservedGeneration == r.Generation, fmt.Sprintf("%+v", conds)
		})
		if len(conds) != 4 || meta.FindStatusCondition(conds, "Programmed") == nil || meta.FindStatusCondition(conds, "ResolvedRefs") == nil {
			t.Errorf("conditions %+v, want Accepted, PartiallyInvalid, Programmed and ResolvedRefs once each", conds)
		}
		// The good rule reaches the client proxy.
		v2Routes := "checkout-v2.shop.svc.cluster.local:80"
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := web.WaitFor(wctx, func(c *xdstest.Client) bool {
			rc, ok := c.Resource(xdstest.RouteType, v2Routes).(*routev3.RouteConfiguration)
			if !ok {
				return false
			}
			good, dropped := false, false
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					switch {
					case strings.HasPrefix(r.GetName(), "httproute/shop/bad-regex/rule-2/"):
						good = good || r.GetMatch().GetPath() == "/good" && r.GetRoute().GetCluster() == v1Cluster
					case strings.HasPrefix(r.GetName(), "httproute/shop/bad-regex/"):
						dropped = true
					}
				}
			}
			return good && !dropped
		}); err != nil {
			rc, _ := web.Resource(xdstest.RouteType, v2Routes).(*routev3.RouteConfiguration)
			t.Fatalf("the good rule never reached the proxy: %v (route configurations %v; %s: %v)", err, web.Names(xdstest.RouteType), v2Routes, rc)
		}
		// The writer settles: the route is not written again, and no write
		// was refused.
		var settled gwapiv1.HTTPRoute
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(route), &settled); err != nil {
			t.Fatal(err)
		}
		// Several rounds of the writer (every Programmed check, and its
		// one-second retry) pass in this window.
		time.Sleep(3 * time.Second)
		var later gwapiv1.HTTPRoute
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(route), &later); err != nil {
			t.Fatal(err)
		}
		if later.ResourceVersion != settled.ResourceVersion {
			t.Errorf("the route was written again with nothing changed: the writer does not settle (before %+v, now %+v)", settled.Status.Parents, later.Status.Parents)
		}
		if n := testutil.ToFloat64(h.mesh.Metrics.StatusWrites.WithLabelValues("HTTPRoute", "error")); n != 0 {
			t.Errorf("%v route status writes were refused by the API server", n)
		}
		// The rest of the mesh is still served.
		wait("other services unaffected", map[string]uint32{v2Cluster: 100})
	})

	t.Run("a spoofed node ID is refused", func(t *testing.T) {
		// web's certificate asking for checkout's configuration.
		spoof := h.proxy(t, "checkout-v1-0.shop", webID, map[string][]string{xdstest.ClusterType: nil})
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := spoof.WaitFor(wctx, func(c *xdstest.Client) bool { return c.Err() != nil || c.Responses(xdstest.ClusterType) > 0 })
		if err == nil {
			err = spoof.Err()
		}
		if status.Code(errors.Unwrap(err)) != codes.PermissionDenied && status.Code(err) != codes.PermissionDenied {
			t.Fatalf("spoofed stream: err = %v, responses = %d; want PermissionDenied and no configuration", err, spoof.Responses(xdstest.ClusterType))
		}
		if n := spoof.Responses(xdstest.ClusterType); n != 0 {
			t.Errorf("spoofed node received %d responses", n)
		}
		if v := testutil.ToFloat64(h.xdsStats.Rejected.WithLabelValues("NotAuthorized")); v < 1 {
			t.Errorf("weft_xds_streams_refused_total{reason=NotAuthorized} = %v", v)
		}
	})

	t.Run("a NACK shows in status and metrics and is not re-sent", func(t *testing.T) {
		web.RejectNext(xdstest.RouteType, "route checkout.shop.svc.cluster.local:80: invalid weighted cluster")
		before := web.Responses(xdstest.RouteType)
		setWeights(t, h, split, 30, 70)
		eventually(t, 20*time.Second, "Programmed=False", func() (bool, string) {
			var ts meshv1alpha1.TrafficSplit
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(split), &ts); err != nil {
				return false, err.Error()
			}
			c := meta.FindStatusCondition(ts.Status.Conditions, meshv1alpha1.ConditionProgrammed)
			r := meta.FindStatusCondition(ts.Status.Conditions, meshv1alpha1.ConditionReady)
			return c != nil && c.Status == metav1.ConditionFalse && c.Reason == meshv1alpha1.ReasonRejected &&
				strings.Contains(c.Message, "invalid weighted cluster") && r != nil && r.Status == metav1.ConditionFalse, fmt.Sprintf("%+v", ts.Status.Conditions)
		})
		if v := testutil.ToFloat64(h.xdsStats.Nacks.WithLabelValues("RouteConfiguration")); v < 1 {
			t.Errorf("weft_xds_nacks_total{type=RouteConfiguration} = %v, want >= 1", v)
		}
		after := web.Responses(xdstest.RouteType)
		if after != before+1 {
			t.Fatalf("route responses went from %d to %d, want exactly one (the rejected one)", before, after)
		}
		// Give a resend loop time to show itself: none may come.
		time.Sleep(time.Second)
		if n := web.Responses(xdstest.RouteType); n != after {
			t.Errorf("the rejected version was re-sent: %d responses after the NACK", n-after)
		}
		// A new change is delivered and clears the rejection.
		setWeights(t, h, split, 50, 50)
		wait("50/50 after the NACK", map[string]uint32{v1Cluster: 50, v2Cluster: 50})
	})

	t.Run("proxies keep their configuration while the API server is away", func(t *testing.T) {
		// Every connection of the controller to the API server drops and
		// new ones are refused, as during an API server restart.
		h.api.Down()
		rc, _ := web.Resource(xdstest.RouteType, checkoutRoutes).(*routev3.RouteConfiguration)
		if w := routeWeights(rc); w[v1Cluster] != 50 || web.Err() != nil {
			t.Fatalf("with the API server away the proxy has %v, err %v", w, web.Err())
		}
		// A change made meanwhile (the test's own client is not cut off)
		// must reach the proxy once the controller gets back.
		setWeights(t, h, split, 10, 90)
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
		rc, _ = web.Resource(xdstest.RouteType, checkoutRoutes).(*routev3.RouteConfiguration)
		if w := routeWeights(rc); w[v1Cluster] != 50 || web.Err() != nil {
			t.Fatalf("the proxy lost its configuration while the API server was away: %v, err %v", w, web.Err())
		}
		if err := h.api.Up(); err != nil {
			t.Fatal(err)
		}
		wait("update after the API server is back", map[string]uint32{v1Cluster: 10, v2Cluster: 90})
	})
}

// checkoutShop creates namespace shop (meshed, with a MeshIdentity), pods
// checkout-v1-0, checkout-v2-0 and web-0, and Services checkout (both
// versions), checkout-v1 and checkout-v2.
func (h *harness) checkoutShop(t *testing.T) {
	t.Helper()
	h.create(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/inject": "enabled"}}},
		&meshv1alpha1.MeshIdentity{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain: "cluster.local", IssuerRef: meshv1alpha1.IssuerReference{Name: "mesh-ca"},
		}},
	)
	v1 := h.pod(t, "shop", "checkout-v1-0", "checkout", "10.244.0.1", map[string]string{"app": "checkout", "version": "v1"})
	v2 := h.pod(t, "shop", "checkout-v2-0", "checkout", "10.244.0.2", map[string]string{"app": "checkout", "version": "v2"})
	h.pod(t, "shop", "web-0", "web", "10.244.1.1", map[string]string{"app": "web"})
	h.service(t, "shop", "checkout", "10.96.0.10", map[string]string{"app": "checkout"}, v1, v2)
	h.service(t, "shop", "checkout-v1", "10.96.0.11", map[string]string{"app": "checkout", "version": "v1"}, v1)
	h.service(t, "shop", "checkout-v2", "10.96.0.12", map[string]string{"app": "checkout", "version": "v2"}, v2)
}

func setWeights(t *testing.T, h *harness, split *meshv1alpha1.TrafficSplit, w1, w2 int32) {
	t.Helper()
	update(t, h, split, false, func(ts *meshv1alpha1.TrafficSplit) {
		ts.Spec.Backends[0].Weight, ts.Spec.Backends[1].Weight = w1, w2
	})
}
