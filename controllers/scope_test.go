package controllers_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// TestReachabilityScoping drives scoping through the API server: a proxy
// is sent a Service once an AccessPolicy lets it in and loses it when the
// policy leaves it out; a namespace's weft.dev/export-to annotation hides
// its Services from other namespaces until it is removed.
func TestReachabilityScoping(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	h.checkoutShop(t)
	web := h.proxy(t, "web-0.shop", webID, map[string][]string{xdstest.ClusterType: nil, xdstest.ListenerType: nil})
	holds := func(c *xdstest.Client, cluster string, want bool, what string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := c.WaitFor(wctx, func(c *xdstest.Client) bool {
			return slices.Contains(c.Names(xdstest.ClusterType), cluster) == want
		}); err != nil {
			t.Fatalf("%s: %v (clusters %v)", what, err, c.Names(xdstest.ClusterType))
		}
	}
	holds(web, v1Cluster, true, "web starts with checkout-v1")

	policy := &meshv1alpha1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "v1-from-batch"},
		Spec: meshv1alpha1.AccessPolicySpec{
			TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: "checkout-v1"},
			Action:    meshv1alpha1.ActionAllow,
			Rules:     []meshv1alpha1.AccessRule{{From: []meshv1alpha1.AccessSource{{ServiceAccount: &meshv1alpha1.ServiceAccountRef{Name: "batch"}}}}},
		},
	}
	h.create(t, policy)
	holds(web, v1Cluster, false, "checkout-v1 lets in batch only: web loses it")
	if !slices.Contains(web.Names(xdstest.ClusterType), v2Cluster) {
		t.Errorf("web lost checkout-v2 too, which no policy restricts: %v", web.Names(xdstest.ClusterType))
	}

	update(t, h, policy, false, func(p *meshv1alpha1.AccessPolicy) {
		p.Spec.Rules[0].From = append(p.Spec.Rules[0].From, meshv1alpha1.AccessSource{ServiceAccount: &meshv1alpha1.ServiceAccountRef{Name: "web"}})
	})
	holds(web, v1Cluster, true, "the policy lets web in: web gets checkout-v1 back")

	// A client in another namespace, and shop exported to itself only.
	h.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ops", Labels: map[string]string{"weft.dev/inject": "enabled"}}})
	h.pod(t, "ops", "tool-0", "tool", "10.244.2.1", map[string]string{"app": "tool"})
	tool := h.proxy(t, "tool-0.ops", "spiffe://cluster.local/ns/ops/sa/tool", map[string][]string{xdstest.ClusterType: nil, xdstest.ListenerType: nil})
	holds(tool, v2Cluster, true, "ops/tool starts with checkout-v2")
	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	update(t, h, shop, false, func(n *corev1.Namespace) {
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[meshv1alpha1.AnnotationExportTo] = "."
	})
	holds(tool, v2Cluster, false, "shop exported to itself: ops/tool loses checkout-v2")
	holds(web, v2Cluster, true, "web, in shop, keeps checkout-v2")
	update(t, h, shop, false, func(n *corev1.Namespace) {
		delete(n.Annotations, meshv1alpha1.AnnotationExportTo)
	})
	holds(tool, v2Cluster, true, "the annotation removed: ops/tool gets checkout-v2 back")
}
