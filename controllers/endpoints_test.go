package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"

	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

const (
	checkoutID      = "spiffe://cluster.local/ns/shop/sa/checkout"
	checkoutCluster = "outbound|80||checkout.shop.svc.cluster.local"
)

// TestEndpointChangesSkipTheRebuild: an EndpointSlice change that only
// changes endpoint lists reaches the proxies holding the cluster without
// a rebuild of the mesh, and nobody else; one that changes what else the
// endpoints tell (the workloads' identities behind the Service, a target
// port) rebuilds the mesh.
func TestEndpointChangesSkipTheRebuild(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	h.checkoutShop(t)
	// Only web may call checkout, so checkout's own pods are not sent its
	// cluster (reachability scoping); like Envoy, the proxies subscribe to
	// the endpoints of the clusters they hold.
	h.create(t, &meshv1alpha1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout-from-web"},
		Spec: meshv1alpha1.AccessPolicySpec{
			TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: "checkout"},
			Action:    meshv1alpha1.ActionAllow,
			Rules:     []meshv1alpha1.AccessRule{{From: []meshv1alpha1.AccessSource{{ServiceAccount: &meshv1alpha1.ServiceAccountRef{Name: "web"}}}}},
		},
	})
	web := h.proxy(t, "web-0.shop", webID, map[string][]string{xdstest.ClusterType: nil, xdstest.ListenerType: nil})
	v2 := h.proxy(t, "checkout-v2-0.shop", checkoutID, map[string][]string{xdstest.ClusterType: nil, xdstest.ListenerType: nil})
	addresses := func(c *xdstest.Client, cluster string) []string {
		cla, _ := c.Resource(xdstest.EndpointType, cluster).(*endpointv3.ClusterLoadAssignment)
		var out []string
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
		return out
	}
	waitFor := func(c *xdstest.Client, what string, cond func(*xdstest.Client) bool) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := c.WaitFor(wctx, cond); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	waitFor(web, "web holds checkout's endpoints", func(c *xdstest.Client) bool {
		return fmt.Sprint(addresses(c, v1Cluster)) == "[10.244.0.1]" && fmt.Sprint(addresses(c, checkoutCluster)) == "[10.244.0.1 10.244.0.2]"
	})
	waitFor(v2, "checkout's cluster, which its policy does not let checkout-v2 call, leaves its proxy", func(c *xdstest.Client) bool {
		return len(c.Names(xdstest.ClusterType)) > 0 && !slices.Contains(c.Names(xdstest.ClusterType), checkoutCluster)
	})
	eventually(t, 20*time.Second, "both proxies up to date", func() (bool, string) {
		return h.xds.UpToDate("web-0.shop") && h.xds.UpToDate("checkout-v2-0.shop"), ""
	})
	meshBefore := testutil.ToFloat64(h.mesh.Metrics.Rebuilds.WithLabelValues("mesh"))
	v2Before := v2.Responses(xdstest.EndpointType)

	// checkout has two pods of one service account: one turning not ready
	// leaves the identities behind the Service as they were.
	checkoutES := &discoveryv1.EndpointSlice{}
	checkoutES.Namespace, checkoutES.Name = "shop", "checkout-1"
	t.Run("a pod turning not ready is published alone", func(t *testing.T) {
		update(t, h, checkoutES, false, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[1].Conditions.Ready = ptr.To(false)
		})
		waitFor(web, "web drops the endpoint", func(c *xdstest.Client) bool { return fmt.Sprint(addresses(c, checkoutCluster)) == "[10.244.0.1]" })
		if n := testutil.ToFloat64(h.mesh.Metrics.Rebuilds.WithLabelValues("endpoints")); n < 1 {
			t.Errorf("%v endpoint-only publishes", n)
		}
		if n := testutil.ToFloat64(h.mesh.Metrics.Rebuilds.WithLabelValues("mesh")); n != meshBefore {
			t.Errorf("the mesh was rebuilt %v times for an endpoint change", n-meshBefore)
		}
		eventually(t, 20*time.Second, "both proxies up to date", func() (bool, string) {
			return h.xds.UpToDate("web-0.shop") && h.xds.UpToDate("checkout-v2-0.shop"), ""
		})
		if n := v2.Responses(xdstest.EndpointType); n != v2Before {
			t.Errorf("checkout-v2's proxy, which does not hold checkout, got %d endpoint responses", n-v2Before)
		}
		update(t, h, checkoutES, false, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[1].Conditions.Ready = ptr.To(true)
		})
		waitFor(web, "web gets the endpoint back", func(c *xdstest.Client) bool {
			return fmt.Sprint(addresses(c, checkoutCluster)) == "[10.244.0.1 10.244.0.2]"
		})
	})

	es := &discoveryv1.EndpointSlice{}
	es.Namespace, es.Name = "shop", "checkout-v1-1"
	t.Run("the last pod behind a Service turning not ready rebuilds", func(t *testing.T) {
		before := testutil.ToFloat64(h.mesh.Metrics.Rebuilds.WithLabelValues("mesh"))
		update(t, h, es, false, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Conditions.Ready = ptr.To(false)
		})
		waitFor(web, "web drops checkout-v1's endpoint", func(c *xdstest.Client) bool { return len(addresses(c, v1Cluster)) == 0 })
		eventually(t, 20*time.Second, "a mesh rebuild", func() (bool, string) {
			n := testutil.ToFloat64(h.mesh.Metrics.Rebuilds.WithLabelValues("mesh"))
			return n > before, fmt.Sprintf("%v rebuilds", n-before)
		})
		update(t, h, es, false, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Conditions.Ready = ptr.To(true)
		})
		waitFor(web, "web gets checkout-v1's endpoint back", func(c *xdstest.Client) bool { return fmt.Sprint(addresses(c, v1Cluster)) == "[10.244.0.1]" })
	})

	t.Run("a new target port rebuilds", func(t *testing.T) {
		// Target ports decide which container ports AccessPolicy port
		// rules protect: the mesh is rebuilt.
		before := testutil.ToFloat64(h.mesh.Metrics.Rebuilds.WithLabelValues("mesh"))
		update(t, h, es, false, func(s *discoveryv1.EndpointSlice) {
			s.Ports[0].Port = ptr.To[int32](9090)
		})
		waitFor(web, "web's endpoint has the new port", func(c *xdstest.Client) bool {
			cla, _ := c.Resource(xdstest.EndpointType, v1Cluster).(*endpointv3.ClusterLoadAssignment)
			eps := cla.GetEndpoints()
			return len(eps) == 1 && eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() == 9090
		})
		eventually(t, 20*time.Second, "a mesh rebuild", func() (bool, string) {
			n := testutil.ToFloat64(h.mesh.Metrics.Rebuilds.WithLabelValues("mesh"))
			return n > before, fmt.Sprintf("%v rebuilds", n-before)
		})
	})
}
